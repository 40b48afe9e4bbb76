package legacy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"time"
)

// Graveler-level errors. Each *NotFound wraps ErrNotFound and each
// uniqueness error wraps ErrAlreadyExists, as in lakeFS.
var (
	ErrRepositoryNotFound     = fmt.Errorf("repository %w", ErrNotFound)
	ErrBranchNotFound         = fmt.Errorf("branch %w", ErrNotFound)
	ErrTagNotFound            = fmt.Errorf("tag %w", ErrNotFound)
	ErrCommitNotFound         = fmt.Errorf("commit %w", ErrNotFound)
	ErrRefAmbiguous           = fmt.Errorf("reference is ambiguous: %w", ErrNotFound)
	ErrNotUnique              = fmt.Errorf("not unique: %w", ErrAlreadyExists)
	ErrBranchExists           = fmt.Errorf("branch %w", ErrAlreadyExists)
	ErrTagAlreadyExists       = fmt.Errorf("tag %w", ErrAlreadyExists)
	ErrPreconditionFailed     = errors.New("precondition failed")
	ErrInvalidValue           = errors.New("invalid value")
	ErrDirtyBranch            = errors.New("can't apply operation on a dirty branch")
	ErrConflictFound          = errors.New("conflict found")
	ErrNoChanges              = errors.New("no changes")
	ErrDeleteDefaultBranch    = errors.New("cannot delete repository default branch")
	ErrLockNotAcquired        = errors.New("branch lock not acquired")
	ErrInvalidRef             = errors.New("invalid ref")
	ErrCommitIDMismatch       = errors.New("dumped commit id differs from its content address")
	ErrInvalidCommitGenealogy = errors.New("commit parents do not exist")
	ErrCommitNotHeadBranch    = errors.New("commit is not head of branch")
)

func asString(v any) string {
	s, _ := v.(string)
	return s
}

func asBytes(v any) []byte {
	b, _ := v.([]byte)
	return b
}

func asInt32(v any) int32 {
	switch x := v.(type) {
	case int32:
		return x
	case int64:
		return int32(x)
	}
	return 0
}

func asTime(v any) time.Time {
	t, _ := v.(time.Time)
	return t
}

func asStrings(v any) []string {
	s, _ := v.([]string)
	return s
}

func asMetadata(v any) (map[string]string, error) {
	j, ok := v.(JSONText)
	if !ok || j == "null" {
		return nil, nil
	}
	var m map[string]string
	if err := json.Unmarshal([]byte(j), &m); err != nil {
		return nil, fmt.Errorf("commit metadata %q: %w", j, err)
	}
	return m, nil
}

// commitFromRow decodes C1 columns (committer, message, creation_date,
// parents, meta_range_id, metadata, version, generation) starting at off.
func commitFromRow(r []any, off int) (Commit, error) {
	md, err := asMetadata(r[off+5])
	if err != nil {
		return Commit{}, err
	}
	return Commit{
		Committer:    asString(r[off]),
		Message:      asString(r[off+1]),
		CreationDate: asTime(r[off+2]),
		Parents:      asStrings(r[off+3]),
		MetaRangeID:  asString(r[off+4]),
		Metadata:     md,
		Version:      asInt32(r[off+6]),
		Generation:   asInt32(r[off+7]),
	}, nil
}

// commitFromOrderedRow decodes C5/C6 columns (id, committer, message,
// creation_date, meta_range_id, parents, metadata, version, generation).
func commitFromOrderedRow(r []any) (CommitRecord, error) {
	md, err := asMetadata(r[6])
	if err != nil {
		return CommitRecord{}, err
	}
	return CommitRecord{ID: asString(r[0]), Commit: Commit{
		Committer:    asString(r[1]),
		Message:      asString(r[2]),
		CreationDate: asTime(r[3]),
		MetaRangeID:  asString(r[4]),
		Parents:      asStrings(r[5]),
		Metadata:     md,
		Version:      asInt32(r[7]),
		Generation:   asInt32(r[8]),
	}}, nil
}

// --- Ref manager (lakeFS pkg/graveler/ref, statement level) ---

// GetRepository is R1.
func (c *Client) GetRepository(ctx context.Context, repo string) (*Repository, error) {
	var out *Repository
	err := c.read(ctx, func(q Q) error {
		r, err := q.queryOne(ctx, IDR1, SQLR1, repo)
		if err != nil {
			return err
		}
		out = &Repository{ID: repo, StorageNamespace: asString(r[0]), CreationDate: asTime(r[1]), DefaultBranchID: asString(r[2])}
		return nil
	})
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("%s: %w", repo, ErrRepositoryNotFound)
	}
	return out, err
}

// createBareRepository is R2 inside the caller's transaction. Like v0.68
// it swallows errors other than 23505, which aborts the caller's
// transaction so the next statement fails instead (25P02); v0.70 returns them.
func (c *Client) createBareRepository(ctx context.Context, q Q, r Repository) error {
	_, err := q.exec(ctx, IDR2, SQLR2, r.ID, r.StorageNamespace, r.CreationDate, r.DefaultBranchID)
	if errors.Is(err, ErrAlreadyExists) {
		return fmt.Errorf("%s: %w: %w", r.ID, ErrNotUnique, err)
	}
	if c.cfg.Version == V070 {
		return err
	}
	return nil
}

// CreateRepositoryRecords is RefManager.CreateRepository: tx{R2, B2, C3}.
func (c *Client) CreateRepositoryRecords(ctx context.Context, r Repository, token string, first Commit) (string, error) {
	commitID := first.ContentAddress()
	err := c.Transact(ctx, TxReadWrite, func(q Q) error {
		if err := c.createBareRepository(ctx, q, r); err != nil {
			return err
		}
		if _, err := q.exec(ctx, IDB2, SQLB2Repo, r.ID, r.DefaultBranchID, token, commitID); err != nil {
			if errors.Is(err, ErrAlreadyExists) {
				return fmt.Errorf("%w: %w", ErrNotUnique, err)
			}
			return err
		}
		return c.addCommit(ctx, q, r.ID, commitID, first)
	})
	if err != nil {
		return "", err
	}
	return commitID, nil
}

// CreateBareRepository is tx{R2}.
func (c *Client) CreateBareRepository(ctx context.Context, r Repository) error {
	return c.Transact(ctx, TxReadWrite, func(q Q) error { return c.createBareRepository(ctx, q, r) })
}

// DeleteRepository is R4 in one serializable transaction. Staging rows of
// the repository's branches are left behind as orphans.
func (c *Client) DeleteRepository(ctx context.Context, repo string) error {
	err := c.Transact(ctx, TxReadWrite, func(q Q) error {
		for _, s := range []string{SQLR4Branches, SQLR4Tags, SQLR4Commits} {
			if _, err := q.exec(ctx, IDR4, s, repo); err != nil {
				return err
			}
		}
		tag, err := q.exec(ctx, IDR4, SQLR4Repositories, repo)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return ErrNotFound
		}
		return nil
	})
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("%s: %w", repo, ErrRepositoryNotFound)
	}
	return err
}

// GetBranch is B1.
func (c *Client) GetBranch(ctx context.Context, repo, branch string) (*Branch, error) {
	var out *Branch
	err := c.read(ctx, func(q Q) error {
		r, err := q.queryOne(ctx, IDB1, SQLB1, repo, branch)
		if err != nil {
			return err
		}
		out = &Branch{ID: branch, CommitID: asString(r[0]), StagingToken: asString(r[1])}
		return nil
	})
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("%s/%s: %w", repo, branch, ErrBranchNotFound)
	}
	return out, err
}

// CreateBranchRecord is tx{B2}; 23505 becomes ErrBranchExists.
func (c *Client) CreateBranchRecord(ctx context.Context, repo string, b Branch) error {
	err := c.Transact(ctx, TxReadWrite, func(q Q) error {
		_, err := q.exec(ctx, IDB2, SQLB2Create, repo, b.ID, b.StagingToken, b.CommitID)
		return err
	})
	if errors.Is(err, ErrAlreadyExists) {
		return fmt.Errorf("%s/%s: %w: %w", repo, b.ID, ErrBranchExists, err)
	}
	return err
}

// SetBranch is tx{B3}, the upsert.
func (c *Client) SetBranch(ctx context.Context, repo string, b Branch) error {
	return c.Transact(ctx, TxReadWrite, func(q Q) error {
		_, err := q.exec(ctx, IDB3, SQLB3, repo, b.ID, b.StagingToken, b.CommitID)
		return err
	})
}

// DeleteBranchRecord is tx{B4}; no row deleted means ErrBranchNotFound.
func (c *Client) DeleteBranchRecord(ctx context.Context, repo, branch string) error {
	err := c.Transact(ctx, TxReadWrite, func(q Q) error {
		tag, err := q.exec(ctx, IDB4, SQLB4, repo, branch)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return ErrNotFound
		}
		return nil
	})
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("%s/%s: %w", repo, branch, ErrBranchNotFound)
	}
	return err
}

// GetTag is T1.
func (c *Client) GetTag(ctx context.Context, repo, tag string) (string, error) {
	var out string
	err := c.read(ctx, func(q Q) error {
		r, err := q.queryOne(ctx, IDT1, SQLT1, repo, tag)
		if err != nil {
			return err
		}
		out = asString(r[0])
		return nil
	})
	if errors.Is(err, ErrNotFound) {
		return "", fmt.Errorf("%s/%s: %w", repo, tag, ErrTagNotFound)
	}
	return out, err
}

// CreateTagRecord is tx{T2}; "INSERT 0 0" means ErrTagAlreadyExists.
func (c *Client) CreateTagRecord(ctx context.Context, repo, tag, commitID string) error {
	return c.Transact(ctx, TxReadWrite, func(q Q) error {
		res, err := q.exec(ctx, IDT2, SQLT2, repo, tag, commitID)
		if err != nil {
			return err
		}
		if res.RowsAffected() == 0 {
			return fmt.Errorf("%s/%s: %w", repo, tag, ErrTagAlreadyExists)
		}
		return nil
	})
}

// DeleteTagRecord is tx{T3}; no row deleted means ErrTagNotFound.
func (c *Client) DeleteTagRecord(ctx context.Context, repo, tag string) error {
	err := c.Transact(ctx, TxReadWrite, func(q Q) error {
		res, err := q.exec(ctx, IDT3, SQLT3, repo, tag)
		if err != nil {
			return err
		}
		if res.RowsAffected() == 0 {
			return ErrNotFound
		}
		return nil
	})
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("%s/%s: %w", repo, tag, ErrTagNotFound)
	}
	return err
}

// GetCommit is C1.
func (c *Client) GetCommit(ctx context.Context, repo, id string) (*Commit, error) {
	var out *Commit
	err := c.read(ctx, func(q Q) error {
		r, err := q.queryOne(ctx, IDC1, SQLC1, repo, id)
		if err != nil {
			return err
		}
		cm, err := commitFromRow(r, 0)
		out = &cm
		return err
	})
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("%s/%s: %w", repo, id, ErrCommitNotFound)
	}
	return out, err
}

// GetCommitByPrefix is C2, in a read-only transaction in both versions.
func (c *Client) GetCommitByPrefix(ctx context.Context, repo, prefix string) (*CommitRecord, error) {
	var out *CommitRecord
	err := c.Transact(ctx, TxReadOnly, func(q Q) error {
		rows, err := q.query(ctx, IDC2, SQLC2, repo, prefix)
		if err != nil {
			return err
		}
		switch len(rows) {
		case 0:
			return ErrNotFound
		case 1:
		default:
			return ErrRefAmbiguous
		}
		cm, err := commitFromRow(rows[0], 1)
		out = &CommitRecord{ID: asString(rows[0][0]), Commit: cm}
		return err
	})
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("%s/%s: %w: %w", repo, prefix, ErrCommitNotFound, err)
	}
	return out, err
}

func (c *Client) addCommit(ctx context.Context, q Q, repo, id string, cm Commit) error {
	var parents []string // nil -> SQL NULL, as lakeFS's append loop gives
	parents = append(parents, cm.Parents...)
	_, err := q.exec(ctx, IDC3, SQLC3, repo, id, cm.Committer, cm.Message,
		cm.CreationDate.UTC(), parents, cm.MetaRangeID, cm.Metadata, cm.Version, cm.Generation)
	return err
}

// AddCommit is tx{C3}; it returns the content address. Idempotent.
func (c *Client) AddCommit(ctx context.Context, repo string, cm Commit) (string, error) {
	id := cm.ContentAddress()
	err := c.Transact(ctx, TxReadWrite, func(q Q) error { return c.addCommit(ctx, q, repo, id, cm) })
	if err != nil {
		return "", err
	}
	return id, nil
}

// getCommitRecord is the Log walk's lookup: C4 (no tx) at v0.68, C1 at v0.70.
func (c *Client) getCommitRecord(ctx context.Context, repo, id string) (*CommitRecord, error) {
	if c.cfg.Version == V070 {
		cm, err := c.GetCommit(ctx, repo, id)
		if err != nil {
			return nil, err
		}
		return &CommitRecord{ID: id, Commit: *cm}, nil
	}
	r, err := c.NoTx().queryOne(ctx, IDC4, SQLC4, repo, id)
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("%s/%s: %w", repo, id, ErrCommitNotFound)
	}
	if err != nil {
		return nil, err
	}
	cm, err := commitFromRow(r, 1)
	if err != nil {
		return nil, err
	}
	return &CommitRecord{ID: asString(r[0]), Commit: cm}, nil
}

// --- Iterators (paging exactly as lakeFS: first page >=, later >; stop on a short page) ---

// pager runs one page query per call with the right comparison.
func (c *Client) pages(ctx context.Context, first, next string, id string, args func(offset string) []any, key func(row []any) string, from string, each func(row []any) error) error {
	offset := from
	sql := first
	for {
		rows, err := c.NoTx().query(ctx, id, sql, args(offset)...)
		if err != nil {
			return err
		}
		for _, r := range rows {
			if err := each(r); err != nil {
				return err
			}
		}
		if len(rows) < c.cfg.PageSize {
			return nil
		}
		offset = key(rows[len(rows)-1])
		sql = next
	}
}

// ListRepositoriesFrom is the repository iterator from id `from` (R3 pages, no tx).
func (c *Client) ListRepositoriesFrom(ctx context.Context, from string) ([]Repository, error) {
	var out []Repository
	ps := c.cfg.PageSize
	err := c.pages(ctx, SQLR3First, SQLR3Next, IDR3,
		func(off string) []any { return []any{off, ps} },
		func(r []any) string { return asString(r[0]) }, from,
		func(r []any) error {
			out = append(out, Repository{ID: asString(r[0]), StorageNamespace: asString(r[1]), CreationDate: asTime(r[2]), DefaultBranchID: asString(r[3])})
			return nil
		})
	return out, err
}

func (c *Client) listBranches(ctx context.Context, repo, from string, gc bool) ([]Branch, error) {
	if _, err := c.GetRepository(ctx, repo); err != nil {
		return nil, err
	}
	first, next, id := SQLB5First, SQLB5Next, IDB5
	if gc {
		first, next, id = SQLB6First, SQLB6Next, IDB6
	}
	var out []Branch
	ps := c.cfg.PageSize
	err := c.pages(ctx, first, next, id,
		func(off string) []any { return []any{repo, off, ps} },
		func(r []any) string { return asString(r[0]) }, from,
		func(r []any) error {
			out = append(out, Branch{ID: asString(r[0]), StagingToken: asString(r[1]), CommitID: asString(r[2])})
			return nil
		})
	return out, err
}

// ListBranchesFrom is R1 then B5 pages.
func (c *Client) ListBranchesFrom(ctx context.Context, repo, from string) ([]Branch, error) {
	return c.listBranches(ctx, repo, from, false)
}

// GCBranches is R1 then B6 pages (ordered by commit_id, paged by id:
// lakeFS's bug is reproduced, so with more branches than a page the result
// can skip or repeat branches).
func (c *Client) GCBranches(ctx context.Context, repo string) ([]Branch, error) {
	return c.listBranches(ctx, repo, "", true)
}

// ListTagsFrom is R1 then T4 pages.
func (c *Client) ListTagsFrom(ctx context.Context, repo, from string) ([]Tag, error) {
	if _, err := c.GetRepository(ctx, repo); err != nil {
		return nil, err
	}
	var out []Tag
	ps := c.cfg.PageSize
	err := c.pages(ctx, SQLT4First, SQLT4Next, IDT4,
		func(off string) []any { return []any{repo, off, ps} },
		func(r []any) string { return asString(r[0]) }, from,
		func(r []any) error {
			out = append(out, Tag{ID: asString(r[0]), CommitID: asString(r[1])})
			return nil
		})
	return out, err
}

func (c *Client) orderedCommits(ctx context.Context, repo string, leaves bool) ([]CommitRecord, error) {
	if _, err := c.GetRepository(ctx, repo); err != nil {
		return nil, err
	}
	build := C5SQL
	id := IDC5
	if leaves {
		build, id = C6SQL, IDC6
	}
	var out []CommitRecord
	var perr error
	err := c.pages(ctx, build(true, c.cfg.PageSize), build(false, c.cfg.PageSize), id,
		func(off string) []any { return []any{repo, off} },
		func(r []any) string { return asString(r[0]) }, "",
		func(r []any) error {
			cr, err := commitFromOrderedRow(r)
			if err != nil {
				perr = err
			}
			out = append(out, cr)
			return err
		})
	if err == nil {
		err = perr
	}
	return out, err
}

// ListCommits is R1 then C5 pages: every commit, ordered by id.
func (c *Client) ListCommits(ctx context.Context, repo string) ([]CommitRecord, error) {
	return c.orderedCommits(ctx, repo, false)
}

// GCCommits is R1 then C6 pages: commits that are nobody's first parent.
func (c *Client) GCCommits(ctx context.Context, repo string) ([]CommitRecord, error) {
	return c.orderedCommits(ctx, repo, true)
}

// --- Staging manager (lakeFS pkg/graveler/staging, statement level) ---

func (c *Client) stagingSetMode() TxMode {
	if c.cfg.Version == V070 {
		return TxReadCommitted
	}
	return TxReadWrite
}

// StagingGet is tx_ro{S1}: (nil, nil) for a tombstone, ErrNotFound for no row.
func (c *Client) StagingGet(ctx context.Context, token string, key []byte) (*Value, error) {
	var out *Value
	err := c.Transact(ctx, TxReadOnly, func(q Q) error {
		r, err := q.queryOne(ctx, IDS1, SQLS1, token, key)
		if err != nil {
			return err
		}
		if r[0] != nil {
			out = &Value{Identity: asBytes(r[0]), Data: asBytes(r[1])}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// StagingSet is tx{S3} (overwrite) or tx{S2} (if absent; "INSERT 0 0"
// means ErrPreconditionFailed). A nil value stages a tombstone.
func (c *Client) StagingSet(ctx context.Context, token string, key []byte, v *Value, overwrite bool) error {
	var identity, data []byte
	if v != nil {
		if v.Identity == nil {
			return ErrInvalidValue
		}
		identity, data = v.Identity, v.Data
	}
	return c.Transact(ctx, c.stagingSetMode(), func(q Q) error {
		if !overwrite {
			res, err := q.exec(ctx, IDS2, SQLS2, token, key, identity, data)
			if err != nil {
				return err
			}
			if res.RowsAffected() == 0 {
				return ErrPreconditionFailed
			}
			return nil
		}
		_, err := q.exec(ctx, IDS3, SQLS3, token, key, identity, data)
		return err
	})
}

// StagingDropKey is tx{S4}.
func (c *Client) StagingDropKey(ctx context.Context, token string, key []byte) error {
	return c.Transact(ctx, TxReadWrite, func(q Q) error {
		_, err := q.exec(ctx, IDS4, SQLS4, token, key)
		return err
	})
}

// StagingDrop is tx{S5}.
func (c *Client) StagingDrop(ctx context.Context, token string) error {
	return c.Transact(ctx, TxReadWrite, func(q Q) error {
		_, err := q.exec(ctx, IDS5, SQLS5, token)
		return err
	})
}

// StagingDropByPrefix is tx{S6}.
func (c *Client) StagingDropByPrefix(ctx context.Context, token string, prefix []byte) error {
	if prefix == nil {
		prefix = []byte{}
	}
	ub := UpperBoundForPrefix(prefix)
	return c.Transact(ctx, TxReadWrite, func(q Q) error {
		var err error
		if ub != nil {
			_, err = q.exec(ctx, IDS6, SQLS6, token, prefix, ub)
		} else {
			_, err = q.exec(ctx, IDS6, SQLS6NoUpper, token, prefix)
		}
		return err
	})
}

// StagingList reads staging with S7 pages of batchSize (+1 look-ahead row),
// one read-only transaction per page, from key `from`. With onePage it
// stops after the first page (the dirty-branch checks).
func (c *Client) StagingList(ctx context.Context, token string, from []byte, batchSize int, onePage bool) ([]ValueRecord, error) {
	if batchSize <= 0 {
		batchSize = DefaultPageSize
	} else if batchSize > CommitBatchSize {
		batchSize = CommitBatchSize
	}
	next := from
	if next == nil {
		next = []byte{}
	}
	var out []ValueRecord
	for {
		var rows [][]any
		err := c.Transact(ctx, TxReadOnly, func(q Q) error {
			var err error
			rows, err = q.query(ctx, IDS7, SQLS7, token, next, batchSize+1)
			return err
		})
		if err != nil {
			return nil, err
		}
		more := len(rows) == batchSize+1
		if more {
			next = asBytes(rows[batchSize][0])
			rows = rows[:batchSize]
		}
		for _, r := range rows {
			vr := ValueRecord{Key: asBytes(r[0])}
			if r[1] != nil {
				vr.Value = &Value{Identity: asBytes(r[1]), Data: asBytes(r[2])}
			}
			out = append(out, vr)
		}
		if !more || onePage {
			return out, nil
		}
	}
}

// --- Branch locker (§3.5) ---

// BranchLockKey is FNV-1 64 (not 64a) of repo‖0‖branch‖0, as int64.
func BranchLockKey(repo, branch string) int64 {
	h := fnv.New64()
	h.Write([]byte(repo))
	h.Write([]byte{0})
	h.Write([]byte(branch))
	h.Write([]byte{0})
	return int64(h.Sum64())
}

// WithWriterLock runs fn while holding the shared advisory lock (L1) on a
// LockDB connection inside a read-committed transaction; fn's own SQL runs
// on the DB pool.
func (c *Client) WithWriterLock(ctx context.Context, repo, branch string, fn func() error) error {
	return c.withLock(ctx, IDL1, SQLL1, repo, branch, fn)
}

// WithMetadataLock is WithWriterLock with the exclusive lock (L2).
func (c *Client) WithMetadataLock(ctx context.Context, repo, branch string, fn func() error) error {
	return c.withLock(ctx, IDL2, SQLL2, repo, branch, fn)
}

func (c *Client) withLock(ctx context.Context, id, sql, repo, branch string, fn func() error) error {
	key := BranchLockKey(repo, branch)
	return c.transact(ctx, c.LockDB, TxReadCommitted, func(q Q) error {
		if _, err := q.exec(ctx, id, sql, key); err != nil {
			return fmt.Errorf("%w (%d): %w", ErrLockNotAcquired, key, err)
		}
		return fn()
	})
}
