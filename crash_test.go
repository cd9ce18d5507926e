package taskhub

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/taskhub/taskhub/backend/sqlite"
)

// The crash test runs a worker in a child process (this test binary,
// re-executed) and SIGKILLs it right after its k-th durable commit, for every
// k; a second child then finishes the instance. The store must then hold a
// history with no duplicated and no missing event.

const crashChildEnv = "TASKHUB_CRASH_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(crashChildEnv) != "" {
		os.Exit(crashChild())
	}
	if os.Getenv(scaleChildEnv) != "" {
		os.Exit(scaleChild())
	}
	if os.Getenv(chaosChildEnv) != "" {
		os.Exit(chaosChild())
	}
	if os.Getenv(entityCrashChildEnv) != "" {
		os.Exit(entityCrashChild())
	}
	os.Exit(m.Run())
}

func crashOptions() WorkerOptions {
	o := testOptions()
	o.PartitionCount = 1
	o.LeaseDuration = time.Second
	o.LeaseRenewInterval = 250 * time.Millisecond
	o.LeaseAcquireInterval = 100 * time.Millisecond
	o.WorkItemVisibilityTimeout = time.Second
	o.MaxQueuePollingInterval = 100 * time.Millisecond
	return o
}

// crashChild runs in the child process. It prints "commits N" when the
// instance completes, and kills itself after commit KILL_AT if that is set.
func crashChild() int {
	db := os.Getenv("TASKHUB_CRASH_DB")
	killAt, _ := strconv.Atoi(os.Getenv("TASKHUB_CRASH_KILL_AT"))
	be, err := sqlite.Open(db, sqlite.Options{})
	if err != nil {
		fmt.Println("open:", err)
		return 2
	}
	reg := NewRegistry()
	registerHello(reg)
	opts := crashOptions()
	var commits atomic.Int64
	opts.hooks.OnBatch = func(int, error) {
		if n := commits.Add(1); killAt > 0 && n == int64(killAt) {
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // the signal is on its way
		}
	}
	w, err := NewWorker(be, reg, opts)
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
	if os.Getenv("TASKHUB_CRASH_SCHEDULE") != "" {
		if _, err := c.ScheduleNewOrchestration(ctx, "Hello", nil, WithStartInstanceID("crash")); err != nil {
			fmt.Println("schedule:", err)
			return 2
		}
	}
	if _, err := c.WaitForInstanceCompletion(ctx, "crash"); err != nil {
		fmt.Println("wait:", err)
		return 2
	}
	fmt.Printf("commits %d\n", commits.Load())
	_ = w.Stop(ctx)
	return 0
}

// runChild runs one child; killed reports whether it died by SIGKILL.
func runChild(t *testing.T, db string, killAt int, schedule bool) (commits int, killed bool) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"=1", "TASKHUB_CRASH_DB="+db, fmt.Sprintf("TASKHUB_CRASH_KILL_AT=%d", killAt))
	if schedule {
		cmd.Env = append(cmd.Env, "TASKHUB_CRASH_SCHEDULE=1")
	}
	out, err := cmd.Output()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
			return 0, true
		}
		t.Fatalf("child (kill at %d) failed: %v\n%s", killAt, err, out)
	}
	if err != nil {
		t.Fatalf("child: %v", err)
	}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		if n, ok := strings.CutPrefix(sc.Text(), "commits "); ok {
			commits, _ = strconv.Atoi(n)
			return commits, false
		}
	}
	t.Fatalf("child printed no commit count:\n%s", out)
	return 0, false
}

func TestCrashSafety(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test starts many processes; skipped with -short")
	}
	dir := t.TempDir()
	total, _ := runChild(t, filepath.Join(dir, "clean.db"), 0, true)
	if total < 5 {
		t.Fatalf("a clean run made %d commits; the test needs the real count", total)
	}
	kills := 0
	for k := 1; k <= total; k++ {
		db := filepath.Join(dir, fmt.Sprintf("kill-%d.db", k))
		_, killed := runChild(t, db, k, true)
		if killed {
			kills++
			runChild(t, db, 0, false) // restart: finishes the instance
		}
		checkCrashStore(t, db, k)
	}
	if kills < total/2 {
		t.Fatalf("only %d of %d runs were killed: the kill points are not reached", kills, total)
	}
}

func checkCrashStore(t *testing.T, db string, k int) {
	t.Helper()
	be := openSQLite(t, db)
	c := NewClient(be, ClientOptions{})
	ctx := ctxT(t)
	st, err := c.GetInstance(ctx, "crash")
	if err != nil {
		t.Fatalf("kill at %d: %v", k, err)
	}
	if st.RuntimeStatus != StatusCompleted || string(st.Output) != `["Hello Tokyo!","Hello Seattle!","Hello London!"]` {
		t.Fatalf("kill at %d: instance %s output %s failure %v", k, st.RuntimeStatus, st.Output, st.Failure)
	}
	evs, err := c.GetHistory(ctx, "crash")
	if err != nil {
		t.Fatalf("kill at %d: %v", k, err)
	}
	t.Run(fmt.Sprintf("kill-at-%d", k), func(t *testing.T) { assertCleanHistory(t, evs, 3) })
	be.Close()
}
