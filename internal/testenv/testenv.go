// Package testenv gives tests the real servers that tests/harness/with-servers.sh
// starts: a throwaway PostgreSQL and a DynamoDB-compatible server. Under
// `make test` (KVPROXY_TEST_REQUIRE_SERVERS=1) a missing server fails the
// test with a message that says how to run it; under a plain `go test` the
// test is skipped, so server-free tests still run anywhere.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/jackc/pgx/v5"
)

const hint = "run the tests through `make test` (it starts the servers), e.g. make test PKGS=./kv/... GOTESTFLAGS='-run X'"

func need(t testing.TB, env, what string) string {
	t.Helper()
	v := os.Getenv(env)
	if v != "" {
		return v
	}
	if os.Getenv("KVPROXY_TEST_REQUIRE_SERVERS") != "" {
		t.Fatalf("%s is not set: the harness did not start %s", env, what)
	}
	t.Skipf("%s not set (%s): %s", env, what, hint)
	return ""
}

// RandomName returns prefix followed by 12 random hex characters, usable as
// a database, table or schema name.
func RandomName(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// PostgresAdminDSN is the superuser DSN of the throwaway PostgreSQL.
func PostgresAdminDSN(t testing.TB) string {
	t.Helper()
	return need(t, "KVPROXY_TEST_PG_DSN", "PostgreSQL")
}

// PostgresBinDir is the directory with the server's binaries (psql, pgbench).
func PostgresBinDir(t testing.TB) string {
	t.Helper()
	return need(t, "KVPROXY_TEST_PG_BINDIR", "PostgreSQL")
}

// PostgresDB creates a fresh, empty database for the test, drops it when the
// test ends, and returns its DSN.
func PostgresDB(t testing.TB) string {
	t.Helper()
	admin := PostgresAdminDSN(t)
	name := RandomName("t_")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatalf("testenv: connect to %s: %v", admin, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("testenv: create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, admin)
		if err != nil {
			t.Logf("testenv: drop database %s: %v", name, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Logf("testenv: drop database %s: %v", name, err)
		}
	})
	return WithDatabase(t, admin, name)
}

// WithDatabase returns dsn pointing at database name.
func WithDatabase(t testing.TB, dsn, name string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("testenv: parse %q: %v", dsn, err)
	}
	u.Path = "/" + name
	return u.String()
}

// DynamoDBEndpoint is the URL of the DynamoDB-compatible server.
func DynamoDBEndpoint(t testing.TB) string {
	t.Helper()
	return need(t, "KVPROXY_TEST_DYNAMODB_ENDPOINT", "the DynamoDB-compatible server (dynalite)")
}

// DynamoDBTable returns a fresh table name for the test and drops the table
// (if one was created) when the test ends: dynalite keeps every table in
// the memory of one node process, which a whole run's tables can exhaust.
func DynamoDBTable(t testing.TB) string {
	t.Helper()
	endpoint := DynamoDBEndpoint(t)
	name := RandomName("kvstore_")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cfg, err := config.LoadDefaultConfig(ctx, config.WithRegion("us-east-1"))
		if err != nil {
			t.Logf("testenv: drop table %s: %v", name, err)
			return
		}
		c := dynamodb.NewFromConfig(cfg, func(o *dynamodb.Options) { o.BaseEndpoint = aws.String(endpoint) })
		_, err = c.DeleteTable(ctx, &dynamodb.DeleteTableInput{TableName: aws.String(name)})
		var missing *types.ResourceNotFoundException
		if err != nil && !errors.As(err, &missing) {
			t.Logf("testenv: drop table %s: %v", name, err)
		}
	})
	return name
}

// RepoRoot returns the module root, for tests that need files outside their
// package (binaries, the legacy schema).
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatalf("testenv: go.mod not found above %s", dir)
		}
		dir = parent
	}
}
