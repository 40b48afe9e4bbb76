package migrate

import (
	"context"
	"time"

	"github.com/kvproxy/kvproxy/shadow/dirty"
)

// dirtyLogKeys reads the keys of a dirty.Log.
type dirtyLogKeys struct {
	log   dirty.Log
	limit int
}

// FromDirtyLog adapts the dirty-key log to DirtyKeys: the keys of up to
// limit entries (<= 0: 100000) logged before now, whole keys included.
func FromDirtyLog(l dirty.Log, limit int) DirtyKeys {
	if limit <= 0 {
		limit = 100000
	}
	return dirtyLogKeys{log: l, limit: limit}
}

func (d dirtyLogKeys) List(ctx context.Context) ([]Key, error) {
	es, err := d.log.List(ctx, time.Now(), d.limit)
	if err != nil {
		return nil, err
	}
	out := make([]Key, len(es))
	for i, e := range es {
		out[i] = Key(e.Key)
	}
	return out, nil
}
