package orchestration

import (
	"bytes"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/taskhub/taskhub/internal/history"
)

func runtimeGoexitForTest() { runtime.Goexit() }

// recorder collects log lines (text format).
type recorder struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (r *recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.buf.Write(p)
}

func (r *recorder) lines() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := strings.TrimSpace(r.buf.String())
	if s == "" {
		return nil
	}
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, "msg=step") {
			out = append(out, l)
		}
	}
	return out
}

func (r *recorder) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.buf.Reset()
}

func newRecorderLogger(r *recorder) *slog.Logger {
	return slog.New(slog.NewTextHandler(r, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// waitGoroutines waits (without sleeping a fixed time) until the number of
// goroutines is back to at most n, and fails after a deadline.
func waitGoroutines(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > n {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines, want at most %d:\n%s", runtime.NumGoroutine(), n, buf[:runtime.Stack(buf, true)])
		}
		runtime.Gosched()
	}
}

func TestCloseEndsParkedGoroutine(t *testing.T) {
	base := runtime.NumGoroutine()
	var (
		deferRan  = make(chan struct{})
		recovered = make(chan any, 1)
	)
	l := lookupWith(map[string]Func{
		"Parks": func(ctx *Context) ([]byte, error) {
			if ctx.InstanceID() == "c0" {
				defer close(deferRan)
				defer func() { recovered <- recover() }()
			}
			_, err := ctx.Await(ctx.WaitForExternalEvent("never", -1))
			return nil, err
		},
	})
	instances := make([]*Instance, 50)
	for i := range instances {
		in := NewInstance(fmt.Sprint("c", i), l, Options{})
		instances[i] = in
		res, err := in.Step(nil, []*history.Message{{InstanceID: fmt.Sprint("c", i), Event: &history.Event{Type: history.ExecutionStarted, Name: "Parks", ExecutionID: "e"}}}, t0)
		if err != nil || res.Status != StatusRunning {
			t.Fatalf("status %s err %v", res.Status, err)
		}
	}
	if got := runtime.NumGoroutine(); got < base+50 {
		t.Fatalf("%d goroutines for 50 parked instances (base %d)", got, base)
	}
	instances[0].Close()
	select {
	case <-deferRan:
	default:
		t.Fatal("Close returned before the code's deferred calls ran")
	}
	if r := <-recovered; r != nil {
		t.Fatalf("the code recovered %v: Close must not unwind with a panic", r)
	}
	instances[0].Close() // twice is fine
	for _, in := range instances[1:] {
		in.Close()
	}
	waitGoroutines(t, base)
}

func TestResetAndTerminateEndGoroutines(t *testing.T) {
	base := runtime.NumGoroutine()
	h := newHarness(t, "r", lookup)
	h.noFresh = true
	h.start("Sequence", nil)
	h.step(h.startMsg("Sequence", nil, "exec-2")) // the exec-1 goroutine must end
	h.step(h.control(history.ExecutionTerminated, "bye"))
	if !h.last.Done {
		t.Fatal("not done after terminate")
	}
	waitGoroutines(t, base)
}

func TestNonDeterminismEndsGoroutine(t *testing.T) {
	base := runtime.NumGoroutine()
	past := []*history.Event{
		{Seq: 0, Type: history.OrchestratorStarted, Time: t0},
		{Seq: 1, Type: history.ExecutionStarted, Name: "Sequence", ExecutionID: "e"},
		{Seq: 2, Type: history.TimerCreated, TaskID: 0},
	}
	in := NewInstance("nd", lookup, Options{})
	res, err := in.Step(past, nil, t0)
	if err != nil || res.Status != StatusFailed {
		t.Fatalf("status %s err %v", res.Status, err)
	}
	waitGoroutines(t, base)
	in.Close()
}

func TestAwaitFromAnotherGoroutinePanics(t *testing.T) {
	type result struct{ panicMsg any }
	start := make(chan struct{})
	got := make(chan result, 1)
	l := lookupWith(map[string]Func{
		"Leaky": func(ctx *Context) ([]byte, error) {
			f := ctx.CreateTimer(ctx.CurrentTime().Add(time.Hour))
			go func() {
				defer func() { got <- result{recover()} }()
				<-start
				_, _ = ctx.Await(f) // not the orchestrator goroutine
			}()
			return ctx.Await(f)
		},
	})
	in := NewInstance("leak", l, Options{})
	defer in.Close()
	if _, err := in.Step(nil, []*history.Message{{InstanceID: "leak", Event: &history.Event{Type: history.ExecutionStarted, Name: "Leaky", ExecutionID: "e"}}}, t0); err != nil {
		t.Fatal(err)
	}
	close(start) // the orchestrator is parked now
	r := <-got
	msg, _ := r.panicMsg.(string)
	if !strings.Contains(msg, "Await called outside the orchestrator goroutine") || !strings.Contains(msg, `"leak"`) {
		t.Fatalf("panic %v, want a clear message about the wrong goroutine", r.panicMsg)
	}
}

func TestAwaitInDeferDuringClose(t *testing.T) {
	base := runtime.NumGoroutine()
	l := lookupWith(map[string]Func{
		"DeferAwaits": func(ctx *Context) ([]byte, error) {
			f := ctx.CreateTimer(ctx.CurrentTime().Add(time.Hour))
			defer func() { _, _ = ctx.Await(f) }() // runs during Close's Goexit
			return ctx.Await(f)
		},
	})
	in := NewInstance("da", l, Options{})
	if _, err := in.Step(nil, []*history.Message{{InstanceID: "da", Event: &history.Event{Type: history.ExecutionStarted, Name: "DeferAwaits", ExecutionID: "e"}}}, t0); err != nil {
		t.Fatal(err)
	}
	in.Close() // must not hang
	waitGoroutines(t, base)
}
