// Package backendtest is the conformance suite of backend.Backend. Every
// backend in this module runs it:
//
//	func TestConformance(t *testing.T) {
//		backendtest.Run(t, func(t *testing.T) backend.Backend {
//			b := open(t) // a fresh, empty backend
//			t.Cleanup(func() { b.Close() })
//			return b
//		})
//	}
//
// The suite pins down the behaviour the engine relies on where the contract's
// comments leave room, and says so next to the assertion. Tests that drive
// lock expiry and visibility through the Now parameters are skipped, with the
// reason printed, for backends whose Capabilities report ServerClock.
package backendtest

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/taskhub/taskhub/backend"
)

// test is one subtest of the suite.
type test struct {
	name string
	// clock is set when the test moves time through the Now parameters.
	clock bool
	run   func(t *testing.T, b backend.Backend)
}

// suite lists every subtest; each runs on its own fresh backend.
var suite = []test{
	{name: "HubCreateOpen", run: testHubCreateOpen},
	{name: "HubDelete", run: testHubDelete},
	{name: "PartitionLease", run: testPartitionLease},
	{name: "PartitionRenewExpired", clock: true, run: testPartitionRenewExpired},
	{name: "Workers", run: testWorkers},
	{name: "ControlReceiveOrder", run: testControlReceiveOrder},
	{name: "ControlLockExpiry", clock: true, run: testControlLockExpiry},
	{name: "ControlNewEpoch", run: testControlNewEpoch},
	{name: "ControlDelayed", clock: true, run: testControlDelayed},
	{name: "ControlRenewAbandon", clock: true, run: testControlRenewAbandon},
	{name: "WorkItemCompeting", clock: true, run: testWorkItemCompeting},
	{name: "WorkItemDelayed", clock: true, run: testWorkItemDelayed},
	{name: "WorkItemComplete", clock: true, run: testWorkItemComplete},
	{name: "ControlSentLocked", clock: true, run: testControlSentLocked},
	{name: "ControlSentLockedNoOvertaking", clock: true, run: testControlSentLockedNoOvertaking},
	{name: "WorkItemSentLocked", clock: true, run: testWorkItemSentLocked},
	{name: "CommitRefused", run: testCommitRefused},
	{name: "CommitAccepted", run: testCommitAccepted},
	{name: "CommitInstanceRoundTrip", run: testCommitInstanceRoundTrip},
	{name: "CommitInstanceKeepVersion", run: testCommitInstanceKeepVersion},
	{name: "CommitHistory", run: testCommitHistory},
	{name: "CommitPayloads", run: testCommitPayloads},
	{name: "CommitControlSendDelete", run: testCommitControlSendDelete},
	{name: "CommitPoison", run: testCommitPoison},
	{name: "LargeMessage", run: testLargeMessage},
	{name: "InstanceGetMissing", run: testInstanceGetMissing},
	{name: "InstanceListFilters", run: testInstanceListFilters},
	{name: "InstanceListPaging", run: testInstanceListPaging},
	{name: "InstancePurgeByID", run: testInstancePurgeByID},
	{name: "InstancePurgeByFilter", run: testInstancePurgeByFilter},
	{name: "InstanceListExcludePrefix", run: testInstanceListExcludePrefix},
	{name: "InstancePurgeExcludePrefix", run: testInstancePurgeExcludePrefix},
	{name: "InstancePurgeExpectVersion", run: testInstancePurgeExpectVersion},
	{name: "InstancePurgeExpectVersionRace", run: testInstancePurgeExpectVersionRace},
	{name: "InstancePurgeKeepMessages", run: testInstancePurgeKeepMessages},
	{name: "QueueMetrics", clock: true, run: testQueueMetrics},
	{name: "Concurrency", run: testConcurrency},
	{name: "Close", run: testClose},
}

// Run runs the suite. newBackend must return a fresh, empty backend and
// register its own cleanup with t.
func Run(t *testing.T, newBackend func(t *testing.T) backend.Backend) {
	t.Helper()
	for _, tc := range suite {
		t.Run(tc.name, func(t *testing.T) {
			b := newBackend(t)
			if tc.clock && b.Capabilities().ServerClock {
				t.Skip("skipped: the backend reports Capabilities.ServerClock, and this test moves time through the Now parameters")
			}
			tc.run(t, b)
		})
	}
}

// t0 is the suite's clock origin. It has microsecond precision, the finest
// every backend stores, and tests move time in whole seconds.
var t0 = time.Date(2031, 3, 4, 5, 6, 7, 123456000, time.UTC)

// sec returns t0 plus n seconds.
func sec(n int) time.Time { return t0.Add(time.Duration(n) * time.Second) }

// lease is long enough that no test outlives it.
const lease = time.Hour

// msgID returns the n-th message ID: engine IDs are time-ordered strings.
func msgID(n int) string { return fmt.Sprintf("%020d", n) }

func createHub(t *testing.T, b backend.Backend, partitions int) {
	t.Helper()
	if _, err := b.HubCreate(t.Context(), &backend.HubCreateParams{PartitionCount: partitions, Now: t0}); err != nil {
		t.Fatalf("HubCreate(%d): %v", partitions, err)
	}
}

// acquire takes partition p for owner at its current epoch.
func acquire(t *testing.T, b backend.Backend, p int, owner string) backend.Fence {
	t.Helper()
	parts, err := b.PartitionList(t.Context())
	if err != nil {
		t.Fatalf("PartitionList: %v", err)
	}
	if p >= len(parts) {
		t.Fatalf("PartitionList returned %d partitions, want more than %d", len(parts), p)
	}
	got, err := b.PartitionAcquire(t.Context(), &backend.PartitionAcquireParams{
		Partition: p, Owner: owner, ExpectEpoch: parts[p].Epoch, Duration: lease, Now: t0,
	})
	if err != nil {
		t.Fatalf("PartitionAcquire(%d, %q): %v", p, owner, err)
	}
	return backend.Fence{Partition: p, Owner: owner, Epoch: got.Epoch}
}

// commit runs CommitBatch and fails the test on a storage error.
func commit(t *testing.T, b backend.Backend, units ...*backend.Commit) []error {
	t.Helper()
	errs, err := b.CommitBatch(t.Context(), units)
	if err != nil {
		t.Fatalf("CommitBatch: storage error: %v", err)
	}
	if len(errs) != len(units) {
		t.Fatalf("CommitBatch returned %d results for %d units", len(errs), len(units))
	}
	return errs
}

// mustCommit runs CommitBatch and fails the test unless every unit applied.
func mustCommit(t *testing.T, b backend.Backend, units ...*backend.Commit) {
	t.Helper()
	for i, err := range commit(t, b, units...) {
		if err != nil {
			t.Fatalf("CommitBatch unit %d refused: %v", i, err)
		}
	}
}

// send is a unit that enqueues control messages at now.
func send(now time.Time, msgs ...*backend.NewMessage) *backend.Commit {
	return &backend.Commit{Now: now, Writes: backend.Writes{ControlSend: msgs}}
}

// sendWork is a unit that enqueues work items at now.
func sendWork(now time.Time, msgs ...*backend.NewMessage) *backend.Commit {
	return &backend.Commit{Now: now, Writes: backend.Writes{WorkSend: msgs}}
}

// msg is message n for partition p, with data derived from n.
func msg(n, p int, instanceID string) *backend.NewMessage {
	return &backend.NewMessage{ID: msgID(n), Partition: p, InstanceID: instanceID, Data: msgData(n)}
}

func msgData(n int) []byte { return []byte(fmt.Sprintf("data-%d", n)) }

func receive(t *testing.T, b backend.Backend, f backend.Fence, max int, now time.Time, lock time.Duration) *backend.ControlReceiveResult {
	t.Helper()
	res, err := b.ControlReceive(t.Context(), &backend.ControlReceiveParams{Fence: f, Max: max, LockDuration: lock, Now: now})
	if err != nil {
		t.Fatalf("ControlReceive(partition %d, epoch %d, now %v): %v", f.Partition, f.Epoch, now, err)
	}
	return res
}

func receiveWork(t *testing.T, b backend.Backend, owner string, max int, now time.Time, lock time.Duration) []*backend.WorkItem {
	t.Helper()
	items, err := b.WorkItemReceive(t.Context(), &backend.WorkItemReceiveParams{Owner: owner, Max: max, LockDuration: lock, Now: now})
	if err != nil {
		t.Fatalf("WorkItemReceive(%s, now %v): %v", owner, now, err)
	}
	return items
}

// wantMsgs checks that msgs are exactly the messages numbered want, in order.
func wantMsgs(t *testing.T, what string, msgs []*backend.ControlMessage, want ...int) {
	t.Helper()
	got := make([]string, len(msgs))
	for i, m := range msgs {
		got[i] = m.ID
	}
	wantMsgIDs(t, what, got, want)
}

func wantItems(t *testing.T, what string, items []*backend.WorkItem, want ...int) {
	t.Helper()
	got := make([]string, len(items))
	for i, w := range items {
		got[i] = w.ID
	}
	wantMsgIDs(t, what, got, want)
}

func wantMsgIDs(t *testing.T, what string, got []string, want []int) {
	t.Helper()
	w := make([]string, len(want))
	for i, n := range want {
		w[i] = msgID(n)
	}
	if !slices.Equal(got, w) {
		t.Fatalf("%s: got message IDs %q, want %q", what, got, w)
	}
}

// wantErr checks that err matches target with errors.Is.
func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: got error %v, want %v", what, err, target)
	}
}

func wantTime(t *testing.T, what string, got, want time.Time) {
	t.Helper()
	if !got.Equal(want) {
		t.Errorf("%s: got %v, want %v", what, got, want)
	}
}

func metrics(t *testing.T, b backend.Backend, now time.Time) *backend.QueueMetrics {
	t.Helper()
	m, err := b.QueueMetrics(t.Context(), &backend.QueueMetricsParams{Now: now})
	if err != nil {
		t.Fatalf("QueueMetrics: %v", err)
	}
	return m
}

// lengths returns the queue lengths of m, control partitions first.
func lengths(m *backend.QueueMetrics) []int {
	var n []int
	for _, s := range m.Control {
		n = append(n, s.Length)
	}
	return append(n, m.Work.Length)
}

func getInstance(t *testing.T, b backend.Backend, id string) *backend.Instance {
	t.Helper()
	in, err := b.InstanceGet(t.Context(), id)
	if err != nil {
		t.Fatalf("InstanceGet(%q): %v", id, err)
	}
	return in
}

func loadHistory(t *testing.T, b backend.Backend, id string) *backend.History {
	t.Helper()
	h, err := b.HistoryLoad(t.Context(), id)
	if err != nil {
		t.Fatalf("HistoryLoad(%q): %v", id, err)
	}
	return h
}

// instanceDiff lists the fields in which got differs from want; times are
// compared with Equal, byte slices with bytes.Equal (nil equals empty).
func instanceDiff(got, want *backend.Instance) []string {
	var d []string
	str := func(name, g, w string) {
		if g != w {
			d = append(d, fmt.Sprintf("%s = %q, want %q", name, g, w))
		}
	}
	byt := func(name string, g, w []byte) {
		if !bytes.Equal(g, w) {
			d = append(d, fmt.Sprintf("%s = %q, want %q", name, g, w))
		}
	}
	tim := func(name string, g, w time.Time) {
		if !g.Equal(w) {
			d = append(d, fmt.Sprintf("%s = %v, want %v", name, g, w))
		}
	}
	str("InstanceID", got.InstanceID, want.InstanceID)
	str("Name", got.Name, want.Name)
	str("ExecutionID", got.ExecutionID, want.ExecutionID)
	str("Status", string(got.Status), string(want.Status))
	byt("Input", got.Input, want.Input)
	byt("Output", got.Output, want.Output)
	byt("CustomStatus", got.CustomStatus, want.CustomStatus)
	byt("Failure", got.Failure, want.Failure)
	tim("CreatedAt", got.CreatedAt, want.CreatedAt)
	tim("UpdatedAt", got.UpdatedAt, want.UpdatedAt)
	tim("CompletedAt", got.CompletedAt, want.CompletedAt)
	tim("ScheduledStartAt", got.ScheduledStartAt, want.ScheduledStartAt)
	str("ParentInstanceID", got.ParentInstanceID, want.ParentInstanceID)
	if got.Version != want.Version {
		d = append(d, fmt.Sprintf("Version = %d, want %d", got.Version, want.Version))
	}
	return d
}

func wantInstance(t *testing.T, b backend.Backend, want *backend.Instance) {
	t.Helper()
	got := getInstance(t, b, want.InstanceID)
	if d := instanceDiff(got, want); len(d) > 0 {
		t.Errorf("InstanceGet(%q) differs:\n%s", want.InstanceID, joinLines(d))
	}
}

func joinLines(lines []string) string {
	var buf bytes.Buffer
	for _, l := range lines {
		buf.WriteString("\t")
		buf.WriteString(l)
		buf.WriteString("\n")
	}
	return buf.String()
}

// instance returns a running instance row with every field set.
func instance(id string, version int64) *backend.Instance {
	return &backend.Instance{
		InstanceID:   id,
		Name:         "Orchestrator",
		ExecutionID:  "exec-" + id,
		Status:       backend.StatusRunning,
		Input:        []byte(`"input of ` + id + `"`),
		CustomStatus: []byte(`{"step":1}`),
		CreatedAt:    t0,
		UpdatedAt:    sec(1),
		Version:      version,
	}
}

// events returns history records with the given sequence numbers.
func events(seqs ...int64) []backend.HistoryRecord {
	ev := make([]backend.HistoryRecord, len(seqs))
	for i, s := range seqs {
		ev[i] = backend.HistoryRecord{Seq: s, Data: []byte(fmt.Sprintf("event-%d", s))}
	}
	return ev
}

// wantHistory checks an instance's history: its execution and event seqs
// (data as events made it).
func wantHistory(t *testing.T, b backend.Backend, id, execution string, seqs ...int64) {
	t.Helper()
	h := loadHistory(t, b, id)
	if h.ExecutionID != execution && len(seqs) > 0 {
		t.Errorf("HistoryLoad(%q).ExecutionID = %q, want %q", id, h.ExecutionID, execution)
	}
	want := events(seqs...)
	if len(h.Events) != len(want) {
		t.Fatalf("HistoryLoad(%q) has %d events, want %d (seqs %v)", id, len(h.Events), len(want), seqs)
	}
	for i := range want {
		if h.Events[i].Seq != want[i].Seq || !bytes.Equal(h.Events[i].Data, want[i].Data) {
			t.Fatalf("HistoryLoad(%q) event %d = {%d %q}, want {%d %q}",
				id, i, h.Events[i].Seq, h.Events[i].Data, want[i].Seq, want[i].Data)
		}
	}
}
