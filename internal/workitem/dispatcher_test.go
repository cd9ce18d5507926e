package workitem

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/taskhub/taskhub/backend"
	"github.com/taskhub/taskhub/backend/sqlite"
	"github.com/taskhub/taskhub/internal/clock"
)

var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// waitTimeout bounds every real-time wait on another goroutine: a deadline
// for a condition, never an expected duration.
const waitTimeout = 10 * time.Second

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// testClock is a manual clock that also reports the timers it makes, so a
// test knows when a goroutine has armed its timer and may advance past it.
type testClock struct {
	*clock.Manual

	mu      sync.Mutex
	waits   []time.Duration
	changed chan struct{} // closed and replaced at every NewTimer
}

func newTestClock() *testClock {
	return &testClock{Manual: clock.NewManual(t0), changed: make(chan struct{})}
}

func (c *testClock) NewTimer(d time.Duration) clock.Timer {
	t := c.Manual.NewTimer(d) // armed before it is reported
	c.mu.Lock()
	c.waits = append(c.waits, d)
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
	return t
}

// waitTimer waits until at least n timers of duration d have been made.
func (c *testClock) waitTimer(t testing.TB, d time.Duration, n int) {
	t.Helper()
	deadline := time.After(waitTimeout)
	for {
		c.mu.Lock()
		count := 0
		for _, w := range c.waits {
			if w == d {
				count++
			}
		}
		ch := c.changed
		all := slices.Clone(c.waits)
		c.mu.Unlock()
		if count >= n {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("timed out waiting for timer #%d of %v (made: %v)", n, d, all)
		}
	}
}

// waitAnyTimer waits until at least n timers have been made.
func (c *testClock) waitAnyTimer(t testing.TB, n int) {
	t.Helper()
	deadline := time.After(waitTimeout)
	for {
		c.mu.Lock()
		count, ch := len(c.waits), c.changed
		c.mu.Unlock()
		if count >= n {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("timed out waiting for timer #%d", n)
		}
	}
}

// spyBackend wraps a real backend and records the dispatcher's calls.
type spyBackend struct {
	backend.Backend

	mu       sync.Mutex
	receives []receiveCall
	renews   []*backend.WorkItemRenewParams
	// inUse reports the dispatcher's busy slots at a receive.
	inUse func() int
}

type receiveCall struct {
	max, got, inUseBefore, inUseAfter int
}

func (s *spyBackend) WorkItemReceive(ctx context.Context, p *backend.WorkItemReceiveParams) ([]*backend.WorkItem, error) {
	before := s.inUse()
	items, err := s.Backend.WorkItemReceive(ctx, p)
	after := s.inUse()
	s.mu.Lock()
	s.receives = append(s.receives, receiveCall{max: p.Max, got: len(items), inUseBefore: before, inUseAfter: after})
	s.mu.Unlock()
	return items, err
}

func (s *spyBackend) WorkItemRenew(ctx context.Context, p *backend.WorkItemRenewParams) error {
	err := s.Backend.WorkItemRenew(ctx, p)
	s.mu.Lock()
	s.renews = append(s.renews, p)
	s.mu.Unlock()
	return err
}

func (s *spyBackend) receiveCalls() []receiveCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.receives)
}

func (s *spyBackend) renewCalls() []*backend.WorkItemRenewParams {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.renews)
}

type env struct {
	be  *sqlite.Backend
	spy *spyBackend
	clk *testClock
	seq int
}

func newEnv(tb testing.TB) *env {
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
	if _, err := be.HubCreate(context.Background(), &backend.HubCreateParams{PartitionCount: 1, Now: t0}); err != nil {
		tb.Fatal(err)
	}
	return &env{be: be, spy: &spyBackend{Backend: be}, clk: newTestClock()}
}

// send enqueues n work items and returns their IDs.
func (e *env) send(tb testing.TB, n int) []string {
	tb.Helper()
	var msgs []*backend.NewMessage
	var ids []string
	for range n {
		e.seq++
		id := fmt.Sprintf("w%06d", e.seq)
		ids = append(ids, id)
		msgs = append(msgs, &backend.NewMessage{ID: id, InstanceID: "i-" + id, Data: []byte(id)})
	}
	errs, err := e.be.CommitBatch(context.Background(), []*backend.Commit{{Now: t0, Writes: backend.Writes{WorkSend: msgs}}})
	if err != nil || errs[0] != nil {
		tb.Fatalf("send: %v %v", err, errs)
	}
	return ids
}

func (e *env) dispatcher(t testing.TB, run Run, opts Options) *Dispatcher {
	t.Helper()
	if opts.Clock == nil {
		opts.Clock = e.clk
	}
	if opts.Rand == nil {
		opts.Rand = func() float64 { return 0.5 }
	}
	if opts.Owner == "" {
		opts.Owner = "w1"
	}
	opts.Logger = quiet
	d := New(e.spy, run, opts)
	e.spy.inUse = d.InUse
	t.Cleanup(func() {
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // cut short whatever a failed test left running
		stopped := make(chan struct{})
		go func() { _ = d.Stop(ctx); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(waitTimeout):
			t.Error("Stop with an ended ctx did not return")
		}
	})
	return d
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

// goroutineBlocked reports whether some goroutine whose stack contains fn
// is blocked in state (as "chan receive").
func goroutineBlocked(fn, state string) bool {
	buf := make([]byte, 1<<20)
	n := runtime.Stack(buf, true)
	for _, g := range strings.Split(string(buf[:n]), "\n\n") {
		header, _, _ := strings.Cut(g, "\n")
		if strings.Contains(g, fn) && strings.Contains(header, "["+state) {
			return true
		}
	}
	return false
}

// goroutinesIn counts the goroutines whose stack contains fn.
func goroutinesIn(fn string) int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return strings.Count(string(buf[:n]), fn)
		}
		buf = make([]byte, 2*len(buf))
	}
}

// gatedRun is a Run that reports each started item and blocks it until the
// test releases one item (any) or its ctx ends. It tracks how many run at
// once.
type gatedRun struct {
	started  chan string
	release  chan struct{}
	running  atomic.Int64
	peak     atomic.Int64
	finished atomic.Int64
	mu       sync.Mutex
	ctxErrs  []error
}

func newGatedRun() *gatedRun {
	return &gatedRun{started: make(chan string, 1000), release: make(chan struct{})}
}

// releaseOne lets one blocked activity (any) finish.
func (g *gatedRun) releaseOne(t testing.TB) {
	t.Helper()
	select {
	case g.release <- struct{}{}:
	case <-time.After(waitTimeout):
		t.Fatal("timed out releasing an activity: none is waiting")
	}
}

func (g *gatedRun) run(ctx context.Context, it *backend.WorkItem) {
	n := g.running.Add(1)
	for {
		p := g.peak.Load()
		if n <= p || g.peak.CompareAndSwap(p, n) {
			break
		}
	}
	g.started <- it.ID
	select {
	case <-g.release:
	case <-ctx.Done():
		g.mu.Lock()
		g.ctxErrs = append(g.ctxErrs, ctx.Err())
		g.mu.Unlock()
	}
	g.running.Add(-1)
	g.finished.Add(1)
}

// Never more activities run than there are slots, and every receive asks
// for no more items than there are free slots (and no more than MaxFetch).
// Progress needs no timer: the manual clock never moves, so each released
// slot must wake the fetch loop.
func TestSlotsBoundRunningAndReceived(t *testing.T) {
	e := newEnv(t)
	const slots, total = 3, 11
	ids := e.send(t, total)
	g := newGatedRun()
	d := e.dispatcher(t, g.run, Options{Slots: slots, MaxFetch: 2})
	d.Start(t.Context())

	var ran []string
	for released := 0; released < total; released++ {
		// Every free slot is filled before one more is released.
		for len(ran)-released < min(slots, total-released) {
			ran = append(ran, waitChan(t, "an activity to start", g.started))
		}
		g.releaseOne(t)
	}
	waitUntil(t, "all activities finished", func() bool { return g.finished.Load() == total })
	slices.Sort(ran)
	if !slices.Equal(ran, ids) {
		t.Fatalf("ran %v, want each of %v once", ran, ids)
	}
	if p := g.peak.Load(); p != slots {
		t.Errorf("at most %d activities ran at once, want exactly %d (Slots)", p, slots)
	}
	for i, r := range e.spy.receiveCalls() {
		if r.max > slots-r.inUseBefore || r.max > 2 || r.max < 1 {
			t.Errorf("receive %d asked for %d items with %d of %d slots busy (MaxFetch 2)", i, r.max, r.inUseBefore, slots)
		}
		if r.inUseBefore+r.got > slots {
			t.Errorf("receive %d got %d items with %d of %d slots busy", i, r.got, r.inUseBefore, slots)
		}
	}
}

// With every slot busy the fetch loop waits without a timer; a finished
// activity frees a slot and wakes it, and only then is the next item
// received.
func TestReleasedSlotWakesFetch(t *testing.T) {
	e := newEnv(t)
	ids := e.send(t, 2)
	g := newGatedRun()
	d := e.dispatcher(t, g.run, Options{Slots: 1})
	d.Start(t.Context())

	if got := waitChan(t, "the first activity", g.started); got != ids[0] {
		t.Fatalf("first activity ran %s, want %s", got, ids[0])
	}
	waitUntil(t, "the fetch loop stops receiving with no free slot", func() bool {
		// One receive took the first item; the loop then waits for a slot.
		return len(e.spy.receiveCalls()) == 1
	})
	if n := len(e.spy.receiveCalls()); n != 1 {
		t.Fatalf("%d receives with no free slot, want 1", n)
	}
	select {
	case id := <-g.started:
		t.Fatalf("%s started while the only slot was busy", id)
	default:
	}
	g.releaseOne(t)
	if got := waitChan(t, "the second activity after the slot was released", g.started); got != ids[1] {
		t.Fatalf("second activity ran %s, want %s", got, ids[1])
	}
	if r := e.spy.receiveCalls(); len(r) != 2 || r[1].max != 1 {
		t.Errorf("receives = %+v, want a second one for 1 item", r)
	}
	g.releaseOne(t)
}

// An idle dispatcher parked on its back-off timer fetches at once when
// woken; the manual clock never moves, so its timer cannot fire.
func TestWakeFetchesAtOnce(t *testing.T) {
	e := newEnv(t)
	g := newGatedRun()
	d := e.dispatcher(t, g.run, Options{Slots: 2})
	d.Start(t.Context())
	e.clk.waitAnyTimer(t, 1)
	ids := e.send(t, 1)
	d.Wake()
	if got := waitChan(t, "the activity after Wake", g.started); got != ids[0] {
		t.Fatalf("ran %s, want %s", got, ids[0])
	}
	g.releaseOne(t)
}

// Stop stops fetching and waits for the running activities to finish; they
// are not cancelled while its ctx lasts.
func TestStopWaitsForRunningActivities(t *testing.T) {
	e := newEnv(t)
	e.send(t, 2)
	g := newGatedRun()
	d := e.dispatcher(t, g.run, Options{Slots: 2})
	d.Start(t.Context())
	waitChan(t, "activity 1", g.started)
	waitChan(t, "activity 2", g.started)

	stopped := make(chan error, 1)
	go func() { stopped <- d.Stop(context.Background()) }()
	waitChan(t, "the fetch loop to exit", d.done)
	select {
	case err := <-stopped:
		t.Fatalf("Stop returned (%v) while activities were running", err)
	default:
	}
	e.send(t, 1)
	d.Wake()
	g.releaseOne(t)
	g.releaseOne(t)
	if err := waitChan(t, "Stop", stopped); err != nil {
		t.Fatalf("Stop = %v", err)
	}
	if f := g.finished.Load(); f != 2 {
		t.Errorf("Stop returned with %d of 2 activities finished", f)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.ctxErrs) != 0 {
		t.Errorf("activities were cancelled during a graceful Stop: %v", g.ctxErrs)
	}
	select {
	case id := <-g.started:
		t.Errorf("%s started after Stop", id)
	default:
	}
}

// When Stop's ctx ends, the running activities see their ctx end; Stop
// waits for them to return and reports the ctx error.
func TestStopCancelsActivitiesWhenCtxEnds(t *testing.T) {
	e := newEnv(t)
	ids := e.send(t, 2)
	g := newGatedRun()
	var abandoned atomic.Int64
	run := func(ctx context.Context, it *backend.WorkItem) {
		g.run(ctx, it)
		if ctx.Err() != nil {
			// What the engine does: give the item back at once.
			err := e.be.WorkItemAbandon(context.WithoutCancel(ctx), &backend.WorkItemAbandonParams{ID: it.ID, LockToken: it.LockToken, VisibleAt: t0})
			if err == nil {
				abandoned.Add(1)
			}
		}
	}
	d := e.dispatcher(t, run, Options{Slots: 2})
	d.Start(t.Context())
	waitChan(t, "activity 1", g.started)
	waitChan(t, "activity 2", g.started)

	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	go func() { stopped <- d.Stop(ctx) }()
	waitChan(t, "the fetch loop to exit", d.done)
	cancel()
	if err := waitChan(t, "Stop", stopped); !errors.Is(err, context.Canceled) {
		t.Fatalf("Stop = %v, want context.Canceled", err)
	}
	if f := g.finished.Load(); f != 2 {
		t.Fatalf("Stop returned with %d of 2 activities finished", f)
	}
	g.mu.Lock()
	errs := slices.Clone(g.ctxErrs)
	g.mu.Unlock()
	if len(errs) != 2 || !errors.Is(errs[0], context.Canceled) || !errors.Is(errs[1], context.Canceled) {
		t.Fatalf("activities saw ctx errors %v, want two context.Canceled", errs)
	}
	if abandoned.Load() != 2 {
		t.Fatalf("%d items abandoned, want 2", abandoned.Load())
	}
	items, err := e.be.WorkItemReceive(context.Background(), &backend.WorkItemReceiveParams{Owner: "other", Max: 10, LockDuration: time.Minute, Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, it := range items {
		got = append(got, it.ID)
	}
	if !slices.Equal(got, ids) {
		t.Errorf("after the cancelled stop another worker receives %v, want %v", got, ids)
	}
}

// The ctx given to Start bounds fetching only: when it ends, running
// activities go on until Stop.
func TestStartCtxDoesNotCancelActivities(t *testing.T) {
	e := newEnv(t)
	e.send(t, 1)
	g := newGatedRun()
	d := e.dispatcher(t, g.run, Options{Slots: 1})
	ctx, cancel := context.WithCancel(context.Background())
	d.Start(ctx)
	waitChan(t, "the activity", g.started)
	cancel()
	waitChan(t, "the fetch loop to exit", d.done)
	g.releaseOne(t) // only possible if the activity still runs
	if err := d.Stop(context.Background()); err != nil {
		t.Fatalf("Stop = %v", err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.ctxErrs) != 0 {
		t.Errorf("the activity was cancelled: %v", g.ctxErrs)
	}
}

// Stop is safe before Start and twice; a Stop whose ctx has already ended
// reports no error when nothing was running to be cut short.
func TestStopBeforeStartAndTwice(t *testing.T) {
	e := newEnv(t)
	g := newGatedRun()
	d := e.dispatcher(t, g.run, Options{})
	if err := d.Stop(context.Background()); err != nil {
		t.Fatalf("Stop before Start = %v", err)
	}
	if err := d.Stop(context.Background()); err != nil {
		t.Fatalf("second Stop before Start = %v", err)
	}

	d = e.dispatcher(t, g.run, Options{})
	d.Start(t.Context())
	e.clk.waitAnyTimer(t, 1)
	if err := d.Stop(context.Background()); err != nil {
		t.Fatalf("Stop = %v", err)
	}
	if err := d.Stop(context.Background()); err != nil {
		t.Fatalf("second Stop = %v", err)
	}

	ended, cancel := context.WithCancel(context.Background())
	cancel()
	for i := range 20 {
		d := e.dispatcher(t, g.run, Options{})
		d.Start(t.Context())
		if err := d.Stop(ended); err != nil {
			t.Fatalf("round %d: Stop with an ended ctx and no activity = %v, want nil: nothing was cancelled", i, err)
		}
	}
}

// A running activity's lock is renewed every half lock duration, for a
// full duration from the renewal: after the original lock would have
// expired, nobody else can receive the item. Renewal ends with the activity.
func TestLockRenewalAtHalfDuration(t *testing.T) {
	e := newEnv(t)
	ids := e.send(t, 1)
	g := newGatedRun()
	const lock = 10 * time.Minute
	var item atomic.Pointer[backend.WorkItem]
	run := func(ctx context.Context, it *backend.WorkItem) {
		item.Store(it)
		g.run(ctx, it)
	}
	d := e.dispatcher(t, run, Options{Slots: 1, LockDuration: lock})
	d.Start(t.Context())
	waitChan(t, "the activity", g.started)
	it := item.Load()
	if !it.LockedUntil.Equal(t0.Add(lock)) {
		t.Fatalf("item locked until %v, want t0+%v", it.LockedUntil, lock)
	}

	// The renewal timer is armed for half the lock duration.
	e.clk.waitTimer(t, lock/2, 1)
	e.clk.Advance(lock/2 - time.Second)
	if r := e.spy.renewCalls(); len(r) != 0 {
		t.Fatalf("renewed at %v, before half the lock duration", r[0].Now)
	}
	e.clk.Advance(time.Second)
	waitUntil(t, "the first renewal", func() bool { return len(e.spy.renewCalls()) == 1 })
	e.clk.waitTimer(t, lock/2, 2)
	e.clk.Advance(lock / 2)
	waitUntil(t, "the second renewal", func() bool { return len(e.spy.renewCalls()) == 2 })
	for i, r := range e.spy.renewCalls() {
		wantNow := t0.Add(time.Duration(i+1) * lock / 2)
		if r.ID != ids[0] || r.LockToken != it.LockToken || r.LockDuration != lock || !r.Now.Equal(wantNow) {
			t.Errorf("renewal %d = %+v, want item %s, its token, %v at %v", i, r, ids[0], lock, wantNow)
		}
	}

	// Locked until t0+20m now: at t0+12m (the original lock long gone) and
	// at t0+19m another worker still receives nothing; at t0+21m it would.
	for _, at := range []time.Duration{12 * time.Minute, 19 * time.Minute} {
		items, err := e.be.WorkItemReceive(context.Background(), &backend.WorkItemReceiveParams{Owner: "other", Max: 1, LockDuration: lock, Now: t0.Add(at)})
		if err != nil || len(items) != 0 {
			t.Fatalf("another worker at t0+%v receives %d items (%v); the renewed lock must hide it", at, len(items), err)
		}
	}

	// Once the activity is done its slot is free and its renewal over.
	g.releaseOne(t)
	waitUntil(t, "the slot is released", func() bool { return d.InUse() == 0 })
	waitUntil(t, "the renewal goroutine has exited", func() bool { return goroutinesIn("(*Dispatcher).keepLocked(") == 0 })
	items, err := e.be.WorkItemReceive(context.Background(), &backend.WorkItemReceiveParams{Owner: "other", Max: 1, LockDuration: lock, Now: t0.Add(21 * time.Minute)})
	if err != nil || len(items) != 1 {
		t.Fatalf("at t0+21m another worker receives %d items (%v), want the item whose lock expired", len(items), err)
	}
}

// blockingRenewBackend holds every WorkItemRenew until released.
type blockingRenewBackend struct {
	*spyBackend
	entered chan struct{}
	release chan struct{}
}

func (b *blockingRenewBackend) WorkItemRenew(ctx context.Context, p *backend.WorkItemRenewParams) error {
	b.entered <- struct{}{}
	<-b.release
	return b.spyBackend.WorkItemRenew(ctx, p)
}

// A renewal in flight when the activity returns finishes before the slot is
// freed: no renewal of an item outlives its activity (whose completion may
// already have deleted it).
func TestRenewalInFlightEndsBeforeSlotIsFreed(t *testing.T) {
	e := newEnv(t)
	e.send(t, 1)
	g := newGatedRun()
	const lock = 10 * time.Minute
	be := &blockingRenewBackend{spyBackend: e.spy, entered: make(chan struct{}, 1), release: make(chan struct{})}
	d := New(be, g.run, Options{Slots: 1, LockDuration: lock, Clock: e.clk, Logger: quiet, Rand: func() float64 { return 0.5 }})
	e.spy.inUse = d.InUse
	d.Start(t.Context())
	t.Cleanup(func() {
		select {
		case <-be.release:
		default:
			close(be.release)
		}
		ended, cancel := context.WithCancel(context.Background())
		cancel()
		_ = d.Stop(ended)
	})
	waitChan(t, "the activity", g.started)
	e.clk.waitTimer(t, lock/2, 1)
	e.clk.Advance(lock / 2)
	waitChan(t, "the renewal to start", be.entered)

	g.releaseOne(t)
	waitUntil(t, "the activity returned and its slot is either held or freed", func() bool {
		return g.finished.Load() == 1 && (goroutineBlocked("(*Dispatcher).execute(", "chan receive") || d.InUse() == 0)
	})
	if d.InUse() != 1 {
		t.Fatal("the slot was freed while a renewal of its item was still in flight")
	}
	close(be.release)
	waitUntil(t, "the slot is freed after the renewal", func() bool { return d.InUse() == 0 })
}
