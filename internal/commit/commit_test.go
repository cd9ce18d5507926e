package commit

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/taskhub/taskhub/backend"
	"github.com/taskhub/taskhub/backend/sqlite"
)

var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// waitTimeout bounds every wait on another goroutine. It is a deadline for
// a condition, never an expected duration.
const waitTimeout = 10 * time.Second

// openHub opens a hub of 2 partitions in a fresh SQLite file and takes the
// lease of partition 0.
func openHub(tb testing.TB) (*sqlite.Backend, backend.Fence) {
	tb.Helper()
	be, err := sqlite.Open(filepath.Join(tb.TempDir(), "hub.db"), sqlite.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := be.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	ctx := context.Background()
	if _, err := be.HubCreate(ctx, &backend.HubCreateParams{PartitionCount: 2, Now: t0}); err != nil {
		tb.Fatal(err)
	}
	p, err := be.PartitionAcquire(ctx, &backend.PartitionAcquireParams{Partition: 0, Owner: "w1", Duration: time.Hour, Now: t0})
	if err != nil {
		tb.Fatal(err)
	}
	return be, backend.Fence{Partition: 0, Owner: "w1", Epoch: p.Epoch}
}

// upsert is a unit that writes the row of a new instance.
func upsert(id string) *backend.Commit {
	return &backend.Commit{Now: t0, Writes: backend.Writes{InstanceUpsert: &backend.Instance{
		InstanceID: id, Name: "orch", ExecutionID: "e", Status: backend.StatusRunning,
		CreatedAt: t0, UpdatedAt: t0, Version: 1,
	}}}
}

func wantInstance(t *testing.T, be backend.Backend, id string) {
	t.Helper()
	if _, err := be.InstanceGet(context.Background(), id); err != nil {
		t.Errorf("instance %q was not written: %v", id, err)
	}
}

func wantNoInstance(t *testing.T, be backend.Backend, id string) {
	t.Helper()
	if _, err := be.InstanceGet(context.Background(), id); !errors.Is(err, backend.ErrInstanceNotFound) {
		t.Errorf("instance %q: InstanceGet = %v, want ErrInstanceNotFound (the unit must not be written)", id, err)
	}
}

// spyBackend wraps a real backend and records every CommitBatch call. gate,
// when set, runs at the start of each call with its index and may block it;
// fail, when set, may replace a call's outcome with a storage error.
type spyBackend struct {
	backend.Backend

	mu    sync.Mutex
	sizes []int
	gate  func(call int)
	fail  func(call int) error
}

func (s *spyBackend) CommitBatch(ctx context.Context, units []*backend.Commit) ([]error, error) {
	s.mu.Lock()
	call := len(s.sizes)
	s.sizes = append(s.sizes, len(units))
	gate, fail := s.gate, s.fail
	s.mu.Unlock()
	if gate != nil {
		gate(call)
	}
	if fail != nil {
		if err := fail(call); err != nil {
			return nil, err
		}
	}
	return s.Backend.CommitBatch(ctx, units)
}

func (s *spyBackend) calls() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int(nil), s.sizes...)
}

// blockFirst makes the first CommitBatch call report itself on entered and
// wait for release.
func (s *spyBackend) blockFirst() (entered <-chan struct{}, release chan<- struct{}) {
	in, rel := make(chan struct{}), make(chan struct{})
	s.gate = func(call int) {
		if call == 0 {
			close(in)
			<-rel
		}
	}
	return in, rel
}

// queued is how many units wait for a batch (white-box).
func (c *Committer) queued() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.queue)
}

func (c *Committer) isStopped() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stopped
}

func waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func waitChan[T any](t testing.TB, what string, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitTimeout):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// submit commits units on their own goroutines; the returned channel yields
// the per-unit results, in the order of units, once all have returned.
func submit(c *Committer, units ...*backend.Commit) <-chan []error {
	out := make(chan []error, 1)
	errs := make([]error, len(units))
	var wg sync.WaitGroup
	for i, u := range units {
		wg.Go(func() { errs[i] = c.Commit(context.Background(), u) })
	}
	go func() { wg.Wait(); out <- errs }()
	return out
}

// startWithBlockedBatch starts a committer over spy and puts one unit
// ("first") in a CommitBatch call that blocks until release is called.
func startWithBlockedBatch(t *testing.T, spy *spyBackend, opts Options) (c *Committer, first <-chan []error, release func()) {
	t.Helper()
	entered, rel := spy.blockFirst()
	release = sync.OnceFunc(func() { close(rel) })
	c = New(spy, opts)
	c.Start()
	t.Cleanup(func() { release(); c.Stop() })
	first = submit(c, upsert("first"))
	waitChan(t, "the first batch to start", entered)
	return c, first, release
}

// Units submitted while a batch is being written wait, and all of them go
// into the next CommitBatch call together: one transaction for all.
func TestUnitsQueuedDuringBatchShareNextBatch(t *testing.T) {
	be, _ := openHub(t)
	spy := &spyBackend{Backend: be}
	c, first, release := startWithBlockedBatch(t, spy, Options{})

	const n = 20
	units := make([]*backend.Commit, n)
	for i := range units {
		units[i] = upsert(fmt.Sprintf("queued-%02d", i))
	}
	rest := submit(c, units...)
	waitUntil(t, fmt.Sprintf("%d units are queued", n), func() bool { return c.queued() == n })
	if got := spy.calls(); len(got) != 1 {
		t.Fatalf("CommitBatch calls while the first is blocked = %v, want just the first", got)
	}
	release()

	for i, err := range waitChan(t, "the first unit", first) {
		if err != nil {
			t.Errorf("first unit %d: %v", i, err)
		}
	}
	for i, err := range waitChan(t, "the queued units", rest) {
		if err != nil {
			t.Errorf("queued unit %d: %v", i, err)
		}
	}
	if got := spy.calls(); len(got) != 2 || got[0] != 1 || got[1] != n {
		t.Fatalf("CommitBatch sizes = %v, want [1 %d]: units queued during a batch must be written together", got, n)
	}
	wantInstance(t, be, "first")
	for i := range n {
		wantInstance(t, be, fmt.Sprintf("queued-%02d", i))
	}
}

// A unit whose condition fails is refused alone: its submitter gets the
// condition error and the other units of the same batch are written.
func TestConditionErrorReachesOnlyItsSubmitter(t *testing.T) {
	be, fence := openHub(t)
	ctx := context.Background()
	// "taken" exists and is Running, for a refused create.
	if errs, err := be.CommitBatch(ctx, []*backend.Commit{upsert("taken")}); err != nil || errs[0] != nil {
		t.Fatal(err, errs)
	}
	spy := &spyBackend{Backend: be}
	c, first, release := startWithBlockedBatch(t, spy, Options{})

	staleFence := fence
	staleFence.Epoch--
	versionConflict := upsert("version-conflict")
	versionConflict.Instance = &backend.InstanceCondition{InstanceID: "version-conflict", ExpectVersion: 7}
	leaseLost := upsert("lease-lost")
	leaseLost.Fence = &staleFence
	exists := upsert("taken")
	exists.Create = &backend.CreateCondition{InstanceID: "taken", RefuseStatuses: []backend.Status{backend.StatusRunning}}
	fenced := upsert("fenced-ok")
	fenced.Fence = &fence

	units := []*backend.Commit{upsert("ok-1"), versionConflict, fenced, leaseLost, exists, upsert("ok-2")}
	results := submit(c, units...)
	waitUntil(t, "all units are queued", func() bool { return c.queued() == len(units) })
	release()
	waitChan(t, "the first unit", first)
	errs := waitChan(t, "the batch", results)

	if got := spy.calls(); len(got) != 2 || got[1] != len(units) {
		t.Fatalf("CommitBatch sizes = %v, want [1 %d]: the test needs all units in one batch", got, len(units))
	}
	for _, i := range []int{0, 2, 5} {
		if errs[i] != nil {
			t.Errorf("unit %d (%s) got %v, want nil: another unit's refusal leaked into it", i, units[i].Writes.InstanceUpsert.InstanceID, errs[i])
		}
	}
	if !errors.Is(errs[1], backend.ErrVersionConflict) {
		t.Errorf("version-conflict unit got %v, want ErrVersionConflict", errs[1])
	}
	if !errors.Is(errs[3], backend.ErrLeaseLost) {
		t.Errorf("stale-fence unit got %v, want ErrLeaseLost", errs[3])
	}
	var existsErr *backend.InstanceExistsError
	if !errors.As(errs[4], &existsErr) || existsErr.InstanceID != "taken" {
		t.Errorf("create unit got %v, want *InstanceExistsError for \"taken\"", errs[4])
	}
	wantInstance(t, be, "ok-1")
	wantInstance(t, be, "ok-2")
	wantInstance(t, be, "fenced-ok")
	wantNoInstance(t, be, "version-conflict")
	wantNoInstance(t, be, "lease-lost")
}

// A storage failure of CommitBatch reaches every unit of that batch, and
// only that batch.
func TestStorageErrorReachesWholeBatch(t *testing.T) {
	be, _ := openHub(t)
	errDisk := errors.New("disk on fire")
	spy := &spyBackend{Backend: be}
	spy.fail = func(call int) error {
		if call == 1 {
			return errDisk
		}
		return nil
	}
	var batchMu sync.Mutex
	var batches []string
	c, first, release := startWithBlockedBatch(t, spy, Options{OnBatch: func(size int, err error) {
		batchMu.Lock()
		defer batchMu.Unlock()
		batches = append(batches, fmt.Sprintf("%d:%v", size, err))
	}})

	const n = 5
	units := make([]*backend.Commit, n)
	for i := range units {
		units[i] = upsert(fmt.Sprintf("doomed-%d", i))
	}
	results := submit(c, units...)
	waitUntil(t, "all units are queued", func() bool { return c.queued() == n })
	release()

	if errs := waitChan(t, "the first unit", first); errs[0] != nil {
		t.Errorf("unit of the first, healthy batch got %v", errs[0])
	}
	for i, err := range waitChan(t, "the failing batch", results) {
		if !errors.Is(err, errDisk) {
			t.Errorf("unit %d got %v, want the batch's storage error", i, err)
		}
	}
	// The committer keeps working after a failed batch.
	if err := c.Commit(context.Background(), upsert("after")); err != nil {
		t.Fatalf("commit after a failed batch: %v", err)
	}
	wantInstance(t, be, "after")
	for i := range n {
		wantNoInstance(t, be, fmt.Sprintf("doomed-%d", i))
	}
	batchMu.Lock()
	defer batchMu.Unlock()
	want := []string{"1:<nil>", fmt.Sprintf("%d:%v", n, errDisk), "1:<nil>"}
	if fmt.Sprint(batches) != fmt.Sprint(want) {
		t.Errorf("OnBatch calls = %q, want %q", batches, want)
	}
}

// No CommitBatch call carries more than MaxBatch units; a backlog is split
// in order into full batches and a remainder.
func TestMaxBatch(t *testing.T) {
	be, _ := openHub(t)
	spy := &spyBackend{Backend: be}
	c, first, release := startWithBlockedBatch(t, spy, Options{MaxBatch: 4})

	const n = 10
	units := make([]*backend.Commit, n)
	for i := range units {
		units[i] = upsert(fmt.Sprintf("u-%02d", i))
	}
	results := submit(c, units...)
	waitUntil(t, "all units are queued", func() bool { return c.queued() == n })
	release()
	waitChan(t, "the first unit", first)
	for i, err := range waitChan(t, "the backlog", results) {
		if err != nil {
			t.Errorf("unit %d: %v", i, err)
		}
	}
	if got := fmt.Sprint(spy.calls()); got != "[1 4 4 2]" {
		t.Errorf("CommitBatch sizes = %s, want [1 4 4 2]", got)
	}
	for i := range n {
		wantInstance(t, be, fmt.Sprintf("u-%02d", i))
	}
}

// Under free-running concurrent load (no blocked batch), with several
// batches in flight at once, every unit is answered exactly once, batches
// never exceed MaxBatch, and some batches do hold several units.
func TestMaxBatchUnderLoad(t *testing.T) {
	be, _ := openHub(t)
	spy := &spyBackend{Backend: be}
	c := New(spy, Options{MaxBatch: 5, Concurrency: 2})
	c.Start()
	defer c.Stop()

	const submitters, each = 16, 8
	var wg sync.WaitGroup
	var failed atomic.Int64
	for g := range submitters {
		wg.Go(func() {
			for i := range each {
				if err := c.Commit(context.Background(), upsert(fmt.Sprintf("g%02d-%d", g, i))); err != nil {
					t.Errorf("submitter %d unit %d: %v", g, i, err)
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	total, largest := 0, 0
	for _, s := range spy.calls() {
		total += s
		largest = max(largest, s)
	}
	if total != submitters*each {
		t.Errorf("CommitBatch calls carried %d units, want %d", total, submitters*each)
	}
	if largest > 5 {
		t.Errorf("a CommitBatch call carried %d units, more than MaxBatch 5", largest)
	}
	if largest < 2 {
		t.Errorf("no batch held more than one unit under %d concurrent submitters: nothing was grouped", submitters)
	}
	for g := range submitters {
		for i := range each {
			wantInstance(t, be, fmt.Sprintf("g%02d-%d", g, i))
		}
	}
}

// With Concurrency 2, a second batch is written while the first one is
// still in flight.
func TestConcurrencyBatchesInFlight(t *testing.T) {
	be, _ := openHub(t)
	spy := &spyBackend{Backend: be}
	firstIn, secondIn := make(chan struct{}), make(chan struct{})
	var firstGaveUp atomic.Bool
	spy.gate = func(call int) {
		switch call {
		case 0:
			close(firstIn)
			select {
			case <-secondIn:
			case <-time.After(waitTimeout):
				firstGaveUp.Store(true)
			}
		case 1:
			close(secondIn)
		}
	}
	c := New(spy, Options{Concurrency: 2})
	c.Start()
	defer c.Stop()
	a := submit(c, upsert("a"))
	waitChan(t, "the first batch to start", firstIn)
	b := submit(c, upsert("b"))
	for _, ch := range []<-chan []error{b, a} {
		if errs := waitChan(t, "a unit", ch); errs[0] != nil {
			t.Error(errs[0])
		}
	}
	if firstGaveUp.Load() {
		t.Error("the second batch did not start while the first was in flight")
	}
	wantInstance(t, be, "a")
	wantInstance(t, be, "b")
}

// Stop waits for the batch in flight, writes every unit queued before it,
// and refuses units submitted after it; a second Stop returns at once.
func TestStopFlushesQueuedUnits(t *testing.T) {
	be, _ := openHub(t)
	spy := &spyBackend{Backend: be}
	c, first, release := startWithBlockedBatch(t, spy, Options{MaxBatch: 2})

	const n = 5
	units := make([]*backend.Commit, n)
	for i := range units {
		units[i] = upsert(fmt.Sprintf("queued-%d", i))
	}
	results := submit(c, units...)
	waitUntil(t, "all units are queued", func() bool { return c.queued() == n })

	stopped := make(chan struct{})
	go func() { c.Stop(); close(stopped) }()
	waitUntil(t, "Stop has begun", c.isStopped)
	if err := c.Commit(context.Background(), upsert("late")); !errors.Is(err, ErrStopped) {
		t.Errorf("Commit after Stop = %v, want ErrStopped", err)
	}
	select {
	case <-stopped:
		t.Fatal("Stop returned while a batch was still being written")
	default:
	}
	release()
	waitChan(t, "Stop to return", stopped)

	// Stop has returned: every queued unit must have its answer already.
	select {
	case errs := <-results:
		for i, err := range errs {
			if err != nil {
				t.Errorf("queued unit %d: %v", i, err)
			}
		}
	case <-time.After(waitTimeout):
		t.Fatal("units queued before Stop were not answered")
	}
	if errs := <-first; errs[0] != nil {
		t.Errorf("first unit: %v", errs[0])
	}
	for i := range n {
		wantInstance(t, be, fmt.Sprintf("queued-%d", i))
	}
	wantNoInstance(t, be, "late")
	if got := fmt.Sprint(spy.calls()); got != "[1 2 2 1]" {
		t.Errorf("CommitBatch sizes = %s, want [1 2 2 1]", got)
	}

	twice := make(chan struct{})
	go func() { c.Stop(); close(twice) }()
	waitChan(t, "the second Stop", twice)
	if err := c.Commit(context.Background(), upsert("later")); !errors.Is(err, ErrStopped) {
		t.Errorf("Commit after the second Stop = %v, want ErrStopped", err)
	}
}

// Stop on a committer that was never started, and concurrent Stops, return.
func TestStopBeforeStartAndConcurrentStops(t *testing.T) {
	be, _ := openHub(t)
	c := New(be, Options{})
	done := make(chan struct{})
	go func() { c.Stop(); c.Stop(); close(done) }()
	waitChan(t, "Stop of a committer never started", done)
	if err := c.Commit(context.Background(), upsert("x")); !errors.Is(err, ErrStopped) {
		t.Errorf("Commit after Stop = %v, want ErrStopped", err)
	}

	c = New(be, Options{Concurrency: 3})
	c.Start()
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(c.Stop)
	}
	all := make(chan struct{})
	go func() { wg.Wait(); close(all) }()
	waitChan(t, "concurrent Stops", all)
}

// A submitter whose ctx ends gets ctx.Err() at once, but its unit is still
// written with its batch: the committer never half-abandons a unit.
func TestCommitContextEndsUnitStillWritten(t *testing.T) {
	be, _ := openHub(t)
	spy := &spyBackend{Backend: be}
	c, first, release := startWithBlockedBatch(t, spy, Options{})

	ctx, cancel := context.WithCancel(context.Background())
	res := make(chan error, 1)
	go func() { res <- c.Commit(ctx, upsert("impatient")) }()
	waitUntil(t, "the unit is queued", func() bool { return c.queued() == 1 })
	cancel()
	if err := waitChan(t, "Commit to return on cancel", res); !errors.Is(err, context.Canceled) {
		t.Errorf("Commit with a cancelled ctx = %v, want context.Canceled", err)
	}
	release()
	waitChan(t, "the first unit", first)
	c.Stop()
	wantInstance(t, be, "impatient")
}

// loopParked reports whether every batching goroutine waits in its select
// for work or Stop.
func loopParked() bool {
	buf := make([]byte, 1<<20)
	n := runtime.Stack(buf, true)
	loops := 0
	for _, g := range strings.Split(string(buf[:n]), "\n\n") {
		if strings.Contains(g, "commit.(*Committer).loop(") {
			if !strings.Contains(strings.SplitN(g, "\n", 2)[0], "[select") {
				return false
			}
			loops++
		}
	}
	return loops > 0
}

// A unit queued at the very moment Stop is called, while the batching
// goroutine is idle and before the unit's wake-up signal arrives, is still
// written: Stop flushes the queue rather than dropping it. The unit is put
// in the queue directly (white-box) to hold that window open.
func TestStopFlushesUnitQueuedWhileIdle(t *testing.T) {
	be, _ := openHub(t)
	spy := &spyBackend{Backend: be}
	c := New(spy, Options{})
	c.Start()
	t.Cleanup(c.Stop)
	waitUntil(t, "the batching goroutine is idle", loopParked)

	r := &request{c: upsert("racing"), done: make(chan error, 1)}
	c.mu.Lock()
	c.queue = append(c.queue, r)
	c.mu.Unlock()
	c.Stop()
	select {
	case err := <-r.done:
		if err != nil {
			t.Fatalf("unit queued as Stop began: %v", err)
		}
	default:
		t.Fatal("Stop returned without answering a queued unit")
	}
	wantInstance(t, be, "racing")
	if got := fmt.Sprint(spy.calls()); got != "[1]" {
		t.Errorf("CommitBatch sizes = %s, want [1]", got)
	}
}

// loopGoroutines counts the committer's batching goroutines in a dump of
// all goroutine stacks.
func loopGoroutines() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return strings.Count(string(buf[:n]), "commit.(*Committer).loop(")
		}
		buf = make([]byte, 2*len(buf))
	}
}

// Start runs Concurrency batching goroutines and Stop ends all of them, and
// nothing else the committer started outlives it.
func TestStopLeavesNoGoroutine(t *testing.T) {
	be, _ := openHub(t)
	wantNoInstance(t, be, "warm-up") // opens a read connection: not a leak
	goroutinesBefore := runtime.NumGoroutine()
	before := loopGoroutines()
	c := New(be, Options{Concurrency: 3})
	c.Start()
	t.Cleanup(c.Stop)
	// The dump proves it can see the goroutines it must later miss.
	waitUntil(t, "Start's 3 batching goroutines appear", func() bool { return loopGoroutines() == before+3 })
	results := submit(c, upsert("a"), upsert("b"), upsert("c"))
	for _, err := range waitChan(t, "the units", results) {
		if err != nil {
			t.Fatal(err)
		}
	}
	c.Stop()
	waitUntil(t, "the batching goroutines have exited", func() bool { return loopGoroutines() == before })
	waitUntil(t, fmt.Sprintf("the goroutine count is back to %d", goroutinesBefore), func() bool {
		return runtime.NumGoroutine() <= goroutinesBefore
	})
}

// BenchmarkCommitBatch measures units committed per second through the
// committer on SQLite (synchronous=FULL: one fsync per batch), with one
// submitter (every unit its own batch) and with 32 concurrent submitters
// (units queued during a write share the next batch).
func BenchmarkCommitBatch(b *testing.B) {
	for _, submitters := range []int{1, 32} {
		b.Run(fmt.Sprintf("submitters=%d", submitters), func(b *testing.B) {
			be, fence := openHub(b)
			var batches atomic.Int64
			c := New(be, Options{OnBatch: func(int, error) { batches.Add(1) }})
			c.Start()
			defer c.Stop()
			event := make([]byte, 200)
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for range submitters {
				wg.Go(func() {
					for {
						i := next.Add(1) - 1
						if i >= int64(b.N) {
							return
						}
						// An orchestration step's shape: fenced, one
						// history event, the instance row, one message.
						id := fmt.Sprintf("instance-%09d", i)
						u := &backend.Commit{
							Fence: &fence,
							Now:   t0,
							Writes: backend.Writes{
								History: &backend.HistoryAppend{InstanceID: id, ExecutionID: "e", Events: []backend.HistoryRecord{{Seq: 1, Data: event}}},
								InstanceUpsert: &backend.Instance{
									InstanceID: id, Name: "orch", ExecutionID: "e", Status: backend.StatusRunning,
									CreatedAt: t0, UpdatedAt: t0, Version: 1,
								},
								WorkSend: []*backend.NewMessage{{ID: fmt.Sprintf("%020d", i), InstanceID: id, Data: event[:100]}},
							},
						}
						if err := c.Commit(context.Background(), u); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "units/s")
			b.ReportMetric(float64(b.N)/float64(max(batches.Load(), 1)), "units/batch")
		})
	}
}
