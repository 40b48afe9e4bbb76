package dynamodb

import (
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/kvproxy/kvproxy/kv"
)

// dynalite has no TransactWriteItems, so the decoding of cancellation
// reasons is checked on the SDK's own error type.
func TestCancellationCause(t *testing.T) {
	reasons := func(codes ...string) *types.TransactionCanceledException {
		e := &types.TransactionCanceledException{}
		for _, c := range codes {
			e.CancellationReasons = append(e.CancellationReasons, types.CancellationReason{Code: aws.String(c)})
		}
		return e
	}
	cases := []struct {
		name string
		err  *types.TransactionCanceledException
		want string
	}{
		{"condition failed", reasons("None", "ConditionalCheckFailed", "None"), "ConditionalCheckFailed"},
		{"condition wins over conflict", reasons("TransactionConflict", "ConditionalCheckFailed"), "ConditionalCheckFailed"},
		{"conflict", reasons("None", "TransactionConflict"), "TransactionConflict"},
		{"throttling wins over conflict", reasons("TransactionConflict", "ThrottlingError"), "ThrottlingError"},
		{"no reasons", reasons(), ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := cancellationCause(c.err); got != c.want {
				t.Fatalf("got %q, want %q", got, c.want)
			}
		})
	}
}

func TestConditionOf(t *testing.T) {
	pk, key := []byte("p"), []byte("k")
	cases := []struct {
		name string
		ops  []kv.Op
		want string
		vals int
	}{
		{"set", []kv.Op{{Kind: kv.OpSet, Value: []byte("v")}}, "", 0},
		{"setif nil", []kv.Op{{Kind: kv.OpSetIf, Value: []byte("v")}}, "attribute_not_exists(ItemValue)", 0},
		{"setif pred", []kv.Op{{Kind: kv.OpSetIf, Value: []byte("v"), Predicate: []byte("o")}}, "ItemValue = :predicate", 1},
		{"deleteif nil", []kv.Op{{Kind: kv.OpDeleteIf}}, "attribute_exists(ItemValue)", 0},
		{"two conditions", []kv.Op{{Kind: kv.OpCheck, Predicate: []byte("a")}, {Kind: kv.OpCheck, Predicate: []byte("b")}},
			"ItemValue = :predicate AND ItemValue = :predicate1", 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for i := range c.ops {
				c.ops[i].PartitionKey, c.ops[i].Key = pk, key
			}
			keys := kv.GroupOps(c.ops)
			if len(keys) != 1 {
				t.Fatalf("%d keys", len(keys))
			}
			got := conditionOf(keys[0])
			if aws.ToString(got.expr) != c.want || len(got.values) != c.vals {
				t.Fatalf("got %q with %d values, want %q with %d", aws.ToString(got.expr), len(got.values), c.want, c.vals)
			}
		})
	}
}
