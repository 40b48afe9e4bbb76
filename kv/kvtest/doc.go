// Package kvtest holds what tests of kv drivers and their users share: the
// list of drivers with a way to open an isolated store on each (Drivers,
// and NewLocal, NewPostgres, NewDynamoDB with their DSN helpers), and the
// conformance suite every driver must pass (RunConformance).
//
// Server drivers take their servers from internal/testenv: under `make
// test` a missing server fails the test, under a plain `go test` it skips.
package kvtest
