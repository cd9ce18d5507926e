package backendtest

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/taskhub/taskhub/backend"
)

func testControlReceiveOrder(t *testing.T, b backend.Backend) {
	createHub(t, b, 2)
	f0 := acquire(t, b, 0, "A")
	f1 := acquire(t, b, 1, "A")
	// Sent out of ID order: delivery follows IDs, not insertion.
	mustCommit(t, b, send(t0,
		msg(3, 0, "i3"), msg(1, 0, "i1"), msg(5, 0, "i5"), msg(2, 0, "i2"), msg(4, 0, "i4"),
		msg(7, 1, "i7"), msg(6, 1, "i6")))

	res := receive(t, b, f0, 3, sec(1), time.Minute)
	wantMsgs(t, "first receive of partition 0 (Max 3)", res.Messages, 1, 2, 3)
	for i, m := range res.Messages {
		n := i + 1
		want := msg(n, 0, fmt.Sprintf("i%d", n))
		if m.Partition != 0 || m.InstanceID != want.InstanceID || !bytes.Equal(m.Data, want.Data) || m.DequeueCount != 1 {
			t.Errorf("message %s = {Partition %d, InstanceID %q, Data %q, DequeueCount %d}, want {0, %q, %q, 1}",
				m.ID, m.Partition, m.InstanceID, m.Data, m.DequeueCount, want.InstanceID, want.Data)
		}
		wantTime(t, "EnqueuedAt of "+m.ID, m.EnqueuedAt, t0)
	}

	// Locked messages are not delivered again to the same epoch.
	res = receive(t, b, f0, 10, sec(2), time.Minute)
	wantMsgs(t, "second receive of partition 0", res.Messages, 4, 5)
	res = receive(t, b, f0, 10, sec(3), time.Minute)
	wantMsgs(t, "third receive of partition 0", res.Messages)
	if !res.NextVisibleAt.IsZero() {
		t.Errorf("NextVisibleAt = %v with no delayed message, want zero", res.NextVisibleAt)
	}

	res = receive(t, b, f1, 10, sec(1), time.Minute)
	wantMsgs(t, "receive of partition 1", res.Messages, 6, 7)
	for _, m := range res.Messages {
		if m.Partition != 1 {
			t.Errorf("message %s has Partition %d, want 1", m.ID, m.Partition)
		}
	}
}

func testControlLockExpiry(t *testing.T, b backend.Backend) {
	createHub(t, b, 1)
	f := acquire(t, b, 0, "A")
	mustCommit(t, b, send(t0, msg(1, 0, "i")))

	wantMsgs(t, "receive at 0s", receive(t, b, f, 10, t0, time.Minute).Messages, 1)
	wantMsgs(t, "receive at 30s, under the lock", receive(t, b, f, 10, sec(30), time.Minute).Messages)
	res := receive(t, b, f, 10, sec(61), time.Minute)
	wantMsgs(t, "receive at 61s, after the lock expired", res.Messages, 1)
	if res.Messages[0].DequeueCount != 2 {
		t.Errorf("DequeueCount after the second receive = %d, want 2", res.Messages[0].DequeueCount)
	}
}

func testControlNewEpoch(t *testing.T, b backend.Backend) {
	ctx := t.Context()
	createHub(t, b, 1)
	fa := acquire(t, b, 0, "A")
	mustCommit(t, b, send(t0, msg(1, 0, "i1"), msg(2, 0, "i2")))
	wantMsgs(t, "receive by A", receive(t, b, fa, 10, t0, time.Hour).Messages, 1, 2)

	for _, stale := range []backend.Fence{
		{Partition: 0, Owner: "A", Epoch: fa.Epoch + 1},
		{Partition: 0, Owner: "B", Epoch: fa.Epoch},
	} {
		_, err := b.ControlReceive(ctx, &backend.ControlReceiveParams{Fence: stale, Max: 10, LockDuration: time.Minute, Now: t0})
		wantErr(t, "receive with a fence that was never acquired", err, backend.ErrLeaseLost)
	}

	// A new owner sees a crashed owner's messages at once: locks of an
	// older epoch are void.
	fb := acquire(t, b, 0, "B")
	res := receive(t, b, fb, 10, sec(1), time.Hour)
	wantMsgs(t, "receive by B at a newer epoch", res.Messages, 1, 2)
	for _, m := range res.Messages {
		if m.DequeueCount != 2 {
			t.Errorf("message %s DequeueCount = %d, want 2", m.ID, m.DequeueCount)
		}
	}
	_, err := b.ControlReceive(ctx, &backend.ControlReceiveParams{Fence: fa, Max: 10, LockDuration: time.Minute, Now: sec(2)})
	wantErr(t, "receive by the previous owner", err, backend.ErrLeaseLost)
}

func testControlDelayed(t *testing.T, b backend.Backend) {
	createHub(t, b, 1)
	f := acquire(t, b, 0, "A")
	m1 := msg(1, 0, "timer-1")
	m1.VisibleAt = sec(3600)
	m3 := msg(3, 0, "timer-2")
	m3.VisibleAt = sec(7200)
	mustCommit(t, b, send(t0, m1, msg(2, 0, "now"), m3))

	res := receive(t, b, f, 10, t0, 10*time.Hour)
	wantMsgs(t, "receive at 0s", res.Messages, 2)
	wantTime(t, "NextVisibleAt at 0s", res.NextVisibleAt, sec(3600))

	// An empty poll reports the next delayed message too.
	res = receive(t, b, f, 10, sec(60), time.Hour)
	wantMsgs(t, "receive at 60s", res.Messages)
	wantTime(t, "NextVisibleAt at 60s", res.NextVisibleAt, sec(3600))

	res = receive(t, b, f, 10, sec(3600), 10*time.Hour)
	wantMsgs(t, "receive at 1h", res.Messages, 1)
	wantTime(t, "VisibleAt of the delayed message", res.Messages[0].VisibleAt, sec(3600))
	wantTime(t, "NextVisibleAt at 1h", res.NextVisibleAt, sec(7200))

	res = receive(t, b, f, 10, sec(7300), time.Minute)
	wantMsgs(t, "receive at 2h", res.Messages, 3)
	if !res.NextVisibleAt.IsZero() {
		t.Errorf("NextVisibleAt after the last delayed message = %v, want zero", res.NextVisibleAt)
	}
}

func testControlRenewAbandon(t *testing.T, b backend.Backend) {
	ctx := t.Context()
	createHub(t, b, 1)
	f := acquire(t, b, 0, "A")
	mustCommit(t, b, send(t0, msg(1, 0, "i1"), msg(2, 0, "i2")))
	wantMsgs(t, "receive at 0s", receive(t, b, f, 10, t0, time.Minute).Messages, 1, 2)

	err := b.ControlRenew(ctx, &backend.ControlRenewParams{Fence: f, IDs: []string{msgID(1)}, LockDuration: time.Minute, Now: sec(50)})
	if err != nil {
		t.Fatalf("ControlRenew: %v", err)
	}
	res := receive(t, b, f, 10, sec(90), 10*time.Minute)
	wantMsgs(t, "receive at 90s: only the unrenewed message", res.Messages, 2)
	wantMsgs(t, "receive at 100s", receive(t, b, f, 10, sec(100), time.Minute).Messages)
	res = receive(t, b, f, 10, sec(120), 10*time.Minute)
	wantMsgs(t, "receive at 120s: the renewed lock expired", res.Messages, 1)
	if res.Messages[0].DequeueCount != 2 {
		t.Errorf("DequeueCount = %d, want 2", res.Messages[0].DequeueCount)
	}

	err = b.ControlAbandon(ctx, &backend.ControlAbandonParams{Fence: f, IDs: []string{msgID(1)}, VisibleAt: sec(300)})
	if err != nil {
		t.Fatalf("ControlAbandon: %v", err)
	}
	wantMsgs(t, "receive at 200s, before the abandon delay", receive(t, b, f, 10, sec(200), time.Minute).Messages)
	res = receive(t, b, f, 10, sec(301), time.Minute)
	wantMsgs(t, "receive at 301s, after the abandon delay", res.Messages, 1)
	if res.Messages[0].DequeueCount != 3 {
		t.Errorf("DequeueCount after abandon and receive = %d, want 3 (abandon keeps the count)", res.Messages[0].DequeueCount)
	}

	// Abandon with VisibleAt now makes the message visible at once, even to
	// the same epoch.
	err = b.ControlAbandon(ctx, &backend.ControlAbandonParams{Fence: f, IDs: []string{msgID(1)}, VisibleAt: sec(302)})
	if err != nil {
		t.Fatalf("ControlAbandon: %v", err)
	}
	wantMsgs(t, "receive right after abandon", receive(t, b, f, 10, sec(302), time.Minute).Messages, 1)

	acquire(t, b, 0, "B")
	err = b.ControlRenew(ctx, &backend.ControlRenewParams{Fence: f, IDs: []string{msgID(1)}, LockDuration: time.Minute, Now: sec(303)})
	wantErr(t, "ControlRenew with a stale fence", err, backend.ErrLeaseLost)
	err = b.ControlAbandon(ctx, &backend.ControlAbandonParams{Fence: f, IDs: []string{msgID(1)}, VisibleAt: sec(303)})
	wantErr(t, "ControlAbandon with a stale fence", err, backend.ErrLeaseLost)
}

func testWorkItemCompeting(t *testing.T, b backend.Backend) {
	ctx := t.Context()
	createHub(t, b, 1)
	mustCommit(t, b, sendWork(t0, msg(1, 0, "i1"), msg(2, 0, "i2"), msg(3, 0, "i3")))

	a := receiveWork(t, b, "A", 2, t0, time.Minute)
	wantItems(t, "A's first receive", a, 1, 2)
	for i, w := range a {
		if w.LockToken == "" || w.DequeueCount != 1 || w.InstanceID != []string{"i1", "i2"}[i] || !bytes.Equal(w.Data, msgData(i+1)) {
			t.Errorf("work item %s = {LockToken %q, DequeueCount %d, InstanceID %q, Data %q}, want a token, 1, %q, %q",
				w.ID, w.LockToken, w.DequeueCount, w.InstanceID, w.Data, []string{"i1", "i2"}[i], msgData(i+1))
		}
		wantTime(t, "LockedUntil of "+w.ID, w.LockedUntil, sec(60))
		wantTime(t, "EnqueuedAt of "+w.ID, w.EnqueuedAt, t0)
	}
	if a[0].LockToken == a[1].LockToken {
		t.Errorf("two work items got the same lock token %q", a[0].LockToken)
	}
	bItems := receiveWork(t, b, "B", 2, t0, time.Minute)
	wantItems(t, "B's first receive", bItems, 3)
	wantItems(t, "A's receive while everything is locked", receiveWork(t, b, "A", 10, sec(30), time.Minute))

	err := b.WorkItemRenew(ctx, &backend.WorkItemRenewParams{ID: msgID(3), LockToken: bItems[0].LockToken, LockDuration: time.Hour, Now: sec(30)})
	if err != nil {
		t.Fatalf("WorkItemRenew by B: %v", err)
	}

	b2 := receiveWork(t, b, "B", 10, sec(61), time.Hour)
	wantItems(t, "B's receive after A's locks expired", b2, 1, 2)
	for i, w := range b2 {
		if w.LockToken == a[i].LockToken {
			t.Errorf("work item %s kept lock token %q after it was received again", w.ID, w.LockToken)
		}
		if w.DequeueCount != 2 {
			t.Errorf("work item %s DequeueCount = %d, want 2", w.ID, w.DequeueCount)
		}
	}
	err = b.WorkItemRenew(ctx, &backend.WorkItemRenewParams{ID: msgID(1), LockToken: a[0].LockToken, LockDuration: time.Hour, Now: sec(62)})
	wantErr(t, "WorkItemRenew with a lost lock", err, backend.ErrLockLost)
	err = b.WorkItemAbandon(ctx, &backend.WorkItemAbandonParams{ID: msgID(1), LockToken: a[0].LockToken, VisibleAt: sec(62)})
	wantErr(t, "WorkItemAbandon with a lost lock", err, backend.ErrLockLost)

	err = b.WorkItemAbandon(ctx, &backend.WorkItemAbandonParams{ID: msgID(1), LockToken: b2[0].LockToken, VisibleAt: sec(300)})
	if err != nil {
		t.Fatalf("WorkItemAbandon by B: %v", err)
	}
	wantItems(t, "receive before the abandon delay", receiveWork(t, b, "A", 10, sec(240), time.Minute))
	a2 := receiveWork(t, b, "A", 10, sec(301), time.Minute)
	wantItems(t, "receive after the abandon delay", a2, 1)
	if a2[0].DequeueCount != 3 {
		t.Errorf("DequeueCount after abandon and receive = %d, want 3 (abandon keeps the count)", a2[0].DequeueCount)
	}
	err = b.WorkItemRenew(ctx, &backend.WorkItemRenewParams{ID: msgID(1), LockToken: b2[0].LockToken, LockDuration: time.Hour, Now: sec(302)})
	wantErr(t, "WorkItemRenew with the token of an abandoned receive", err, backend.ErrLockLost)
	err = b.WorkItemRenew(ctx, &backend.WorkItemRenewParams{ID: "no-such-item", LockToken: a2[0].LockToken, LockDuration: time.Hour, Now: sec(302)})
	wantErr(t, "WorkItemRenew of a missing item", err, backend.ErrLockLost)
}

func testWorkItemDelayed(t *testing.T, b backend.Backend) {
	createHub(t, b, 1)
	later := msg(1, 0, "i1")
	later.VisibleAt = sec(60)
	mustCommit(t, b, sendWork(t0, later, msg(2, 0, "i2")))
	wantItems(t, "receive at 0s", receiveWork(t, b, "A", 10, t0, time.Hour), 2)
	wantItems(t, "receive at 59s", receiveWork(t, b, "A", 10, sec(59), time.Hour))
	wantItems(t, "receive at 60s", receiveWork(t, b, "A", 10, sec(60), time.Hour), 1)
}

func testWorkItemComplete(t *testing.T, b backend.Backend) {
	createHub(t, b, 1)
	f := acquire(t, b, 0, "A")
	mustCommit(t, b, sendWork(t0, msg(1, 0, "i1"), msg(2, 0, "i1")))
	items := receiveWork(t, b, "A", 2, t0, time.Minute)
	wantItems(t, "receive", items, 1, 2)

	// An activity result: the work item goes, the result goes to the
	// orchestration's control queue.
	mustCommit(t, b, &backend.Commit{
		WorkItem: &backend.WorkItemLock{ID: items[0].ID, LockToken: items[0].LockToken},
		Now:      sec(1),
		Writes:   backend.Writes{ControlSend: []*backend.NewMessage{msg(10, 0, "i1")}},
	})
	if l := lengths(metrics(t, b, sec(1))); l[1] != 1 {
		t.Errorf("work queue length after completing one of two items = %d, want 1", l[1])
	}
	wantMsgs(t, "the completion's control message", receive(t, b, f, 10, sec(1), time.Minute).Messages, 10)
	// Past every lock, only the uncompleted item comes back.
	again := receiveWork(t, b, "B", 10, sec(3600), time.Minute)
	wantItems(t, "receive after the locks expired", again, 2)

	// A's token for it is stale now: A's completion is refused whole.
	errs := commit(t, b, &backend.Commit{
		WorkItem: &backend.WorkItemLock{ID: items[1].ID, LockToken: items[1].LockToken},
		Now:      sec(3601),
		Writes: backend.Writes{
			InstanceUpsert: instance("i1", 1),
			ControlSend:    []*backend.NewMessage{msg(11, 0, "i1")},
		},
	})
	wantErr(t, "completion with a stale lock token", errs[0], backend.ErrLockLost)
	if _, err := b.InstanceGet(t.Context(), "i1"); !errors.Is(err, backend.ErrInstanceNotFound) {
		t.Errorf("the refused completion wrote its instance row: InstanceGet = %v", err)
	}
	// Message 10 of the first completion is still queued; 11 must not be.
	if l := lengths(metrics(t, b, sec(3601))); l[0] != 1 || l[1] != 1 {
		t.Errorf("queue lengths after the refused completion = %v, want [1 1]", l)
	}
	mustCommit(t, b, &backend.Commit{WorkItem: &backend.WorkItemLock{ID: again[0].ID, LockToken: again[0].LockToken}, Now: sec(3602)})
}
