package translate

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// outsideQuotes applies f to the parts of sql outside '...' and "..." so
// variants never change a literal.
func outsideQuotes(sql string, f func(string) string) string {
	var b strings.Builder
	start := 0
	for i := 0; i < len(sql); i++ {
		if q := sql[i]; q == '\'' || q == '"' {
			b.WriteString(f(sql[start:i]))
			j := strings.IndexByte(sql[i+1:], q)
			if j < 0 {
				j = len(sql) - i - 1
			}
			b.WriteString(sql[i : i+j+2])
			i += j + 1
			start = i + 1
		}
	}
	if start < len(sql) {
		b.WriteString(f(sql[start:]))
	}
	return b.String()
}

var (
	reParam = regexp.MustCompile(`\$(\d+)`)
	reTable = regexp.MustCompile(`\b(graveler_[a-z_]+|schema_migrations)\b`)
)

func upperVariant(s string) string { return outsideQuotes(s, strings.ToUpper) }
func lowerVariant(s string) string { return outsideQuotes(s, strings.ToLower) }
func spaceVariant(s string) string {
	return outsideQuotes(s, func(p string) string { return strings.ReplaceAll(p, " ", " \n\t  ") })
}
func quotedVariant(s string) string {
	return outsideQuotes(s, func(p string) string { return reTable.ReplaceAllString(p, `"$1"`) })
}

// literalFor is what a simple-protocol client would inline for a slot.
func literalFor(oid uint32) string {
	switch oid {
	case OIDInt4:
		return "7"
	case OIDInt8:
		return "1000"
	case OIDBytea:
		return `'\x0001ff'`
	case OIDTimestamptz:
		return `'2024-02-29 12:34:56.123456+00'`
	case OIDTextArray:
		return `'{"a","b c"}'`
	case OIDJSONB:
		return `'{"k": "v"}'`
	}
	return `'it''s'`
}

func planOf(t *testing.T, tr *Translator, sql string) *Plan {
	t.Helper()
	p, err := tr.Plan(sql)
	if err != nil {
		t.Fatalf("Plan(%q): %v", sql, err)
	}
	return p
}

func TestRecogniseLegacyStatements(t *testing.T) {
	tr := New(Options{})
	for _, f := range legacyFixtures {
		variants := map[string]string{
			"exact": f.sql, "upper": upperVariant(f.sql), "lower": lowerVariant(f.sql),
			"spaces": spaceVariant(f.sql), "quoted-idents": quotedVariant(f.sql),
			"trailing-semicolon": f.sql + " ;", "comment": "/* kvproxy */ " + f.sql + " -- done",
		}
		if f.shape == EmptyQuery {
			delete(variants, "quoted-idents")
		}
		for vname, sql := range variants {
			t.Run(f.name+"/"+vname, func(t *testing.T) {
				p := planOf(t, tr, sql)
				if p.Shape != f.shape || p.Kind != f.shape.Kind() {
					t.Fatalf("shape %v kind %v (err %v), want %v %v", p.Shape, p.Kind, p.Err, f.shape, f.shape.Kind())
				}
				if len(p.Args) > 0 && len(p.Args) != len(f.shape.Slots()) {
					t.Fatalf("%d args for %d slots", len(p.Args), len(f.shape.Slots()))
				}
				for i, a := range p.Args {
					if a.OID != f.shape.Slots()[i].OID {
						t.Errorf("arg %d OID %d, slot wants %d", i, a.OID, f.shape.Slots()[i].OID)
					}
					if a.Param > 0 && p.ParamOIDs[a.Param-1] != a.OID {
						t.Errorf("arg %d is $%d of type %d but ParamOIDs says %d", i, a.Param, a.OID, p.ParamOIDs[a.Param-1])
					}
				}
			})
		}
	}
}

func TestRecogniseArguments(t *testing.T) {
	tr := New(Options{})
	byName := map[string]fixture{}
	for _, f := range legacyFixtures {
		byName[f.name] = f
	}
	cases := []struct {
		fixture string
		want    string // Args rendered: $n or 'lit'
	}{
		{"R1", "$1"},
		{"R3b", "$1 $2"},
		{"B3", "$1 $2 $3 $4"},
		{"C2", "$1 $2 '2'"},
		{"C5a", "$1 $2 '1000'"},
		{"C6b", "$1 $2 '1000'"},
		{"C7", "$1"},
		{"S6a", "$1 $2 $3"},
		{"S6b", "$1 $2"},
		{"S7", "$1 $2 $3"},
		{"L1", "$1"},
		{"diag-count-staging", "'1000'"},
		{"diag-count-migrations", ""},
	}
	for _, c := range cases {
		t.Run(c.fixture, func(t *testing.T) {
			p := planOf(t, tr, byName[c.fixture].sql)
			if got := renderArgs(p.Args); got != c.want {
				t.Fatalf("args %q, want %q", got, c.want)
			}
		})
	}
	p := planOf(t, tr, byName["C7"].sql)
	if fmt.Sprint(p.Generations) != "[{a1b2 1} {c3d4 2}]" {
		t.Fatalf("C7 generations %v", p.Generations)
	}
	p = planOf(t, tr, byName["diag-count-commits"].sql)
	if p.Table != "graveler_commits" {
		t.Fatalf("diag table %q", p.Table)
	}
	p = planOf(t, tr, byName["deallocate"].sql)
	if p.Name != "lrupsc_1_7" {
		t.Fatalf("deallocate name %q", p.Name)
	}
	for sql, want := range map[string]TxOptions{
		"begin isolation level serializable read write":   {Isolation: "serializable", ReadWrite: true},
		"begin isolation level serializable read only":    {Isolation: "serializable", ReadOnly: true},
		"begin isolation level read committed read write": {Isolation: "read committed", ReadWrite: true},
		"BEGIN": {},
		"START TRANSACTION READ ONLY, DEFERRABLE": {ReadOnly: true, Deferrable: true},
	} {
		if p := planOf(t, tr, sql); p.Tx != want {
			t.Errorf("%q: tx %+v, want %+v", sql, p.Tx, want)
		}
	}
}

func renderArgs(args []Arg) string {
	var parts []string
	for _, a := range args {
		switch {
		case a.Param > 0:
			parts = append(parts, fmt.Sprintf("$%d", a.Param))
		case a.Null:
			parts = append(parts, "NULL")
		default:
			parts = append(parts, "'"+a.Literal+"'")
		}
	}
	return strings.Join(parts, " ")
}

// inlineAll replaces every $n with a literal of the slot's type, as a
// simple-protocol client does.
func inlineAll(t *testing.T, tr *Translator, sql string) string {
	t.Helper()
	p := planOf(t, tr, sql)
	return reParam.ReplaceAllStringFunc(sql, func(m string) string {
		var n int
		fmt.Sscanf(m, "$%d", &n)
		return literalFor(p.ParamOIDs[n-1])
	})
}

func TestRecogniseInlinedLiterals(t *testing.T) {
	tr := New(Options{})
	for _, f := range legacyFixtures {
		if !strings.Contains(f.sql, "$") {
			continue
		}
		t.Run(f.name, func(t *testing.T) {
			sql := inlineAll(t, tr, f.sql)
			p := planOf(t, tr, sql)
			if p.Shape != f.shape {
				t.Fatalf("%q: shape %v (%v), want %v", sql, p.Shape, p.Err, f.shape)
			}
			if len(p.ParamOIDs) != 0 {
				t.Fatalf("ParamOIDs %v for a statement without parameters", p.ParamOIDs)
			}
			for i, a := range p.Args {
				if a.Param != 0 || a.Null || a.Literal == "" {
					t.Fatalf("arg %d = %+v, want a literal", i, a)
				}
			}
		})
	}
}

func TestRecogniseNearMisses(t *testing.T) {
	tr := New(Options{})
	cases := []struct {
		name string
		sql  string
		kind Kind
	}{
		{"other column", `SELECT storage_namespace, creation_date, id FROM graveler_repositories WHERE id = $1`, Unsupported},
		{"extra column", `SELECT storage_namespace, creation_date, default_branch, id FROM graveler_repositories WHERE id = $1`, Unsupported},
		{"column alias", `SELECT storage_namespace AS ns, creation_date, default_branch FROM graveler_repositories WHERE id = $1`, Unsupported},
		{"extra predicate", `SELECT commit_id, staging_token FROM graveler_branches WHERE repository_id = $1 AND id = $2 AND commit_id = $3`, Unsupported},
		{"or instead of and", `SELECT commit_id, staging_token FROM graveler_branches WHERE repository_id = $1 OR id = $2`, Unsupported},
		{"missing predicate", `DELETE FROM graveler_branches WHERE id = $1`, Unsupported},
		{"no where", `DELETE FROM graveler_tags`, Unsupported},
		{"descending", `SELECT id, commit_id FROM graveler_tags WHERE repository_id = $1 AND id >= $2 ORDER BY id DESC LIMIT $3`, Unsupported},
		{"offset", `SELECT id, commit_id FROM graveler_tags WHERE repository_id = $1 AND id >= $2 ORDER BY id ASC LIMIT $3 OFFSET 1`, Unsupported},
		{"for update", `SELECT commit_id FROM graveler_tags WHERE repository_id = $1 AND id = $2 FOR UPDATE`, Unsupported},
		{"less-or-equal", `SELECT id, commit_id FROM graveler_tags WHERE repository_id = $1 AND id <= $2 ORDER BY id ASC LIMIT $3`, Unsupported},
		{"returning", `DELETE FROM graveler_tags WHERE repository_id = $1 AND id = $2 RETURNING id`, Unsupported},
		{"upsert other set", `INSERT INTO graveler_branches (repository_id, id, staging_token, commit_id) VALUES ($1, $2, $3, $4) ON CONFLICT (repository_id, id) DO UPDATE SET staging_token = $4, commit_id = $3`, Unsupported},
		{"insert missing on conflict", `INSERT INTO graveler_tags (repository_id, id, commit_id) VALUES ($1, $2, $3)`, Unsupported},
		{"insert two rows", `INSERT INTO graveler_tags (repository_id, id, commit_id) VALUES ($1, $2, $3), ($4, $5, $6) ON CONFLICT DO NOTHING`, Unsupported},
		{"cast to other type", `DELETE FROM graveler_staging_kv WHERE staging_token = $1 AND key >= $2::text`, Unsupported},
		{"param reused across types", `DELETE FROM graveler_staging_kv WHERE staging_token = $1 AND key >= $1`, Unsupported},
		{"schema-qualified", `DELETE FROM public.graveler_tags WHERE repository_id = $1 AND id = $2`, Unsupported},
		{"like without wildcard", `SELECT id, committer, message, creation_date, parents, meta_range_id, metadata, version, generation FROM graveler_commits WHERE repository_id = $1 AND id LIKE $2 LIMIT 2`, Unsupported},
		{"c6 wrong inner predicate", c5Cols + ` WHERE repository_id = $1 AND id >= $2 AND NOT EXISTS ( SELECT * FROM graveler_commits c2 WHERE first_parent(c2.parents, c2.version)=graveler_commits.id ) ORDER BY id ASC LIMIT 1000`, Unsupported},
		{"c7 other column", `WITH updated(id, generation) AS (VALUES ('a', 1)) UPDATE graveler_commits SET version = updated.generation FROM updated WHERE (graveler_commits.id=updated.id AND graveler_commits.repository_id=$1)`, Unsupported},
		{"update", `UPDATE graveler_branches SET commit_id = $1 WHERE repository_id = $2 AND id = $3`, Unsupported},
		{"partition", `SELECT * FROM graveler_staging_kv_p3`, Unsupported},
		{"select star", `SELECT * FROM graveler_commits`, Unsupported},
		{"subquery", `SELECT 1 WHERE EXISTS (SELECT 1 FROM graveler_tags)`, Unsupported},
		{"truncate", `TRUNCATE graveler_tags`, Unsupported},
		{"drop", `DROP TABLE graveler_tags`, Unsupported},
		{"copy", `COPY graveler_tags TO STDOUT`, Unsupported},
		{"comment", `COMMENT ON TABLE graveler_tags IS 'x'`, Unsupported},
		{"vacuum", `VACUUM graveler_commits`, Unsupported},
		{"explain", `EXPLAIN SELECT commit_id FROM graveler_tags WHERE repository_id = $1 AND id = $2`, Unsupported},
		{"cte", `WITH t AS (SELECT * FROM graveler_tags) SELECT count(*) FROM t`, Unsupported},
		{"join", `SELECT b.id FROM graveler_branches b JOIN graveler_commits c ON c.id = b.commit_id`, Unsupported},
		{"lock two args", `SELECT pg_advisory_xact_lock(1, 2)`, Unsupported},
		{"lock in from", `SELECT pg_advisory_xact_lock($1), 1`, Unsupported},
		{"savepoint", `SAVEPOINT a`, Unsupported},
		{"commit and chain", `COMMIT AND CHAIN`, Unsupported},
		{"prepare transaction", `PREPARE TRANSACTION 'x'`, Unsupported},
		{"set transaction", `SET TRANSACTION ISOLATION LEVEL SERIALIZABLE`, Unsupported},
		{"set session characteristics", `SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY`, Unsupported},
		{"auth table", `SELECT id FROM auth_users WHERE id = $1`, Passthrough},
		{"auth count", `SELECT COUNT(*) FROM auth_users LIMIT 1000`, Passthrough},
		{"session lock", `SELECT pg_advisory_lock($1)`, Passthrough},
		{"aurora", `SELECT aurora_version()`, Passthrough},
		{"settings", `SELECT name, setting FROM pg_settings WHERE name = 'max_connections'`, Passthrough},
		{"string mentioning table", `SELECT 'graveler_tags'`, Passthrough},
		{"set", `SET TIME ZONE 'UTC'`, Passthrough},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := planOf(t, tr, c.sql)
			if p.Kind != c.kind {
				t.Fatalf("kind %v shape %v, want %v", p.Kind, p.Shape, c.kind)
			}
			if c.kind == Unsupported {
				if !errors.Is(p.Err, ErrFeatureNotSupported) || !strings.Contains(p.Err.Error(), "unsupported ") {
					t.Fatalf("err %v", p.Err)
				}
			} else if p.Err != nil {
				t.Fatalf("err %v", p.Err)
			}
		})
	}
}

func TestPlanErrors(t *testing.T) {
	tr := New(Options{})
	cases := []struct {
		sql  string
		want error
	}{
		{"SELEC 1", ErrSyntaxError},
		{"select 1; select 2", ErrSyntaxError},
		{"DELETE FROM graveler_tags WHERE repository_id = $1 AND id = $3", ErrIndeterminateDatatype},
	}
	for _, c := range cases {
		if _, err := tr.Plan(c.sql); !errors.Is(err, c.want) {
			t.Errorf("Plan(%q) = %v, want %v", c.sql, err, c.want)
		}
	}
}

func TestSplit(t *testing.T) {
	got, err := Split("begin; SELECT ';' ; ; commit;")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"begin", "SELECT ';'", "commit"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("Split = %q, want %q", got, want)
	}
	if got, err := Split(";"); err != nil || len(got) != 0 {
		t.Fatalf("Split(;) = %q, %v", got, err)
	}
}

func TestPlanCache(t *testing.T) {
	tr := New(Options{CacheSize: 2})
	a, b, c := legacyFixtures[0].sql, legacyFixtures[1].sql, legacyFixtures[2].sql
	p1 := planOf(t, tr, a)
	if p2 := planOf(t, tr, a); p2 != p1 {
		t.Fatal("cached plan not reused")
	}
	planOf(t, tr, b)
	planOf(t, tr, c) // evicts a
	st := tr.Stats()
	if st.Hits != 1 || st.Misses != 3 || st.Evictions != 1 || st.Entries != 2 {
		t.Fatalf("stats %+v", st)
	}
	if planOf(t, tr, a) == p1 {
		t.Fatal("evicted plan still returned")
	}
}

func TestPlanConcurrent(t *testing.T) {
	tr := New(Options{CacheSize: 8}) // smaller than the fixture set: constant eviction
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 300; i++ {
				f := legacyFixtures[(i*7+g)%len(legacyFixtures)]
				p, err := tr.Plan(f.sql)
				if err != nil || p.Shape != f.shape {
					errs <- fmt.Errorf("%s: %v %v", f.name, p, err)
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	st := tr.Stats()
	if st.Entries > 8 || st.Hits+st.Misses != 1200 || st.Evictions == 0 {
		t.Fatalf("stats %+v", st)
	}
}
