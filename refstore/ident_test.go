package refstore

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"testing"
	"time"
)

// Hand-assembled framing of spec §9.1, independent of ident.go.
func frameInt64(v int64) []byte {
	b := []byte{0x02, 0x08, 0, 0, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint64(b[2:], uint64(v))
	return b
}

func frameString(s string) []byte {
	return append(append([]byte{0x01}, frameInt64(int64(len(s)))...), s...)
}

func TestCommitIDKnownVectors(t *testing.T) {
	tests := []struct {
		name string
		c    CommitContent
		hex  string // computed outside Go from the §9.1 framing
	}{
		{
			name: "first commit of a repository",
			c:    CommitContent{Message: "Repository created", CreationDate: time.Unix(1660000000, 999999999)},
			hex:  "d425870d25b31faedd297bf4026499bd7b474c2f86c62d92ffd34126f5d6e51b",
		},
		{
			name: "merge with metadata",
			c: CommitContent{Committer: "alice", Message: "héllo", MetaRangeID: "mr1", CreationDate: time.Unix(1700000000, 0),
				Metadata: map[string]string{"b": "2", "a": "1"}, Parents: []string{"p1", "p2"}},
			hex: "b9e07affac4623b1f392798c29474159cf00e47311225975b91f54620d89e3d1",
		},
		{
			name: "parent order matters",
			c: CommitContent{Committer: "alice", Message: "héllo", MetaRangeID: "mr1", CreationDate: time.Unix(1700000000, 0),
				Metadata: map[string]string{"b": "2", "a": "1"}, Parents: []string{"p2", "p1"}},
			hex: "b22ceadc0c6c1c3957fed58b8f1ecb2a96808ff93c898fc53fe2ad5c413183dc",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := CommitID(tc.c); got != tc.hex {
				t.Fatalf("CommitID = %s, want %s", got, tc.hex)
			}
		})
	}
}

func TestCommitIDFramingByHand(t *testing.T) {
	// The first-commit vector, byte by byte.
	empty := sha256.New()
	empty.Write([]byte{0x03})
	empty.Write(frameInt64(0))
	parents := empty.Sum(nil)

	h := sha256.New()
	for _, s := range []string{"commit:v1", "", "Repository created", ""} {
		h.Write(frameString(s))
	}
	h.Write(frameInt64(1660000000))
	h.Write(append([]byte{0x04}, frameInt64(0)...))
	h.Write([]byte{0x05, 0x00})
	h.Write(frameInt64(int64(len(parents))))
	h.Write(parents)
	want := hex.EncodeToString(h.Sum(nil))
	if got := CommitID(CommitContent{Message: "Repository created", CreationDate: time.Unix(1660000000, 0)}); got != want {
		t.Fatalf("CommitID = %s, hand-framed %s", got, want)
	}
}

func TestCommitIDNilEqualsEmpty(t *testing.T) {
	base := CommitContent{Message: "m", CreationDate: time.Unix(1, 0)}
	withEmpty := base
	withEmpty.Metadata, withEmpty.Parents = map[string]string{}, []string{}
	if CommitID(base) != CommitID(withEmpty) {
		t.Fatal("nil and empty metadata/parents hash differently")
	}
	other := base
	other.CreationDate = time.Unix(2, 0)
	if CommitID(base) == CommitID(other) {
		t.Fatal("creation seconds do not change the id")
	}
}
