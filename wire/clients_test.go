package wire

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	pgx4 "github.com/jackc/pgx/v4"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/kvproxy/kvproxy/internal/testenv"
	"github.com/lib/pq"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestPgxV5Passthrough(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			up := testenv.PostgresDB(t)
			p := startProxy(t, Config{UpstreamDSN: up, NoEventLoop: m.noLoop}, m.router)
			ctx := ctxT(t)
			conn, err := pgx.Connect(ctx, p.dsn("", ""))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)

			if _, err := conn.Exec(ctx, `CREATE TABLE t (id int PRIMARY KEY, v text, b bytea, n numeric, ts timestamptz)`); err != nil {
				t.Fatal(err)
			}
			ts := time.Date(2024, 5, 6, 7, 8, 9, 123000, time.UTC)
			for i := 1; i <= 3; i++ {
				tag, err := conn.Exec(ctx, `INSERT INTO t VALUES ($1, $2, $3, $4, $5)`, i, fmt.Sprint("v", i), []byte{byte(i), 0, 255}, fmt.Sprint(i, ".5"), ts)
				if err != nil || tag.String() != "INSERT 0 1" {
					t.Fatalf("insert %d: %v %v", i, tag, err)
				}
			}
			// NULLs.
			if _, err := conn.Exec(ctx, `INSERT INTO t (id) VALUES (4)`); err != nil {
				t.Fatal(err)
			}
			var v *string
			var b []byte
			if err := conn.QueryRow(ctx, `SELECT v, b FROM t WHERE id = 4`).Scan(&v, &b); err != nil || v != nil || b != nil {
				t.Fatalf("NULLs: %v %v %v", v, b, err)
			}
			// Binary formats (pgx asks binary for these types).
			var gotTS time.Time
			var gotB []byte
			var gotN float64
			if err := conn.QueryRow(ctx, `SELECT ts, b, n FROM t WHERE id = $1`, 2).Scan(&gotTS, &gotB, &gotN); err != nil {
				t.Fatal(err)
			}
			if !gotTS.Equal(ts) || !bytes.Equal(gotB, []byte{2, 0, 255}) || gotN != 2.5 {
				t.Fatalf("binary roundtrip: %v %v %v", gotTS, gotB, gotN)
			}
			// UPDATE/DELETE tags.
			if tag, err := conn.Exec(ctx, `UPDATE t SET v = 'x' WHERE id <= 2`); err != nil || tag.RowsAffected() != 2 {
				t.Fatalf("update: %v %v", tag, err)
			}
			// Prepared statements.
			if _, err := conn.Prepare(ctx, "byid", `SELECT v FROM t WHERE id = $1`); err != nil {
				t.Fatal(err)
			}
			for i, want := range []string{"x", "x", "v3"} {
				var got string
				if err := conn.QueryRow(ctx, "byid", i+1).Scan(&got); err != nil || got != want {
					t.Fatalf("prepared %d: %q %v", i+1, got, err)
				}
			}
			// Errors with SQLSTATE.
			_, err = conn.Exec(ctx, `INSERT INTO t (id) VALUES (1)`)
			if pgCode(err) != "23505" {
				t.Fatalf("duplicate: %v", err)
			}
			_, err = conn.Exec(ctx, `SELEC 1`)
			if pgCode(err) != "42601" {
				t.Fatalf("syntax: %v", err)
			}
			// Batch (pipeline), with an error in the middle.
			batch := &pgx.Batch{}
			batch.Queue(`INSERT INTO t (id, v) VALUES (10, 'b')`)
			batch.Queue(`SELECT count(*) FROM t`)
			batch.Queue(`SELECT 1/0`)
			batch.Queue(`INSERT INTO t (id, v) VALUES (11, 'b')`)
			br := conn.SendBatch(ctx, batch)
			if _, err := br.Exec(); err != nil {
				t.Fatal(err)
			}
			var cnt int
			if err := br.QueryRow().Scan(&cnt); err != nil || cnt != 5 {
				t.Fatalf("batch count: %d %v", cnt, err)
			}
			if _, err := br.Exec(); pgCode(err) != "22012" {
				t.Fatalf("batch error: %v", err)
			}
			if _, err := br.Exec(); err == nil {
				t.Fatal("statement after the error in a batch succeeded")
			}
			br.Close()
			if err := conn.QueryRow(ctx, `SELECT count(*) FROM t WHERE id >= 10`).Scan(&cnt); err != nil || cnt != 0 {
				t.Fatalf("the failed batch's implicit transaction was not rolled back: %d %v", cnt, err)
			}
			// Batch without errors.
			batch = &pgx.Batch{}
			for i := 20; i < 30; i++ {
				batch.Queue(`INSERT INTO t (id, v) VALUES ($1, 'b')`, i)
			}
			if err := conn.SendBatch(ctx, batch).Close(); err != nil {
				t.Fatal(err)
			}
			// COPY FROM and TO.
			rows := make([][]any, 1000)
			for i := range rows {
				rows[i] = []any{1000 + i, fmt.Sprint("c", i)}
			}
			n, err := conn.CopyFrom(ctx, pgx.Identifier{"t"}, []string{"id", "v"}, pgx.CopyFromRows(rows))
			if err != nil || n != 1000 {
				t.Fatalf("copy from: %d %v", n, err)
			}
			var out bytes.Buffer
			tag, err := conn.PgConn().CopyTo(ctx, &out, `COPY (SELECT id, v FROM t WHERE id >= 1000 ORDER BY id) TO STDOUT`)
			if err != nil || tag.RowsAffected() != 1000 {
				t.Fatalf("copy to: %v %v", tag, err)
			}
			if lines := strings.Split(strings.TrimSpace(out.String()), "\n"); len(lines) != 1000 || lines[999] != "1999\tc999" {
				t.Fatalf("copy to content: %d lines, last %q", len(lines), lines[len(lines)-1])
			}
			// COPY FROM STDIN with bad data: error, connection still usable.
			_, err = conn.PgConn().CopyFrom(ctx, strings.NewReader("notanint\tx\n"), `COPY t (id, v) FROM STDIN`)
			if pgCode(err) != "22P02" {
				t.Fatalf("bad copy: %v", err)
			}
			// A 10 MiB value both ways.
			big := bytes.Repeat([]byte("0123456789abcdef"), 10<<20/16)
			if _, err := conn.Exec(ctx, `INSERT INTO t (id, b, v) VALUES (5000, $1, $2)`, big, string(big)); err != nil {
				t.Fatal(err)
			}
			var gotBig []byte
			var gotBigS string
			if err := conn.QueryRow(ctx, `SELECT b, v FROM t WHERE id = 5000`).Scan(&gotBig, &gotBigS); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(gotBig, big) || gotBigS != string(big) {
				t.Fatalf("10 MiB value: got %d/%d bytes", len(gotBig), len(gotBigS))
			}
			// Simple protocol, several statements in one string.
			res, err := conn.PgConn().Exec(ctx, `SELECT 1 AS a; SELECT 'two' AS b; UPDATE t SET v = 'y' WHERE id = 3`).ReadAll()
			if err != nil || len(res) != 3 || string(res[1].Rows[0][0]) != "two" || res[2].CommandTag.String() != "UPDATE 1" {
				t.Fatalf("multi-statement: %v %v", res, err)
			}
			// Explicit transaction status.
			tx, err := conn.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if st := conn.PgConn().TxStatus(); st != 'T' {
				t.Fatalf("tx status %q, want T", st)
			}
			_, _ = tx.Exec(ctx, `SELECT 1/0`)
			if st := conn.PgConn().TxStatus(); st != 'E' {
				t.Fatalf("tx status %q, want E", st)
			}
			if err := tx.Rollback(ctx); err != nil {
				t.Fatal(err)
			}
			if st := conn.PgConn().TxStatus(); st != 'I' {
				t.Fatalf("tx status %q, want I", st)
			}
		})
	}
}

func TestListenNotifyAndCancel(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			up := testenv.PostgresDB(t)
			p := startProxy(t, Config{UpstreamDSN: up, NoEventLoop: m.noLoop}, m.router)
			ctx := ctxT(t)
			l, err := pgx.Connect(ctx, p.dsn("", ""))
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close(ctx)
			n, err := pgx.Connect(ctx, p.dsn("", ""))
			if err != nil {
				t.Fatal(err)
			}
			defer n.Close(ctx)
			if _, err := l.Exec(ctx, `LISTEN chan1`); err != nil {
				t.Fatal(err)
			}
			// The listener is idle when the notification arrives.
			if _, err := n.Exec(ctx, `SELECT pg_notify('chan1', 'hello')`); err != nil {
				t.Fatal(err)
			}
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			note, err := l.WaitForNotification(wctx)
			cancel()
			if err != nil || note.Channel != "chan1" || note.Payload != "hello" {
				t.Fatalf("notification: %+v %v", note, err)
			}
			// Notice relayed.
			var notices []string
			cfg, _ := pgconn.ParseConfig(p.dsn("", ""))
			cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) { notices = append(notices, n.Message) }
			nc, err := pgconn.ConnectConfig(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := nc.Exec(ctx, `DO $$BEGIN RAISE NOTICE 'note-1'; END$$`).ReadAll(); err != nil {
				t.Fatal(err)
			}
			nc.Close(ctx)
			if len(notices) != 1 || notices[0] != "note-1" {
				t.Fatalf("notices: %v", notices)
			}
			// Cancel of a long statement through the proxy's BackendKeyData.
			start := time.Now()
			go func() {
				time.Sleep(300 * time.Millisecond)
				cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer ccancel()
				_ = n.PgConn().CancelRequest(cctx)
			}()
			_, err = n.Exec(ctx, `SELECT pg_sleep(10)`)
			if el := time.Since(start); el > 5*time.Second {
				t.Fatalf("cancel took %v", el)
			}
			if pgCode(err) != CodeQueryCanceled {
				t.Fatalf("cancel: %v (code %q), want 57014", err, pgCode(err))
			}
		})
	}
}

func TestPgxV4StatementCachePrepare(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			up := testenv.PostgresDB(t)
			p := startProxy(t, Config{UpstreamDSN: up, NoEventLoop: m.noLoop}, m.router)
			ctx := ctxT(t)
			conn, err := pgx4.Connect(ctx, p.dsn("", "statement_cache_mode=prepare"))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			if _, err := conn.Exec(ctx, `CREATE TABLE kv (k text PRIMARY KEY, v bytea, n int8)`); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 20; i++ {
				if _, err := conn.Exec(ctx, `INSERT INTO kv VALUES ($1, $2, $3) ON CONFLICT (k) DO UPDATE SET n = kv.n + 1`, fmt.Sprint("k", i%5), []byte{byte(i)}, int64(i)); err != nil {
					t.Fatal(err)
				}
			}
			var sum int64
			if err := conn.QueryRow(ctx, `SELECT sum(n) FROM kv WHERE k LIKE $1`, "k%").Scan(&sum); err != nil {
				t.Fatal(err)
			}
			// k0..k4 inserted with n=0..4, then 15 increments.
			if sum != 0+1+2+3+4+15 {
				t.Fatalf("sum %d", sum)
			}
			b := &pgx4.Batch{}
			b.Queue(`SELECT n FROM kv WHERE k = $1`, "k1")
			b.Queue(`SELECT n FROM kv WHERE k = $1`, "k2")
			br := conn.SendBatch(ctx, b)
			var n1, n2 int64
			if err := br.QueryRow().Scan(&n1); err != nil {
				t.Fatal(err)
			}
			if err := br.QueryRow().Scan(&n2); err != nil {
				t.Fatal(err)
			}
			br.Close()
			if n1 != 4 || n2 != 5 {
				t.Fatalf("batch: %d %d", n1, n2)
			}
			_, err = conn.Exec(ctx, `INSERT INTO kv (k) VALUES ($1)`, "k1")
			var pe *pgconn.PgError
			var pe4 interface{ SQLState() string }
			if !errors.As(err, &pe4) || pe4.SQLState() != "23505" {
				t.Fatalf("duplicate via pgx v4: %v %v", err, pe)
			}
		})
	}
}

func TestLibPQ(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			up := testenv.PostgresDB(t)
			p := startProxy(t, Config{UpstreamDSN: up, NoEventLoop: m.noLoop}, m.router)
			ctx := ctxT(t)
			db, err := sql.Open("postgres", p.dsn("", ""))
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if _, err := db.ExecContext(ctx, `CREATE TABLE items (id serial PRIMARY KEY, name text, note text)`); err != nil {
				t.Fatal(err)
			}
			stmt, err := db.PrepareContext(ctx, `INSERT INTO items (name, note) VALUES ($1, $2)`)
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 5; i++ {
				var note any
				if i%2 == 0 {
					note = fmt.Sprint("n", i)
				}
				if _, err := stmt.ExecContext(ctx, fmt.Sprint("item", i), note); err != nil {
					t.Fatal(err)
				}
			}
			stmt.Close()
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			cp, err := tx.Prepare(`COPY items (name, note) FROM STDIN`)
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 100; i++ {
				if _, err := cp.Exec(fmt.Sprint("copied", i), nil); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := cp.Exec(); err != nil {
				t.Fatal(err)
			}
			cp.Close()
			if err := tx.Commit(); err != nil {
				t.Fatal(err)
			}
			rows, err := db.QueryContext(ctx, `SELECT name, note FROM items WHERE name LIKE 'item%' ORDER BY id`)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for rows.Next() {
				var name string
				var note sql.NullString
				if err := rows.Scan(&name, &note); err != nil {
					t.Fatal(err)
				}
				got = append(got, fmt.Sprintf("%s=%v", name, note.Valid))
			}
			rows.Close()
			if strings.Join(got, ",") != "item0=true,item1=false,item2=true,item3=false,item4=true" {
				t.Fatalf("rows: %v", got)
			}
			var cnt int
			if err := db.QueryRowContext(ctx, `SELECT count(*) FROM items WHERE note IS NULL`).Scan(&cnt); err != nil || cnt != 102 {
				t.Fatalf("count: %d %v", cnt, err)
			}
			_, err = db.ExecContext(ctx, `INSERT INTO items (id) VALUES (1)`)
			var pqe *pq.Error
			if !errors.As(err, &pqe) || pqe.Code != "23505" {
				t.Fatalf("lib/pq error: %v", err)
			}
			tx, _ = db.BeginTx(ctx, nil)
			_, _ = tx.Exec(`INSERT INTO items (name) VALUES ('rolled back')`)
			_ = tx.Rollback()
			if err := db.QueryRowContext(ctx, `SELECT count(*) FROM items WHERE name = 'rolled back'`).Scan(&cnt); err != nil || cnt != 0 {
				t.Fatalf("rollback: %d %v", cnt, err)
			}
		})
	}
}

func TestPsql(t *testing.T) {
	bin := filepath.Join(testenv.PostgresBinDir(t), "psql")
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			up := testenv.PostgresDB(t)
			p := startProxy(t, Config{UpstreamDSN: up, NoEventLoop: m.noLoop}, m.router)
			script := `
CREATE TABLE p (id int PRIMARY KEY, v text);
\copy p FROM STDIN
1	one
2	two
3	\N
\.
PREPARE q(int) AS SELECT v FROM p WHERE id = $1;
EXECUTE q(2);
SELECT count(*), count(v) FROM p; SELECT 'multi';
BEGIN;
UPDATE p SET v = 'uno' WHERE id = 1;
COMMIT;
\copy (SELECT id, v FROM p ORDER BY id) TO STDOUT
`
			cmd := exec.Command(bin, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", p.dsn("", ""))
			cmd.Stdin = strings.NewReader(script)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("psql: %v\n%s", err, out)
			}
			want := "CREATE TABLE\nCOPY 3\nPREPARE\ntwo\n3|2\nmulti\nBEGIN\nUPDATE 1\nCOMMIT\n1\tuno\n2\ttwo\n3\t\\N\n"
			if string(out) != want {
				t.Fatalf("psql output:\n%s\nwant:\n%s", out, want)
			}
			cmd = exec.Command(bin, "-X", "-v", "ON_ERROR_STOP=1", "-v", "VERBOSITY=verbose", "-c", "SELECT 1/0", p.dsn("", ""))
			out, _ = cmd.CombinedOutput()
			if !strings.Contains(string(out), "22012") {
				t.Fatalf("psql error output lacks SQLSTATE: %s", out)
			}
		})
	}
}

// TestSlowReader checks backpressure: a client that stops reading a large
// result does not lose or reorder data.
func TestSlowReader(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			up := testenv.PostgresDB(t)
			p := startProxy(t, Config{UpstreamDSN: up, NoEventLoop: m.noLoop}, m.router)
			r := dialRaw(t, p.addr)
			r.startup()
			r.fe.Send(&pgproto3.Query{String: `SELECT i, repeat('x', 1000) FROM generate_series(1, 20000) i; SELECT 'after'`})
			if err := r.fe.Flush(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(500 * time.Millisecond)
			rows, next := 0, int64(1)
			var after bool
			for {
				msg, err := r.fe.Receive()
				if err != nil {
					t.Fatal(err)
				}
				switch m := msg.(type) {
				case *pgproto3.DataRow:
					if string(m.Values[0]) == "after" {
						after = true
						continue
					}
					if string(m.Values[0]) != strconv.FormatInt(next, 10) || len(m.Values[1]) != 1000 {
						t.Fatalf("row %d: %q", next, m.Values[0])
					}
					next++
					rows++
				case *pgproto3.ErrorResponse:
					t.Fatalf("error: %s", m.Message)
				}
				if _, ok := msg.(*pgproto3.ReadyForQuery); ok {
					break
				}
			}
			if rows != 20000 || !after {
				t.Fatalf("rows %d, after %v", rows, after)
			}
		})
	}
}
