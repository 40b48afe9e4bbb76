package drivers_test

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kvproxy/kvproxy/kv"
	"github.com/kvproxy/kvproxy/kv/drivers"
)

func TestNames(t *testing.T) {
	if got, want := drivers.Names(), []string{"dynamodb", "local", "mem", "postgres"}; !slices.Equal(got, want) {
		t.Fatalf("Names() = %q, want %q", got, want)
	}
}

// TestOpenErrors needs no server: every case fails before connecting.
func TestOpenErrors(t *testing.T) {
	// No region anywhere: not from the environment, not from a config file.
	t.Setenv("AWS_REGION", "")
	t.Setenv("AWS_DEFAULT_REGION", "")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_PROFILE", "")
	cases := []struct {
		driver, dsn string
		want        error
		mention     string
	}{
		{"nosuch", "", kv.ErrUnknownDriver, "known: [dynamodb local mem postgres]"},
		{"local", "", kv.ErrDriverConfiguration, "empty DSN"},
		{"postgres", "", kv.ErrDriverConfiguration, "empty DSN"},
		{"postgres", "postgres://h/db?scan_page_size=x", kv.ErrDriverConfiguration, "scan_page_size"},
		{"dynamodb", "dynamodb://?bogus=1", kv.ErrDriverConfiguration, "bogus"},
		{"dynamodb", "http://127.0.0.1:8000", kv.ErrDriverConfiguration, "scheme"},
		{"dynamodb", "dynamodb://?table=kvstore", kv.ErrDriverConfiguration, "region"},
	}
	for _, c := range cases {
		t.Run(c.driver+" "+c.dsn, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			s, err := drivers.Open(ctx, c.driver, c.dsn)
			if err == nil {
				s.Close()
				t.Fatal("opened")
			}
			if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.mention) {
				t.Fatalf("got %v, want %v mentioning %q", err, c.want, c.mention)
			}
		})
	}
}

func TestOpenLocal(t *testing.T) {
	ctx := context.Background()
	s, err := drivers.Open(ctx, "local", filepath.Join(t.TempDir(), "a", "kv.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, ok := s.(kv.Batcher); !ok {
		t.Fatal("local store is not a Batcher")
	}
	if err := s.Set(ctx, []byte("p"), []byte("k"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	if v, err := s.Get(ctx, []byte("p"), []byte("k")); err != nil || string(v.Value) != "v" {
		t.Fatalf("Get = %v, %v", v, err)
	}
}
