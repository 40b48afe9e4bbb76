package translate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/kvproxy/kvproxy/refstore"
)

// Result is what a ref-store statement produced: its rows (in Fields order)
// and the number of rows it affected, which together with the shape's
// command make the command tag.
type Result struct {
	Rows     [][]Value
	Affected int64
}

// Tag is the command tag PostgreSQL would answer the statement with.
func (r *Result) Tag(p *Plan) string {
	n := r.Affected
	if p.Fields != nil {
		n = int64(len(r.Rows))
	}
	return CommandTag(p.Command(), n)
}

// SlotValues resolves the plan's arguments: a $n takes the bound parameter
// params[n-1], a literal is read as the text input of its slot's type, as
// PostgreSQL coerces an untyped literal.
func (p *Plan) SlotValues(sess *Session, params []Value) ([]Value, error) {
	out := make([]Value, len(p.Args))
	for i, a := range p.Args {
		switch {
		case a.Param > 0:
			if a.Param > len(params) {
				return nil, newErr("08P01", nil, "statement %s uses $%d but %d parameters were bound", p.Shape, a.Param, len(params))
			}
			out[i] = params[a.Param-1]
		case a.Null:
			out[i] = NullValue(a.OID)
		default:
			v, err := DecodeValue(sess, a.OID, 0, []byte(a.Literal), 0)
			if err != nil {
				return nil, err
			}
			out[i] = v
		}
	}
	return out, nil
}

// Exec runs a RefStore plan (other than the advisory locks, which the
// session layer owns) against the ref store. Point reads and every write go
// through tx, so that they are validated and applied when tx commits;
// listings page through st outside the transaction, as lakeFS's iterators
// do. args are SlotValues.
func Exec(ctx context.Context, st *refstore.Store, tx *refstore.Txn, p *Plan, args []Value) (*Result, error) {
	if p.Kind != RefStore {
		return nil, fmt.Errorf("translate: Exec of a %s plan (%s)", p.Kind, p.Shape)
	}
	if len(args) != len(p.Args) {
		return nil, fmt.Errorf("translate: %s takes %d arguments, got %d", p.Shape, len(p.Args), len(args))
	}
	x := executor{ctx: ctx, st: st, tx: tx, p: p, a: args}
	res, err := x.run()
	if err != nil {
		return nil, sqlError(p, err)
	}
	return res, nil
}

type executor struct {
	ctx context.Context
	st  *refstore.Store
	tx  *refstore.Txn
	p   *Plan
	a   []Value
}

func (x *executor) str(i int) string   { return x.a[i].Str }
func (x *executor) null(i int) bool    { return x.a[i].Null }
func (x *executor) bytes(i int) []byte { return x.a[i].Bytes }

func (x *executor) optStr(i int) *string {
	if x.a[i].Null {
		return nil
	}
	s := x.a[i].Str
	return &s
}

// notNull reports a NULL in a NOT NULL column the way PostgreSQL does.
func (x *executor) notNull(cols ...int) error {
	for _, i := range cols {
		if x.a[i].Null {
			col := x.p.Shape.Slots()[i].Name
			return newErr("23502", nil, "null value in column %q of relation %q violates not-null constraint", col, x.p.Table)
		}
	}
	return nil
}

// limit reads a LIMIT slot: NULL means no limit, a negative one is an
// error, as in PostgreSQL. ok is false when the limit is 0 (no rows).
func (x *executor) limit(i int) (n int, ok bool, err error) {
	if x.a[i].Null {
		return 0, true, nil
	}
	v := x.a[i].Int
	if v < 0 {
		return 0, false, newErr("2201W", nil, "LIMIT must not be negative")
	}
	if v == 0 {
		return 0, false, nil
	}
	if v > math.MaxInt32 {
		v = math.MaxInt32
	}
	return int(v), true, nil
}

func (x *executor) run() (*Result, error) {
	p := x.p
	switch p.Shape {
	case R1:
		return x.point(1, func() ([]Value, error) {
			r, err := x.tx.GetRepository(x.ctx, x.str(0))
			return repoValues(r)[1:], err
		})
	case R2:
		if err := x.notNull(0, 1, 2, 3); err != nil {
			return nil, err
		}
		row := refstore.RepositoryRow{ID: x.str(0), StorageNamespace: x.str(1), CreationDate: x.a[2].Time, DefaultBranch: x.str(3)}
		if err := x.tx.CreateRepository(x.ctx, row); err != nil {
			return nil, dup(err, "graveler_repositories_pkey", "(id)=(%s)", row.ID)
		}
		return &Result{Affected: 1}, nil
	case R3a, R3b:
		n, ok, err := x.limit(1)
		if !ok || x.null(0) {
			return &Result{}, err
		}
		list, err := x.st.ListRepositories(x.ctx, x.str(0), p.Shape == R3b, n)
		return listed(list, err, repoValues)
	case R4Branches, R4Tags, R4Commits:
		if x.null(0) {
			return &Result{}, nil
		}
		del := map[Shape]func(context.Context, string) (int, error){
			R4Branches: x.tx.DeleteBranchesOfRepository,
			R4Tags:     x.tx.DeleteTagsOfRepository,
			R4Commits:  x.tx.DeleteCommitsOfRepository,
		}[p.Shape]
		n, err := del(x.ctx, x.str(0))
		if notFound(err) {
			return &Result{}, nil
		}
		return &Result{Affected: int64(n)}, err
	case R4Repository:
		if x.null(0) {
			return &Result{}, nil
		}
		return affected(x.tx.DeleteRepository(x.ctx, x.str(0)))
	case B1:
		return x.point(2, func() ([]Value, error) {
			b, err := x.tx.GetBranch(x.ctx, x.str(0), x.str(1))
			return []Value{optText(b.CommitID), optText(b.StagingToken)}, err
		})
	case B2, B3:
		if err := x.notNull(0, 1); err != nil {
			return nil, err
		}
		row := refstore.BranchRow{RepositoryID: x.str(0), ID: x.str(1), StagingToken: x.optStr(2), CommitID: x.optStr(3)}
		if p.Shape == B3 {
			return x.inserted(true, x.tx.SetBranch(x.ctx, row))
		}
		if err := x.tx.CreateBranch(x.ctx, row); err != nil {
			return nil, dup(err, "graveler_branches_pkey", "(repository_id, id)=(%s, %s)", row.RepositoryID, row.ID)
		}
		return &Result{Affected: 1}, nil
	case B4:
		if x.null(0) || x.null(1) {
			return &Result{}, nil
		}
		return affected(x.tx.DeleteBranch(x.ctx, x.str(0), x.str(1)))
	case B5a, B5b:
		n, ok, err := x.page()
		if !ok {
			return &Result{}, err
		}
		list, err := x.st.ListBranches(x.ctx, x.str(0), x.str(1), p.Shape == B5b, n)
		return listed(list, err, branchListValues)
	case B6a, B6b:
		// ORDER BY commit_id over the id-filtered set: every branch past the
		// offset must be read before the first row is known.
		n, ok, err := x.page()
		if !ok {
			return &Result{}, err
		}
		list, err := x.st.ListBranches(x.ctx, x.str(0), x.str(1), p.Shape == B6b, 0)
		if notFound(err) {
			return &Result{}, nil
		}
		if err != nil {
			return nil, err
		}
		slices.SortStableFunc(list, func(a, b refstore.BranchRow) int {
			// NULL sorts last in ascending order, as in PostgreSQL.
			switch {
			case a.CommitID == nil && b.CommitID == nil:
				return 0
			case a.CommitID == nil:
				return 1
			case b.CommitID == nil:
				return -1
			}
			return strings.Compare(*a.CommitID, *b.CommitID)
		})
		if n > 0 && len(list) > n {
			list = list[:n]
		}
		return listed(list, nil, branchListValues)
	case T1:
		return x.point(2, func() ([]Value, error) {
			t, err := x.tx.GetTag(x.ctx, x.str(0), x.str(1))
			return []Value{optText(t.CommitID)}, err
		})
	case T2:
		if err := x.notNull(0, 1); err != nil {
			return nil, err
		}
		return x.inserted(x.tx.CreateTag(x.ctx, refstore.TagRow{RepositoryID: x.str(0), ID: x.str(1), CommitID: x.optStr(2)}))
	case T3:
		if x.null(0) || x.null(1) {
			return &Result{}, nil
		}
		return affected(x.tx.DeleteTag(x.ctx, x.str(0), x.str(1)))
	case T4a, T4b:
		n, ok, err := x.page()
		if !ok {
			return &Result{}, err
		}
		list, err := x.st.ListTags(x.ctx, x.str(0), x.str(1), p.Shape == T4b, n)
		return listed(list, err, func(t refstore.TagRow) []Value { return []Value{TextValue(t.ID), optText(t.CommitID)} })
	case C1, C4:
		return x.point(2, func() ([]Value, error) {
			c, err := x.tx.GetCommit(x.ctx, x.str(0), x.str(1))
			if err != nil {
				return nil, err
			}
			v, err := commitValues(c)
			if p.Shape == C1 && err == nil {
				v = v[1:] // C1 does not select the id
			}
			return v, err
		})
	case C2:
		return x.commitsByPrefix()
	case C3:
		if err := x.notNull(0, 1, 2, 3, 4, 6, 8); err != nil {
			return nil, err
		}
		c := refstore.CommitRow{
			RepositoryID: x.str(0), ID: x.str(1), Committer: x.str(2), Message: x.str(3),
			CreationDate: x.a[4].Time, MetaRangeID: x.str(6), Version: int32(x.a[8].Int),
		}
		if !x.null(5) {
			c.Parents = x.a[5].Strs
			if c.Parents == nil {
				c.Parents = []string{}
			}
		}
		if !x.null(7) {
			c.Metadata = x.bytes(7)
		}
		if !x.null(9) {
			g := int32(x.a[9].Int)
			c.Generation = &g
		}
		return x.inserted(x.tx.AddCommit(x.ctx, c))
	case C5a, C5b, C6a, C6b:
		return x.listCommits()
	case C7:
		if x.null(0) {
			return &Result{}, nil
		}
		var n int64
		seen := map[string]bool{}
		for _, g := range p.Generations {
			if g.Generation < math.MinInt32 || g.Generation > math.MaxInt32 {
				return nil, newErr("22003", nil, "integer out of range")
			}
			if seen[g.ID] { // UPDATE ... FROM updates a row once
				continue
			}
			seen[g.ID] = true
			ok, err := x.tx.SetCommitGeneration(x.ctx, x.str(0), g.ID, int32(g.Generation))
			if notFound(err) {
				continue
			}
			if err != nil {
				return nil, err
			}
			if ok {
				n++
			}
		}
		return &Result{Affected: n}, nil
	case S1:
		return x.point(2, func() ([]Value, error) {
			r, err := x.tx.GetStaged(x.ctx, x.str(0), x.bytes(1))
			return []Value{optBytea(r.Identity), optBytea(r.Data)}, err
		})
	case S2, S3:
		if err := x.notNull(0, 1); err != nil {
			return nil, err
		}
		r := refstore.StagingRow{StagingToken: x.str(0), Key: x.bytes(1)}
		if !x.null(2) {
			r.Identity = nonNil(x.bytes(2))
		}
		if !x.null(3) {
			r.Data = nonNil(x.bytes(3))
		}
		if p.Shape == S3 {
			return &Result{Affected: 1}, x.tx.SetStaged(x.ctx, r)
		}
		return x.inserted(x.tx.SetStagedIfAbsent(x.ctx, r))
	case S4:
		if x.null(0) || x.null(1) {
			return &Result{}, nil
		}
		return affected(x.tx.DropStagedKey(x.ctx, x.str(0), x.bytes(1)))
	case S5:
		if x.null(0) {
			return &Result{}, nil
		}
		n, err := x.tx.DropStaging(x.ctx, x.str(0))
		return &Result{Affected: int64(n)}, err
	case S6a, S6b:
		return x.dropStagedRange()
	case S7:
		n, ok, err := x.page()
		if !ok {
			return &Result{}, err
		}
		list, err := x.st.ListStaged(x.ctx, x.str(0), x.bytes(1), n)
		return listed(list, err, func(r refstore.StagingRow) []Value {
			return []Value{ByteaValue(r.Key), optBytea(r.Identity), optBytea(r.Data)}
		})
	}
	return nil, fmt.Errorf("translate: no executor for shape %s", p.Shape)
}

// commitsByPrefix is C2: id LIKE $2 || '%' LIMIT n. A prefix without LIKE
// wildcards is a key-prefix scan; one with them (never sent by lakeFS, which
// sends hex) is matched as LIKE would over the whole repository.
func (x *executor) commitsByPrefix() (*Result, error) {
	n, ok, err := x.page()
	if !ok {
		return &Result{}, err
	}
	prefix := x.str(1)
	var list []refstore.CommitRow
	if !strings.ContainsAny(prefix, `%_\`) {
		list, err = x.st.FindCommitsByPrefix(x.ctx, x.str(0), prefix, n)
	} else {
		var all []refstore.CommitRow
		all, err = x.st.ListCommits(x.ctx, x.str(0), "", false, 0)
		for _, c := range all {
			if likeMatch(c.ID, prefix+"%") {
				list = append(list, c)
				if n > 0 && len(list) == n {
					break
				}
			}
		}
	}
	if notFound(err) {
		return &Result{}, nil
	}
	if err != nil {
		return nil, err
	}
	res := &Result{}
	for _, c := range list {
		v, err := commitValues(c)
		if err != nil {
			return nil, err
		}
		res.Rows = append(res.Rows, v)
	}
	return res, nil
}

// listCommits is C5 (ordered page) and C6 (GC ancestry leaves: commits that
// are nobody's first parent, first_parent() honouring version 0's reversed
// parents).
func (x *executor) listCommits() (*Result, error) {
	p := x.p
	n, ok, err := x.page()
	if !ok {
		return &Result{}, err
	}
	after := p.Shape == C5b || p.Shape == C6b
	leaves := p.Shape == C6a || p.Shape == C6b
	limit := n
	if leaves {
		limit = 0
	}
	var firstParents map[string]bool
	if leaves {
		all, err := x.st.ListCommits(x.ctx, x.str(0), "", false, 0)
		if err != nil && !notFound(err) {
			return nil, err
		}
		firstParents = make(map[string]bool, len(all))
		for _, c := range all {
			if fp, ok := firstParent(c); ok {
				firstParents[fp] = true
			}
		}
	}
	list, err := x.st.ListCommits(x.ctx, x.str(0), x.str(1), after, limit)
	if notFound(err) {
		return &Result{}, nil
	}
	if err != nil {
		return nil, err
	}
	res := &Result{}
	for _, c := range list {
		if leaves && firstParents[c.ID] {
			continue
		}
		v, err := commitValues(c)
		if err != nil {
			return nil, err
		}
		// C5/C6 select meta_range_id before parents.
		v[4], v[5] = v[5], v[4]
		res.Rows = append(res.Rows, v)
		if n > 0 && len(res.Rows) == n {
			break
		}
	}
	return res, nil
}

// firstParent is the SQL first_parent(parents, version).
func firstParent(c refstore.CommitRow) (string, bool) {
	if len(c.Parents) == 0 {
		return "", false
	}
	if c.Version < 1 {
		return c.Parents[len(c.Parents)-1], true
	}
	return c.Parents[0], true
}

// dropStagedRange is S6: key >= $2 [AND key < $3] within one token.
func (x *executor) dropStagedRange() (*Result, error) {
	if x.null(0) || x.null(1) || (x.p.Shape == S6a && x.null(2)) {
		return &Result{}, nil
	}
	token, from := x.str(0), x.bytes(1)
	var to []byte
	if x.p.Shape == S6a {
		to = x.bytes(2)
	}
	var n int64
	for {
		page, err := x.st.ListStaged(x.ctx, token, from, 1000)
		if err != nil {
			return nil, err
		}
		for _, r := range page {
			if to != nil && bytes.Compare(r.Key, to) >= 0 {
				return &Result{Affected: n}, nil
			}
			ok, err := x.tx.DropStagedKey(x.ctx, token, r.Key)
			if err != nil {
				return nil, err
			}
			if ok {
				n++
			}
		}
		if len(page) < 1000 {
			return &Result{Affected: n}, nil
		}
		from = append(bytes.Clone(page[len(page)-1].Key), 0) // next key after the last
	}
}

func rows(v []Value) *Result { return &Result{Rows: [][]Value{v}} }

// point is a single-row lookup keyed by the first keys slots: a NULL key
// matches nothing (= NULL is never true) and a missing row is no row.
func (x *executor) point(keys int, get func() ([]Value, error)) (*Result, error) {
	for i := range keys {
		if x.null(i) {
			return &Result{}, nil
		}
	}
	v, err := get()
	if notFound(err) {
		return &Result{}, nil
	}
	if err != nil {
		return nil, err
	}
	return rows(v), nil
}

// page reads the slots of a paged listing (key, from, limit): ok is false
// when its arguments select nothing (a NULL key or offset, LIMIT 0).
func (x *executor) page() (n int, ok bool, err error) {
	n, ok, err = x.limit(2)
	return n, ok && !x.null(0) && !x.null(1), err
}

// listed turns a listing into result rows; a repository that does not
// exist lists nothing.
func listed[T any](list []T, err error, conv func(T) []Value) (*Result, error) {
	if notFound(err) {
		return &Result{}, nil
	}
	if err != nil {
		return nil, err
	}
	res := &Result{Rows: make([][]Value, 0, len(list))}
	for _, e := range list {
		res.Rows = append(res.Rows, conv(e))
	}
	return res, nil
}

// inserted is the outcome of an insert. PostgreSQL has no foreign keys
// here and would store a branch, tag or commit of a repository that does
// not exist; the KV layout cannot (the partition is named by the
// repository's instance uid), so that is refused rather than dropped.
func (x *executor) inserted(ok bool, err error) (*Result, error) {
	if notFound(err) {
		return nil, newErr("0A000", err, "kvproxy cannot store a %s row for repository %q, which does not exist in the KV ref store", x.p.Table, x.str(0))
	}
	if err != nil {
		return nil, err
	}
	if ok {
		return &Result{Affected: 1}, nil
	}
	return &Result{}, nil
}

// affected is the outcome of a delete: a missing repository means no rows.
func affected(ok bool, err error) (*Result, error) {
	if err != nil {
		if notFound(err) {
			return &Result{}, nil
		}
		return nil, err
	}
	if ok {
		return &Result{Affected: 1}, nil
	}
	return &Result{}, nil
}

func notFound(err error) bool { return err != nil && errors.Is(err, refstore.ErrNotFound) }

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

func optText(s *string) Value {
	if s == nil {
		return NullValue(OIDText)
	}
	return TextValue(*s)
}

func optBytea(b []byte) Value {
	if b == nil {
		return NullValue(OIDBytea)
	}
	return ByteaValue(b)
}

func repoValues(r refstore.RepositoryRow) []Value {
	return []Value{TextValue(r.ID), TextValue(r.StorageNamespace), TimestamptzValue(r.CreationDate), TextValue(r.DefaultBranch)}
}

func branchListValues(b refstore.BranchRow) []Value {
	return []Value{TextValue(b.ID), optText(b.StagingToken), optText(b.CommitID)}
}

// commitValues is id, committer, message, creation_date, parents,
// meta_range_id, metadata, version, generation (C2/C4 order).
func commitValues(c refstore.CommitRow) ([]Value, error) {
	parents := NullValue(OIDTextArray)
	if c.Parents != nil {
		parents = TextArrayValue(c.Parents)
	}
	metadata := NullValue(OIDJSONB)
	if c.Metadata != nil {
		norm, err := NormalizeJSONB(c.Metadata)
		if err != nil {
			return nil, err
		}
		metadata = JSONBValue(norm)
	}
	gen := NullValue(OIDInt4)
	if c.Generation != nil {
		gen = Int4Value(*c.Generation)
	}
	return []Value{TextValue(c.ID), TextValue(c.Committer), TextValue(c.Message), TimestamptzValue(c.CreationDate),
		parents, TextValue(c.MetaRangeID), metadata, Int4Value(c.Version), gen}, nil
}

// dup turns refstore.ErrAlreadyExists into PostgreSQL's unique violation.
func dup(err error, constraint, keyFmt string, args ...any) error {
	if errors.Is(err, refstore.ErrAlreadyExists) {
		e := newErr("23505", err, "duplicate key value violates unique constraint %q", constraint)
		e.Detail = "Key " + fmt.Sprintf(keyFmt, args...) + " already exists."
		return e
	}
	return err
}

// sqlError maps refstore outcomes onto the SQLSTATEs the legacy client acts
// on; errors that already carry a SQLSTATE pass through.
func sqlError(p *Plan, err error) error {
	var te *Error
	switch {
	case errors.As(err, &te):
		return err
	case errors.Is(err, refstore.ErrConflict):
		return newErr("40001", err, "could not serialize access due to concurrent update")
	case errors.Is(err, refstore.ErrInvalidRow):
		return newErr("0A000", err, "kvproxy cannot store this %s row in the KV ref store: %v", p.Table, err)
	case errors.Is(err, context.Canceled):
		return newErr("57014", err, "canceling statement due to user request")
	}
	return newErr("XX000", err, "ref store: %v", err)
}

// likeMatch is SQL LIKE with the default escape character '\'.
func likeMatch(s, pattern string) bool {
	if pattern == "" {
		return s == ""
	}
	switch c := pattern[0]; c {
	case '%':
		for i := 0; i <= len(s); i++ {
			if likeMatch(s[i:], pattern[1:]) {
				return true
			}
		}
		return false
	case '_':
		if s == "" {
			return false
		}
		_, size := firstRune(s)
		return likeMatch(s[size:], pattern[1:])
	case '\\':
		if len(pattern) > 1 {
			pattern = pattern[1:]
		}
		fallthrough
	default:
		r, size := firstRune(pattern)
		sr, ssize := firstRune(s)
		if s == "" || r != sr {
			return false
		}
		return likeMatch(s[ssize:], pattern[size:])
	}
}

func firstRune(s string) (rune, int) { return utf8.DecodeRuneInString(s) }
