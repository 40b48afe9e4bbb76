package legacy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v4"
)

// Ledger records what clients were told succeeded: every acknowledged
// write that no later acknowledged write of the same client overwrote.
// Clients own disjoint entities (their private repositories, and their own
// branch in a shared repository), so the final state of each entity is
// exactly the last acknowledged write to it, and Verify can check it
// exactly. An entity touched by an operation whose outcome is unknown
// (an unexpected error, e.g. a dropped connection) is marked uncertain and
// skipped by Verify.
type Ledger struct {
	mu       sync.Mutex
	repos    map[string]*ledgerRepo
	problems []string
}

type ledgerRepo struct {
	ns, defaultBranch string
	deleted           bool
	uncertain         bool
	bare              bool
	branches          map[string]*ledgerBranch // nil entry = deleted
	tags              map[string]string        // "" = deleted
	commits           map[string]bool
	// history keeps each branch's last acknowledged or uncertain head
	// changes, so that a failed Verify can say how the branch got there.
	history map[string][]string
}

// historyLen bounds a branch's history.
const historyLen = 12

type ledgerBranch struct {
	commit    string
	uncertain bool
	// staged: key -> expected staged state under the branch's current token.
	staged map[string]stagedFact
	// owned: true when only this ledger's writer touches the branch (always,
	// by construction of the workload); false to skip staging checks.
	owned bool
}

type stagedKind int

const (
	stagedValue  stagedKind = iota // row with this identity and data
	stagedAbsent                   // no row, or a tombstone
	stagedGone                     // no row at all (dropped)
)

type stagedFact struct {
	kind  stagedKind
	value Value
}

// NewLedger returns an empty ledger.
func NewLedger() *Ledger { return &Ledger{repos: map[string]*ledgerRepo{}} }

func (l *Ledger) repo(id string) *ledgerRepo {
	r := l.repos[id]
	if r == nil {
		r = &ledgerRepo{branches: map[string]*ledgerBranch{}, tags: map[string]string{}, commits: map[string]bool{}, history: map[string][]string{}}
		l.repos[id] = r
	}
	return r
}

// note appends an event to a branch's history.
func (r *ledgerRepo) note(branch, format string, args ...any) {
	h := append(r.history[branch], time.Now().UTC().Format("15:04:05.000 ")+fmt.Sprintf(format, args...))
	if len(h) > historyLen {
		h = h[len(h)-historyLen:]
	}
	r.history[branch] = h
}

// RepoCreated records a created repository with its default branch and first commit.
func (l *Ledger) RepoCreated(repo, ns, defaultBranch, firstCommit string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.repo(repo)
	r.ns, r.defaultBranch = ns, defaultBranch
	if defaultBranch != "" {
		r.branches[defaultBranch] = &ledgerBranch{commit: firstCommit, staged: map[string]stagedFact{}, owned: true}
		r.commits[firstCommit] = true
		r.note(defaultBranch, "head %s acknowledged (repository created)", firstCommit)
	} else {
		r.bare = true
	}
}

// RepoBare records a bare repository (refs-restore target).
func (l *Ledger) RepoBare(repo, ns, defaultBranch string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.repo(repo)
	r.ns, r.defaultBranch, r.bare = ns, defaultBranch, true
}

// RepoDeleted records a deleted repository.
func (l *Ledger) RepoDeleted(repo string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.repo(repo)
	r.deleted = true
	r.branches, r.tags, r.commits = map[string]*ledgerBranch{}, map[string]string{}, map[string]bool{}
}

// RepoUncertain excludes a repository from verification.
func (l *Ledger) RepoUncertain(repo string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.repo(repo).uncertain = true
}

// BranchSet records a branch pointing at commit; keepStaged false means its
// staging area was replaced or cleared (new branch, commit, restore).
func (l *Ledger) BranchSet(repo, branch, commit string, keepStaged bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.repo(repo)
	b := r.branches[branch]
	if b == nil || !keepStaged {
		b = &ledgerBranch{staged: map[string]stagedFact{}, owned: true}
		r.branches[branch] = b
	}
	b.commit = commit
	r.commits[commit] = true
	r.note(branch, "head %s acknowledged (keep staged %v)", commit, keepStaged)
}

// BranchDeleted records a deleted branch.
func (l *Ledger) BranchDeleted(repo, branch string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.repo(repo)
	r.branches[branch] = nil
	r.note(branch, "deleted")
}

// BranchUncertain excludes a branch from verification, until its next
// acknowledged head; why is the error that made its outcome unknown.
func (l *Ledger) BranchUncertain(repo, branch string, why error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.repo(repo)
	r.note(branch, "uncertain: %v", why)
	if b := r.branches[branch]; b != nil {
		b.uncertain = true
	} else {
		r.branches[branch] = &ledgerBranch{uncertain: true, staged: map[string]stagedFact{}}
	}
}

// CommitAdded records an acknowledged commit record.
func (l *Ledger) CommitAdded(repo, id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.repo(repo).commits[id] = true
}

// TagSet records a tag; TagDeleted its deletion.
func (l *Ledger) TagSet(repo, tag, commit string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.repo(repo).tags[tag] = commit
}

// TagDeleted records a deleted tag.
func (l *Ledger) TagDeleted(repo, tag string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.repo(repo).tags[tag] = ""
}

func (l *Ledger) branch(repo, branch string) *ledgerBranch {
	r := l.repo(repo)
	b := r.branches[branch]
	if b == nil {
		b = &ledgerBranch{staged: map[string]stagedFact{}, owned: true}
		r.branches[branch] = b
	}
	return b
}

// Staged records an acknowledged Set.
func (l *Ledger) Staged(repo, branch string, key []byte, v Value) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.branch(repo, branch).staged[string(key)] = stagedFact{kind: stagedValue, value: v}
}

// Deleted records an acknowledged object Delete: no row or a tombstone.
func (l *Ledger) Deleted(repo, branch string, key []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.branch(repo, branch).staged[string(key)] = stagedFact{kind: stagedAbsent}
}

// ResetKeys records ResetKey/ResetPrefix: matching staged rows are gone.
func (l *Ledger) ResetKeys(repo, branch string, prefix []byte, exact bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.branch(repo, branch)
	for k := range b.staged {
		if (exact && k == string(prefix)) || (!exact && strings.HasPrefix(k, string(prefix))) {
			b.staged[k] = stagedFact{kind: stagedGone}
		}
	}
	if exact {
		b.staged[string(prefix)] = stagedFact{kind: stagedGone}
	}
}

// ResetAll records Reset: the staging area is empty.
func (l *Ledger) ResetAll(repo, branch string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.branch(repo, branch).staged = map[string]stagedFact{}
}

// Problem records a client-side anomaly (an unexpected outcome) to report
// with Verify.
func (l *Ledger) Problem(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.problems = append(l.problems, fmt.Sprintf(format, args...))
}

// Counts summarises the ledger: live repositories, branches, tags,
// commits and staged facts.
func (l *Ledger) Counts() (repos, branches, tags, commits, staged int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range l.repos {
		if r.deleted {
			continue
		}
		repos++
		for _, b := range r.branches {
			if b != nil {
				branches++
				staged += len(b.staged)
			}
		}
		for _, t := range r.tags {
			if t != "" {
				tags++
			}
		}
		commits += len(r.commits)
	}
	return
}

// ErrVerify is returned by Verify when the database lacks an acknowledged write.
var ErrVerify = errors.New("ledger verification failed")

// Verify reads the ref store at dsn (pgx/v4, one connection, no simulator
// code path) with the legacy client's own statements, so that it checks
// PostgreSQL and kvproxy alike, and checks every fact of the ledger:
// repositories and their fields, branch heads, tags, commit records,
// staged rows under each branch's current token (and no unacknowledged
// rows there), and that deleted repositories left no branch, tag or commit
// rows. It returns nil or an error wrapping ErrVerify listing up to 50
// problems.
func (l *Ledger) Verify(ctx context.Context, dsn string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return fmt.Errorf("verify: connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	l.mu.Lock()
	defer l.mu.Unlock()
	var probs []string
	probs = append(probs, l.problems...)
	add := func(format string, args ...any) { probs = append(probs, fmt.Sprintf(format, args...)) }
	ids := make([]string, 0, len(l.repos))
	for id := range l.repos {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		r := l.repos[id]
		if r.uncertain {
			continue
		}
		if err := verifyRepo(ctx, conn, id, r, add); err != nil {
			return fmt.Errorf("verify %s: %w", id, err)
		}
	}
	if len(probs) == 0 {
		return nil
	}
	n := len(probs)
	if len(probs) > 50 {
		probs = probs[:50]
	}
	return fmt.Errorf("%w: %d problems:\n  %s", ErrVerify, n, strings.Join(probs, "\n  "))
}

// rowCount runs one of the legacy client's statements and counts its rows.
func rowCount(ctx context.Context, conn *pgx.Conn, sql string, args ...any) (int64, error) {
	rows, err := conn.Query(ctx, sql, args...)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	var n int64
	for rows.Next() {
		n++
	}
	return n, rows.Err()
}

func verifyRepo(ctx context.Context, conn *pgx.Conn, id string, r *ledgerRepo, add func(string, ...any)) error {
	if r.deleted {
		for _, q := range []struct{ table, sql string }{
			{"graveler_branches", SQLB5First},
			{"graveler_tags", SQLT4First},
			{"graveler_commits", C5SQL(true, 1)},
		} {
			args := []any{id, "", 1}
			if q.table == "graveler_commits" {
				args = args[:2]
			}
			n, err := rowCount(ctx, conn, q.sql, args...)
			if err != nil {
				return err
			}
			if n != 0 {
				add("%s: deleted repository still has rows in %s", id, q.table)
			}
		}
		n, err := rowCount(ctx, conn, SQLR1, id)
		if err != nil {
			return err
		}
		if n != 0 {
			add("%s: deleted repository still present", id)
		}
		return nil
	}
	var ns, def string
	var created time.Time
	err := conn.QueryRow(ctx, SQLR1, id).Scan(&ns, &created, &def)
	if errors.Is(err, pgx.ErrNoRows) {
		add("%s: acknowledged repository missing", id)
		return nil
	}
	if err != nil {
		return err
	}
	if ns != r.ns || def != r.defaultBranch {
		add("%s: repository is (%q, %q), acknowledged (%q, %q)", id, ns, def, r.ns, r.defaultBranch)
	}
	for c := range r.commits {
		n, err := rowCount(ctx, conn, SQLC1, id, c)
		if err != nil {
			return err
		}
		if n != 1 {
			add("%s: acknowledged commit %s missing", id, c)
		}
	}
	for t, c := range r.tags {
		var got string
		err := conn.QueryRow(ctx, SQLT1, id, t).Scan(&got)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			if c != "" {
				add("%s: acknowledged tag %s missing", id, t)
			}
		case err != nil:
			return err
		case c == "":
			add("%s: deleted tag %s present", id, t)
		case got != c:
			add("%s: tag %s -> %s, acknowledged %s", id, t, got, c)
		}
	}
	for bid, b := range r.branches {
		if err := verifyBranch(ctx, conn, id, r, bid, b, add); err != nil {
			return err
		}
	}
	return nil
}

func verifyBranch(ctx context.Context, conn *pgx.Conn, repo string, r *ledgerRepo, id string, b *ledgerBranch, add func(string, ...any)) error {
	if b != nil && b.uncertain {
		return nil
	}
	var commit, token *string
	err := conn.QueryRow(ctx, SQLB1, repo, id).Scan(&commit, &token)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		if b != nil {
			add("%s/%s: acknowledged branch missing", repo, id)
		}
		return nil
	case err != nil:
		return err
	case b == nil:
		add("%s/%s: deleted branch present", repo, id)
		return nil
	}
	if commit == nil || *commit != b.commit {
		known := "not an acknowledged commit"
		if commit != nil && r.commits[*commit] {
			known = "an acknowledged commit"
		}
		add("%s/%s: head %v (%s), acknowledged %s; history:\n    %s", repo, id, deref(commit), known, b.commit, strings.Join(r.history[id], "\n    "))
	}
	if token == nil {
		add("%s/%s: NULL staging token", repo, id)
		return nil
	}
	type row struct{ identity, data []byte }
	got := map[string]row{}
	// S7 pages, restarting inclusively at the look-ahead row as lakeFS does.
	from := []byte{}
	for {
		rows, err := conn.Query(ctx, SQLS7, *token, from, DefaultPageSize+1)
		if err != nil {
			return err
		}
		n := 0
		var last []byte
		for rows.Next() {
			var k, ident, data []byte
			if err := rows.Scan(&k, &ident, &data); err != nil {
				rows.Close()
				return err
			}
			n++
			if n > DefaultPageSize {
				last = k
				break
			}
			got[string(k)] = row{ident, data}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if last == nil {
			break
		}
		from = last
	}
	if !b.owned {
		return nil
	}
	for k, f := range b.staged {
		g, ok := got[k]
		switch f.kind {
		case stagedValue:
			if !ok || g.identity == nil {
				add("%s/%s: staged key %q missing", repo, id, k)
			} else if !bytes.Equal(g.identity, f.value.Identity) || !bytes.Equal(g.data, f.value.Data) {
				add("%s/%s: staged key %q has another value", repo, id, k)
			}
		case stagedAbsent:
			if ok && g.identity != nil {
				add("%s/%s: deleted key %q still staged with a value", repo, id, k)
			}
		case stagedGone:
			if ok {
				add("%s/%s: reset key %q still has a staged row", repo, id, k)
			}
		}
	}
	for k := range got {
		if _, ok := b.staged[k]; !ok {
			add("%s/%s: unacknowledged staged row %q", repo, id, k)
		}
	}
	return nil
}

func deref(s *string) string {
	if s == nil {
		return "NULL"
	}
	return *s
}
