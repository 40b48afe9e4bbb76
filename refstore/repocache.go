package refstore

import (
	"sync"
	"time"

	"github.com/kvproxy/kvproxy/refstore/graveler"
	"google.golang.org/protobuf/proto"
)

// Defaults of Options.RepoCacheSize and Options.RepoCacheTTL.
const (
	DefaultRepoCacheSize = 10000
	DefaultRepoCacheTTL  = time.Second
)

// repoCache remembers the last record bytes seen for active repositories,
// so that entity accesses can skip reading the record (see doc.go for why a
// stale entry is harmless). It is a hint only: every entry may be out of
// date, and every user checks it against the store where that matters.
type repoCache struct {
	mu  sync.RWMutex
	max int
	ttl time.Duration
	m   map[string]cacheEntry // repository id -> record (ACTIVE)
}

type cacheEntry struct {
	raw []byte
	at  time.Time
}

func newRepoCache(max int, ttl time.Duration) *repoCache {
	if max <= 0 || ttl <= 0 {
		return nil
	}
	return &repoCache{max: max, ttl: ttl, m: make(map[string]cacheEntry)}
}

// get returns the record bytes remembered for id if they were seen less
// than ttl ago. The age limit bounds how long a reader can keep finding
// entities of a repository whose record went away without them (a delete
// that failed half-way on the ordered path, or a writer outside this
// package that removed only the record).
func (c *repoCache) get(id string) ([]byte, bool) {
	if c == nil {
		return nil, false
	}
	c.mu.RLock()
	e, ok := c.m[id]
	c.mu.RUnlock()
	if !ok || time.Since(e.at) >= c.ttl {
		return nil, false
	}
	return e.raw, true
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
	c.m[id] = cacheEntry{raw: raw, at: time.Now()}
}

func (c *repoCache) drop(id string) {
	if c == nil {
		return
	}
	c.mu.Lock()
	delete(c.m, id)
	c.mu.Unlock()
}
