// Package dynamodb is the kv.Store on Amazon DynamoDB (or a compatible
// server), in exactly the table layout lakeFS (>= v0.80) uses: attributes
// PartitionKey (B, HASH key), ItemKey (B, RANGE key) and ItemValue (B), no
// secondary indexes.
//
// DSN: a URL with scheme dynamodb, no host, and query parameters:
//
//	dynamodb://?region=us-east-1&table=kvstore&endpoint=http://127.0.0.1:8000&scan_limit=1000&create_table=true
//
//	region                AWS region; default from the AWS config chain
//	                      (AWS_REGION, ~/.aws/config); required from one of them
//	endpoint              http(s) URL of a DynamoDB-compatible server; default AWS
//	table                 table name (default "kvstore", lakeFS's default)
//	scan_limit            items per Query page (default 1000; 0 = DynamoDB's 1 MB pages)
//	create_table          true: create the table if it is missing (on-demand
//	                      billing, or provisioned with both capacity parameters)
//	                      and wait for it to become ACTIVE; default false: the
//	                      table must exist
//	read_capacity_units   with write_capacity_units: provisioned throughput for create_table
//	write_capacity_units
//	max_attempts          SDK attempts per request, retries included (default 10)
//	max_backoff           longest pause between two attempts (default 2s)
//	profile               shared-config profile to take credentials and region from
//
// Credentials come from the standard AWS chain (AWS_ACCESS_KEY_ID /
// AWS_SECRET_ACCESS_KEY, shared config and credentials files, web identity,
// container and instance roles); they are never part of the DSN.
//
// Throttling and transient errors are retried by the SDK's standard retryer
// (exponential backoff with jitter, max_attempts and max_backoff above)
// without its client-side retry quota, which would otherwise turn a burst of
// throttling into immediate failures.
//
// Get is a strongly consistent GetItem; SetIf is a PutItem with the
// condition "ItemValue = :predicate" (or "attribute_not_exists(ItemValue)"
// for a nil predicate); Scan is a strongly consistent Query in ascending
// ItemKey order, paged with ExclusiveStartKey. Batch is one
// TransactWriteItems call (a batch that touches one item uses the
// equivalent single conditional PutItem or DeleteItem, which is atomic on
// its own and costs half). A batch of more than 100 items or over 4 MB
// returns kv.ErrBatchTooLarge before anything is sent, as does every
// multi-item batch on a server that does not implement TransactWriteItems
// (dynalite), so callers fall back to ordered single-key writes.
//
// Limits: an item (keys and value) must stay under DynamoDB's 400 KB; a
// conditional write retried by the SDK after a lost response can report
// kv.ErrPredicateFailed although it was applied (as in lakeFS), while
// TransactWriteItems is made idempotent by the SDK's client request token.
package dynamodb
