package kvtest

import (
	"context"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/kvproxy/kvproxy/internal/testenv"
	"github.com/kvproxy/kvproxy/kv"
	"github.com/kvproxy/kvproxy/kv/dynamodb"
	"github.com/kvproxy/kvproxy/kv/local"
	"github.com/kvproxy/kvproxy/kv/mem"
	"github.com/kvproxy/kvproxy/kv/postgres"
)

// openTimeout bounds opening a test store on a loaded machine.
const openTimeout = 2 * time.Minute

// Driver opens fresh, isolated stores of one driver for tests.
type Driver struct {
	Name string
	// New returns an empty store that no other test sees, closed when t ends.
	New func(t testing.TB) kv.Store
	// NewWithPageSize is New with the driver's scan page size set to
	// pageSize, so that tests cross page boundaries with few keys. Nil when
	// the driver has no such setting.
	NewWithPageSize func(t testing.TB, pageSize int) kv.Store
	// OpenUnreachable opens the driver against a server address where
	// nothing listens. Nil for drivers without a server.
	OpenUnreachable func(ctx context.Context, t testing.TB) (kv.Store, error)
}

// Drivers lists every driver. Tests that should hold on every backend range
// over it with t.Run(d.Name, ...). Server drivers fail (under make test) or
// skip (under a plain go test) in New when their server is not available.
func Drivers() []Driver {
	return []Driver{
		{Name: mem.DriverName, New: func(t testing.TB) kv.Store {
			s := mem.New()
			t.Cleanup(s.Close)
			return s
		}},
		{
			Name:            local.DriverName,
			New:             func(t testing.TB) kv.Store { return NewLocal(t, 0) },
			NewWithPageSize: NewLocal,
		},
		{
			Name:            postgres.DriverName,
			New:             func(t testing.TB) kv.Store { return NewPostgres(t, 0) },
			NewWithPageSize: NewPostgres,
			OpenUnreachable: func(ctx context.Context, t testing.TB) (kv.Store, error) {
				return postgres.Open(ctx, "postgres://postgres@"+ClosedAddr(t)+"/postgres?sslmode=disable&connect_timeout=10")
			},
		},
		{
			Name:            dynamodb.DriverName,
			New:             func(t testing.TB) kv.Store { return NewDynamoDB(t, 0) },
			NewWithPageSize: NewDynamoDB,
			OpenUnreachable: func(ctx context.Context, t testing.TB) (kv.Store, error) {
				return dynamodb.Open(ctx, "dynamodb://?region=us-east-1&max_attempts=3&max_backoff=200ms&endpoint="+
					url.QueryEscape("http://"+ClosedAddr(t)))
			},
		},
	}
}

// DriverNamed returns the driver named name, or fails the test.
func DriverNamed(t testing.TB, name string) Driver {
	t.Helper()
	for _, d := range Drivers() {
		if d.Name == name {
			return d
		}
	}
	t.Fatalf("kvtest: no driver %q", name)
	return Driver{}
}

func openCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), openTimeout)
	t.Cleanup(cancel)
	return ctx
}

// NewLocal opens a local store in a fresh temporary directory. A pageSize
// of 0 keeps the default.
func NewLocal(t testing.TB, pageSize int) kv.Store {
	t.Helper()
	s, err := local.New(openCtx(t), filepath.Join(t.TempDir(), "kv.db"), local.Options{ScanPageSize: pageSize})
	if err != nil {
		t.Fatalf("kvtest: open local store: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// PostgresDSN returns the DSN of a fresh database for the test, with
// scan_page_size set when pageSize > 0.
func PostgresDSN(t testing.TB, pageSize int) string {
	t.Helper()
	dsn := testenv.PostgresDB(t)
	if pageSize <= 0 {
		return dsn
	}
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("kvtest: parse %q: %v", dsn, err)
	}
	q := u.Query()
	q.Set("scan_page_size", strconv.Itoa(pageSize))
	u.RawQuery = q.Encode()
	return u.String()
}

// NewPostgres opens a postgres store on a fresh database.
func NewPostgres(t testing.TB, pageSize int) kv.Store {
	t.Helper()
	s, err := postgres.Open(openCtx(t), PostgresDSN(t, pageSize))
	if err != nil {
		t.Fatalf("kvtest: open postgres store: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// DynamoDBDSN returns the DSN of a fresh table on the test server, created
// on open, with scan_limit set when pageSize > 0.
func DynamoDBDSN(t testing.TB, pageSize int) string {
	t.Helper()
	q := url.Values{}
	q.Set("endpoint", testenv.DynamoDBEndpoint(t))
	q.Set("table", testenv.DynamoDBTable(t))
	q.Set("region", "us-east-1")
	q.Set("create_table", "true")
	if pageSize > 0 {
		q.Set("scan_limit", strconv.Itoa(pageSize))
	}
	return "dynamodb://?" + q.Encode()
}

// NewDynamoDB opens a dynamodb store on a fresh table.
func NewDynamoDB(t testing.TB, pageSize int) kv.Store {
	t.Helper()
	s, err := dynamodb.Open(openCtx(t), DynamoDBDSN(t, pageSize))
	if err != nil {
		t.Fatalf("kvtest: open dynamodb store: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// ClosedAddr returns a loopback host:port where nothing listens: a port
// that was just bound and released.
func ClosedAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("kvtest: listen: %v", err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatalf("kvtest: close listener: %v", err)
	}
	return addr
}

// ProcessDSN returns a fresh store location for a kvproxy process run by a
// test (`--kv-driver name --kv-dsn ...`): a file for local, a database for
// postgres, a table for dynamodb, nothing for mem.
func ProcessDSN(t testing.TB, driver string) string {
	t.Helper()
	switch driver {
	case "mem":
		return ""
	case "local":
		return filepath.Join(t.TempDir(), "kv.db")
	case "postgres":
		return PostgresDSN(t, 0)
	case "dynamodb":
		return DynamoDBDSN(t, 0)
	}
	t.Fatalf("kvtest: no process DSN for driver %q", driver)
	return ""
}
