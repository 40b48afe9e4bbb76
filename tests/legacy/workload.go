package legacy

import (
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand"
	"sort"
	"strings"
	"sync"
	"time"
)

// WorkloadConfig configures one client's seeded sequence of flows.
type WorkloadConfig struct {
	// Seed determines every choice; equal seeds against databases that
	// answer identically give identical statement streams.
	Seed int64
	// Name prefixes every repository the workload creates ("c0" -> "c0-r1").
	Name string
	// MaxRepos is the number of live private repositories kept (default 3).
	MaxRepos int
	// Keys is the key space per branch (default 24), spread over 4 prefixes.
	Keys int
	// SharedRepo, if set, is an existing repository in which the workload
	// owns the branch named Name (created from the default branch).
	SharedRepo string
	// Global enables operations whose result depends on other clients
	// (list repositories, diagnostics); harmless, off for sharper diffs.
	Global bool
	// Tolerant keeps going after an unexpected outcome (a failed statement
	// during a migration switch, a dropped connection): the entities it
	// touched are marked uncertain in the ledger and skipped by Verify, the
	// failure is counted (Failures) instead of being a ledger problem.
	Tolerant bool
}

// Workload runs a seeded random sequence of lakeFS flows on one Client,
// predicting the business errors it provokes on purpose (duplicate
// repository -> 23505, re-created tag -> INSERT 0 0, missing branch, ...)
// and recording acknowledged writes in a Ledger.
type Workload struct {
	c   *Client
	l   *Ledger
	cfg WorkloadConfig
	rnd *rand.Rand
	seq int
	// commits numbers commit messages: commit ids hash the time in whole
	// seconds, and a commit added twice is "done" without moving the head.
	commits int
	repos   []*wlRepo
	stats   map[string]int
	shared  *wlRepo
	// failures are unexpected outcomes tolerated in Tolerant mode.
	failures []error
	// stepCtx is the context of the step running now: an outcome cut
	// short because it ended is not a problem.
	stepCtx context.Context
}

// Failures returns the unexpected outcomes tolerated so far.
func (w *Workload) Failures() []error { return append([]error(nil), w.failures...) }

type wlRepo struct {
	id, ns, def string
	branches    []string
	tags        []string
	commits     []string
	private     bool
}

// NewWorkload returns a workload; l may be nil (no ledger).
func NewWorkload(c *Client, l *Ledger, cfg WorkloadConfig) *Workload {
	if cfg.MaxRepos <= 0 {
		cfg.MaxRepos = 3
	}
	if cfg.Keys <= 0 {
		cfg.Keys = 24
	}
	if cfg.Name == "" {
		cfg.Name = "w"
	}
	if l == nil {
		l = NewLedger()
	}
	return &Workload{c: c, l: l, cfg: cfg, rnd: rand.New(rand.NewSource(cfg.Seed)), stats: map[string]int{}}
}

// Stats returns how often each operation ran.
func (w *Workload) Stats() map[string]int {
	out := make(map[string]int, len(w.stats))
	for k, v := range w.stats {
		out[k] = v
	}
	return out
}

// ErrUnexpected marks an outcome the workload did not allow for.
var ErrUnexpected = errors.New("unexpected outcome")

func (w *Workload) next(prefix string) string {
	w.seq++
	return fmt.Sprintf("%s%d", prefix, w.seq)
}

func (w *Workload) pick(n int) int { return w.rnd.Intn(n) }

func (w *Workload) value() Value {
	data := make([]byte, 8+w.pick(40))
	w.rnd.Read(data)
	sum := sha256.Sum256(data)
	return Value{Identity: sum[:], Data: data}
}

func (w *Workload) key() []byte {
	k := w.pick(w.cfg.Keys)
	return []byte(fmt.Sprintf("dir%d/obj-%03d", k%4, k))
}

func (w *Workload) params(kind string) CommitParams {
	w.commits++
	p := CommitParams{Committer: w.cfg.Name, Message: fmt.Sprintf("%s %s %d.%d", w.cfg.Name, kind, w.seq, w.commits)}
	switch w.pick(3) {
	case 0:
		p.Metadata = map[string]string{"client": w.cfg.Name, "n": fmt.Sprint(w.seq)}
	case 1:
		p.Metadata = map[string]string{}
	}
	return p
}

// writable returns (repo, branch) pairs this workload owns.
func (w *Workload) pickBranch() (*wlRepo, string, bool) {
	var cands []*wlRepo
	for _, r := range w.repos {
		if len(r.branches) > 0 {
			cands = append(cands, r)
		}
	}
	if w.shared != nil {
		cands = append(cands, w.shared)
	}
	if len(cands) == 0 {
		return nil, "", false
	}
	r := cands[w.pick(len(cands))]
	return r, r.branches[w.pick(len(r.branches))], true
}

func (w *Workload) pickPrivate() (*wlRepo, bool) {
	if len(w.repos) == 0 {
		return nil, false
	}
	return w.repos[w.pick(len(w.repos))], true
}

// anyRef picks a ref of r: a branch, a tag, a commit id or a commit prefix.
func (w *Workload) anyRef(r *wlRepo) string {
	switch w.pick(5) {
	case 0:
		if len(r.tags) > 0 {
			return r.tags[w.pick(len(r.tags))]
		}
	case 1:
		if len(r.commits) > 0 {
			return r.commits[w.pick(len(r.commits))]
		}
	case 2:
		if len(r.commits) > 0 {
			return r.commits[w.pick(len(r.commits))][:12]
		}
	}
	return r.branches[w.pick(len(r.branches))]
}

func expect(op string, err error, allowed ...error) error {
	if err == nil {
		return nil
	}
	for _, a := range allowed {
		if errors.Is(err, a) {
			return nil
		}
	}
	return fmt.Errorf("%s: %w: %w", op, ErrUnexpected, err)
}

func expectErr(op string, err, want error) error {
	if errors.Is(err, want) {
		return nil
	}
	return fmt.Errorf("%s: %w: want %v, got %v", op, ErrUnexpected, want, err)
}

// Setup creates the workload's branch in the shared repository, if any.
func (w *Workload) Setup(ctx context.Context) error {
	if w.cfg.SharedRepo == "" {
		return nil
	}
	r, err := w.c.GetRepository(ctx, w.cfg.SharedRepo)
	if err != nil {
		return err
	}
	b, err := w.c.CreateBranch(ctx, w.cfg.SharedRepo, w.cfg.Name, r.DefaultBranchID)
	if err != nil {
		return err
	}
	w.l.BranchSet(w.cfg.SharedRepo, w.cfg.Name, b.CommitID, false)
	w.shared = &wlRepo{id: w.cfg.SharedRepo, branches: []string{w.cfg.Name}, commits: []string{b.CommitID}}
	return nil
}

// Run executes n steps; it stops at the first unexpected outcome or when
// ctx ends (then it returns nil: stopping is not a failure).
func (w *Workload) Run(ctx context.Context, n int) error {
	for i := 0; n <= 0 || i < n; i++ {
		if ctx.Err() != nil {
			return nil
		}
		if err := w.Step(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if !w.cfg.Tolerant {
				return err
			}
			w.failures = append(w.failures, err)
			// Do not spin against a server that is down.
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	return nil
}

type wlOp struct {
	name   string
	weight int
	run    func(ctx context.Context) error
}

func (w *Workload) ops() []wlOp {
	return []wlOp{
		{"create-repo", 3, w.opCreateRepo},
		{"create-repo-dup", 1, w.opCreateRepoDup},
		{"create-branch", 5, w.opCreateBranch},
		{"create-branch-dup", 1, w.opCreateBranchDup},
		{"set", 24, w.opSet},
		{"set-if-absent", 5, w.opSetIfAbsent},
		{"delete-object", 8, w.opDelete},
		{"get-object", 8, w.opGet},
		{"list-objects", 3, w.opList},
		{"commit", 8, w.opCommit},
		{"merge", 3, w.opMerge},
		{"revert", 2, w.opRevert},
		{"reset", 1, w.opReset},
		{"reset-key", 2, w.opResetKey},
		{"reset-prefix", 2, w.opResetPrefix},
		{"update-branch", 1, w.opUpdateBranch},
		{"add-commit-to-head", 1, w.opAddCommitToHead},
		{"create-tag", 3, w.opCreateTag},
		{"create-tag-dup", 1, w.opCreateTagDup},
		{"load-tag-dup", 1, w.opLoadTagDup},
		{"delete-tag", 2, w.opDeleteTag},
		{"delete-tag-missing", 1, w.opDeleteTagMissing},
		{"delete-branch", 2, w.opDeleteBranch},
		{"delete-branch-missing", 1, w.opDeleteBranchMissing},
		{"delete-default-branch", 1, w.opDeleteDefault},
		{"delete-repo", 1, w.opDeleteRepo},
		{"delete-repo-missing", 1, w.opDeleteRepoMissing},
		{"refs-restore", 1, w.opRestore},
		{"log", 3, w.opLog},
		{"list-refs", 2, w.opListRefs},
		{"gc-iterators", 1, w.opGC},
		{"global", 1, w.opGlobal},
	}
}

// Step runs one randomly chosen operation.
func (w *Workload) Step(ctx context.Context) error {
	w.stepCtx = ctx
	ops := w.ops()
	if len(w.repos) == 0 {
		return w.do(ctx, ops[0])
	}
	total := 0
	for _, o := range ops {
		total += o.weight
	}
	x := w.pick(total)
	for _, o := range ops {
		if x < o.weight {
			return w.do(ctx, o)
		}
		x -= o.weight
	}
	return nil
}

func (w *Workload) do(ctx context.Context, o wlOp) error {
	w.stats[o.name]++
	return o.run(ctx)
}

// uncertain marks what an operation with an unknown outcome touched, so
// Verify skips it; a cancelled run is not a problem, anything else is.
func (w *Workload) uncertain(repo, branch string, err error) error {
	if err == nil || !errors.Is(err, ErrUnexpected) {
		return err
	}
	if branch != "" {
		w.l.BranchUncertain(repo, branch, err)
	} else {
		w.l.RepoUncertain(repo)
	}
	stopped := w.stepCtx != nil && w.stepCtx.Err() != nil
	if !w.cfg.Tolerant && !stopped && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		w.l.Problem("%s: %v", w.cfg.Name, err)
	}
	return err
}

func (w *Workload) opCreateRepo(ctx context.Context) error {
	if len(w.repos) >= w.cfg.MaxRepos {
		return w.opList(ctx)
	}
	id := w.next(w.cfg.Name + "-r")
	ns := "s3://bucket/" + id
	def := "main"
	_, first, err := w.c.CreateRepository(ctx, id, ns, def)
	if err != nil {
		return w.uncertain(id, "", expect("create repository "+id, err))
	}
	w.l.RepoCreated(id, ns, def, first)
	w.repos = append(w.repos, &wlRepo{id: id, ns: ns, def: def, branches: []string{def}, commits: []string{first}, private: true})
	return nil
}

func (w *Workload) opCreateRepoDup(ctx context.Context) error {
	r, ok := w.pickPrivate()
	if !ok {
		return nil
	}
	_, _, err := w.c.CreateRepository(ctx, r.id, "s3://other/"+r.id, "other")
	return w.uncertain(r.id, "", expectErr("create duplicate repository", err, ErrNotUnique))
}

func (w *Workload) opCreateBranch(ctx context.Context) error {
	r, ok := w.pickPrivate()
	if !ok || len(r.branches) == 0 {
		return nil
	}
	id := w.next("b")
	b, err := w.c.CreateBranch(ctx, r.id, id, w.anyRef(r))
	if err != nil {
		return w.uncertain(r.id, id, expect("create branch", err))
	}
	w.l.BranchSet(r.id, id, b.CommitID, false)
	r.branches = append(r.branches, id)
	return nil
}

func (w *Workload) opCreateBranchDup(ctx context.Context) error {
	r, ok := w.pickPrivate()
	if !ok || len(r.branches) == 0 {
		return nil
	}
	_, err := w.c.CreateBranch(ctx, r.id, r.branches[w.pick(len(r.branches))], r.branches[0])
	return w.uncertain(r.id, "", expectErr("create existing branch", err, ErrBranchExists))
}

func (w *Workload) opSet(ctx context.Context) error {
	r, b, ok := w.pickBranch()
	if !ok {
		return nil
	}
	k, v := w.key(), w.value()
	if err := w.c.Set(ctx, r.id, b, k, v, false); err != nil {
		return w.uncertain(r.id, b, expect("set", err))
	}
	w.l.Staged(r.id, b, k, v)
	return nil
}

func (w *Workload) opSetIfAbsent(ctx context.Context) error {
	r, b, ok := w.pickBranch()
	if !ok {
		return nil
	}
	k, v := w.key(), w.value()
	err := w.c.Set(ctx, r.id, b, k, v, true)
	if err == nil {
		w.l.Staged(r.id, b, k, v)
		return nil
	}
	return w.uncertain(r.id, b, expect("set if absent", err, ErrPreconditionFailed))
}

func (w *Workload) opDelete(ctx context.Context) error {
	r, b, ok := w.pickBranch()
	if !ok {
		return nil
	}
	k := w.key()
	err := w.c.Delete(ctx, r.id, b, k)
	if err == nil {
		w.l.Deleted(r.id, b, k)
		return nil
	}
	return w.uncertain(r.id, b, expect("delete object", err, ErrNotFound))
}

func (w *Workload) opGet(ctx context.Context) error {
	r, b, ok := w.pickBranch()
	if !ok {
		return nil
	}
	ref := b
	if w.pick(3) == 0 && len(r.commits) > 0 {
		ref = r.commits[w.pick(len(r.commits))]
	}
	_, err := w.c.Get(ctx, r.id, ref, w.key())
	return expect("get object", err, ErrNotFound)
}

func (w *Workload) opList(ctx context.Context) error {
	r, b, ok := w.pickBranch()
	if !ok {
		return nil
	}
	_, err := w.c.List(ctx, r.id, b)
	return expect("list objects", err)
}

func (w *Workload) opCommit(ctx context.Context) error {
	r, b, ok := w.pickBranch()
	if !ok {
		return nil
	}
	id, err := w.c.Commit(ctx, r.id, b, w.params("commit"))
	if err != nil {
		return w.uncertain(r.id, b, expect("commit", err, ErrNoChanges))
	}
	w.l.BranchSet(r.id, b, id, false)
	r.commits = append(r.commits, id)
	return nil
}

func (w *Workload) opMerge(ctx context.Context) error {
	r, ok := w.pickPrivate()
	if !ok || len(r.branches) < 2 {
		return nil
	}
	dest := r.branches[w.pick(len(r.branches))]
	src := r.branches[w.pick(len(r.branches))]
	if src == dest {
		return nil
	}
	id, err := w.c.Merge(ctx, r.id, dest, src, w.params("merge"))
	if err != nil {
		return w.uncertain(r.id, dest, expect("merge", err, ErrNoChanges, ErrConflictFound, ErrDirtyBranch))
	}
	w.l.BranchSet(r.id, dest, id, true)
	r.commits = append(r.commits, id)
	return nil
}

func (w *Workload) opRevert(ctx context.Context) error {
	r, b, ok := w.pickBranch()
	if !ok {
		return nil
	}
	ref := b + "~" + fmt.Sprint(w.pick(2))
	id, err := w.c.Revert(ctx, r.id, b, ref, 1, w.params("revert"))
	if err != nil {
		return w.uncertain(r.id, b, expect("revert", err, ErrConflictFound, ErrDirtyBranch, ErrInvalidRef, ErrNotFound))
	}
	w.l.BranchSet(r.id, b, id, true)
	r.commits = append(r.commits, id)
	return nil
}

func (w *Workload) opReset(ctx context.Context) error {
	r, b, ok := w.pickBranch()
	if !ok {
		return nil
	}
	if err := w.c.Reset(ctx, r.id, b); err != nil {
		return w.uncertain(r.id, b, expect("reset", err))
	}
	w.l.ResetAll(r.id, b)
	return nil
}

func (w *Workload) opResetKey(ctx context.Context) error {
	r, b, ok := w.pickBranch()
	if !ok {
		return nil
	}
	k := w.key()
	if err := w.c.ResetKey(ctx, r.id, b, k); err != nil {
		return w.uncertain(r.id, b, expect("reset key", err))
	}
	w.l.ResetKeys(r.id, b, k, true)
	return nil
}

func (w *Workload) opResetPrefix(ctx context.Context) error {
	r, b, ok := w.pickBranch()
	if !ok {
		return nil
	}
	p := []byte(fmt.Sprintf("dir%d/", w.pick(4)))
	if w.pick(4) == 0 {
		p = []byte{}
	}
	if err := w.c.ResetPrefix(ctx, r.id, b, p); err != nil {
		return w.uncertain(r.id, b, expect("reset prefix", err))
	}
	w.l.ResetKeys(r.id, b, p, false)
	return nil
}

func (w *Workload) opUpdateBranch(ctx context.Context) error {
	r, ok := w.pickPrivate()
	if !ok || len(r.branches) == 0 {
		return nil
	}
	b := r.branches[w.pick(len(r.branches))]
	nb, err := w.c.UpdateBranch(ctx, r.id, b, w.anyRef(r))
	if err != nil {
		return w.uncertain(r.id, b, expect("update branch", err, ErrConflictFound))
	}
	w.l.BranchSet(r.id, b, nb.CommitID, true)
	return nil
}

// opAddCommitToHead adds a commit that keeps the head's content (a
// metadata-only commit, as an import would add).
func (w *Workload) opAddCommitToHead(ctx context.Context) error {
	r, b, ok := w.pickBranch()
	if !ok {
		return nil
	}
	br, err := w.c.GetBranch(ctx, r.id, b)
	if err != nil {
		return expect("add commit to head", err)
	}
	head, err := w.c.GetCommit(ctx, r.id, br.CommitID)
	if err != nil {
		return expect("add commit to head", err)
	}
	p := w.params("import")
	cm := Commit{Committer: p.Committer, Message: p.Message, MetaRangeID: head.MetaRangeID, CreationDate: w.c.now(),
		Parents: []string{br.CommitID}, Metadata: p.Metadata, Version: CommitVersionParentSwitch, Generation: head.Generation + 1}
	id, err := w.c.AddCommitToBranchHead(ctx, r.id, b, cm)
	if err != nil {
		return w.uncertain(r.id, b, expect("add commit to head", err, ErrConflictFound))
	}
	w.l.BranchSet(r.id, b, id, true)
	r.commits = append(r.commits, id)
	return nil
}

func (w *Workload) opCreateTag(ctx context.Context) error {
	r, ok := w.pickPrivate()
	if !ok || len(r.branches) == 0 {
		return nil
	}
	id := w.next("t")
	commit, err := w.c.CreateTag(ctx, r.id, id, w.anyRef(r))
	if err != nil {
		return w.uncertain(r.id, "", expect("create tag", err))
	}
	w.l.TagSet(r.id, id, commit)
	r.tags = append(r.tags, id)
	return nil
}

func (w *Workload) opCreateTagDup(ctx context.Context) error {
	r, ok := w.pickPrivate()
	if !ok || len(r.tags) == 0 || len(r.branches) == 0 {
		return nil
	}
	_, err := w.c.CreateTag(ctx, r.id, r.tags[w.pick(len(r.tags))], r.branches[0])
	return w.uncertain(r.id, "", expectErr("create existing tag", err, ErrTagAlreadyExists))
}

// opLoadTagDup re-creates an existing tag the refs-restore way (T2 without
// the T1 check): the statement answers INSERT 0 0.
func (w *Workload) opLoadTagDup(ctx context.Context) error {
	r, ok := w.pickPrivate()
	if !ok || len(r.tags) == 0 || len(r.commits) == 0 {
		return nil
	}
	err := w.c.LoadTags(ctx, r.id, []Tag{{ID: r.tags[w.pick(len(r.tags))], CommitID: r.commits[0]}})
	return w.uncertain(r.id, "", expectErr("load existing tag", err, ErrTagAlreadyExists))
}

func (w *Workload) opDeleteTag(ctx context.Context) error {
	r, ok := w.pickPrivate()
	if !ok || len(r.tags) == 0 {
		return nil
	}
	i := w.pick(len(r.tags))
	t := r.tags[i]
	if err := w.c.DeleteTag(ctx, r.id, t); err != nil {
		return w.uncertain(r.id, "", expect("delete tag", err))
	}
	w.l.TagDeleted(r.id, t)
	r.tags = append(r.tags[:i], r.tags[i+1:]...)
	return nil
}

func (w *Workload) opDeleteTagMissing(ctx context.Context) error {
	r, ok := w.pickPrivate()
	if !ok {
		return nil
	}
	err := w.c.DeleteTag(ctx, r.id, "no-such-tag")
	return expectErr("delete missing tag", err, ErrTagNotFound)
}

func (w *Workload) opDeleteBranch(ctx context.Context) error {
	r, ok := w.pickPrivate()
	if !ok || len(r.branches) < 2 {
		return nil
	}
	i := 1 + w.pick(len(r.branches)-1)
	b := r.branches[i]
	if err := w.c.DeleteBranch(ctx, r.id, b); err != nil {
		return w.uncertain(r.id, b, expect("delete branch", err))
	}
	w.l.BranchDeleted(r.id, b)
	r.branches = append(r.branches[:i], r.branches[i+1:]...)
	return nil
}

func (w *Workload) opDeleteBranchMissing(ctx context.Context) error {
	r, ok := w.pickPrivate()
	if !ok {
		return nil
	}
	err := w.c.DeleteBranch(ctx, r.id, "no-such-branch")
	return expectErr("delete missing branch", err, ErrBranchNotFound)
}

func (w *Workload) opDeleteDefault(ctx context.Context) error {
	r, ok := w.pickPrivate()
	if !ok {
		return nil
	}
	err := w.c.DeleteBranch(ctx, r.id, r.def)
	return expectErr("delete default branch", err, ErrDeleteDefaultBranch)
}

func (w *Workload) opDeleteRepo(ctx context.Context) error {
	if len(w.repos) < 2 {
		return nil
	}
	i := w.pick(len(w.repos))
	r := w.repos[i]
	if err := w.c.DeleteRepository(ctx, r.id); err != nil {
		return w.uncertain(r.id, "", expect("delete repository", err))
	}
	w.l.RepoDeleted(r.id)
	w.repos = append(w.repos[:i], w.repos[i+1:]...)
	return nil
}

func (w *Workload) opDeleteRepoMissing(ctx context.Context) error {
	err := w.c.DeleteRepository(ctx, w.cfg.Name+"-no-such-repo")
	return expectErr("delete missing repository", err, ErrRepositoryNotFound)
}

// opRestore dumps a repository and restores it into a new bare one, half
// of the time with generations zeroed so FillGenerations (C7) runs.
func (w *Workload) opRestore(ctx context.Context) error {
	src, ok := w.pickPrivate()
	if !ok || len(src.branches) == 0 || len(w.repos) >= w.cfg.MaxRepos+1 {
		return nil
	}
	dump, err := w.c.DumpRefs(ctx, src.id)
	if err != nil {
		return expect("dump refs", err)
	}
	id := w.next(w.cfg.Name + "-restored")
	ns := "s3://bucket/" + id
	r := Repository{ID: id, StorageNamespace: ns, CreationDate: w.c.now(), DefaultBranchID: src.def}
	if err := w.c.CreateBareRepository(ctx, r); err != nil {
		return w.uncertain(id, "", expect("create bare repository", err))
	}
	w.l.RepoBare(id, ns, src.def)
	commits := dump.Commits
	if w.pick(2) == 0 {
		commits = make([]CommitRecord, len(dump.Commits))
		for i, c := range dump.Commits {
			c.Generation = 0
			commits[i] = c
		}
	}
	if err := w.c.LoadCommits(ctx, id, commits); err != nil {
		return w.uncertain(id, "", expect("load commits", err))
	}
	nr := &wlRepo{id: id, ns: ns, def: src.def, private: true}
	for _, c := range dump.Commits {
		w.l.CommitAdded(id, c.ID)
		nr.commits = append(nr.commits, c.ID)
	}
	if err := w.c.LoadBranches(ctx, id, dump.Branches); err != nil {
		return w.uncertain(id, "", expect("load branches", err))
	}
	for _, b := range dump.Branches {
		w.l.BranchSet(id, b.ID, b.CommitID, false)
		nr.branches = append(nr.branches, b.ID)
	}
	// Keep the default branch first: delete-branch never picks index 0.
	sort.SliceStable(nr.branches, func(i, j int) bool { return nr.branches[i] == src.def && nr.branches[j] != src.def })
	if err := w.c.LoadTags(ctx, id, dump.Tags); err != nil {
		return w.uncertain(id, "", expect("load tags", err))
	}
	for _, t := range dump.Tags {
		w.l.TagSet(id, t.ID, t.CommitID)
		nr.tags = append(nr.tags, t.ID)
	}
	w.repos = append(w.repos, nr)
	return nil
}

func (w *Workload) opLog(ctx context.Context) error {
	r, b, ok := w.pickBranch()
	if !ok {
		return nil
	}
	br, err := w.c.GetBranch(ctx, r.id, b)
	if err != nil {
		return expect("log", err)
	}
	_, err = w.c.Log(ctx, r.id, br.CommitID, 0)
	return expect("log", err)
}

func (w *Workload) opListRefs(ctx context.Context) error {
	r, ok := w.pickPrivate()
	if !ok {
		return nil
	}
	if _, err := w.c.ListBranchesFrom(ctx, r.id, ""); err != nil {
		return expect("list branches", err)
	}
	if _, err := w.c.ListTagsFrom(ctx, r.id, ""); err != nil {
		return expect("list tags", err)
	}
	_, err := w.c.ListCommits(ctx, r.id)
	return expect("list commits", err)
}

func (w *Workload) opGC(ctx context.Context) error {
	r, ok := w.pickPrivate()
	if !ok {
		return nil
	}
	if _, err := w.c.GCBranches(ctx, r.id); err != nil {
		return expect("gc branches", err)
	}
	_, err := w.c.GCCommits(ctx, r.id)
	return expect("gc commits", err)
}

func (w *Workload) opGlobal(ctx context.Context) error {
	if !w.cfg.Global {
		return nil
	}
	if _, err := w.c.ListRepositories(ctx); err != nil {
		return expect("list repositories", err)
	}
	_, err := w.c.Diagnostics(ctx)
	// auth_users is absent from the ref-store schema: 42P01 is expected.
	if err != nil && SQLState(err) != "42P01" {
		return expect("diagnostics", err)
	}
	return nil
}

// RunConfig configures RunConcurrent.
type RunConfig struct {
	DSN string
	// DSNs, if set, spread the clients over several servers (client i uses
	// DSNs[i%len(DSNs)]), e.g. several kvproxy instances; DSN is then only
	// used for the shared repository's setup when it is empty.
	DSNs    []string
	Clients int
	// Steps per client; 0 means until ctx ends.
	Steps   int
	Seed    int64
	Version Version
	// Pool sizes per client (each client is one lakeFS process with a DB
	// and a LockDB pool); defaults 4 and 2.
	PoolSize, LockPoolSize int32
	// SharedRepo makes every client also write its own branch in one
	// repository (lock and serialization traffic on shared rows).
	SharedRepo bool
	// Record gives each client a Recorder (memory grows with the run).
	Record bool
	// Tolerant: see WorkloadConfig.Tolerant. Use it while switching
	// migration phases under load; RunResult.Failures lists what failed.
	Tolerant bool
	// Prefix starts the client names (default "c"), so that two runs
	// against one database keep apart repositories.
	Prefix string
}

func (cfg RunConfig) dsnFor(i int) string {
	if len(cfg.DSNs) == 0 {
		return cfg.DSN
	}
	return cfg.DSNs[i%len(cfg.DSNs)]
}

// RunResult is what RunConcurrent returns.
type RunResult struct {
	Ledger    *Ledger
	Steps     map[string]int // per operation, summed over clients
	Total     int
	Elapsed   time.Duration
	Recorders []*Recorder // per client when Record is set
	Failures  []error     // tolerated unexpected outcomes (Tolerant)
}

// RunConcurrent runs Clients workloads in parallel against one DSN (or
// spread over DSNs), each
// with its own Client (pools), seed Seed+i and private repositories, all
// recording into one Ledger. It returns the first unexpected outcome as an
// error (after all clients stopped); ledger verification is separate.
func RunConcurrent(ctx context.Context, cfg RunConfig) (*RunResult, error) {
	if cfg.Clients <= 0 {
		return nil, fmt.Errorf("legacy: %d clients", cfg.Clients)
	}
	if cfg.PoolSize == 0 {
		cfg.PoolSize = 4
	}
	if cfg.LockPoolSize == 0 {
		cfg.LockPoolSize = 2
	}
	ledger := NewLedger()
	ranges := NewRangeStore()
	res := &RunResult{Ledger: ledger, Steps: map[string]int{}}
	sharedID := ""
	if cfg.SharedRepo {
		c, err := Open(ctx, Config{DSN: cfg.dsnFor(0), MaxConns: 2, LockMaxConns: 1, Version: cfg.Version, Ranges: ranges})
		if err != nil {
			return nil, err
		}
		sharedID = fmt.Sprintf("shared-%d", cfg.Seed)
		_, first, err := c.CreateRepository(ctx, sharedID, "s3://bucket/"+sharedID, "main")
		c.Close()
		if err != nil {
			return nil, fmt.Errorf("create shared repository: %w", err)
		}
		ledger.RepoCreated(sharedID, "s3://bucket/"+sharedID, "main", first)
	}
	clients := make([]*Client, cfg.Clients)
	for i := range clients {
		var rec *Recorder
		if cfg.Record {
			rec = NewRecorder()
			res.Recorders = append(res.Recorders, rec)
		}
		c, err := Open(ctx, Config{
			DSN: cfg.dsnFor(i), MaxConns: cfg.PoolSize, LockMaxConns: cfg.LockPoolSize, Version: cfg.Version,
			Ranges: ranges, Recorder: rec,
			Clock: NewStepClock(time.Date(2022, 6, 21, 0, 0, 0, 0, time.UTC).Add(time.Duration(i)*time.Hour), time.Millisecond),
			UUIDs: NewSeededUUIDs(cfg.Seed + int64(i)),
		})
		if err != nil {
			for _, o := range clients[:i] {
				o.Close()
			}
			return nil, err
		}
		clients[i] = c
	}
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	start := time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := NewWorkload(c, ledger, WorkloadConfig{Seed: cfg.Seed + int64(i), Name: fmt.Sprintf("%s%d", cmp.Or(cfg.Prefix, "c"), i), SharedRepo: sharedID, Tolerant: cfg.Tolerant})
			err := w.Setup(ctx)
			if err == nil {
				err = w.Run(ctx, cfg.Steps)
			}
			mu.Lock()
			defer mu.Unlock()
			for k, v := range w.Stats() {
				res.Steps[k] += v
				res.Total += v
			}
			for _, f := range w.Failures() {
				res.Failures = append(res.Failures, fmt.Errorf("client %d: %w", i, f))
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("client %d: %w", i, err))
			}
		}()
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	return res, errors.Join(errs...)
}

// FormatStats renders per-operation counts sorted by name.
func FormatStats(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%d ", k, m[k])
	}
	return strings.TrimSpace(b.String())
}

// ScriptConfig configures RunScript: one deterministic client running a
// seeded workload sequentially, so that its outcome stream depends only on
// the seed and on what the database answers.
type ScriptConfig struct {
	Seed     int64
	Steps    int
	Version  Version
	PageSize int // 0 means 1000; small values make short scripts page
	// Global adds list-repositories and diagnostics (same answers only if
	// both databases hold nothing else).
	Global bool
}

// scriptStart is the first instant of a script's clock; the clock steps
// 250ms per reading, so commits land in different seconds.
var scriptStart = time.Date(2022, 6, 21, 12, 0, 0, 0, time.UTC)

// RunScript runs the seeded script against dsn (which must hold the schema
// and nothing the script would collide with) and returns every recorded
// outcome and the ledger of acknowledged writes.
func RunScript(ctx context.Context, dsn string, sc ScriptConfig) ([]Outcome, *Ledger, error) {
	rec := NewRecorder()
	c, err := Open(ctx, Config{
		DSN: dsn, MaxConns: 4, LockMaxConns: 2, Version: sc.Version, PageSize: sc.PageSize,
		Clock: NewStepClock(scriptStart, 250*time.Millisecond), UUIDs: NewSeededUUIDs(sc.Seed), Recorder: rec,
	})
	if err != nil {
		return nil, nil, err
	}
	defer c.Close()
	if _, err := c.Startup(ctx); err != nil {
		return rec.Outcomes(), nil, err
	}
	l := NewLedger()
	w := NewWorkload(c, l, WorkloadConfig{Seed: sc.Seed, Name: "s", Global: sc.Global})
	err = w.Run(ctx, sc.Steps)
	return rec.Outcomes(), l, err
}

// Differential runs the same script against two databases and compares the
// outcome streams (Compare). Use it with PostgreSQL as a and kvproxy as b.
func Differential(ctx context.Context, dsnA, dsnB string, sc ScriptConfig) error {
	a, _, errA := RunScript(ctx, dsnA, sc)
	if len(a) == 0 && errA != nil {
		return fmt.Errorf("run against a: %w", errA)
	}
	b, _, errB := RunScript(ctx, dsnB, sc)
	if len(b) == 0 && errB != nil {
		return fmt.Errorf("run against b: %w", errB)
	}
	if err := Compare(a, b); err != nil {
		return err
	}
	if (errA == nil) != (errB == nil) {
		return fmt.Errorf("script ended differently: %v vs %v", errA, errB)
	}
	return errA
}
