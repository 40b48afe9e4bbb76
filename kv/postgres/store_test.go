package postgres_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/kvproxy/kvproxy/internal/testenv"
	"github.com/kvproxy/kvproxy/kv"
	"github.com/kvproxy/kvproxy/kv/postgres"
)

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return c
}

func withParam(t *testing.T, dsn, name, value string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set(name, value)
	u.RawQuery = q.Encode()
	return u.String()
}

func open(t *testing.T, dsn string) *postgres.Store {
	t.Helper()
	s, err := postgres.New(ctx(t), dsn)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

func connect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(ctx(t), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

// lakeFSSetup is the DDL of lakeFS v0.80 (spec §5.2), kept here literally so
// that a drift in SetupStatements fails this test.
func lakeFSSetup(table string) []string {
	out := []string{`CREATE TABLE IF NOT EXISTS "` + table + `" (
		partition_key BYTEA NOT NULL,
		key BYTEA NOT NULL,
		value BYTEA NOT NULL,
		PRIMARY KEY (partition_key, key))
	PARTITION BY HASH (partition_key)`}
	for i := range 100 {
		out = append(out, fmt.Sprintf(`CREATE TABLE IF NOT EXISTS"%s_%d" PARTITION OF "%s" FOR VALUES WITH (MODULUS 100,REMAINDER %d)`, table, i, table, i))
	}
	return append(out, `CREATE OR REPLACE VIEW "`+table+`_v" AS SELECT ENCODE(partition_key, 'escape') AS partition_key, ENCODE(key, 'escape') AS key, value FROM "`+table+`"`)
}

func TestSetupStatementsAreLakeFS(t *testing.T) {
	for _, table := range []string{"kv", "custom_kv"} {
		if got, want := postgres.SetupStatements(table), lakeFSSetup(table); !slices.Equal(got, want) {
			t.Errorf("SetupStatements(%q) differ from lakeFS's:\n%q\nwant\n%q", table, got[:2], want[:2])
		}
	}
}

// TestSchemaIsLakeFS checks the catalog after Open and that lakeFS's own
// setup then runs cleanly on the same database, as a lakeFS binary would.
func TestSchemaIsLakeFS(t *testing.T) {
	cases := []struct{ name, table string }{{"default", "kv"}, {"lakefskv_table", "lakefs_kv_custom"}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			db := testenv.PostgresDB(t)
			dsn := db
			if c.table != "kv" {
				dsn = withParam(t, db, "lakefskv_table", c.table)
			}
			s := open(t, dsn)
			if err := s.Set(ctx(t), []byte("p"), []byte("k"), []byte{0x00, 0xFF}); err != nil {
				t.Fatal(err)
			}
			conn := connect(t, db)
			var strategy string
			var nparts int
			err := conn.QueryRow(ctx(t), `SELECT p.partstrat::text, (SELECT count(*) FROM pg_inherits i WHERE i.inhparent = p.partrelid)
				FROM pg_partitioned_table p WHERE p.partrelid = $1::regclass`, c.table).Scan(&strategy, &nparts)
			if err != nil {
				t.Fatal(err)
			}
			if strategy != "h" || nparts != 100 {
				t.Fatalf("partitioning %q with %d partitions, want hash with 100", strategy, nparts)
			}
			var bound string
			if err := conn.QueryRow(ctx(t), `SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_class c WHERE c.relname = $1`, c.table+"_37").Scan(&bound); err != nil {
				t.Fatal(err)
			}
			if bound != "FOR VALUES WITH (modulus 100, remainder 37)" {
				t.Fatalf("%s_37 bound %q", c.table, bound)
			}
			rows, err := conn.Query(ctx(t), `SELECT column_name, data_type, is_nullable FROM information_schema.columns WHERE table_name = $1 ORDER BY ordinal_position`, c.table)
			if err != nil {
				t.Fatal(err)
			}
			cols, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
				var n, ty, null string
				err := r.Scan(&n, &ty, &null)
				return n + " " + ty + " " + null, err
			})
			if err != nil {
				t.Fatal(err)
			}
			if want := []string{"partition_key bytea NO", "key bytea NO", "value bytea NO"}; !slices.Equal(cols, want) {
				t.Fatalf("columns %q, want %q", cols, want)
			}
			var pk string
			if err := conn.QueryRow(ctx(t), `SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = $1::regclass AND contype = 'p'`, c.table).Scan(&pk); err != nil {
				t.Fatal(err)
			}
			if pk != "PRIMARY KEY (partition_key, key)" {
				t.Fatalf("primary key %q", pk)
			}
			// The row is where lakeFS reads it, through the table and the view.
			var v []byte
			if err := conn.QueryRow(ctx(t), `SELECT value FROM `+pgx.Identifier{c.table + "_v"}.Sanitize()+` WHERE partition_key = 'p' AND key = 'k'`).Scan(&v); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(v, []byte{0x00, 0xFF}) {
				t.Fatalf("value via view %x", v)
			}
			// lakeFS's Open on the same database.
			for _, stmt := range lakeFSSetup(c.table) {
				if _, err := conn.Exec(ctx(t), stmt); err != nil {
					t.Fatalf("lakeFS setup statement failed after kvproxy's: %v\n%s", err, stmt)
				}
			}
			if c.table != "kv" {
				var exists bool
				if err := conn.QueryRow(ctx(t), `SELECT to_regclass('kv') IS NOT NULL`).Scan(&exists); err != nil || exists {
					t.Fatalf("table kv exists (%v) although lakefskv_table=%s: %v", exists, c.table, err)
				}
			}
		})
	}
}

// TestLakeFSRowsReadable writes rows with lakeFS's statements and reads them
// through the store, and the other way round.
func TestLakeFSRowsReadable(t *testing.T) {
	db := testenv.PostgresDB(t)
	s := open(t, db)
	conn := connect(t, db)
	if _, err := conn.Exec(ctx(t), `INSERT INTO "kv"(partition_key,key,value) VALUES($1,$2,$3)`, []byte("kv-internal-metadata"), []byte("kv/schema/version"), []byte("1")); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(ctx(t), []byte("kv-internal-metadata"), []byte("kv/schema/version"))
	if err != nil || string(got.Value) != "1" {
		t.Fatalf("Get = %v, %v", got, err)
	}
	if err := s.SetIf(ctx(t), []byte("repositories"), []byte("repos/r1"), []byte{0x0A, 0x02}, nil); err != nil {
		t.Fatal(err)
	}
	var v []byte
	if err := conn.QueryRow(ctx(t), `SELECT value FROM "kv" WHERE key = $1 AND partition_key = $2`, []byte("repos/r1"), []byte("repositories")).Scan(&v); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(v, []byte{0x0A, 0x02}) {
		t.Fatalf("row value %x", v)
	}
}

// TestLakeFSTableParamStripped: lakefskv_table is not a PostgreSQL setting;
// sent in the startup message it makes the server refuse the connection, so
// the driver must remove it (and scan_page_size) before connecting.
func TestLakeFSTableParamStripped(t *testing.T) {
	db := testenv.PostgresDB(t)
	dsn := withParam(t, withParam(t, db, "lakefskv_table", "kv_custom"), "scan_page_size", "7")
	c, err := pgx.Connect(ctx(t), dsn)
	if err == nil {
		_ = c.Close(context.Background())
		t.Log("server accepted lakefskv_table as a runtime parameter")
	} else if !strings.Contains(err.Error(), "lakefskv_table") && !strings.Contains(err.Error(), "scan_page_size") {
		t.Fatalf("raw connect failed for another reason: %v", err)
	} else {
		t.Logf("raw pgx connect with the parameters fails as expected: %v", err)
	}
	cfg, err := postgres.ParseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := cfg.Pool.ConnConfig.RuntimeParams["lakefskv_table"]; ok {
		t.Fatal("lakefskv_table left in the runtime parameters")
	}
	s := open(t, dsn)
	if err := s.Set(ctx(t), []byte("p"), []byte("k"), []byte("v")); err != nil {
		t.Fatal(err)
	}
}

// TestConcurrentOpen opens one fresh database from many pools at once: the
// setup's CREATE TABLE IF NOT EXISTS must not race into a unique violation.
func TestConcurrentOpen(t *testing.T) {
	const openers = 8
	dsn := testenv.PostgresDB(t)
	var wg sync.WaitGroup
	errs := make(chan error, openers)
	for range openers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := postgres.New(ctx(t), withParam(t, dsn, "pool_max_conns", "2"))
			if err != nil {
				errs <- err
				return
			}
			defer s.Close()
			errs <- s.Set(ctx(t), []byte("p"), []byte("k"), []byte("v"))
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

func TestPoolSize(t *testing.T) {
	dsn := testenv.PostgresDB(t)
	cases := []struct {
		dsn  string
		want int32
	}{
		{dsn, postgres.DefaultMaxConns},
		{withParam(t, dsn, "pool_max_conns", "3"), 3},
	}
	for _, c := range cases {
		s := open(t, c.dsn)
		if got := s.Pool().Config().MaxConns; got != c.want {
			t.Errorf("MaxConns = %d, want %d", got, c.want)
		}
	}
}

func TestParseDSN(t *testing.T) {
	cases := []struct {
		name, dsn string
		wantErr   string // substring; "" = valid
		table     string
		page      int
	}{
		{"url", "postgres://u@h:5432/db?sslmode=disable", "", "kv", 1000},
		{"keyword", "host=h user=u dbname=db lakefskv_table=t1 scan_page_size=10", "", "t1", 10},
		{"table and page", "postgres://u@h/db?lakefskv_table=my_kv&scan_page_size=50", "", "my_kv", 50},
		{"empty", "", "empty DSN", "", 0},
		{"bad url", "postgres://u@h:notaport/db", "", "", 0},
		{"empty table", "postgres://u@h/db?lakefskv_table=", "lakefskv_table", "", 0},
		{"long table", "postgres://u@h/db?lakefskv_table=" + strings.Repeat("t", 61), "lakefskv_table", "", 0},
		{"zero page", "postgres://u@h/db?scan_page_size=0", "scan_page_size", "", 0},
		{"page not a number", "postgres://u@h/db?scan_page_size=many", "scan_page_size", "", 0},
		{"bad pool", "postgres://u@h/db?pool_max_conns=x", "pool_max_conns", "", 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := postgres.ParseDSN(c.dsn)
			if c.name == "bad url" {
				if !errors.Is(err, kv.ErrDriverConfiguration) {
					t.Fatalf("err %v, want ErrDriverConfiguration", err)
				}
				return
			}
			if c.wantErr != "" {
				if !errors.Is(err, kv.ErrDriverConfiguration) || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err %v, want ErrDriverConfiguration naming %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.TableName != c.table || cfg.ScanPageSize != c.page {
				t.Fatalf("table %q page %d, want %q %d", cfg.TableName, cfg.ScanPageSize, c.table, c.page)
			}
			for _, p := range []string{"lakefskv_table", "scan_page_size", "pool_max_conns"} {
				if _, ok := cfg.Pool.ConnConfig.RuntimeParams[p]; ok {
					t.Fatalf("%s would be sent to the server", p)
				}
			}
			if cfg.Pool.ConnConfig.ConnectTimeout <= 0 {
				t.Fatal("no connect timeout")
			}
		})
	}
}

func FuzzParseDSN(f *testing.F) {
	for _, s := range []string{
		"postgres://u@h:5432/db?sslmode=disable",
		"postgres://u:p@h/db?lakefskv_table=kv&scan_page_size=10&pool_max_conns=4",
		"host=h user=u dbname=db lakefskv_table=t",
		"postgresql:///db?host=/tmp",
		"postgres://[::1]:5432/db",
		"",
		"postgres://u@h/db?scan_page_size=-1",
		"host='unterminated",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, dsn string) {
		cfg, err := postgres.ParseDSN(dsn)
		if err != nil {
			if !errors.Is(err, kv.ErrDriverConfiguration) {
				t.Fatalf("error %v does not wrap ErrDriverConfiguration", err)
			}
			return
		}
		if cfg.TableName == "" || cfg.ScanPageSize < 1 || cfg.Pool == nil {
			t.Fatalf("accepted %q with config %+v", dsn, cfg)
		}
	})
}
