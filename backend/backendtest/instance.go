package backendtest

import (
	"errors"
	"fmt"
	"slices"
	"sync"
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

// testInstanceListExcludePrefix checks InstanceFilter.ExcludeInstanceIDPrefix
// in listings: entity IDs start with '@', and orchestration queries exclude
// them. No character of the prefix is a wildcard.
func testInstanceListExcludePrefix(t *testing.T, b backend.Backend) {
	createHub(t, b, 1)
	mustCommit(t, b, upserts(
		row("@", "E", backend.StatusRunning, t0),
		row("@counter@a", "counter", backend.StatusRunning, t0),
		row("@counter@b", "counter", backend.StatusCompleted, t0),
		row("a%1", "A", backend.StatusRunning, sec(1)),
		row("a_1", "A", backend.StatusCompleted, sec(2)),
		row("ab1", "A", backend.StatusRunning, sec(3)),
		row("app-1", "A", backend.StatusRunning, sec(4)),
		row("orch-1", "B", backend.StatusRunning, sec(5)),
	)...)

	all := []string{"@", "@counter@a", "@counter@b", "a%1", "a_1", "ab1", "app-1", "orch-1"}
	cases := []struct {
		name   string
		filter backend.InstanceFilter
		want   []string
	}{
		{"exclude @", backend.InstanceFilter{ExcludeInstanceIDPrefix: "@"}, []string{"a%1", "a_1", "ab1", "app-1", "orch-1"}},
		{"only @", backend.InstanceFilter{InstanceIDPrefix: "@"}, []string{"@", "@counter@a", "@counter@b"}},
		{"exclude a longer prefix", backend.InstanceFilter{ExcludeInstanceIDPrefix: "@counter@"}, []string{"@", "a%1", "a_1", "ab1", "app-1", "orch-1"}},
		{"exclude a prefix equal to an ID", backend.InstanceFilter{ExcludeInstanceIDPrefix: "ab1"}, []string{"@", "@counter@a", "@counter@b", "a%1", "a_1", "app-1", "orch-1"}},
		{"exclude a prefix with _", backend.InstanceFilter{ExcludeInstanceIDPrefix: "a_"}, []string{"@", "@counter@a", "@counter@b", "a%1", "ab1", "app-1", "orch-1"}},
		{"exclude a prefix with %", backend.InstanceFilter{ExcludeInstanceIDPrefix: "a%"}, []string{"@", "@counter@a", "@counter@b", "a_1", "ab1", "app-1", "orch-1"}},
		{"exclude a wildcard matching nothing literally", backend.InstanceFilter{ExcludeInstanceIDPrefix: "%"}, all},
		{"exclude a prefix after every ID", backend.InstanceFilter{ExcludeInstanceIDPrefix: "\U0010FFFF"}, all},
		{"exclude everything", backend.InstanceFilter{InstanceIDPrefix: "@counter", ExcludeInstanceIDPrefix: "@"}, nil},
		{"prefix and exclude", backend.InstanceFilter{InstanceIDPrefix: "a", ExcludeInstanceIDPrefix: "ap"}, []string{"a%1", "a_1", "ab1"}},
		{"exclude with other filters", backend.InstanceFilter{
			ExcludeInstanceIDPrefix: "@",
			Statuses:                []backend.Status{backend.StatusRunning, backend.StatusCompleted},
			Name:                    "A",
			CreatedFrom:             sec(2),
		}, []string{"a_1", "ab1", "app-1"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, _ := listAll(t, b, tc.filter, 0)
			if !slices.Equal(got, tc.want) {
				t.Errorf("InstanceList = %q, want %q", got, tc.want)
			}
		})
	}
	got, pages := listAll(t, b, backend.InstanceFilter{ExcludeInstanceIDPrefix: "@"}, 2)
	if want := []string{"a%1", "a_1", "ab1", "app-1", "orch-1"}; !slices.Equal(got, want) || pages != 3 {
		t.Errorf("InstanceList excluding @ in pages of 2 = %q in %d pages, want %q in 3", got, pages, want)
	}
}

// testInstancePurgeExcludePrefix checks ExcludeInstanceIDPrefix in filtered
// purges.
func testInstancePurgeExcludePrefix(t *testing.T, b backend.Backend) {
	ctx := t.Context()
	createHub(t, b, 1)
	mustCommit(t, b, upserts(
		row("@counter@a", "counter", backend.StatusCompleted, t0),
		row("@counter@b", "counter", backend.StatusCompleted, t0),
		row("a%1", "A", backend.StatusCompleted, t0),
		row("a_1", "A", backend.StatusCompleted, t0),
		row("ab1", "A", backend.StatusCompleted, t0),
		row("orch-1", "B", backend.StatusFailed, t0),
		row("orch-2", "B", backend.StatusRunning, t0),
	)...)
	purge := func(p backend.InstancePurgeParams) int {
		t.Helper()
		n, err := b.InstancePurge(ctx, &p)
		if err != nil {
			t.Fatalf("InstancePurge(%+v): %v", p, err)
		}
		return n
	}
	left := func(want ...string) {
		t.Helper()
		if got, _ := listAll(t, b, backend.InstanceFilter{}, 0); !slices.Equal(got, want) {
			t.Fatalf("instances left = %q, want %q", got, want)
		}
	}

	// '_' and '%' are not wildcards: only a_1 and a%1 are excluded.
	if n := purge(backend.InstancePurgeParams{Filter: backend.InstanceFilter{InstanceIDPrefix: "a", ExcludeInstanceIDPrefix: "a_"}, Limit: 1}); n != 1 {
		t.Errorf("purge of prefix a excluding a_ with Limit 1 purged %d, want 1", n)
	}
	left("@counter@a", "@counter@b", "a_1", "ab1", "orch-1", "orch-2")
	if n := purge(backend.InstancePurgeParams{Filter: backend.InstanceFilter{InstanceIDPrefix: "a", ExcludeInstanceIDPrefix: "a%"}}); n != 2 {
		t.Errorf("purge of prefix a excluding a%% purged %d, want 2 (a_1, ab1)", n)
	}
	left("@counter@a", "@counter@b", "orch-1", "orch-2")
	if n := purge(backend.InstancePurgeParams{Filter: backend.InstanceFilter{ExcludeInstanceIDPrefix: "@"}}); n != 1 {
		t.Errorf("purge excluding @ purged %d, want 1 (orch-1)", n)
	}
	left("@counter@a", "@counter@b", "orch-2")
	if n := purge(backend.InstancePurgeParams{Filter: backend.InstanceFilter{InstanceIDPrefix: "@", ExcludeInstanceIDPrefix: "@counter@b"}}); n != 1 {
		t.Errorf("purge of prefix @ excluding @counter@b purged %d, want 1", n)
	}
	left("@counter@b", "orch-2")
}

// withQueued is a unit that stores, for instance id, a payload, history,
// two control messages (numbered n and n+1) and a work item (n+2).
func withQueued(id string, n int) *backend.Commit {
	return &backend.Commit{Now: t0, Writes: backend.Writes{
		Payloads:    []*backend.Payload{{Key: id + "/p", InstanceID: id, Data: []byte("payload")}},
		History:     &backend.HistoryAppend{InstanceID: id, ExecutionID: "e", Events: events(1)},
		ControlSend: []*backend.NewMessage{msg(n, 0, id), msg(n+1, 0, id)},
		WorkSend:    []*backend.NewMessage{msg(n+2, 0, id)},
	}}
}

// testInstancePurgeExpectVersion checks InstancePurgeParams.ExpectVersion:
// a stale version refuses the purge and deletes nothing.
func testInstancePurgeExpectVersion(t *testing.T, b backend.Backend) {
	ctx := t.Context()
	createHub(t, b, 1)
	done := row("@e@done", "e", backend.StatusCompleted, t0)
	done.Version = 5
	running := row("@e@running", "e", backend.StatusRunning, t0)
	running.Version = 3
	mustCommit(t, b, append(upserts(done, running), withQueued(done.InstanceID, 1))...)

	unchanged := func(what string) {
		t.Helper()
		wantInstance(t, b, done)
		wantHistory(t, b, done.InstanceID, "e", 1)
		if _, err := b.PayloadGet(ctx, done.InstanceID+"/p"); err != nil {
			t.Errorf("%s: PayloadGet: %v", what, err)
		}
		if l := lengths(metrics(t, b, t0)); !slices.Equal(l, []int{2, 1}) {
			t.Errorf("%s: queue lengths = %v, want [2 1]: nothing may be deleted", what, l)
		}
	}
	for _, v := range []int64{4, 6} {
		_, err := b.InstancePurge(ctx, &backend.InstancePurgeParams{InstanceID: done.InstanceID, ExpectVersion: v})
		wantErr(t, fmt.Sprintf("purge of a version-5 instance expecting version %d", v), err, backend.ErrVersionConflict)
		unchanged(fmt.Sprintf("after the refused purge expecting version %d", v))
	}
	if _, err := b.InstancePurge(ctx, &backend.InstancePurgeParams{InstanceID: done.InstanceID, ExpectVersion: -1}); err == nil {
		t.Errorf("purge with ExpectVersion -1 succeeded, want an error")
	}
	unchanged("after the purge with ExpectVersion -1")

	// The version is checked before the status.
	_, err := b.InstancePurge(ctx, &backend.InstancePurgeParams{InstanceID: running.InstanceID, ExpectVersion: 2})
	wantErr(t, "purge of a running version-3 instance expecting version 2", err, backend.ErrVersionConflict)
	_, err = b.InstancePurge(ctx, &backend.InstancePurgeParams{InstanceID: running.InstanceID, ExpectVersion: 3})
	wantErr(t, "purge of a running version-3 instance expecting version 3", err, backend.ErrInstanceNotFinished)
	wantInstance(t, b, running)
	_, err = b.InstancePurge(ctx, &backend.InstancePurgeParams{InstanceID: "@e@missing", ExpectVersion: 1})
	wantErr(t, "purge of a missing instance expecting version 1", err, backend.ErrInstanceNotFound)

	n, err := b.InstancePurge(ctx, &backend.InstancePurgeParams{InstanceID: done.InstanceID, ExpectVersion: 5})
	if err != nil || n != 1 {
		t.Fatalf("purge of a version-5 instance expecting version 5 = %d, %v; want 1, nil", n, err)
	}
	if _, err := b.InstanceGet(ctx, done.InstanceID); !errors.Is(err, backend.ErrInstanceNotFound) {
		t.Errorf("InstanceGet after purge: got %v, want ErrInstanceNotFound", err)
	}
	wantHistory(t, b, done.InstanceID, "")
	if _, err := b.PayloadGet(ctx, done.InstanceID+"/p"); !errors.Is(err, backend.ErrPayloadNotFound) {
		t.Errorf("PayloadGet after purge: got %v, want ErrPayloadNotFound", err)
	}
	if l := lengths(metrics(t, b, t0)); !slices.Equal(l, []int{0, 0}) {
		t.Errorf("queue lengths after purge = %v, want [0 0]", l)
	}
}

// testInstancePurgeExpectVersionRace races a purge expecting version 1
// against a commit conditional on version 1 that writes version 2: exactly
// one of them applies, so a commit is never lost to a purge that checked the
// version before it.
func testInstancePurgeExpectVersionRace(t *testing.T, b backend.Backend) {
	const rounds = 40
	ctx := t.Context()
	createHub(t, b, 1)
	commits, purges := 0, 0
	for r := range rounds {
		id := fmt.Sprintf("@race@%02d", r)
		v1 := row(id, "e", backend.StatusCompleted, t0)
		v1.Version = 1
		mustCommit(t, b, upserts(v1)...)
		v2 := row(id, "e", backend.StatusCompleted, t0)
		v2.Version = 2
		v2.UpdatedAt = sec(1)

		var (
			wg              sync.WaitGroup
			commitErr, cerr error
			purgeErr        error
			purged          int
			commitErrs      []error
			start           = make(chan struct{})
		)
		wg.Go(func() {
			<-start
			commitErrs, cerr = b.CommitBatch(ctx, []*backend.Commit{{
				Now:      sec(1),
				Instance: &backend.InstanceCondition{InstanceID: id, ExpectVersion: 1},
				Writes:   backend.Writes{InstanceUpsert: v2},
			}})
			if cerr == nil && len(commitErrs) == 1 {
				commitErr = commitErrs[0]
			}
		})
		wg.Go(func() {
			<-start
			purged, purgeErr = b.InstancePurge(ctx, &backend.InstancePurgeParams{InstanceID: id, ExpectVersion: 1})
		})
		close(start)
		wg.Wait()
		if cerr != nil || len(commitErrs) != 1 {
			t.Fatalf("round %d: CommitBatch = %v, %v", r, commitErrs, cerr)
		}
		in, getErr := b.InstanceGet(ctx, id)
		switch {
		case commitErr == nil && purgeErr == nil:
			t.Fatalf("round %d: both the commit and the purge (%d) applied; InstanceGet: %v", r, purged, getErr)
		case commitErr == nil:
			commits++
			wantErr(t, fmt.Sprintf("round %d: purge after the commit", r), purgeErr, backend.ErrVersionConflict)
			if getErr != nil || in.Version != 2 {
				t.Fatalf("round %d: the commit applied, but InstanceGet = %+v, %v; want version 2", r, in, getErr)
			}
		case purgeErr == nil:
			purges++
			wantErr(t, fmt.Sprintf("round %d: commit after the purge", r), commitErr, backend.ErrVersionConflict)
			if purged != 1 || !errors.Is(getErr, backend.ErrInstanceNotFound) {
				t.Fatalf("round %d: the purge applied (%d), but InstanceGet = %v, want ErrInstanceNotFound", r, purged, getErr)
			}
		default:
			t.Fatalf("round %d: neither applied: commit %v, purge %v", r, commitErr, purgeErr)
		}
	}
	t.Logf("%d rounds: the commit won %d, the purge %d", rounds, commits, purges)
}

// testInstancePurgeKeepMessages checks InstancePurgeParams.KeepMessages: an
// entity's queued operations survive the removal of its row.
func testInstancePurgeKeepMessages(t *testing.T, b backend.Backend) {
	ctx := t.Context()
	createHub(t, b, 1)
	keep := row("@e@keep", "e", backend.StatusCompleted, t0)
	keep.Version = 2
	drop := row("@e@drop", "e", backend.StatusCompleted, t0)
	other := row("other", "Orch", backend.StatusCompleted, t0)
	mustCommit(t, b, append(upserts(keep, drop, other), withQueued(keep.InstanceID, 1), withQueued(drop.InstanceID, 4))...)

	// A stale version refuses the purge, KeepMessages or not.
	_, err := b.InstancePurge(ctx, &backend.InstancePurgeParams{InstanceID: keep.InstanceID, ExpectVersion: 1, KeepMessages: true})
	wantErr(t, "purge with KeepMessages expecting a stale version", err, backend.ErrVersionConflict)
	wantInstance(t, b, keep)

	// ExpectVersion and KeepMessages apply only to the purge of one
	// instance: a filtered purge with either is refused.
	for _, p := range []backend.InstancePurgeParams{{KeepMessages: true}, {ExpectVersion: 1}} {
		if n, err := b.InstancePurge(ctx, &p); err == nil {
			t.Errorf("filtered purge %+v = %d, nil; want an error", p, n)
		}
	}
	if got, _ := listAll(t, b, backend.InstanceFilter{}, 0); !slices.Equal(got, []string{"@e@drop", "@e@keep", "other"}) {
		t.Fatalf("instances after refused purges = %q, want all three", got)
	}

	n, err := b.InstancePurge(ctx, &backend.InstancePurgeParams{InstanceID: keep.InstanceID, ExpectVersion: 2, KeepMessages: true})
	if err != nil || n != 1 {
		t.Fatalf("purge with KeepMessages = %d, %v; want 1, nil", n, err)
	}
	if _, err := b.InstanceGet(ctx, keep.InstanceID); !errors.Is(err, backend.ErrInstanceNotFound) {
		t.Errorf("InstanceGet after purge with KeepMessages: got %v, want ErrInstanceNotFound", err)
	}
	wantHistory(t, b, keep.InstanceID, "")
	// Queued messages may reference payloads owned by their target: they
	// stay with the messages.
	if _, err := b.PayloadGet(ctx, keep.InstanceID+"/p"); err != nil {
		t.Errorf("PayloadGet after purge with KeepMessages: %v; the payload must stay", err)
	}
	if l := lengths(metrics(t, b, t0)); !slices.Equal(l, []int{4, 2}) {
		t.Errorf("queue lengths after purge with KeepMessages = %v, want [4 2]: every message stays", l)
	}

	n, err = b.InstancePurge(ctx, &backend.InstancePurgeParams{InstanceID: drop.InstanceID})
	if err != nil || n != 1 {
		t.Fatalf("purge without KeepMessages = %d, %v; want 1, nil", n, err)
	}
	if _, err := b.PayloadGet(ctx, drop.InstanceID+"/p"); !errors.Is(err, backend.ErrPayloadNotFound) {
		t.Errorf("PayloadGet after purge without KeepMessages: got %v, want ErrPayloadNotFound", err)
	}
	if l := lengths(metrics(t, b, t0)); !slices.Equal(l, []int{2, 1}) {
		t.Errorf("queue lengths after purge without KeepMessages = %v, want [2 1]: its messages go", l)
	}
	f := acquire(t, b, 0, "A")
	res := receive(t, b, f, 10, t0, time.Hour)
	wantMsgs(t, "control messages left", res.Messages, 1, 2)
	for i, m := range res.Messages {
		if m.InstanceID != keep.InstanceID || string(m.Data) != string(msgData(i+1)) {
			t.Errorf("control message %s = {%q %q}, want it unchanged", m.ID, m.InstanceID, m.Data)
		}
	}
	wantItems(t, "work items left", receiveWork(t, b, "A", 10, t0, time.Hour), 3)
	getInstance(t, b, other.InstanceID)
}
