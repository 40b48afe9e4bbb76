package local_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kvproxy/kvproxy/kv"
	"github.com/kvproxy/kvproxy/kv/local"
	bolt "go.etcd.io/bbolt"
	"go.uber.org/goleak"
)

const childEnv = "KVPROXY_LOCAL_LOCK_CHILD"

// TestMain lets the test binary act as the second process of
// TestSecondProcessLocked: with childEnv set it opens the file and reports.
func TestMain(m *testing.M) {
	if path := os.Getenv(childEnv); path != "" {
		os.Exit(child(path))
	}
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutines left behind:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func child(path string) int {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	s, err := local.New(ctx, path, local.Options{})
	if err == nil {
		s.Close()
		fmt.Println("RESULT opened")
		return 0
	}
	fmt.Printf("RESULT locked=%t path=%t after=%s err=%v\n",
		errors.Is(err, kv.ErrStoreLocked), strings.Contains(err.Error(), path), time.Since(start).Round(time.Millisecond), err)
	return 0
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

func runChild(t *testing.T, path string) string {
	t.Helper()
	cmd := exec.CommandContext(ctx(t), os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+path)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if r, ok := strings.CutPrefix(line, "RESULT "); ok {
			return r
		}
	}
	t.Fatalf("child printed no result:\n%s", out)
	return ""
}

// TestSecondProcessLocked opens the file here and again from a real second
// process, which must fail with ErrStoreLocked naming the path (within the
// 1 s lock timeout, not hang); after Close the second process gets in.
func TestSecondProcessLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "dir", "kv.db")
	s, err := local.New(ctx(t), path, local.Options{})
	if err != nil {
		t.Fatal(err)
	}
	got := runChild(t, path)
	if !strings.HasPrefix(got, "locked=true path=true ") {
		t.Fatalf("second process: %s; want ErrStoreLocked with the path", got)
	}
	t.Logf("second process: %s", got)
	s.Close()
	if got := runChild(t, path); got != "opened" {
		t.Fatalf("second process after Close: %s", got)
	}
}

func TestReopenKeepsData(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kv.db")
	s, err := local.Open(ctx(t), path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Set(ctx(t), []byte("p"), []byte("k"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := s.Set(ctx(t), []byte("gone"), []byte("k"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx(t), []byte("gone"), []byte("k")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = local.Open(ctx(t), path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	v, err := s.Get(ctx(t), []byte("p"), []byte("k"))
	if err != nil || string(v.Value) != "v" {
		t.Fatalf("after reopen: %v, %v", v, err)
	}
	s.Close()
	// The emptied partition's bucket was removed, not left behind.
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		parts := tx.Bucket([]byte("kvproxy.partitions"))
		if parts == nil {
			return errors.New("no partitions bucket")
		}
		if parts.Bucket([]byte("gone")) != nil {
			return errors.New("bucket of the emptied partition still exists")
		}
		if parts.Bucket([]byte("p")) == nil {
			return errors.New("bucket of partition p missing")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestBadDSN(t *testing.T) {
	dir := t.TempDir()
	notDir := filepath.Join(dir, "file")
	if err := os.WriteFile(notDir, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	garbage := filepath.Join(dir, "garbage.db")
	if err := os.WriteFile(garbage, []byte(strings.Repeat("not a bolt file ", 1000)), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, dsn string
		want      error
		mention   string
	}{
		{"empty", "", kv.ErrDriverConfiguration, "empty DSN"},
		{"directory", dir, kv.ErrDriverConfiguration, "is a directory"},
		{"parent is a file", filepath.Join(notDir, "kv.db"), kv.ErrSetupFailed, notDir},
		{"not a bolt file", garbage, kv.ErrSetupFailed, garbage},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, err := local.Open(ctx(t), c.dsn)
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

// TestScanDoesNotBlockGrowth: bbolt cannot grow its memory map while a read
// transaction is open, so a scan that held one across Next calls would make
// a large write from the same goroutine wait forever. Pages must release it.
func TestScanDoesNotBlockGrowth(t *testing.T) {
	s, err := local.New(ctx(t), filepath.Join(t.TempDir(), "kv.db"), local.Options{ScanPageSize: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	pk := []byte("p")
	for i := range 50 {
		if err := s.Set(ctx(t), pk, fmt.Appendf(nil, "k%03d", i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	it, err := s.Scan(ctx(t), pk, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	for range 3 {
		if !it.Next() {
			t.Fatalf("scan ended early: %v", it.Err())
		}
	}
	done := make(chan error, 1)
	go func() {
		big := make([]byte, 512*1024)
		for i := range 160 { // 80 MiB: the map must grow several times
			if err := s.Set(ctx(t), []byte("big"), fmt.Appendf(nil, "b%03d", i), big); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("writes blocked behind an open scan")
	}
	n := 3
	for it.Next() {
		n++
	}
	if it.Err() != nil || n != 50 {
		t.Fatalf("scan after the writes: %d entries, %v", n, it.Err())
	}
}

// TestGroupCommit runs many concurrent writers, so that the committer puts
// several into one transaction, with a mix of outcomes inside each group:
// unconditional writes, creates that race on one key (exactly one may win),
// compare-and-sets against a stale value (must fail) and cancelled callers
// (must write nothing). Every acknowledged write must survive a reopen, and
// no failed one may leave a trace.
func TestGroupCommit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kv.db")
	s, err := local.New(ctx(t), path, local.Options{})
	if err != nil {
		t.Fatal(err)
	}
	const writers = 64
	pk := []byte("p")
	if err := s.Set(ctx(t), pk, []byte("cas"), []byte("current")); err != nil {
		t.Fatal(err)
	}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	type outcome struct {
		kind string
		i    int
		err  error
	}
	results := make(chan outcome, writers*4)
	start := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		var wg = make(chan struct{}, writers)
		for i := range writers {
			go func() {
				defer func() { wg <- struct{}{} }()
				<-start
				c := ctx(t)
				results <- outcome{"set", i, s.Set(c, pk, fmt.Appendf(nil, "set%02d", i), fmt.Appendf(nil, "v%d", i))}
				results <- outcome{"create", i, s.SetIf(c, pk, []byte("race"), fmt.Appendf(nil, "w%d", i), nil)}
				results <- outcome{"stale", i, s.SetIf(c, pk, []byte("cas"), []byte("lost"), kv.Predicate("old"))}
				results <- outcome{"cancelled", i, s.Set(cancelled, pk, fmt.Appendf(nil, "never%02d", i), []byte("x"))}
			}()
		}
		for range writers {
			<-wg
		}
	}()
	close(start)
	<-done
	close(results)
	winners := 0
	for r := range results {
		var ok bool
		switch r.kind {
		case "set":
			ok = r.err == nil
		case "create":
			ok = r.err == nil || errors.Is(r.err, kv.ErrPredicateFailed)
			if r.err == nil {
				winners++
			}
		case "stale":
			ok = errors.Is(r.err, kv.ErrPredicateFailed)
		case "cancelled":
			ok = errors.Is(r.err, context.Canceled)
		}
		if !ok {
			t.Errorf("%s #%d: unexpected result %v", r.kind, r.i, r.err)
		}
	}
	if winners != 1 {
		t.Errorf("%d creates of one key succeeded, want exactly 1", winners)
	}
	s.Close()

	s, err = local.New(ctx(t), path, local.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	it, err := s.Scan(ctx(t), pk, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	got := map[string]string{}
	for it.Next() {
		got[string(it.Entry().Key)] = string(it.Entry().Value)
	}
	if it.Err() != nil {
		t.Fatal(it.Err())
	}
	if got["cas"] != "current" {
		t.Errorf("cas = %q after only stale compare-and-sets, want %q", got["cas"], "current")
	}
	if !strings.HasPrefix(got["race"], "w") {
		t.Errorf("race = %q, want one writer's value", got["race"])
	}
	for i := range writers {
		if v, want := got[fmt.Sprintf("set%02d", i)], fmt.Sprintf("v%d", i); v != want {
			t.Errorf("set%02d = %q after reopen, want %q", i, v, want)
		}
		if _, ok := got[fmt.Sprintf("never%02d", i)]; ok {
			t.Errorf("never%02d was written by a cancelled caller", i)
		}
	}
	if len(got) != writers+2 {
		t.Errorf("%d keys after reopen, want %d", len(got), writers+2)
	}
}

// TestCloseWithWritersWaiting closes the store while writers keep coming:
// each write either succeeds (and is on disk) or fails with ErrClosed, and
// none hangs.
func TestCloseWithWritersWaiting(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kv.db")
	s, err := local.New(ctx(t), path, local.Options{})
	if err != nil {
		t.Fatal(err)
	}
	const writers = 16
	acked := make(chan string, writers*1000)
	errs := make(chan error, writers)
	for w := range writers {
		go func() {
			for i := 0; ; i++ {
				key := fmt.Sprintf("w%02d-%04d", w, i)
				err := s.Set(ctx(t), []byte("p"), []byte(key), []byte("v"))
				if err != nil {
					errs <- err
					return
				}
				acked <- key
				if i == 999 {
					errs <- nil
					return
				}
			}
		}()
	}
	time.Sleep(50 * time.Millisecond)
	s.Close()
	for range writers {
		select {
		case err := <-errs:
			if err != nil && !errors.Is(err, kv.ErrClosed) {
				t.Errorf("write during Close: %v, want success or ErrClosed", err)
			}
		case <-time.After(2 * time.Minute):
			t.Fatal("a writer hung across Close")
		}
	}
	close(acked)
	s, err = local.New(ctx(t), path, local.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for key := range acked {
		if _, err := s.Get(ctx(t), []byte("p"), []byte(key)); err != nil {
			t.Errorf("acknowledged write %s lost: %v", key, err)
		}
	}
}
