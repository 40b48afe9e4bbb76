package cutover

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/xid"

	"github.com/kvproxy/kvproxy/kv"
	"github.com/kvproxy/kvproxy/shadow/control"
	"github.com/kvproxy/kvproxy/shadow/dirty"
	"github.com/kvproxy/kvproxy/shadow/migrate"
)

// Kinds of switch.
const (
	Cutover  = "cutover"  // dual-write -> kv-primary
	Rollback = "rollback" // kv-primary -> dual-write
	Finalize = "finalize" // kv-primary -> kv-only
)

// Check names, as reported.
const (
	CheckPhase     = "phase"
	CheckBackfill  = "backfill complete"
	CheckVerify    = "last full verify clean and newer than the backfill"
	CheckDirty     = "dirty-key log drained"
	CheckInstances = "every live instance on the current epoch"
)

var (
	// ErrPrecondition means a check failed; nothing was changed.
	ErrPrecondition = errors.New("cutover: precondition failed")
	// ErrAborted means the switch started but gave up; the barrier was
	// released and the old phase is in force.
	ErrAborted = errors.New("cutover: switch aborted, old phase kept")
)

// Options configure one switch.
type Options struct {
	Kind    string
	KV      kv.Store
	Control *control.Store
	// Source is the upstream PostgreSQL (the legacy ref-store tables).
	Source *pgxpool.Pool
	// By names who asked, for the event.
	By string
	// Timeout bounds the barrier (default 5s): acknowledgements, repair,
	// incremental verify and the flip must all happen within it.
	Timeout time.Duration
	// MaxDirtyAge: the dirty-key log counts as drained when no entry is
	// older than this (default 15s). Under load there are always fresh
	// entries; the barrier repairs them.
	MaxDirtyAge time.Duration
	// MirrorTimeout is the instances' shadow.mirror_timeout (default 2s):
	// how long a write's mirror may still run after its log entry was
	// written. The catch-up before the barrier leaves younger entries to
	// their writers (a mirror applied after its entry was cleared could
	// leave a key behind a newer write); the barrier, which waits for the
	// writers, takes them.
	MirrorTimeout time.Duration
	// DryRun checks the preconditions and prints the steps, changing
	// nothing.
	DryRun bool
	// Out receives one line per step (nil: discarded).
	Out io.Writer
	Log *slog.Logger
	// BeforeFlip, if set, runs under the barrier right before the phase
	// flips (tests use it to inject faults there).
	BeforeFlip func(ctx context.Context) error
}

// Plan is what a switch does: from, to, and the log it drains.
type plan struct {
	from, to  string
	dirtyLog  dirty.Log
	direction migrate.Direction
	// catchUpAge: entries younger than this are left to their writers
	// while writes still flow (see Options.MirrorTimeout).
	catchUpAge time.Duration
}

func (o *Options) plan() (plan, error) {
	mt := o.MirrorTimeout
	if mt <= 0 {
		mt = 2 * time.Second
	}
	// The outbox holds committed writes, mirrored within mt of their entry;
	// the KV-side log holds intents logged before a KV commit that is
	// itself bounded by mt, and then mirrored within mt.
	outboxAge, intentAge := mt+time.Second, max(10*time.Second, 2*mt+time.Second)
	switch o.Kind {
	case Cutover:
		return plan{from: control.DualWrite, to: control.KVPrimary, dirtyLog: dirty.NewPGLog(o.Source), direction: migrate.SQLToKV, catchUpAge: outboxAge}, nil
	case Rollback:
		return plan{from: control.KVPrimary, to: control.DualWrite, dirtyLog: dirty.NewKVLog(o.KV, nil), direction: migrate.KVToSQL, catchUpAge: intentAge}, nil
	case Finalize:
		return plan{from: control.KVPrimary, to: control.KVOnly, dirtyLog: dirty.NewKVLog(o.KV, nil), direction: migrate.KVToSQL, catchUpAge: intentAge}, nil
	}
	return plan{}, fmt.Errorf("cutover: unknown switch %q (cutover, rollback or finalize)", o.Kind)
}

func (o *Options) printf(format string, args ...any) {
	if o.Out != nil {
		fmt.Fprintf(o.Out, format+"\n", args...)
	}
	if o.Log != nil {
		o.Log.Info(fmt.Sprintf(format, args...), "switch", o.Kind)
	}
}

// Result is the outcome of Run.
type Result struct {
	Event    control.Event
	From, To control.PhaseRecord
	// CaughtUp counts dirty-key entries repaired before the barrier went
	// up, Repaired those repaired under it.
	CaughtUp int
	// Synced counts the keys of younger entries synced (not cleared)
	// before the barrier went up.
	Synced   int
	Repaired int
	// Held is how long the barrier was up.
	Held time.Duration
}

// Run performs one switch: checks, barrier, drain, repair, incremental
// verify, flip, release. Any failure after the barrier went up releases it
// and keeps the old phase. Every attempt but a dry run is recorded as an
// event.
func Run(ctx context.Context, o Options) (Result, error) {
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	if o.MaxDirtyAge <= 0 {
		o.MaxDirtyAge = 15 * time.Second
	}
	if o.Source == nil {
		return Result{}, fmt.Errorf("%w: %s needs the upstream PostgreSQL (upstream)", ErrPrecondition, o.Kind)
	}
	pl, err := o.plan()
	if err != nil {
		return Result{}, err
	}
	started := o.Control.Now().UTC()
	res := Result{Event: control.Event{Kind: o.Kind, From: pl.from, To: pl.to, By: o.By, Started: started}}
	cur, _, err := o.Control.Phase(ctx)
	if err != nil {
		return res, fmt.Errorf("read the phase record: %w", err)
	}
	res.From = cur
	checks := Checks(ctx, o, pl, cur)
	res.Event.Checks = checks
	var failed []string
	for _, c := range checks {
		mark := "ok  "
		if !c.OK {
			mark = "FAIL"
			failed = append(failed, c.Name)
		}
		o.printf("check %s %s: %s", mark, c.Name, c.Detail)
	}
	if o.DryRun {
		o.printf("dry run: would put up a barrier (at most %s), wait for every live instance, repair and verify the dirty keys, then switch %s -> %s (epoch %d -> %d)",
			o.Timeout, pl.from, pl.to, cur.Epoch, cur.Epoch+1)
		if len(failed) > 0 {
			return res, fmt.Errorf("%w: %s", ErrPrecondition, strings.Join(failed, ", "))
		}
		return res, nil
	}
	if len(failed) > 0 {
		err := fmt.Errorf("%w: %s", ErrPrecondition, strings.Join(failed, ", "))
		return res, o.record(ctx, &res, cur.Epoch, err)
	}
	err = o.barrier(ctx, pl, &res)
	return res, o.record(ctx, &res, res.To.Epoch, err)
}

func (o *Options) record(ctx context.Context, res *Result, epoch int64, err error) error {
	res.Event.Duration = o.Control.Now().Sub(res.Event.Started)
	res.Event.OK = err == nil
	res.Event.Epoch = epoch
	if err != nil {
		res.Event.Error = err.Error()
	}
	// The event must be written even if ctx was cancelled (Ctrl-C).
	ectx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	ev, eerr := o.Control.AddEvent(ectx, res.Event)
	if eerr == nil {
		res.Event = ev
	} else if o.Log != nil {
		o.Log.Warn("could not record the switch event", "err", eerr)
	}
	return err
}

// Checks evaluates the preconditions of a switch.
func Checks(ctx context.Context, o Options, pl plan, cur control.PhaseRecord) []control.Check {
	var out []control.Check
	add := func(name string, err error, ok string) {
		c := control.Check{Name: name, OK: err == nil, Detail: ok}
		if err != nil {
			c.Detail = err.Error()
		}
		out = append(out, c)
	}
	now := o.Control.Now()
	switch {
	case cur.Phase != pl.from:
		add(CheckPhase, fmt.Errorf("the phase is %s; %s starts from %s", cur.Phase, o.Kind, pl.from), "")
	case cur.Barrier != nil && !cur.Barrier.Abandoned(now):
		add(CheckPhase, fmt.Errorf("a switch to %s is in progress (barrier %s, since %s)", cur.Barrier.Target, cur.Barrier.ID, cur.Barrier.Started.Format(time.RFC3339)), "")
	default:
		add(CheckPhase, nil, fmt.Sprintf("%s (epoch %d)", cur.Phase, cur.Epoch))
	}
	if o.Kind == Cutover {
		st, err := migrate.BackfillStatus(ctx, o.KV)
		switch {
		case err != nil:
			add(CheckBackfill, fmt.Errorf("no backfill record (%v): run kvproxy backfill", err), "")
		case !st.Complete():
			add(CheckBackfill, fmt.Errorf("the backfill started %s has not finished: run kvproxy backfill to resume it", st.Started.Format(time.RFC3339)), "")
		default:
			add(CheckBackfill, nil, fmt.Sprintf("finished %s", st.Finished.Format(time.RFC3339)))
		}
		rep, verr := migrate.LastVerify(ctx, o.KV)
		switch {
		case verr != nil:
			add(CheckVerify, fmt.Errorf("no full verify recorded (%v): run kvproxy verify", verr), "")
		case rep.Incremental:
			add(CheckVerify, errors.New("the last verify was incremental: run a full kvproxy verify"), "")
		case !rep.Clean():
			add(CheckVerify, fmt.Errorf("the last verify found %d differences: run kvproxy verify --repair, then kvproxy verify", rep.Differences()), "")
		case err == nil && st.Complete() && rep.Started.Before(*st.Finished):
			add(CheckVerify, errors.New("the last verify started before the backfill finished: run kvproxy verify"), "")
		default:
			add(CheckVerify, nil, fmt.Sprintf("clean, started %s", rep.Started.Format(time.RFC3339)))
		}
	}
	old, total, err := dirtyBacklog(ctx, pl.dirtyLog, now.Add(-o.MaxDirtyAge))
	switch {
	case err != nil:
		add(CheckDirty, fmt.Errorf("cannot read the dirty-key log: %v", err), "")
	case old > 0:
		add(CheckDirty, fmt.Errorf("%d entries older than %s (of %d): the repairer is behind or failing; see kvproxy_dirty_keys and the proxies' logs", old, o.MaxDirtyAge, total), "")
	default:
		add(CheckDirty, nil, fmt.Sprintf("%d recent entries, repaired under the barrier", total))
	}
	// Instances catch up within a poll interval of a switch; give them
	// the switch's timeout before calling one behind.
	deadline := time.Now().Add(o.Timeout)
	for {
		live, behind, err := instancesBehind(ctx, o.Control, cur.Epoch)
		if err == nil && len(behind) > 0 && time.Now().Before(deadline) && ctx.Err() == nil {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		switch {
		case err != nil:
			add(CheckInstances, fmt.Errorf("cannot list instances: %v", err), "")
		case len(behind) > 0:
			add(CheckInstances, fmt.Errorf("behind epoch %d: %s", cur.Epoch, strings.Join(behind, ", ")), "")
		default:
			add(CheckInstances, nil, fmt.Sprintf("%d live", live))
		}
		return out
	}
}

func instancesBehind(ctx context.Context, ctl *control.Store, epoch int64) (live int, behind []string, err error) {
	ins, err := ctl.Instances(ctx)
	if err != nil {
		return 0, nil, err
	}
	now := ctl.Now()
	for _, in := range ins {
		if !in.Live(now) {
			continue
		}
		live++
		if in.EpochSeen != epoch {
			behind = append(behind, fmt.Sprintf("%s (epoch %d)", in.ID, in.EpochSeen))
		}
	}
	return live, behind, nil
}

func dirtyBacklog(ctx context.Context, l dirty.Log, olderThan time.Time) (old, total int64, err error) {
	total, err = l.Count(ctx)
	if err != nil || total == 0 {
		return 0, total, err
	}
	es, err := l.List(ctx, olderThan, 1)
	if err != nil {
		return 0, total, err
	}
	if len(es) == 0 {
		return 0, total, nil
	}
	all, err := l.List(ctx, olderThan, 100000)
	return int64(len(all)), total, err
}

// barrier runs the switch proper.
func (o *Options) barrier(ctx context.Context, pl plan, res *Result) error {
	cur, pred, err := o.Control.Phase(ctx)
	if err != nil {
		return fmt.Errorf("%w: read the phase record: %v", ErrAborted, err)
	}
	if cur.Phase != pl.from {
		return fmt.Errorf("%w: the phase moved to %s", ErrAborted, cur.Phase)
	}
	// Catch up first, writes still flowing: what the repairers have not
	// reached yet is repaired now, so that the barrier only has to repair
	// the last moment's keys.
	pctx, pcancel := context.WithTimeout(ctx, 30*time.Second)
	pre, perr := repairAll(pctx, o, pl, pl.catchUpAge)
	pcancel()
	res.CaughtUp = pre
	if perr != nil && o.Log != nil {
		o.Log.Warn("catch-up repair before the barrier", "err", perr)
	}
	o.printf("caught up: %d dirty keys repaired before the barrier", pre)
	// Younger entries may still have a mirror in flight, so they stay in
	// the log for the barrier; syncing their keys now (without clearing
	// them) leaves the barrier mostly comparisons, not copies.
	sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
	synced, serr := o.presync(sctx, pl)
	scancel()
	res.Synced = synced
	if serr != nil && o.Log != nil {
		o.Log.Warn("sync of recent dirty keys before the barrier", "err", serr)
	}
	o.printf("synced the %d keys of recent entries, which the barrier verifies again", synced)
	start := o.Control.Now().UTC()
	b := &control.Barrier{ID: xid.New().String(), Target: pl.to, Started: start, By: o.By, Deadline: start.Add(o.Timeout)}
	up := cur
	up.Barrier = b
	if err := o.Control.Update(ctx, pred, up); err != nil {
		return fmt.Errorf("%w: put up the barrier: %v", ErrAborted, err)
	}
	o.printf("barrier %s up: ref-store writes held (at most %s)", b.ID, o.Timeout)
	// From here on every way out releases the barrier unless the flip
	// happened, and the whole switch is bounded by the deadline.
	bctx, cancel := context.WithDeadline(ctx, b.Deadline)
	defer cancel()
	flipped := false
	defer func() {
		res.Held = o.Control.Now().Sub(start)
		if !flipped {
			o.release(context.WithoutCancel(ctx), b.ID)
		}
	}()
	if err := o.awaitAcks(bctx, b.ID, cur.Epoch); err != nil {
		return fmt.Errorf("%w: %v", ErrAborted, err)
	}
	o.printf("every live instance drained and acknowledged")
	if err := o.drainUnderBarrier(bctx, pl, res); err != nil {
		return err
	}
	if o.BeforeFlip != nil {
		if err := o.BeforeFlip(bctx); err != nil {
			return fmt.Errorf("%w: %v", ErrAborted, err)
		}
	}
	now, pred, err := o.Control.Phase(bctx)
	if err != nil {
		return fmt.Errorf("%w: re-read the phase record: %v", ErrAborted, err)
	}
	if now.BarrierID() != b.ID || now.Phase != pl.from {
		return fmt.Errorf("%w: the phase record changed under the barrier (%s)", ErrAborted, now)
	}
	if o.Control.Now().After(b.Deadline) {
		// Instances stop honouring the barrier shortly after its
		// deadline; flipping now could let a write through under the old
		// phase.
		return fmt.Errorf("%w: the barrier's %s ran out", ErrAborted, o.Timeout)
	}
	next := control.PhaseRecord{Phase: pl.to, Epoch: now.Epoch + 1, Changed: o.Control.Now().UTC(), By: o.By}
	if err := o.Control.Update(bctx, pred, next); err != nil {
		return fmt.Errorf("%w: flip the phase: %v", ErrAborted, err)
	}
	flipped = true
	res.To = next
	o.printf("phase %s -> %s (epoch %d), barrier released after %s", pl.from, pl.to, next.Epoch, o.Control.Now().Sub(start).Round(time.Millisecond))
	return nil
}

// awaitAcks waits until every live instance acknowledged barrier id. An
// instance whose lease runs out meanwhile no longer counts: it refuses
// writes on its own.
func (o *Options) awaitAcks(ctx context.Context, id string, epoch int64) error {
	t := time.NewTicker(25 * time.Millisecond)
	defer t.Stop()
	var waiting []string
	for {
		ins, err := o.Control.Instances(ctx)
		if err == nil {
			now := o.Control.Now()
			waiting = waiting[:0]
			for _, in := range ins {
				if in.Live(now) && in.BarrierAck != id {
					waiting = append(waiting, in.ID)
				}
			}
			if len(waiting) == 0 {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			slices.Sort(waiting)
			if len(waiting) > 0 {
				return fmt.Errorf("instances did not drain and acknowledge in time: %s", strings.Join(waiting, ", "))
			}
			return ctx.Err()
		case <-t.C:
		}
	}
}

// release takes the barrier down, keeping the phase and epoch.
func (o *Options) release(ctx context.Context, id string) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		cur, pred, err := o.Control.Phase(ctx)
		if err == nil && cur.BarrierID() != id {
			return
		}
		if err == nil {
			cur.Barrier = nil
			if err = o.Control.Update(ctx, pred, cur); err == nil {
				o.printf("barrier %s released; phase stays %s (epoch %d)", id, cur.Phase, cur.Epoch)
				return
			}
		}
		if o.Log != nil {
			o.Log.Warn("release barrier", "err", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The instances let writes go on by themselves after the deadline.
	o.printf("barrier %s could not be released; instances ignore it after its deadline", id)
}

// drainUnderBarrier empties the dirty-key log while no write is in
// flight, a page of entries at a time: an incremental verify of the page's
// keys that repairs what differs (from the authoritative store, checked
// again after the copy), then the page is cleared. Almost every logged key
// was mirrored already, so this is mostly one comparison per key.
func (o *Options) drainUnderBarrier(ctx context.Context, pl plan, res *Result) error {
	verified := 0
	for {
		es, err := pl.dirtyLog.List(ctx, o.Control.Now().Add(time.Second), drainPage)
		if err != nil {
			return fmt.Errorf("%w: list dirty keys: %v", ErrAborted, err)
		}
		if len(es) == 0 {
			break
		}
		keys, refs := distinctKeys(es)
		repaired, unrepaired, err := o.verifyKeys(ctx, pl, keys)
		res.Repaired += repaired
		if err != nil {
			return err
		}
		if unrepaired > 0 {
			return fmt.Errorf("%w: incremental verify left %d differences unrepaired", ErrAborted, unrepaired)
		}
		if err := pl.dirtyLog.Delete(ctx, refs); err != nil {
			return fmt.Errorf("%w: clear verified dirty keys: %v", ErrAborted, err)
		}
		verified += len(keys)
	}
	o.printf("incremental verify of %d logged keys clean; %d repaired", verified, res.Repaired)
	return nil
}

// presync syncs the keys of every entry of the log (compare, and copy
// from the authoritative store if they differ) without clearing any, and
// returns how many keys synced.
func (o *Options) presync(ctx context.Context, pl plan) (int, error) {
	es, err := pl.dirtyLog.List(ctx, o.Control.Now().Add(time.Second), 10*drainPage)
	if err != nil {
		return 0, err
	}
	syncer, err := migrate.NewSyncer(migrate.VerifyOptions{Source: o.Source, KV: o.KV, Direction: pl.direction, Log: o.Log})
	if err != nil {
		return 0, err
	}
	keys, _ := dirty.Distinct(es)
	synced, err := dirty.SyncKeys(ctx, syncer, keys, repairWorkers)
	return len(synced), err
}

// drainPage is how many dirty-key entries the barrier verifies at once.
const drainPage = 2000

// distinctKeys returns the keys of es, each once, and the refs of all of
// them.
func distinctKeys(es []dirty.Entry) ([]migrate.Key, []string) {
	dks, _ := dirty.Distinct(es)
	keys := make([]migrate.Key, len(dks))
	for i, k := range dks {
		keys[i] = migrate.Key(k)
	}
	refs := make([]string, len(es))
	for i, e := range es {
		refs[i] = e.Ref
	}
	return keys, refs
}

// verifyKeys runs an incremental verify with repair of keys, in up to
// verifyWorkers verifiers at once over slices of them (under the barrier
// nothing writes, so they need no common snapshot). It returns how many
// differences were repaired and how many were left.
func (o *Options) verifyKeys(ctx context.Context, pl plan, keys []migrate.Key) (repaired, unrepaired int, err error) {
	n := min(verifyWorkers, (len(keys)+verifySlice-1)/verifySlice)
	var (
		wg sync.WaitGroup
		mu sync.Mutex
	)
	for i := range n {
		part := keys[i*len(keys)/n : (i+1)*len(keys)/n]
		wg.Add(1)
		go func() {
			defer wg.Done()
			rep, verr := o.verifySlice(ctx, pl, part)
			mu.Lock()
			defer mu.Unlock()
			repaired += int(rep.Repaired)
			if !rep.Clean() {
				unrepaired += int(max(1, rep.Differences()-rep.Repaired))
			}
			if verr != nil && err == nil {
				err = verr
			}
		}()
	}
	wg.Wait()
	return repaired, unrepaired, err
}

const (
	verifyWorkers = 8
	verifySlice   = 100 // keys per verifier at the least
)

func (o *Options) verifySlice(ctx context.Context, pl plan, keys []migrate.Key) (migrate.Report, error) {
	v, err := migrate.NewVerifier(migrate.VerifyOptions{Source: o.Source, KV: o.KV, Incremental: true, Repair: true,
		Quiesced: true, Dirty: staticKeys(keys), Direction: pl.direction, Log: o.Log})
	if err != nil {
		return migrate.Report{}, fmt.Errorf("%w: %v", ErrAborted, err)
	}
	rep, err := v.Run(ctx)
	if err != nil {
		return rep, fmt.Errorf("%w: incremental verify: %v", ErrAborted, err)
	}
	return rep, nil
}

// repairAll syncs every entry of the log older than minAge from the
// authoritative store and clears it, returning how many it cleared.
func repairAll(ctx context.Context, o *Options, pl plan, minAge time.Duration) (int, error) {
	syncer, err := migrate.NewSyncer(migrate.VerifyOptions{Source: o.Source, KV: o.KV, Direction: pl.direction, Log: o.Log})
	if err != nil {
		return 0, err
	}
	rep := &dirty.Repairer{Log: pl.dirtyLog, Syncer: syncer, MinAge: minAge, Batch: drainPage, Workers: repairWorkers, Logger: o.Log}
	total := 0
	for {
		// A key may fail while another it depends on (its repository)
		// is repaired in the same round: go on while rounds make
		// progress.
		n, err := rep.RunOnce(ctx)
		total += n
		if err != nil && (n == 0 || ctx.Err() != nil) {
			return total, err
		}
		if n == 0 {
			return total, ctx.Err()
		}
	}
}

// repairWorkers is how many keys a switch syncs at once.
const repairWorkers = 16

type staticKeys []migrate.Key

func (s staticKeys) List(context.Context) ([]migrate.Key, error) { return s, nil }
