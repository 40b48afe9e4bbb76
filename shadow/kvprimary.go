package shadow

import (
	"context"
	"errors"
	"time"

	"github.com/kvproxy/kvproxy/shadow/control"
	"github.com/kvproxy/kvproxy/shadow/dirty"
	"github.com/kvproxy/kvproxy/wire"
)

// kv-primary (KV authoritative, PostgreSQL mirrored).
//
// Ref-store statements are answered from KV exactly as in kv-only, with
// compare-and-set at COMMIT (a lost race is 40001). Around the KV commit of
// a transaction that wrote:
//
//   - before it, every key the transaction wrote is logged in the KV-side
//     dirty-key log (an intent that survives kill -9 of the proxy);
//   - after it, each key is copied from KV to PostgreSQL (the Mirror
//     syncer: upsert or delete, re-checked), bounded by MirrorTimeout, and
//     the intent is cleared when all copies succeeded. Only then does the
//     client see its COMMIT, so its own locking orders the mirror too.
//
// A failed or slow copy (PostgreSQL restarting, a race between two
// unlocked writers) never fails the client: the intent stays, and the
// repairer re-copies the key from KV. Keeping PostgreSQL current is what
// makes rollback to dual-write possible.
//
// Advisory locks are kept in KV (kvlock), not in PostgreSQL, so that a
// PostgreSQL restart does not reach clients.

// logIntent logs keys before their KV commit. Without a KV log (kv-only, or
// a router built without one) it does nothing.
func (r *Router) logIntent(ctx context.Context, keys []dirty.Key) ([]string, error) {
	if len(keys) == 0 || r.opt.KVLog == nil || r.opt.Mirror == nil {
		return nil, nil
	}
	refs, err := r.opt.KVLog.AddRefs(ctx, keys, r.opt.InstanceID)
	if err != nil {
		// KV is authoritative: if it cannot take the intent it cannot
		// take the write either. The client retries.
		return nil, wire.Errorf("40001", "kvproxy: the KV store did not accept the write (retry): %v", err)
	}
	return refs, nil
}

// mirrorToSQL copies keys from KV to PostgreSQL after their commit and
// clears their intents; failures leave the intents to the repairer.
func (r *Router) mirrorToSQL(ctx context.Context, st *session, keys []dirty.Key, refs []string) {
	if len(keys) == 0 || r.opt.Mirror == nil || st.phase != control.KVPrimary {
		return
	}
	if r.opt.BeforeMirror != nil {
		r.opt.BeforeMirror(ctx)
	}
	mctx, cancel := context.WithTimeout(ctx, r.opt.MirrorTimeout)
	defer cancel()
	start := time.Now()
	var err error
	seen := map[string]bool{}
	for _, k := range keys {
		id := k.String()
		if seen[id] {
			continue
		}
		seen[id] = true
		if err = r.opt.Mirror.Sync(mctx, k); err != nil {
			break
		}
	}
	if err == nil {
		// The intents were logged under this context; clear them even if
		// the client went away meanwhile.
		dctx, dcancel := context.WithTimeout(context.WithoutCancel(ctx), r.opt.MirrorTimeout)
		err = r.opt.KVLog.Delete(dctx, refs)
		dcancel()
	}
	outcome := "ok"
	if err != nil {
		// Log the keys again: a repairer may have taken the first intents
		// while the KV commit was still in flight (it saw the old value in
		// both stores, found them equal, and cleared them).
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), r.opt.MirrorTimeout)
		if _, lerr := r.opt.KVLog.AddRefs(rctx, keys, r.opt.InstanceID); lerr != nil {
			r.opt.Log.Warn("could not log keys whose mirror to PostgreSQL failed", "keys", len(keys), "err", lerr)
		}
		rcancel()
		outcome = "error"
		if !errors.Is(err, context.Canceled) {
			r.opt.Log.Debug("mirror to PostgreSQL failed; the repairer will copy it", "err", err, "keys", len(keys))
		}
	}
	if m := r.opt.Metrics; m != nil {
		m.Statements.WithLabelValues("mirror", "upstream", outcome).Inc()
		m.StatementSeconds.WithLabelValues("mirror").Observe(time.Since(start).Seconds())
	}
}
