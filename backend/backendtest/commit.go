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

// testCommitRefused checks every condition that refuses a unit: the refused
// unit writes nothing of any kind, and the units around it in the same
// batch apply.
func testCommitRefused(t *testing.T, b backend.Backend) {
	ctx := t.Context()
	createHub(t, b, 2)
	f0 := acquire(t, b, 0, "A")
	stale := acquire(t, b, 1, "A")
	acquire(t, b, 1, "B")

	// The victim is what every refused unit tries to overwrite.
	victim := instance("victim", 3)
	mustCommit(t, b, &backend.Commit{
		Fence: &f0,
		Now:   t0,
		Writes: backend.Writes{
			History:        &backend.HistoryAppend{InstanceID: "victim", ExecutionID: "exec-victim", Events: events(1, 2, 3)},
			InstanceUpsert: victim,
			ControlSend:    []*backend.NewMessage{msg(1, 0, "victim")},
			WorkSend:       []*backend.NewMessage{msg(2, 0, "victim")},
		},
	})
	items := receiveWork(t, b, "A", 1, t0, time.Hour)
	wantItems(t, "receive the victim's work item", items, 2)
	lock := items[0]

	cases := []struct {
		name  string
		unit  backend.Commit
		check func(t *testing.T, err error)
	}{
		{
			name: "fence with a stale epoch",
			unit: backend.Commit{Fence: &stale},
			check: func(t *testing.T, err error) {
				wantErr(t, "refusal", err, backend.ErrLeaseLost)
			},
		},
		{
			name: "fence of another owner",
			unit: backend.Commit{Fence: &backend.Fence{Partition: 0, Owner: "B", Epoch: f0.Epoch}},
			check: func(t *testing.T, err error) {
				wantErr(t, "refusal", err, backend.ErrLeaseLost)
			},
		},
		{
			name: "instance version behind",
			unit: backend.Commit{Fence: &f0, Instance: &backend.InstanceCondition{InstanceID: "victim", ExpectVersion: 2}},
			check: func(t *testing.T, err error) {
				wantErr(t, "refusal", err, backend.ErrVersionConflict)
			},
		},
		{
			name: "instance expected absent but present",
			unit: backend.Commit{Instance: &backend.InstanceCondition{InstanceID: "victim", ExpectVersion: 0}},
			check: func(t *testing.T, err error) {
				wantErr(t, "refusal", err, backend.ErrVersionConflict)
			},
		},
		{
			name: "instance expected present but absent",
			unit: backend.Commit{Instance: &backend.InstanceCondition{InstanceID: "nobody", ExpectVersion: 1}},
			check: func(t *testing.T, err error) {
				wantErr(t, "refusal", err, backend.ErrVersionConflict)
			},
		},
		{
			name: "create refused by status",
			unit: backend.Commit{Create: &backend.CreateCondition{
				InstanceID:     "victim",
				RefuseStatuses: []backend.Status{backend.StatusPending, backend.StatusRunning},
			}},
			check: func(t *testing.T, err error) {
				var exists *backend.InstanceExistsError
				if !errors.As(err, &exists) {
					t.Fatalf("refusal: got %v, want *InstanceExistsError", err)
				}
				if exists.InstanceID != "victim" || exists.Status != backend.StatusRunning {
					t.Errorf("InstanceExistsError = {%q, %s}, want {victim, Running}", exists.InstanceID, exists.Status)
				}
			},
		},
		{
			name: "work item with a wrong token",
			unit: backend.Commit{WorkItem: &backend.WorkItemLock{ID: lock.ID, LockToken: lock.LockToken + "x"}},
			check: func(t *testing.T, err error) {
				wantErr(t, "refusal", err, backend.ErrLockLost)
			},
		},
		{
			name: "work item that does not exist",
			unit: backend.Commit{WorkItem: &backend.WorkItemLock{ID: "no-such-item", LockToken: lock.LockToken}},
			check: func(t *testing.T, err error) {
				wantErr(t, "refusal", err, backend.ErrLockLost)
			},
		},
		{
			// Conditions are all checked: a good fence does not let a bad
			// version through.
			name: "good fence, bad version, good lock",
			unit: backend.Commit{
				Fence:    &f0,
				Instance: &backend.InstanceCondition{InstanceID: "victim", ExpectVersion: 4},
				WorkItem: &backend.WorkItemLock{ID: lock.ID, LockToken: lock.LockToken},
			},
			check: func(t *testing.T, err error) {
				wantErr(t, "refusal", err, backend.ErrVersionConflict)
			},
		},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := metrics(t, b, t0)
			poisonBefore, err := b.PoisonList(ctx, 100)
			if err != nil {
				t.Fatalf("PoisonList: %v", err)
			}

			refused := tc.unit
			refused.Now = sec(10)
			refused.Writes = backend.Writes{
				Payloads: []*backend.Payload{{Key: "victim/refused", InstanceID: "victim", Data: []byte("x")}},
				History: &backend.HistoryAppend{
					InstanceID: "victim", ExecutionID: "exec-other", Reset: true, Events: events(1),
				},
				InstanceUpsert: &backend.Instance{
					InstanceID: "victim", Name: "Other", Status: backend.StatusCompleted, Version: 99, CreatedAt: sec(10), UpdatedAt: sec(10),
				},
				ControlSend:   []*backend.NewMessage{msg(100+i, 0, "victim")},
				WorkSend:      []*backend.NewMessage{msg(200+i, 0, "victim")},
				ControlDelete: []string{msgID(1)},
				Poison: []*backend.Poison{{
					ID: msgID(1), Queue: "control", InstanceID: "victim", Data: []byte("x"), DequeueCount: 9, Reason: "refused",
				}},
			}
			before1, after1 := fmt.Sprintf("before-%d", i), fmt.Sprintf("after-%d", i)
			// The unit before holds a fence on the same partition, so a
			// backend cannot reuse its fence check for the refused unit.
			good := okUnit(before1)
			good.Fence = &f0
			errs := commit(t, b, good, &refused, okUnit(after1))
			if errs[0] != nil || errs[2] != nil {
				t.Fatalf("the units around the refused one were refused: %v, %v", errs[0], errs[2])
			}
			tc.check(t, errs[1])

			wantInstance(t, b, victim)
			wantHistory(t, b, "victim", "exec-victim", 1, 2, 3)
			if _, err := b.PayloadGet(ctx, "victim/refused"); !errors.Is(err, backend.ErrPayloadNotFound) {
				t.Errorf("PayloadGet of the refused unit's payload: got %v, want ErrPayloadNotFound", err)
			}
			if got, want := lengths(metrics(t, b, t0)), lengths(before); !slices.Equal(got, want) {
				t.Errorf("queue lengths changed from %v to %v: the refused unit sent or deleted messages", want, got)
			}
			poisonAfter, err := b.PoisonList(ctx, 100)
			if err != nil {
				t.Fatalf("PoisonList: %v", err)
			}
			if len(poisonAfter) != len(poisonBefore) {
				t.Errorf("poison records went from %d to %d: the refused unit wrote one", len(poisonBefore), len(poisonAfter))
			}
			wantInstance(t, b, instance(before1, 1))
			wantInstance(t, b, instance(after1, 1))
		})
	}

	// The lock survived every refusal: the right token still completes.
	mustCommit(t, b, &backend.Commit{WorkItem: &backend.WorkItemLock{ID: lock.ID, LockToken: lock.LockToken}, Now: sec(20)})
	if l := lengths(metrics(t, b, sec(20))); l[2] != 0 {
		t.Errorf("work queue length after completing the only item = %d, want 0", l[2])
	}
}

// okUnit is an unconditional unit that creates instance id.
func okUnit(id string) *backend.Commit {
	return &backend.Commit{Now: sec(10), Writes: backend.Writes{InstanceUpsert: instance(id, 1)}}
}

// testCommitAccepted checks conditions that hold.
func testCommitAccepted(t *testing.T, b backend.Backend) {
	createHub(t, b, 1)
	f := acquire(t, b, 0, "A")
	mustCommit(t, b,
		&backend.Commit{Now: t0, Writes: backend.Writes{InstanceUpsert: instance("running", 5)}},
		&backend.Commit{Now: t0, Writes: backend.Writes{InstanceUpsert: &backend.Instance{
			InstanceID: "done", Status: backend.StatusCompleted, CreatedAt: t0, Version: 8,
		}}},
		sendWork(t0, msg(1, 0, "running")))
	items := receiveWork(t, b, "A", 1, t0, time.Hour)
	wantItems(t, "receive", items, 1)

	cases := []struct {
		name string
		unit backend.Commit
	}{
		{"current fence", backend.Commit{Fence: &f}},
		{"matching version", backend.Commit{Instance: &backend.InstanceCondition{InstanceID: "running", ExpectVersion: 5}}},
		{"absent instance at version 0", backend.Commit{Instance: &backend.InstanceCondition{InstanceID: "absent", ExpectVersion: 0}}},
		{"create over a status not refused", backend.Commit{Create: &backend.CreateCondition{
			InstanceID: "done", RefuseStatuses: []backend.Status{backend.StatusPending, backend.StatusRunning},
		}}},
		{"create with no refused status", backend.Commit{Create: &backend.CreateCondition{InstanceID: "running"}}},
		{"create of an absent instance", backend.Commit{Create: &backend.CreateCondition{
			InstanceID: "absent", RefuseStatuses: []backend.Status{backend.StatusRunning},
		}}},
		{"held work item lock", backend.Commit{WorkItem: &backend.WorkItemLock{ID: items[0].ID, LockToken: items[0].LockToken}}},
		{"every condition", backend.Commit{
			Fence:    &f,
			Instance: &backend.InstanceCondition{InstanceID: "done", ExpectVersion: 8},
			Create:   &backend.CreateCondition{InstanceID: "done", RefuseStatuses: []backend.Status{backend.StatusRunning}},
		}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u := tc.unit
			id := fmt.Sprintf("accepted-%d", i)
			u.Now = sec(1)
			u.Writes = backend.Writes{InstanceUpsert: instance(id, 1)}
			if errs := commit(t, b, &u); errs[0] != nil {
				t.Fatalf("unit refused: %v", errs[0])
			}
			wantInstance(t, b, instance(id, 1))
		})
	}
	if l := lengths(metrics(t, b, sec(1))); l[1] != 0 {
		t.Errorf("work queue length after the completing commit = %d, want 0", l[1])
	}
}

func testCommitInstanceRoundTrip(t *testing.T, b backend.Backend) {
	createHub(t, b, 1)
	full := &backend.Instance{
		InstanceID:       "i1",
		Name:             "Orchestrator",
		ExecutionID:      "e1",
		Status:           backend.StatusFailed,
		Input:            []byte(`{"in":1}`),
		Output:           []byte(`{"out":2}`),
		CustomStatus:     []byte(`"custom"`),
		Failure:          []byte(`{"message":"boom"}`),
		CreatedAt:        t0,
		UpdatedAt:        sec(1),
		CompletedAt:      sec(2),
		ScheduledStartAt: sec(-3),
		ParentInstanceID: "parent",
		Version:          7,
	}
	mustCommit(t, b, &backend.Commit{Now: t0, Writes: backend.Writes{InstanceUpsert: full}})
	wantInstance(t, b, full)

	// An upsert replaces every field, including back to empty and zero.
	sparse := &backend.Instance{
		InstanceID:  "i1",
		Name:        "Orchestrator2",
		ExecutionID: "e2",
		Status:      backend.StatusPending,
		CreatedAt:   sec(5),
		UpdatedAt:   sec(6),
		Version:     0,
	}
	mustCommit(t, b, &backend.Commit{Now: sec(6), Writes: backend.Writes{InstanceUpsert: sparse}})
	got := getInstance(t, b, "i1")
	if d := instanceDiff(got, sparse); len(d) > 0 {
		t.Errorf("instance after the second upsert differs:\n%s", joinLines(d))
	}
	if !got.CompletedAt.IsZero() || !got.ScheduledStartAt.IsZero() {
		t.Errorf("zero times came back as CompletedAt %v, ScheduledStartAt %v", got.CompletedAt, got.ScheduledStartAt)
	}

	// The common case: a step keeps name and creation time and changes the
	// rest.
	step := *full
	step.Name, step.CreatedAt = sparse.Name, sparse.CreatedAt
	step.UpdatedAt, step.CompletedAt = sec(20), sec(21)
	mustCommit(t, b, &backend.Commit{Now: sec(20), Writes: backend.Writes{InstanceUpsert: &step}})
	wantInstance(t, b, &step)
}

// testCommitInstanceKeepVersion checks upserts with Version -1, which keep
// the stored version (0 for a new row).
func testCommitInstanceKeepVersion(t *testing.T, b backend.Backend) {
	createHub(t, b, 1)
	upsert := func(in *backend.Instance) {
		t.Helper()
		mustCommit(t, b, &backend.Commit{Now: in.UpdatedAt, Writes: backend.Writes{InstanceUpsert: in}})
	}
	fresh := instance("fresh", -1)
	upsert(fresh)
	fresh.Version = 0
	wantInstance(t, b, fresh)

	upsert(instance("i", 7))
	// Same name and creation time, new status and input.
	restart := instance("i", -1)
	restart.Status, restart.Input, restart.UpdatedAt = backend.StatusPending, []byte(`"again"`), sec(30)
	upsert(restart)
	restart.Version = 7
	wantInstance(t, b, restart)
	// Everything else new too.
	renamed := instance("i", -1)
	renamed.Name, renamed.CreatedAt, renamed.UpdatedAt = "Renamed", sec(40), sec(40)
	upsert(renamed)
	renamed.Version = 7
	wantInstance(t, b, renamed)
}

func testCommitHistory(t *testing.T, b backend.Backend) {
	createHub(t, b, 1)
	wantHistory(t, b, "i1", "")
	appendUnit := func(exec string, reset bool, seqs ...int64) *backend.Commit {
		return &backend.Commit{Now: t0, Writes: backend.Writes{History: &backend.HistoryAppend{
			InstanceID: "i1", ExecutionID: exec, Reset: reset, Events: events(seqs...),
		}}}
	}
	// Events come back in Seq order whatever order they were written in.
	mustCommit(t, b, appendUnit("e1", false, 3, 1, 2))
	wantHistory(t, b, "i1", "e1", 1, 2, 3)
	mustCommit(t, b, appendUnit("e1", false, 4), appendUnit("e1", false, 5, 6))
	wantHistory(t, b, "i1", "e1", 1, 2, 3, 4, 5, 6)
	// Another instance's history is separate.
	mustCommit(t, b, &backend.Commit{Now: t0, Writes: backend.Writes{History: &backend.HistoryAppend{
		InstanceID: "i2", ExecutionID: "x", Events: events(1),
	}}})
	// A new execution replaces the previous one's events.
	mustCommit(t, b, appendUnit("e2", true, 1, 2))
	wantHistory(t, b, "i1", "e2", 1, 2)
	wantHistory(t, b, "i2", "x", 1)
}

func testCommitPayloads(t *testing.T, b backend.Backend) {
	ctx := t.Context()
	createHub(t, b, 1)
	payload := func(key string, data []byte) *backend.Commit {
		return &backend.Commit{Now: t0, Writes: backend.Writes{Payloads: []*backend.Payload{{Key: key, InstanceID: "i1", Data: data}}}}
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 8<<10)
	mustCommit(t, b, payload("i1/a", []byte("alpha")), payload("i1/b", big))
	for key, want := range map[string][]byte{"i1/a": []byte("alpha"), "i1/b": big} {
		got, err := b.PayloadGet(ctx, key)
		if err != nil {
			t.Fatalf("PayloadGet(%q): %v", key, err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("PayloadGet(%q) returned %d bytes, want the %d written", key, len(got), len(want))
		}
	}
	if _, err := b.PayloadGet(ctx, "i1/missing"); !errors.Is(err, backend.ErrPayloadNotFound) {
		t.Errorf("PayloadGet of a missing key: got %v, want ErrPayloadNotFound", err)
	}
}

func testCommitControlSendDelete(t *testing.T, b backend.Backend) {
	createHub(t, b, 2)
	f0 := acquire(t, b, 0, "A")
	f1 := acquire(t, b, 1, "A")
	mustCommit(t, b, send(t0, msg(1, 1, "i1"), msg(2, 0, "i2"), msg(3, 0, "i3")))
	if l := lengths(metrics(t, b, t0)); !slices.Equal(l, []int{2, 1, 0}) {
		t.Fatalf("queue lengths = %v, want [2 1 0]", l)
	}
	wantMsgs(t, "receive of partition 1", receive(t, b, f1, 10, t0, time.Hour).Messages, 1)
	wantMsgs(t, "receive of partition 0", receive(t, b, f0, 10, t0, time.Hour).Messages, 2, 3)

	// A step consumes its messages with ControlDelete under its fence.
	mustCommit(t, b, &backend.Commit{Fence: &f0, Now: sec(1), Writes: backend.Writes{ControlDelete: []string{msgID(2)}}})
	if l := lengths(metrics(t, b, sec(1))); !slices.Equal(l, []int{1, 1, 0}) {
		t.Fatalf("queue lengths after deleting one message = %v, want [1 1 0]", l)
	}
	// A newer epoch sees the locked message that was not deleted, and not
	// the deleted one.
	f0 = acquire(t, b, 0, "B")
	wantMsgs(t, "receive by a newer epoch", receive(t, b, f0, 10, sec(2), time.Hour).Messages, 3)
}

func testCommitPoison(t *testing.T, b backend.Backend) {
	ctx := t.Context()
	createHub(t, b, 2)
	poison := func(n int, now time.Time) *backend.Commit {
		return &backend.Commit{Now: now, Writes: backend.Writes{Poison: []*backend.Poison{{
			ID: msgID(n), Queue: []string{"control", "workitem"}[n%2], Partition: n % 2, InstanceID: fmt.Sprintf("i%d", n),
			Data: msgData(n), DequeueCount: 10 + n, Reason: fmt.Sprintf("reason %d", n),
		}}}}
	}
	mustCommit(t, b, poison(1, t0), poison(2, sec(1)))
	mustCommit(t, b, poison(3, sec(2)))

	list, err := b.PoisonList(ctx, 2)
	if err != nil {
		t.Fatalf("PoisonList: %v", err)
	}
	if len(list) != 2 || list[0].ID != msgID(3) || list[1].ID != msgID(2) {
		t.Fatalf("PoisonList(2) = %v, want the newest two, newest first", poisonIDs(list))
	}
	list, err = b.PoisonList(ctx, 10)
	if err != nil {
		t.Fatalf("PoisonList: %v", err)
	}
	if len(list) != 3 {
		t.Fatalf("PoisonList(10) returned %d records, want 3", len(list))
	}
	for i, p := range list {
		n := 3 - i
		if p.ID != msgID(n) || p.Queue != []string{"control", "workitem"}[n%2] || p.Partition != n%2 ||
			p.InstanceID != fmt.Sprintf("i%d", n) || !bytes.Equal(p.Data, msgData(n)) ||
			p.DequeueCount != 10+n || p.Reason != fmt.Sprintf("reason %d", n) {
			t.Errorf("poison record %d = %+v, want the fields written for message %d", i, *p, n)
		}
		wantTime(t, "poison CreatedAt (the unit's Now)", p.CreatedAt, sec(n-1))
	}
}

func poisonIDs(list []*backend.Poison) []string {
	ids := make([]string, len(list))
	for i, p := range list {
		ids[i] = p.ID
	}
	return ids
}
