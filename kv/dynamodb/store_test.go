package dynamodb_test

import (
	"bytes"
	"context"
	"errors"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	sdk "github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/kvproxy/kvproxy/internal/testenv"
	"github.com/kvproxy/kvproxy/kv"
	"github.com/kvproxy/kvproxy/kv/dynamodb"
	"github.com/kvproxy/kvproxy/kv/kvtest"
)

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return c
}

func dsn(t *testing.T, table string, create bool) string {
	q := url.Values{}
	q.Set("endpoint", testenv.DynamoDBEndpoint(t))
	q.Set("region", "us-east-1")
	q.Set("table", table)
	if create {
		q.Set("create_table", "true")
	}
	return "dynamodb://?" + q.Encode()
}

// TestLayoutIsLakeFS reads an item written by the store with the raw SDK:
// lakeFS's attribute names and types, and the table's key schema.
func TestLayoutIsLakeFS(t *testing.T) {
	table := testenv.DynamoDBTable(t)
	s, err := dynamodb.New(ctx(t), dsn(t, table, true))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Set(ctx(t), []byte("kv-internal-metadata"), []byte("kv/schema/version"), []byte("1")); err != nil {
		t.Fatal(err)
	}
	out, err := s.Client().GetItem(ctx(t), &sdk.GetItemInput{TableName: aws.String(table), ConsistentRead: aws.Bool(true), Key: map[string]types.AttributeValue{
		"PartitionKey": &types.AttributeValueMemberB{Value: []byte("kv-internal-metadata")},
		"ItemKey":      &types.AttributeValueMemberB{Value: []byte("kv/schema/version")},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Item) != 3 {
		t.Fatalf("item has attributes %v, want PartitionKey, ItemKey, ItemValue", out.Item)
	}
	if v, ok := out.Item["ItemValue"].(*types.AttributeValueMemberB); !ok || string(v.Value) != "1" {
		t.Fatalf("ItemValue = %#v", out.Item["ItemValue"])
	}
	desc, err := s.Client().DescribeTable(ctx(t), &sdk.DescribeTableInput{TableName: aws.String(table)})
	if err != nil {
		t.Fatal(err)
	}
	if len(desc.Table.GlobalSecondaryIndexes)+len(desc.Table.LocalSecondaryIndexes) != 0 {
		t.Fatal("table has secondary indexes")
	}
	// An item lakeFS wrote (same attributes) reads back through the store.
	_, err = s.Client().PutItem(ctx(t), &sdk.PutItemInput{TableName: aws.String(table), Item: map[string]types.AttributeValue{
		"PartitionKey": &types.AttributeValueMemberB{Value: []byte("repositories")},
		"ItemKey":      &types.AttributeValueMemberB{Value: []byte("repos/r")},
		"ItemValue":    &types.AttributeValueMemberB{Value: []byte{0x0A, 0x01, 0x72}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(ctx(t), []byte("repositories"), []byte("repos/r"))
	if err != nil || !bytes.Equal(got.Value, []byte{0x0A, 0x01, 0x72}) {
		t.Fatalf("Get = %v, %v", got, err)
	}
}

func TestTableMissing(t *testing.T) {
	_, err := dynamodb.New(ctx(t), dsn(t, testenv.DynamoDBTable(t), false))
	if !errors.Is(err, kv.ErrSetupFailed) || !strings.Contains(err.Error(), "create_table=true") {
		t.Fatalf("got %v, want ErrSetupFailed suggesting create_table=true", err)
	}
}

func TestWrongSchemaRefused(t *testing.T) {
	table := testenv.DynamoDBTable(t)
	s := kvtest.NewDynamoDB(t, 0).(*dynamodb.Store)
	_, err := s.Client().CreateTable(ctx(t), &sdk.CreateTableInput{
		TableName:            aws.String(table),
		AttributeDefinitions: []types.AttributeDefinition{{AttributeName: aws.String("id"), AttributeType: types.ScalarAttributeTypeS}},
		KeySchema:            []types.KeySchemaElement{{AttributeName: aws.String("id"), KeyType: types.KeyTypeHash}},
		BillingMode:          types.BillingModePayPerRequest,
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = dynamodb.New(ctx(t), dsn(t, table, true))
	if !errors.Is(err, kv.ErrSetupFailed) || !strings.Contains(err.Error(), "PartitionKey") {
		t.Fatalf("got %v, want ErrSetupFailed about the key schema", err)
	}
}

// TestConcurrentCreate opens one new table from several clients at once;
// the losers of CreateTable get ResourceInUseException, which is ignored.
func TestConcurrentCreate(t *testing.T) {
	table := testenv.DynamoDBTable(t)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := dynamodb.New(ctx(t), dsn(t, table, true))
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

func TestBatchTooLargeBeforeSending(t *testing.T) {
	// The size check runs before any request: the error must not be the
	// one a server without transactions (dynalite) gives.
	s := kvtest.NewDynamoDB(t, 0)
	b := s.(kv.Batcher)
	big := make([]byte, 300*1024)
	cases := []struct {
		name string
		ops  []kv.Op
	}{
		{"101 items", func() []kv.Op {
			ops := make([]kv.Op, 101)
			for i := range ops {
				ops[i] = kv.Op{Kind: kv.OpSet, PartitionKey: []byte("p"), Key: []byte{byte(i), 1}, Value: []byte("v")}
			}
			return ops
		}()},
		{"over 4 MB", func() []kv.Op {
			ops := make([]kv.Op, 15)
			for i := range ops {
				ops[i] = kv.Op{Kind: kv.OpSetIf, PartitionKey: []byte("p"), Key: []byte{byte(i), 2}, Value: big, Predicate: big}
			}
			return ops
		}()},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := b.Batch(ctx(t), c.ops)
			if !errors.Is(err, kv.ErrBatchTooLarge) || errors.Is(err, dynamodb.ErrTransactionsUnsupported) {
				t.Fatalf("got %v, want ErrBatchTooLarge from the size check", err)
			}
		})
	}
	// 100 ops on one key fold into one item and are not too large.
	ops := make([]kv.Op, 150)
	for i := range ops {
		ops[i] = kv.Op{Kind: kv.OpSet, PartitionKey: []byte("p"), Key: []byte("same"), Value: []byte{byte(i)}}
	}
	if err := b.Batch(ctx(t), ops); err != nil {
		t.Fatalf("150 ops on one key: %v", err)
	}
	if v, err := s.Get(ctx(t), []byte("p"), []byte("same")); err != nil || v.Value[0] != 149 {
		t.Fatalf("Get = %v, %v; want the last write", v, err)
	}
}

func TestParseDSN(t *testing.T) {
	cases := []struct {
		name, dsn string
		want      *dynamodb.Config
		wantErr   string
	}{
		{"defaults", "dynamodb://", &dynamodb.Config{Table: "kvstore", ScanLimit: 1000, MaxAttempts: 10, MaxBackoff: 2 * time.Second}, ""},
		{"all", "dynamodb://?endpoint=http://127.0.0.1:8000&region=eu-west-1&table=my.table-1&scan_limit=0&create_table=true&read_capacity_units=5&write_capacity_units=6&max_attempts=3&max_backoff=500ms&profile=p",
			&dynamodb.Config{Endpoint: "http://127.0.0.1:8000", Region: "eu-west-1", Table: "my.table-1", ScanLimit: 0, CreateTable: true,
				ReadCapacityUnits: 5, WriteCapacityUnits: 6, MaxAttempts: 3, MaxBackoff: 500 * time.Millisecond, Profile: "p"}, ""},
		{"slash path", "dynamodb:///?table=abc", &dynamodb.Config{Table: "abc", ScanLimit: 1000, MaxAttempts: 10, MaxBackoff: 2 * time.Second}, ""},
		{"wrong scheme", "postgres://?table=x", nil, "scheme"},
		{"host", "dynamodb://localhost:8000", nil, "query"},
		{"credentials", "dynamodb://key:secret@?table=abc", nil, "query"},
		{"unknown param", "dynamodb://?tabel=x", nil, `"tabel"`},
		{"repeated param", "dynamodb://?table=abc&table=def", nil, "2 times"},
		{"bad endpoint", "dynamodb://?endpoint=127.0.0.1:8000", nil, "endpoint"},
		{"short table", "dynamodb://?table=ab", nil, "table"},
		{"bad table char", "dynamodb://?table=a%20b%20c", nil, "table"},
		{"negative scan", "dynamodb://?scan_limit=-1", nil, "scan_limit"},
		{"bad bool", "dynamodb://?create_table=yes", nil, "create_table"},
		{"half capacity", "dynamodb://?read_capacity_units=5", nil, "go together"},
		{"zero attempts", "dynamodb://?max_attempts=0", nil, "max_attempts"},
		{"bad backoff", "dynamodb://?max_backoff=soon", nil, "max_backoff"},
		{"empty region", "dynamodb://?region=", nil, "region"},
		{"bad escape", "dynamodb://?table=%zz", nil, "query"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := dynamodb.ParseDSN(c.dsn)
			if c.wantErr != "" {
				if !errors.Is(err, kv.ErrDriverConfiguration) || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("got %v, want ErrDriverConfiguration naming %q", err, c.wantErr)
				}
				if strings.Contains(err.Error(), "secret") {
					t.Fatalf("error leaks the secret: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if *got != *c.want {
				t.Fatalf("got %+v, want %+v", *got, *c.want)
			}
		})
	}
}

func FuzzParseDSN(f *testing.F) {
	for _, s := range []string{
		"dynamodb://?endpoint=http://127.0.0.1:8000&region=us-east-1&table=kvstore&scan_limit=1000&create_table=true",
		"dynamodb://",
		"dynamodb:///?table=abc",
		"dynamodb://host/path",
		"dynamodb://?max_backoff=1s&max_attempts=3",
		"dynamodb://?read_capacity_units=1&write_capacity_units=1",
		"dynamodb://?%zz",
		"://",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, dsn string) {
		c, err := dynamodb.ParseDSN(dsn)
		if err != nil {
			if !errors.Is(err, kv.ErrDriverConfiguration) {
				t.Fatalf("error %v does not wrap ErrDriverConfiguration", err)
			}
			return
		}
		if len(c.Table) < 3 || c.ScanLimit < 0 || c.MaxAttempts < 1 || c.MaxBackoff <= 0 {
			t.Fatalf("accepted %q as %+v", dsn, c)
		}
	})
}
