package refstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/kvproxy/kvproxy/kv"
	"github.com/kvproxy/kvproxy/refstore/graveler"
)

// Single-operation conveniences: each runs one transaction. Reads do not
// commit (one read is consistent by itself); writes return ErrConflict on
// a lost race, except UpdateBranch, which retries.

// GetRepository returns an active repository (R1).
func (s *Store) GetRepository(ctx context.Context, id string) (RepositoryRow, error) {
	return s.Begin().GetRepository(ctx, id)
}

// GetRepositoryData returns an active repository's record, instance uid
// included.
func (s *Store) GetRepositoryData(ctx context.Context, id string) (*graveler.RepositoryData, error) {
	return s.Begin().RepositoryData(ctx, id)
}

// CreateRepository creates a repository as lakeFS's CreateRepository does
// (R2, B2, C3 in one transaction): commit and branch may be nil for a bare
// repository. ErrAlreadyExists if it exists.
func (s *Store) CreateRepository(ctx context.Context, repo RepositoryRow, branch *BranchRow, commit *CommitRow) error {
	return s.Update(ctx, func(t *Txn) error {
		if err := t.CreateRepository(ctx, repo); err != nil {
			return err
		}
		if commit != nil {
			if _, err := t.AddCommit(ctx, *commit); err != nil {
				return err
			}
		}
		if branch != nil {
			return t.CreateBranch(ctx, *branch)
		}
		return nil
	})
}

// DeleteRepository deletes a repository and everything in its partition
// (R4). It also completes a delete that failed half-way (IN_DELETION).
// ErrNotFound if there is no record at all.
func (s *Store) DeleteRepository(ctx context.Context, id string) error {
	return s.Update(ctx, func(t *Txn) error {
		ok, err := t.DeleteRepository(ctx, id)
		if err == nil && !ok {
			err = fmt.Errorf("repository %q: %w", id, ErrNotFound)
		}
		return err
	})
}

// ListRepositories returns up to limit (<= 0: all) active repositories in
// id order, from the id from (inclusive; after: exclusive) as R3 pages.
// Repositories IN_DELETION are skipped: for a SQL reader they are gone.
func (s *Store) ListRepositories(ctx context.Context, from string, after bool, limit int) ([]RepositoryRow, error) {
	var out []RepositoryRow
	err := s.scan(ctx, []byte(GravelerPartition), RepoKeyPrefix, from, after, func(k, v []byte) (bool, error) {
		var rd graveler.RepositoryData
		if err := decode([]byte(GravelerPartition), k, v, &rd); err != nil {
			return false, err
		}
		if rd.GetState() == graveler.RepositoryState_IN_DELETION {
			return true, nil
		}
		out = append(out, RepositoryFromProto(&rd))
		return limit <= 0 || len(out) < limit, nil
	})
	return out, err
}

// scan calls fn for each entry of pk under prefix from prefix+from
// (after: skipping an entry equal to it) until fn returns false.
func (s *Store) scan(ctx context.Context, pk []byte, prefix, from string, after bool, fn func(k, v []byte) (bool, error)) error {
	start := []byte(prefix + from)
	it, err := kv.ScanPrefix(ctx, s.kv, pk, []byte(prefix), start)
	if err != nil {
		return fmt.Errorf("scan %s/%s: %w", pk, prefix, err)
	}
	defer it.Close()
	for it.Next() {
		e := it.Entry()
		if after && bytes.Equal(e.Key, start) {
			continue
		}
		more, err := fn(e.Key, e.Value)
		if err != nil {
			return err
		}
		if !more {
			return nil
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("scan %s/%s: %w", pk, prefix, err)
	}
	return nil
}

// GetBranch returns a branch (B1).
func (s *Store) GetBranch(ctx context.Context, repoID, id string) (BranchRow, error) {
	return s.Begin().GetBranch(ctx, repoID, id)
}

// GetBranchData returns a branch record and the predicate (its exact
// bytes) for a compare-and-set of it.
func (s *Store) GetBranchData(ctx context.Context, repoID, id string) (*graveler.BranchData, kv.Predicate, error) {
	t := s.Begin()
	bd, err := t.BranchData(ctx, repoID, id)
	if err != nil {
		return nil, nil, err
	}
	rd, _ := t.RepositoryData(ctx, repoID)
	pred := t.reads[rkey{string(RepoPartition(repoID, rd.GetInstanceUid())), string(BranchKey(id))}].value
	return bd, kv.Predicate(pred), nil
}

// CreateBranch creates a branch (B2): ErrAlreadyExists if it exists.
func (s *Store) CreateBranch(ctx context.Context, r BranchRow) error {
	return s.Update(ctx, func(t *Txn) error { return t.CreateBranch(ctx, r) })
}

// SetBranch writes a branch unconditionally (B3).
func (s *Store) SetBranch(ctx context.Context, r BranchRow) error {
	return s.Update(ctx, func(t *Txn) error { return t.SetBranch(ctx, r) })
}

// DeleteBranch deletes a branch (B4): ErrNotFound if there is none.
func (s *Store) DeleteBranch(ctx context.Context, repoID, id string) error {
	return s.Update(ctx, func(t *Txn) error {
		ok, err := t.DeleteBranch(ctx, repoID, id)
		if err == nil && !ok {
			err = fmt.Errorf("branch %q/%q: %w", repoID, id, ErrNotFound)
		}
		return err
	})
}

// UpdateBranch is lakeFS's retried BranchUpdate: read the branch, call fn,
// compare-and-set the result; fn returning nil means "no change". A lost
// race re-runs fn on the new state, up to Options.BranchUpdateMaxTries
// times with exponential back-off, then ErrTooManyTries.
func (s *Store) UpdateBranch(ctx context.Context, repoID, id string, fn func(*graveler.BranchData) (*graveler.BranchData, error)) error {
	for try := 1; ; try++ {
		err := s.Update(ctx, func(t *Txn) error {
			bd, err := t.BranchData(ctx, repoID, id)
			if err != nil {
				return err
			}
			nb, err := fn(bd)
			if err != nil || nb == nil {
				return err
			}
			if nb.GetId() != id {
				return fmt.Errorf("%w: update of branch %q returned branch %q", ErrInvalidRow, id, nb.GetId())
			}
			return t.PutBranchData(ctx, repoID, nb)
		})
		if !errors.Is(err, ErrConflict) {
			return err
		}
		if try >= s.opts.BranchUpdateMaxTries {
			return fmt.Errorf("branch %q/%q after %d tries: %w (last: %v)", repoID, id, try, ErrTooManyTries, err)
		}
		if err := s.backoff(ctx, try); err != nil {
			return err
		}
	}
}

// ListBranches returns a repository's branches in id order (B5 pages).
func (s *Store) ListBranches(ctx context.Context, repoID, from string, after bool, limit int) ([]BranchRow, error) {
	return listRows(ctx, s, repoID, BranchKeyPrefix, from, after, limit, BranchFromProto)
}

// listIn scans a repository's partition, found from the cached record
// when there is one. Entries found under a cached instance uid are a valid
// answer, as for getIn; an empty result counts only once the record is
// confirmed current, and is redone under the new uid if it changed.
// listRows decodes the entries under prefix in a repository's partition
// into rows, up to limit (<= 0: all).
func listRows[R any, M any, PM interface {
	*M
	proto.Message
}](ctx context.Context, s *Store, repoID, prefix, from string, after bool, limit int, conv func(string, PM) R) ([]R, error) {
	var out []R
	err := s.listIn(ctx, repoID, prefix, from, after, func(pk, k, v []byte) (bool, error) {
		m := PM(new(M))
		if err := decode(pk, k, v, m); err != nil {
			return false, err
		}
		out = append(out, conv(repoID, m))
		return limit <= 0 || len(out) < limit, nil
	})
	return out, err
}

func (s *Store) listIn(ctx context.Context, repoID, prefix, from string, after bool, fn func(pk, k, v []byte) (bool, error)) error {
	t := s.Begin()
	for {
		pk, err := t.partition(ctx, repoID)
		if err != nil {
			return err
		}
		n := 0
		err = s.scan(ctx, pk, prefix, from, after, func(k, v []byte) (bool, error) {
			n++
			return fn(pk, k, v)
		})
		if err != nil || n > 0 {
			return err
		}
		changed, err := t.verifyRepo(ctx, repoID, 1)
		if err != nil || !changed {
			return err
		}
	}
}

// GetTag returns a tag (T1).
func (s *Store) GetTag(ctx context.Context, repoID, id string) (TagRow, error) {
	return s.Begin().GetTag(ctx, repoID, id)
}

// CreateTag creates a tag (T2): ErrAlreadyExists if it exists.
func (s *Store) CreateTag(ctx context.Context, r TagRow) error {
	return s.Update(ctx, func(t *Txn) error {
		ok, err := t.CreateTag(ctx, r)
		if err == nil && !ok {
			err = fmt.Errorf("tag %q/%q: %w", r.RepositoryID, r.ID, ErrAlreadyExists)
		}
		return err
	})
}

// DeleteTag deletes a tag (T3): ErrNotFound if there is none.
func (s *Store) DeleteTag(ctx context.Context, repoID, id string) error {
	return s.Update(ctx, func(t *Txn) error {
		ok, err := t.DeleteTag(ctx, repoID, id)
		if err == nil && !ok {
			err = fmt.Errorf("tag %q/%q: %w", repoID, id, ErrNotFound)
		}
		return err
	})
}

// ListTags returns a repository's tags in id order (T4 pages).
func (s *Store) ListTags(ctx context.Context, repoID, from string, after bool, limit int) ([]TagRow, error) {
	return listRows(ctx, s, repoID, TagKeyPrefix, from, after, limit, TagFromProto)
}

// GetCommit returns a commit (C1).
func (s *Store) GetCommit(ctx context.Context, repoID, id string) (CommitRow, error) {
	return s.Begin().GetCommit(ctx, repoID, id)
}

// AddCommit inserts a commit unless one with its id exists (C3).
func (s *Store) AddCommit(ctx context.Context, r CommitRow) (inserted bool, err error) {
	err = s.Update(ctx, func(t *Txn) error {
		inserted, err = t.AddCommit(ctx, r)
		return err
	})
	return inserted, err
}

// FindCommitsByPrefix returns up to limit commits whose id starts with
// prefix, in id order (C2 runs it with limit 2).
func (s *Store) FindCommitsByPrefix(ctx context.Context, repoID, prefix string, limit int) ([]CommitRow, error) {
	var out []CommitRow
	err := s.listIn(ctx, repoID, CommitKeyPrefix+prefix, "", false, func(pk, k, v []byte) (bool, error) {
		var cd graveler.CommitData
		if err := decode(pk, k, v, &cd); err != nil {
			return false, err
		}
		out = append(out, CommitFromProto(repoID, &cd))
		return limit <= 0 || len(out) < limit, nil
	})
	return out, err
}

// GetCommitByPrefix returns the one commit whose id starts with prefix:
// ErrNotFound if none, ErrAmbiguous (which also matches ErrNotFound) if
// more than one.
func (s *Store) GetCommitByPrefix(ctx context.Context, repoID, prefix string) (CommitRow, error) {
	cs, err := s.FindCommitsByPrefix(ctx, repoID, prefix, 2)
	switch {
	case err != nil:
		return CommitRow{}, err
	case len(cs) == 0:
		return CommitRow{}, fmt.Errorf("commit prefix %q/%q: %w", repoID, prefix, ErrNotFound)
	case len(cs) > 1:
		return CommitRow{}, fmt.Errorf("commit prefix %q/%q: %w", repoID, prefix, ErrAmbiguous)
	}
	return cs[0], nil
}

// ListCommits returns a repository's commits in id order (C5 pages).
func (s *Store) ListCommits(ctx context.Context, repoID, from string, after bool, limit int) ([]CommitRow, error) {
	return listRows(ctx, s, repoID, CommitKeyPrefix, from, after, limit, CommitFromProto)
}

// GetStaged returns a staged row (S1); a tombstone has Identity nil.
func (s *Store) GetStaged(ctx context.Context, token string, key []byte) (StagingRow, error) {
	return s.Begin().GetStaged(ctx, token, key)
}

// SetStaged writes a staged row unconditionally (S3).
func (s *Store) SetStaged(ctx context.Context, r StagingRow) error {
	return s.Update(ctx, func(t *Txn) error { return t.SetStaged(ctx, r) })
}

// SetStagedIfAbsent writes a staged row unless its key exists (S2).
func (s *Store) SetStagedIfAbsent(ctx context.Context, r StagingRow) (inserted bool, err error) {
	err = s.Update(ctx, func(t *Txn) error {
		inserted, err = t.SetStagedIfAbsent(ctx, r)
		return err
	})
	return inserted, err
}

// DropStagedKey deletes one staged row (S4).
func (s *Store) DropStagedKey(ctx context.Context, token string, key []byte) (deleted bool, err error) {
	err = s.Update(ctx, func(t *Txn) error {
		deleted, err = t.DropStagedKey(ctx, token, key)
		return err
	})
	return deleted, err
}

// DropStaging deletes every row of a token (S5).
func (s *Store) DropStaging(ctx context.Context, token string) (n int, err error) {
	return s.DropStagedByPrefix(ctx, token, nil)
}

// DropStagedByPrefix deletes the rows of a token under a key prefix (S6).
func (s *Store) DropStagedByPrefix(ctx context.Context, token string, prefix []byte) (n int, err error) {
	err = s.Update(ctx, func(t *Txn) error {
		n, err = t.DropStagedByPrefix(ctx, token, prefix)
		return err
	})
	return n, err
}

// ListStaged returns up to limit (<= 0: all) rows of a token with key >=
// from, in key order (S7 pages), tombstones included.
func (s *Store) ListStaged(ctx context.Context, token string, from []byte, limit int) ([]StagingRow, error) {
	if token == "" {
		return nil, fmt.Errorf("%w: empty staging token", ErrInvalidRow)
	}
	var out []StagingRow
	pk := StagingPartition(token)
	err := s.scan(ctx, pk, "", string(from), false, func(k, v []byte) (bool, error) {
		var sd graveler.StagedEntryData
		if err := decode(pk, k, v, &sd); err != nil {
			return false, err
		}
		out = append(out, StagingFromProto(token, k, &sd))
		return limit <= 0 || len(out) < limit, nil
	})
	return out, err
}
