package migrate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kvproxy/kvproxy/kv"
	"github.com/kvproxy/kvproxy/metrics"
	"github.com/kvproxy/kvproxy/refstore"
	"github.com/kvproxy/kvproxy/refstore/graveler"
)

// Backfill stages, in order. The per-repository stages run for one
// repository after the other.
const (
	StageRepositories       = "repositories"
	StageCommitsReachable   = "commits-reachable"
	StageCommitsUnreachable = "commits-unreachable"
	StageBranches           = "branches"
	StageTags               = "tags"
	StageStaging            = "staging"
	StageOrphans            = "orphans"
	StageDone               = "done"
)

// perRepoStages run for each repository between StageRepositories and
// StageStaging.
var perRepoStages = []string{StageCommitsReachable, StageCommitsUnreachable, StageBranches, StageTags}

// Hook lets tests act at a point of the copy of one page: "before-write"
// (the page is read from PostgreSQL, nothing written yet) and
// "after-write" (written to KV, not yet re-checked).
type Hook func(ctx context.Context, point, entity string, keys []Key)

// BackfillOptions configures a Backfill. Source and KV are required.
type BackfillOptions struct {
	// Source reads the legacy tables (a *pgxpool.Pool).
	Source Source
	KV     kv.Store
	// PageSize bounds the rows read and written per step (default 1000):
	// memory is proportional to it, not to the database.
	PageSize int
	// MaxRowsPerSecond caps the copy rate (0: no cap).
	MaxRowsPerSecond float64
	// IncludeOrphans also copies staged entries of tokens no branch
	// references; they are always counted and reported.
	IncludeOrphans bool
	Metrics        *metrics.Metrics
	Progress       *Progress
	Log            *slog.Logger
	Hook           Hook
}

// Counts are rows per entity.
type Counts map[string]int64

// Sum is the total over entities.
func (c Counts) Sum() int64 {
	var n int64
	for _, v := range c {
		n += v
	}
	return n
}

// Invalid is a row that cannot be represented in KV (e.g. a NULL
// generation); it is reported and skipped.
type Invalid struct {
	Key    Key    `json:"key"`
	Reason string `json:"reason"`
}

// Orphans reports staged entries whose token no branch references.
type Orphans struct {
	Tokens       int64    `json:"tokens"`
	Rows         int64    `json:"rows"`
	SampleTokens []string `json:"sample_tokens,omitempty"`
	Copied       bool     `json:"copied"`
}

// Status is the "backfill/status" record: cumulative over the runs of one
// backfill (a run resumed from a checkpoint continues it).
type Status struct {
	Started  time.Time  `json:"started"`
	Finished *time.Time `json:"finished,omitempty"`
	Runs     int        `json:"runs"`
	// Copied rows were written by the backfill; Present rows were already
	// in KV (written by a dual write or an earlier run) and left alone;
	// Reverted rows were written, found deleted or changed in PostgreSQL
	// meanwhile, and removed again.
	Copied   Counts    `json:"copied"`
	Present  Counts    `json:"present"`
	Reverted Counts    `json:"reverted"`
	Invalid  []Invalid `json:"invalid,omitempty"`
	Orphans  Orphans   `json:"orphans"`
}

// Complete tells whether the backfill finished.
func (s Status) Complete() bool { return s.Finished != nil }

// Checkpoint is the "backfill/checkpoint" record: where to resume. It is
// written after every page, so a crash redoes at most one page.
type Checkpoint struct {
	Stage     string `json:"stage"`
	Repo      string `json:"repo,omitempty"`
	RepoStage string `json:"repo_stage,omitempty"`
	After     string `json:"after,omitempty"`
	AfterKey  []byte `json:"after_key,omitempty"`
	Pages     int64  `json:"pages"`
	Status    Status `json:"status"`
}

// BackfillResult is what one run did, and the cumulative status.
type BackfillResult struct {
	Resumed bool   `json:"resumed"`
	Pages   int64  `json:"pages"`
	Copied  Counts `json:"copied"`
	Present Counts `json:"present"`
	// Reverted counts this run's copies undone because the row was
	// deleted or changed in PostgreSQL while it ran.
	Reverted Counts `json:"reverted"`
	Total    Counts `json:"total"`
	Status   Status `json:"status"`
	// Seconds is this run's time by stage; ReadSeconds, WriteSeconds and
	// RecheckSeconds split it into upstream page reads, KV writes and
	// upstream re-reads.
	Seconds        map[string]float64 `json:"seconds"`
	ReadSeconds    float64            `json:"read_seconds"`
	WriteSeconds   float64            `json:"write_seconds"`
	RecheckSeconds float64            `json:"recheck_seconds"`
}

// Backfill copies the ref store from PostgreSQL into KV; see the package
// documentation for the order and the race argument.
type Backfill struct {
	o      BackfillOptions
	run    BackfillResult
	cp     Checkpoint
	thr    *throttle
	uid    string // instance uid of cp.Repo
	uidFor string
	wrote  bool // the last step wrote rows: checkpoint it
	pre    *prefetch
}

// NewBackfill checks the options and returns a Backfill.
func NewBackfill(o BackfillOptions) (*Backfill, error) {
	if o.Source == nil || o.KV == nil {
		return nil, errors.New("migrate: backfill needs a source and a KV store")
	}
	if o.PageSize <= 0 {
		o.PageSize = 1000
	}
	if o.MaxRowsPerSecond < 0 {
		return nil, fmt.Errorf("migrate: max rows per second %v is negative", o.MaxRowsPerSecond)
	}
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Backfill{o: o}, nil
}

// Run copies everything, resuming from the checkpoint if there is one, and
// records the status. It is idempotent: a second run copies nothing that
// is already there.
func (b *Backfill) Run(ctx context.Context) (BackfillResult, error) {
	b.run = BackfillResult{Copied: Counts{}, Present: Counts{}, Reverted: Counts{}, Seconds: map[string]float64{}}
	err := getRecord(ctx, b.o.KV, KeyBackfillCheckpoint, &b.cp)
	switch {
	case err == nil:
		b.run.Resumed = true
		b.cp.Status.Runs++
		b.o.Log.Info("backfill resuming", "stage", b.cp.Stage, "repo", b.cp.Repo, "repo_stage", b.cp.RepoStage, "pages", b.cp.Pages)
	case errors.Is(err, ErrNoRecord):
		b.cp = Checkpoint{Stage: StageRepositories, Status: Status{Started: time.Now().UTC(), Runs: 1, Copied: Counts{}, Present: Counts{}, Reverted: Counts{}}}
		if err := putRecord(ctx, b.o.KV, KeyBackfillStatus, b.cp.Status); err != nil {
			return b.run, err
		}
	default:
		return b.run, err
	}
	for _, c := range []*Counts{&b.cp.Status.Copied, &b.cp.Status.Present, &b.cp.Status.Reverted} {
		if *c == nil {
			*c = Counts{}
		}
	}
	total, err := b.totals(ctx)
	if err != nil {
		return b.run, err
	}
	b.run.Total = total
	if b.o.Metrics != nil {
		for e, n := range total {
			b.o.Metrics.BackfillRowsTotal.WithLabelValues(e).Set(float64(n))
		}
	}
	b.thr = newThrottle(b.o.MaxRowsPerSecond, b.o.Log)
	defer func() {
		if b.pre != nil {
			<-b.pre.ch // let an in-flight read end before returning
			b.pre = nil
		}
	}()
	saved := time.Now()
	for b.cp.Stage != StageDone {
		if err := ctx.Err(); err != nil {
			return b.run, err
		}
		t0, stage := time.Now(), b.cp.Stage
		if err := b.step(ctx); err != nil {
			return b.run, fmt.Errorf("backfill %s %s: %w", b.cp.Stage, b.cp.Repo, err)
		}
		b.run.Seconds[stage] += time.Since(t0).Seconds()
		// A step that wrote nothing (a stage or repository change) needs
		// no checkpoint of its own: redoing it after a crash costs one
		// empty read. Skipping it saves a durable write per step, which is
		// an fsync on the local store.
		if b.wrote || time.Since(saved) > 5*time.Second {
			if err := putRecord(ctx, b.o.KV, KeyBackfillCheckpoint, b.cp); err != nil {
				return b.run, err
			}
			b.wrote, saved = false, time.Now()
		}
	}
	now := time.Now().UTC()
	b.cp.Status.Finished = &now
	if err := putRecord(ctx, b.o.KV, KeyBackfillStatus, b.cp.Status); err != nil {
		return b.run, err
	}
	if err := deleteRecord(ctx, b.o.KV, KeyBackfillCheckpoint); err != nil {
		return b.run, err
	}
	b.o.Progress.Done("done", b.done(), total.Sum())
	b.run.Status = b.cp.Status
	return b.run, nil
}

func (b *Backfill) done() int64 {
	s := b.cp.Status
	return s.Copied.Sum() + s.Present.Sum() + int64(len(s.Invalid))
}

// totals counts what there is to copy, for progress and metrics.
func (b *Backfill) totals(ctx context.Context) (Counts, error) {
	c := Counts{}
	staged := `(SELECT count(*) FROM graveler_staging_kv s WHERE EXISTS (SELECT 1 FROM graveler_branches b WHERE b.staging_token = s.staging_token))`
	if b.o.IncludeOrphans {
		staged = `(SELECT count(*) FROM graveler_staging_kv)`
	}
	q := `SELECT (SELECT count(*) FROM graveler_repositories), (SELECT count(*) FROM graveler_commits),
		(SELECT count(*) FROM graveler_branches), (SELECT count(*) FROM graveler_tags),
		` + staged
	rows, err := b.o.Source.Query(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("count rows: %w", err)
	}
	defer rows.Close()
	var r, cm, br, tg, st int64
	for rows.Next() {
		if err := rows.Scan(&r, &cm, &br, &tg, &st); err != nil {
			return nil, fmt.Errorf("count rows: %w", err)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count rows: %w", err)
	}
	c[EntityRepositories], c[EntityCommits], c[EntityBranches], c[EntityTags], c[EntityStaging] = r, cm, br, tg, st
	return c, nil
}

// The reachable commits of a repository: a walk from every branch head
// and tag through all parents, done by PostgreSQL (UNION keeps the walk
// finite on shared ancestry) so the client holds one page at a time.
const reachCTE = `WITH RECURSIVE reach(id) AS (
	SELECT commit_id FROM graveler_branches WHERE repository_id = $1 AND commit_id IS NOT NULL
	UNION SELECT commit_id FROM graveler_tags WHERE repository_id = $1 AND commit_id IS NOT NULL
	UNION SELECT unnest(c.parents) FROM graveler_commits c JOIN reach r ON c.repository_id = $1 AND c.id = r.id
) `

// step copies one page of the current stage and advances the checkpoint.
func (b *Backfill) step(ctx context.Context) error {
	n := b.o.PageSize
	cp := &b.cp
	switch cp.Stage {
	case StageRepositories:
		return b.page(ctx, EntityRepositories, func(ctx context.Context, after string, _ []byte) ([]Row, error) {
			return collectN(ctx, b.o.Source, n, EntityRepositories,
				`SELECT `+withXMin(repoCols)+` FROM graveler_repositories WHERE id > $1 ORDER BY id LIMIT $2`, after, n)
		}, func() { cp.Stage, cp.Repo, cp.RepoStage, cp.After = StageCommitsReachable, "", "", "" }, nil)
	case StageCommitsReachable, StageCommitsUnreachable, StageBranches, StageTags:
		return b.repoStep(ctx)
	case StageStaging:
		if cp.After == "" && cp.AfterKey == nil {
			if err := b.orphans(ctx); err != nil {
				return err
			}
		}
		// One pass over the table in index order, the cheapest read there
		// is: filtering in the query (EXISTS on graveler_branches, which
		// has no index on staging_token) made PostgreSQL sort every
		// branch for every page, three times the cost of the page itself.
		// Entries of orphan tokens are copied in the same pass with
		// IncludeOrphans, dropped otherwise.
		return b.page(ctx, EntityStaging, func(ctx context.Context, after string, afterKey []byte) ([]Row, error) {
			rows, err := collectN(ctx, b.o.Source, n, EntityStaging, `SELECT `+withXMin(stagingCols)+` FROM graveler_staging_kv
				WHERE (staging_token, key) > ($1, $2) ORDER BY staging_token, key LIMIT $3`, after, afterKey, n)
			if err != nil {
				return nil, err
			}
			return rows, b.markOrphans(ctx, rows)
		}, func() { cp.Stage, cp.After, cp.AfterKey = StageDone, "", nil }, func(_ context.Context, rows []Row) ([]Row, error) {
			if b.o.IncludeOrphans {
				return rows, nil
			}
			out := rows[:0]
			for _, r := range rows {
				if !r.orphan {
					out = append(out, r)
				}
			}
			return out, nil
		})
	case StageOrphans:
		// Only a checkpoint of an earlier version, which copied orphans in
		// a stage of their own, resumes here.
		return b.page(ctx, EntityStaging, func(ctx context.Context, after string, afterKey []byte) ([]Row, error) {
			return collectN(ctx, b.o.Source, n, EntityStaging, `SELECT `+withXMin(stagingCols)+` FROM graveler_staging_kv s
				WHERE (s.staging_token, s.key) > ($1, $2) AND NOT EXISTS (SELECT 1 FROM graveler_branches b WHERE b.staging_token = s.staging_token)
				ORDER BY s.staging_token, s.key LIMIT $3`, after, afterKey, n)
		}, func() { cp.Stage, cp.After, cp.AfterKey = StageDone, "", nil }, nil)
	default:
		return fmt.Errorf("%w: unknown stage %q in the checkpoint", ErrBadKey, cp.Stage)
	}
}

// repoStep copies one page of the current repository's current stage,
// moving to the next repository when its stages are done.
func (b *Backfill) repoStep(ctx context.Context) error {
	cp := &b.cp
	if cp.RepoStage == "" {
		var next []string
		rows, err := b.o.Source.Query(ctx, `SELECT id FROM graveler_repositories WHERE id > $1 ORDER BY id LIMIT 1`, cp.Repo)
		if err != nil {
			return fmt.Errorf("next repository: %w", err)
		}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return err
			}
			next = append(next, id)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("next repository: %w", err)
		}
		if len(next) == 0 {
			cp.Stage, cp.Repo, cp.After = StageStaging, "", ""
			return nil
		}
		cp.Repo, cp.RepoStage, cp.After = next[0], perRepoStages[0], ""
	}
	cp.Stage = cp.RepoStage
	uid, err := b.repoUID(ctx, cp.Repo)
	if err != nil {
		return err
	}
	if uid == "" {
		// Deleted meanwhile (or IN_DELETION in KV): nothing of it to copy.
		cp.RepoStage = ""
		return nil
	}
	advance := func() {
		for i, s := range perRepoStages {
			if s == cp.RepoStage {
				cp.RepoStage, cp.After = "", ""
				if i+1 < len(perRepoStages) {
					cp.RepoStage = perRepoStages[i+1]
					cp.Stage = cp.RepoStage
				}
				return
			}
		}
	}
	n, repo := b.o.PageSize, cp.Repo
	var entity, q string
	var filter func(context.Context, []Row) ([]Row, error)
	switch cp.RepoStage {
	case StageCommitsReachable:
		entity = EntityCommits
		q = reachCTE + `SELECT ` + withXMin(commitCols) + ` FROM graveler_commits WHERE repository_id = $1 AND id IN (SELECT id FROM reach) AND id > $2 ORDER BY id LIMIT $3`
	case StageCommitsUnreachable:
		// Every commit the walk did not copy: the unreachable ones, and
		// those that became reachable behind the walk's position (a branch
		// reset to an old commit). Pages are in byte order so that one KV
		// range scan tells which are there already.
		entity = EntityCommits
		q = `SELECT ` + withXMin(commitCols) + ` FROM graveler_commits WHERE repository_id = $1 AND id COLLATE "C" > $2 ORDER BY id COLLATE "C" LIMIT $3`
		filter = b.absentCommits
	case StageBranches:
		entity = EntityBranches
		q = `SELECT ` + withXMin(branchCols) + ` FROM graveler_branches WHERE repository_id = $1 AND id > $2 ORDER BY id LIMIT $3`
	case StageTags:
		entity = EntityTags
		q = `SELECT ` + withXMin(tagCols) + ` FROM graveler_tags WHERE repository_id = $1 AND id > $2 ORDER BY id LIMIT $3`
	default:
		return fmt.Errorf("%w: unknown repository stage %q in the checkpoint", ErrBadKey, cp.RepoStage)
	}
	return b.page(ctx, entity, func(ctx context.Context, after string, _ []byte) ([]Row, error) {
		return collectN(ctx, b.o.Source, n, entity, q, repo, after, n)
	}, advance, filter)
}

// markOrphans marks the rows (ordered by token) whose token no branch
// references: one query for the page's tokens.
func (b *Backfill) markOrphans(ctx context.Context, rows []Row) error {
	var toks []string
	for i, r := range rows {
		if i == 0 || r.Staged.StagingToken != rows[i-1].Staged.StagingToken {
			toks = append(toks, r.Staged.StagingToken)
		}
	}
	if len(toks) == 0 {
		return nil
	}
	q, err := b.o.Source.Query(ctx, `SELECT DISTINCT staging_token FROM graveler_branches WHERE staging_token = ANY($1)`, toks)
	if err != nil {
		return fmt.Errorf("referenced tokens: %w", err)
	}
	ref, err := pgx.CollectRows(q, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("referenced tokens: %w", err)
	}
	referenced := make(map[string]bool, len(ref))
	for _, t := range ref {
		referenced[t] = true
	}
	for i := range rows {
		rows[i].orphan = !referenced[rows[i].Staged.StagingToken]
	}
	return nil
}

// absentCommits drops the commits of a page (sorted bytewise by id) that
// KV has: one range scan of the repository partition instead of a read
// per commit.
func (b *Backfill) absentCommits(ctx context.Context, rows []Row) ([]Row, error) {
	if len(rows) == 0 {
		return rows, nil
	}
	pk := []byte(b.uidPartition())
	first, last := refstore.CommitKey(rows[0].Commit.ID), refstore.CommitKey(rows[len(rows)-1].Commit.ID)
	it, err := kv.ScanPrefix(ctx, b.o.KV, pk, []byte(refstore.CommitKeyPrefix), first)
	if err != nil {
		return nil, fmt.Errorf("scan commits: %w", err)
	}
	defer it.Close()
	have := map[string]bool{}
	for it.Next() {
		k := it.Entry().Key
		if bytes.Compare(k, last) > 0 {
			break
		}
		have[string(k[len(refstore.CommitKeyPrefix):])] = true
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("scan commits: %w", err)
	}
	out := rows[:0:0]
	var skipped []string
	for _, r := range rows {
		if !have[r.Commit.ID] {
			out = append(out, r)
		} else {
			skipped = append(skipped, r.Commit.ID)
		}
	}
	// Skipped commits the walk reaches were counted by the walk; the others
	// were in KV before (a dual write, an earlier run) and count as present.
	if len(skipped) > 0 {
		reached, err := b.o.Source.Query(ctx, reachCTE+`SELECT count(*) FROM reach WHERE id = ANY($2)`, b.uidFor, skipped)
		if err != nil {
			return nil, fmt.Errorf("reachable commits: %w", err)
		}
		var n int64
		for reached.Next() {
			if err := reached.Scan(&n); err != nil {
				reached.Close()
				return nil, fmt.Errorf("reachable commits: %w", err)
			}
		}
		reached.Close()
		if err := reached.Err(); err != nil {
			return nil, fmt.Errorf("reachable commits: %w", err)
		}
		unreached := int64(len(skipped)) - n
		b.cp.Status.Present[EntityCommits] += unreached
		b.run.Present[EntityCommits] += unreached
	}
	return out, nil
}

func (b *Backfill) uidPartition() string {
	return string(refstore.RepoPartition(b.uidFor, b.uid))
}

// repoUID returns the instance uid of repo in KV, copying the repository
// first if KV does not have it (it was created after the repositories
// stage passed it and no dual write brought it). "" means: skip it.
func (b *Backfill) repoUID(ctx context.Context, repo string) (string, error) {
	if b.uidFor == repo && b.uid != "" {
		return b.uid, nil
	}
	for range 2 {
		rd, _, err := repoRecord(ctx, b.o.KV, repo)
		if err != nil {
			return "", err
		}
		if rd != nil {
			if rd.GetState() != graveler.RepositoryState_ACTIVE || rd.GetInstanceUid() == "" {
				b.o.Log.Warn("repository in KV is not active, skipping its rows", "repository", repo, "state", rd.GetState().String())
				return "", nil
			}
			b.uid, b.uidFor = rd.GetInstanceUid(), repo
			return b.uid, nil
		}
		row, ok, err := readRow(ctx, b.o.Source, Key{Entity: EntityRepositories, ID: repo})
		if err != nil || !ok {
			return "", err
		}
		if _, err := b.copyRows(ctx, EntityRepositories, []Row{row}); err != nil {
			return "", err
		}
	}
	return "", nil
}

// page reads one page with read, copies it and advances the keyset
// position, or calls next when the stage has no more rows.
func (b *Backfill) page(ctx context.Context, entity string, read readFunc, next func(), filter func(context.Context, []Row) ([]Row, error)) error {
	t0 := time.Now()
	at := position{b.cp.Stage, b.cp.Repo, b.cp.RepoStage, b.cp.After, string(b.cp.AfterKey)}
	var pg pageRead
	if b.pre != nil && b.pre.at == at {
		pg = <-b.pre.ch
	} else {
		if b.pre != nil {
			<-b.pre.ch // a stale read (the position moved): drop it
		}
		pg = timedRead(ctx, read, b.cp.After, b.cp.AfterKey)
	}
	b.pre = nil
	rows, err, latency := pg.rows, pg.err, pg.latency
	if err != nil {
		return err
	}
	b.run.ReadSeconds += latency.Seconds()
	if len(rows) == 0 {
		next()
		return nil
	}
	last := rows[len(rows)-1].Key()
	if len(rows) >= b.o.PageSize {
		// Read the next page while this one is written and re-checked:
		// each row still goes through read < write < re-check, which is
		// all the race argument needs.
		nx := &prefetch{at: position{at.stage, at.repo, at.repoStage, last.ID, string(last.StagingKey)}, ch: make(chan pageRead, 1)}
		go func() { nx.ch <- timedRead(ctx, read, last.ID, last.StagingKey) }()
		b.pre = nx
	}
	b.wrote = true
	if filter != nil {
		if rows, err = filter(ctx, rows); err != nil {
			return err
		}
	}
	if _, err := b.copyRows(ctx, entity, rows); err != nil {
		return err
	}
	b.cp.After, b.cp.AfterKey = last.ID, last.StagingKey
	b.cp.Pages++
	b.run.Pages++
	b.o.Progress.Update(b.cp.Stage, b.done(), b.run.Total.Sum())
	if b.o.Metrics != nil {
		if el := time.Since(t0).Seconds(); el > 0 {
			b.o.Metrics.BackfillRowsPerSecond.Set(float64(len(rows)) / el)
		}
	}
	return b.thr.wait(ctx, b.cp.Stage, len(rows), latency)
}

// readFunc reads the page after a keyset position.
type readFunc func(ctx context.Context, after string, afterKey []byte) ([]Row, error)

// position is where a page starts.
type position struct {
	stage, repo, repoStage, after, afterKey string
}

type pageRead struct {
	rows    []Row
	err     error
	latency time.Duration
}

// prefetch is the read of the next page, in flight.
type prefetch struct {
	at position
	ch chan pageRead
}

func timedRead(ctx context.Context, read readFunc, after string, afterKey []byte) pageRead {
	t0 := time.Now()
	rows, err := read(ctx, after, afterKey)
	return pageRead{rows: rows, err: err, latency: time.Since(t0)}
}

// copyRows writes rows with create-if-absent, re-reads the written ones in
// PostgreSQL and removes (CaS) any whose row was deleted or changed
// meanwhile. It returns the items written and kept.
func (b *Backfill) copyRows(ctx context.Context, entity string, rows []Row) (kept int, err error) {
	items := make([]*item, 0, len(rows))
	uids := map[string]string{}
	for _, r := range rows {
		k := r.Key()
		uid := b.uid
		if entity == EntityRepositories {
			uid = newUID()
			uids[k.ID] = uid
		}
		v, err := encode(r, uid)
		if err != nil {
			b.invalid(k, err)
			continue
		}
		pk, key := k.location(uid)
		items = append(items, &item{key: k, pk: pk, k: key, value: v, xmin: r.XMin, hasXMin: r.HasXMin})
	}
	keys := make([]Key, len(items))
	for i, it := range items {
		keys[i] = it.key
	}
	if b.o.Hook != nil {
		b.o.Hook(ctx, "before-write", entity, keys)
	}
	tw := time.Now()
	if err := createIfAbsent(ctx, b.o.KV, items); err != nil {
		return 0, err
	}
	b.run.WriteSeconds += time.Since(tw).Seconds()
	if b.o.Hook != nil {
		b.o.Hook(ctx, "after-write", entity, keys)
	}
	tr := time.Now()
	now, err := b.recheck(ctx, entity, items)
	if err != nil {
		return 0, err
	}
	b.run.RecheckSeconds += time.Since(tr).Seconds()
	copied, present, reverted := int64(0), int64(0), int64(0)
	for _, it := range items {
		if !it.written {
			present++
			continue
		}
		if it.unchanged {
			copied++
			continue
		}
		cur, ok := now[it.key.String()]
		same := false
		if ok {
			uid := b.uid
			if entity == EntityRepositories {
				uid = uids[it.key.ID]
			}
			v, err := encode(cur, uid)
			same = err == nil && bytes.Equal(v, it.value)
		}
		if same {
			copied++
			continue
		}
		// Deleted or changed in PostgreSQL after we read it: take our copy
		// back unless a dual write has replaced it already.
		deleted, err := deleteIf(ctx, b.o.KV, it.pk, it.k, it.value)
		if err != nil {
			return 0, fmt.Errorf("undo copy of %s: %w", it.key, err)
		}
		if deleted {
			reverted++
		} else {
			present++
		}
	}
	st := &b.cp.Status
	st.Copied[entity] += copied
	st.Present[entity] += present
	st.Reverted[entity] += reverted
	b.run.Copied[entity] += copied
	b.run.Present[entity] += present
	b.run.Reverted[entity] += reverted
	if b.o.Metrics != nil {
		b.o.Metrics.BackfillRowsCopied.WithLabelValues(entity).Add(float64(copied))
	}
	return int(copied), nil
}

// recheck re-reads, after the write, the SQL rows of the written items.
// An item whose row version (xmin) is still the one read is marked
// unchanged: a row version never changes, and a later version or a
// re-inserted row has a later xmin. Only the others (changed, deleted, or
// read without their xmin) are re-read whole, indexed by Key.String().
func (b *Backfill) recheck(ctx context.Context, entity string, items []*item) (map[string]Row, error) {
	var versioned, whole []Key
	for _, it := range items {
		if it.written && it.hasXMin {
			versioned = append(versioned, it.key)
		}
	}
	vers, err := readVersions(ctx, b.o.Source, entity, versioned)
	if err != nil {
		return nil, err
	}
	for _, it := range items {
		if !it.written {
			continue
		}
		if it.hasXMin {
			if x, ok := vers[versionKey(it.key)]; ok && x == it.xmin {
				it.unchanged = true
				continue
			}
		}
		whole = append(whole, it.key)
	}
	return readRows(ctx, b.o.Source, entity, whole)
}

// maxInvalid bounds the invalid rows a status names: the checkpoint
// carries the status and must stay well inside a DynamoDB item (400 KB).
const maxInvalid = 100

// invalid records a row that cannot be stored in KV (once: the commit
// stages may meet it twice).
func (b *Backfill) invalid(k Key, err error) {
	st := &b.cp.Status
	for _, in := range st.Invalid {
		if in.Key.String() == k.String() {
			return
		}
	}
	b.o.Log.Warn("row cannot be stored in KV, skipped", "key", k.String(), "err", err)
	if len(st.Invalid) < maxInvalid {
		st.Invalid = append(st.Invalid, Invalid{Key: k, Reason: err.Error()})
	}
}

// orphans counts staged entries of tokens no branch references.
func (b *Backfill) orphans(ctx context.Context) error {
	rows, err := b.o.Source.Query(ctx, `SELECT staging_token, count(*) FROM graveler_staging_kv s
		WHERE NOT EXISTS (SELECT 1 FROM graveler_branches b WHERE b.staging_token = s.staging_token)
		GROUP BY staging_token ORDER BY staging_token`)
	if err != nil {
		return fmt.Errorf("count orphan tokens: %w", err)
	}
	defer rows.Close()
	o := Orphans{Copied: b.o.IncludeOrphans}
	for rows.Next() {
		var tok string
		var n int64
		if err := rows.Scan(&tok, &n); err != nil {
			return fmt.Errorf("count orphan tokens: %w", err)
		}
		o.Tokens++
		o.Rows += n
		if len(o.SampleTokens) < 5 {
			o.SampleTokens = append(o.SampleTokens, tok)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("count orphan tokens: %w", err)
	}
	b.cp.Status.Orphans = o
	if o.Tokens > 0 {
		b.o.Log.Warn("orphan staging tokens (no branch references them)", "tokens", o.Tokens, "rows", o.Rows, "sample", o.SampleTokens, "copied", o.Copied)
	}
	return nil
}
