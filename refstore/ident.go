package refstore

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"hash"
	"slices"
	"time"
)

// The framing of lakeFS pkg/ident: each item starts with its type byte.
const (
	identBytes byte = iota
	identString
	identInt64
	identStringSlice
	identStringMap
	identEmbedded
)

func identInt64Item(h hash.Hash, v int64) {
	var b [10]byte
	b[0], b[1] = identInt64, 8
	binary.BigEndian.PutUint64(b[2:], uint64(v))
	h.Write(b[:])
}

func identStringItem(h hash.Hash, s string) {
	h.Write([]byte{identString})
	identInt64Item(h, int64(len(s)))
	h.Write([]byte(s))
}

func identBytesItem(h hash.Hash, v []byte) {
	h.Write([]byte{identBytes})
	identInt64Item(h, int64(len(v)))
	h.Write(v)
}

func identStringSliceItem(h hash.Hash, v []string) {
	h.Write([]byte{identStringSlice})
	identInt64Item(h, int64(len(v)))
	for _, s := range v {
		identStringItem(h, s)
	}
}

func identStringMapItem(h hash.Hash, m map[string]string) {
	h.Write([]byte{identStringMap})
	identInt64Item(h, int64(len(m)))
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		identStringItem(h, k)
		identStringItem(h, m[k])
	}
}

// CommitContent is what a commit id is computed from. Version and
// generation are deliberately absent: lakeFS does not hash them.
type CommitContent struct {
	Committer    string
	Message      string
	MetaRangeID  string
	CreationDate time.Time // only whole seconds count
	Metadata     map[string]string
	Parents      []string
}

// CommitID returns the content address lakeFS gives a commit
// (graveler.Commit.Identity, hex encoded): SHA-256 over "commit:v1",
// committer, message, metarange id, creation date in Unix seconds, the
// metadata map in sorted key order, and the embedded SHA-256 of the parents
// list. nil and empty metadata, and nil and empty parents, hash the same.
func CommitID(c CommitContent) string {
	parents := sha256.New()
	identStringSliceItem(parents, c.Parents)

	h := sha256.New()
	identStringItem(h, "commit:v1")
	identStringItem(h, c.Committer)
	identStringItem(h, c.Message)
	identStringItem(h, c.MetaRangeID)
	identInt64Item(h, c.CreationDate.Unix())
	identStringMapItem(h, c.Metadata)
	h.Write([]byte{identEmbedded})
	identBytesItem(h, parents.Sum(nil))
	return hex.EncodeToString(h.Sum(nil))
}
