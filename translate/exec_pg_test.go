package translate

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// pgxFormat is the format pgx v4 uses for a type, for parameters and
// results alike (spec §3.0).
func pgxFormat(oid uint32) int16 {
	switch oid {
	case OIDText, OIDVarchar, OIDJSONB:
		return 0
	}
	return 1
}

func be64(v int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(v)) }
func be32(v int32) []byte { return binary.BigEndian.AppendUint32(nil, uint32(v)) }

// TestStatementsMatchPostgres runs write statements on the real server with
// parameters as pgx sends them, then the matching read with pgx's result
// formats, and requires EncodeRow, fed with the values DecodeParams got
// from the write's parameters, to produce exactly PostgreSQL's DataRow.
func TestStatementsMatchPostgres(t *testing.T) {
	conn := legacyDB(t)
	sess := setTimeZone(t, conn, "Europe/Berlin")
	tr := New(Options{})
	byName := map[string]string{}
	for _, f := range legacyFixtures {
		byName[f.name] = f.sql
	}
	created := time.Date(1999, 12, 31, 23, 59, 59, 123456000, time.UTC)
	textArr := appendTextArrayBinary(nil, []string{"p1", "p 2,\"x\""})
	cases := []struct {
		name        string
		write       string
		params      [][]byte
		read        string
		readParams  [][]byte
		pick        []int // which decoded write args make up the read's row, in column order
		writeTag    string
		wantRowsTag string
	}{
		{"repository", "R2", [][]byte{[]byte("repo1"), []byte("s3://bucket/ns"), be64(timeToPGMicros(created)), []byte("main")},
			"R1", [][]byte{[]byte("repo1")}, []int{1, 2, 3}, "INSERT 0 1", "SELECT 1"},
		{"branch", "B3", [][]byte{[]byte("repo1"), []byte("main"), []byte("repo1-main:tok"), []byte("c0ffee")},
			"B1", [][]byte{[]byte("repo1"), []byte("main")}, []int{3, 2}, "INSERT 0 1", "SELECT 1"},
		{"tag", "T2", [][]byte{[]byte("repo1"), []byte("v1"), []byte("c0ffee")},
			"T1", [][]byte{[]byte("repo1"), []byte("v1")}, []int{2}, "INSERT 0 1", "SELECT 1"},
		{"commit", "C3", [][]byte{[]byte("repo1"), []byte("c0ffee"), []byte("alice"), []byte("msg ünï\n"), be64(timeToPGMicros(created)),
			textArr, []byte("mr1"), []byte(`{"b":"2","a":"1","aa":"x"}`), be32(1), be32(3)},
			"C1", [][]byte{[]byte("repo1"), []byte("c0ffee")}, []int{2, 3, 4, 5, 6, 7, 8, 9}, "INSERT 0 1", "SELECT 1"},
		{"first commit", "C3", [][]byte{[]byte("repo1"), []byte("f00d"), []byte(""), []byte(""), be64(timeToPGMicros(created)),
			nil, []byte(""), []byte(`null`), be32(1), be32(1)},
			"C1", [][]byte{[]byte("repo1"), []byte("f00d")}, []int{2, 3, 4, 5, 6, 7, 8, 9}, "INSERT 0 1", "SELECT 1"},
		{"staging", "S3", [][]byte{[]byte("repo1-main:tok"), {0, 1, 0xff}, {9, 9}, []byte("data\x00")},
			"S1", [][]byte{[]byte("repo1-main:tok"), {0, 1, 0xff}}, []int{2, 3}, "INSERT 0 1", "SELECT 1"},
		{"tombstone", "S3", [][]byte{[]byte("repo1-main:tok"), {0, 2}, nil, nil},
			"S1", [][]byte{[]byte("repo1-main:tok"), {0, 2}}, []int{2, 3}, "INSERT 0 1", "SELECT 1"},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			wp := planOf(t, tr, byName[c.write])
			formats := make([]int16, len(wp.ParamOIDs))
			for i, o := range wp.ParamOIDs {
				formats[i] = pgxFormat(o)
			}
			args, err := wp.DecodeArgs(sess, "", formats, c.params)
			if err != nil {
				t.Fatalf("DecodeArgs: %v", err)
			}
			res := conn.ExecParams(ctx, wp.SQL, c.params, wp.ParamOIDs, formats, nil).Read()
			if res.Err != nil {
				t.Fatalf("postgres %s: %v", c.write, res.Err)
			}
			if got := res.CommandTag.String(); got != CommandTag(wp.Command(), 1) || got != c.writeTag {
				t.Fatalf("tag: postgres %q, ours %q", got, CommandTag(wp.Command(), 1))
			}
			rp := planOf(t, tr, byName[c.read])
			rformats := make([]int16, len(rp.ParamOIDs))
			for i, o := range rp.ParamOIDs {
				rformats[i] = pgxFormat(o)
			}
			resFormats := make([]int16, len(rp.Fields))
			for i, f := range rp.Fields {
				resFormats[i] = pgxFormat(f.TypeOID)
			}
			res = conn.ExecParams(ctx, rp.SQL, c.readParams, rp.ParamOIDs, rformats, resFormats).Read()
			if res.Err != nil || len(res.Rows) != 1 {
				t.Fatalf("postgres %s: %v, %d rows", c.read, res.Err, len(res.Rows))
			}
			if got := res.CommandTag.String(); got != CommandTag(rp.Command(), 1) || got != c.wantRowsTag {
				t.Fatalf("tag: postgres %q, ours %q", got, CommandTag(rp.Command(), 1))
			}
			row := make([]Value, len(c.pick))
			for i, k := range c.pick {
				row[i] = args[k]
			}
			enc, _, err := rp.EncodeRow(sess, resFormats, row, nil, nil)
			if err != nil {
				t.Fatalf("EncodeRow: %v", err)
			}
			for i := range enc {
				pgv := res.Rows[0][i]
				if (pgv == nil) != (enc[i] == nil) || !bytes.Equal(pgv, enc[i]) {
					t.Errorf("column %s: postgres %q, ours %q", rp.Fields[i].Name, pgv, enc[i])
				}
			}
		})
	}

	t.Run("wrong parameter count", func(t *testing.T) {
		p := planOf(t, tr, byName["B1"])
		if _, err := conn.Prepare(ctx, "b1", p.SQL, nil); err != nil {
			t.Fatal(err)
		}
		res := conn.ExecPrepared(ctx, "b1", [][]byte{[]byte("repo1")}, nil, nil).Read()
		var pe *pgconn.PgError
		if !errors.As(res.Err, &pe) {
			t.Fatalf("postgres accepted 1 parameter: %v", res.Err)
		}
		_, err := p.DecodeParams(sess, "b1", nil, [][]byte{[]byte("repo1")})
		var e *Error
		if !errors.As(err, &e) || e.Code != pe.Code || e.Message != pe.Message {
			t.Fatalf("ours %v, postgres %s %q", err, pe.Code, pe.Message)
		}
	})
}
