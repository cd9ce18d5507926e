package controlqueue

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/taskhub/taskhub/backend"
	"github.com/taskhub/taskhub/backend/sqlite"
	"github.com/taskhub/taskhub/internal/clock"
	"github.com/taskhub/taskhub/internal/commit"
)

var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// waitTimeout bounds every real-time wait on another goroutine: a deadline
// for a condition, never an expected duration.
const waitTimeout = 10 * time.Second

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// testClock is a manual clock that also reports the timers it makes, so a
// test can tell when the listener has finished an iteration and parked,
// and how long it meant to sleep.
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
	t := c.Manual.NewTimer(d) // armed before it is reported: an Advance after the report fires it
	c.mu.Lock()
	c.waits = append(c.waits, d)
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
	return t
}

// timers returns the durations of the timers made so far.
func (c *testClock) timers() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.waits)
}

// waitTimers waits until at least n timers have been made and returns the
// n-th one's duration.
func (c *testClock) waitTimers(t testing.TB, n int) time.Duration {
	t.Helper()
	deadline := time.After(waitTimeout)
	for {
		c.mu.Lock()
		if len(c.waits) >= n {
			d := c.waits[n-1]
			c.mu.Unlock()
			return d
		}
		ch := c.changed
		c.mu.Unlock()
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("timed out waiting for timer #%d (made so far: %v)", n, c.timers())
		}
	}
}

// env is a hub in a fresh SQLite file with partition 0 held by "w1".
type env struct {
	be    *sqlite.Backend
	spy   *spyBackend
	fence backend.Fence
	clk   *testClock
	seq   int
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
	ctx := context.Background()
	if _, err := be.HubCreate(ctx, &backend.HubCreateParams{PartitionCount: 2, Now: t0}); err != nil {
		tb.Fatal(err)
	}
	p, err := be.PartitionAcquire(ctx, &backend.PartitionAcquireParams{Partition: 0, Owner: "w1", Duration: time.Hour, Now: t0})
	if err != nil {
		tb.Fatal(err)
	}
	return &env{
		be:    be,
		spy:   &spyBackend{Backend: be},
		fence: backend.Fence{Partition: 0, Owner: "w1", Epoch: p.Epoch},
		clk:   newTestClock(),
	}
}

// send enqueues one message per instance ID named, in that order, to
// partition 0, and returns their IDs.
func (e *env) send(tb testing.TB, instances ...string) []string {
	tb.Helper()
	return e.sendAt(tb, time.Time{}, instances...)
}

// sendAt is send with the messages visible only from visibleAt.
func (e *env) sendAt(tb testing.TB, visibleAt time.Time, instances ...string) []string {
	tb.Helper()
	var msgs []*backend.NewMessage
	var ids []string
	for _, inst := range instances {
		e.seq++
		id := fmt.Sprintf("m%06d-%s", e.seq, inst)
		ids = append(ids, id)
		msgs = append(msgs, &backend.NewMessage{ID: id, Partition: e.fence.Partition, InstanceID: inst, Data: []byte(id), VisibleAt: visibleAt})
	}
	errs, err := e.be.CommitBatch(context.Background(), []*backend.Commit{{Now: e.clk.Now(), Writes: backend.Writes{ControlSend: msgs}}})
	if err != nil || errs[0] != nil {
		tb.Fatalf("send: %v %v", err, errs)
	}
	return ids
}

// receive takes the partition's visible messages directly, under the
// listener's own fence, at the given time.
func (e *env) receive(t *testing.T, now time.Time) []string {
	t.Helper()
	res, err := e.be.ControlReceive(context.Background(), &backend.ControlReceiveParams{Fence: e.fence, Max: 100, LockDuration: time.Minute, Now: now})
	if err != nil {
		t.Fatalf("ControlReceive: %v", err)
	}
	return msgIDs(res.Messages)
}

func msgIDs(msgs []*backend.ControlMessage) []string {
	ids := make([]string, len(msgs))
	for i, m := range msgs {
		ids[i] = m.ID
	}
	return ids
}

// spyBackend wraps the real backend, records the listener's calls, and can
// fail ControlReceive.
type spyBackend struct {
	backend.Backend

	mu       sync.Mutex
	receives []receiveCall
	renews   []*backend.ControlRenewParams
	abandons []*backend.ControlAbandonParams
	// beforeReceive, if set, runs before each receive.
	beforeReceive func(p *backend.ControlReceiveParams)
	// receiveErr, if set, may replace a receive's outcome with an error.
	receiveErr func(call int) error
	abandoned  chan struct{} // closed after the first ControlAbandon returns
}

type receiveCall struct {
	max, got int
	err      error
}

func (s *spyBackend) ControlReceive(ctx context.Context, p *backend.ControlReceiveParams) (*backend.ControlReceiveResult, error) {
	s.mu.Lock()
	before, fail, call := s.beforeReceive, s.receiveErr, len(s.receives)
	s.mu.Unlock()
	if before != nil {
		before(p)
	}
	var (
		res *backend.ControlReceiveResult
		err error
	)
	if fail != nil {
		err = fail(call)
	}
	if err == nil {
		res, err = s.Backend.ControlReceive(ctx, p)
	}
	rc := receiveCall{max: p.Max, err: err}
	if res != nil {
		rc.got = len(res.Messages)
	}
	s.mu.Lock()
	s.receives = append(s.receives, rc)
	s.mu.Unlock()
	return res, err
}

func (s *spyBackend) ControlRenew(ctx context.Context, p *backend.ControlRenewParams) error {
	err := s.Backend.ControlRenew(ctx, p)
	s.mu.Lock()
	s.renews = append(s.renews, p)
	s.mu.Unlock()
	return err
}

func (s *spyBackend) ControlAbandon(ctx context.Context, p *backend.ControlAbandonParams) error {
	err := s.Backend.ControlAbandon(ctx, p)
	s.mu.Lock()
	s.abandons = append(s.abandons, p)
	if s.abandoned != nil && len(s.abandons) == 1 {
		close(s.abandoned)
	}
	s.mu.Unlock()
	return err
}

func (s *spyBackend) receiveMaxes() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []int
	for _, r := range s.receives {
		out = append(out, r.max)
	}
	return out
}

func (s *spyBackend) renewCalls() []*backend.ControlRenewParams {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.renews)
}

// step is one Dispatch call.
type step struct {
	fence    backend.Fence
	instance string
	msgs     []string
	done     func()
}

// steps records Dispatch calls; it never calls done itself.
type steps struct {
	ch    chan step
	count atomic.Int64
}

func newSteps() *steps { return &steps{ch: make(chan step, 10000)} }

func (s *steps) dispatch(f backend.Fence, instanceID string, msgs []*backend.ControlMessage, done func()) {
	s.count.Add(1)
	s.ch <- step{fence: f, instance: instanceID, msgs: msgIDs(msgs), done: done}
}

func (s *steps) next(t testing.TB) step {
	t.Helper()
	select {
	case st := <-s.ch:
		return st
	case <-time.After(waitTimeout):
		t.Fatal("timed out waiting for a step to be dispatched")
		panic("unreachable")
	}
}

// none fails if a step was dispatched and not yet taken with next.
func (s *steps) none(t testing.TB, when string) {
	t.Helper()
	select {
	case st := <-s.ch:
		t.Fatalf("%s: unexpected step of %s with %v", when, st.instance, st.msgs)
	default:
	}
}

func (e *env) listener(t testing.TB, dispatch Dispatch, opts Options) *Listener {
	t.Helper()
	if opts.Clock == nil {
		opts.Clock = e.clk
	}
	if opts.Rand == nil {
		opts.Rand = func() float64 { return 0.5 }
	}
	opts.Logger = quiet
	l := New(e.spy, e.fence, dispatch, opts)
	t.Cleanup(l.Stop)
	return l
}

func wantIDs(t *testing.T, what string, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("%s = %v, want %v", what, got, want)
	}
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

// All messages of one instance received in one batch form one step, in
// queue order, and steps of different instances are dispatched without
// waiting for each other.
func TestOneStepPerInstancePerBatch(t *testing.T) {
	e := newEnv(t)
	ids := e.send(t, "a", "b", "a", "c", "a", "b")
	st := newSteps()
	l := e.listener(t, st.dispatch, Options{})
	l.Start(t.Context())

	got := map[string]step{}
	for range 3 {
		s := st.next(t)
		if _, dup := got[s.instance]; dup {
			t.Fatalf("instance %s dispatched twice: its messages were split into several steps", s.instance)
		}
		if s.fence != e.fence {
			t.Errorf("step fence = %+v, want %+v", s.fence, e.fence)
		}
		got[s.instance] = s
	}
	wantIDs(t, "step of a", got["a"].msgs, []string{ids[0], ids[2], ids[4]})
	wantIDs(t, "step of b", got["b"].msgs, []string{ids[1], ids[5]})
	wantIDs(t, "step of c", got["c"].msgs, []string{ids[3]})
	e.clk.waitTimers(t, 1) // the listener has parked: the batch is fully handled
	st.none(t, "after the batch")
	if b := l.Buffered(); b != 6 {
		t.Errorf("Buffered = %d, want 6 while all steps run", b)
	}
	for _, s := range got {
		s.done()
	}
	if b := l.Buffered(); b != 0 {
		t.Errorf("Buffered = %d after every step is done, want 0", b)
	}
}

// While an instance's step runs, messages received for it are held; they are
// dispatched as its next step when the running one is done. Another instance
// meanwhile gets its own step at once: instances run concurrently.
func TestRunningInstanceHoldsNewMessages(t *testing.T) {
	e := newEnv(t)
	first := e.send(t, "a")
	st := newSteps()
	l := e.listener(t, st.dispatch, Options{})
	l.Start(t.Context())

	s1 := st.next(t)
	wantIDs(t, "first step of a", s1.msgs, first)
	e.clk.waitTimers(t, 1)

	more := e.send(t, "a", "b", "a")
	parked := len(e.clk.timers())
	l.Wake()
	sb := st.next(t)
	if sb.instance != "b" {
		t.Fatalf("dispatched %s with %v while a's step runs; want only b", sb.instance, sb.msgs)
	}
	wantIDs(t, "step of b", sb.msgs, []string{more[1]})
	e.clk.waitTimers(t, parked+1)
	st.none(t, "while a's first step runs")
	if b := l.Buffered(); b != 4 {
		t.Fatalf("Buffered = %d, want 4 (a's running step, a's two held messages, b's step)", b)
	}

	// b is still running and a finishes: a's held messages are its next
	// step, dispatched by done itself.
	s1.done()
	s2 := st.next(t)
	if s2.instance != "a" {
		t.Fatalf("after a's done, dispatched %s; want a's next step", s2.instance)
	}
	wantIDs(t, "second step of a", s2.msgs, []string{more[0], more[2]})
	if b := l.Buffered(); b != 3 {
		t.Errorf("Buffered = %d after a's first step, want 3", b)
	}
	sb.done()
	s2.done()
	if b := l.Buffered(); b != 0 {
		t.Errorf("Buffered = %d after every step is done, want 0", b)
	}
	st.none(t, "after every step is done")
}

// Different instances, received in different polls, run at the same time:
// the second is dispatched while the first has not called done.
func TestInstancesRunConcurrently(t *testing.T) {
	e := newEnv(t)
	st := newSteps()
	l := e.listener(t, st.dispatch, Options{})
	l.Start(t.Context())
	e.clk.waitTimers(t, 1)

	running := map[string]step{}
	for i := range 4 {
		inst := fmt.Sprintf("i%d", i)
		parked := len(e.clk.timers())
		e.send(t, inst)
		l.Wake()
		s := st.next(t)
		if s.instance != inst {
			t.Fatalf("dispatched %s, want %s", s.instance, inst)
		}
		running[inst] = s
		e.clk.waitTimers(t, parked+1)
	}
	if len(running) != 4 || l.Buffered() != 4 {
		t.Fatalf("%d steps running, Buffered %d; want 4 and 4", len(running), l.Buffered())
	}
	for _, s := range running {
		s.done()
	}
}

// The prefetch buffer never holds more than BufferThreshold messages: each
// receive asks for min(room, BatchSize), a full buffer stops receiving, and
// a finished step makes room and wakes the listener.
func TestBufferThreshold(t *testing.T) {
	e := newEnv(t)
	const threshold, batch, total = 5, 3, 12
	var instances []string
	for i := range total {
		instances = append(instances, fmt.Sprintf("i%02d", i))
	}
	e.send(t, instances...)

	var l *Listener
	var violations atomic.Int64
	var maxHeld atomic.Int64
	e.spy.beforeReceive = func(p *backend.ControlReceiveParams) {
		room := threshold - l.Buffered()
		if p.Max < 1 || p.Max > min(room, batch) {
			violations.Add(1)
			t.Errorf("receive Max %d with room %d: want 1..min(room, %d)", p.Max, room, batch)
		}
	}
	st := newSteps()
	l = e.listener(t, func(f backend.Fence, id string, msgs []*backend.ControlMessage, done func()) {
		for {
			held, m := int64(l.Buffered()), maxHeld.Load()
			if held <= m || maxHeld.CompareAndSwap(m, held) {
				break
			}
		}
		st.dispatch(f, id, msgs, done)
	}, Options{BufferThreshold: threshold, BatchSize: batch, LockDuration: time.Hour})
	l.Start(t.Context())

	var running []step
	for range threshold {
		running = append(running, st.next(t))
	}
	// A full buffer: the listener waits for room, at most until its next
	// lock renewal (half the lock duration).
	if d := e.clk.waitTimers(t, 1); d != 30*time.Minute {
		t.Errorf("full listener sleeps %v, want 30m (until the next renewal)", d)
	}
	st.none(t, "with a full buffer")
	if got := fmt.Sprint(e.spy.receiveMaxes()); got != "[3 2]" {
		t.Fatalf("receive Max values = %s, want [3 2]", got)
	}
	if b := l.Buffered(); b != threshold {
		t.Fatalf("Buffered = %d, want %d", b, threshold)
	}

	// One step done: room for exactly one more message.
	running[0].done()
	running = running[1:]
	running = append(running, st.next(t))
	e.clk.waitTimers(t, 2)
	if got := fmt.Sprint(e.spy.receiveMaxes()); got != "[3 2 1]" {
		t.Fatalf("receive Max values = %s, want [3 2 1]", got)
	}
	st.none(t, "after one step made room for one message")

	// Finish steps one by one until every message has been dispatched.
	dispatched := threshold + 1
	for dispatched < total {
		running[0].done()
		running = append(running[1:], st.next(t))
		dispatched++
	}
	for _, s := range running {
		s.done()
	}
	if m := maxHeld.Load(); m > threshold {
		t.Errorf("the buffer held %d messages, more than BufferThreshold %d", m, threshold)
	}
	if violations.Load() > 0 {
		t.Errorf("%d receives asked for more than the room in the buffer", violations.Load())
	}
}

// An idle listener parked on its back-off timer receives at once when woken.
// The manual clock never moves, so its timer never fires: Wake is the only
// way the message can be seen.
func TestWakeReceivesAtOnce(t *testing.T) {
	e := newEnv(t)
	st := newSteps()
	l := e.listener(t, st.dispatch, Options{})
	l.Start(t.Context())

	d := e.clk.waitTimers(t, 1)
	if d <= 0 || d >= time.Second {
		t.Fatalf("idle listener sleeps %v, want the first back-off step (~50ms)", d)
	}
	ids := e.send(t, "a")
	st.none(t, "before Wake")
	l.Wake()
	s := st.next(t)
	wantIDs(t, "woken step", s.msgs, ids)
	if !e.clk.Now().Equal(t0) {
		t.Fatalf("the clock moved to %v; the test relies on it standing still", e.clk.Now())
	}
	s.done()
}

// A listener sleeps no longer than until the partition's next message
// becomes visible, however long its back-off: a timer message is received
// when the clock reaches it.
func TestNextVisibleAtShortensSleep(t *testing.T) {
	e := newEnv(t)
	ids := e.sendAt(t, t0.Add(10*time.Second), "timer")
	st := newSteps()
	l := e.listener(t, st.dispatch, Options{MinPoll: time.Hour, MaxPoll: time.Hour, LockDuration: 24 * time.Hour})
	l.Start(t.Context())

	if d := e.clk.waitTimers(t, 1); d != 10*time.Second {
		t.Fatalf("listener sleeps %v with a message due in 10s and a 1h back-off; want 10s", d)
	}
	st.none(t, "before the message is due")
	e.clk.Advance(10 * time.Second)
	s := st.next(t)
	wantIDs(t, "step of the due message", s.msgs, ids)
	s.done()

	// With nothing due, the sleep is the back-off (reset by the find).
	if d := e.clk.waitTimers(t, 2); d != time.Hour {
		t.Errorf("listener with nothing due sleeps %v, want the 1h back-off", d)
	}
}

// When another worker takes the partition with a higher epoch, the
// listener's next receive is refused: it stops by itself, reports the loss
// once, and dispatches nothing more.
func TestLeaseLostStopsListener(t *testing.T) {
	e := newEnv(t)
	lost := make(chan int, 10)
	st := newSteps()
	l := e.listener(t, st.dispatch, Options{OnLeaseLost: func(p int) { lost <- p }})
	l.Start(t.Context())
	e.clk.waitTimers(t, 1)

	p, err := e.be.PartitionAcquire(context.Background(), &backend.PartitionAcquireParams{
		Partition: 0, Owner: "w2", ExpectEpoch: e.fence.Epoch, Duration: time.Hour, Now: t0,
	})
	if err != nil {
		t.Fatal(err)
	}
	if p.Epoch <= e.fence.Epoch {
		t.Fatalf("new epoch %d is not above %d", p.Epoch, e.fence.Epoch)
	}
	e.send(t, "a")
	l.Wake()

	select {
	case got := <-lost:
		if got != 0 {
			t.Errorf("OnLeaseLost(%d), want partition 0", got)
		}
	case <-time.After(waitTimeout):
		t.Fatal("OnLeaseLost was not called")
	}
	select {
	case <-l.done:
	case <-time.After(waitTimeout):
		t.Fatal("the listener goroutine did not exit after losing its lease")
	}
	st.none(t, "after the lease was lost")
	if len(lost) != 0 {
		t.Errorf("OnLeaseLost called %d more times", len(lost))
	}
	// The new owner sees the message.
	res, err := e.be.ControlReceive(context.Background(), &backend.ControlReceiveParams{
		Fence: backend.Fence{Partition: 0, Owner: "w2", Epoch: p.Epoch}, Max: 10, LockDuration: time.Minute, Now: t0,
	})
	if err != nil || len(res.Messages) != 1 {
		t.Fatalf("new owner's receive = %v, %v; want the message", res, err)
	}
	l.Stop() // safe after the listener stopped by itself
}

// Drain stops receiving, abandons the messages no step has taken yet (they
// become visible again), and waits for the running steps, whose done then
// dispatches nothing more.
func TestDrain(t *testing.T) {
	e := newEnv(t)
	e.spy.abandoned = make(chan struct{})
	first := e.send(t, "a")
	st := newSteps()
	l := e.listener(t, st.dispatch, Options{})
	l.Start(t.Context())
	running := st.next(t)
	wantIDs(t, "running step", running.msgs, first)
	e.clk.waitTimers(t, 1)

	held := e.send(t, "a", "a")
	parked := len(e.clk.timers())
	l.Wake()
	e.clk.waitTimers(t, parked+1)
	if b := l.Buffered(); b != 3 {
		t.Fatalf("Buffered = %d, want 3 (one running, two held)", b)
	}

	ctx, cancel := context.WithCancel(context.Background())
	drained := make(chan error, 1)
	go func() { drained <- l.Drain(ctx) }()
	select {
	case <-e.spy.abandoned:
	case <-time.After(waitTimeout):
		t.Fatal("Drain did not abandon the held messages")
	}
	// A step is still running, so Drain can only end with its ctx.
	cancel()
	select {
	case err := <-drained:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Drain with a step running = %v, want context.Canceled", err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("Drain did not return when its ctx ended")
	}

	e.spy.mu.Lock()
	abandoned := slices.Clone(e.spy.abandons[0].IDs)
	e.spy.mu.Unlock()
	slices.Sort(abandoned)
	wantIDs(t, "abandoned", abandoned, held)
	// The abandoned messages are visible at once, even to this epoch; the
	// running step's message stays locked.
	wantIDs(t, "visible after Drain", e.receive(t, e.clk.Now()), held)
	if b := l.Buffered(); b != 1 {
		t.Errorf("Buffered = %d during the drain, want 1 (the running step)", b)
	}

	drained2 := make(chan error, 1)
	go func() { drained2 <- l.Drain(context.Background()) }()
	running.done()
	st.none(t, "after the running step finished during a drain")
	select {
	case err := <-drained2:
		if err != nil {
			t.Fatalf("Drain = %v", err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("Drain did not return after the running step was done")
	}
	if b := l.Buffered(); b != 0 {
		t.Errorf("Buffered = %d after the drain, want 0", b)
	}
	select {
	case <-l.done:
	default:
		t.Error("the receive loop still runs after Drain")
	}
}

// Drain and Stop are safe on a listener never started, and twice.
func TestStopAndDrainIdempotent(t *testing.T) {
	e := newEnv(t)
	l := e.listener(t, newSteps().dispatch, Options{})
	l.Stop()
	if err := l.Drain(context.Background()); err != nil {
		t.Fatalf("Drain before Start = %v", err)
	}
	l2 := e.listener(t, newSteps().dispatch, Options{})
	l2.Start(t.Context())
	e.clk.waitTimers(t, 1)
	l2.Stop()
	l2.Stop()
	if err := l2.Drain(context.Background()); err != nil {
		t.Fatalf("Drain after Stop = %v", err)
	}
	if err := l2.Drain(context.Background()); err != nil {
		t.Fatalf("second Drain = %v", err)
	}
}

// A Drain whose ctx has already ended still reports success when nothing
// was running or held: only a drain cut short is an error.
func TestDrainEndedCtxNothingHeld(t *testing.T) {
	e := newEnv(t)
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	for i := range 20 {
		l := e.listener(t, newSteps().dispatch, Options{})
		l.Start(t.Context())
		if err := l.Drain(ended); err != nil {
			t.Fatalf("round %d: Drain with an ended ctx and nothing held = %v, want nil", i, err)
		}
	}
}

// Held messages have their locks renewed once half the lock duration has
// passed, and not before: after the original lock would have expired, a
// receive under the same epoch still sees nothing.
func TestLockRenewal(t *testing.T) {
	e := newEnv(t)
	ids := e.send(t, "a")
	st := newSteps()
	const lock = 10 * time.Second
	l := e.listener(t, st.dispatch, Options{LockDuration: lock})
	l.Start(t.Context())
	s := st.next(t)
	e.clk.waitTimers(t, 1)

	// Before half-time: the back-off timer fires, but nothing is renewed.
	parked := len(e.clk.timers())
	e.clk.Advance(4 * time.Second)
	e.clk.waitTimers(t, parked+1)
	if r := e.spy.renewCalls(); len(r) != 0 {
		t.Fatalf("renewed at %v, before half the lock duration", r[0].Now)
	}

	// Past half-time: the held message's lock is renewed for a full
	// duration from now.
	e.clk.Advance(2 * time.Second)
	waitUntil(t, "the lock is renewed", func() bool { return len(e.spy.renewCalls()) > 0 })
	l.Stop() // no renewal after this one
	r := e.spy.renewCalls()[0]
	wantIDs(t, "renewed IDs", r.IDs, ids)
	if r.Fence != e.fence || r.LockDuration != lock || !r.Now.Equal(t0.Add(6*time.Second)) {
		t.Errorf("renewal = fence %+v, %v at %v; want %+v, %v at t0+6s", r.Fence, r.LockDuration, r.Now, e.fence, lock)
	}

	// At t0+12s the original lock (t0+10s) would have expired; the renewed
	// one lasts until t0+16s.
	if got := e.receive(t, t0.Add(12*time.Second)); len(got) != 0 {
		t.Fatalf("at t0+12s the held message is visible again (%v): its lock was not extended", got)
	}
	wantIDs(t, "visible at t0+17s", e.receive(t, t0.Add(17*time.Second)), ids)
	s.done()
}

// A failed receive is retried after the back-off; the listener keeps going.
func TestReceiveErrorBacksOff(t *testing.T) {
	e := newEnv(t)
	errFlaky := errors.New("flaky storage")
	e.spy.receiveErr = func(call int) error {
		if call == 0 {
			return errFlaky
		}
		return nil
	}
	ids := e.send(t, "a")
	st := newSteps()
	l := e.listener(t, st.dispatch, Options{})
	l.Start(t.Context())

	d := e.clk.waitTimers(t, 1)
	st.none(t, "after a failed receive")
	e.clk.Advance(d)
	s := st.next(t)
	wantIDs(t, "step after the retry", s.msgs, ids)
	s.done()
}

// BenchmarkListenerDispatch measures control messages received and
// dispatched per second on one SQLite partition, spread round-robin over
// 1000 instances (mostly one message per step) and over 10 instances (a
// message arriving while its instance runs is held, so steps grow). Each
// step deletes its messages through the group committer before it calls
// done, as the engine's steps do, so the queue does not fill with locked
// rows.
func BenchmarkListenerDispatch(b *testing.B) {
	for _, instances := range []int{1000, 10} {
		b.Run(fmt.Sprintf("instances=%d", instances), func(b *testing.B) {
			benchmarkListenerDispatch(b, instances)
		})
	}
}

func benchmarkListenerDispatch(b *testing.B, instances int) {
	e := newEnv(b)
	// The listener runs on the real clock here: the messages must be
	// visible now, not at the tests' t0.
	now := time.Now()
	var msgs []*backend.NewMessage
	flush := func() {
		if len(msgs) == 0 {
			return
		}
		errs, err := e.be.CommitBatch(context.Background(), []*backend.Commit{{Now: now, Writes: backend.Writes{ControlSend: msgs}}})
		if err != nil || errs[0] != nil {
			b.Fatal(err, errs)
		}
		msgs = msgs[:0]
	}
	data := make([]byte, 100)
	for i := range b.N {
		inst := fmt.Sprintf("instance-%04d", i%instances)
		msgs = append(msgs, &backend.NewMessage{ID: fmt.Sprintf("%020d", i), InstanceID: inst, Data: data})
		if len(msgs) == 2000 {
			flush()
		}
	}
	flush()

	committer := commit.New(e.be, commit.Options{})
	committer.Start()
	defer committer.Stop()
	var received, stepCount atomic.Int64
	all := make(chan struct{})
	dispatch := func(f backend.Fence, id string, ms []*backend.ControlMessage, done func()) {
		stepCount.Add(1)
		ids := msgIDs(ms)
		go func() {
			err := committer.Commit(context.Background(), &backend.Commit{Fence: &f, Now: now, Writes: backend.Writes{ControlDelete: ids}})
			if err != nil {
				b.Error(err)
			}
			done()
			if received.Add(int64(len(ids))) == int64(b.N) {
				close(all)
			}
		}()
	}
	l := New(e.be, e.fence, dispatch, Options{Clock: clock.Real, Logger: quiet})
	b.ResetTimer()
	start := time.Now()
	l.Start(context.Background())
	select {
	case <-all:
	case <-time.After(5 * time.Minute):
		b.Fatalf("only %d of %d messages dispatched", received.Load(), b.N)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	l.Stop()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(float64(stepCount.Load())/elapsed.Seconds(), "steps/s")
}

// While every receive comes back full, each asks for twice as many
// messages as the last, up to the room in the buffer.
func TestReceiveBatchGrowsWithBacklog(t *testing.T) {
	e := newEnv(t)
	var instances []string
	for i := range 40 {
		instances = append(instances, fmt.Sprintf("g%02d", i))
	}
	e.send(t, instances...)
	st := newSteps()
	l := e.listener(t, st.dispatch, Options{BatchSize: 2, BufferThreshold: 16, LockDuration: time.Hour})
	l.Start(t.Context())
	for range 16 {
		st.next(t)
	}
	e.clk.waitTimers(t, 1) // full buffer: the listener waits
	if got := fmt.Sprint(e.spy.receiveMaxes()); got != "[2 4 8 2]" {
		t.Fatalf("receive Max values = %s, want [2 4 8 2]", got)
	}
}

// A message delivered while a receive is running waits until what the
// receive returned is buffered: the receive may hold older messages of the
// same instance, which must come first.
func TestDeliverDuringReceiveKeepsOrder(t *testing.T) {
	e := newEnv(t)
	older := e.send(t, "a")
	st := newSteps()
	var l *Listener
	var once sync.Once
	e.spy.beforeReceive = func(*backend.ControlReceiveParams) {
		once.Do(func() {
			if !l.Deliver([]*backend.ControlMessage{{ID: "m999999-a", Partition: 0, InstanceID: "a"}}) {
				t.Errorf("Deliver refused by a running listener")
			}
		})
	}
	l = e.listener(t, st.dispatch, Options{LockDuration: time.Hour})
	l.Start(t.Context())
	s := st.next(t)
	if got, want := fmt.Sprint(s.msgs), fmt.Sprint([]string{older[0], "m999999-a"}); got != want {
		t.Fatalf("step messages %s, want %s (the received message first)", got, want)
	}
	s.done()
}

// A draining listener refuses deliveries, so the caller wakes the next
// owner instead of stranding them.
func TestDeliverRefusedWhenDraining(t *testing.T) {
	e := newEnv(t)
	st := newSteps()
	l := e.listener(t, st.dispatch, Options{LockDuration: time.Hour})
	l.Start(t.Context())
	if err := l.Drain(t.Context()); err != nil {
		t.Fatal(err)
	}
	if l.Deliver([]*backend.ControlMessage{{ID: "x", InstanceID: "a"}}) {
		t.Fatalf("a drained listener took a delivery")
	}
	st.none(t, "after a refused delivery")
}
