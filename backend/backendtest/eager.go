package backendtest

import (
	"testing"
	"time"

	"github.com/taskhub/taskhub/backend"
)

// testControlSentLocked: a control message inserted as already received by
// its sender's epoch is invisible to that epoch until the lock expires, and
// visible at once to a newer epoch (the sender crashed).
func testControlSentLocked(t *testing.T, b backend.Backend) {
	createHub(t, b, 1)
	fa := acquire(t, b, 0, "A")
	m := msg(1, 0, "i")
	m.Lock = &backend.MessageLock{Epoch: fa.Epoch, Until: sec(60)}
	mustCommit(t, b, send(t0, m, msg(2, 0, "i")))

	wantMsgs(t, "receive by the sender's epoch under the lock", receive(t, b, fa, 10, sec(1), time.Hour).Messages, 2)
	if l := lengths(metrics(t, b, sec(1))); l[0] != 2 {
		t.Errorf("control queue length = %d, want 2 (a locked message is still queued)", l[0])
	}
	res := receive(t, b, fa, 10, sec(61), time.Minute)
	wantMsgs(t, "receive by the sender's epoch after the lock", res.Messages, 1)
	if res.Messages[0].DequeueCount != 2 {
		t.Errorf("DequeueCount = %d, want 2 (the sender's delivery counts as one)", res.Messages[0].DequeueCount)
	}

	// A crash: the next owner sees a fresh locked message at once.
	m3 := msg(3, 0, "i")
	m3.Lock = &backend.MessageLock{Epoch: fa.Epoch, Until: sec(3600)}
	mustCommit(t, b, send(sec(62), m3))
	fb := acquire(t, b, 0, "B")
	wantMsgs(t, "receive by a newer epoch (every lock of the old epoch is void)", receive(t, b, fb, 10, sec(63), time.Minute).Messages, 1, 2, 3)
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
