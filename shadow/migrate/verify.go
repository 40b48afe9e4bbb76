package migrate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/kvproxy/kvproxy/kv"
	"github.com/kvproxy/kvproxy/metrics"
	"github.com/kvproxy/kvproxy/refstore"
	"github.com/kvproxy/kvproxy/refstore/graveler"
)

// Verify results, as used in reports and the kvproxy_verify_entities
// metric's result label.
const (
	ResultMatch        = "match"
	ResultMismatch     = "mismatch"
	ResultMissingInKV  = "missing_in_kv"
	ResultExtraInKV    = "extra_in_kv"
	KeyVerifyLastIncr  = "verify/last-incremental"
	defaultSampleCount = 10
)

// Direction says which store is authoritative for a repair.
type Direction int

const (
	// SQLToKV re-copies differences from PostgreSQL into KV (the direction
	// during dual-write, where PostgreSQL is authoritative).
	SQLToKV Direction = iota
	// KVToSQL re-copies differences from KV into PostgreSQL (kv-primary).
	KVToSQL
)

func (d Direction) String() string {
	if d == KVToSQL {
		return "kv-to-sql"
	}
	return "sql-to-kv"
}

// ParseDirection reads "sql-to-kv" or "kv-to-sql".
func ParseDirection(s string) (Direction, error) {
	switch s {
	case "sql-to-kv", "":
		return SQLToKV, nil
	case "kv-to-sql":
		return KVToSQL, nil
	}
	return 0, fmt.Errorf("%w: repair direction %q (want sql-to-kv or kv-to-sql)", ErrBadKey, s)
}

// DirtyKeys is the dirty-key log as verify --incremental reads it: the
// keys whose mirror write failed or raced since the last repair.
type DirtyKeys interface {
	List(ctx context.Context) ([]Key, error)
}

// Source is the upstream PostgreSQL as migrate reads it (a *pgxpool.Pool).
type Source interface {
	querier
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	BeginTx(ctx context.Context, opts pgx.TxOptions) (pgx.Tx, error)
}

// Sample is one difference, named.
type Sample struct {
	Result string `json:"result"`
	Key    Key    `json:"key"`
	Detail string `json:"detail,omitempty"`
}

// EntityReport is the verify result of one entity.
type EntityReport struct {
	Match       int64 `json:"match"`
	Mismatch    int64 `json:"mismatch"`
	MissingInKV int64 `json:"missing_in_kv"`
	ExtraInKV   int64 `json:"extra_in_kv"`
	// SourceHashMismatch counts PostgreSQL commits whose fields do not hash
	// to their id: not a difference between the stores, but hash refs to
	// them do not resolve in either era.
	SourceHashMismatch int64    `json:"source_hash_mismatch,omitempty"`
	Samples            []Sample `json:"samples,omitempty"`
}

// Differences is mismatched + missing + extra.
func (e *EntityReport) Differences() int64 { return e.Mismatch + e.MissingInKV + e.ExtraInKV }

// Report is a verify result; the full one is stored as "verify/last".
type Report struct {
	Started     time.Time                `json:"started"`
	Finished    time.Time                `json:"finished"`
	Incremental bool                     `json:"incremental"`
	Runs        int                      `json:"runs"`
	Entities    map[string]*EntityReport `json:"entities"`
	Repair      bool                     `json:"repair"`
	Direction   string                   `json:"direction,omitempty"`
	// Repaired differences were re-copied and re-checked equal;
	// RepairFailed ones were not.
	Repaired     int64 `json:"repaired"`
	RepairFailed int64 `json:"repair_failed"`
	// Rechecked differences vanished when both stores were read again
	// (writes in flight during the verify); they count as matches.
	Rechecked int64 `json:"rechecked"`
	// Pending differences are on keys of the dirty-key log (see
	// VerifyOptions.Pending): known, and repaired before any cutover.
	Pending int64 `json:"pending"`
}

// Differences is the sum over entities.
func (r Report) Differences() int64 {
	var n int64
	for _, e := range r.Entities {
		n += e.Differences()
	}
	return n
}

// Clean tells whether the stores were equal at the end of the verify:
// no differences, or every one repaired and re-checked.
func (r Report) Clean() bool {
	return r.RepairFailed == 0 && r.Differences() == r.Repaired
}

func (r *Report) entity(e string) *EntityReport {
	if r.Entities == nil {
		r.Entities = map[string]*EntityReport{}
	}
	if r.Entities[e] == nil {
		r.Entities[e] = &EntityReport{}
	}
	return r.Entities[e]
}

// VerifyOptions configures a Verifier. Source and KV are required.
type VerifyOptions struct {
	Source Source
	KV     kv.Store
	// PageSize is the rows fetched per cursor round trip (default 1000).
	PageSize int
	// Samples is how many keys per entity a report names (default 10).
	Samples int
	// IncludeOrphans also verifies staged entries of tokens no branch
	// references.
	IncludeOrphans bool
	// Repair re-copies each difference in Direction and re-checks it.
	Repair    bool
	Direction Direction
	// Dirty is the dirty-key log; Incremental checks only its keys.
	Dirty       DirtyKeys
	Incremental bool
	// Pending, if set, is the dirty-key log of the phase in force. A full
	// verify running under load counts a persistent difference whose key
	// (or its repository, or its whole set) is logged there as pending
	// repair, not as a difference: it is recorded, and the repairer (or
	// the switch's barrier) repairs it. Only silent divergence counts.
	Pending  DirtyKeys
	Metrics  *metrics.Metrics
	Progress *Progress
	Log      *slog.Logger
	// MaxRowsPerSecond caps the compare rate (0: none), to spare a busy
	// upstream.
	MaxRowsPerSecond float64
	// Quiesced says that nothing writes while the verify runs (a switch's
	// barrier holds writes): a difference cannot be a write in flight, so
	// it counts (and is repaired) without being re-read after a delay.
	Quiesced bool
	// AfterRepository is called after each repository's rows were checked
	// (tests use it to stop a run half-way).
	AfterRepository func(repo string)
}

// verifyCheckpoint is the "verify/checkpoint" record, written after every
// repository.
type verifyCheckpoint struct {
	Stage    string `json:"stage"`
	LastRepo string `json:"last_repo"`
	Rows     int64  `json:"rows"`
	Report   Report `json:"report"`
}

// Verifier compares PostgreSQL and KV.
type Verifier struct {
	o      VerifyOptions
	tx     pgx.Tx
	rep    Report
	cp     verifyCheckpoint
	cursor int
	total  int64
	thr    *throttle
	// delayedRechecks counts differences re-read with delays.
	delayedRechecks int
	pendingSet      map[string]bool
	pendingAt       time.Time
	// noRecheck: a Syncer repairs every difference at once (its repair
	// re-checks), so re-reading first would only slow it down.
	noRecheck bool
	// inflight is a cursor's FETCH running ahead on tx; every other use of
	// tx waits for it first (settle): a connection runs one statement at
	// a time.
	inflight *fetchJob
}

// fetchJob is a FETCH running ahead.
type fetchJob struct {
	done chan struct{}
	rows []Row
	err  error
}

// settle waits for a FETCH running ahead on tx, if any.
func (v *Verifier) settle() {
	if j := v.inflight; j != nil {
		<-j.done
		v.inflight = nil
	}
}

// NewVerifier checks the options.
func NewVerifier(o VerifyOptions) (*Verifier, error) {
	if o.Source == nil || o.KV == nil {
		return nil, errors.New("migrate: verify needs a source and a KV store")
	}
	if o.Incremental && o.Dirty == nil {
		return nil, errors.New("migrate: incremental verify needs the dirty-key log")
	}
	if o.PageSize <= 0 {
		o.PageSize = 1000
	}
	if o.Samples <= 0 {
		o.Samples = defaultSampleCount
	}
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.MaxRowsPerSecond < 0 {
		return nil, fmt.Errorf("migrate: max rows per second %v is negative", o.MaxRowsPerSecond)
	}
	return &Verifier{o: o, thr: newThrottle(o.MaxRowsPerSecond, o.Log), noRecheck: o.Quiesced}, nil
}

// Run verifies (and repairs), stores the report and returns it.
func (v *Verifier) Run(ctx context.Context) (Report, error) {
	if v.o.Incremental {
		return v.runIncremental(ctx)
	}
	err := getRecord(ctx, v.o.KV, KeyVerifyCheckpoint, &v.cp)
	switch {
	case err == nil:
		v.cp.Report.Runs++
		v.o.Log.Info("verify resuming", "after_repository", v.cp.LastRepo, "stage", v.cp.Stage)
	case errors.Is(err, ErrNoRecord):
		v.cp = verifyCheckpoint{Stage: "repositories", Report: Report{Started: time.Now().UTC(), Runs: 1}}
	default:
		return Report{}, err
	}
	v.rep = v.cp.Report
	v.rep.Repair, v.rep.Direction = v.o.Repair, v.o.Direction.String()
	for _, e := range Entities() {
		v.rep.entity(e)
	}
	// One snapshot for the SQL side; READ ONLY DEFERRABLE would wait for a
	// safe snapshot, which a busy primary may never offer.
	tx, err := v.o.Source.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return v.rep, fmt.Errorf("begin snapshot: %w", err)
	}
	v.tx = tx
	defer func() { v.settle(); _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if err := v.countTotal(ctx); err != nil {
		return v.rep, err
	}
	if v.cp.Stage == "repositories" {
		if err := v.repositories(ctx); err != nil {
			return v.rep, err
		}
		v.cp.Stage = "orphans"
		if err := v.save(ctx); err != nil {
			return v.rep, err
		}
	}
	if v.o.IncludeOrphans {
		if err := v.orphans(ctx); err != nil {
			return v.rep, err
		}
	}
	v.rep.Finished = time.Now().UTC()
	v.publish()
	v.o.Progress.Done("done", v.cp.Rows, v.total)
	if err := putRecord(ctx, v.o.KV, KeyVerifyLast, v.rep); err != nil {
		return v.rep, err
	}
	return v.rep, deleteRecord(ctx, v.o.KV, KeyVerifyCheckpoint)
}

func (v *Verifier) save(ctx context.Context) error {
	v.cp.Report = v.rep
	return putRecord(ctx, v.o.KV, KeyVerifyCheckpoint, v.cp)
}

func (v *Verifier) publish() {
	if v.o.Metrics == nil {
		return
	}
	for e, r := range v.rep.Entities {
		v.o.Metrics.VerifyResults.WithLabelValues(e, ResultMatch).Set(float64(r.Match))
		v.o.Metrics.VerifyResults.WithLabelValues(e, ResultMismatch).Set(float64(r.Mismatch))
		v.o.Metrics.VerifyResults.WithLabelValues(e, ResultMissingInKV).Set(float64(r.MissingInKV))
		v.o.Metrics.VerifyResults.WithLabelValues(e, ResultExtraInKV).Set(float64(r.ExtraInKV))
	}
}

func (v *Verifier) countTotal(ctx context.Context) error {
	v.settle()
	var n int64
	err := v.tx.QueryRow(ctx, `SELECT (SELECT count(*) FROM graveler_repositories) + (SELECT count(*) FROM graveler_commits)
		+ (SELECT count(*) FROM graveler_branches) + (SELECT count(*) FROM graveler_tags) + (SELECT count(*) FROM graveler_staging_kv)`).Scan(&n)
	if err != nil {
		return fmt.Errorf("count rows: %w", err)
	}
	v.total = n
	return nil
}

// record counts one compared key and, with Repair, repairs it.
func (v *Verifier) record(ctx context.Context, result string, k Key, uid, detail string) error {
	e := v.rep.entity(k.Entity)
	v.cp.Rows++
	if v.o.MaxRowsPerSecond > 0 && v.cp.Rows%int64(v.o.PageSize) == 0 {
		if err := v.thr.wait(ctx, "verify", v.o.PageSize, 0); err != nil {
			return err
		}
	}
	if result != ResultMatch && !v.noRecheck {
		// The SQL side is a snapshot and KV is live: a write in flight
		// between the two (its mirror a few milliseconds behind) differs
		// legitimately. Only a difference that persists when both are
		// read again, fresh, counts.
		r2, uid2, d2, err := v.recheck(ctx, k)
		if err != nil {
			return err
		}
		switch r2 {
		case "":
		case ResultMatch:
			v.rep.Rechecked++
			result = ResultMatch
		default:
			result, uid, detail = r2, uid2, d2
		}
		if result != ResultMatch {
			pending, err := v.pending(ctx, k)
			if err != nil {
				return err
			}
			if pending {
				v.rep.Pending++
				v.o.Progress.Update(k.Entity, v.cp.Rows, v.total)
				return nil
			}
		}
	}
	switch result {
	case ResultMatch:
		e.Match++
		v.o.Progress.Update(k.Entity, v.cp.Rows, v.total)
		return nil
	case ResultMismatch:
		e.Mismatch++
	case ResultMissingInKV:
		e.MissingInKV++
	case ResultExtraInKV:
		e.ExtraInKV++
	}
	if len(e.Samples) < v.o.Samples {
		e.Samples = append(e.Samples, Sample{Result: result, Key: k, Detail: detail})
	}
	v.o.Log.Warn("verify difference", "result", result, "key", k.String(), "detail", detail)
	if !v.o.Repair {
		return nil
	}
	if err := v.repair(ctx, k, uid); err != nil {
		v.rep.RepairFailed++
		v.o.Log.Error("repair failed", "key", k.String(), "err", err)
		return nil
	}
	v.rep.Repaired++
	return nil
}

// sqlCursor streams a query of the snapshot through a server-side cursor,
// a page per round trip, so other queries of the snapshot can run between
// pages. While a full page is compared, the next one is fetched (the
// compare would otherwise wait for every page's round trip).
type sqlCursor struct {
	v      *Verifier
	tx     pgx.Tx
	name   string
	entity string
	page   int
	buf    []Row
	spare  []Row // the other buffer: buf is read while spare is filled
	job    *fetchJob
	pos    int
	done   bool
}

func (v *Verifier) open(ctx context.Context, entity, query string, args ...any) (*sqlCursor, error) {
	v.settle()
	v.cursor++
	c := &sqlCursor{v: v, tx: v.tx, name: fmt.Sprintf("kvproxy_verify_%d", v.cursor), entity: entity, page: v.o.PageSize}
	if _, err := v.tx.Exec(ctx, `DECLARE `+c.name+` NO SCROLL CURSOR FOR `+query, args...); err != nil {
		return nil, fmt.Errorf("open %s cursor: %w", entity, err)
	}
	return c, nil
}

func (c *sqlCursor) next(ctx context.Context) (Row, bool, error) {
	r, ok, err := c.peek(ctx)
	if ok {
		c.pos++
	}
	return r, ok, err
}

// peek returns the next row without consuming it.
func (c *sqlCursor) peek(ctx context.Context) (Row, bool, error) {
	if c.pos >= len(c.buf) && !c.done {
		// Buffers are reused: rows leave the cursor by value.
		var rows []Row
		var err error
		if j := c.job; j != nil {
			<-j.done
			if c.v.inflight == j {
				c.v.inflight = nil
			}
			c.job, rows, err = nil, j.rows, j.err
		} else {
			c.v.settle()
			rows, err = c.fetch(ctx, c.spare)
		}
		if err != nil {
			return Row{}, false, err
		}
		c.spare, c.buf, c.pos, c.done = c.buf, rows, 0, len(rows) < c.page
		if !c.done {
			c.v.settle()
			j, spare := &fetchJob{done: make(chan struct{})}, c.spare
			c.spare, c.job, c.v.inflight = nil, j, j
			go func() {
				defer close(j.done)
				j.rows, j.err = c.fetch(ctx, spare)
			}()
		}
	}
	if c.pos >= len(c.buf) {
		return Row{}, false, nil
	}
	return c.buf[c.pos], true, nil
}

// fetch reads the next page into buf's storage.
func (c *sqlCursor) fetch(ctx context.Context, buf []Row) ([]Row, error) {
	if buf == nil {
		buf = make([]Row, 0, c.page)
	}
	// Describe each FETCH: the text is the same for cursors of different
	// columns, so a cached statement would decode wrongly.
	return collectInto(ctx, c.tx, buf[:0], c.entity, fmt.Sprintf(`FETCH %d FROM %s`, c.page, c.name), pgx.QueryExecModeDescribeExec)
}

// rowSource is the SQL side of a merge.
type rowSource interface {
	next(ctx context.Context) (Row, bool, error)
	close(ctx context.Context)
}

// tokenRows is the part of a staging cursor (ordered by token) that
// belongs to one token.
type tokenRows struct {
	c     *sqlCursor
	token string
}

func (t *tokenRows) next(ctx context.Context) (Row, bool, error) {
	for {
		r, ok, err := t.c.peek(ctx)
		if err != nil || !ok {
			return r, ok, err
		}
		switch c := strings.Compare(r.Staged.StagingToken, t.token); {
		case c < 0:
			// A token with no place in the list (cannot happen: the query
			// selects only listed tokens); drop it.
			_, _, _ = t.c.next(ctx)
		case c > 0:
			return Row{}, false, nil
		default:
			return t.c.next(ctx)
		}
	}
}

func (t *tokenRows) close(context.Context) {}

func (c *sqlCursor) close(ctx context.Context) {
	c.v.settle()
	c.job = nil
	_, _ = c.tx.Exec(ctx, `CLOSE `+c.name)
}

// kvSide is a KV scan of keys under prefix, sorted like the SQL side
// (bytewise on what follows the prefix).
type kvSide struct {
	it     kv.EntriesIterator
	prefix []byte
}

func (s *kvSide) next() (suffix, key, value []byte, ok bool, err error) {
	if s.it == nil {
		return nil, nil, nil, false, nil
	}
	if !s.it.Next() {
		return nil, nil, nil, false, s.it.Err()
	}
	e := s.it.Entry()
	return e.Key[len(s.prefix):], e.Key, e.Value, true, nil
}

// merge walks SQL rows and KV entries in the same order and records each
// key as match, mismatch, missing or extra. sortKey gives a SQL row's
// position; keyOf names a KV-only entry; onKV sees every decoded KV row.
func (v *Verifier) merge(ctx context.Context, entity, uid string, sql rowSource, kvs *kvSide,
	sortKey func(Row) []byte, keyOf func(suffix, key []byte) Key, onBoth func(sqlRow, kvRow *Row) (string, error),
) error {
	defer sql.close(ctx)
	if kvs.it != nil {
		defer kvs.it.Close()
	}
	r, rok, err := sql.next(ctx)
	if err != nil {
		return err
	}
	suf, key, val, kok, err := kvs.next()
	if err != nil {
		return err
	}
	for rok || kok {
		c := 0
		switch {
		case !kok:
			c = -1
		case !rok:
			c = 1
		default:
			c = bytes.Compare(sortKey(r), suf)
		}
		switch {
		case c < 0:
			if err := v.sourceHash(r); err != nil {
				return err
			}
			if onBoth != nil {
				if _, err := onBoth(&r, nil); err != nil {
					return err
				}
			}
			if err := v.record(ctx, ResultMissingInKV, r.Key(), uid, ""); err != nil {
				return err
			}
		case c > 0:
			k := keyOf(suf, key)
			kr, derr := decode(k, key, val)
			if derr == nil && onBoth != nil {
				if _, err := onBoth(nil, &kr); err != nil {
					return err
				}
			}
			if err := v.record(ctx, ResultExtraInKV, k, uid, ""); err != nil {
				return err
			}
		default:
			if err := v.sourceHash(r); err != nil {
				return err
			}
			k := r.Key()
			kr, derr := decode(k, key, val)
			d := ""
			if derr != nil {
				d = derr.Error()
				if onBoth != nil {
					if _, err := onBoth(&r, nil); err != nil {
						return err
					}
				}
			} else {
				d = diff(r, kr)
				if onBoth != nil {
					more, err := onBoth(&r, &kr)
					if err != nil {
						return err
					}
					d = joinDetail(d, more)
				}
			}
			res := ResultMatch
			if d != "" {
				res = ResultMismatch
			}
			if err := v.record(ctx, res, k, uid, d); err != nil {
				return err
			}
		}
		if c <= 0 {
			if r, rok, err = sql.next(ctx); err != nil {
				return err
			}
		}
		if c >= 0 {
			if suf, key, val, kok, err = kvs.next(); err != nil {
				return err
			}
		}
	}
	return ctx.Err()
}

func (v *Verifier) sourceHash(r Row) error {
	if r.Entity != EntityCommits {
		return nil
	}
	if h, err := refstore.CommitRowID(r.Commit); err != nil || h != r.Commit.ID {
		v.rep.entity(EntityCommits).SourceHashMismatch++
	}
	return nil
}

func (v *Verifier) scanKV(ctx context.Context, pk, prefix, after []byte) (*kvSide, error) {
	it, err := kv.ScanPrefix(ctx, v.o.KV, pk, prefix, after)
	if err != nil {
		return nil, fmt.Errorf("scan %s/%s: %w", pk, prefix, err)
	}
	return &kvSide{it: it, prefix: prefix}, nil
}

// repositories verifies the repository records and, after each, the rows
// of that repository.
func (v *Verifier) repositories(ctx context.Context) error {
	sql, err := v.open(ctx, EntityRepositories,
		`SELECT `+repoCols+` FROM graveler_repositories WHERE id COLLATE "C" > $1 ORDER BY id COLLATE "C"`, v.cp.LastRepo)
	if err != nil {
		return err
	}
	prefix := []byte(refstore.RepoKeyPrefix)
	var after []byte
	if v.cp.LastRepo != "" {
		after = refstore.RepoKey(v.cp.LastRepo + "\x00")
	}
	kvs, err := v.scanKV(ctx, []byte(refstore.GravelerPartition), prefix, after)
	if err != nil {
		return err
	}
	// A repository is checkpointed once its record is counted too, i.e.
	// when the merge reaches the next one (or ends).
	pending := ""
	flush := func() error {
		if pending == "" {
			return nil
		}
		v.cp.LastRepo = pending
		if err := v.save(ctx); err != nil {
			return err
		}
		if v.o.AfterRepository != nil {
			v.o.AfterRepository(pending)
		}
		pending = ""
		return nil
	}
	err = v.merge(ctx, EntityRepositories, "", sql, kvs,
		func(r Row) []byte { return []byte(r.Repo.ID) },
		func(suf, _ []byte) Key { return Key{Entity: EntityRepositories, ID: string(suf)} },
		func(s, k *Row) (string, error) {
			if err := flush(); err != nil {
				return "", err
			}
			// Rows of the repository are checked before the record's own
			// result is counted, so an empty partition (a wrong instance
			// uid) can be named as the repository's mismatch.
			id, uid := "", ""
			if s != nil {
				id = s.Repo.ID
			} else {
				id = k.Repo.ID
			}
			if k != nil && k.State == graveler.RepositoryState_ACTIVE {
				uid = k.InstanceUID
			}
			if s != nil && k != nil && v.o.Repair && diff(*s, *k) != "" {
				// The record is repaired first so that its rows go to the
				// partition it names.
				if err := v.repair(ctx, s.Key(), ""); err == nil {
					if rd, _, err := repoRecord(ctx, v.o.KV, id); err == nil && rd != nil {
						uid = rd.GetInstanceUid()
					}
				}
			}
			if s != nil && k == nil && v.o.Repair {
				if err := v.repair(ctx, s.Key(), ""); err == nil {
					if rd, _, err := repoRecord(ctx, v.o.KV, id); err == nil && rd != nil {
						uid = rd.GetInstanceUid()
					}
				}
			}
			sqlRows, kvRows, err := v.repoRows(ctx, id, s != nil, uid)
			if err != nil {
				return "", err
			}
			more := ""
			if s != nil && k != nil && sqlRows > 0 && kvRows == 0 {
				// The record names a partition that holds none of the
				// repository's rows: a wrong instance uid. With Repair the
				// rows were just re-copied into that partition.
				more = fmt.Sprintf("instance_uid %q: partition %q is empty while PostgreSQL has %d rows", k.InstanceUID, refstore.RepoPartition(id, k.InstanceUID), sqlRows)
			}
			pending = id
			return more, nil
		})
	if err != nil {
		return err
	}
	return flush()
}

func joinDetail(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + "; " + b
}

// repoRows verifies the commits, branches, tags and staged entries of one
// repository: the SQL rows (if inSQL) against the partition of uid ("" if
// KV has no active record). It returns the rows seen on each side.
func (v *Verifier) repoRows(ctx context.Context, repo string, inSQL bool, uid string) (sqlRows, kvRows int64, err error) {
	tokens := map[string]bool{}
	type ent struct {
		entity, prefix, query string
	}
	noRepo := ""
	if !inSQL {
		noRepo = " AND false"
	}
	ents := []ent{
		{EntityCommits, refstore.CommitKeyPrefix, `SELECT ` + commitCols + ` FROM graveler_commits WHERE repository_id = $1` + noRepo + ` ORDER BY id COLLATE "C"`},
		{EntityBranches, refstore.BranchKeyPrefix, `SELECT ` + branchCols + ` FROM graveler_branches WHERE repository_id = $1` + noRepo + ` ORDER BY id COLLATE "C"`},
		{EntityTags, refstore.TagKeyPrefix, `SELECT ` + tagCols + ` FROM graveler_tags WHERE repository_id = $1` + noRepo + ` ORDER BY id COLLATE "C"`},
	}
	for _, e := range ents {
		sn, kn, err := v.entityInRepo(ctx, repo, e.entity, e.prefix, e.query, uid, tokens)
		if err != nil {
			return 0, 0, err
		}
		sqlRows, kvRows = sqlRows+sn, kvRows+kn
	}
	toks := make([]string, 0, len(tokens))
	for t := range tokens {
		toks = append(toks, t)
	}
	if err := v.stagingTokens(ctx, toks); err != nil {
		return 0, 0, err
	}
	return sqlRows, kvRows, nil
}

// entityInRepo verifies one entity of one repository and adds the staging
// tokens its branches name to tokens.
func (v *Verifier) entityInRepo(ctx context.Context, repo, entity, prefix, query, uid string, tokens map[string]bool) (sqlRows, kvRows int64, err error) {
	sql, err := v.open(ctx, entity, query, repo)
	if err != nil {
		return 0, 0, err
	}
	kvs := &kvSide{}
	if uid != "" {
		if kvs, err = v.scanKV(ctx, refstore.RepoPartition(repo, uid), []byte(prefix), nil); err != nil {
			sql.close(ctx)
			return 0, 0, err
		}
	}
	err = v.merge(ctx, entity, uid, sql, kvs,
		func(r Row) []byte { return []byte(r.Key().ID) },
		func(suf, _ []byte) Key { return Key{Entity: entity, Repository: repo, ID: string(suf)} },
		func(s, k *Row) (string, error) {
			if s != nil {
				sqlRows++
			}
			if k != nil {
				kvRows++
			}
			for _, r := range []*Row{s, k} {
				if tokens != nil && r != nil && r.Entity == EntityBranches && r.Branch.StagingToken != nil && *r.Branch.StagingToken != "" {
					tokens[*r.Branch.StagingToken] = true
				}
			}
			return "", nil
		})
	return sqlRows, kvRows, err
}

// stagingTokens verifies the entries of tokens with one cursor, ordered
// by token bytewise and then key, cut per token and merged with a scan of
// each token's partition.
func (v *Verifier) stagingTokens(ctx context.Context, toks []string) error {
	if len(toks) == 0 {
		return nil
	}
	slices.Sort(toks)
	sql, err := v.open(ctx, EntityStaging, `SELECT `+stagingCols+` FROM graveler_staging_kv WHERE staging_token = ANY($1) ORDER BY staging_token COLLATE "C", key`, toks)
	if err != nil {
		return err
	}
	defer sql.close(ctx)
	parts := make([][]byte, len(toks))
	for i, tok := range toks {
		parts[i] = refstore.StagingPartition(tok)
	}
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	ahead := startScanAhead(actx, v.o.KV, parts)
	defer ahead.close()
	for _, tok := range toks {
		it, err := ahead.next(ctx)
		if err != nil {
			return err
		}
		kvs := &kvSide{it: it}
		token := tok
		err = v.merge(ctx, EntityStaging, "", &tokenRows{c: sql, token: token}, kvs,
			func(r Row) []byte { return r.Staged.Key },
			func(suf, _ []byte) Key { return Key{Entity: EntityStaging, ID: token, StagingKey: bytes.Clone(suf)} },
			nil)
		if err != nil {
			return err
		}
	}
	return nil
}

// staging verifies the entries of one staging token.
func (v *Verifier) staging(ctx context.Context, token string) error {
	sql, err := v.open(ctx, EntityStaging, `SELECT `+stagingCols+` FROM graveler_staging_kv WHERE staging_token = $1 ORDER BY key`, token)
	if err != nil {
		return err
	}
	kvs, err := v.scanKV(ctx, refstore.StagingPartition(token), nil, nil)
	if err != nil {
		sql.close(ctx)
		return err
	}
	return v.merge(ctx, EntityStaging, "", sql, kvs,
		func(r Row) []byte { return r.Staged.Key },
		func(suf, _ []byte) Key { return Key{Entity: EntityStaging, ID: token, StagingKey: bytes.Clone(suf)} },
		nil)
}

// orphans verifies the tokens no branch references (as PostgreSQL sees
// them; KV has no list of partitions to find orphans only it has).
func (v *Verifier) orphans(ctx context.Context) error {
	v.settle()
	rows, err := v.tx.Query(ctx, `SELECT DISTINCT staging_token FROM graveler_staging_kv s
		WHERE NOT EXISTS (SELECT 1 FROM graveler_branches b WHERE b.staging_token = s.staging_token) ORDER BY 1`)
	if err != nil {
		return fmt.Errorf("orphan tokens: %w", err)
	}
	toks, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("orphan tokens: %w", err)
	}
	return v.stagingTokens(ctx, toks)
}

// runIncremental checks the keys of the dirty-key log only.
func (v *Verifier) runIncremental(ctx context.Context) (Report, error) {
	v.rep = Report{Started: time.Now().UTC(), Runs: 1, Incremental: true, Repair: v.o.Repair, Direction: v.o.Direction.String()}
	keys, err := v.o.Dirty.List(ctx)
	if err != nil {
		return v.rep, fmt.Errorf("read the dirty-key log: %w", err)
	}
	tx, err := v.o.Source.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return v.rep, fmt.Errorf("begin snapshot: %w", err)
	}
	v.tx = tx
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	seen := map[string]bool{}
	v.total = int64(len(keys))
	for _, k := range keys {
		if seen[k.String()] {
			continue
		}
		seen[k.String()] = true
		if k.whole() {
			if err := v.wholeKey(ctx, k); err != nil {
				return v.rep, err
			}
			continue
		}
		if err := k.check(); err != nil {
			return v.rep, err
		}
		v.settle()
		res, uid, d, err := v.compareKey(ctx, v.tx, k)
		if err != nil {
			return v.rep, err
		}
		if err := v.record(ctx, res, k, uid, d); err != nil {
			return v.rep, err
		}
	}
	v.rep.Finished = time.Now().UTC()
	v.o.Progress.Done("done", v.cp.Rows, v.total)
	return v.rep, putRecord(ctx, v.o.KV, KeyVerifyLastIncr, v.rep)
}

// wholeKey verifies every row a whole key names: all rows of one entity
// of a repository, or all entries of a staging token.
func (v *Verifier) wholeKey(ctx context.Context, k Key) error {
	if k.Entity == EntityStaging {
		return v.staging(ctx, k.ID)
	}
	prefix := map[string]string{EntityCommits: refstore.CommitKeyPrefix, EntityBranches: refstore.BranchKeyPrefix, EntityTags: refstore.TagKeyPrefix}[k.Entity]
	cols := map[string]string{EntityCommits: commitCols, EntityBranches: branchCols, EntityTags: tagCols}[k.Entity]
	table := map[string]string{EntityCommits: "graveler_commits", EntityBranches: "graveler_branches", EntityTags: "graveler_tags"}[k.Entity]
	if prefix == "" || k.Repository == "" {
		return fmt.Errorf("%w: %+v", ErrBadKey, k)
	}
	uid := ""
	rd, _, err := repoRecord(ctx, v.o.KV, k.Repository)
	if err != nil {
		return err
	}
	if rd != nil && rd.GetState() == graveler.RepositoryState_ACTIVE {
		uid = rd.GetInstanceUid()
	}
	_, _, err = v.entityInRepo(ctx, k.Repository, k.Entity, prefix,
		`SELECT `+cols+` FROM `+table+` WHERE repository_id = $1 ORDER BY id COLLATE "C"`, uid, nil)
	return err
}

// pending reports whether k is covered by the dirty-key log (read at most
// once a second).
func (v *Verifier) pending(ctx context.Context, k Key) (bool, error) {
	if v.o.Pending == nil {
		return false, nil
	}
	covers := []Key{k}
	switch {
	case k.Entity == EntityStaging:
		covers = append(covers, Key{Entity: EntityStaging, ID: k.ID})
	case k.inRepoPartition():
		covers = append(covers, Key{Entity: k.Entity, Repository: k.Repository}, Key{Entity: EntityRepositories, ID: k.Repository})
	}
	// The set is cached, but a key logged since it was read must be
	// found: a miss re-reads it unless it is very fresh.
	for attempt := 0; attempt < 2; attempt++ {
		if v.pendingSet == nil || attempt == 1 && time.Since(v.pendingAt) > 20*time.Millisecond {
			keys, err := v.o.Pending.List(ctx)
			if err != nil {
				return false, fmt.Errorf("read the dirty-key log: %w", err)
			}
			v.pendingSet, v.pendingAt = make(map[string]bool, len(keys)), time.Now()
			for _, dk := range keys {
				v.pendingSet[dk.String()] = true
			}
		}
		for _, c := range covers {
			if v.pendingSet[c.String()] {
				return true, nil
			}
		}
	}
	return false, nil
}

// partitionCheck re-checks, fresh, that a repository record names the
// partition that holds its rows: empty while PostgreSQL has rows means a
// wrong instance uid.
func (v *Verifier) partitionCheck(ctx context.Context, repo, uid string) (string, error) {
	var n int64
	rows, err := v.o.Source.Query(ctx, `SELECT (SELECT count(*) FROM graveler_commits WHERE repository_id = $1)
		+ (SELECT count(*) FROM graveler_branches WHERE repository_id = $1)
		+ (SELECT count(*) FROM graveler_tags WHERE repository_id = $1)`, repo)
	if err == nil {
		n, err = pgx.CollectExactlyOneRow(rows, pgx.RowTo[int64])
	}
	if err != nil {
		return "", fmt.Errorf("count rows of %s: %w", repo, err)
	}
	if n == 0 || uid == "" {
		return "", nil
	}
	part := refstore.RepoPartition(repo, uid)
	it, err := v.o.KV.Scan(ctx, []byte(part), nil)
	if err != nil {
		return "", err
	}
	defer it.Close()
	if it.Next() {
		return "", nil
	}
	if err := it.Err(); err != nil {
		return "", err
	}
	return fmt.Sprintf("instance_uid %q: partition %q is empty while PostgreSQL has %d rows", uid, part, n), nil
}

// maxDelayedRechecks bounds how many differences are re-read with delays.
const maxDelayedRechecks = 1000

// recheckDelays space the fresh re-reads of a difference.
var recheckDelays = []time.Duration{0, 20 * time.Millisecond, 60 * time.Millisecond}

// recheck compares k again, outside the snapshot, until it matches or the
// attempts run out; it returns the last result ("" if k cannot be re-read
// one by one: keep the first result).
func (v *Verifier) recheck(ctx context.Context, k Key) (result, uid, detail string, err error) {
	if k.whole() || k.check() != nil {
		return "", "", "", nil
	}
	for i, d := range recheckDelays {
		if i > 0 && v.delayedRechecks >= maxDelayedRechecks {
			// Wholesale differences (a verify before any backfill) are
			// real; waiting on each would only slow the report.
			break
		}
		if i == 1 {
			v.delayedRechecks++
		}
		if d > 0 {
			select {
			case <-ctx.Done():
				return "", "", "", ctx.Err()
			case <-time.After(d):
			}
		}
		result, uid, detail, err = v.compareKey(ctx, v.o.Source, k)
		if err == nil && result == ResultMatch && k.Entity == EntityRepositories {
			var rd *graveler.RepositoryData
			if rd, _, err = repoRecord(ctx, v.o.KV, k.ID); err == nil && rd != nil && rd.GetState() == graveler.RepositoryState_ACTIVE {
				detail, err = v.partitionCheck(ctx, k.ID, rd.GetInstanceUid())
			}
			if detail != "" {
				result = ResultMismatch
			}
		}
		if err != nil || result == ResultMatch {
			return result, uid, detail, err
		}
	}
	return result, uid, detail, nil
}

// compareKey compares one key: the SQL row as q sees it, the KV value now.
func (v *Verifier) compareKey(ctx context.Context, q querier, k Key) (result, uid, detail string, err error) {
	s, sok, err := readRow(ctx, q, k)
	if err != nil {
		return "", "", "", err
	}
	kr, kok, uid, err := v.kvRow(ctx, k)
	if err != nil {
		return "", "", "", err
	}
	switch {
	case !sok && !kok:
		return ResultMatch, uid, "", nil
	case !kok:
		return ResultMissingInKV, uid, "", nil
	case !sok:
		return ResultExtraInKV, uid, "", nil
	}
	if d := diff(s, kr); d != "" {
		return ResultMismatch, uid, d, nil
	}
	return ResultMatch, uid, "", nil
}

// kvRow reads the KV row of k, locating it through the repository record.
func (v *Verifier) kvRow(ctx context.Context, k Key) (Row, bool, string, error) {
	uid := ""
	if k.inRepoPartition() {
		rd, _, err := repoRecord(ctx, v.o.KV, k.Repository)
		if err != nil {
			return Row{}, false, "", err
		}
		if rd == nil || rd.GetState() != graveler.RepositoryState_ACTIVE {
			return Row{}, false, "", nil
		}
		uid = rd.GetInstanceUid()
	}
	pk, key := k.location(uid)
	got, err := v.o.KV.Get(ctx, pk, key)
	if errors.Is(err, kv.ErrNotFound) {
		return Row{}, false, uid, nil
	}
	if err != nil {
		return Row{}, false, uid, fmt.Errorf("read %s: %w", k, err)
	}
	r, err := decode(k, key, got.Value)
	if err != nil {
		// A value that does not decode is a difference, not a failure.
		return Row{Entity: k.Entity}, true, uid, nil
	}
	return r, true, uid, nil
}
