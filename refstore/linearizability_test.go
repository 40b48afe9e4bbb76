package refstore

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/kvproxy/kvproxy/kv"
)

// The register is the branch's commit id, read as a counter. An RMW reads
// it and writes read+1 in one Txn; a read is a plain GetBranch.
type regInput struct{ rmw bool }

type regOutput struct {
	ok  bool // the RMW committed (reads are always ok)
	val int  // what was read
}

var registerModel = porcupine.Model{
	Init: func() any { return 0 },
	Step: func(state, input, output any) (bool, any) {
		st, in, out := state.(int), input.(regInput), output.(regOutput)
		switch {
		case !in.rmw:
			return out.val == st, st
		case !out.ok:
			return true, st // a conflict changed nothing
		default:
			return out.val == st, st + 1
		}
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(regInput), output.(regOutput)
		if !in.rmw {
			return fmt.Sprintf("read %d", out.val)
		}
		return fmt.Sprintf("rmw read %d ok=%v", out.val, out.ok)
	},
}

func TestRegisterModelDetectsLostUpdate(t *testing.T) {
	// Two overlapping RMWs both read 0 and both commit: a lost update.
	bad := []porcupine.Operation{
		{ClientId: 0, Input: regInput{rmw: true}, Output: regOutput{ok: true, val: 0}, Call: 0, Return: 10},
		{ClientId: 1, Input: regInput{rmw: true}, Output: regOutput{ok: true, val: 0}, Call: 1, Return: 11},
	}
	if porcupine.CheckOperations(registerModel, bad) {
		t.Fatal("model accepts a lost update")
	}
}

func TestBranchReadModifyWriteIsLinearizable(t *testing.T) {
	const clients, opsPerClient = 8, 20
	forEachStore(t, func(t *testing.T, s *Store, raw kv.Store) {
		ctx := testCtx(t)
		newRepo(t, ctx, s, "r")
		must(t, s.SetBranch(ctx, BranchRow{RepositoryID: "r", ID: "main", StagingToken: sp("t"), CommitID: sp("0")}))
		start := time.Now()
		now := func() int64 { return int64(time.Since(start)) }

		var (
			mu        sync.Mutex
			history   []porcupine.Operation
			successes int
			wg        sync.WaitGroup
		)
		for c := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range opsPerClient {
					op := porcupine.Operation{ClientId: c, Call: now()}
					var out regOutput
					if i%4 == 3 {
						b, err := s.GetBranch(ctx, "r", "main")
						if err != nil {
							t.Error(err)
							return
						}
						out.val, _ = strconv.Atoi(*b.CommitID)
						op.Input = regInput{}
					} else {
						op.Input = regInput{rmw: true}
						tx := s.Begin()
						b, err := tx.GetBranch(ctx, "r", "main")
						if err != nil {
							t.Error(err)
							return
						}
						out.val, _ = strconv.Atoi(*b.CommitID)
						next := strconv.Itoa(out.val + 1)
						b.CommitID = &next
						if err := tx.SetBranch(ctx, b); err != nil {
							t.Error(err)
							return
						}
						err = tx.Commit(ctx)
						switch {
						case err == nil:
							out.ok = true
						case !errors.Is(err, ErrConflict):
							t.Error(err)
							return
						}
					}
					op.Output, op.Return = out, now()
					mu.Lock()
					history = append(history, op)
					if out.ok {
						successes++
					}
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if t.Failed() {
			return
		}
		res := porcupine.CheckOperationsTimeout(registerModel, history, 2*time.Minute)
		if res != porcupine.Ok {
			t.Fatalf("history of %d operations is not linearizable (%v)", len(history), res)
		}
		b, err := s.GetBranch(ctx, "r", "main")
		must(t, err)
		if final, _ := strconv.Atoi(*b.CommitID); final != successes || successes == 0 {
			t.Fatalf("final counter %d, successful commits %d: an update was lost", final, successes)
		}
		t.Logf("%d operations, %d committed RMWs", len(history), successes)
	})
}
