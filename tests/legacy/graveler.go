package legacy

import (
	"bytes"
	"container/heap"
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// The flows of spec §4 (lakeFS v0.68 pkg/graveler/graveler.go). Object
// storage is replaced by the RangeStore: a commit's meta_range_id names an
// in-memory tree, so the committed-vs-staged decisions (Delete, Get, List,
// IfAbsent) are real while only the SQL goes over the wire. Branch
// protection, hooks and the 3 ms read batching are not simulated.

// CommitParams are the user inputs of Commit, Merge and Revert.
type CommitParams struct {
	Committer string
	Message   string
	// Date, when set, is the commit time in Unix seconds (params.Date).
	Date     *int64
	Metadata map[string]string
}

// RefType tells what a ref resolved to.
type RefType int

// Ref types.
const (
	RefTypeCommit RefType = iota
	RefTypeBranch
	RefTypeTag
)

// ResolvedRef is the result of ResolveRef.
type ResolvedRef struct {
	Type         RefType
	BranchID     string // for branches
	StagingToken string // for branches
	CommitID     string
}

func (c *Client) now() time.Time { return c.cfg.Clock.Now() }

// NewStagingToken is generateStagingToken: "<repo>-<branch>:<uuid4>"
// (create repository, create branch, refs-restore).
func (c *Client) NewStagingToken(repo, branch string) string {
	return fmt.Sprintf("%s-%s:%s", repo, branch, c.cfg.UUIDs.NewUUID())
}

// CommitStagingToken is the SQL-era commit's newStagingToken:
// "<repo>-<branch>-<uuid4>".
func (c *Client) CommitStagingToken(repo, branch string) string {
	return fmt.Sprintf("%s-%s-%s", repo, branch, c.cfg.UUIDs.NewUUID())
}

var hexRef = regexp.MustCompile(`^[a-fA-F0-9]{1,64}$`)

// ResolveRef resolves a ref the way resolve_ref.go does: C2 if it looks
// like a hex commit id (the id is recomputed from the stored fields), then
// B1, then T1. A "~n" suffix follows n first parents with C1.
func (c *Client) ResolveRef(ctx context.Context, repo, ref string) (*ResolvedRef, error) {
	base, n, err := splitAncestor(ref)
	if err != nil {
		return nil, err
	}
	rr, err := c.resolveBase(ctx, repo, base)
	if err != nil {
		return nil, err
	}
	for i := 0; i < n; i++ {
		cm, err := c.GetCommit(ctx, repo, rr.CommitID)
		if err != nil {
			return nil, err
		}
		p := firstParent(*cm)
		if p == "" {
			return nil, fmt.Errorf("%s: no parent: %w", ref, ErrCommitNotFound)
		}
		rr = &ResolvedRef{Type: RefTypeCommit, CommitID: p}
	}
	return rr, nil
}

func splitAncestor(ref string) (string, int, error) {
	if ref == "" {
		return "", 0, fmt.Errorf("empty ref: %w", ErrInvalidRef)
	}
	i := strings.IndexByte(ref, '~')
	if i < 0 {
		return ref, 0, nil
	}
	n := 1
	if rest := ref[i+1:]; rest != "" {
		var err error
		if n, err = strconv.Atoi(rest); err != nil || n < 0 {
			return "", 0, fmt.Errorf("%q: %w", ref, ErrInvalidRef)
		}
	}
	return ref[:i], n, nil
}

func (c *Client) resolveBase(ctx context.Context, repo, ref string) (*ResolvedRef, error) {
	if hexRef.MatchString(ref) {
		cr, err := c.GetCommitByPrefix(ctx, repo, ref)
		if err == nil {
			return &ResolvedRef{Type: RefTypeCommit, CommitID: cr.Commit.ContentAddress()}, nil
		}
		if !errors.Is(err, ErrNotFound) {
			return nil, err
		}
	}
	b, err := c.GetBranch(ctx, repo, ref)
	if err == nil {
		return &ResolvedRef{Type: RefTypeBranch, BranchID: ref, StagingToken: b.StagingToken, CommitID: b.CommitID}, nil
	}
	if !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	commitID, err := c.GetTag(ctx, repo, ref)
	if err == nil {
		return &ResolvedRef{Type: RefTypeTag, CommitID: commitID}, nil
	}
	if !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	return nil, fmt.Errorf("ref %q: %w", ref, ErrNotFound)
}

// firstParent honours the commit version (spec §9.3).
func firstParent(cm Commit) string {
	if len(cm.Parents) == 0 {
		return ""
	}
	if cm.Version < CommitVersionParentSwitch {
		return cm.Parents[len(cm.Parents)-1]
	}
	return cm.Parents[0]
}

func (c *Client) tree(id string) (Tree, error) { return c.cfg.Ranges.Get(id) }

// CreateRepository builds the staging token and the first commit, then
// runs tx{R2, B2, C3}. No lock is taken.
func (c *Client) CreateRepository(ctx context.Context, repo, storageNamespace, defaultBranch string) (*Repository, string, error) {
	token := c.NewStagingToken(repo, defaultBranch)
	now := c.now()
	first := Commit{Version: CommitVersionParentSwitch, Message: FirstCommitMsg, Generation: 1, CreationDate: now}
	r := Repository{ID: repo, StorageNamespace: storageNamespace, CreationDate: now, DefaultBranchID: defaultBranch}
	commitID, err := c.CreateRepositoryRecords(ctx, r, token, first)
	if err != nil {
		return nil, "", err
	}
	return &r, commitID, nil
}

// CreateBranch is R1, resolve the source, B1 (expect not found), tx{B2}.
func (c *Client) CreateBranch(ctx context.Context, repo, branch, source string) (*Branch, error) {
	if _, err := c.GetRepository(ctx, repo); err != nil {
		return nil, err
	}
	rr, err := c.ResolveRef(ctx, repo, source)
	if err != nil {
		return nil, err
	}
	if _, err := c.GetBranch(ctx, repo, branch); err == nil {
		return nil, fmt.Errorf("%s/%s: %w", repo, branch, ErrBranchExists)
	} else if !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	b := Branch{ID: branch, CommitID: rr.CommitID, StagingToken: c.NewStagingToken(repo, branch)}
	if err := c.CreateBranchRecord(ctx, repo, b); err != nil {
		return nil, err
	}
	return &b, nil
}

// Set stages an object under L1: B1, then (IfAbsent) R1, C2, C1 and a
// committed lookup, then tx{S3} or tx{S2}.
func (c *Client) Set(ctx context.Context, repo, branch string, key []byte, v Value, ifAbsent bool) error {
	if len(key) == 0 {
		return fmt.Errorf("empty key: %w", ErrInvalidValue)
	}
	return c.WithWriterLock(ctx, repo, branch, func() error {
		b, err := c.GetBranch(ctx, repo, branch)
		if err != nil {
			return err
		}
		if ifAbsent {
			if _, err := c.GetRepository(ctx, repo); err != nil {
				return err
			}
			rr, err := c.ResolveRef(ctx, repo, b.CommitID)
			if err != nil {
				return err
			}
			cm, err := c.GetCommit(ctx, repo, rr.CommitID)
			if err != nil {
				return err
			}
			t, err := c.tree(cm.MetaRangeID)
			if err != nil {
				return err
			}
			if _, ok := t[string(key)]; ok {
				return ErrPreconditionFailed
			}
		}
		return c.StagingSet(ctx, b.StagingToken, key, &v, !ifAbsent)
	})
}

// Delete removes an object under L1: R1, B1, C1, committed lookup; a key
// not committed has its staged row deleted (S4), a committed one gets a
// tombstone (S1 then S3) unless it already has one (ErrNotFound).
func (c *Client) Delete(ctx context.Context, repo, branch string, key []byte) error {
	return c.WithWriterLock(ctx, repo, branch, func() error {
		if _, err := c.GetRepository(ctx, repo); err != nil {
			return err
		}
		b, err := c.GetBranch(ctx, repo, branch)
		if err != nil {
			return err
		}
		cm, err := c.GetCommit(ctx, repo, b.CommitID)
		if err != nil {
			return err
		}
		t, err := c.tree(cm.MetaRangeID)
		if err != nil {
			return err
		}
		if _, ok := t[string(key)]; !ok {
			return c.StagingDropKey(ctx, b.StagingToken, key)
		}
		v, err := c.StagingGet(ctx, b.StagingToken, key)
		if err == nil && v == nil {
			return fmt.Errorf("%q already deleted: %w", key, ErrNotFound)
		}
		if err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		return c.StagingSet(ctx, b.StagingToken, key, nil, true)
	})
}

// Get reads an object: R1, resolve, staging (S1) for a branch, then C1 and
// the committed lookup.
func (c *Client) Get(ctx context.Context, repo, ref string, key []byte) (*Value, error) {
	if _, err := c.GetRepository(ctx, repo); err != nil {
		return nil, err
	}
	rr, err := c.ResolveRef(ctx, repo, ref)
	if err != nil {
		return nil, err
	}
	if rr.Type == RefTypeBranch {
		v, err := c.StagingGet(ctx, rr.StagingToken, key)
		switch {
		case err == nil && v != nil:
			return v, nil
		case err == nil:
			return nil, fmt.Errorf("%q: %w", key, ErrNotFound)
		case !errors.Is(err, ErrNotFound):
			return nil, err
		}
	}
	cm, err := c.GetCommit(ctx, repo, rr.CommitID)
	if err != nil {
		return nil, err
	}
	t, err := c.tree(cm.MetaRangeID)
	if err != nil {
		return nil, err
	}
	v, ok := t[string(key)]
	if !ok {
		return nil, fmt.Errorf("%q: %w", key, ErrNotFound)
	}
	return &v, nil
}

// List returns all objects of a ref: R1, resolve, C1, then the committed
// tree merged with S7 pages (page size Config.PageSize), staging winning
// and tombstones hiding keys.
func (c *Client) List(ctx context.Context, repo, ref string) ([]ValueRecord, error) {
	if _, err := c.GetRepository(ctx, repo); err != nil {
		return nil, err
	}
	rr, err := c.ResolveRef(ctx, repo, ref)
	if err != nil {
		return nil, err
	}
	cm, err := c.GetCommit(ctx, repo, rr.CommitID)
	if err != nil {
		return nil, err
	}
	t, err := c.tree(cm.MetaRangeID)
	if err != nil {
		return nil, err
	}
	t = t.clone()
	if rr.Type == RefTypeBranch {
		staged, err := c.StagingList(ctx, rr.StagingToken, nil, c.cfg.PageSize, false)
		if err != nil {
			return nil, err
		}
		applyStaged(t, staged)
	}
	out := make([]ValueRecord, 0, len(t))
	for _, k := range t.keys() {
		v := t[k]
		out = append(out, ValueRecord{Key: []byte(k), Value: &v})
	}
	return out, nil
}

func applyStaged(t Tree, staged []ValueRecord) {
	for _, s := range staged {
		if s.Value == nil {
			delete(t, string(s.Key))
		} else {
			t[string(s.Key)] = *s.Value
		}
	}
}

func (c *Client) commitTime(p CommitParams) time.Time {
	if p.Date != nil {
		return time.Unix(*p.Date, 0)
	}
	return c.now()
}

// Commit is spec §4 Commit: under L2, R1, B1, C1(head), S7 pages of
// 100000, tx{C3} (parents [head], generation+1), tx{B3} with a
// "<repo>-<branch>-<uuid>" token, tx{S5} of the old token (errors ignored).
func (c *Client) Commit(ctx context.Context, repo, branch string, p CommitParams) (string, error) {
	var id string
	err := c.WithMetadataLock(ctx, repo, branch, func() error {
		if _, err := c.GetRepository(ctx, repo); err != nil {
			return err
		}
		b, err := c.GetBranch(ctx, repo, branch)
		if err != nil {
			return err
		}
		parent, err := c.GetCommit(ctx, repo, b.CommitID)
		if err != nil {
			return err
		}
		staged, err := c.StagingList(ctx, b.StagingToken, nil, CommitBatchSize, false)
		if err != nil {
			return err
		}
		if len(staged) == 0 {
			return ErrNoChanges
		}
		base, err := c.tree(parent.MetaRangeID)
		if err != nil {
			return err
		}
		t := base.clone()
		applyStaged(t, staged)
		cm := Commit{
			Committer:    p.Committer,
			Message:      p.Message,
			MetaRangeID:  c.cfg.Ranges.Put(t),
			CreationDate: c.commitTime(p),
			Parents:      []string{b.CommitID},
			Metadata:     p.Metadata,
			Version:      CommitVersionParentSwitch,
			Generation:   parent.Generation + 1,
		}
		if id, err = c.AddCommit(ctx, repo, cm); err != nil {
			return err
		}
		nb := Branch{ID: branch, CommitID: id, StagingToken: c.CommitStagingToken(repo, branch)}
		if err := c.SetBranch(ctx, repo, nb); err != nil {
			return err
		}
		// lakeFS only logs a failure to drop the old token.
		_ = c.StagingDrop(ctx, b.StagingToken)
		return nil
	})
	return id, err
}

// ensureClean is the one-page S7 dirty check (LIMIT 1001).
func (c *Client) ensureClean(ctx context.Context, token string, dirty error) error {
	staged, err := c.StagingList(ctx, token, nil, DefaultPageSize, true)
	if err != nil {
		return err
	}
	if len(staged) > 0 {
		return dirty
	}
	return nil
}

// Merge merges source into branch dest (spec §4 Merge): under L2, R1,
// B1(dest), dirty check, dereference both (C2/B1/T1 + C1), FindMergeBase
// (C1 walk), tx{C3} with parents [dest, source] and generation max+1,
// tx{B3} keeping the token.
func (c *Client) Merge(ctx context.Context, repo, dest, source string, p CommitParams) (string, error) {
	var id string
	err := c.WithMetadataLock(ctx, repo, dest, func() error {
		if _, err := c.GetRepository(ctx, repo); err != nil {
			return err
		}
		b, err := c.GetBranch(ctx, repo, dest)
		if err != nil {
			return err
		}
		if err := c.ensureClean(ctx, b.StagingToken, ErrDirtyBranch); err != nil {
			return err
		}
		src, err := c.ResolveRef(ctx, repo, source)
		if err != nil {
			return err
		}
		srcCommit, err := c.GetCommit(ctx, repo, src.CommitID)
		if err != nil {
			return err
		}
		dst, err := c.ResolveRef(ctx, repo, dest)
		if err != nil {
			return err
		}
		dstCommit, err := c.GetCommit(ctx, repo, dst.CommitID)
		if err != nil {
			return err
		}
		base, err := c.FindMergeBase(ctx, repo, dst.CommitID, src.CommitID)
		if err != nil {
			return err
		}
		if base.ID == src.CommitID {
			return ErrNoChanges
		}
		merged, err := c.merge3(base.MetaRangeID, srcCommit.MetaRangeID, dstCommit.MetaRangeID)
		if err != nil {
			return err
		}
		cm := Commit{
			Committer:    p.Committer,
			Message:      p.Message,
			MetaRangeID:  merged,
			CreationDate: c.commitTime(p),
			Parents:      []string{dst.CommitID, src.CommitID},
			Metadata:     p.Metadata,
			Version:      CommitVersionParentSwitch,
			Generation:   max(dstCommit.Generation, srcCommit.Generation) + 1,
		}
		if id, err = c.AddCommit(ctx, repo, cm); err != nil {
			return err
		}
		return c.SetBranch(ctx, repo, Branch{ID: dest, CommitID: id, StagingToken: b.StagingToken})
	})
	return id, err
}

// merge3 is the committed three-way merge: a side that did not change a
// key yields to the side that did; both changing it differently conflicts.
func (c *Client) merge3(baseID, srcID, dstID string) (string, error) {
	base, err := c.tree(baseID)
	if err != nil {
		return "", err
	}
	src, err := c.tree(srcID)
	if err != nil {
		return "", err
	}
	dst, err := c.tree(dstID)
	if err != nil {
		return "", err
	}
	out := dst.clone()
	keys := map[string]struct{}{}
	for _, t := range []Tree{base, src, dst} {
		for k := range t {
			keys[k] = struct{}{}
		}
	}
	for k := range keys {
		bv, bok := base[k]
		sv, sok := src[k]
		dv, dok := dst[k]
		switch {
		case sameEntry(sv, sok, bv, bok):
			// source did not touch k: keep dest
		case sameEntry(dv, dok, bv, bok), sameEntry(sv, sok, dv, dok):
			if sok {
				out[k] = sv
			} else {
				delete(out, k)
			}
		default:
			return "", fmt.Errorf("key %q: %w", k, ErrConflictFound)
		}
	}
	return c.cfg.Ranges.Put(out), nil
}

func sameEntry(a Value, aok bool, b Value, bok bool) bool {
	if aok != bok {
		return false
	}
	return !aok || (bytes.Equal(a.Identity, b.Identity) && bytes.Equal(a.Data, b.Data))
}

// mergeBaseQueue is lakeFS's CommitsGenerationPriorityQueue: max generation
// first; its Less ignores the creation date on ties (a missing return in
// lakeFS), which this reproduces by ordering on generation alone.
type mergeBaseQueue []*CommitRecord

func (q mergeBaseQueue) Len() int           { return len(q) }
func (q mergeBaseQueue) Less(i, j int) bool { return q[i].Generation > q[j].Generation }
func (q mergeBaseQueue) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *mergeBaseQueue) Push(x any)        { *q = append(*q, x.(*CommitRecord)) }
func (q *mergeBaseQueue) Pop() any {
	old := *q
	x := old[len(old)-1]
	*q = old[:len(old)-1]
	return x
}

// FindMergeBase is merge_base_finder.go: C1 for left, right and then
// parents, popping the highest generation until a commit is reached from
// both sides.
func (c *Client) FindMergeBase(ctx context.Context, repo, left, right string) (*CommitRecord, error) {
	const fromLeft, fromRight = 1, 2
	reached := map[string]int{right: fromRight}
	reached[left] |= fromLeft
	q := &mergeBaseQueue{}
	enqueue := func(id string) error {
		cm, err := c.GetCommit(ctx, repo, id)
		if err != nil {
			return err
		}
		heap.Push(q, &CommitRecord{ID: id, Commit: *cm})
		return nil
	}
	if err := enqueue(left); err != nil {
		return nil, err
	}
	if err := enqueue(right); err != nil {
		return nil, err
	}
	for q.Len() > 0 {
		cr := heap.Pop(q).(*CommitRecord)
		flags := reached[cr.ID]
		if flags&fromLeft != 0 && flags&fromRight != 0 {
			return cr, nil
		}
		for _, p := range cr.Parents {
			if _, seen := reached[p]; !seen {
				if err := enqueue(p); err != nil {
					return nil, err
				}
			}
			reached[p] |= flags
		}
	}
	return nil, fmt.Errorf("merge base of %s and %s: %w", left, right, ErrNotFound)
}

// Revert reverts commit ref on branch (spec §4 Revert).
func (c *Client) Revert(ctx context.Context, repo, branch, ref string, parentNumber int, p CommitParams) (string, error) {
	rr, err := c.ResolveRef(ctx, repo, ref)
	if err != nil {
		return "", err
	}
	reverted, err := c.GetCommit(ctx, repo, rr.CommitID)
	if err != nil {
		return "", err
	}
	if parentNumber <= 0 {
		parentNumber = 1
	}
	if len(reverted.Parents) == 0 || parentNumber > len(reverted.Parents) {
		return "", fmt.Errorf("revert %s: parent %d: %w", ref, parentNumber, ErrInvalidRef)
	}
	parentID := reverted.Parents[parentNumber-1]
	var id string
	err = c.WithMetadataLock(ctx, repo, branch, func() error {
		if _, err := c.GetRepository(ctx, repo); err != nil {
			return err
		}
		b, err := c.GetBranch(ctx, repo, branch)
		if err != nil {
			return err
		}
		if err := c.ensureClean(ctx, b.StagingToken, ErrDirtyBranch); err != nil {
			return err
		}
		parent, err := c.GetCommit(ctx, repo, parentID)
		if err != nil {
			return err
		}
		head, err := c.GetCommit(ctx, repo, b.CommitID)
		if err != nil {
			return err
		}
		merged, err := c.merge3(reverted.MetaRangeID, parent.MetaRangeID, head.MetaRangeID)
		if err != nil {
			return err
		}
		cm := Commit{
			Committer:    p.Committer,
			Message:      p.Message,
			MetaRangeID:  merged,
			CreationDate: c.commitTime(p),
			Parents:      []string{b.CommitID},
			Metadata:     p.Metadata,
			Version:      CommitVersionParentSwitch,
			Generation:   head.Generation + 1,
		}
		if id, err = c.AddCommit(ctx, repo, cm); err != nil {
			return err
		}
		return c.SetBranch(ctx, repo, Branch{ID: branch, CommitID: id, StagingToken: b.StagingToken})
	})
	return id, err
}

// Reset drops all uncommitted changes: L1, B1, tx{S5}.
func (c *Client) Reset(ctx context.Context, repo, branch string) error {
	return c.WithWriterLock(ctx, repo, branch, func() error {
		b, err := c.GetBranch(ctx, repo, branch)
		if err != nil {
			return err
		}
		return c.StagingDrop(ctx, b.StagingToken)
	})
}

// ResetKey drops one staged key: L1, B1, tx{S4}.
func (c *Client) ResetKey(ctx context.Context, repo, branch string, key []byte) error {
	return c.WithWriterLock(ctx, repo, branch, func() error {
		b, err := c.GetBranch(ctx, repo, branch)
		if err != nil {
			return err
		}
		return c.StagingDropKey(ctx, b.StagingToken, key)
	})
}

// ResetPrefix drops staged keys under a prefix: L1, B1, tx{S6}.
func (c *Client) ResetPrefix(ctx context.Context, repo, branch string, prefix []byte) error {
	return c.WithWriterLock(ctx, repo, branch, func() error {
		b, err := c.GetBranch(ctx, repo, branch)
		if err != nil {
			return err
		}
		return c.StagingDropByPrefix(ctx, b.StagingToken, prefix)
	})
}

// UpdateBranch points branch at ref: L2, resolve, B1, one S7 page (staged
// rows -> ErrConflictFound), tx{B3} keeping the token.
func (c *Client) UpdateBranch(ctx context.Context, repo, branch, ref string) (*Branch, error) {
	var out *Branch
	err := c.WithMetadataLock(ctx, repo, branch, func() error {
		rr, err := c.ResolveRef(ctx, repo, ref)
		if err != nil {
			return err
		}
		b, err := c.GetBranch(ctx, repo, branch)
		if err != nil {
			return err
		}
		if err := c.ensureClean(ctx, b.StagingToken, ErrConflictFound); err != nil {
			return err
		}
		nb := Branch{ID: branch, CommitID: rr.CommitID, StagingToken: b.StagingToken}
		if err := c.SetBranch(ctx, repo, nb); err != nil {
			return err
		}
		out = &nb
		return nil
	})
	return out, err
}

// AddCommitToBranchHead adds a prepared commit on top of branch (spec §4):
// under L2, C1 of the first parent, B1 and a check that the head is that
// parent, C1 of the commit (existing -> done), then R1, the metarange check,
// tx{C3}, and UpdateBranch's inner steps (resolve, B1, one S7 page, tx{B3}).
func (c *Client) AddCommitToBranchHead(ctx context.Context, repo, branch string, cm Commit) (string, error) {
	id := cm.ContentAddress()
	err := c.WithMetadataLock(ctx, repo, branch, func() error {
		parent := firstParent(cm)
		if parent != "" {
			if _, err := c.GetCommit(ctx, repo, parent); err != nil {
				return err
			}
		}
		b, err := c.GetBranch(ctx, repo, branch)
		if err != nil {
			return err
		}
		if b.CommitID != parent {
			return fmt.Errorf("%s/%s head %s, commit parent %s: %w", repo, branch, b.CommitID, parent, ErrCommitNotHeadBranch)
		}
		if _, err := c.GetCommit(ctx, repo, id); err == nil {
			return nil
		} else if !errors.Is(err, ErrNotFound) {
			return err
		}
		if _, err := c.GetRepository(ctx, repo); err != nil {
			return err
		}
		if _, err := c.tree(cm.MetaRangeID); err != nil {
			return err
		}
		if _, err := c.AddCommit(ctx, repo, cm); err != nil {
			return err
		}
		rr, err := c.ResolveRef(ctx, repo, id)
		if err != nil {
			return err
		}
		b, err = c.GetBranch(ctx, repo, branch)
		if err != nil {
			return err
		}
		if err := c.ensureClean(ctx, b.StagingToken, ErrConflictFound); err != nil {
			return err
		}
		return c.SetBranch(ctx, repo, Branch{ID: branch, CommitID: rr.CommitID, StagingToken: b.StagingToken})
	})
	if err != nil {
		return "", err
	}
	return id, nil
}

// CreateTag resolves ref to a commit, then R1, T1 (expect not found), tx{T2}.
func (c *Client) CreateTag(ctx context.Context, repo, tag, ref string) (string, error) {
	rr, err := c.ResolveRef(ctx, repo, ref)
	if err != nil {
		return "", err
	}
	if _, err := c.GetRepository(ctx, repo); err != nil {
		return "", err
	}
	if _, err := c.GetTag(ctx, repo, tag); err == nil {
		return "", fmt.Errorf("%s/%s: %w", repo, tag, ErrTagAlreadyExists)
	} else if !errors.Is(err, ErrNotFound) {
		return "", err
	}
	if err := c.CreateTagRecord(ctx, repo, tag, rr.CommitID); err != nil {
		return "", err
	}
	return rr.CommitID, nil
}

// DeleteTag is R1, T1, tx{T3}.
func (c *Client) DeleteTag(ctx context.Context, repo, tag string) error {
	if _, err := c.GetRepository(ctx, repo); err != nil {
		return err
	}
	if _, err := c.GetTag(ctx, repo, tag); err != nil {
		return err
	}
	return c.DeleteTagRecord(ctx, repo, tag)
}

// DeleteBranch is L2, R1 (refuse the default branch), B1, tx{S5}, tx{B4}.
func (c *Client) DeleteBranch(ctx context.Context, repo, branch string) error {
	return c.WithMetadataLock(ctx, repo, branch, func() error {
		r, err := c.GetRepository(ctx, repo)
		if err != nil {
			return err
		}
		if r.DefaultBranchID == branch {
			return ErrDeleteDefaultBranch
		}
		b, err := c.GetBranch(ctx, repo, branch)
		if err != nil {
			return err
		}
		if err := c.StagingDrop(ctx, b.StagingToken); err != nil {
			return err
		}
		return c.DeleteBranchRecord(ctx, repo, branch)
	})
}

// commitQueue is lakeFS's CommitsPriorityQueue: newest creation date
// first, then the larger commit id.
type commitQueue []*CommitRecord

func (q commitQueue) Len() int { return len(q) }
func (q commitQueue) Less(i, j int) bool {
	if q[i].CreationDate.Equal(q[j].CreationDate) {
		return q[i].ID > q[j].ID
	}
	return q[i].CreationDate.After(q[j].CreationDate)
}
func (q commitQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *commitQueue) Push(x any)   { *q = append(*q, x.(*CommitRecord)) }
func (q *commitQueue) Pop() any {
	old := *q
	x := old[len(old)-1]
	*q = old[:len(old)-1]
	return x
}

// Log is RefManager.Log: R1, then C4 (v0.68) or C1 (v0.70) for the start
// commit and for every parent of each popped commit, newest first. limit
// <= 0 walks the whole history.
func (c *Client) Log(ctx context.Context, repo, from string, limit int) ([]CommitRecord, error) {
	if _, err := c.GetRepository(ctx, repo); err != nil {
		return nil, err
	}
	start, err := c.getCommitRecord(ctx, repo, from)
	if err != nil {
		return nil, err
	}
	visited := map[string]bool{start.ID: true}
	q := &commitQueue{start}
	var out []CommitRecord
	for q.Len() > 0 && (limit <= 0 || len(out) < limit) {
		cr := heap.Pop(q).(*CommitRecord)
		out = append(out, *cr)
		for _, p := range cr.Parents {
			if visited[p] {
				continue
			}
			visited[p] = true
			pr, err := c.getCommitRecord(ctx, repo, p)
			if err != nil {
				return nil, err
			}
			heap.Push(q, pr)
		}
	}
	return out, nil
}

// RefsDump is what refs-dump writes.
type RefsDump struct {
	Commits  []CommitRecord
	Branches []Branch
	Tags     []Tag
}

// DumpRefs is ListCommits (R1+C5), ListBranches (R1+B5), ListTags (R1+T4).
func (c *Client) DumpRefs(ctx context.Context, repo string) (*RefsDump, error) {
	commits, err := c.ListCommits(ctx, repo)
	if err != nil {
		return nil, err
	}
	branches, err := c.ListBranchesFrom(ctx, repo, "")
	if err != nil {
		return nil, err
	}
	tags, err := c.ListTagsFrom(ctx, repo, "")
	if err != nil {
		return nil, err
	}
	return &RefsDump{Commits: commits, Branches: branches, Tags: tags}, nil
}

// LoadCommits is refs-restore's commit load: tx{C3} per commit, checking
// the recomputed id, then FillGenerations if any generation is 0.
func (c *Client) LoadCommits(ctx context.Context, repo string, commits []CommitRecord) error {
	fill := false
	for _, cr := range commits {
		id, err := c.AddCommit(ctx, repo, cr.Commit)
		if err != nil {
			return err
		}
		if id != cr.ID {
			return fmt.Errorf("%s vs %s: %w", cr.ID, id, ErrCommitIDMismatch)
		}
		if cr.Generation == 0 {
			fill = true
		}
	}
	if fill {
		return c.FillGenerations(ctx, repo)
	}
	return nil
}

// FillGenerations lists the commits (R1+C5), computes generations (root 1,
// otherwise max(parents)+1) and writes them with C7 statements of up to
// 10000 rows in one read-write transaction.
func (c *Client) FillGenerations(ctx context.Context, repo string) error {
	commits, err := c.ListCommits(ctx, repo)
	if err != nil {
		return err
	}
	byID := make(map[string]*CommitRecord, len(commits))
	for i := range commits {
		byID[commits[i].ID] = &commits[i]
	}
	gens := make(map[string]int, len(commits))
	var visit func(id string, depth int) (int, error)
	visit = func(id string, depth int) (int, error) {
		if g, ok := gens[id]; ok {
			return g, nil
		}
		cr, ok := byID[id]
		if !ok {
			return 0, fmt.Errorf("%s: %w", id, ErrInvalidCommitGenealogy)
		}
		if depth > len(commits) {
			return 0, fmt.Errorf("cycle at %s: %w", id, ErrInvalidCommitGenealogy)
		}
		g := 1
		for _, p := range cr.Parents {
			pg, err := visit(p, depth+1)
			if err != nil {
				return 0, err
			}
			g = max(g, pg+1)
		}
		gens[id] = g
		return g, nil
	}
	for _, cr := range commits {
		if _, err := visit(cr.ID, 0); err != nil {
			return err
		}
	}
	rows := sortedGenerationUpdates(gens)
	return c.Transact(ctx, TxReadWrite, func(q Q) error {
		for i := 0; i < len(rows); i += C7BatchSize {
			end := min(i+C7BatchSize, len(rows))
			if _, err := q.exec(ctx, IDC7, C7SQL(rows[i:end]), repo); err != nil {
				return err
			}
		}
		return nil
	})
}

// LoadBranches is tx{B3} per branch, each with a fresh "<repo>-<branch>:<uuid>" token.
func (c *Client) LoadBranches(ctx context.Context, repo string, branches []Branch) error {
	for _, b := range branches {
		nb := Branch{ID: b.ID, CommitID: b.CommitID, StagingToken: c.NewStagingToken(repo, b.ID)}
		if err := c.SetBranch(ctx, repo, nb); err != nil {
			return err
		}
	}
	return nil
}

// LoadTags is tx{T2} per tag; an existing tag gives ErrTagAlreadyExists.
func (c *Client) LoadTags(ctx context.Context, repo string, tags []Tag) error {
	for _, t := range tags {
		if err := c.CreateTagRecord(ctx, repo, t.ID, t.CommitID); err != nil {
			return err
		}
	}
	return nil
}

// Startup is what lakeFS sends when it starts: a Ping (";") on each pool
// and the migration version check (SELECT COUNT(*) FROM schema_migrations).
func (c *Client) Startup(ctx context.Context) (int64, error) {
	for _, p := range []Q{c.NoTx(), {c: c, q: c.LockDB}} {
		if _, err := p.exec(ctx, IDPing, SQLPing); err != nil {
			return 0, err
		}
	}
	r, err := c.NoTx().queryOne(ctx, IDMigrate, SQLMigrateCount)
	if err != nil {
		return 0, err
	}
	n, _ := r[0].(int64)
	return n, nil
}

// Diagnostics runs the collector's statements, each in its own read-only
// transaction, and returns the row counts by table plus the joined errors
// (auth_users does not exist in the ref-store schema).
func (c *Client) Diagnostics(ctx context.Context) (map[string]int64, error) {
	counts := map[string]int64{}
	var errs []error
	for _, t := range DiagnosticsTables() {
		err := c.Transact(ctx, TxReadOnly, func(q Q) error {
			r, err := q.queryOne(ctx, IDDiagnostics, DiagCountSQL(t))
			if err != nil {
				return err
			}
			counts[t], _ = r[0].(int64)
			return nil
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", t, err))
		}
	}
	for _, s := range []string{SQLDiagMigrations, SQLDiagVersion} {
		err := c.Transact(ctx, TxReadOnly, func(q Q) error {
			_, err := q.query(ctx, IDDiagnostics, s)
			return err
		})
		if err != nil {
			errs = append(errs, err)
		}
	}
	return counts, errors.Join(errs...)
}

// ListRepositories lists every repository (R3 pages).
func (c *Client) ListRepositories(ctx context.Context) ([]Repository, error) {
	return c.ListRepositoriesFrom(ctx, "")
}
