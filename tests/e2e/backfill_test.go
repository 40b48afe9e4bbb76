package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kvproxy/kvproxy/internal/testenv"
	"github.com/kvproxy/kvproxy/shadow/migrate"
	"github.com/kvproxy/kvproxy/tests/legacygen"
)

// runMigrate runs `kvproxy <args>` to completion and returns stdout.
func runMigrate(t *testing.T, ctx context.Context, args ...string) ([]byte, string, error) {
	t.Helper()
	cmd := exec.CommandContext(ctx, testenv.ProxyBinary(t), args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.Bytes(), errb.String(), err
}

var rowsRe = regexp.MustCompile(` rows=(\d+) `)

// killMidway starts `kvproxy <args>`, waits until its log shows progress
// past zero rows, and kills it with SIGKILL. It fails the test if the
// process ended on its own first.
func killMidway(t *testing.T, ctx context.Context, progress string, minRows int, args ...string) string {
	t.Helper()
	cmd := exec.CommandContext(ctx, testenv.ProxyBinary(t), args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var logs strings.Builder
	seen := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stderr)
		signalled := false
		for sc.Scan() {
			line := sc.Text()
			mu.Lock()
			logs.WriteString(line + "\n")
			mu.Unlock()
			if m := rowsRe.FindStringSubmatch(line); !signalled && strings.Contains(line, progress) && m != nil {
				if n, _ := strconv.Atoi(m[1]); n < minRows {
					continue
				}
				signalled = true
				close(seen)
			}
		}
	}()
	select {
	case <-seen:
		_ = cmd.Process.Signal(syscall.SIGKILL)
	case <-done:
		_ = cmd.Wait()
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("kvproxy %s ended before it could be killed:\n%s", args[0], logs.String())
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		t.Fatal("no progress before the deadline")
	}
	<-done
	err = cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("process was not killed by SIGKILL: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	return logs.String()
}

// TestBackfillAndVerifySurviveKill9 kills the real binary during backfill
// and during verify, reruns each, and checks that the result is the same
// as an uninterrupted run and that at most one page was redone.
func TestBackfillAndVerifySurviveKill9(t *testing.T) {
	const page = 100
	for _, st := range kvStores() {
		if st.driver == "mem" || st.driver == "dynamodb" {
			continue // mem does not outlive the process; dynamodb is covered in-process
		}
		t.Run(st.driver, func(t *testing.T) {
			ctx := testCtx(t, 8*time.Minute)
			dsn := legacyDB(t)
			gen, err := legacygen.Generate(ctx, dsn, legacygen.Config{Repos: 5, CommitsPerRepo: 120, BranchesPerRepo: 12, TagsPerRepo: 5, StagedPerBranch: 40, OrphanTokens: 1, Seed: 11})
			if err != nil {
				t.Fatal(err)
			}
			common := []string{"--upstream", dsn, "--kv-driver", st.driver, "--kv-dsn", st.dsn(t), "--progress-interval", "50ms"}
			bf := append([]string{"backfill", "--page-size", "100", "--json"}, common...)

			killMidway(t, ctx, `msg="backfill progress"`, 500, append(bf, "--max-rows-per-second", "1500")...)
			out, logs, err := runMigrate(t, ctx, bf...)
			if err != nil {
				t.Fatalf("resumed backfill: %v\n%s", err, logs)
			}
			var res migrate.BackfillResult
			if err := json.Unmarshal(out, &res); err != nil {
				t.Fatalf("backfill output: %v\n%s", err, out)
			}
			if !res.Resumed || res.Status.Runs != 2 {
				t.Errorf("resumed %v runs %d, want a resumed second run", res.Resumed, res.Status.Runs)
			}
			if got := res.Present.Sum(); got > page {
				t.Errorf("the resumed run redid %d rows, more than one page (%d)", got, page)
			}
			want := gen.Rows() - gen.OrphanRows
			if got := res.Status.Copied.Sum() + res.Status.Present.Sum(); got != want {
				t.Errorf("copied+present over both runs = %d, want %d", got, want)
			}
			if res.Copied.Sum() == 0 || res.Copied.Sum() >= want {
				t.Errorf("the second run copied %d of %d rows: the kill was not mid-way", res.Copied.Sum(), want)
			}
			t.Logf("second run: copied %d, redone %d of %d", res.Copied.Sum(), res.Present.Sum(), want)

			vf := append([]string{"verify", "--page-size", "50", "--json"}, common...)
			full, logs, err := runMigrate(t, ctx, vf...)
			if err != nil {
				t.Fatalf("verify: %v\n%s", err, logs)
			}
			var clean migrate.Report
			if err := json.Unmarshal(full, &clean); err != nil {
				t.Fatal(err)
			}
			if clean.Differences() != 0 || clean.Entities[migrate.EntityStaging].Match != gen.Staged {
				t.Fatalf("verify after backfill: %s", full)
			}

			// Past the first repository, whose end is the first checkpoint.
			killMidway(t, ctx, `msg="verify progress"`, 1500, append(vf, "--max-rows-per-second", "1000")...)
			again, logs, err := runMigrate(t, ctx, vf...)
			if err != nil {
				t.Fatalf("resumed verify: %v\n%s", err, logs)
			}
			var resumed migrate.Report
			if err := json.Unmarshal(again, &resumed); err != nil {
				t.Fatal(err)
			}
			if resumed.Runs != 2 {
				t.Errorf("verify runs = %d, want 2 (resumed)", resumed.Runs)
			}
			for _, e := range migrate.Entities() {
				if a, b := clean.Entities[e], resumed.Entities[e]; a.Match != b.Match || b.Differences() != 0 {
					t.Errorf("%s: uninterrupted %+v, resumed %+v", e, *a, *b)
				}
			}
			// Idempotent: one more backfill copies nothing.
			out, logs, err = runMigrate(t, ctx, bf...)
			if err != nil {
				t.Fatalf("third backfill: %v\n%s", err, logs)
			}
			var third migrate.BackfillResult
			if err := json.Unmarshal(out, &third); err != nil {
				t.Fatal(err)
			}
			if third.Resumed || third.Copied.Sum() != 0 || third.Present.Sum() != want {
				t.Errorf("third backfill: resumed %v copied %d present %d, want a fresh run copying nothing", third.Resumed, third.Copied.Sum(), third.Present.Sum())
			}
		})
	}
}

// TestVerifyCommandReportsAndRepairs corrupts the legacy side of a
// backfilled store (a row KV misses) and checks the table output, the exit
// status and --repair.
func TestVerifyCommandReportsAndRepairs(t *testing.T) {
	ctx := testCtx(t, 5*time.Minute)
	dsn := legacyDB(t)
	if _, err := legacygen.Generate(ctx, dsn, legacygen.Config{Repos: 2, CommitsPerRepo: 20, BranchesPerRepo: 3, TagsPerRepo: 2, StagedPerBranch: 5, Seed: 5}); err != nil {
		t.Fatal(err)
	}
	common := []string{"--upstream", dsn, "--kv-driver", "postgres", "--kv-dsn", testenv.PostgresDB(t)}
	if out, logs, err := runMigrate(t, ctx, append([]string{"backfill"}, common...)...); err != nil || !strings.Contains(string(out), "staging") {
		t.Fatalf("backfill: %v\n%s\n%s", err, out, logs)
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	_, err = conn.Exec(ctx, `INSERT INTO graveler_tags VALUES ('repo-0001', 'late-tag', 'abc')`)
	conn.Close(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out, _, err := runMigrate(t, ctx, append([]string{"verify"}, common...)...)
	if err == nil {
		t.Fatalf("verify exited 0 with a difference:\n%s", out)
	}
	for _, want := range []string{"missing_in_kv", "tags/repo-0001/late-tag", "NOT clean: 1 differences"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("verify output lacks %q:\n%s", want, out)
		}
	}
	out, logs, err := runMigrate(t, ctx, append([]string{"verify", "--repair"}, common...)...)
	if err != nil || !strings.Contains(string(out), "repaired 1, repair failed 0") {
		t.Fatalf("verify --repair: %v\n%s\n%s", err, out, logs)
	}
	out, _, err = runMigrate(t, ctx, append([]string{"verify"}, common...)...)
	if err != nil || !strings.Contains(string(out), "clean: 0 differences") {
		t.Fatalf("verify after repair: %v\n%s", err, out)
	}
}
