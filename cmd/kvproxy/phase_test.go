package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/kvproxy/kvproxy/internal/testenv"
	"github.com/kvproxy/kvproxy/kv/drivers"
	"github.com/kvproxy/kvproxy/shadow/control"
)

func TestPhaseSet(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dsn := testenv.PostgresDB(t)
	args := func(a ...string) []string {
		return append(a, "--kv-driver", "postgres", "--kv-dsn", dsn)
	}
	steps := []struct {
		args []string
		out  string // substring of the output, or of the error when err
		err  bool
	}{
		{args("phase", "set", "passthrough"), "passthrough (epoch 1)", false},
		{args("phase", "set", "passthrough"), "already passthrough", false},
		{args("phase", "set", "dual-write"), "phase passthrough (epoch 1) -> dual-write (epoch 2)", false},
		{args("phase", "set", "kv-primary"), "phase set takes passthrough or dual-write", true},
		{args("phase", "set", "passthrough"), "dual-write (epoch 2) -> passthrough (epoch 3)", false},
		{[]string{"phase", "set", "dual-write", "--kv-driver", "mem"}, "kv.driver: mem", true},
	}
	for i, s := range steps {
		out, err := run(ctx, s.args...)
		got := out
		if err != nil {
			got = err.Error()
		}
		if (err != nil) != s.err || !strings.Contains(got, s.out) {
			t.Fatalf("step %d %v: output %q, err %v; want %q (error: %v)", i, s.args, out, err, s.out, s.err)
		}
	}
	store, err := drivers.Open(ctx, "postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	ctl := control.NewStore(store, nil)
	events, err := ctl.Events(ctx, 0)
	if err != nil || len(events) != 2 || events[0].To != control.Passthrough || events[1].To != control.DualWrite {
		t.Fatalf("events = %+v, %v; want the two switches, newest first", events, err)
	}
	// A KV-authoritative phase cannot be left this way.
	r, pred, _ := ctl.Phase(ctx)
	r.Phase, r.Epoch = control.KVPrimary, r.Epoch+1
	if err := ctl.Update(ctx, pred, r); err != nil {
		t.Fatal(err)
	}
	if _, err := run(ctx, args("phase", "set", "dual-write")...); err == nil || !strings.Contains(err.Error(), "needs rollback") {
		t.Fatalf("leaving kv-primary with phase set: %v", err)
	}
}
