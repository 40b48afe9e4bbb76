package migrate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/kvproxy/kvproxy/kv"
	"github.com/kvproxy/kvproxy/shadow/control"
)

// Keys of kvproxy's own records in control.Partition.
const (
	KeyBackfillCheckpoint = "backfill/checkpoint"
	KeyBackfillStatus     = "backfill/status"
	KeyVerifyCheckpoint   = "verify/checkpoint"
	KeyVerifyLast         = "verify/last"
)

// ErrNoRecord is returned when a record does not exist yet.
var ErrNoRecord = errors.New("migrate: no such record")

func getRecord(ctx context.Context, s kv.Store, key string, v any) error {
	got, err := s.Get(ctx, []byte(control.Partition), []byte(key))
	if errors.Is(err, kv.ErrNotFound) {
		return fmt.Errorf("%s: %w", key, ErrNoRecord)
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", key, err)
	}
	if err := json.Unmarshal(got.Value, v); err != nil {
		return fmt.Errorf("%w: record %s: %v", kv.ErrOperationFailed, key, err)
	}
	return nil
}

func putRecord(ctx context.Context, s kv.Store, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", key, err)
	}
	if err := s.Set(ctx, []byte(control.Partition), []byte(key), b); err != nil {
		return fmt.Errorf("write %s: %w", key, err)
	}
	return nil
}

func deleteRecord(ctx context.Context, s kv.Store, key string) error {
	if err := s.Delete(ctx, []byte(control.Partition), []byte(key)); err != nil {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	return nil
}

// BackfillStatus reads the "backfill/status" record (ErrNoRecord if no
// backfill ever started).
func BackfillStatus(ctx context.Context, s kv.Store) (Status, error) {
	var st Status
	return st, getRecord(ctx, s, KeyBackfillStatus, &st)
}

// LastVerify reads the "verify/last" record (ErrNoRecord if no verify ever
// finished).
func LastVerify(ctx context.Context, s kv.Store) (Report, error) {
	var r Report
	return r, getRecord(ctx, s, KeyVerifyLast, &r)
}

// CutoverReady is the check cutover makes: the backfill finished, and the
// last full verify was clean and started after the backfill finished.
func CutoverReady(ctx context.Context, s kv.Store) error {
	st, err := BackfillStatus(ctx, s)
	if err != nil {
		return fmt.Errorf("backfill: %w", err)
	}
	if !st.Complete() {
		return fmt.Errorf("%w: backfill started %s has not finished", ErrNotReady, st.Started.Format("2006-01-02T15:04:05Z07:00"))
	}
	r, err := LastVerify(ctx, s)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	switch {
	case r.Incremental:
		return fmt.Errorf("%w: the last verify was incremental; run a full verify", ErrNotReady)
	case !r.Clean():
		return fmt.Errorf("%w: the last verify found %d differences", ErrNotReady, r.Differences())
	case r.Started.Before(*st.Finished):
		return fmt.Errorf("%w: the last verify started before the backfill finished", ErrNotReady)
	}
	return nil
}

// ErrNotReady is returned by CutoverReady.
var ErrNotReady = errors.New("migrate: not ready for cutover")
