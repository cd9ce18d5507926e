package taskhub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/taskhub/taskhub/backend"
	"github.com/taskhub/taskhub/backend/sqlite"
)

// harness is a worker on a fresh SQLite hub with the test functions.
type harness struct {
	t      *testing.T
	be     backend.Backend
	w      *Worker
	client *Client
	reg    *Registry
	path   string
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func testOptions() WorkerOptions {
	return WorkerOptions{
		Logger:                quietLogger(),
		LeaseDuration:         2 * time.Second,
		LeaseRenewInterval:    500 * time.Millisecond,
		LeaseAcquireInterval:  200 * time.Millisecond,
		LargePayloadThreshold: 45 * 1024,
	}
}

func openSQLite(t *testing.T, path string) backend.Backend {
	t.Helper()
	be, err := sqlite.Open(path, sqlite.Options{})
	if err != nil {
		t.Fatalf("open sqlite: %v", err)
	}
	t.Cleanup(func() { be.Close() })
	return be
}

func newHarness(t *testing.T, register func(*Registry), opts WorkerOptions) *harness {
	t.Helper()
	h := &harness{t: t, reg: NewRegistry(), path: filepath.Join(t.TempDir(), "hub.db")}
	register(h.reg)
	h.be = openSQLite(t, h.path)
	h.start(opts)
	return h
}

func (h *harness) start(opts WorkerOptions) {
	h.t.Helper()
	w, err := NewWorker(h.be, h.reg, opts)
	if err != nil {
		h.t.Fatalf("NewWorker: %v", err)
	}
	if err := w.Start(context.Background()); err != nil {
		h.t.Fatalf("Start: %v", err)
	}
	h.w, h.client = w, w.Client()
	h.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := w.Stop(ctx); err != nil {
			h.t.Errorf("Stop: %v", err)
		}
	})
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func (h *harness) run(name string, input any, opts ...ScheduleOption) *InstanceStatus {
	h.t.Helper()
	ctx := ctxT(h.t)
	id, err := h.client.ScheduleNewOrchestration(ctx, name, input, opts...)
	if err != nil {
		h.t.Fatalf("schedule %s: %v", name, err)
	}
	st, err := h.client.WaitForInstanceCompletion(ctx, id)
	if err != nil {
		h.t.Fatalf("wait %s: %v", id, err)
	}
	return st
}

func wantOutput(t *testing.T, st *InstanceStatus, want string) {
	t.Helper()
	if st.RuntimeStatus != StatusCompleted {
		t.Fatalf("status %s (failure %v), want Completed", st.RuntimeStatus, st.Failure)
	}
	if string(st.Output) != want {
		t.Fatalf("output %s, want %s", st.Output, want)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func registerHello(r *Registry) {
	_ = RegisterActivity(r, "SayHello", func(_ ActivityContext, city string) (string, error) { return "Hello " + city + "!", nil })
	_ = RegisterOrchestrator(r, "Hello", func(ctx *OrchestrationContext, _ any) ([]string, error) {
		var out []string
		for _, c := range []string{"Tokyo", "Seattle", "London"} {
			s, err := Await[string](ctx.CallActivity("SayHello", c))
			if err != nil {
				return nil, err
			}
			out = append(out, s)
		}
		return out, nil
	})
}

func TestHelloSequence(t *testing.T) {
	for _, force := range []bool{false, true} {
		t.Run(fmt.Sprintf("forceReplay=%v", force), func(t *testing.T) {
			opts := testOptions()
			opts.ForceReplay = force
			h := newHarness(t, registerHello, opts)
			st := h.run("Hello", nil)
			wantOutput(t, st, `["Hello Tokyo!","Hello Seattle!","Hello London!"]`)
			evs, err := h.client.GetHistory(ctxT(t), st.InstanceID)
			must(t, err)
			assertCleanHistory(t, evs, 3)
		})
	}
}

// assertCleanHistory checks seqs are 0..n-1, each task is scheduled once and
// completed once, and the history ends with one ExecutionCompleted.
func assertCleanHistory(t *testing.T, evs []*HistoryEvent, activities int) {
	t.Helper()
	scheduled, completed := map[int64]int{}, map[int64]int{}
	ends := 0
	for i, e := range evs {
		if e.Seq != int64(i) {
			t.Fatalf("event %d has seq %d", i, e.Seq)
		}
		switch e.Type {
		case "TaskScheduled":
			scheduled[e.TaskID]++
		case "TaskCompleted", "TaskFailed":
			completed[e.TaskID]++
		case "ExecutionCompleted":
			ends++
		}
	}
	if len(scheduled) != activities || len(completed) != activities || ends != 1 {
		t.Fatalf("history has %d scheduled, %d completed tasks and %d ends; want %d, %d, 1", len(scheduled), len(completed), ends, activities, activities)
	}
	for id, n := range scheduled {
		if n != 1 || completed[id] != 1 {
			t.Fatalf("task %d scheduled %d times, completed %d times", id, n, completed[id])
		}
	}
}

func TestFanOutFanIn(t *testing.T) {
	h := newHarness(t, func(r *Registry) {
		_ = RegisterActivity(r, "Double", func(_ ActivityContext, n int) (int, error) { return 2 * n, nil })
		_ = RegisterOrchestrator(r, "Fan", func(ctx *OrchestrationContext, n int) (int, error) {
			tasks := make([]Task, n)
			for i := range tasks {
				tasks[i] = ctx.CallActivity("Double", i)
			}
			if err := ctx.WhenAll(tasks...).Await(nil); err != nil {
				return 0, err
			}
			sum := 0
			for _, task := range tasks {
				v, err := Await[int](task)
				if err != nil {
					return 0, err
				}
				sum += v
			}
			return sum, nil
		})
	}, testOptions())
	const n = 500
	wantOutput(t, h.run("Fan", n), fmt.Sprint(n*(n-1)))
}

func TestTimerAndCurrentTime(t *testing.T) {
	h := newHarness(t, func(r *Registry) {
		_ = RegisterOrchestrator(r, "Sleep", func(ctx *OrchestrationContext, ms int) (bool, error) {
			start := ctx.CurrentTime()
			if err := ctx.CreateTimer(time.Duration(ms) * time.Millisecond).Await(nil); err != nil {
				return false, err
			}
			return ctx.CurrentTime().Sub(start) >= time.Duration(ms)*time.Millisecond, nil
		})
	}, testOptions())
	wantOutput(t, h.run("Sleep", 100), "true")
}

func registerApproval(r *Registry) {
	_ = RegisterOrchestrator(r, "Approval", func(ctx *OrchestrationContext, timeoutMs int) (string, error) {
		var ok bool
		err := ctx.WaitForExternalEvent("Approval", time.Duration(timeoutMs)*time.Millisecond).Await(&ok)
		switch {
		case errors.Is(err, ErrEventTimeout):
			return "timed out", nil
		case err != nil:
			return "", err
		case ok:
			return "approved", nil
		}
		return "rejected", nil
	})
}

func TestExternalEvents(t *testing.T) {
	h := newHarness(t, registerApproval, testOptions())
	ctx := ctxT(t)

	t.Run("raised", func(t *testing.T) {
		id, err := h.client.ScheduleNewOrchestration(ctx, "Approval", 0)
		must(t, err)
		must(t, h.client.RaiseEvent(ctx, id, "approval", true)) // names are case-insensitive
		st, err := h.client.WaitForInstanceCompletion(ctx, id)
		must(t, err)
		wantOutput(t, st, `"approved"`)
	})
	t.Run("timeout", func(t *testing.T) {
		wantOutput(t, h.run("Approval", 100), `"timed out"`)
	})
	t.Run("raise to missing and finished instances", func(t *testing.T) {
		if err := h.client.RaiseEvent(ctx, "no-such-instance", "x", 1); !errors.Is(err, ErrInstanceNotFound) {
			t.Fatalf("raise to missing: %v, want ErrInstanceNotFound", err)
		}
		st := h.run("Approval", 10)
		if err := h.client.RaiseEvent(ctx, st.InstanceID, "Approval", true); !errors.Is(err, ErrInstanceFinished) {
			t.Fatalf("raise to finished: %v, want ErrInstanceFinished", err)
		}
	})
}

func TestRetries(t *testing.T) {
	var calls atomic.Int32
	var attempts sync.Map
	h := newHarness(t, func(r *Registry) {
		_ = RegisterActivity(r, "Flaky", func(ctx ActivityContext, failures int) (int, error) {
			calls.Add(1)
			attempts.Store(ctx.Attempt(), true)
			if ctx.Attempt() <= failures {
				return 0, fmt.Errorf("attempt %d failed", ctx.Attempt())
			}
			return ctx.Attempt(), nil
		})
		_ = RegisterActivity(r, "Fatal", func(ctx ActivityContext, _ any) (int, error) {
			calls.Add(1)
			return 0, NonRetryable(errors.New("bad request"))
		})
		policy := RetryPolicy{MaxAttempts: 4, FirstInterval: 10 * time.Millisecond, BackoffCoefficient: 2}
		_ = RegisterOrchestrator(r, "Retry", func(ctx *OrchestrationContext, failures int) (int, error) {
			return Await[int](ctx.CallActivity("Flaky", failures, WithRetry(policy)))
		})
		_ = RegisterOrchestrator(r, "RetryFatal", func(ctx *OrchestrationContext, _ any) (string, error) {
			_, err := Await[int](ctx.CallActivity("Fatal", nil, WithRetry(policy)))
			var tf *TaskFailedError
			if !errors.As(err, &tf) {
				return "", fmt.Errorf("want TaskFailedError, got %v", err)
			}
			return fmt.Sprintf("%s|%s|%v", tf.Name, tf.Failure.Message, tf.Failure.NonRetryable), nil
		})
	}, testOptions())

	wantOutput(t, h.run("Retry", 2), "3")
	if calls.Load() != 3 {
		t.Fatalf("Flaky ran %d times, want 3", calls.Load())
	}
	st := h.run("Retry", 10)
	if st.RuntimeStatus != StatusFailed || st.Failure == nil || !strings.Contains(st.Failure.Message, "attempt 4 failed") {
		t.Fatalf("exhausted retries: status %s failure %+v", st.RuntimeStatus, st.Failure)
	}
	calls.Store(0)
	wantOutput(t, h.run("RetryFatal", nil), `"Fatal|bad request|true"`)
	if calls.Load() != 1 {
		t.Fatalf("non-retryable activity ran %d times, want 1", calls.Load())
	}
}

func TestActivityTimeout(t *testing.T) {
	h := newHarness(t, func(r *Registry) {
		_ = RegisterActivity(r, "Block", func(ctx ActivityContext, _ any) (int, error) {
			<-ctx.Done()
			return 0, ctx.Err()
		})
		_ = RegisterOrchestrator(r, "Timeout", func(ctx *OrchestrationContext, _ any) (string, error) {
			err := ctx.CallActivity("Block", nil, WithTimeout(50*time.Millisecond)).Await(nil)
			var tf *TaskFailedError
			if !errors.As(err, &tf) {
				return "", fmt.Errorf("want TaskFailedError, got %v", err)
			}
			return tf.Failure.Type, nil
		})
	}, testOptions())
	wantOutput(t, h.run("Timeout", nil), `"TimeoutError"`)
}

func TestContinueAsNew(t *testing.T) {
	h := newHarness(t, func(r *Registry) {
		_ = RegisterOrchestrator(r, "Count", func(ctx *OrchestrationContext, n int) (int, error) {
			if n < 5 {
				return 0, ctx.ContinueAsNew(n+1, false)
			}
			return n, nil
		})
	}, testOptions())
	st := h.run("Count", 0)
	wantOutput(t, st, "5")
	evs, err := h.client.GetHistory(ctxT(t), st.InstanceID)
	must(t, err)
	for _, e := range evs {
		if e.Type == "ExecutionStarted" && string(e.Input) != "5" {
			t.Fatalf("history kept an older execution: %+v", e)
		}
	}
}

func TestTerminateSuspendResume(t *testing.T) {
	h := newHarness(t, registerApproval, testOptions())
	ctx := ctxT(t)

	id, err := h.client.ScheduleNewOrchestration(ctx, "Approval", 0)
	must(t, err)
	_, err = h.client.WaitForInstanceStart(ctx, id)
	must(t, err)
	must(t, h.client.TerminateInstance(ctx, id, "enough", false))
	st, err := h.client.WaitForInstanceCompletion(ctx, id)
	must(t, err)
	if st.RuntimeStatus != StatusTerminated || string(st.Output) != `"enough"` {
		t.Fatalf("terminated: status %s output %s", st.RuntimeStatus, st.Output)
	}

	id, err = h.client.ScheduleNewOrchestration(ctx, "Approval", 0)
	must(t, err)
	_, err = h.client.WaitForInstanceStart(ctx, id)
	must(t, err)
	must(t, h.client.SuspendInstance(ctx, id, "hold"))
	_, err = h.client.WaitForInstance(ctx, id, func(s *InstanceStatus) bool { return s.RuntimeStatus == StatusSuspended })
	must(t, err)
	must(t, h.client.RaiseEvent(ctx, id, "Approval", true))
	// The event is recorded but not delivered while suspended: once its
	// step has committed, the instance must still be suspended.
	_, err = h.client.WaitForInstance(ctx, id, func(s *InstanceStatus) bool { return s.RuntimeStatus != StatusSuspended || eventRecorded(h, id) })
	must(t, err)
	if st, _ := h.client.GetInstance(ctx, id); st.RuntimeStatus != StatusSuspended {
		t.Fatalf("status after event while suspended: %s", st.RuntimeStatus)
	}
	must(t, h.client.ResumeInstance(ctx, id, "go"))
	st, err = h.client.WaitForInstanceCompletion(ctx, id)
	must(t, err)
	wantOutput(t, st, `"approved"`)
}

func eventRecorded(h *harness, id string) bool {
	evs, err := h.client.GetHistory(context.Background(), id)
	if err != nil {
		return false
	}
	for _, e := range evs {
		if e.Type == "EventRaised" {
			return true
		}
	}
	return false
}

func TestPurgeAndQuery(t *testing.T) {
	h := newHarness(t, func(r *Registry) {
		registerHello(r)
		registerApproval(r)
	}, testOptions())
	ctx := ctxT(t)
	for i := range 25 {
		h.run("Hello", nil, WithStartInstanceID(fmt.Sprintf("q-%02d", i)))
	}
	seen := map[string]bool{}
	token := ""
	pages := 0
	for {
		page, err := h.client.QueryInstances(ctx, InstanceQuery{Filter: InstanceFilter{InstanceIDPrefix: "q-", Statuses: []Status{StatusCompleted}}, PageSize: 10, ContinuationToken: token})
		must(t, err)
		pages++
		for _, s := range page.Instances {
			if seen[s.InstanceID] {
				t.Fatalf("%s listed twice", s.InstanceID)
			}
			seen[s.InstanceID] = true
		}
		if token = page.ContinuationToken; token == "" {
			break
		}
	}
	if len(seen) != 25 || pages != 3 {
		t.Fatalf("listed %d instances in %d pages, want 25 in 3", len(seen), pages)
	}

	must(t, h.client.PurgeInstance(ctx, "q-00"))
	if _, err := h.client.GetInstance(ctx, "q-00"); !errors.Is(err, ErrInstanceNotFound) {
		t.Fatalf("get purged: %v", err)
	}
	running, err := h.client.ScheduleNewOrchestration(ctx, "Approval", 0)
	must(t, err)
	if err := h.client.PurgeInstance(ctx, running); !errors.Is(err, ErrInstanceNotFinished) {
		t.Fatalf("purge running: %v, want ErrInstanceNotFinished", err)
	}
	n, err := h.client.PurgeInstances(ctx, InstanceFilter{InstanceIDPrefix: "q-"}, nil)
	must(t, err)
	if n != 24 {
		t.Fatalf("purged %d, want 24", n)
	}
}

func TestLargePayloadRoundTrip(t *testing.T) {
	h := newHarness(t, func(r *Registry) {
		_ = RegisterActivity(r, "Echo", func(_ ActivityContext, s string) (string, error) { return s + "!", nil })
		_ = RegisterOrchestrator(r, "Big", func(ctx *OrchestrationContext, s string) (string, error) {
			return Await[string](ctx.CallActivity("Echo", s))
		})
	}, testOptions())
	big := strings.Repeat("taskhub large payload ", 1<<20/22+1)[:1<<20]
	st := h.run("Big", big)
	var out string
	must(t, st.ReadOutput(&out))
	if out != big+"!" {
		t.Fatalf("output of %d bytes does not match", len(out))
	}
	var in string
	must(t, json.Unmarshal(st.Input, &in))
	if in != big {
		t.Fatal("input does not round-trip")
	}
}

func TestSubOrchestrations(t *testing.T) {
	h := newHarness(t, func(r *Registry) {
		registerHello(r)
		_ = RegisterOrchestrator(r, "Parent", func(ctx *OrchestrationContext, _ any) (int, error) {
			tasks := []Task{ctx.CallSubOrchestrator("Hello", nil), ctx.CallSubOrchestrator("Hello", nil, WithInstanceID("child-x"))}
			total := 0
			for _, task := range tasks {
				out, err := Await[[]string](task)
				if err != nil {
					return 0, err
				}
				total += len(out)
			}
			return total, nil
		})
	}, testOptions())
	wantOutput(t, h.run("Parent", nil), "6")
	st, err := h.client.GetInstance(ctxT(t), "child-x")
	must(t, err)
	if st.RuntimeStatus != StatusCompleted || st.ParentInstanceID == "" {
		t.Fatalf("child: %+v", st)
	}
}

func TestBadInput(t *testing.T) {
	h := newHarness(t, func(r *Registry) {
		registerHello(r)
		_ = RegisterOrchestrator(r, "CallsMissing", func(ctx *OrchestrationContext, _ any) (string, error) {
			return Await[string](ctx.CallActivity("NoSuchActivity", nil))
		})
		_ = RegisterOrchestrator(r, "TakesInt", func(ctx *OrchestrationContext, n int) (int, error) { return n, nil })
	}, testOptions())
	ctx := ctxT(t)

	// A client bound to the worker knows the orchestrator is missing.
	if _, err := h.client.ScheduleNewOrchestration(ctx, "NoSuchOrchestrator", nil); !errors.Is(err, ErrOrchestratorNotFound) {
		t.Fatalf("unknown orchestrator from a worker client: %v", err)
	}
	// A standalone client cannot know: the instance fails, naming it.
	standalone := NewClient(h.be, ClientOptions{})
	id, err := standalone.ScheduleNewOrchestration(ctx, "NoSuchOrchestrator", nil)
	must(t, err)
	st, err := h.client.WaitForInstanceCompletion(ctx, id)
	must(t, err)
	if st.RuntimeStatus != StatusFailed || !strings.Contains(st.Failure.Message, "NoSuchOrchestrator") {
		t.Fatalf("unknown orchestrator: %s %+v", st.RuntimeStatus, st.Failure)
	}
	st = h.run("CallsMissing", nil)
	if st.RuntimeStatus != StatusFailed || !strings.Contains(st.Failure.Message, "NoSuchActivity") {
		t.Fatalf("unknown activity: %s %+v", st.RuntimeStatus, st.Failure)
	}
	for _, id := range []string{"", strings.Repeat("x", MaxInstanceIDLength+1), "a/b", "bad\x00id", "@entity@key", ".", ".."} {
		if _, err := h.client.ScheduleNewOrchestration(ctx, "Hello", nil, WithStartInstanceID(id)); !errors.Is(err, ErrInvalidInstanceID) {
			t.Fatalf("instance ID %q: %v, want ErrInvalidInstanceID", id, err)
		}
	}
	if _, err := h.client.ScheduleNewOrchestration(ctx, "TakesInt", "not a number"); !errors.Is(err, ErrInvalidInput) || !strings.Contains(err.Error(), "cannot be decoded") {
		t.Fatalf("undecodable input: %v", err)
	}
	if _, err := h.client.ScheduleNewOrchestration(ctx, "TakesInt", json.RawMessage(`{broken`)); !errors.Is(err, ErrInvalidInput) {
		t.Fatal("invalid JSON input accepted")
	}
	if _, err := h.client.ScheduleNewOrchestration(ctx, "TakesInt", func() {}); err == nil {
		t.Fatal("unencodable input accepted")
	}
}

func TestReusePolicy(t *testing.T) {
	h := newHarness(t, func(r *Registry) {
		registerHello(r)
		registerApproval(r)
	}, testOptions())
	ctx := ctxT(t)
	_, err := h.client.ScheduleNewOrchestration(ctx, "Approval", 0, WithStartInstanceID("dup"))
	must(t, err)
	var exists *InstanceExistsError
	if _, err := h.client.ScheduleNewOrchestration(ctx, "Approval", 0, WithStartInstanceID("dup")); !errors.As(err, &exists) {
		t.Fatalf("duplicate running ID: %v, want InstanceExistsError", err)
	}
	// Terminate-running replaces it; the new execution runs to completion.
	_, err = h.client.ScheduleNewOrchestration(ctx, "Hello", nil, WithStartInstanceID("dup"), WithReusePolicy(ReuseTerminateRunning))
	must(t, err)
	st, err := h.client.WaitForInstanceCompletion(ctx, "dup")
	must(t, err)
	wantOutput(t, st, `["Hello Tokyo!","Hello Seattle!","Hello London!"]`)
	if _, err := h.client.ScheduleNewOrchestration(ctx, "Hello", nil, WithStartInstanceID("dup"), WithReusePolicy(ReuseNever)); !errors.As(err, &exists) {
		t.Fatalf("ReuseNever on a finished instance: %v", err)
	}
	// The default policy replaces a finished instance.
	_, err = h.client.ScheduleNewOrchestration(ctx, "Approval", 10, WithStartInstanceID("dup"))
	must(t, err)
	st, err = h.client.WaitForInstanceCompletion(ctx, "dup")
	must(t, err)
	wantOutput(t, st, `"timed out"`)
	evs, err := h.client.GetHistory(ctx, "dup")
	must(t, err)
	if evs[1].Type != "ExecutionStarted" || evs[1].Name != "Approval" {
		t.Fatalf("history of the new execution starts with %s %s", evs[1].Type, evs[1].Name)
	}
}

func TestPartitionCountMismatch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hub.db")
	be := openSQLite(t, path)
	reg := NewRegistry()
	opts := testOptions()
	opts.PartitionCount = 4
	w, err := NewWorker(be, reg, opts)
	must(t, err)
	must(t, w.Start(context.Background()))
	must(t, w.Stop(context.Background()))

	opts.PartitionCount = 8
	w2, err := NewWorker(be, reg, opts)
	must(t, err)
	err = w2.Start(context.Background())
	var mismatch *PartitionCountMismatchError
	if !errors.As(err, &mismatch) || mismatch.Stored != 4 || mismatch.Requested != 8 {
		t.Fatalf("start with another partition count: %v", err)
	}
	if !strings.Contains(err.Error(), "4") || !strings.Contains(err.Error(), "8") {
		t.Fatalf("error does not name both counts: %v", err)
	}
}

func TestOptionsValidation(t *testing.T) {
	be := openSQLite(t, filepath.Join(t.TempDir(), "hub.db"))
	for _, o := range []WorkerOptions{
		{PartitionCount: 17},
		{PartitionCount: -1},
		{MaxConcurrentActivityFunctions: -2},
		{LeaseDuration: time.Second, LeaseRenewInterval: 2 * time.Second},
	} {
		if _, err := NewWorker(be, NewRegistry(), o); !errors.Is(err, ErrInvalidOptions) {
			t.Fatalf("options %+v: %v, want ErrInvalidOptions", o, err)
		}
	}
}

func TestPoisonControlMessage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hub.db")
	be := openSQLite(t, path)
	ctx := ctxT(t)
	_, err := be.HubCreate(ctx, &backend.HubCreateParams{PartitionCount: 1, Now: time.Now()})
	must(t, err)
	client := NewClient(be, ClientOptions{})
	id, err := client.ScheduleNewOrchestration(ctx, "Anything", nil)
	must(t, err)
	// A worker that crashes on this message three times: receive it under
	// three successive epochs without completing it.
	for i := range 3 {
		p, err := be.PartitionAcquire(ctx, &backend.PartitionAcquireParams{Partition: 0, Owner: "crasher", ExpectEpoch: int64(i), Duration: time.Millisecond, Now: time.Now()})
		must(t, err)
		res, err := be.ControlReceive(ctx, &backend.ControlReceiveParams{Fence: backend.Fence{Partition: 0, Owner: "crasher", Epoch: p.Epoch}, Max: 10, LockDuration: time.Hour, Now: time.Now()})
		must(t, err)
		if len(res.Messages) != 1 {
			t.Fatalf("round %d: received %d messages", i, len(res.Messages))
		}
	}
	must(t, be.PartitionRelease(ctx, &backend.PartitionReleaseParams{Partition: 0, Owner: "crasher", Epoch: 3, Now: time.Now()}))
	reg := NewRegistry()
	opts := testOptions()
	opts.PoisonThreshold = 2
	opts.PartitionCount = 1
	w, err := NewWorker(be, reg, opts)
	must(t, err)
	must(t, w.Start(ctx))
	defer w.Stop(context.Background())
	st, err := w.Client().WaitForInstanceCompletion(ctx, id)
	must(t, err)
	if st.RuntimeStatus != StatusFailed || !strings.Contains(st.Failure.Message, "received 4 times") {
		t.Fatalf("poisoned instance: %s %+v", st.RuntimeStatus, st.Failure)
	}
	poison, err := be.PoisonList(ctx, 10)
	must(t, err)
	if len(poison) != 1 || poison[0].InstanceID != id {
		t.Fatalf("poison table: %+v", poison)
	}
}

func TestUndecodableMessageFailsInstance(t *testing.T) {
	h := newHarness(t, registerApproval, testOptions())
	ctx := ctxT(t)
	id, err := h.client.ScheduleNewOrchestration(ctx, "Approval", 0)
	must(t, err)
	_, err = h.client.WaitForInstanceStart(ctx, id)
	must(t, err)
	p := backend.PartitionOf(id, PartitionCountDefault)
	errs, err := h.be.CommitBatch(ctx, []*backend.Commit{{Now: time.Now(), Writes: backend.Writes{ControlSend: []*backend.NewMessage{{
		ID: "zzzz-garbage", Partition: p, InstanceID: id, Data: []byte{0xff, 0x01, 0x02},
	}}}}})
	must(t, err)
	must(t, errs[0])
	h.w.eng.WakePartition(p)
	st, err := h.client.WaitForInstanceCompletion(ctx, id)
	must(t, err)
	if st.RuntimeStatus != StatusFailed || !strings.Contains(st.Failure.Message, "cannot be decoded") {
		t.Fatalf("instance after garbage message: %s %+v", st.RuntimeStatus, st.Failure)
	}
}

func TestScheduledStartAndEarlyEvent(t *testing.T) {
	h := newHarness(t, registerApproval, testOptions())
	ctx := ctxT(t)
	start := time.Now().Add(300 * time.Millisecond)
	id, err := h.client.ScheduleNewOrchestration(ctx, "Approval", 0, WithStartTime(start))
	must(t, err)
	st, err := h.client.GetInstance(ctx, id)
	must(t, err)
	if st.RuntimeStatus != StatusPending || !st.ScheduledStartAt.Equal(start) {
		t.Fatalf("before its start time: %s, scheduled %v", st.RuntimeStatus, st.ScheduledStartAt)
	}
	// An event raised before the start is delivered after it, not lost.
	must(t, h.client.RaiseEvent(ctx, id, "Approval", true))
	st, err = h.client.WaitForInstanceCompletion(ctx, id)
	must(t, err)
	wantOutput(t, st, `"approved"`)
	evs, err := h.client.GetHistory(ctx, id)
	must(t, err)
	if evs[0].Timestamp.Before(start) {
		t.Fatalf("first step at %v, before the scheduled start %v", evs[0].Timestamp, start)
	}
}
