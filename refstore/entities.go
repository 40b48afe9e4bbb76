package refstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/kvproxy/kvproxy/kv"
	"github.com/kvproxy/kvproxy/refstore/graveler"
	"google.golang.org/protobuf/proto"
)

// Entity operations of a transaction. Each reads what the matching SQL
// statement would read and buffers what it would write; the outcome a SQL
// client sees (rows affected, 23505) is decided here, from the txn's view,
// and Commit turns a concurrent change of that view into ErrConflict.

// repoRecord returns the txn's view of a repository record, nil if absent.
// A record read from the store here refreshes the Store's cache.
func (t *Txn) repoRecord(ctx context.Context, id string) (*graveler.RepositoryData, error) {
	if err := checkID("repository id", id); err != nil {
		return nil, err
	}
	t.useRepo(id)
	k := rkey{GravelerPartition, RepoKeyPrefix + id}
	_, seen := t.reads[k]
	_, written := t.writes[k]
	var rd graveler.RepositoryData
	ok, err := t.getMsg(ctx, []byte(GravelerPartition), RepoKey(id), &rd)
	if err != nil {
		return nil, err
	}
	if !seen && !written {
		t.s.repos.observe(id, t.reads[k].value, ok)
	}
	if !ok {
		return nil, nil
	}
	return &rd, nil
}

func (t *Txn) useRepo(id string) {
	if t.repoUses == nil {
		t.repoUses = map[string]int{}
	}
	t.repoUses[id]++
}

// cachedRepo makes the Store's cached record of repository id the txn's
// view of it, if the txn has no view yet and the cache has an entry. The
// view is then recorded as a read like any other, so Commit validates it.
func (t *Txn) cachedRepo(id string) {
	if t.s.repos == nil || id == "" {
		return
	}
	k := rkey{GravelerPartition, RepoKeyPrefix + id}
	if _, ok := t.reads[k]; ok {
		return
	}
	if _, ok := t.writes[k]; ok {
		return
	}
	raw, ok := t.s.repos.get(id)
	if !ok {
		return
	}
	t.reads[k] = readRec{value: raw, present: true}
	if t.cached == nil {
		t.cached = map[string]bool{}
	}
	t.cached[id] = true
}

// verifyRepo checks a cached view of repository id against the store. If
// the record changed (deleted, or recreated with a new instance uid), the
// txn's view becomes the current record provided the txn relied on the
// old one at most ownUses times (the caller's own use): otherwise what the
// txn already did under the old instance cannot be reconciled and the
// result is ErrConflict. changed tells the caller to redo its lookup.
func (t *Txn) verifyRepo(ctx context.Context, id string, ownUses int) (changed bool, err error) {
	if !t.cached[id] {
		return false, nil
	}
	delete(t.cached, id)
	k := rkey{GravelerPartition, RepoKeyPrefix + id}
	var cur readRec
	v, err := t.s.kv.Get(ctx, []byte(k.pk), []byte(k.key))
	switch {
	case errors.Is(err, kv.ErrNotFound):
	case err != nil:
		return false, fmt.Errorf("get %s/%s: %w", k.pk, k.key, err)
	default:
		cur = readRec{value: v.Value, present: true}
	}
	if old := t.reads[k]; cur.present == old.present && bytes.Equal(cur.value, old.value) {
		return false, nil
	}
	t.s.repos.observe(id, cur.value, cur.present)
	if _, written := t.writes[k]; written || t.repoUses[id] > ownUses {
		return false, conflictf("repository %q changed while the transaction used it", id)
	}
	t.reads[k] = cur
	t.repoUses[id] = 0
	return true, nil
}

// RepositoryData returns the repository record with its state and instance
// uid. ErrNotFound if absent, ErrRepositoryInDeletion if IN_DELETION.
func (t *Txn) RepositoryData(ctx context.Context, id string) (*graveler.RepositoryData, error) {
	rd, err := t.repoRecord(ctx, id)
	if err != nil {
		return nil, err
	}
	if rd == nil {
		return nil, fmt.Errorf("repository %q: %w", id, ErrNotFound)
	}
	if rd.GetState() == graveler.RepositoryState_IN_DELETION {
		return nil, fmt.Errorf("repository %q: %w", id, ErrRepositoryInDeletion)
	}
	return rd, nil
}

// partition is the partition of an active repository, from the cached
// record when there is one (see doc.go).
func (t *Txn) partition(ctx context.Context, repoID string) ([]byte, error) {
	t.cachedRepo(repoID)
	rd, err := t.RepositoryData(ctx, repoID)
	if err != nil {
		return nil, err
	}
	return RepoPartition(rd.GetId(), rd.GetInstanceUid()), nil
}

// getIn is a read of key in a repository's partition whose answer reaches
// the client. Found under a cached instance uid, the entity is a valid
// answer; absent, the absence counts only once the record is confirmed
// current, and a changed record means reading again under the new uid.
func (t *Txn) getIn(ctx context.Context, repoID string, key []byte, m proto.Message) (found bool, err error) {
	for {
		pk, err := t.partition(ctx, repoID)
		if err != nil {
			return false, err
		}
		ok, err := t.getMsg(ctx, pk, key, m)
		if err != nil || ok {
			return ok, err
		}
		changed, err := t.verifyRepo(ctx, repoID, 1)
		if err != nil || !changed {
			return false, err
		}
		delete(t.reads, rkey{string(pk), string(key)})
	}
}

// GetRepository is R1. A record the txn took from the cache is checked
// against the store first: a reader must not see a deleted repository.
func (t *Txn) GetRepository(ctx context.Context, id string) (RepositoryRow, error) {
	if _, err := t.verifyRepo(ctx, id, 0); err != nil {
		return RepositoryRow{}, err
	}
	rd, err := t.RepositoryData(ctx, id)
	if err != nil {
		return RepositoryRow{}, err
	}
	return RepositoryFromProto(rd), nil
}

// CreateRepository is R2: ErrAlreadyExists if the id is taken. A record
// left IN_DELETION by an unfinished delete is replaced: its old instance's
// partition is emptied at commit and the new record gets a new instance
// uid, so the name can be reused.
func (t *Txn) CreateRepository(ctx context.Context, r RepositoryRow) error {
	old, err := t.repoRecord(ctx, r.ID)
	if err != nil {
		return err
	}
	if old != nil && old.GetState() != graveler.RepositoryState_IN_DELETION {
		return fmt.Errorf("repository %q: %w", r.ID, ErrAlreadyExists)
	}
	uid := t.s.opts.NewInstanceUID()
	rd, err := RepositoryToProto(r, uid)
	if err != nil {
		return err
	}
	if old != nil {
		t.purges[string(RepoPartition(old.GetId(), old.GetInstanceUid()))] = true
	}
	t.fresh[string(RepoPartition(r.ID, uid))] = true
	return t.put([]byte(GravelerPartition), RepoKey(r.ID), rd, classRepo)
}

// DeleteRepository is the last statement of R4: it removes the record and,
// at commit, everything in the repository's partition (branches, commits,
// tags, settings). deleted is false when there was no record. A record
// left IN_DELETION counts as present, so a failed delete can be retried.
// Staging partitions are left alone, as in both eras of lakeFS.
func (t *Txn) DeleteRepository(ctx context.Context, id string) (deleted bool, err error) {
	rd, err := t.repoRecord(ctx, id)
	if err != nil || rd == nil {
		return false, err
	}
	t.purges[string(RepoPartition(rd.GetId(), rd.GetInstanceUid()))] = true
	t.del([]byte(GravelerPartition), RepoKey(id), classRepo)
	return true, nil
}

// GetBranch is B1.
func (t *Txn) GetBranch(ctx context.Context, repoID, id string) (BranchRow, error) {
	bd, err := t.BranchData(ctx, repoID, id)
	if err != nil {
		return BranchRow{}, err
	}
	return BranchFromProto(repoID, bd), nil
}

// BranchData returns the branch record, sealed tokens included.
func (t *Txn) BranchData(ctx context.Context, repoID, id string) (*graveler.BranchData, error) {
	if err := checkID("branch id", id); err != nil {
		return nil, err
	}
	var bd graveler.BranchData
	ok, err := t.getIn(ctx, repoID, BranchKey(id), &bd)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("branch %q/%q: %w", repoID, id, ErrNotFound)
	}
	return &bd, nil
}

// CreateBranch is B2: ErrAlreadyExists if the branch exists; ErrNotFound if
// the repository does not (KV has no partition to put it in).
func (t *Txn) CreateBranch(ctx context.Context, r BranchRow) error {
	bd, err := BranchToProto(r)
	if err != nil {
		return err
	}
	pk, err := t.partition(ctx, r.RepositoryID)
	if err != nil {
		return err
	}
	_, exists, err := t.get(ctx, pk, BranchKey(r.ID))
	if err != nil {
		return err
	}
	if exists {
		return fmt.Errorf("branch %q/%q: %w", r.RepositoryID, r.ID, ErrAlreadyExists)
	}
	return t.put(pk, BranchKey(r.ID), bd, classBranch)
}

// SetBranch is B3, the upsert: a blind write of the whole branch (no
// sealed tokens), conditional at commit only if the txn read the branch.
func (t *Txn) SetBranch(ctx context.Context, r BranchRow) error {
	bd, err := BranchToProto(r)
	if err != nil {
		return err
	}
	return t.PutBranchData(ctx, r.RepositoryID, bd)
}

// PutBranchData writes a branch record as is (KV-era writers keep their
// sealed tokens).
func (t *Txn) PutBranchData(ctx context.Context, repoID string, bd *graveler.BranchData) error {
	if err := checkID("branch id", bd.GetId()); err != nil {
		return err
	}
	pk, err := t.partition(ctx, repoID)
	if err != nil {
		return err
	}
	return t.put(pk, BranchKey(bd.GetId()), bd, classBranch)
}

// DeleteBranch is B4; deleted is false if there was no such branch (or
// repository).
func (t *Txn) DeleteBranch(ctx context.Context, repoID, id string) (deleted bool, err error) {
	return t.deleteIn(ctx, repoID, BranchKey(id), classBranch)
}

func (t *Txn) deleteIn(ctx context.Context, repoID string, key []byte, class writeClass) (bool, error) {
	pk, err := t.partition(ctx, repoID)
	if isNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	_, exists, err := t.get(ctx, pk, key)
	if err != nil || !exists {
		return false, err
	}
	t.del(pk, key, class)
	return true, nil
}

// deleteAllIn deletes every key under prefix in a repository's partition;
// the scan is recorded, so a concurrent insert there is a conflict.
func (t *Txn) deleteAllIn(ctx context.Context, repoID, prefix string, class writeClass) (int, error) {
	pk, err := t.partition(ctx, repoID)
	if isNotFound(err) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	es, err := t.scan(ctx, pk, []byte(prefix))
	if err != nil {
		return 0, err
	}
	for _, e := range es {
		t.del(pk, e.key, class)
	}
	return len(es), nil
}

// DeleteBranchesOfRepository is the first statement of R4.
func (t *Txn) DeleteBranchesOfRepository(ctx context.Context, repoID string) (int, error) {
	return t.deleteAllIn(ctx, repoID, BranchKeyPrefix, classBranch)
}

// DeleteTagsOfRepository is the second statement of R4.
func (t *Txn) DeleteTagsOfRepository(ctx context.Context, repoID string) (int, error) {
	return t.deleteAllIn(ctx, repoID, TagKeyPrefix, classTag)
}

// DeleteCommitsOfRepository is the third statement of R4.
func (t *Txn) DeleteCommitsOfRepository(ctx context.Context, repoID string) (int, error) {
	return t.deleteAllIn(ctx, repoID, CommitKeyPrefix, classCommit)
}

// GetTag is T1.
func (t *Txn) GetTag(ctx context.Context, repoID, id string) (TagRow, error) {
	if err := checkID("tag id", id); err != nil {
		return TagRow{}, err
	}
	var td graveler.TagData
	ok, err := t.getIn(ctx, repoID, TagKey(id), &td)
	if err != nil {
		return TagRow{}, err
	}
	if !ok {
		return TagRow{}, fmt.Errorf("tag %q/%q: %w", repoID, id, ErrNotFound)
	}
	return TagFromProto(repoID, &td), nil
}

// CreateTag is T2 (ON CONFLICT DO NOTHING): created is false if the tag
// exists.
func (t *Txn) CreateTag(ctx context.Context, r TagRow) (created bool, err error) {
	td, err := TagToProto(r)
	if err != nil {
		return false, err
	}
	pk, err := t.partition(ctx, r.RepositoryID)
	if err != nil {
		return false, err
	}
	_, exists, err := t.get(ctx, pk, TagKey(r.ID))
	if err != nil || exists {
		return false, err
	}
	return true, t.put(pk, TagKey(r.ID), td, classTag)
}

// DeleteTag is T3.
func (t *Txn) DeleteTag(ctx context.Context, repoID, id string) (deleted bool, err error) {
	return t.deleteIn(ctx, repoID, TagKey(id), classTag)
}

// GetCommit is C1.
func (t *Txn) GetCommit(ctx context.Context, repoID, id string) (CommitRow, error) {
	cd, err := t.CommitData(ctx, repoID, id)
	if err != nil {
		return CommitRow{}, err
	}
	return CommitFromProto(repoID, cd), nil
}

// CommitData returns the commit record.
func (t *Txn) CommitData(ctx context.Context, repoID, id string) (*graveler.CommitData, error) {
	if err := checkID("commit id", id); err != nil {
		return nil, err
	}
	var cd graveler.CommitData
	ok, err := t.getIn(ctx, repoID, CommitKey(id), &cd)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("commit %q/%q: %w", repoID, id, ErrNotFound)
	}
	return &cd, nil
}

// AddCommit is C3 (ON CONFLICT DO NOTHING): inserted is false if a commit
// with this id exists, which is then left as it is.
func (t *Txn) AddCommit(ctx context.Context, r CommitRow) (inserted bool, err error) {
	cd, err := CommitToProto(r)
	if err != nil {
		return false, err
	}
	pk, err := t.partition(ctx, r.RepositoryID)
	if err != nil {
		return false, err
	}
	_, exists, err := t.get(ctx, pk, CommitKey(r.ID))
	if err != nil || exists {
		return false, err
	}
	return true, t.put(pk, CommitKey(r.ID), cd, classCommit)
}

// SetCommitGeneration is one row of C7 (FillGenerations): updated is false
// if there is no such commit.
func (t *Txn) SetCommitGeneration(ctx context.Context, repoID, id string, generation int32) (updated bool, err error) {
	cd, err := t.CommitData(ctx, repoID, id)
	if isNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	cd.Generation = generation
	pk, err := t.partition(ctx, repoID)
	if err != nil {
		return false, err
	}
	return true, t.put(pk, CommitKey(id), cd, classCommit)
}

// GetStaged is S1: a tombstone is a row with Identity nil; ErrNotFound if
// there is no row.
func (t *Txn) GetStaged(ctx context.Context, token string, key []byte) (StagingRow, error) {
	if err := checkStagingKey(token, key); err != nil {
		return StagingRow{}, err
	}
	var sd graveler.StagedEntryData
	ok, err := t.getMsg(ctx, StagingPartition(token), key, &sd)
	if err != nil {
		return StagingRow{}, err
	}
	if !ok {
		return StagingRow{}, fmt.Errorf("staged %q/%q: %w", token, key, ErrNotFound)
	}
	return StagingFromProto(token, key, &sd), nil
}

func checkStagingKey(token string, key []byte) error {
	if token == "" {
		return fmt.Errorf("%w: empty staging token", ErrInvalidRow)
	}
	if len(key) == 0 {
		return fmt.Errorf("%w: staging %q: empty key", ErrInvalidRow, token)
	}
	return nil
}

// SetStaged is S3, the upsert (also how tombstones are written).
func (t *Txn) SetStaged(ctx context.Context, r StagingRow) error {
	sd, err := StagingToProto(r)
	if err != nil {
		return err
	}
	return t.put(StagingPartition(r.StagingToken), r.Key, sd, classStaging)
}

// SetStagedIfAbsent is S2 (ON CONFLICT DO NOTHING): inserted is false if a
// row (tombstones included) exists.
func (t *Txn) SetStagedIfAbsent(ctx context.Context, r StagingRow) (inserted bool, err error) {
	sd, err := StagingToProto(r)
	if err != nil {
		return false, err
	}
	_, exists, err := t.get(ctx, StagingPartition(r.StagingToken), r.Key)
	if err != nil || exists {
		return false, err
	}
	return true, t.put(StagingPartition(r.StagingToken), r.Key, sd, classStaging)
}

// DropStagedKey is S4.
func (t *Txn) DropStagedKey(ctx context.Context, token string, key []byte) (deleted bool, err error) {
	if err := checkStagingKey(token, key); err != nil {
		return false, err
	}
	_, exists, err := t.get(ctx, StagingPartition(token), key)
	if err != nil || !exists {
		return false, err
	}
	t.del(StagingPartition(token), key, classStaging)
	return true, nil
}

// DropStaging is S5: every row of the token.
func (t *Txn) DropStaging(ctx context.Context, token string) (int, error) {
	return t.DropStagedByPrefix(ctx, token, nil)
}

// DropStagedByPrefix is S6: every row of the token whose key starts with
// prefix (key >= prefix AND key < UpperBound(prefix) is the same set).
func (t *Txn) DropStagedByPrefix(ctx context.Context, token string, prefix []byte) (int, error) {
	if token == "" {
		return 0, fmt.Errorf("%w: empty staging token", ErrInvalidRow)
	}
	es, err := t.scan(ctx, StagingPartition(token), prefix)
	if err != nil {
		return 0, err
	}
	for _, e := range es {
		t.del(StagingPartition(token), e.key, classStaging)
	}
	return len(es), nil
}

// GetProtectionRules returns the raw BranchProtectionRules of a repository
// (nil if none); they are stored as lakeFS's settings manager stores them.
func (t *Txn) GetProtectionRules(ctx context.Context, repoID string) (*graveler.BranchProtectionRules, error) {
	var rules graveler.BranchProtectionRules
	ok, err := t.getIn(ctx, repoID, []byte(ProtectedBranchesKey), &rules)
	if err != nil || !ok {
		return nil, err
	}
	return &rules, nil
}

// SetProtectionRules writes a repository's branch protection rules.
func (t *Txn) SetProtectionRules(ctx context.Context, repoID string, rules *graveler.BranchProtectionRules) error {
	pk, err := t.partition(ctx, repoID)
	if err != nil {
		return err
	}
	return t.put(pk, []byte(ProtectedBranchesKey), rules, classTag)
}

func isNotFound(err error) bool { return err != nil && errors.Is(err, ErrNotFound) }

// decode unmarshals a stored value, naming the key on failure.
func decode(pk, key, v []byte, m proto.Message) error {
	if err := proto.Unmarshal(v, m); err != nil {
		return fmt.Errorf("%w: %s/%s: %v", ErrCorrupt, pk, bytes.Clone(key), err)
	}
	return nil
}
