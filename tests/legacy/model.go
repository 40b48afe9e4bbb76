package legacy

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash"
	"math/rand"
	"sort"
	"sync"
	"time"

	"github.com/google/uuid"
)

// Clock is the time source; inject a StepClock for deterministic runs.
type Clock interface {
	Now() time.Time
}

// SystemClock is the wall clock.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }

// StepClock returns start, start+step, start+2·step, ... one value per call.
type StepClock struct {
	mu   sync.Mutex
	next time.Time
	step time.Duration
}

// NewStepClock returns a deterministic clock.
func NewStepClock(start time.Time, step time.Duration) *StepClock {
	return &StepClock{next: start, step: step}
}

// Now returns the next instant.
func (c *StepClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.next
	c.next = c.next.Add(c.step)
	return t
}

// UUIDSource produces the UUIDs in staging tokens.
type UUIDSource interface {
	NewUUID() uuid.UUID
}

// RandomUUIDs is uuid.New.
type RandomUUIDs struct{}

// NewUUID returns a random UUID v4.
func (RandomUUIDs) NewUUID() uuid.UUID { return uuid.New() }

// SeededUUIDs is a deterministic UUID v4 source.
type SeededUUIDs struct {
	mu sync.Mutex
	r  *rand.Rand
}

// NewSeededUUIDs returns a UUID source whose sequence depends only on seed.
func NewSeededUUIDs(seed int64) *SeededUUIDs {
	return &SeededUUIDs{r: rand.New(rand.NewSource(seed))}
}

// NewUUID returns the next UUID of the sequence.
func (s *SeededUUIDs) NewUUID() uuid.UUID {
	s.mu.Lock()
	defer s.mu.Unlock()
	u, err := uuid.NewRandomFromReader(s.r)
	if err != nil { // math/rand never fails to read
		panic(err)
	}
	return u
}

// Repository is a graveler_repositories row.
type Repository struct {
	ID               string
	StorageNamespace string
	CreationDate     time.Time
	DefaultBranchID  string
}

// Branch is a graveler_branches row.
type Branch struct {
	ID           string
	CommitID     string
	StagingToken string
}

// Tag is a graveler_tags row.
type Tag struct {
	ID       string
	CommitID string
}

// Commit versions (graveler.CommitVersion).
const (
	CommitVersionInitial      int32 = 0
	CommitVersionParentSwitch int32 = 1
)

// FirstCommitMsg is the message of every repository's first commit.
const FirstCommitMsg = "Repository created"

// Commit is a graveler_commits row without its keys.
type Commit struct {
	Committer    string
	Message      string
	MetaRangeID  string
	CreationDate time.Time
	Parents      []string
	Metadata     map[string]string
	Version      int32
	Generation   int32
}

// CommitRecord is a commit with its id.
type CommitRecord struct {
	ID string
	Commit
}

// ContentAddress is the commit id: hex(SHA-256) of lakeFS's ident framing
// (spec §9.1): "commit:v1", committer, message, meta_range_id,
// CreationDate.Unix() seconds, metadata (sorted keys), and the embedded
// SHA-256 of the parents list. Version and generation are not hashed.
func (c Commit) ContentAddress() string {
	return hex.EncodeToString(c.Identity())
}

// Identity is the raw SHA-256 behind ContentAddress.
func (c Commit) Identity() []byte {
	h := sha256.New()
	identString(h, "commit:v1")
	identString(h, c.Committer)
	identString(h, c.Message)
	identString(h, c.MetaRangeID)
	identInt64(h, c.CreationDate.Unix())
	identStringMap(h, c.Metadata)
	ph := sha256.New()
	identStringSlice(ph, c.Parents)
	identEmbedded(h, ph.Sum(nil))
	return h.Sum(nil)
}

// The ident type bytes (lakeFS pkg/ident AddressType).
const (
	identTypeBytes    = 0
	identTypeString   = 1
	identTypeInt64    = 2
	identTypeSlice    = 3
	identTypeMap      = 4
	identTypeEmbedded = 5
)

func identInt64(h hash.Hash, v int64) {
	var b [10]byte
	b[0] = identTypeInt64
	b[1] = 8
	binary.BigEndian.PutUint64(b[2:], uint64(v))
	h.Write(b[:])
}

func identString(h hash.Hash, s string) {
	h.Write([]byte{identTypeString})
	identInt64(h, int64(len(s)))
	h.Write([]byte(s))
}

func identBytes(h hash.Hash, v []byte) {
	h.Write([]byte{identTypeBytes})
	identInt64(h, int64(len(v)))
	h.Write(v)
}

func identStringSlice(h hash.Hash, v []string) {
	h.Write([]byte{identTypeSlice})
	identInt64(h, int64(len(v)))
	for _, s := range v {
		identString(h, s)
	}
}

func identStringMap(h hash.Hash, m map[string]string) {
	h.Write([]byte{identTypeMap})
	identInt64(h, int64(len(m)))
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		identString(h, k)
		identString(h, m[k])
	}
}

func identEmbedded(h hash.Hash, identity []byte) {
	h.Write([]byte{identTypeEmbedded})
	identBytes(h, identity)
}

// Value is a staged or committed object: opaque identity and data.
type Value struct {
	Identity []byte
	Data     []byte
}

// ValueRecord is a key and its value; a nil Value is a staged tombstone.
type ValueRecord struct {
	Key   []byte
	Value *Value
}

// Tree is the committed content of one metarange: key -> value.
type Tree map[string]Value

// RangeStore stands in for lakeFS's object storage (ranges and
// metaranges). A metarange id is the content hash of the sorted tree, so
// equal trees share an id and two independent runs of one script produce
// the same ids. The empty tree's id is "" (as the first commit's).
type RangeStore struct {
	mu    sync.RWMutex
	trees map[string]Tree
}

// NewRangeStore returns an empty store.
func NewRangeStore() *RangeStore {
	return &RangeStore{trees: map[string]Tree{"": {}}}
}

// ErrMetaRangeNotFound is returned for an id the store has never seen
// (e.g. written by a different process with a different RangeStore).
var ErrMetaRangeNotFound = fmt.Errorf("metarange %w", ErrNotFound)

// Put stores t and returns its metarange id.
func (s *RangeStore) Put(t Tree) string {
	if len(t) == 0 {
		return ""
	}
	keys := t.keys()
	h := sha256.New()
	identString(h, "metarange:v1")
	identInt64(h, int64(len(keys)))
	for _, k := range keys {
		v := t[k]
		identString(h, k)
		identBytes(h, v.Identity)
		identBytes(h, v.Data)
	}
	id := hex.EncodeToString(h.Sum(nil))
	cp := make(Tree, len(t))
	for k, v := range t {
		cp[k] = v
	}
	s.mu.Lock()
	s.trees[id] = cp
	s.mu.Unlock()
	return id
}

// Get returns the tree of a metarange id. The tree must not be modified.
func (s *RangeStore) Get(id string) (Tree, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	t, ok := s.trees[id]
	if !ok {
		return nil, fmt.Errorf("%q: %w", id, ErrMetaRangeNotFound)
	}
	return t, nil
}

func (t Tree) keys() []string {
	keys := make([]string, 0, len(t))
	for k := range t {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func (t Tree) clone() Tree {
	cp := make(Tree, len(t))
	for k, v := range t {
		cp[k] = v
	}
	return cp
}
