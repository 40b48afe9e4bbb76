package translate

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/kvproxy/kvproxy/internal/testenv"
)

// legacyDB connects to a fresh database with the legacy schema loaded.
func legacyDB(t *testing.T) *pgconn.PgConn {
	t.Helper()
	dsn := testenv.PostgresDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := pgconn.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	schema, err := os.ReadFile(filepath.Join(testenv.RepoRoot(t), "tests", "legacy", "schema.sql"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, string(schema)).ReadAll(); err != nil {
		t.Fatalf("load schema: %v", err)
	}
	return conn
}

func relationOIDs(t *testing.T, conn *pgconn.PgConn) map[string]uint32 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res := conn.ExecParams(ctx, CatalogQuery, nil, nil, nil, nil).Read()
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	out := map[string]uint32{}
	for _, row := range res.Rows {
		var oid uint64
		for _, c := range row[1] {
			oid = oid*10 + uint64(c-'0')
		}
		out[string(row[0])] = uint32(oid)
	}
	if len(out) != 6 {
		t.Fatalf("catalog: %v", out)
	}
	return out
}

// TestDescribeMatchesPostgres prepares every fixture (and its
// literal-inlined variant) on a real PostgreSQL with the legacy schema and
// compares ParameterDescription and RowDescription with the Plan's.
func TestDescribeMatchesPostgres(t *testing.T) {
	conn := legacyDB(t)
	rel := relationOIDs(t, conn)
	withOIDs := New(Options{RelationOIDs: rel})
	without := New(Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	for _, f := range legacyFixtures {
		if f.shape.Kind() == Transaction || f.shape == EmptyQuery || f.shape == Deallocate || f.shape == DeallocateAll {
			continue
		}
		texts := map[string]string{"exact": f.sql}
		if f.shape.Kind() == RefStore {
			texts["inlined"] = inlineAll(t, without, f.sql)
		}
		for vname, sql := range texts {
			t.Run(f.name+"/"+vname, func(t *testing.T) {
				sd, err := conn.Prepare(ctx, "", sql, nil)
				if err != nil {
					t.Fatalf("prepare %q: %v", sql, err)
				}
				p := planOf(t, withOIDs, sql)
				if len(sd.ParamOIDs) != len(p.ParamOIDs) {
					t.Fatalf("ParamOIDs: postgres %v, plan %v", sd.ParamOIDs, p.ParamOIDs)
				}
				for i := range sd.ParamOIDs {
					if sd.ParamOIDs[i] != p.ParamOIDs[i] {
						t.Errorf("$%d: postgres OID %d, plan %d", i+1, sd.ParamOIDs[i], p.ParamOIDs[i])
					}
				}
				descs, err := p.FieldDescriptions(nil)
				if err != nil {
					t.Fatal(err)
				}
				if len(sd.Fields) != len(descs) {
					t.Fatalf("fields: postgres %d, plan %d", len(sd.Fields), len(descs))
				}
				bare := planOf(t, without, sql)
				for i, pf := range sd.Fields {
					mf := descs[i]
					if string(pf.Name) != string(mf.Name) || pf.TableOID != mf.TableOID || pf.TableAttributeNumber != mf.TableAttributeNumber ||
						pf.DataTypeOID != mf.DataTypeOID || pf.DataTypeSize != mf.DataTypeSize || pf.TypeModifier != mf.TypeModifier || pf.Format != mf.Format {
						t.Errorf("field %d: postgres %+v, plan %+v", i, pf, mf)
					}
					if bf := bare.Fields[i]; bf.TableOID != 0 || bf.AttrNum != 0 || bf.TypeOID != pf.DataTypeOID {
						t.Errorf("field %d without catalog: %+v", i, bf)
					}
				}
			})
		}
	}
}
