package dirty

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/kvproxy/kvproxy/kv"
)

// KVPartition holds the KV-side log. Like every kvproxy partition it starts
// with "_", which no lakeFS partition does.
const KVPartition = "_kvproxy_dirty"

// KVLog is the dirty-key log kept in the KV store (kv-primary). Entry keys
// start with the zero-padded creation time, so a scan lists them oldest
// first.
type KVLog struct {
	store kv.Store
	now   func() time.Time
	seq   atomic.Uint64
}

var _ Log = (*KVLog)(nil)

// NewKVLog returns the log over store; now may be nil (time.Now).
func NewKVLog(store kv.Store, now func() time.Time) *KVLog {
	if now == nil {
		now = time.Now
	}
	return &KVLog{store: store, now: now}
}

type kvEntry struct {
	Key      Key    `json:"key"`
	Instance string `json:"instance"`
}

func (l *KVLog) Add(ctx context.Context, keys []Key, instance string) error {
	_, err := l.AddRefs(ctx, keys, instance)
	return err
}

// AddRefs is Add that returns the entries' refs, so that the writer can
// clear them itself once its mirror succeeded.
func (l *KVLog) AddRefs(ctx context.Context, keys []Key, instance string) ([]string, error) {
	ns := l.now().UnixNano()
	refs := make([]string, 0, len(keys))
	for _, k := range keys {
		ref := fmt.Sprintf("%020d/%s/%d", ns, instance, l.seq.Add(1))
		v, err := json.Marshal(kvEntry{Key: k, Instance: instance})
		if err != nil {
			return refs, fmt.Errorf("dirty: encode %s: %w", k, err)
		}
		if err := l.store.Set(ctx, []byte(KVPartition), []byte(ref), v); err != nil {
			return refs, fmt.Errorf("dirty: log %s: %w", k, err)
		}
		refs = append(refs, ref)
	}
	return refs, nil
}

func (l *KVLog) scan(ctx context.Context, fn func(ref string, created time.Time, v []byte) bool) error {
	it, err := l.store.Scan(ctx, []byte(KVPartition), nil)
	if err != nil {
		return fmt.Errorf("dirty: scan: %w", err)
	}
	defer it.Close()
	for it.Next() {
		e := it.Entry()
		ref := string(e.Key)
		ts, _, _ := strings.Cut(ref, "/")
		ns, err := strconv.ParseInt(ts, 10, 64)
		if err != nil {
			return fmt.Errorf("dirty: %q is not a log entry", ref)
		}
		if !fn(ref, time.Unix(0, ns), e.Value) {
			break
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("dirty: scan: %w", err)
	}
	return nil
}

func (l *KVLog) List(ctx context.Context, before time.Time, limit int) ([]Entry, error) {
	var out []Entry
	var decodeErr error
	err := l.scan(ctx, func(ref string, created time.Time, v []byte) bool {
		if !created.Before(before) || len(out) >= limit {
			return false
		}
		var e kvEntry
		if err := json.Unmarshal(v, &e); err != nil {
			decodeErr = fmt.Errorf("dirty: entry %s: %w", ref, err)
			return false
		}
		out = append(out, Entry{Ref: ref, Key: e.Key, Instance: e.Instance, Created: created})
		return true
	})
	if err == nil {
		err = decodeErr
	}
	return out, err
}

func (l *KVLog) Delete(ctx context.Context, refs []string) error {
	for _, r := range refs {
		if err := l.store.Delete(ctx, []byte(KVPartition), []byte(r)); err != nil {
			return fmt.Errorf("dirty: clear %s: %w", r, err)
		}
	}
	return nil
}

func (l *KVLog) Count(ctx context.Context) (int64, error) {
	var n int64
	err := l.scan(ctx, func(string, time.Time, []byte) bool { n++; return true })
	return n, err
}
