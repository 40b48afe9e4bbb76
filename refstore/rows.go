package refstore

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/kvproxy/kvproxy/refstore/graveler"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// The row structs mirror the SQL-era tables column by column (spec §2.3).
// A pointer or nil slice is SQL NULL. Conversions to protobuf either keep
// every value or return ErrInvalidRow naming the column; conversions from
// protobuf never fail and say in their comments which SQL form they pick
// where KV cannot tell two SQL values apart.

// RepositoryRow is a row of graveler_repositories.
type RepositoryRow struct {
	ID               string
	StorageNamespace string
	CreationDate     time.Time
	DefaultBranch    string
}

// BranchRow is a row of graveler_branches. Both pointers are nullable in
// the DDL but never NULL in lakeFS; KV cannot store NULL, so a NULL is
// rejected rather than silently turned into "".
type BranchRow struct {
	RepositoryID string
	ID           string
	StagingToken *string
	CommitID     *string
}

// CommitRow is a row of graveler_commits.
type CommitRow struct {
	RepositoryID string
	ID           string
	Committer    string
	Message      string
	CreationDate time.Time
	MetaRangeID  string
	// Metadata is the jsonb column as JSON text, nil for SQL NULL.
	Metadata []byte
	// Parents is the text[] column in stored order, nil for SQL NULL.
	Parents    []string
	Version    int32
	Generation *int32
}

// TagRow is a row of graveler_tags. CommitID NULL is rejected, as for
// branches.
type TagRow struct {
	RepositoryID string
	ID           string
	CommitID     *string
}

// StagingRow is a row of graveler_staging_kv. Identity nil (SQL NULL) is a
// tombstone.
type StagingRow struct {
	StagingToken string
	Key          []byte
	Identity     []byte
	Data         []byte
}

// toTimestamp keeps what timestamptz can hold: microseconds.
func toTimestamp(t time.Time) *timestamppb.Timestamp {
	return timestamppb.New(t.Truncate(time.Microsecond))
}

// fromTimestamp reads a proto timestamp as a SQL row would show it: UTC,
// truncated to microseconds (native KV lakeFS writes nanoseconds).
func fromTimestamp(ts *timestamppb.Timestamp) time.Time {
	if ts == nil {
		return time.Unix(0, 0).UTC()
	}
	return ts.AsTime().Truncate(time.Microsecond)
}

// RepositoryToProto converts a repository row into the record lakeFS keeps
// under graveler/repos/<id>, ACTIVE, with the given instance uid.
func RepositoryToProto(r RepositoryRow, instanceUID string) (*graveler.RepositoryData, error) {
	if err := checkID("repository id", r.ID); err != nil {
		return nil, err
	}
	if instanceUID == "" {
		return nil, fmt.Errorf("%w: repository %q: empty instance uid", ErrInvalidRow, r.ID)
	}
	return &graveler.RepositoryData{
		Id:               r.ID,
		StorageNamespace: r.StorageNamespace,
		DefaultBranchId:  r.DefaultBranch,
		CreationDate:     toTimestamp(r.CreationDate),
		State:            graveler.RepositoryState_ACTIVE,
		InstanceUid:      instanceUID,
	}, nil
}

// RepositoryFromProto converts a repository record into its SQL row. State
// and instance uid have no column and are dropped.
func RepositoryFromProto(d *graveler.RepositoryData) RepositoryRow {
	return RepositoryRow{
		ID:               d.GetId(),
		StorageNamespace: d.GetStorageNamespace(),
		CreationDate:     fromTimestamp(d.GetCreationDate()),
		DefaultBranch:    d.GetDefaultBranchId(),
	}
}

// BranchToProto converts a branch row. Sealed tokens have no column: a row
// is a branch with none.
func BranchToProto(r BranchRow) (*graveler.BranchData, error) {
	if err := checkID("repository id", r.RepositoryID); err != nil {
		return nil, err
	}
	if err := checkID("branch id", r.ID); err != nil {
		return nil, err
	}
	if r.StagingToken == nil {
		return nil, fmt.Errorf("%w: branch %q/%q: staging_token is NULL, which the KV layout cannot hold", ErrInvalidRow, r.RepositoryID, r.ID)
	}
	if r.CommitID == nil {
		return nil, fmt.Errorf("%w: branch %q/%q: commit_id is NULL, which the KV layout cannot hold", ErrInvalidRow, r.RepositoryID, r.ID)
	}
	return &graveler.BranchData{Id: r.ID, CommitId: *r.CommitID, StagingToken: *r.StagingToken}, nil
}

// BranchFromProto converts a branch record into its SQL row; both nullable
// columns come back non-NULL.
func BranchFromProto(repoID string, d *graveler.BranchData) BranchRow {
	token, commit := d.GetStagingToken(), d.GetCommitId()
	return BranchRow{RepositoryID: repoID, ID: d.GetId(), StagingToken: &token, CommitID: &commit}
}

// TagToProto converts a tag row.
func TagToProto(r TagRow) (*graveler.TagData, error) {
	if err := checkID("repository id", r.RepositoryID); err != nil {
		return nil, err
	}
	if err := checkID("tag id", r.ID); err != nil {
		return nil, err
	}
	if r.CommitID == nil {
		return nil, fmt.Errorf("%w: tag %q/%q: commit_id is NULL, which the KV layout cannot hold", ErrInvalidRow, r.RepositoryID, r.ID)
	}
	return &graveler.TagData{Id: r.ID, CommitId: *r.CommitID}, nil
}

// TagFromProto converts a tag record into its SQL row.
func TagFromProto(repoID string, d *graveler.TagData) TagRow {
	commit := d.GetCommitId()
	return TagRow{RepositoryID: repoID, ID: d.GetId(), CommitID: &commit}
}

// CommitToProto converts a commit row. The id is kept verbatim (lakeFS's
// own migration does the same); CommitRowID tells whether it is the content
// hash of the other columns. A NULL generation is rejected: it would be 0
// in KV, and lakeFS rejects commits with generation 0.
func CommitToProto(r CommitRow) (*graveler.CommitData, error) {
	if err := checkID("repository id", r.RepositoryID); err != nil {
		return nil, err
	}
	if err := checkID("commit id", r.ID); err != nil {
		return nil, err
	}
	if r.Generation == nil {
		return nil, fmt.Errorf("%w: commit %q/%q: generation is NULL; lakeFS rejects commits without a generation (fill it as FillGenerations does: root 1, child parent+1, merge max+1)", ErrInvalidRow, r.RepositoryID, r.ID)
	}
	md, err := ParseMetadata(r.Metadata)
	if err != nil {
		return nil, fmt.Errorf("commit %q/%q: %w", r.RepositoryID, r.ID, err)
	}
	return &graveler.CommitData{
		Id:           r.ID,
		Committer:    r.Committer,
		Message:      r.Message,
		CreationDate: toTimestamp(r.CreationDate),
		MetaRangeId:  r.MetaRangeID,
		Metadata:     md,
		Parents:      slices.Clone(r.Parents),
		Version:      r.Version,
		Generation:   *r.Generation,
	}, nil
}

// CommitFromProto converts a commit record into its SQL row. Empty parents
// come back as NULL (lakeFS never writes '{}'); empty metadata comes back as
// the JSON text null, which is what lakeFS writes for a commit without
// metadata; other metadata as PostgreSQL prints jsonb.
func CommitFromProto(repoID string, d *graveler.CommitData) CommitRow {
	gen := d.GetGeneration()
	var parents []string
	if len(d.GetParents()) > 0 {
		parents = slices.Clone(d.GetParents())
	}
	return CommitRow{
		RepositoryID: repoID,
		ID:           d.GetId(),
		Committer:    d.GetCommitter(),
		Message:      d.GetMessage(),
		CreationDate: fromTimestamp(d.GetCreationDate()),
		MetaRangeID:  d.GetMetaRangeId(),
		Metadata:     MetadataJSON(d.GetMetadata()),
		Parents:      parents,
		Version:      d.GetVersion(),
		Generation:   &gen,
	}
}

// CommitRowID returns the content-hash id of a commit row's fields (spec
// §9.1), which equals r.ID for every commit lakeFS wrote.
func CommitRowID(r CommitRow) (string, error) {
	md, err := ParseMetadata(r.Metadata)
	if err != nil {
		return "", err
	}
	return CommitID(CommitContent{
		Committer: r.Committer, Message: r.Message, MetaRangeID: r.MetaRangeID,
		CreationDate: r.CreationDate, Metadata: md, Parents: r.Parents,
	}), nil
}

// CommitDataID is CommitRowID for a stored commit record.
func CommitDataID(d *graveler.CommitData) string {
	return CommitID(CommitContent{
		Committer: d.GetCommitter(), Message: d.GetMessage(), MetaRangeID: d.GetMetaRangeId(),
		CreationDate: d.GetCreationDate().AsTime(), Metadata: d.GetMetadata(), Parents: d.GetParents(),
	})
}

// StagingToProto converts a staging row into the value stored under the
// raw key in the token's partition; the key is repeated inside the value,
// as lakeFS reads it from there. A zero-length but non-NULL identity is
// rejected: proto3 cannot tell it from a tombstone.
func StagingToProto(r StagingRow) (*graveler.StagedEntryData, error) {
	if r.StagingToken == "" {
		return nil, fmt.Errorf("%w: empty staging token", ErrInvalidRow)
	}
	if len(r.Key) == 0 {
		return nil, fmt.Errorf("%w: staging %q: empty key", ErrInvalidRow, r.StagingToken)
	}
	if r.Identity != nil && len(r.Identity) == 0 {
		return nil, fmt.Errorf("%w: staging %q key %q: identity is empty but not NULL, which KV would read back as a tombstone", ErrInvalidRow, r.StagingToken, r.Key)
	}
	return &graveler.StagedEntryData{Key: bytes.Clone(r.Key), Identity: bytes.Clone(r.Identity), Data: bytes.Clone(r.Data)}, nil
}

// StagingFromProto converts a staged value into its SQL row. A tombstone
// (no identity) has Identity nil and Data nil unless data was stored; a
// live entry always has non-NULL Data (empty if none was stored). The key
// is taken from the value, as lakeFS's staging iterator does; kvKey is used
// only when the value carries none.
func StagingFromProto(token string, kvKey []byte, d *graveler.StagedEntryData) StagingRow {
	key := d.GetKey()
	if len(key) == 0 {
		key = kvKey
	}
	r := StagingRow{StagingToken: token, Key: bytes.Clone(key)}
	if len(d.GetIdentity()) == 0 {
		if len(d.GetData()) > 0 {
			r.Data = bytes.Clone(d.GetData())
		}
		return r
	}
	r.Identity = bytes.Clone(d.GetIdentity())
	r.Data = append([]byte{}, d.GetData()...)
	return r
}

// ParseMetadata reads a commit's metadata column. SQL NULL, the JSON text
// null and {} are all the empty map (nil); anything else must be a JSON
// object of strings.
func ParseMetadata(text []byte) (map[string]string, error) {
	if len(bytes.TrimSpace(text)) == 0 {
		return nil, nil
	}
	var m map[string]string
	if err := json.Unmarshal(text, &m); err != nil {
		return nil, fmt.Errorf("%w: metadata is not a JSON object of strings: %v", ErrInvalidRow, err)
	}
	if len(m) == 0 {
		return nil, nil
	}
	return m, nil
}

// MetadataJSON renders metadata as PostgreSQL prints a jsonb value, so the
// SQL view of a KV commit is byte-identical to what PostgreSQL would return:
// keys shorter first, then bytewise; ": " and ", " separators; only '"',
// '\' and control characters escaped. The empty map is "null", the text
// lakeFS stores for a commit without metadata.
func MetadataJSON(m map[string]string) []byte {
	if len(m) == 0 {
		return []byte("null")
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		if len(a) != len(b) {
			return len(a) - len(b)
		}
		return strings.Compare(a, b)
	})
	var b bytes.Buffer
	b.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		jsonbString(&b, k)
		b.WriteString(": ")
		jsonbString(&b, m[k])
	}
	b.WriteByte('}')
	return b.Bytes()
}

// jsonbString follows PostgreSQL's escape_json.
func jsonbString(b *bytes.Buffer, s string) {
	b.WriteByte('"')
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			// Invalid UTF-8 cannot be in jsonb; write the replacement
			// character as encoding/json would have decoded it.
			b.WriteString("\ufffd")
			i++
			continue
		}
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\b':
			b.WriteString(`\b`)
		case '\f':
			b.WriteString(`\f`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		default:
			if r < 0x20 {
				fmt.Fprintf(b, `\u%04x`, r)
			} else {
				b.WriteString(s[i : i+size])
			}
		}
		i += size
	}
	b.WriteByte('"')
}
