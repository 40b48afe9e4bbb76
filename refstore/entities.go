package refstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/kvproxy/kvproxy/refstore/graveler"
	"google.golang.org/protobuf/proto"
)

// Entity operations of a transaction. Each reads what the matching SQL
// statement would read and buffers what it would write; the outcome a SQL
// client sees (rows affected, 23505) is decided here, from the txn's view,
// and Commit turns a concurrent change of that view into ErrConflict.

// repoRecord returns the txn's view of a repository record, nil if absent.
func (t *Txn) repoRecord(ctx context.Context, id string) (*graveler.RepositoryData, error) {
	if err := checkID("repository id", id); err != nil {
		return nil, err
	}
	var rd graveler.RepositoryData
	ok, err := t.getMsg(ctx, []byte(GravelerPartition), RepoKey(id), &rd)
	if err != nil || !ok {
		return nil, err
	}
	return &rd, nil
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

// partition is the partition of an active repository.
func (t *Txn) partition(ctx context.Context, repoID string) ([]byte, error) {
	rd, err := t.RepositoryData(ctx, repoID)
	if err != nil {
		return nil, err
	}
	return RepoPartition(rd.GetId(), rd.GetInstanceUid()), nil
}

// GetRepository is R1.
func (t *Txn) GetRepository(ctx context.Context, id string) (RepositoryRow, error) {
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
	pk, err := t.partition(ctx, repoID)
	if err != nil {
		return nil, err
	}
	var bd graveler.BranchData
	ok, err := t.getMsg(ctx, pk, BranchKey(id), &bd)
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
	pk, err := t.partition(ctx, repoID)
	if err != nil {
		return TagRow{}, err
	}
	var td graveler.TagData
	ok, err := t.getMsg(ctx, pk, TagKey(id), &td)
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
	pk, err := t.partition(ctx, repoID)
	if err != nil {
		return nil, err
	}
	var cd graveler.CommitData
	ok, err := t.getMsg(ctx, pk, CommitKey(id), &cd)
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
	pk, err := t.partition(ctx, repoID)
	if err != nil {
		return nil, err
	}
	var rules graveler.BranchProtectionRules
	ok, err := t.getMsg(ctx, pk, []byte(ProtectedBranchesKey), &rules)
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
