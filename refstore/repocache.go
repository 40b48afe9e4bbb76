package refstore

import (
	"sync"

	"github.com/kvproxy/kvproxy/refstore/graveler"
	"google.golang.org/protobuf/proto"
)

// DefaultRepoCacheSize is how many repository records a Store remembers
// when Options.RepoCacheSize is 0.
const DefaultRepoCacheSize = 10000

// repoCache remembers the last record bytes seen for active repositories,
// so that entity accesses can skip reading the record (see doc.go for why a
// stale entry is harmless). It is a hint only: every entry may be out of
// date, and every user checks it against the store where that matters.
type repoCache struct {
	mu  sync.RWMutex
	max int
	m   map[string][]byte // repository id -> record bytes (ACTIVE)
}

func newRepoCache(max int) *repoCache {
	if max <= 0 {
		return nil
	}
	return &repoCache{max: max, m: make(map[string][]byte)}
}

func (c *repoCache) get(id string) ([]byte, bool) {
	if c == nil {
		return nil, false
	}
	c.mu.RLock()
	v, ok := c.m[id]
	c.mu.RUnlock()
	return v, ok
}

// observe records what the store holds for a repository: an active record
// is remembered, anything else (absent, IN_DELETION, undecodable) forgets
// the id.
func (c *repoCache) observe(id string, raw []byte, present bool) {
	if c == nil {
		return
	}
	if present {
		var rd graveler.RepositoryData
		if proto.Unmarshal(raw, &rd) == nil && rd.GetState() != graveler.RepositoryState_IN_DELETION &&
			rd.GetId() == id && rd.GetInstanceUid() != "" {
			c.put(id, raw)
			return
		}
	}
	c.drop(id)
}

func (c *repoCache) put(id string, raw []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[id]; !ok && len(c.m) >= c.max {
		// Evict an arbitrary entry: a miss costs one read, so no
		// recency bookkeeping is worth its locking on the hot path.
		for k := range c.m {
			delete(c.m, k)
			break
		}
	}
	c.m[id] = raw
}

func (c *repoCache) drop(id string) {
	if c == nil {
		return
	}
	c.mu.Lock()
	delete(c.m, id)
	c.mu.Unlock()
}
