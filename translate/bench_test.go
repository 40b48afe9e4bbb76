package translate

import (
	"testing"
	"time"
)

// sampleParam is a typical parameter value in pgx's format for the type.
func sampleParam(oid uint32) []byte {
	switch oid {
	case OIDBytea:
		return []byte("data/2024/03/object-key.parquet")
	case OIDTimestamptz:
		return be64(timeToPGMicros(time.Date(2024, 3, 1, 12, 0, 0, 123456000, time.UTC)))
	case OIDTextArray:
		return appendTextArrayBinary(nil, []string{"3f5c0e1a9b7d4c2e8f6a1b3c5d7e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e"})
	case OIDJSONB:
		return []byte(`{"user":"alice","lakefs.commit.type":"merge"}`)
	case OIDInt4:
		return be32(1)
	case OIDInt8:
		return be64(1000)
	}
	return []byte("repository-name-0123")
}

func sampleValue(oid uint32) Value {
	switch oid {
	case OIDBytea:
		return ByteaValue([]byte("0123456789abcdef0123456789abcdef"))
	case OIDTimestamptz:
		return TimestamptzValue(time.Date(2024, 3, 1, 12, 0, 0, 123456000, time.UTC))
	case OIDTextArray:
		return TextArrayValue([]string{"3f5c0e1a9b7d4c2e8f6a1b3c5d7e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e"})
	case OIDJSONB:
		return JSONBValue([]byte(`{"user": "alice", "lakefs.commit.type": "merge"}`))
	case OIDInt4:
		return Int4Value(7)
	case OIDInt8:
		return Int8Value(1)
	case OIDVoid:
		return VoidValue()
	}
	return TextValue("3f5c0e1a9b7d4c2e8f6a1b3c5d7e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e")
}

func benchFixtures(b *testing.B) (*Translator, []fixture) {
	tr := New(Options{})
	var out []fixture
	seen := map[Shape]bool{}
	for _, f := range legacyFixtures {
		if seen[f.shape] {
			continue
		}
		seen[f.shape] = true
		if _, err := tr.Plan(f.sql); err != nil {
			b.Fatal(err)
		}
		out = append(out, f)
	}
	return tr, out
}

func BenchmarkPlanCached(b *testing.B) {
	tr, fs := benchFixtures(b)
	for _, f := range fs {
		b.Run(f.shape.String(), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := tr.Plan(f.sql); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkPlanUncached(b *testing.B) {
	_, fs := benchFixtures(b)
	for _, f := range fs {
		b.Run(f.shape.String(), func(b *testing.B) {
			b.ReportAllocs()
			tr := New(Options{CacheSize: 1})
			for b.Loop() {
				if _, err := tr.build(f.sql); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDecodeParams(b *testing.B) {
	tr, fs := benchFixtures(b)
	for _, f := range fs {
		p, _ := tr.Plan(f.sql)
		if p.Kind != RefStore {
			continue
		}
		formats := make([]int16, len(p.ParamOIDs))
		values := make([][]byte, len(p.ParamOIDs))
		for i, o := range p.ParamOIDs {
			formats[i], values[i] = pgxFormat(o), sampleParam(o)
		}
		b.Run(f.shape.String(), func(b *testing.B) {
			b.ReportAllocs()
			var dst []Value
			for b.Loop() {
				var err error
				if dst, err = p.DecodeArgsInto(dst, UTC, "", formats, values); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkEncodeRow(b *testing.B) {
	tr, fs := benchFixtures(b)
	for _, f := range fs {
		p, _ := tr.Plan(f.sql)
		if len(p.Fields) == 0 {
			continue
		}
		row := make([]Value, len(p.Fields))
		formats := make([]int16, len(p.Fields))
		for i, fd := range p.Fields {
			row[i], formats[i] = sampleValue(fd.TypeOID), pgxFormat(fd.TypeOID)
		}
		b.Run(f.shape.String(), func(b *testing.B) {
			b.ReportAllocs()
			var dst [][]byte
			var buf []byte
			for b.Loop() {
				var err error
				if dst, buf, err = p.EncodeRow(UTC, formats, row, dst[:0], buf[:0]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
