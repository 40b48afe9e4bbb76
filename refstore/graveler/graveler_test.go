package graveler_test

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/kvproxy/kvproxy/refstore/graveler"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// w builds wire bytes field by field, as the spec (§5.6) numbers them.
type w []byte

func (b w) str(num protowire.Number, s string) w {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func (b w) bytes(num protowire.Number, v []byte) w {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

func (b w) varint(num protowire.Number, v uint64) w {
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

func (b w) msg(num protowire.Number, m w) w { return b.bytes(num, m) }

func ts(sec, nanos uint64) w {
	b := w{}.varint(1, sec)
	if nanos != 0 {
		b = b.varint(2, nanos)
	}
	return b
}

// field is one decoded field: number, wire type and raw value.
type field struct {
	num protowire.Number
	typ protowire.Type
	val []byte // the value bytes (varints re-encoded)
}

func (f field) String() string { return fmt.Sprintf("#%d/%d:%x", f.num, f.typ, f.val) }

func fields(t *testing.T, b []byte) []field {
	t.Helper()
	var out []field
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			t.Fatalf("bad tag: %v", protowire.ParseError(n))
		}
		b = b[n:]
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			t.Fatalf("bad field %d: %v", num, protowire.ParseError(m))
		}
		val := b[:m]
		if typ == protowire.BytesType {
			val, _ = protowire.ConsumeBytes(b)
		}
		out = append(out, field{num, typ, bytes.Clone(val)})
		b = b[m:]
	}
	return out
}

func TestWireGolden(t *testing.T) {
	tests := []struct {
		name string
		want proto.Message
		wire w
		new  func() proto.Message
	}{
		{
			name: "RepositoryData in deletion",
			want: &graveler.RepositoryData{Id: "repo1", StorageNamespace: "s3://bucket/ns", DefaultBranchId: "main",
				CreationDate: &timestamppb.Timestamp{Seconds: 1660000000, Nanos: 123456000},
				State:        graveler.RepositoryState_IN_DELETION, InstanceUid: "cbk0s2p6ibt7ldj8ii00"},
			wire: w{}.str(1, "repo1").str(2, "s3://bucket/ns").str(3, "main").msg(4, ts(1660000000, 123456000)).
				varint(5, 1).str(6, "cbk0s2p6ibt7ldj8ii00"),
			new: func() proto.Message { return &graveler.RepositoryData{} },
		},
		{
			name: "BranchData with sealed tokens",
			want: &graveler.BranchData{Id: "main", CommitId: "abc", StagingToken: "repo1-main:t2", SealedTokens: []string{"t1", "t0"}},
			wire: w{}.str(1, "main").str(2, "abc").str(3, "repo1-main:t2").str(4, "t1").str(4, "t0"),
			new:  func() proto.Message { return &graveler.BranchData{} },
		},
		{
			name: "TagData",
			want: &graveler.TagData{Id: "v1", CommitId: "abc"},
			wire: w{}.str(1, "v1").str(2, "abc"),
			new:  func() proto.Message { return &graveler.TagData{} },
		},
		{
			name: "CommitData",
			want: &graveler.CommitData{Id: "c1", Committer: "alice", Message: "msg", CreationDate: &timestamppb.Timestamp{Seconds: 5},
				MetaRangeId: "mr", Metadata: map[string]string{"a": "1", "b": "2"}, Parents: []string{"p1", "p2"}, Version: 1, Generation: 7},
			wire: w{}.str(1, "c1").str(2, "alice").str(3, "msg").msg(4, ts(5, 0)).str(5, "mr").
				msg(6, w{}.str(1, "a").str(2, "1")).msg(6, w{}.str(1, "b").str(2, "2")).
				str(7, "p1").str(7, "p2").varint(8, 1).varint(9, 7),
			new: func() proto.Message { return &graveler.CommitData{} },
		},
		{
			name: "StagedEntryData",
			want: &graveler.StagedEntryData{Key: []byte("a/b"), Identity: []byte{1, 2}, Data: []byte{0, 255}},
			wire: w{}.bytes(1, []byte("a/b")).bytes(2, []byte{1, 2}).bytes(3, []byte{0, 255}),
			new:  func() proto.Message { return &graveler.StagedEntryData{} },
		},
		{
			name: "StagedEntryData tombstone",
			want: &graveler.StagedEntryData{Key: []byte("k")},
			wire: w{}.bytes(1, []byte("k")),
			new:  func() proto.Message { return &graveler.StagedEntryData{} },
		},
		{
			name: "BranchProtectionRules",
			want: &graveler.BranchProtectionRules{BranchPatternToBlockedActions: map[string]*graveler.BranchProtectionBlockedActions{
				"main*": {Value: []graveler.BranchProtectionBlockedAction{graveler.BranchProtectionBlockedAction_STAGING_WRITE, graveler.BranchProtectionBlockedAction_COMMIT}},
			}},
			// repeated enum is packed in proto3: one bytes field of varints.
			wire: w{}.msg(1, w{}.str(1, "main*").msg(2, w{}.bytes(1, []byte{0, 1}))),
			new:  func() proto.Message { return &graveler.BranchProtectionRules{} },
		},
		{
			name: "GarbageCollectionRules",
			want: &graveler.GarbageCollectionRules{DefaultRetentionDays: 21, BranchRetentionDays: map[string]int32{"main": 28}},
			wire: w{}.varint(1, 21).msg(2, w{}.str(1, "main").varint(2, 28)),
			new:  func() proto.Message { return &graveler.GarbageCollectionRules{} },
		},
		{
			name: "GarbageCollectionRunMetadata",
			want: &graveler.GarbageCollectionRunMetadata{RunId: "r", CommitsCsvLocation: "c", AddressLocation: "a"},
			wire: w{}.str(1, "r").str(2, "c").str(3, "a"),
			new:  func() proto.Message { return &graveler.GarbageCollectionRunMetadata{} },
		},
	}
	for _, tc := range tests {
		t.Run(tc.name+"/decode", func(t *testing.T) {
			got := tc.new()
			if err := proto.Unmarshal(tc.wire, got); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got, tc.want) {
				t.Fatalf("decoded %v, want %v", got, tc.want)
			}
		})
		t.Run(tc.name+"/encode", func(t *testing.T) {
			b, err := proto.MarshalOptions{Deterministic: true}.Marshal(tc.want)
			if err != nil {
				t.Fatal(err)
			}
			got, want := fields(t, b), fields(t, tc.wire)
			if len(got) != len(want) {
				t.Fatalf("fields %v, want %v", got, want)
			}
			for i := range got {
				if got[i].num != want[i].num || got[i].typ != want[i].typ || !bytes.Equal(got[i].val, want[i].val) {
					t.Errorf("field %d: got %v, want %v", i, got[i], want[i])
				}
			}
		})
	}
}

func TestActiveRepositoryHasNoStateField(t *testing.T) {
	b, err := proto.Marshal(&graveler.RepositoryData{Id: "r", State: graveler.RepositoryState_ACTIVE, InstanceUid: "u"})
	if err != nil {
		t.Fatal(err)
	}
	fs := fields(t, b)
	for _, f := range fs {
		if f.num == 5 {
			t.Fatalf("ACTIVE repository has field 5 on the wire: %v", fs)
		}
	}
	if len(fs) != 2 {
		t.Fatalf("fields %v, want only id and instance_uid", fs)
	}
}

func TestPackageName(t *testing.T) {
	if got := (&graveler.CommitData{}).ProtoReflect().Descriptor().FullName(); got != "io.treeverse.lakefs.graveler.CommitData" {
		t.Fatalf("full name %s", got)
	}
}
