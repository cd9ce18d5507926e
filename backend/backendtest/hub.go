package backendtest

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/taskhub/taskhub/backend"
)

func testHubCreateOpen(t *testing.T, b backend.Backend) {
	ctx := t.Context()
	if _, err := b.HubGet(ctx); !errors.Is(err, backend.ErrHubNotFound) {
		t.Fatalf("HubGet before HubCreate: got %v, want ErrHubNotFound", err)
	}

	h, err := b.HubCreate(ctx, &backend.HubCreateParams{PartitionCount: 4, Now: t0})
	if err != nil {
		t.Fatalf("HubCreate: %v", err)
	}
	if h.Name == "" || h.PartitionCount != 4 {
		t.Errorf("HubCreate = {Name %q, PartitionCount %d}, want a name and 4 partitions", h.Name, h.PartitionCount)
	}
	wantTime(t, "HubCreate CreatedAt", h.CreatedAt, t0)

	// Opening an existing hub returns it as created, not as re-created.
	again, err := b.HubCreate(ctx, &backend.HubCreateParams{PartitionCount: 4, Now: sec(3600)})
	if err != nil {
		t.Fatalf("second HubCreate: %v", err)
	}
	if again.Name != h.Name || again.PartitionCount != 4 {
		t.Errorf("second HubCreate = {%q, %d}, want {%q, 4}", again.Name, again.PartitionCount, h.Name)
	}
	wantTime(t, "second HubCreate CreatedAt", again.CreatedAt, t0)

	_, err = b.HubCreate(ctx, &backend.HubCreateParams{PartitionCount: 8, Now: t0})
	var mismatch *backend.PartitionCountMismatchError
	if !errors.As(err, &mismatch) {
		t.Fatalf("HubCreate with 8 partitions on a 4-partition hub: got %v, want *PartitionCountMismatchError", err)
	}
	if mismatch.Stored != 4 || mismatch.Requested != 8 {
		t.Errorf("PartitionCountMismatchError = {Stored %d, Requested %d}, want {4, 8}", mismatch.Stored, mismatch.Requested)
	}
	if msg := err.Error(); !strings.Contains(msg, "4") || !strings.Contains(msg, "8") {
		t.Errorf("mismatch error %q does not name both partition counts", msg)
	}

	got, err := b.HubGet(ctx)
	if err != nil {
		t.Fatalf("HubGet: %v", err)
	}
	if got.Name != h.Name || got.PartitionCount != 4 {
		t.Errorf("HubGet = {%q, %d}, want {%q, 4}", got.Name, got.PartitionCount, h.Name)
	}
	wantTime(t, "HubGet CreatedAt", got.CreatedAt, t0)

	parts, err := b.PartitionList(ctx)
	if err != nil {
		t.Fatalf("PartitionList: %v", err)
	}
	if len(parts) != 4 {
		t.Fatalf("PartitionList returned %d partitions, want 4", len(parts))
	}
	for i, p := range parts {
		if p.Index != i || p.Owner != "" || p.Epoch != 0 || p.NextOwner != "" {
			t.Errorf("new partition %d = %+v, want index %d, no owner, epoch 0", i, *p, i)
		}
	}
}

func testHubDelete(t *testing.T, b backend.Backend) {
	ctx := t.Context()
	createHub(t, b, 4)
	f := acquire(t, b, 0, "A")
	mustCommit(t, b, &backend.Commit{
		Fence: &f,
		Now:   t0,
		Writes: backend.Writes{
			Payloads:       []*backend.Payload{{Key: "i1/p", InstanceID: "i1", Data: []byte("payload")}},
			History:        &backend.HistoryAppend{InstanceID: "i1", ExecutionID: "e1", Events: events(1, 2)},
			InstanceUpsert: instance("i1", 2),
			ControlSend:    []*backend.NewMessage{msg(1, 0, "i1")},
			WorkSend:       []*backend.NewMessage{msg(2, 0, "i1")},
		},
	})
	if err := b.WorkerHeartbeat(ctx, &backend.Worker{ID: "w1", Host: "h", StartedAt: t0, HeartbeatAt: t0}); err != nil {
		t.Fatalf("WorkerHeartbeat: %v", err)
	}

	if err := b.HubDelete(ctx); err != nil {
		t.Fatalf("HubDelete: %v", err)
	}
	if _, err := b.HubGet(ctx); !errors.Is(err, backend.ErrHubNotFound) {
		t.Fatalf("HubGet after HubDelete: got %v, want ErrHubNotFound", err)
	}
	if _, err := b.InstanceGet(ctx, "i1"); !errors.Is(err, backend.ErrInstanceNotFound) {
		t.Errorf("InstanceGet after HubDelete: got %v, want ErrInstanceNotFound", err)
	}
	if _, err := b.PayloadGet(ctx, "i1/p"); !errors.Is(err, backend.ErrPayloadNotFound) {
		t.Errorf("PayloadGet after HubDelete: got %v, want ErrPayloadNotFound", err)
	}
	wantHistory(t, b, "i1", "")

	// The hub can be created again, even with another partition count, and
	// it starts empty.
	createHub(t, b, 2)
	parts, err := b.PartitionList(ctx)
	if err != nil {
		t.Fatalf("PartitionList: %v", err)
	}
	if len(parts) != 2 || parts[0].Epoch != 0 || parts[0].Owner != "" {
		t.Fatalf("partitions of the re-created hub: %d rows, first %+v; want 2 fresh rows", len(parts), parts[0])
	}
	if l := lengths(metrics(t, b, t0)); !slices.Equal(l, []int{0, 0, 0}) {
		t.Errorf("queue lengths after re-create = %v, want all 0", l)
	}
	workers, err := b.WorkerList(ctx, &backend.WorkerListParams{})
	if err != nil {
		t.Fatalf("WorkerList: %v", err)
	}
	if len(workers) != 0 {
		t.Errorf("WorkerList after HubDelete returned %d workers, want 0", len(workers))
	}
}

func testPartitionLease(t *testing.T, b backend.Backend) {
	ctx := t.Context()
	createHub(t, b, 2)
	acq := func(owner string, expect int64, now time.Time) (*backend.Partition, error) {
		return b.PartitionAcquire(ctx, &backend.PartitionAcquireParams{
			Partition: 0, Owner: owner, ExpectEpoch: expect, Duration: 30 * time.Second, Now: now,
		})
	}
	renew := func(owner string, epoch int64, now time.Time) (*backend.Partition, error) {
		return b.PartitionRenew(ctx, &backend.PartitionRenewParams{
			Partition: 0, Owner: owner, Epoch: epoch, Duration: 30 * time.Second, Now: now,
		})
	}
	release := func(owner string, epoch int64, now time.Time) error {
		return b.PartitionRelease(ctx, &backend.PartitionReleaseParams{Partition: 0, Owner: owner, Epoch: epoch, Now: now})
	}
	row := func() *backend.Partition {
		t.Helper()
		parts, err := b.PartitionList(ctx)
		if err != nil {
			t.Fatalf("PartitionList: %v", err)
		}
		return parts[0]
	}
	wantRow := func(what string, p *backend.Partition, owner string, epoch int64, expires time.Time, next string) {
		t.Helper()
		if p.Index != 0 || p.Owner != owner || p.Epoch != epoch || p.NextOwner != next {
			t.Errorf("%s: partition = {Index %d, Owner %q, Epoch %d, NextOwner %q}, want {0, %q, %d, %q}",
				what, p.Index, p.Owner, p.Epoch, p.NextOwner, owner, epoch, next)
		}
		wantTime(t, what+": LeaseExpiresAt", p.LeaseExpiresAt, expires)
	}

	p, err := acq("A", 0, t0)
	if err != nil {
		t.Fatalf("acquire by A: %v", err)
	}
	wantRow("acquire by A", p, "A", 1, sec(30), "")
	wantRow("row after acquire by A", row(), "A", 1, sec(30), "")

	_, err = acq("B", 0, sec(1))
	wantErr(t, "acquire by B with a stale epoch", err, backend.ErrLeaseConflict)
	wantRow("row after refused acquire", row(), "A", 1, sec(30), "")

	if err := b.PartitionRequest(ctx, &backend.PartitionRequestParams{Partition: 0, Requester: "B"}); err != nil {
		t.Fatalf("PartitionRequest: %v", err)
	}
	wantRow("row after request by B", row(), "A", 1, sec(30), "B")

	p, err = renew("A", 1, sec(10))
	if err != nil {
		t.Fatalf("renew by A: %v", err)
	}
	wantRow("renew by A", p, "A", 1, sec(40), "B")

	_, err = renew("B", 1, sec(11))
	wantErr(t, "renew by another owner", err, backend.ErrLeaseLost)
	_, err = renew("A", 0, sec(11))
	wantErr(t, "renew with an old epoch", err, backend.ErrLeaseLost)
	_, err = renew("A", 2, sec(11))
	wantErr(t, "renew with a future epoch", err, backend.ErrLeaseLost)

	p, err = acq("B", 1, sec(20))
	if err != nil {
		t.Fatalf("acquire by B: %v", err)
	}
	wantRow("acquire by B", p, "B", 2, sec(50), "")
	wantRow("row after acquire by B (clears NextOwner)", row(), "B", 2, sec(50), "")

	_, err = renew("A", 1, sec(21))
	wantErr(t, "renew by the previous owner", err, backend.ErrLeaseLost)
	wantErr(t, "release by the previous owner", release("A", 1, sec(21)), backend.ErrLeaseLost)
	wantErr(t, "release by another owner at the current epoch", release("A", 2, sec(21)), backend.ErrLeaseLost)
	wantRow("row after refused releases", row(), "B", 2, sec(50), "")

	if err := release("B", 2, sec(25)); err != nil {
		t.Fatalf("release by B: %v", err)
	}
	// Release clears the owner and expires the lease now; the epoch stays.
	wantRow("row after release", row(), "", 2, sec(25), "")
	wantErr(t, "second release", release("B", 2, sec(26)), backend.ErrLeaseLost)
	_, err = renew("B", 2, sec(26))
	wantErr(t, "renew after release", err, backend.ErrLeaseLost)

	p, err = acq("A", 2, sec(30))
	if err != nil {
		t.Fatalf("acquire after release: %v", err)
	}
	wantRow("acquire after release", p, "A", 3, sec(60), "")

	parts, err := b.PartitionList(ctx)
	if err != nil {
		t.Fatalf("PartitionList: %v", err)
	}
	if o := parts[1]; o.Index != 1 || o.Owner != "" || o.Epoch != 0 || o.NextOwner != "" {
		t.Errorf("partition 1 changed: %+v", *o)
	}
}

// testPartitionRenewExpired checks that a lease is not renewed once it has
// expired: another worker may already be taking it over.
func testPartitionRenewExpired(t *testing.T, b backend.Backend) {
	ctx := t.Context()
	createHub(t, b, 1)
	p, err := b.PartitionAcquire(ctx, &backend.PartitionAcquireParams{Partition: 0, Owner: "A", Duration: 30 * time.Second, Now: t0})
	if err != nil {
		t.Fatalf("acquire: %v", err)
	}
	_, err = b.PartitionRenew(ctx, &backend.PartitionRenewParams{Partition: 0, Owner: "A", Epoch: p.Epoch, Duration: 30 * time.Second, Now: sec(31)})
	wantErr(t, "renew after the lease expired", err, backend.ErrLeaseLost)
	parts, err := b.PartitionList(ctx)
	if err != nil {
		t.Fatalf("PartitionList: %v", err)
	}
	if got := parts[0]; got.Owner != "A" || got.Epoch != p.Epoch || !got.LeaseExpiresAt.Equal(sec(30)) {
		t.Errorf("refused renew changed the row: %+v", *got)
	}
	// The holder takes it back the way anyone would: by acquiring.
	p, err = b.PartitionAcquire(ctx, &backend.PartitionAcquireParams{Partition: 0, Owner: "A", ExpectEpoch: p.Epoch, Duration: 30 * time.Second, Now: sec(32)})
	if err != nil {
		t.Fatalf("re-acquire after expiry: %v", err)
	}
	if _, err := b.PartitionRenew(ctx, &backend.PartitionRenewParams{Partition: 0, Owner: "A", Epoch: p.Epoch, Duration: 30 * time.Second, Now: sec(40)}); err != nil {
		t.Fatalf("renew of the re-acquired lease: %v", err)
	}
}

func testWorkers(t *testing.T, b backend.Backend) {
	ctx := t.Context()
	w1 := &backend.Worker{ID: "w1", Host: "host-1", StartedAt: t0, HeartbeatAt: t0, Partitions: []int{0, 2}, Info: []byte(`{"cpu":1}`)}
	w2 := &backend.Worker{ID: "w2", Host: "host-2", StartedAt: sec(1), HeartbeatAt: sec(10)}
	for _, w := range []*backend.Worker{w1, w2} {
		if err := b.WorkerHeartbeat(ctx, w); err != nil {
			t.Fatalf("WorkerHeartbeat(%s): %v", w.ID, err)
		}
	}
	list := func(since time.Time) []*backend.Worker {
		t.Helper()
		ws, err := b.WorkerList(ctx, &backend.WorkerListParams{Since: since})
		if err != nil {
			t.Fatalf("WorkerList(since %v): %v", since, err)
		}
		slices.SortFunc(ws, func(a, b *backend.Worker) int { return strings.Compare(a.ID, b.ID) })
		return ws
	}
	wantWorkers := func(what string, got []*backend.Worker, want ...*backend.Worker) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s: %d workers %v, want %d", what, len(got), workerIDs(got), len(want))
		}
		for i, w := range want {
			g := got[i]
			if g.ID != w.ID || g.Host != w.Host || !slices.Equal(g.Partitions, w.Partitions) || !bytes.Equal(g.Info, w.Info) ||
				!g.StartedAt.Equal(w.StartedAt) || !g.HeartbeatAt.Equal(w.HeartbeatAt) {
				t.Errorf("%s: worker %d = %+v, want %+v", what, i, *g, *w)
			}
		}
	}

	wantWorkers("all workers", list(time.Time{}), w1, w2)
	wantWorkers("workers since 5s", list(sec(5)), w2)

	w1 = &backend.Worker{ID: "w1", Host: "host-1", StartedAt: t0, HeartbeatAt: sec(20), Partitions: []int{1}, Info: []byte(`{"cpu":2}`)}
	if err := b.WorkerHeartbeat(ctx, w1); err != nil {
		t.Fatalf("second WorkerHeartbeat(w1): %v", err)
	}
	wantWorkers("workers since 5s after a heartbeat", list(sec(5)), w1, w2)
	wantWorkers("workers since 15s", list(sec(15)), w1)

	if err := b.WorkerRemove(ctx, "w1"); err != nil {
		t.Fatalf("WorkerRemove: %v", err)
	}
	wantWorkers("workers after remove", list(time.Time{}), w2)
}

func workerIDs(ws []*backend.Worker) []string {
	ids := make([]string, len(ws))
	for i, w := range ws {
		ids[i] = w.ID
	}
	return ids
}

func testClose(t *testing.T, b backend.Backend) {
	createHub(t, b, 1)
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// testLargeMessage sends the largest message the backend takes (64 KiB when
// it sets no limit) and checks it comes back intact, along with the
// capability flags' sanity.
func testLargeMessage(t *testing.T, b backend.Backend) {
	caps := b.Capabilities()
	if caps.MaxMessageSize < 0 {
		t.Fatalf("Capabilities().MaxMessageSize = %d, want >= 0", caps.MaxMessageSize)
	}
	if b.Capabilities() != caps {
		t.Fatalf("Capabilities changed between calls")
	}
	size := caps.MaxMessageSize
	if size == 0 {
		size = 64 << 10
	}
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i*7 + i>>8)
	}
	createHub(t, b, 1)
	f := acquire(t, b, 0, "A")
	mustCommit(t, b,
		send(t0, &backend.NewMessage{ID: msgID(1), InstanceID: "i", Data: data}),
		sendWork(t0, &backend.NewMessage{ID: msgID(2), InstanceID: "i", Data: data}))
	res := receive(t, b, f, 1, t0, time.Minute)
	if len(res.Messages) != 1 || !bytes.Equal(res.Messages[0].Data, data) {
		t.Fatalf("control message of %d bytes did not round-trip", size)
	}
	items := receiveWork(t, b, "A", 1, t0, time.Minute)
	if len(items) != 1 || !bytes.Equal(items[0].Data, data) {
		t.Fatalf("work item of %d bytes did not round-trip", size)
	}
}
