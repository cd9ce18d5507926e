package backendtest

import (
	"testing"
	"time"

	"github.com/taskhub/taskhub/backend"
)

// testControlSentLocked: a control message sent with a lock request is
// inserted locked only when it overtakes nothing (a backend may always
// refuse). A locked one is invisible to the sender's epoch until the lock
// expires and visible at once to a newer epoch (the sender crashed); a
// refused one is an ordinary message, received in queue order.
func testControlSentLocked(t *testing.T, b backend.Backend) {
	createHub(t, b, 1)
	fa := acquire(t, b, 0, "A")
	m := msg(1, 0, "i")
	m.Lock = &backend.MessageLock{Epoch: fa.Epoch, Until: sec(60)}
	mustCommit(t, b, send(t0, m))
	if m.Locked {
		if got := receive(t, b, fa, 10, sec(1), time.Hour).Messages; len(got) != 0 {
			t.Fatalf("the sender's epoch received %d messages under the lock, want 0", len(got))
		}
		if l := lengths(metrics(t, b, sec(1))); l[0] != 1 {
			t.Errorf("control queue length = %d, want 1 (a locked message is still queued)", l[0])
		}
		res := receive(t, b, fa, 10, sec(61), time.Minute)
		wantMsgs(t, "receive by the sender's epoch after the lock", res.Messages, 1)
		if res.Messages[0].DequeueCount != 2 {
			t.Errorf("DequeueCount = %d, want 2 (the sender's delivery counts as one)", res.Messages[0].DequeueCount)
		}
	} else {
		wantMsgs(t, "receive of a message whose lock was refused", receive(t, b, fa, 10, sec(1), time.Minute).Messages, 1)
	}

	// A crash: the next owner sees a message locked by the old epoch at once.
	m3 := msg(3, 0, "i")
	m3.Lock = &backend.MessageLock{Epoch: fa.Epoch, Until: sec(3600)}
	mustCommit(t, b, send(sec(62), m3))
	fb := acquire(t, b, 0, "B")
	wantMsgs(t, "receive by a newer epoch (every lock of the old epoch is void)", receive(t, b, fb, 10, sec(63), time.Minute).Messages, 1, 3)
}

// testControlSentLockedNoOvertaking: a locked insert is refused when an
// older message is waiting to be received (a plain one, one locked by an
// older epoch, or one sent earlier in the same commit), so that eager
// delivery never reorders a partition's queue; a message due later does
// not count.
func testControlSentLockedNoOvertaking(t *testing.T, b backend.Backend) {
	createHub(t, b, 1)
	fa := acquire(t, b, 0, "A")
	mustCommit(t, b, send(t0, msg(1, 0, "i"))) // waiting to be received
	m2 := msg(2, 0, "i")
	m2.Lock = &backend.MessageLock{Epoch: fa.Epoch, Until: sec(3600)}
	mustCommit(t, b, send(sec(1), m2))
	if m2.Locked {
		t.Fatalf("a message was inserted locked ahead of an older message still in the queue")
	}
	wantMsgs(t, "receive in queue order", receive(t, b, fa, 10, sec(2), time.Hour).Messages, 1, 2)

	// The same within one commit: a plain message first, then a request.
	m4 := msg(4, 0, "j")
	m4.Lock = &backend.MessageLock{Epoch: fa.Epoch, Until: sec(3600)}
	mustCommit(t, b, send(sec(3), msg(3, 0, "j"), m4))
	if m4.Locked {
		t.Fatalf("a message was inserted locked behind a plain message of the same commit")
	}
	wantMsgs(t, "receive in queue order", receive(t, b, fa, 10, sec(4), time.Hour).Messages, 3, 4)

	// An answer that may overtake is locked even behind a waiting message.
	mustCommit(t, b, send(sec(4), msg(7, 0, "m")))
	m8 := msg(8, 0, "m")
	m8.Lock = &backend.MessageLock{Epoch: fa.Epoch, Until: sec(3600), MayOvertake: true}
	mustCommit(t, b, send(sec(4), m8))
	if m8.Locked {
		wantMsgs(t, "receive with the overtaking message locked", receive(t, b, fa, 10, sec(4), time.Hour).Messages, 7)
	} else {
		wantMsgs(t, "receive of a refused lock", receive(t, b, fa, 10, sec(4), time.Hour).Messages, 7, 8)
	}

	// A timer due later is not overtaken: it is not receivable yet.
	timer := msg(5, 0, "k")
	timer.VisibleAt = sec(100)
	mustCommit(t, b, send(sec(5), timer))
	m6 := msg(6, 0, "k")
	m6.Lock = &backend.MessageLock{Epoch: fa.Epoch, Until: sec(3600)}
	mustCommit(t, b, send(sec(6), m6))
	if !m6.Locked {
		wantMsgs(t, "receive of a refused lock", receive(t, b, fa, 10, sec(7), time.Hour).Messages, 6)
	}
	wantMsgs(t, "receive of the timer when due", receive(t, b, fa, 10, sec(101), time.Minute).Messages, 5)
}

// testWorkItemSentLocked: a work item inserted as already received is
// invisible to others until its lock expires, and completes with its token.
func testWorkItemSentLocked(t *testing.T, b backend.Backend) {
	createHub(t, b, 1)
	m := msg(1, 0, "i")
	m.Lock = &backend.MessageLock{Token: "sender-token", Until: sec(60)}
	m2 := msg(2, 0, "i")
	m2.Lock = &backend.MessageLock{Token: "sender-token-2", Until: sec(60)}
	mustCommit(t, b, sendWork(t0, m, m2))

	if got := receiveWork(t, b, "other", 10, sec(1), time.Minute); len(got) != 0 {
		t.Fatalf("another worker received %d locked items, want 0", len(got))
	}
	// The sender completes item 1 with its token.
	mustCommit(t, b, &backend.Commit{WorkItem: &backend.WorkItemLock{ID: msgID(1), LockToken: "sender-token"}, Now: sec(2)})
	// The sender died holding item 2: it comes back after the lock.
	again := receiveWork(t, b, "other", 10, sec(61), time.Minute)
	wantItems(t, "receive after the sender's lock expired", again, 2)
	if again[0].DequeueCount != 2 {
		t.Errorf("DequeueCount = %d, want 2", again[0].DequeueCount)
	}
	errs := commit(t, b, &backend.Commit{WorkItem: &backend.WorkItemLock{ID: msgID(2), LockToken: "sender-token-2"}, Now: sec(62)})
	wantErr(t, "completion by the sender after another received it", errs[0], backend.ErrLockLost)
}
