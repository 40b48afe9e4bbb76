package refstore

import (
	"bytes"
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/kvproxy/kvproxy/internal/testenv"
	"github.com/kvproxy/kvproxy/refstore/graveler"
	"google.golang.org/protobuf/proto"
)

func sp(s string) *string { return &s }
func ip(i int32) *int32   { return &i }

// viaWire converts to proto, marshals, unmarshals and converts back, as a
// trip through the KV store does.
func viaWire[R any, M proto.Message](t *testing.T, r R, to func(R) (M, error), from func(M) R, fresh M) (R, error) {
	t.Helper()
	m, err := to(r)
	if err != nil {
		var zero R
		return zero, err
	}
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := proto.Unmarshal(b, fresh); err != nil {
		t.Fatal(err)
	}
	return from(fresh), nil
}

func TestRepositoryRowRoundTrip(t *testing.T) {
	local := time.FixedZone("X", 3*3600)
	tests := []struct {
		name    string
		row     RepositoryRow
		want    RepositoryRow
		wantErr error
	}{
		{
			name: "local time with nanoseconds",
			row:  RepositoryRow{ID: "r", StorageNamespace: "s3://b/p", CreationDate: time.Date(2022, 6, 1, 10, 0, 0, 123456789, local), DefaultBranch: "main"},
			want: RepositoryRow{ID: "r", StorageNamespace: "s3://b/p", CreationDate: time.Date(2022, 6, 1, 7, 0, 0, 123456000, time.UTC), DefaultBranch: "main"},
		},
		{name: "empty id", row: RepositoryRow{}, wantErr: ErrInvalidRow},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := viaWire(t, tc.row, func(r RepositoryRow) (*graveler.RepositoryData, error) { return RepositoryToProto(r, "uid") },
				RepositoryFromProto, &graveler.RepositoryData{})
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err %v, want %v", err, tc.wantErr)
			}
			if err == nil && (!got.CreationDate.Equal(tc.want.CreationDate) || got.CreationDate.Location() != time.UTC ||
				got.ID != tc.want.ID || got.StorageNamespace != tc.want.StorageNamespace || got.DefaultBranch != tc.want.DefaultBranch) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestBranchAndTagRowRoundTrip(t *testing.T) {
	branches := []struct {
		name    string
		row     BranchRow
		wantErr string
	}{
		{name: "plain", row: BranchRow{RepositoryID: "r", ID: "main", StagingToken: sp("r-main:uuid"), CommitID: sp("abc")}},
		{name: "sql era commit token", row: BranchRow{RepositoryID: "r", ID: "feature/x", StagingToken: sp("r-feature/x-uuid"), CommitID: sp("")}},
		{name: "null token", row: BranchRow{RepositoryID: "r", ID: "b", CommitID: sp("c")}, wantErr: "staging_token is NULL"},
		{name: "null commit", row: BranchRow{RepositoryID: "r", ID: "b", StagingToken: sp("t")}, wantErr: "commit_id is NULL"},
		{name: "empty id", row: BranchRow{RepositoryID: "r", StagingToken: sp("t"), CommitID: sp("c")}, wantErr: "empty branch id"},
	}
	for _, tc := range branches {
		t.Run("branch/"+tc.name, func(t *testing.T) {
			got, err := viaWire(t, tc.row, BranchToProto, func(m *graveler.BranchData) BranchRow { return BranchFromProto("r", m) }, &graveler.BranchData{})
			checkRow(t, got, tc.row, err, tc.wantErr)
		})
	}
	tags := []struct {
		name    string
		row     TagRow
		wantErr string
	}{
		{name: "plain", row: TagRow{RepositoryID: "r", ID: "v1.0", CommitID: sp("abc")}},
		{name: "null commit", row: TagRow{RepositoryID: "r", ID: "v1"}, wantErr: "commit_id is NULL"},
	}
	for _, tc := range tags {
		t.Run("tag/"+tc.name, func(t *testing.T) {
			got, err := viaWire(t, tc.row, TagToProto, func(m *graveler.TagData) TagRow { return TagFromProto("r", m) }, &graveler.TagData{})
			checkRow(t, got, tc.row, err, tc.wantErr)
		})
	}
}

func checkRow[R any](t *testing.T, got, want R, err error, wantErr string) {
	t.Helper()
	if wantErr != "" {
		if !errors.Is(err, ErrInvalidRow) || !strings.Contains(err.Error(), wantErr) {
			t.Fatalf("err %v, want ErrInvalidRow containing %q", err, wantErr)
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}

func commitRow(mut func(*CommitRow)) CommitRow {
	r := CommitRow{RepositoryID: "r", Committer: "alice", Message: "m", CreationDate: time.Date(2022, 7, 1, 12, 0, 0, 5000, time.UTC),
		MetaRangeID: "mr", Metadata: []byte("null"), Parents: []string{"p"}, Version: 1, Generation: ip(2)}
	mut(&r)
	if r.ID == "" {
		r.ID, _ = CommitRowID(r) // bad metadata: no id, the test expects an error
		if r.ID == "" {
			r.ID = "x"
		}
	}
	return r
}

func TestCommitRowRoundTrip(t *testing.T) {
	tests := []struct {
		name    string
		row     CommitRow
		want    func(*CommitRow) // how the row reads back from KV, nil: unchanged
		wantErr string
	}{
		{name: "first commit", row: commitRow(func(r *CommitRow) {
			r.Committer, r.Message, r.MetaRangeID, r.Parents, r.Generation = "", "Repository created", "", nil, ip(1)
		})},
		{name: "nanoseconds truncated to microseconds", row: commitRow(func(r *CommitRow) { r.CreationDate = r.CreationDate.Add(999) }),
			want: func(r *CommitRow) { r.CreationDate = r.CreationDate.Truncate(time.Microsecond) }},
		{name: "version 0 merge keeps parent order", row: commitRow(func(r *CommitRow) {
			r.Version, r.Parents, r.Generation = 0, []string{"second", "first"}, ip(9)
		})},
		{name: "sql null metadata", row: commitRow(func(r *CommitRow) { r.Metadata = nil }),
			want: func(r *CommitRow) { r.Metadata = []byte("null") }},
		{name: "empty object metadata", row: commitRow(func(r *CommitRow) { r.Metadata = []byte("{}") }),
			want: func(r *CommitRow) { r.Metadata = []byte("null") }},
		{name: "unicode metadata", row: commitRow(func(r *CommitRow) {
			r.Metadata = []byte(`{"a\"b": "c\\d\n", "ключ": "値 😀", "z": "\u0001"}`)
		})},
		{name: "empty parents array reads back NULL", row: commitRow(func(r *CommitRow) { r.Parents = []string{} }),
			want: func(r *CommitRow) { r.Parents = nil }},
		{name: "generation zero is kept", row: commitRow(func(r *CommitRow) { r.Generation = ip(0) })},
		{name: "negative version kept", row: commitRow(func(r *CommitRow) { r.Version = -1 })},
		{name: "id kept verbatim", row: commitRow(func(r *CommitRow) { r.ID = "not-a-hash" })},
		{name: "null generation", row: commitRow(func(r *CommitRow) { r.Generation = nil }), wantErr: "generation is NULL"},
		{name: "metadata array", row: commitRow(func(r *CommitRow) { r.Metadata = []byte("[1]") }), wantErr: "metadata"},
		{name: "metadata number value", row: commitRow(func(r *CommitRow) { r.Metadata = []byte(`{"a":1}`) }), wantErr: "metadata"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want := tc.row
			want.Parents = append([]string(nil), tc.row.Parents...)
			if tc.want != nil {
				tc.want(&want)
			}
			got, err := viaWire(t, tc.row, CommitToProto, func(m *graveler.CommitData) CommitRow { return CommitFromProto("r", m) }, &graveler.CommitData{})
			if tc.wantErr == "" && err == nil {
				if tc.name != "id kept verbatim" {
					if id, _ := CommitRowID(got); id != tc.row.ID {
						t.Fatalf("content hash of the row read back %s, want %s", id, tc.row.ID)
					}
				}
				// Compare metadata as maps; its text is checked against
				// PostgreSQL in TestMetadataJSONMatchesPostgres.
				gm, _ := ParseMetadata(got.Metadata)
				wm, _ := ParseMetadata(want.Metadata)
				if !reflect.DeepEqual(gm, wm) {
					t.Fatalf("metadata %q, want %q", got.Metadata, want.Metadata)
				}
				if len(wm) == 0 && string(got.Metadata) != "null" {
					t.Fatalf("empty metadata reads back as %q, want null", got.Metadata)
				}
				got.Metadata, want.Metadata = nil, nil
				if !got.CreationDate.Equal(want.CreationDate) {
					t.Fatalf("creation %v, want %v", got.CreationDate, want.CreationDate)
				}
				got.CreationDate = want.CreationDate
			}
			checkRow(t, got, want, err, tc.wantErr)
		})
	}
}

func TestStagingRowRoundTrip(t *testing.T) {
	tests := []struct {
		name    string
		row     StagingRow
		want    *StagingRow
		wantErr string
	}{
		{name: "live", row: StagingRow{StagingToken: "r-b:u", Key: []byte("a/b.txt"), Identity: []byte{1, 2, 3}, Data: []byte{9, 8}}},
		{name: "binary key", row: StagingRow{StagingToken: "r-b-u", Key: []byte{0xff, 0, 'x'}, Identity: []byte{1}, Data: []byte{2}}},
		{name: "tombstone", row: StagingRow{StagingToken: "t", Key: []byte("gone")}},
		{name: "tombstone with data", row: StagingRow{StagingToken: "t", Key: []byte("k"), Data: []byte{1}}},
		{name: "live with null data", row: StagingRow{StagingToken: "t", Key: []byte("k"), Identity: []byte{1}},
			want: &StagingRow{StagingToken: "t", Key: []byte("k"), Identity: []byte{1}, Data: []byte{}}},
		{name: "empty identity", row: StagingRow{StagingToken: "t", Key: []byte("k"), Identity: []byte{}}, wantErr: "identity is empty"},
		{name: "empty key", row: StagingRow{StagingToken: "t", Identity: []byte{1}}, wantErr: "empty key"},
		{name: "empty token", row: StagingRow{Key: []byte("k")}, wantErr: "empty staging token"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want := tc.row
			if tc.want != nil {
				want = *tc.want
			}
			got, err := viaWire(t, tc.row, StagingToProto, func(m *graveler.StagedEntryData) StagingRow {
				if tc.wantErr == "" && !bytes.Equal(m.GetKey(), tc.row.Key) {
					t.Errorf("key inside the value %q, want %q", m.GetKey(), tc.row.Key)
				}
				return StagingFromProto(tc.row.StagingToken, tc.row.Key, m)
			}, &graveler.StagedEntryData{})
			checkRow(t, got, want, err, tc.wantErr)
		})
	}
}

// TestMetadataJSONMatchesPostgres checks that the jsonb text kvproxy
// returns for commit metadata is what PostgreSQL itself prints.
func TestMetadataJSONMatchesPostgres(t *testing.T) {
	dsn := testenv.PostgresDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	tests := []map[string]string{
		nil,
		{"a": "1"},
		{"bb": "x", "a": "y", "ccc": "z", "ab": "w"},
		{"ключ": "値 😀", "q\"uote": "back\\slash", "ctl": "\n\t\r\b\f\u0001\u001f", "html": "<a href='x'>&amp;</a>", "del": "\u007f"},
		{"": "empty key", "e": ""},
	}
	for _, m := range tests {
		got := MetadataJSON(m)
		var pg string
		if err := conn.QueryRow(ctx, "SELECT $1::jsonb::text", string(got)).Scan(&pg); err != nil {
			t.Fatalf("%q: %v", got, err)
		}
		if pg != string(got) {
			t.Errorf("kvproxy %s, PostgreSQL %s", got, pg)
		}
		back, err := ParseMetadata([]byte(pg))
		if err != nil || (len(m) > 0 && !reflect.DeepEqual(back, m)) {
			t.Errorf("parse %s = %v, %v; want %v", pg, back, err, m)
		}
	}
}
