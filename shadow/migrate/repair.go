package migrate

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/kvproxy/kvproxy/kv"
	"github.com/kvproxy/kvproxy/refstore/graveler"
	"github.com/kvproxy/kvproxy/shadow/dirty"
)

// ErrRepairRaced is returned when a key kept changing under a repair.
var ErrRepairRaced = errors.New("migrate: key kept changing during repair")

// unwritten marks an error of a repair that had not written anything yet
// (dirty.ErrNothingWritten): the dirty-key repairer then keeps the key's
// entries instead of logging it afresh.
func unwritten(err error) error { return fmt.Errorf("%w (%w)", err, dirty.ErrNothingWritten) }

const repairTries = 5

// repair makes k in the non-authoritative store equal to the
// authoritative one and re-checks it. uid is the partition the difference
// was found in ("" to look it up).
func (v *Verifier) repair(ctx context.Context, k Key, uid string) error {
	if v.o.Direction == KVToSQL {
		return v.repairToSQL(ctx, k, uid)
	}
	return v.repairToKV(ctx, k, uid)
}

// repairToKV copies k from PostgreSQL (read fresh, outside the verify
// snapshot) into KV with a compare-and-set against the value it replaces,
// then re-reads PostgreSQL: a dual write that changed the row meanwhile
// wrote KV after PostgreSQL, so either our CaS failed or the re-read sees
// the new row, and the loop copies again.
func (v *Verifier) repairToKV(ctx context.Context, k Key, uid string) error {
	wrote := false
	// before marks an error that came before the first write.
	before := func(err error) error {
		if wrote {
			return err
		}
		return unwritten(err)
	}
	for range repairTries {
		row, ok, err := readRow(ctx, v.o.Source, k)
		if err != nil {
			return before(err)
		}
		if k.inRepoPartition() && uid == "" {
			rd, _, err := repoRecord(ctx, v.o.KV, k.Repository)
			if err != nil {
				return before(err)
			}
			if rd == nil || rd.GetState() != graveler.RepositoryState_ACTIVE {
				if !ok {
					return nil
				}
				return before(fmt.Errorf("%s: repository %q has no active record in KV; repair the repository first", k, k.Repository))
			}
			uid = rd.GetInstanceUid()
		}
		pk, key := k.location(uid)
		cur, err := v.o.KV.Get(ctx, pk, key)
		if errors.Is(err, kv.ErrNotFound) {
			cur, err = nil, nil
		}
		if err != nil {
			return before(fmt.Errorf("read %s: %w", k, err))
		}
		switch {
		case !ok && cur == nil:
		case !ok:
			wrote = true
			if _, err := deleteIf(ctx, v.o.KV, pk, key, cur.Value); err != nil {
				return fmt.Errorf("delete %s: %w", k, err)
			}
		default:
			ruid := uid
			if k.Entity == EntityRepositories {
				ruid = newUID()
				if cur != nil {
					if kr, err := decode(k, key, cur.Value); err == nil && kr.InstanceUID != "" {
						// Keep the instance uid: the repository's rows live
						// under it.
						ruid = kr.InstanceUID
					}
				}
			}
			val, err := encode(row, ruid)
			if err != nil {
				return before(fmt.Errorf("%s: %w", k, err))
			}
			var pred kv.Predicate
			if cur != nil {
				pred = cur.Predicate
			}
			wrote = true
			err = v.o.KV.SetIf(ctx, pk, key, val, pred)
			if errors.Is(err, kv.ErrPredicateFailed) {
				continue
			}
			if err != nil {
				return fmt.Errorf("write %s: %w", k, err)
			}
		}
		again, ok2, err := readRow(ctx, v.o.Source, k)
		if err != nil {
			return err
		}
		if ok2 != ok {
			continue
		}
		if ok {
			a, _ := encode(row, "x")
			b, _ := encode(again, "x")
			if !bytes.Equal(a, b) {
				continue
			}
		}
		// Re-check through the same comparison verify uses.
		res, _, _, err := v.compareKey(ctx, v.o.Source, k)
		if err != nil {
			return err
		}
		if res == ResultMatch {
			if v.o.Metrics != nil {
				v.o.Metrics.DirtyKeysRepaired.Inc()
			}
			return nil
		}
	}
	return fmt.Errorf("%s: %w", k, ErrRepairRaced)
}

// repairToSQL copies k from KV into PostgreSQL (kv-primary, where KV is
// authoritative): an upsert of the row, or its delete.
func (v *Verifier) repairToSQL(ctx context.Context, k Key, uid string) error {
	kr, ok, _, err := v.kvRow(ctx, k)
	if err != nil {
		return unwritten(err)
	}
	if !ok {
		var q string
		var args []any
		switch k.Entity {
		case EntityRepositories:
			q, args = `DELETE FROM graveler_repositories WHERE id = $1`, []any{k.ID}
		case EntityCommits:
			q, args = `DELETE FROM graveler_commits WHERE repository_id = $1 AND id = $2`, []any{k.Repository, k.ID}
		case EntityBranches:
			q, args = `DELETE FROM graveler_branches WHERE repository_id = $1 AND id = $2`, []any{k.Repository, k.ID}
		case EntityTags:
			q, args = `DELETE FROM graveler_tags WHERE repository_id = $1 AND id = $2`, []any{k.Repository, k.ID}
		case EntityStaging:
			q, args = `DELETE FROM graveler_staging_kv WHERE staging_token = $1 AND key = $2`, []any{k.ID, k.StagingKey}
		}
		if _, err := v.o.Source.Exec(ctx, q, args...); err != nil {
			return fmt.Errorf("delete %s in PostgreSQL: %w", k, err)
		}
	} else {
		var q string
		var args []any
		switch k.Entity {
		case EntityRepositories:
			r := kr.Repo
			q = `INSERT INTO graveler_repositories (id, storage_namespace, creation_date, default_branch) VALUES ($1, $2, $3, $4)
				ON CONFLICT (id) DO UPDATE SET storage_namespace = $2, creation_date = $3, default_branch = $4`
			args = []any{r.ID, r.StorageNamespace, r.CreationDate, r.DefaultBranch}
		case EntityCommits:
			c := kr.Commit
			q = `INSERT INTO graveler_commits (repository_id, id, committer, message, creation_date, meta_range_id, metadata, parents, version, generation)
				VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9, $10)
				ON CONFLICT (repository_id, id) DO UPDATE SET committer = $3, message = $4, creation_date = $5, meta_range_id = $6,
				metadata = $7::jsonb, parents = $8, version = $9, generation = $10`
			args = []any{c.RepositoryID, c.ID, c.Committer, c.Message, c.CreationDate, c.MetaRangeID, string(c.Metadata), c.Parents, c.Version, c.Generation}
		case EntityBranches:
			b := kr.Branch
			q = `INSERT INTO graveler_branches (repository_id, id, staging_token, commit_id) VALUES ($1, $2, $3, $4)
				ON CONFLICT (repository_id, id) DO UPDATE SET staging_token = $3, commit_id = $4`
			args = []any{b.RepositoryID, b.ID, b.StagingToken, b.CommitID}
		case EntityTags:
			t := kr.Tag
			q = `INSERT INTO graveler_tags (repository_id, id, commit_id) VALUES ($1, $2, $3)
				ON CONFLICT (repository_id, id) DO UPDATE SET commit_id = $3`
			args = []any{t.RepositoryID, t.ID, t.CommitID}
		case EntityStaging:
			s := kr.Staged
			q = `INSERT INTO graveler_staging_kv (staging_token, key, identity, data) VALUES ($1, $2, $3, $4)
				ON CONFLICT (staging_token, key) DO UPDATE SET identity = $3, data = $4`
			args = []any{s.StagingToken, s.Key, s.Identity, s.Data}
		}
		if _, err := v.o.Source.Exec(ctx, q, args...); err != nil {
			return fmt.Errorf("write %s in PostgreSQL: %w", k, err)
		}
	}
	res, _, _, err := v.compareKey(ctx, v.o.Source, k)
	if err != nil {
		return err
	}
	if res != ResultMatch {
		return fmt.Errorf("%s: still %s after repair: %w", k, res, ErrRepairRaced)
	}
	return nil
}
