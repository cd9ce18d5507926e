package sqlite

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/taskhub/taskhub/backend"
	"github.com/taskhub/taskhub/backend/backendtest"
)

var t0 = time.Date(2031, 3, 4, 5, 6, 7, 123456789, time.UTC)

func openTemp(t testing.TB, path string, opts Options) *Backend {
	t.Helper()
	if path == "" {
		path = filepath.Join(t.TempDir(), "hub.db")
	}
	b, err := Open(path, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return b
}

func TestConformance(t *testing.T) {
	backendtest.Run(t, func(t *testing.T) backend.Backend {
		return openTemp(t, "", Options{})
	})
}

func TestOptions(t *testing.T) {
	o := Options{}.withDefaults()
	if o.Hub != HubDefault || o.BusyTimeout != BusyTimeoutDefault || o.Synchronous != SynchronousDefault {
		t.Fatalf("defaults = %+v", o)
	}
	if err := o.validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	if got := (Options{Synchronous: "normal"}).withDefaults().Synchronous; got != "NORMAL" {
		t.Errorf("Synchronous normal became %q, want NORMAL", got)
	}
	for _, bad := range []Options{
		{Synchronous: "sometimes"},
		{BusyTimeout: -time.Second},
		{BusyTimeout: time.Microsecond},
		{Hub: strings.Repeat("h", hubNameMax+1)},
	} {
		if err := bad.withDefaults().validate(); err == nil {
			t.Errorf("Options %+v validated", bad)
		}
		if _, err := Open(filepath.Join(t.TempDir(), "x.db"), bad); err == nil {
			t.Errorf("Open with Options %+v succeeded", bad)
		}
	}
	if _, err := Open(":memory:", Options{}); err == nil {
		t.Errorf("Open(:memory:) succeeded")
	}
}

// TestReopen checks that everything survives closing and reopening the file.
func TestReopen(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "hub.db")
	b, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.HubCreate(ctx, &backend.HubCreateParams{PartitionCount: 3, Now: t0}); err != nil {
		t.Fatal(err)
	}
	p, err := b.PartitionAcquire(ctx, &backend.PartitionAcquireParams{Partition: 2, Owner: "w", Duration: time.Minute, Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	in := &backend.Instance{InstanceID: "i", Name: "n", Status: backend.StatusRunning, Input: []byte("in"), CreatedAt: t0, UpdatedAt: t0, Version: 2}
	errs, err := b.CommitBatch(ctx, []*backend.Commit{{
		Fence: &backend.Fence{Partition: 2, Owner: "w", Epoch: p.Epoch},
		Now:   t0,
		Writes: backend.Writes{
			Payloads:       []*backend.Payload{{Key: "i/p", InstanceID: "i", Data: []byte("payload")}},
			History:        &backend.HistoryAppend{InstanceID: "i", ExecutionID: "e", Events: []backend.HistoryRecord{{Seq: 1, Data: []byte("a")}, {Seq: 2, Data: []byte("b")}}},
			InstanceUpsert: in,
			ControlSend:    []*backend.NewMessage{{ID: "m1", Partition: 2, InstanceID: "i", Data: []byte("msg")}},
		},
	}})
	if err != nil || errs[0] != nil {
		t.Fatalf("CommitBatch: %v %v", err, errs)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	b = openTemp(t, path, Options{})
	hub, err := b.HubGet(ctx)
	if err != nil || hub.PartitionCount != 3 || hub.Name != HubDefault || !hub.CreatedAt.Equal(t0) {
		t.Fatalf("HubGet after reopen = %+v, %v", hub, err)
	}
	got, err := b.InstanceGet(ctx, "i")
	if err != nil || got.Version != 2 || !bytes.Equal(got.Input, in.Input) || !got.CreatedAt.Equal(t0) {
		t.Fatalf("InstanceGet after reopen = %+v, %v", got, err)
	}
	// The nanoseconds of t0 survive too: SQLite stores them all.
	if got.CreatedAt.Nanosecond() != t0.Nanosecond() {
		t.Errorf("CreatedAt lost precision: %v, want %v", got.CreatedAt, t0)
	}
	h, err := b.HistoryLoad(ctx, "i")
	if err != nil || len(h.Events) != 2 || h.ExecutionID != "e" {
		t.Fatalf("HistoryLoad after reopen = %+v, %v", h, err)
	}
	if data, err := b.PayloadGet(ctx, "i/p"); err != nil || string(data) != "payload" {
		t.Fatalf("PayloadGet after reopen = %q, %v", data, err)
	}
	res, err := b.ControlReceive(ctx, &backend.ControlReceiveParams{
		Fence: backend.Fence{Partition: 2, Owner: "w", Epoch: p.Epoch}, Max: 10, LockDuration: time.Minute, Now: t0,
	})
	if err != nil || len(res.Messages) != 1 || res.Messages[0].ID != "m1" {
		t.Fatalf("ControlReceive after reopen = %+v, %v", res, err)
	}
	// A partition count other than the stored one is refused after reopen.
	_, err = b.HubCreate(ctx, &backend.HubCreateParams{PartitionCount: 4, Now: t0})
	var mismatch *backend.PartitionCountMismatchError
	if !errors.As(err, &mismatch) || mismatch.Stored != 3 || mismatch.Requested != 4 {
		t.Fatalf("HubCreate(4) after reopen: %v", err)
	}
}

func TestWrongHub(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "hub.db")
	a := openTemp(t, path, Options{Hub: "orders"})
	if _, err := a.HubCreate(ctx, &backend.HubCreateParams{PartitionCount: 2, Now: t0}); err != nil {
		t.Fatal(err)
	}
	_, err := Open(path, Options{Hub: "billing"})
	var mismatch *HubMismatchError
	if !errors.As(err, &mismatch) || mismatch.Stored != "orders" || mismatch.Requested != "billing" {
		t.Fatalf("Open of another hub's file: got %v, want *HubMismatchError{orders, billing}", err)
	}
	if msg := err.Error(); !strings.Contains(msg, `"orders"`) || !strings.Contains(msg, `"billing"`) {
		t.Errorf("error %q does not name both hubs", msg)
	}

	// A Backend opened on an empty file cannot create its hub once another
	// hub took the file.
	path2 := filepath.Join(t.TempDir(), "hub.db")
	x := openTemp(t, path2, Options{Hub: "x"})
	y := openTemp(t, path2, Options{Hub: "y"})
	if _, err := x.HubCreate(ctx, &backend.HubCreateParams{PartitionCount: 1, Now: t0}); err != nil {
		t.Fatal(err)
	}
	if _, err := y.HubCreate(ctx, &backend.HubCreateParams{PartitionCount: 1, Now: t0}); !errors.As(err, &mismatch) {
		t.Fatalf("HubCreate of a second hub in one file: got %v, want *HubMismatchError", err)
	}
	if _, err := y.HubGet(ctx); !errors.As(err, &mismatch) {
		t.Fatalf("HubGet of the other hub: got %v, want *HubMismatchError", err)
	}
}

// TestTwoBackendsOneFile stands for two processes sharing a file: each sees
// the other's writes, and a work item is never delivered to both.
func TestTwoBackendsOneFile(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "hub.db")
	a := openTemp(t, path, Options{})
	b := openTemp(t, path, Options{})
	if _, err := a.HubCreate(ctx, &backend.HubCreateParams{PartitionCount: 2, Now: t0}); err != nil {
		t.Fatal(err)
	}
	if hub, err := b.HubGet(ctx); err != nil || hub.PartitionCount != 2 {
		t.Fatalf("HubGet through the second backend = %+v, %v", hub, err)
	}
	pa, err := a.PartitionAcquire(ctx, &backend.PartitionAcquireParams{Partition: 0, Owner: "a", Duration: time.Minute, Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.PartitionAcquire(ctx, &backend.PartitionAcquireParams{Partition: 0, Owner: "b", Duration: time.Minute, Now: t0}); !errors.Is(err, backend.ErrLeaseConflict) {
		t.Fatalf("second process acquiring a taken partition: got %v, want ErrLeaseConflict", err)
	}
	// b sends to a's partition; a receives it.
	errs, err := b.CommitBatch(ctx, []*backend.Commit{{Now: t0, Writes: backend.Writes{
		ControlSend: []*backend.NewMessage{{ID: "m1", Partition: 0, InstanceID: "i", Data: []byte("x")}},
	}}})
	if err != nil || errs[0] != nil {
		t.Fatalf("CommitBatch through b: %v %v", err, errs)
	}
	res, err := a.ControlReceive(ctx, &backend.ControlReceiveParams{
		Fence: backend.Fence{Partition: 0, Owner: "a", Epoch: pa.Epoch}, Max: 10, LockDuration: time.Minute, Now: t0,
	})
	if err != nil || len(res.Messages) != 1 {
		t.Fatalf("a receiving b's message: %+v, %v", res, err)
	}

	const items = 300
	var msgs []*backend.NewMessage
	for i := range items {
		msgs = append(msgs, &backend.NewMessage{ID: fmt.Sprintf("w%05d", i), InstanceID: "i"})
	}
	if errs, err := a.CommitBatch(ctx, []*backend.Commit{{Now: t0, Writes: backend.Writes{WorkSend: msgs}}}); err != nil || errs[0] != nil {
		t.Fatalf("CommitBatch: %v %v", err, errs)
	}
	var (
		mu   sync.Mutex
		seen = map[string]string{}
		wg   sync.WaitGroup
	)
	for i, be := range []*Backend{a, b, a, b} {
		wg.Go(func() {
			owner := fmt.Sprintf("r%d", i)
			for {
				got, err := be.WorkItemReceive(ctx, &backend.WorkItemReceiveParams{Owner: owner, Max: 7, LockDuration: time.Hour, Now: t0})
				if err != nil {
					t.Errorf("WorkItemReceive: %v", err)
					return
				}
				if len(got) == 0 {
					return
				}
				mu.Lock()
				for _, w := range got {
					if prev, ok := seen[w.ID]; ok {
						t.Errorf("work item %s delivered to %s and %s", w.ID, prev, owner)
					}
					seen[w.ID] = owner
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(seen) != items {
		t.Errorf("%d work items delivered, want %d", len(seen), items)
	}
}

// TestCommitStorageErrorRollsBack checks that a storage error in one unit
// undoes the whole batch, including the units before it.
func TestCommitStorageErrorRollsBack(t *testing.T) {
	ctx := t.Context()
	b := openTemp(t, "", Options{})
	if _, err := b.HubCreate(ctx, &backend.HubCreateParams{PartitionCount: 1, Now: t0}); err != nil {
		t.Fatal(err)
	}
	good := &backend.Commit{Now: t0, Writes: backend.Writes{
		InstanceUpsert: &backend.Instance{InstanceID: "first", Status: backend.StatusRunning, CreatedAt: t0},
		ControlSend:    []*backend.NewMessage{{ID: "m1", InstanceID: "first"}},
	}}
	// Two messages with one ID: the second insert fails.
	dup := &backend.Commit{Now: t0, Writes: backend.Writes{
		WorkSend: []*backend.NewMessage{{ID: "w1", InstanceID: "x"}, {ID: "w1", InstanceID: "x"}},
	}}
	if _, err := b.CommitBatch(ctx, []*backend.Commit{good, dup}); err == nil {
		t.Fatal("CommitBatch with a duplicate message ID succeeded")
	}
	if _, err := b.InstanceGet(ctx, "first"); !errors.Is(err, backend.ErrInstanceNotFound) {
		t.Errorf("the unit before the failing one was applied: InstanceGet = %v", err)
	}
	m, err := b.QueueMetrics(ctx, &backend.QueueMetricsParams{Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	if m.Control[0].Length != 0 || m.Work.Length != 0 {
		t.Errorf("queue lengths after a failed batch = %d, %d; want 0, 0", m.Control[0].Length, m.Work.Length)
	}
	// The connection is usable afterwards: no transaction was left open.
	if errs, err := b.CommitBatch(ctx, []*backend.Commit{good}); err != nil || errs[0] != nil {
		t.Fatalf("CommitBatch after a failed batch: %v %v", err, errs)
	}

	// A send to a partition the hub does not have is refused before it is
	// lost.
	bad := &backend.Commit{Now: t0, Writes: backend.Writes{ControlSend: []*backend.NewMessage{{ID: "m9", Partition: 1}}}}
	if _, err := b.CommitBatch(ctx, []*backend.Commit{bad}); err == nil {
		t.Fatal("CommitBatch to partition 1 of a 1-partition hub succeeded")
	}
}

func TestClosed(t *testing.T) {
	b, err := Open(filepath.Join(t.TempDir(), "hub.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.HubCreate(t.Context(), &backend.HubCreateParams{PartitionCount: 1, Now: t0}); !errors.Is(err, ErrClosed) {
		t.Errorf("HubCreate after Close: got %v, want ErrClosed", err)
	}
	if _, err := b.HubGet(t.Context()); !errors.Is(err, ErrClosed) {
		t.Errorf("HubGet after Close: got %v, want ErrClosed", err)
	}
}

func TestDSN(t *testing.T) {
	got := dsn("/data/a?b#c%d.db", "busy_timeout(5)")
	want := "file:/data/a%3fb%23c%25d.db?_pragma=busy_timeout(5)"
	if got != want {
		t.Errorf("dsn = %q, want %q", got, want)
	}
	// Such a path really opens.
	b := openTemp(t, filepath.Join(t.TempDir(), "odd?name#1%.db"), Options{})
	if _, err := b.HubCreate(t.Context(), &backend.HubCreateParams{PartitionCount: 1, Now: t0}); err != nil {
		t.Fatal(err)
	}
}

func TestPrefixEnd(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"abc", "abd", true},
		{"a\xff", "b", true},
		{"\xff\xff", "", false},
	} {
		got, ok := prefixEnd(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("prefixEnd(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

// TestCloseCheckpoints checks that closing the only Backend on a file folds
// the log into the file, so the file alone holds the hub.
func TestCloseCheckpoints(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hub.db")
	b, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.HubCreate(t.Context(), &backend.HubCreateParams{PartitionCount: 1, Now: t0}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path + "-wal"); err != nil {
		t.Fatalf("no write-ahead log while open: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path + "-wal"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("write-ahead log still there after Close: %v", err)
	}
}

// syncLevelNow reads the write connection's synchronous setting.
func syncLevelNow(t *testing.T, b *Backend) int {
	t.Helper()
	b.wlock <- struct{}{}
	defer func() { <-b.wlock }()
	var n int
	if err := b.wconn.QueryRowContext(t.Context(), `PRAGMA synchronous`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestSyncLevels checks that durable commits run at Options.Synchronous and
// lock bookkeeping at NORMAL (SQLite numbers them OFF 0, NORMAL 1, FULL 2,
// EXTRA 3).
func TestSyncLevels(t *testing.T) {
	for _, tc := range []struct {
		sync                 string
		durable, bookkeeping int
	}{
		{"FULL", 2, 1},
		{"EXTRA", 3, 1},
		{"NORMAL", 1, 1},
		{"OFF", 0, 0},
	} {
		t.Run(tc.sync, func(t *testing.T) {
			ctx := t.Context()
			b := openTemp(t, "", Options{Synchronous: tc.sync})
			if _, err := b.HubCreate(ctx, &backend.HubCreateParams{PartitionCount: 1, Now: t0}); err != nil {
				t.Fatal(err)
			}
			p, err := b.PartitionAcquire(ctx, &backend.PartitionAcquireParams{Partition: 0, Owner: "w", Duration: time.Hour, Now: t0})
			if err != nil {
				t.Fatal(err)
			}
			f := backend.Fence{Partition: 0, Owner: "w", Epoch: p.Epoch}
			for round := range 2 {
				errs, err := b.CommitBatch(ctx, []*backend.Commit{{Now: t0, Writes: backend.Writes{
					ControlSend: []*backend.NewMessage{{ID: fmt.Sprint(round), InstanceID: "i"}},
				}}})
				if err != nil || errs[0] != nil {
					t.Fatal(err, errs)
				}
				if got := syncLevelNow(t, b); got != tc.durable {
					t.Errorf("round %d: synchronous after CommitBatch = %d, want %d", round, got, tc.durable)
				}
				res, err := b.ControlReceive(ctx, &backend.ControlReceiveParams{Fence: f, Max: 1, LockDuration: time.Hour, Now: t0})
				if err != nil || len(res.Messages) != 1 {
					t.Fatal(err, res)
				}
				if got := syncLevelNow(t, b); got != tc.bookkeeping {
					t.Errorf("round %d: synchronous after ControlReceive = %d, want %d", round, got, tc.bookkeeping)
				}
			}
		})
	}
}

// TestPurgeOddIDs purges instances whose IDs are not plain text, to check
// that their messages go too.
func TestPurgeOddIDs(t *testing.T) {
	ctx := t.Context()
	b := openTemp(t, "", Options{})
	if _, err := b.HubCreate(ctx, &backend.HubCreateParams{PartitionCount: 1, Now: t0}); err != nil {
		t.Fatal(err)
	}
	ids := []string{`quote"and\back`, "bad-utf8-\xff\xfe", "ünïcødé", "keep"}
	var units []*backend.Commit
	for i, id := range ids {
		status := backend.StatusCompleted
		if id == "keep" {
			status = backend.StatusRunning
		}
		units = append(units, &backend.Commit{Now: t0, Writes: backend.Writes{
			InstanceUpsert: &backend.Instance{InstanceID: id, Status: status, CreatedAt: t0},
			ControlSend:    []*backend.NewMessage{{ID: fmt.Sprintf("c%d", i), InstanceID: id}},
			WorkSend:       []*backend.NewMessage{{ID: fmt.Sprintf("w%d", i), InstanceID: id}},
		}})
	}
	if errs, err := b.CommitBatch(ctx, units); err != nil || slices.ContainsFunc(errs, func(e error) bool { return e != nil }) {
		t.Fatal(err, errs)
	}
	n, err := b.InstancePurge(ctx, &backend.InstancePurgeParams{InstanceID: ids[0]})
	if err != nil || n != 1 {
		t.Fatalf("purge by ID = %d, %v", n, err)
	}
	n, err = b.InstancePurge(ctx, &backend.InstancePurgeParams{Filter: backend.InstanceFilter{CreatedTo: t0.Add(time.Second)}, Limit: 2})
	if err != nil || n != 2 {
		t.Fatalf("purge by filter = %d, %v", n, err)
	}
	m, err := b.QueueMetrics(ctx, &backend.QueueMetricsParams{Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	if m.Control[0].Length != 1 || m.Work.Length != 1 {
		t.Errorf("queue lengths after purging 3 of 4 instances = %d, %d; want 1, 1", m.Control[0].Length, m.Work.Length)
	}
	items, err := b.WorkItemReceive(ctx, &backend.WorkItemReceiveParams{Max: 10, LockDuration: time.Hour, Now: t0})
	if err != nil || len(items) != 1 || items[0].InstanceID != "keep" {
		t.Errorf("work items left: %+v, %v; want the one of instance keep", items, err)
	}
}

// TestPanicInBatchRollsBack checks that a batch that panics (here on a nil
// message) leaves the backend usable and writes nothing.
func TestPanicInBatchRollsBack(t *testing.T) {
	ctx := t.Context()
	b := openTemp(t, "", Options{})
	if _, err := b.HubCreate(ctx, &backend.HubCreateParams{PartitionCount: 1, Now: t0}); err != nil {
		t.Fatal(err)
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("CommitBatch with a nil message did not panic")
			}
		}()
		_, _ = b.CommitBatch(ctx, []*backend.Commit{{Now: t0, Writes: backend.Writes{
			InstanceUpsert: &backend.Instance{InstanceID: "i", Status: backend.StatusRunning},
			WorkSend:       []*backend.NewMessage{nil},
		}}})
	}()
	if _, err := b.InstanceGet(ctx, "i"); !errors.Is(err, backend.ErrInstanceNotFound) {
		t.Errorf("InstanceGet after the panicking batch: got %v, want ErrInstanceNotFound", err)
	}
	if errs, err := b.CommitBatch(ctx, []*backend.Commit{{Now: t0, Writes: backend.Writes{
		InstanceUpsert: &backend.Instance{InstanceID: "j", Status: backend.StatusRunning},
	}}}); err != nil || errs[0] != nil {
		t.Fatalf("CommitBatch after the panicking batch: %v %v", err, errs)
	}
}

// TestEagerLockGranted: SQLite grants a locked insert when the partition
// has nothing waiting (the conformance suite allows a backend to refuse).
func TestEagerLockGranted(t *testing.T) {
	ctx := t.Context()
	b := openTemp(t, filepath.Join(t.TempDir(), "hub.db"), Options{})
	if _, err := b.HubCreate(ctx, &backend.HubCreateParams{PartitionCount: 1, Now: t0}); err != nil {
		t.Fatal(err)
	}
	p, err := b.PartitionAcquire(ctx, &backend.PartitionAcquireParams{Partition: 0, Owner: "A", Duration: time.Hour, Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	send := func(id string, lock bool) *backend.NewMessage {
		m := &backend.NewMessage{ID: id, InstanceID: "i", Data: []byte("x")}
		if lock {
			m.Lock = &backend.MessageLock{Epoch: p.Epoch, Until: t0.Add(time.Hour)}
		}
		errs, err := b.CommitBatch(ctx, []*backend.Commit{{Writes: backend.Writes{ControlSend: []*backend.NewMessage{m}}, Now: t0}})
		if err != nil || errs[0] != nil {
			t.Fatalf("commit: %v %v", err, errs)
		}
		return m
	}
	if m := send("a", true); !m.Locked {
		t.Fatalf("a locked insert into an empty partition was refused")
	}
	if m := send("b", true); !m.Locked {
		t.Fatalf("a locked insert behind a locked message was refused (nothing is receivable)")
	}
	send("c", false)
	if m := send("d", true); m.Locked {
		t.Fatalf("a locked insert overtook a plain message")
	}
	m := &backend.NewMessage{ID: "e", InstanceID: "i", Data: []byte("x"),
		Lock: &backend.MessageLock{Epoch: p.Epoch, Until: t0.Add(time.Hour), MayOvertake: true}}
	errs, err := b.CommitBatch(ctx, []*backend.Commit{{Writes: backend.Writes{ControlSend: []*backend.NewMessage{m}}, Now: t0}})
	if err != nil || errs[0] != nil {
		t.Fatalf("commit: %v %v", err, errs)
	}
	if !m.Locked {
		t.Fatalf("a message that may overtake was refused its lock")
	}
}
