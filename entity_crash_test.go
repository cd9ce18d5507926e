package taskhub

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/taskhub/taskhub/backend"
	"github.com/taskhub/taskhub/backend/sqlite"
)

// The entity crash test SIGKILLs a worker in the middle of an entity batch:
// inside the k-th operation it runs, after earlier operations of the same
// batch changed the state in memory and before the batch commits. A second
// worker then finishes. Every signal must be applied exactly once: the
// counter ends at the number of signals sent, whatever k was.

const entityCrashChildEnv = "TASKHUB_ENTITY_CRASH_CHILD"

const (
	entityCrashClientSignals = 150
	entityCrashOrchSignals   = 150
	entityCrashBatch         = 25
)

func entityCrashOptions() WorkerOptions {
	o := crashOptions()
	o.MaxEntityOperationBatchSize = entityCrashBatch
	return o
}

// entityCrashChild runs a worker whose counter kills the process inside
// its KILL_AT-th operation, and exits once the counter is complete.
func entityCrashChild() int {
	killAt, _ := strconv.ParseInt(os.Getenv("TASKHUB_CRASH_KILL_AT"), 10, 64)
	be, err := sqlite.Open(os.Getenv("TASKHUB_CRASH_DB"), sqlite.Options{})
	if err != nil {
		fmt.Println("open:", err)
		return 2
	}
	var ops atomic.Int64
	reg := NewRegistry()
	registerEntityTests(reg)
	reg.entities = nil // replace the counter with one that can crash
	err = errors.Join(
		RegisterEntity(reg, "Counter", func(ctx *EntityContext) (any, error) {
			if n := ops.Add(1); n == killAt {
				_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
				select {} // the signal is on its way
			}
			return e2eCounter(ctx)
		}),
		RegisterEntity(reg, "Log", e2eLog),
	)
	if err != nil {
		fmt.Println("register:", err)
		return 2
	}
	w, err := NewWorker(be, reg, entityCrashOptions())
	if err == nil {
		err = w.Start(context.Background())
	}
	if err != nil {
		fmt.Println("start:", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := w.Client()
	want := strconv.Itoa(entityCrashClientSignals + entityCrashOrchSignals)
	if _, err := c.c.Wait(ctx, NewEntityID("Counter", "crash").String(), func(row *backend.Instance) bool {
		return string(row.Output) == want
	}); err != nil {
		fmt.Println("wait:", err)
		return 2
	}
	if _, err := c.WaitForInstanceCompletion(ctx, "signaller"); err != nil {
		fmt.Println("wait:", err)
		return 2
	}
	fmt.Printf("operations %d\n", ops.Load())
	_ = w.Stop(ctx)
	return 0
}

func runEntityCrashChild(t *testing.T, db string, killAt int) (killed bool) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), entityCrashChildEnv+"=1", "TASKHUB_CRASH_DB="+db, fmt.Sprintf("TASKHUB_CRASH_KILL_AT=%d", killAt))
	out, err := cmd.Output()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
			return true
		}
		t.Fatalf("child (kill at %d) failed: %v\n%s", killAt, err, out)
	}
	if err != nil {
		t.Fatalf("child: %v", err)
	}
	return false
}

// prepareEntityCrash writes the work before any worker runs: client
// signals (unsequenced) and an orchestration that signals the same counter
// (sequenced, over several steps).
func prepareEntityCrash(t *testing.T, db string) {
	t.Helper()
	be := openSQLite(t, db)
	ctx := ctxT(t)
	_, err := be.HubCreate(ctx, &backend.HubCreateParams{PartitionCount: 1, Now: time.Now()})
	must(t, err)
	c := NewClient(be, ClientOptions{})
	id := NewEntityID("Counter", "crash")
	_, err = c.ScheduleNewOrchestration(ctx, "SignalMany", map[string]any{"Entity": id.String(), "N": entityCrashOrchSignals}, WithStartInstanceID("signaller"))
	must(t, err)
	var wg sync.WaitGroup
	errs := make(chan error, entityCrashClientSignals)
	for range entityCrashClientSignals {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- c.SignalEntity(ctx, id, "add", 1)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		must(t, err)
	}
	be.Close()
}

func TestEntityCrashDuringBatch(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test starts many processes; skipped with -short")
	}
	dir := t.TempDir()
	total := entityCrashClientSignals + entityCrashOrchSignals
	// Kill points: the first operation, inside the first batch, at a batch
	// boundary, and late.
	points := []int{1, 2, entityCrashBatch / 2, entityCrashBatch + 1, 2*entityCrashBatch + 7, total / 2, total - 3}
	for _, k := range points {
		t.Run(fmt.Sprint("kill-at-op-", k), func(t *testing.T) {
			db := filepath.Join(dir, fmt.Sprintf("kill-%d.db", k))
			prepareEntityCrash(t, db)
			if !runEntityCrashChild(t, db, k) {
				t.Fatalf("the worker was not killed at operation %d", k)
			}
			if runEntityCrashChild(t, db, 0) {
				t.Fatalf("the restarted worker was killed")
			}
			be := openSQLite(t, db)
			ctx := ctxT(t)
			c := NewClient(be, ClientOptions{})
			m, err := c.GetEntity(ctx, NewEntityID("Counter", "crash"), true)
			must(t, err)
			if got := stateInt(t, m); got != total {
				t.Fatalf("counter %d after a kill at operation %d, want exactly %d", got, k, total)
			}
			qm, err := be.QueueMetrics(ctx, &backend.QueueMetricsParams{Now: time.Now()})
			must(t, err)
			for p, q := range qm.Control {
				if q.Length != 0 {
					t.Fatalf("control queue %d still holds %d messages", p, q.Length)
				}
			}
			st, err := c.GetInstance(ctx, "signaller")
			must(t, err)
			wantOutput(t, st, strconv.Itoa(entityCrashOrchSignals))
		})
	}
}
