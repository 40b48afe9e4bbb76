package kv_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/kvproxy/kvproxy/kv"
)

// pages returns a PageFunc serving the given pages in order; an entry named
// "ERR" makes that fetch fail instead.
func pages(ps ...[]string) kv.PageFunc {
	i := 0
	return func(context.Context) ([]kv.Entry, bool, error) {
		var page []kv.Entry
		for _, k := range ps[i] {
			if k == "ERR" {
				return nil, true, errors.New("backend failed")
			}
			page = append(page, kv.Entry{Key: []byte(k)})
		}
		i++
		return page, i == len(ps), nil
	}
}

func TestPager(t *testing.T) {
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	cases := []struct {
		name    string
		ctx     context.Context
		closed  bool
		fetch   kv.PageFunc
		want    string
		wantErr string
	}{
		{"pages in order", context.Background(), false, pages([]string{"a", "b"}, []string{"c"}), "a,b,c", ""},
		{"empty last page", context.Background(), false, pages([]string{"a"}, nil), "a", ""},
		{"nothing", context.Background(), false, pages(nil), "", ""},
		{"error on the second page", context.Background(), false, pages([]string{"a"}, []string{"ERR"}), "a", "backend failed"},
		{"closed store", context.Background(), true, pages([]string{"a"}), "", kv.ErrClosed.Error()},
		{"cancelled", cancelled, false, pages([]string{"a"}), "", context.Canceled.Error()},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			it := kv.NewPager(tc.ctx, func() bool { return tc.closed }, tc.fetch)
			var got []string
			var held []*kv.Entry
			for it.Next() {
				got = append(got, string(it.Entry().Key))
				held = append(held, it.Entry())
			}
			if strings.Join(got, ",") != tc.want {
				t.Fatalf("keys %v, want %s", got, tc.want)
			}
			if fmt.Sprint(it.Err()) != fmt.Sprint(tc.wantErr) && !(tc.wantErr == "" && it.Err() == nil) {
				t.Fatalf("err %v, want %q", it.Err(), tc.wantErr)
			}
			// Entries of earlier pages stay valid.
			for i, e := range held {
				if string(e.Key) != got[i] {
					t.Fatalf("entry %d changed to %q", i, e.Key)
				}
			}
			it.Close()
			if it.Next() || it.Entry() != nil {
				t.Fatal("a closed iterator must stay closed")
			}
		})
	}
}
