// Package graveler holds the protobuf messages of lakeFS's ref store
// (package io.treeverse.lakefs.graveler, lakeFS v0.80.0 field numbers),
// generated from graveler.proto with `make proto`. The values kvproxy writes
// to the KV store are exactly proto.Marshal of these messages, with no
// envelope, as lakeFS writes them.
package graveler
