package backendtest

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/taskhub/taskhub/backend"
)

func testInstanceGetMissing(t *testing.T, b backend.Backend) {
	createHub(t, b, 1)
	if _, err := b.InstanceGet(t.Context(), "missing"); !errors.Is(err, backend.ErrInstanceNotFound) {
		t.Fatalf("InstanceGet of a missing instance: got %v, want ErrInstanceNotFound", err)
	}
}

// upserts returns one unit per instance.
func upserts(ins ...*backend.Instance) []*backend.Commit {
	units := make([]*backend.Commit, len(ins))
	for i, in := range ins {
		units[i] = &backend.Commit{Now: in.CreatedAt, Writes: backend.Writes{InstanceUpsert: in}}
	}
	return units
}

func row(id, name string, status backend.Status, created time.Time) *backend.Instance {
	return &backend.Instance{InstanceID: id, Name: name, ExecutionID: "e", Status: status, CreatedAt: created, UpdatedAt: created}
}

// listAll pages through InstanceList and returns the IDs in order, failing
// on a repeated ID.
func listAll(t *testing.T, b backend.Backend, filter backend.InstanceFilter, pageSize int) (ids []string, pages int) {
	t.Helper()
	token := ""
	for {
		res, err := b.InstanceList(t.Context(), &backend.InstanceListParams{Filter: filter, PageSize: pageSize, ContinuationToken: token})
		if err != nil {
			t.Fatalf("InstanceList: %v", err)
		}
		pages++
		want := pageSize
		if want == 0 {
			want = 100
		}
		if len(res.Instances) > want {
			t.Fatalf("InstanceList page %d has %d instances, more than the page size %d", pages, len(res.Instances), want)
		}
		for _, in := range res.Instances {
			if slices.Contains(ids, in.InstanceID) {
				t.Fatalf("InstanceList returned %q twice", in.InstanceID)
			}
			ids = append(ids, in.InstanceID)
		}
		if res.ContinuationToken == "" {
			return ids, pages
		}
		if pages > 1000 {
			t.Fatalf("InstanceList did not end after %d pages", pages)
		}
		token = res.ContinuationToken
	}
}

func testInstanceListFilters(t *testing.T, b backend.Backend) {
	createHub(t, b, 1)
	mustCommit(t, b, upserts(
		row("app-1", "A", backend.StatusRunning, t0),
		row("app-2", "A", backend.StatusCompleted, sec(3600)),
		row("bee-1", "B", backend.StatusFailed, sec(7200)),
		row("bee-2", "B", backend.StatusRunning, sec(10800)),
		row("cat-1", "A", backend.StatusPending, sec(14400)),
		row("app", "C", backend.StatusTerminated, sec(18000)),
	)...)

	cases := []struct {
		name   string
		filter backend.InstanceFilter
		want   []string
	}{
		{"no filter", backend.InstanceFilter{}, []string{"app", "app-1", "app-2", "bee-1", "bee-2", "cat-1"}},
		{"one status", backend.InstanceFilter{Statuses: []backend.Status{backend.StatusRunning}}, []string{"app-1", "bee-2"}},
		{"two statuses", backend.InstanceFilter{Statuses: []backend.Status{backend.StatusCompleted, backend.StatusFailed}}, []string{"app-2", "bee-1"}},
		{"created from (inclusive)", backend.InstanceFilter{CreatedFrom: sec(7200)}, []string{"app", "bee-1", "bee-2", "cat-1"}},
		{"created to (exclusive)", backend.InstanceFilter{CreatedTo: sec(7200)}, []string{"app-1", "app-2"}},
		{"created range", backend.InstanceFilter{CreatedFrom: sec(3600), CreatedTo: sec(10800)}, []string{"app-2", "bee-1"}},
		{"name", backend.InstanceFilter{Name: "A"}, []string{"app-1", "app-2", "cat-1"}},
		{"name without match", backend.InstanceFilter{Name: "Z"}, nil},
		{"ID prefix", backend.InstanceFilter{InstanceIDPrefix: "bee-"}, []string{"bee-1", "bee-2"}},
		{"ID prefix equal to an ID", backend.InstanceFilter{InstanceIDPrefix: "app"}, []string{"app", "app-1", "app-2"}},
		{"ID prefix with wildcard characters", backend.InstanceFilter{InstanceIDPrefix: "a%"}, nil},
		{"everything", backend.InstanceFilter{
			Statuses:         []backend.Status{backend.StatusRunning, backend.StatusCompleted},
			CreatedFrom:      t0,
			CreatedTo:        sec(3601),
			Name:             "A",
			InstanceIDPrefix: "app-",
		}, []string{"app-1", "app-2"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, _ := listAll(t, b, tc.filter, 0)
			if !slices.Equal(got, tc.want) {
				t.Errorf("InstanceList = %q, want %q", got, tc.want)
			}
		})
	}
}

func testInstanceListPaging(t *testing.T, b backend.Backend) {
	createHub(t, b, 1)
	var ins []*backend.Instance
	var want, completed []string
	for i := range 250 {
		// Written in a scrambled order so that paging cannot lean on
		// insertion order.
		n := (i * 97) % 250
		id := fmt.Sprintf("inst-%04d", n)
		status := backend.StatusRunning
		if n%2 == 0 {
			status = backend.StatusCompleted
		}
		ins = append(ins, row(id, "Orch", status, sec(n)))
	}
	for n := range 250 {
		id := fmt.Sprintf("inst-%04d", n)
		want = append(want, id)
		if n%2 == 0 {
			completed = append(completed, id)
		}
	}
	mustCommit(t, b, upserts(ins...)...)

	got, pages := listAll(t, b, backend.InstanceFilter{}, 100)
	if !slices.Equal(got, want) {
		t.Errorf("paged InstanceList returned %d IDs (first %q), want all 250 exactly once in order", len(got), first(got))
	}
	if pages != 3 {
		t.Errorf("250 instances in pages of 100 took %d pages, want 3", pages)
	}

	res, err := b.InstanceList(t.Context(), &backend.InstanceListParams{})
	if err != nil {
		t.Fatalf("InstanceList: %v", err)
	}
	if len(res.Instances) != 100 || res.ContinuationToken == "" {
		t.Errorf("default page: %d instances, token %q; want 100 and a token", len(res.Instances), res.ContinuationToken)
	}

	got, _ = listAll(t, b, backend.InstanceFilter{Statuses: []backend.Status{backend.StatusCompleted}}, 100)
	if !slices.Equal(got, completed) {
		t.Errorf("paged filtered InstanceList returned %d IDs, want the %d completed ones in order", len(got), len(completed))
	}
	got, _ = listAll(t, b, backend.InstanceFilter{InstanceIDPrefix: "inst-01"}, 7)
	if len(got) != 100 || got[0] != "inst-0100" || got[99] != "inst-0199" {
		t.Errorf("prefix inst-01 in pages of 7: %d IDs from %q; want inst-0100..inst-0199", len(got), first(got))
	}
}

func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

func testInstancePurgeByID(t *testing.T, b backend.Backend) {
	ctx := t.Context()
	createHub(t, b, 1)
	done := row("done", "Orch", backend.StatusCompleted, t0)
	withEverything := func(id string, n int) *backend.Commit {
		return &backend.Commit{Now: t0, Writes: backend.Writes{
			Payloads:    []*backend.Payload{{Key: id + "/p", InstanceID: id, Data: []byte("payload")}},
			History:     &backend.HistoryAppend{InstanceID: id, ExecutionID: "e", Events: events(1, 2)},
			ControlSend: []*backend.NewMessage{msg(n, 0, id)},
			WorkSend:    []*backend.NewMessage{msg(n+1, 0, id)},
		}}
	}
	units := append(upserts(done, row("running", "Orch", backend.StatusRunning, t0), row("kept", "Orch", backend.StatusCompleted, t0)),
		withEverything("done", 1), withEverything("running", 3), withEverything("kept", 5))
	mustCommit(t, b, units...)

	_, err := b.InstancePurge(ctx, &backend.InstancePurgeParams{InstanceID: "missing"})
	wantErr(t, "purge of a missing instance", err, backend.ErrInstanceNotFound)
	_, err = b.InstancePurge(ctx, &backend.InstancePurgeParams{InstanceID: "running"})
	wantErr(t, "purge of a running instance", err, backend.ErrInstanceNotFinished)
	getInstance(t, b, "running")

	n, err := b.InstancePurge(ctx, &backend.InstancePurgeParams{InstanceID: "done"})
	if err != nil || n != 1 {
		t.Fatalf("purge of a completed instance = %d, %v; want 1, nil", n, err)
	}
	if _, err := b.InstanceGet(ctx, "done"); !errors.Is(err, backend.ErrInstanceNotFound) {
		t.Errorf("InstanceGet after purge: got %v, want ErrInstanceNotFound", err)
	}
	wantHistory(t, b, "done", "")
	if _, err := b.PayloadGet(ctx, "done/p"); !errors.Is(err, backend.ErrPayloadNotFound) {
		t.Errorf("PayloadGet after purge: got %v, want ErrPayloadNotFound", err)
	}
	if l := lengths(metrics(t, b, t0)); !slices.Equal(l, []int{2, 2}) {
		t.Errorf("queue lengths after purge = %v, want [2 2]: the purged instance's messages go, the others stay", l)
	}
	// Everything of the other instances is untouched.
	for _, id := range []string{"running", "kept"} {
		getInstance(t, b, id)
		wantHistory(t, b, id, "e", 1, 2)
		if _, err := b.PayloadGet(ctx, id+"/p"); err != nil {
			t.Errorf("PayloadGet(%s/p) after purging another instance: %v", id, err)
		}
	}
	f := acquire(t, b, 0, "A")
	wantMsgs(t, "control messages left", receive(t, b, f, 10, t0, time.Hour).Messages, 3, 5)
	wantItems(t, "work items left", receiveWork(t, b, "A", 10, t0, time.Hour), 4, 6)
}

func testInstancePurgeByFilter(t *testing.T, b backend.Backend) {
	ctx := t.Context()
	createHub(t, b, 1)
	var ins []*backend.Instance
	for i := range 5 {
		ins = append(ins, row(fmt.Sprintf("old-%d", i), "Orch", backend.StatusCompleted, t0))
	}
	ins = append(ins,
		row("old-running", "Orch", backend.StatusRunning, t0),
		row("run-1", "Orch", backend.StatusRunning, t0),
		row("fail-1", "Orch", backend.StatusFailed, sec(3600)),
		row("term-1", "X", backend.StatusTerminated, sec(3600)),
		row("cont-1", "Orch", backend.StatusContinuedAsNew, t0),
	)
	mustCommit(t, b, upserts(ins...)...)
	mustCommit(t, b, &backend.Commit{Now: t0, Writes: backend.Writes{
		History: &backend.HistoryAppend{InstanceID: "old-0", ExecutionID: "e", Events: events(1)},
	}})
	purge := func(p backend.InstancePurgeParams) int {
		t.Helper()
		n, err := b.InstancePurge(ctx, &p)
		if err != nil {
			t.Fatalf("InstancePurge(%+v): %v", p, err)
		}
		return n
	}

	if n := purge(backend.InstancePurgeParams{Filter: backend.InstanceFilter{Statuses: []backend.Status{backend.StatusRunning}}}); n != 0 {
		t.Errorf("purge filtered on Running purged %d, want 0: unfinished instances are never purged", n)
	}
	prefix := backend.InstanceFilter{InstanceIDPrefix: "old-"}
	if n := purge(backend.InstancePurgeParams{Filter: prefix, Limit: 3}); n != 3 {
		t.Errorf("purge with Limit 3 purged %d, want 3", n)
	}
	if n := purge(backend.InstancePurgeParams{Filter: prefix}); n != 2 {
		t.Errorf("second purge purged %d, want the 2 left", n)
	}
	if got, _ := listAll(t, b, prefix, 0); !slices.Equal(got, []string{"old-running"}) {
		t.Errorf("instances left with prefix old-: %q, want only old-running", got)
	}
	wantHistory(t, b, "old-0", "")
	if n := purge(backend.InstancePurgeParams{Filter: backend.InstanceFilter{Name: "X"}}); n != 1 {
		t.Errorf("purge by name purged %d, want 1", n)
	}
	if n := purge(backend.InstancePurgeParams{}); n != 1 {
		t.Errorf("purge of every finished instance purged %d, want 1 (fail-1)", n)
	}
	got, _ := listAll(t, b, backend.InstanceFilter{}, 0)
	if !slices.Equal(got, []string{"cont-1", "old-running", "run-1"}) {
		t.Errorf("instances left = %q, want the unfinished ones", got)
	}
}

func testQueueMetrics(t *testing.T, b backend.Backend) {
	createHub(t, b, 2)
	f := acquire(t, b, 0, "A")
	delayed := msg(3, 0, "i3")
	delayed.VisibleAt = sec(3600)
	mustCommit(t, b, send(t0, msg(1, 0, "i1")), sendWork(sec(1), msg(11, 0, "i1")))
	mustCommit(t, b, send(sec(1), msg(2, 0, "i2")), sendWork(sec(2), msg(12, 0, "i2")))
	mustCommit(t, b, send(sec(2), delayed))
	wantItems(t, "receive the oldest work item", receiveWork(t, b, "A", 1, sec(3), time.Hour), 11)

	wantStat := func(what string, got backend.QueueStat, length int, oldest time.Time) {
		t.Helper()
		if got.Length != length {
			t.Errorf("%s: Length = %d, want %d", what, got.Length, length)
		}
		wantTime(t, what+": OldestEnqueued", got.OldestEnqueued, oldest)
		wantTime(t, what+": OldestVisibleAt", got.OldestVisibleAt, oldest)
	}
	// Length counts every message, locked and delayed ones too; the oldest
	// times consider only what is visible now.
	m := metrics(t, b, sec(5))
	if len(m.Control) != 2 {
		t.Fatalf("QueueMetrics has %d control queues, want 2", len(m.Control))
	}
	wantStat("partition 0", m.Control[0], 3, t0)
	wantStat("partition 1", m.Control[1], 0, time.Time{})
	wantStat("work items", m.Work, 2, sec(2))

	wantMsgs(t, "receive the oldest control message", receive(t, b, f, 1, sec(5), time.Hour).Messages, 1)
	m = metrics(t, b, sec(6))
	wantStat("partition 0 with its oldest message locked", m.Control[0], 3, sec(1))

	m = metrics(t, b, sec(7200))
	wantStat("partition 0 once every lock and delay passed", m.Control[0], 3, t0)
	wantStat("work items once every lock passed", m.Work, 2, sec(1))
}
