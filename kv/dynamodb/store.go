package dynamodb

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/kvproxy/kvproxy/kv"
)

// DriverName is the name dynamodb has in kv/drivers.
const DriverName = "dynamodb"

// Attribute names of lakeFS's table.
const (
	AttrPartitionKey = "PartitionKey"
	AttrItemKey      = "ItemKey"
	AttrItemValue    = "ItemValue"
)

// DynamoDB's limits on one TransactWriteItems call.
const (
	MaxBatchItems = 100
	MaxBatchBytes = 4 * 1024 * 1024
)

// tableActiveTimeout is how long Open waits for a table to become ACTIVE,
// lakeFS's 30 s.
const tableActiveTimeout = 30 * time.Second

// ErrTransactionsUnsupported is wrapped (together with kv.ErrBatchTooLarge)
// when the server does not implement TransactWriteItems.
var ErrTransactionsUnsupported = errors.New("dynamodb: the server does not implement TransactWriteItems")

// Store is the DynamoDB driver.
type Store struct {
	client    *dynamodb.Client
	table     *string
	scanLimit int32
	closed    atomic.Bool
}

// Open matches the kv/drivers opener signature.
func Open(ctx context.Context, dsn string) (kv.Store, error) {
	s, err := New(ctx, dsn)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// New parses dsn, builds a client and checks (or creates) the table.
func New(ctx context.Context, dsn string) (*Store, error) {
	cfg, err := ParseDSN(dsn)
	if err != nil {
		return nil, err
	}
	return NewWithConfig(ctx, cfg)
}

// NewWithConfig is New with an already parsed DSN.
func NewWithConfig(ctx context.Context, cfg *Config) (*Store, error) {
	opts := []func(*config.LoadOptions) error{
		config.WithRetryer(func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) {
				o.MaxAttempts = cfg.MaxAttempts
				o.MaxBackoff = cfg.MaxBackoff
				o.RateLimiter = ratelimit.None
			})
		}),
	}
	if cfg.Region != "" {
		opts = append(opts, config.WithRegion(cfg.Region))
	}
	if cfg.Profile != "" {
		opts = append(opts, config.WithSharedConfigProfile(cfg.Profile))
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("%w: dynamodb: AWS config: %w", kv.ErrDriverConfiguration, err)
	}
	if awsCfg.Region == "" {
		return nil, fmt.Errorf("%w: dynamodb: no region: add region=... to the DSN or set AWS_REGION", kv.ErrDriverConfiguration)
	}
	client := dynamodb.NewFromConfig(awsCfg, func(o *dynamodb.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
	})
	s := &Store{client: client, table: aws.String(cfg.Table), scanLimit: cfg.ScanLimit}
	if err := s.setup(ctx, cfg); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Store) setup(ctx context.Context, cfg *Config) error {
	if cfg.CreateTable {
		in := &dynamodb.CreateTableInput{
			TableName: s.table,
			AttributeDefinitions: []types.AttributeDefinition{
				{AttributeName: aws.String(AttrPartitionKey), AttributeType: types.ScalarAttributeTypeB},
				{AttributeName: aws.String(AttrItemKey), AttributeType: types.ScalarAttributeTypeB},
			},
			KeySchema: []types.KeySchemaElement{
				{AttributeName: aws.String(AttrPartitionKey), KeyType: types.KeyTypeHash},
				{AttributeName: aws.String(AttrItemKey), KeyType: types.KeyTypeRange},
			},
			BillingMode: types.BillingModePayPerRequest,
		}
		if cfg.ReadCapacityUnits > 0 {
			in.BillingMode = types.BillingModeProvisioned
			in.ProvisionedThroughput = &types.ProvisionedThroughput{
				ReadCapacityUnits:  aws.Int64(cfg.ReadCapacityUnits),
				WriteCapacityUnits: aws.Int64(cfg.WriteCapacityUnits),
			}
		}
		_, err := s.client.CreateTable(ctx, in)
		var inUse *types.ResourceInUseException
		if err != nil && !errors.As(err, &inUse) {
			return setupErr(ctx, "create table "+cfg.Table, err)
		}
	}
	waitCtx, cancel := context.WithTimeout(ctx, tableActiveTimeout)
	defer cancel()
	for {
		out, err := s.client.DescribeTable(waitCtx, &dynamodb.DescribeTableInput{TableName: s.table})
		var nf *types.ResourceNotFoundException
		if errors.As(err, &nf) {
			return fmt.Errorf("%w: dynamodb: table %s does not exist: create it or add create_table=true to the DSN", kv.ErrSetupFailed, cfg.Table)
		}
		if err != nil {
			return setupErr(ctx, "describe table "+cfg.Table, err)
		}
		if err := checkSchema(out.Table); err != nil {
			return fmt.Errorf("%w: dynamodb: table %s: %w", kv.ErrSetupFailed, cfg.Table, err)
		}
		if out.Table.TableStatus == types.TableStatusActive {
			return nil
		}
		select {
		case <-waitCtx.Done():
			if ctx.Err() != nil {
				return fmt.Errorf("dynamodb: wait for table %s: %w", cfg.Table, ctx.Err())
			}
			return fmt.Errorf("%w: dynamodb: table %s not ACTIVE after %s (status %s)", kv.ErrSetupFailed, cfg.Table, tableActiveTimeout, out.Table.TableStatus)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// checkSchema refuses a table whose keys are not lakeFS's, which would make
// every request fail later with a less clear message.
func checkSchema(t *types.TableDescription) error {
	want := map[string]types.KeyType{AttrPartitionKey: types.KeyTypeHash, AttrItemKey: types.KeyTypeRange}
	if len(t.KeySchema) != len(want) {
		return fmt.Errorf("key schema has %d attributes, want %s (HASH) and %s (RANGE)", len(t.KeySchema), AttrPartitionKey, AttrItemKey)
	}
	for _, k := range t.KeySchema {
		if want[aws.ToString(k.AttributeName)] != k.KeyType {
			return fmt.Errorf("key attribute %s %s, want %s (HASH) and %s (RANGE)", aws.ToString(k.AttributeName), k.KeyType, AttrPartitionKey, AttrItemKey)
		}
	}
	for _, a := range t.AttributeDefinitions {
		if a.AttributeType != types.ScalarAttributeTypeB {
			return fmt.Errorf("key attribute %s has type %s, want B", aws.ToString(a.AttributeName), a.AttributeType)
		}
	}
	return nil
}

func setupErr(ctx context.Context, what string, err error) error {
	if isConnErr(err) || ctx.Err() != nil {
		return wrapErr(ctx, what, err)
	}
	return fmt.Errorf("%w: dynamodb: %s: %w", kv.ErrSetupFailed, what, err)
}

func isConnErr(err error) bool {
	var se *smithyhttp.RequestSendError
	return errors.As(err, &se)
}

func errorCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// wrapErr names the operation and makes the cause matchable with errors.Is:
// a cancelled or expired context, or kv.ErrConnectFailed when the request
// never reached the server.
func wrapErr(ctx context.Context, op string, err error) error {
	switch {
	case ctx.Err() != nil && !errors.Is(err, ctx.Err()):
		return fmt.Errorf("dynamodb %s: %w (%w)", op, ctx.Err(), err)
	case isConnErr(err):
		return fmt.Errorf("dynamodb %s: %w: %w", op, kv.ErrConnectFailed, err)
	default:
		return fmt.Errorf("dynamodb %s: %w", op, err)
	}
}

func (s *Store) check(ctx context.Context) error {
	if s.closed.Load() {
		return kv.ErrClosed
	}
	return ctx.Err()
}

func b(v []byte) *types.AttributeValueMemberB { return &types.AttributeValueMemberB{Value: v} }

func itemKey(pk, key []byte) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{AttrPartitionKey: b(pk), AttrItemKey: b(key)}
}

func item(pk, key, value []byte) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{AttrPartitionKey: b(pk), AttrItemKey: b(key), AttrItemValue: b(value)}
}

// binaryAttr returns a copy of a B attribute, never nil, so that an empty
// value still gives a non-nil predicate.
func binaryAttr(it map[string]types.AttributeValue, name string) ([]byte, error) {
	v, ok := it[name].(*types.AttributeValueMemberB)
	if !ok {
		return nil, fmt.Errorf("%w: dynamodb: item attribute %s is missing or not binary", kv.ErrOperationFailed, name)
	}
	return append([]byte{}, v.Value...), nil
}

func (s *Store) Get(ctx context.Context, partitionKey, key []byte) (*kv.ValueWithPredicate, error) {
	if err := kv.CheckKey(partitionKey, key); err != nil {
		return nil, err
	}
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	out, err := s.client.GetItem(ctx, &dynamodb.GetItemInput{TableName: s.table, Key: itemKey(partitionKey, key), ConsistentRead: aws.Bool(true)})
	if err != nil {
		return nil, wrapErr(ctx, "get", err)
	}
	if len(out.Item) == 0 {
		return nil, fmt.Errorf("key=%q: %w", key, kv.ErrNotFound)
	}
	v, err := binaryAttr(out.Item, AttrItemValue)
	if err != nil {
		return nil, err
	}
	return &kv.ValueWithPredicate{Value: v, Predicate: kv.Predicate(bytes.Clone(v))}, nil
}

func (s *Store) Set(ctx context.Context, partitionKey, key, value []byte) error {
	if err := kv.CheckWrite(partitionKey, key, value); err != nil {
		return err
	}
	if err := s.check(ctx); err != nil {
		return err
	}
	if _, err := s.client.PutItem(ctx, &dynamodb.PutItemInput{TableName: s.table, Item: item(partitionKey, key, value)}); err != nil {
		return wrapErr(ctx, "set", err)
	}
	return nil
}

func (s *Store) SetIf(ctx context.Context, partitionKey, key, value []byte, pred kv.Predicate) error {
	return s.Batch(ctx, []kv.Op{{Kind: kv.OpSetIf, PartitionKey: partitionKey, Key: key, Value: value, Predicate: pred}})
}

func (s *Store) Delete(ctx context.Context, partitionKey, key []byte) error {
	if err := kv.CheckKey(partitionKey, key); err != nil {
		return err
	}
	if err := s.check(ctx); err != nil {
		return err
	}
	if _, err := s.client.DeleteItem(ctx, &dynamodb.DeleteItemInput{TableName: s.table, Key: itemKey(partitionKey, key)}); err != nil {
		return wrapErr(ctx, "delete", err)
	}
	return nil
}

// condition is a ConditionExpression with its values.
type condition struct {
	expr   *string
	values map[string]types.AttributeValue
}

// conditionOf turns a key's conditions into one expression, ANDed. Two
// conditions that cannot hold together simply make DynamoDB fail the check.
func conditionOf(k kv.KeyOps) condition {
	if len(k.Conds) == 0 {
		return condition{}
	}
	var parts []string
	vals := map[string]types.AttributeValue{}
	for i, c := range k.Conds {
		switch {
		case c.Predicate != nil:
			name := ":predicate"
			if i > 0 {
				name += strconv.Itoa(i)
			}
			parts = append(parts, AttrItemValue+" = "+name)
			vals[name] = b(c.Predicate)
		case c.Kind == kv.OpDeleteIf:
			parts = append(parts, "attribute_exists("+AttrItemValue+")")
		default:
			parts = append(parts, "attribute_not_exists("+AttrItemValue+")")
		}
	}
	if len(vals) == 0 {
		vals = nil // DynamoDB rejects an empty ExpressionAttributeValues
	}
	return condition{expr: aws.String(strings.Join(parts, " AND ")), values: vals}
}

// batchSize estimates what DynamoDB counts against its 4 MB transaction
// limit: attribute names and values of every item and condition.
func batchSize(keys []kv.KeyOps) int {
	n := 0
	for _, k := range keys {
		n += len(AttrPartitionKey) + len(k.PartitionKey) + len(AttrItemKey) + len(k.Key)
		if k.Write == kv.WritePut {
			n += len(AttrItemValue) + len(k.Value)
		}
		for _, c := range k.Conds {
			n += len(c.Predicate)
		}
	}
	return n
}

// Batch applies ops atomically; see the package doc.
func (s *Store) Batch(ctx context.Context, ops []kv.Op) error {
	if err := kv.CheckOps(ops); err != nil {
		return err
	}
	if err := s.check(ctx); err != nil {
		return err
	}
	keys := kv.GroupOps(ops)
	if len(keys) == 0 {
		return nil
	}
	if len(keys) > MaxBatchItems {
		return fmt.Errorf("%w: %d items, DynamoDB takes at most %d in one transaction", kv.ErrBatchTooLarge, len(keys), MaxBatchItems)
	}
	if n := batchSize(keys); n > MaxBatchBytes {
		return fmt.Errorf("%w: about %d bytes, DynamoDB takes at most %d in one transaction", kv.ErrBatchTooLarge, n, MaxBatchBytes)
	}
	if len(keys) == 1 {
		return s.single(ctx, keys[0])
	}
	items := make([]types.TransactWriteItem, 0, len(keys))
	for _, k := range keys {
		c := conditionOf(k)
		switch k.Write {
		case kv.WritePut:
			items = append(items, types.TransactWriteItem{Put: &types.Put{TableName: s.table, Item: item(k.PartitionKey, k.Key, k.Value),
				ConditionExpression: c.expr, ExpressionAttributeValues: c.values}})
		case kv.WriteDelete:
			items = append(items, types.TransactWriteItem{Delete: &types.Delete{TableName: s.table, Key: itemKey(k.PartitionKey, k.Key),
				ConditionExpression: c.expr, ExpressionAttributeValues: c.values}})
		default:
			items = append(items, types.TransactWriteItem{ConditionCheck: &types.ConditionCheck{TableName: s.table, Key: itemKey(k.PartitionKey, k.Key),
				ConditionExpression: c.expr, ExpressionAttributeValues: c.values}})
		}
	}
	// The SDK fills ClientRequestToken, so its own retries of this call
	// are idempotent. Cancellations because another transaction touched an
	// item are retried here: the conditions were not even evaluated.
	const conflictTries = 5
	for attempt := 1; ; attempt++ {
		_, err := s.client.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: items})
		if err == nil {
			return nil
		}
		if errorCode(err) == "UnknownOperationException" {
			return fmt.Errorf("dynamodb batch: %w: %w", kv.ErrBatchTooLarge, ErrTransactionsUnsupported)
		}
		var tce *types.TransactionCanceledException
		if !errors.As(err, &tce) {
			return wrapErr(ctx, "batch", err)
		}
		switch cancellationCause(tce) {
		case "ConditionalCheckFailed":
			return fmt.Errorf("dynamodb batch: %w", kv.ErrPredicateFailed)
		case "TransactionConflict":
			if attempt < conflictTries {
				select {
				case <-ctx.Done():
					return wrapErr(ctx, "batch", err)
				case <-time.After(time.Duration(attempt*attempt) * 20 * time.Millisecond):
				}
				continue
			}
		}
		return fmt.Errorf("dynamodb batch: %w: %w", kv.ErrOperationFailed, err)
	}
}

// cancellationCause picks the reason that decides how a cancelled
// transaction is reported: a failed condition wins over a conflict.
func cancellationCause(tce *types.TransactionCanceledException) string {
	cause := ""
	for _, r := range tce.CancellationReasons {
		switch code := aws.ToString(r.Code); code {
		case "ConditionalCheckFailed":
			return code
		case "", "None":
		default:
			if cause == "" || code != "TransactionConflict" {
				cause = code
			}
		}
	}
	return cause
}

// single applies a one-item batch with a plain conditional request.
func (s *Store) single(ctx context.Context, k kv.KeyOps) error {
	c := conditionOf(k)
	var err error
	switch k.Write {
	case kv.WritePut:
		_, err = s.client.PutItem(ctx, &dynamodb.PutItemInput{TableName: s.table, Item: item(k.PartitionKey, k.Key, k.Value),
			ConditionExpression: c.expr, ExpressionAttributeValues: c.values})
	case kv.WriteDelete:
		_, err = s.client.DeleteItem(ctx, &dynamodb.DeleteItemInput{TableName: s.table, Key: itemKey(k.PartitionKey, k.Key),
			ConditionExpression: c.expr, ExpressionAttributeValues: c.values})
	default:
		// Only checks: a strongly consistent read is the check.
		out, err := s.client.GetItem(ctx, &dynamodb.GetItemInput{TableName: s.table, Key: itemKey(k.PartitionKey, k.Key), ConsistentRead: aws.Bool(true)})
		if err != nil {
			return wrapErr(ctx, "batch", err)
		}
		var cur []byte
		exists := len(out.Item) > 0
		if exists {
			if cur, err = binaryAttr(out.Item, AttrItemValue); err != nil {
				return err
			}
		}
		if !k.Holds(exists, cur) {
			return kv.ErrPredicateFailed
		}
		return nil
	}
	var ccf *types.ConditionalCheckFailedException
	if errors.As(err, &ccf) {
		return kv.ErrPredicateFailed
	}
	if err != nil {
		return wrapErr(ctx, "write", err)
	}
	return nil
}

func (s *Store) Scan(ctx context.Context, partitionKey, start []byte) (kv.EntriesIterator, error) {
	if len(partitionKey) == 0 {
		return nil, kv.ErrMissingPartitionKey
	}
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	in := &dynamodb.QueryInput{
		TableName:                 s.table,
		KeyConditionExpression:    aws.String(AttrPartitionKey + " = :partitionkey"),
		ExpressionAttributeValues: map[string]types.AttributeValue{":partitionkey": b(bytes.Clone(partitionKey))},
		ScanIndexForward:          aws.Bool(true),
		ConsistentRead:            aws.Bool(true),
	}
	if len(start) > 0 {
		in.KeyConditionExpression = aws.String(AttrPartitionKey + " = :partitionkey AND " + AttrItemKey + " >= :fromkey")
		in.ExpressionAttributeValues[":fromkey"] = b(bytes.Clone(start))
	}
	if s.scanLimit > 0 {
		in.Limit = aws.Int32(s.scanLimit)
	}
	c := &cursor{s: s, pk: bytes.Clone(partitionKey), in: in}
	return kv.NewPager(ctx, s.closed.Load, c.fetch), nil
}

// Close marks the store closed; the SDK client holds nothing to release
// beyond idle HTTP connections, which the runtime reaps.
func (s *Store) Close() { s.closed.Store(true) }

// Client exposes the SDK client, for tests and admin tools.
func (s *Store) Client() *dynamodb.Client { return s.client }

// cursor is where a scan of one partition goes on: the query and its
// ExclusiveStartKey.
type cursor struct {
	s  *Store
	pk []byte
	in *dynamodb.QueryInput
}

// fetch queries until it has entries or the partition ends: DynamoDB may
// answer a page with no items (e.g. filtered) that is not the last.
func (c *cursor) fetch(ctx context.Context) ([]kv.Entry, bool, error) {
	for {
		out, err := c.s.client.Query(ctx, c.in)
		if err != nil {
			return nil, true, wrapErr(ctx, "scan", err)
		}
		page := make([]kv.Entry, 0, len(out.Items))
		for _, m := range out.Items {
			k, err := binaryAttr(m, AttrItemKey)
			if err != nil {
				return nil, true, err
			}
			v, err := binaryAttr(m, AttrItemValue)
			if err != nil {
				return nil, true, err
			}
			page = append(page, kv.Entry{PartitionKey: c.pk, Key: k, Value: v})
		}
		done := len(out.LastEvaluatedKey) == 0
		c.in.ExclusiveStartKey = out.LastEvaluatedKey
		if len(page) > 0 || done {
			return page, done, nil
		}
	}
}
