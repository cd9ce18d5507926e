package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/taskhub/taskhub/backend"
	"github.com/taskhub/taskhub/backend/backendtest"
)

// testURLDefault is the server the tests use when $TASKHUB_POSTGRES_URL is
// unset.
const testURLDefault = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

var t0 = time.Date(2031, 3, 4, 5, 6, 7, 123456789, time.UTC)

var server struct {
	once sync.Once
	url  string
	err  error
}

// testURL returns the test server's URL. When the server is unreachable the
// test is skipped with the reason, or fails when $CI is "true": CI must
// never pass by skipping the PostgreSQL suite.
func testURL(t testing.TB) string {
	t.Helper()
	server.once.Do(func() {
		server.url = URLFromEnv(testURLDefault)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, server.url)
		if err == nil {
			err = conn.Ping(ctx)
			conn.Close(ctx)
		}
		server.err = err
	})
	if server.err != nil {
		msg := fmt.Sprintf("PostgreSQL is unreachable at %s (set %s to point at a server): %v",
			redact(server.url), EnvURL, server.err)
		if os.Getenv("CI") == "true" {
			t.Fatal("CI=true requires PostgreSQL for backend/postgres: " + msg)
		}
		t.Skip("SKIPPING the PostgreSQL tests: " + msg)
	}
	return server.url
}

// redact hides a password in a URL for messages.
func redact(raw string) string {
	if u, err := url.Parse(raw); err == nil && u.User != nil {
		return u.Redacted()
	}
	return raw
}

func randomSuffix(t testing.TB) string {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}

// freshSchema returns an unused schema name, dropped when the test ends
// (after the Backends opened later are closed: cleanups run last first).
func freshSchema(t testing.TB) string {
	t.Helper()
	u := testURL(t)
	name := "taskhub_test_" + randomSuffix(t)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, u)
		if err != nil {
			t.Errorf("drop schema %s: %v", name, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, `DROP SCHEMA IF EXISTS `+pgx.Identifier{name}.Sanitize()+` CASCADE`); err != nil {
			t.Errorf("drop schema %s: %v", name, err)
		}
	})
	return name
}

// openTest opens a Backend on a fresh schema unless opts names one; it is
// closed when the test ends.
func openTest(t testing.TB, opts Options) *Backend {
	t.Helper()
	return openURL(t, testURL(t), opts)
}

func openURL(t testing.TB, u string, opts Options) *Backend {
	t.Helper()
	if opts.Schema == "" {
		opts.Schema = freshSchema(t)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(t.Output(), nil))
	}
	b, err := Open(t.Context(), u, opts)
	if err != nil {
		t.Fatalf("Open(schema %s): %v", opts.Schema, err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return b
}

// adminConn is a plain connection for inspecting and provoking the server.
func adminConn(t testing.TB) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), testURL(t))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func TestConformance(t *testing.T) {
	testURL(t)
	backendtest.Run(t, func(t *testing.T) backend.Backend {
		return openTest(t, Options{Hub: "conformance"})
	})
}

func TestOptions(t *testing.T) {
	o := Options{}.withDefaults()
	if o.Hub != HubDefault || o.Schema != "taskhub_taskhub" || o.MaxConns != MaxConnsDefault ||
		o.RetryTimeout != RetryTimeoutDefault || o.Logger == nil {
		t.Fatalf("defaults = %+v", o)
	}
	if err := o.validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	if got := (Options{Hub: "orders"}).withDefaults().Schema; got != "taskhub_orders" {
		t.Errorf("schema of hub orders = %q, want taskhub_orders", got)
	}
	if got := (Options{Hub: "orders", Schema: "Mine"}).withDefaults().Schema; got != "Mine" {
		t.Errorf("explicit schema became %q", got)
	}

	// Derived names are valid identifiers, and distinct hubs get distinct
	// schemas even when their names differ only in what is replaced.
	hubs := []string{"a-b", "a_b", "A_B", "a b", "a.b", "ünïcode", strings.Repeat("long", 40), strings.Repeat("long", 40) + "x", `x"; DROP TABLE y; --`}
	seen := map[string]string{}
	for _, h := range hubs {
		s := SchemaFor(h)
		if err := validateSchema(s); err != nil {
			t.Errorf("SchemaFor(%q) = %q is not valid: %v", h, s, err)
		}
		if other, dup := seen[s]; dup {
			t.Errorf("hubs %q and %q both map to schema %q", other, h, s)
		}
		seen[s] = h
		if (Options{Hub: h}).withDefaults().validate() != nil {
			t.Errorf("Options{Hub: %q} does not validate", h)
		}
	}

	for _, bad := range []Options{
		{Schema: `x"; DROP SCHEMA public CASCADE; --`},
		{Schema: "has space"},
		{Schema: "1starts_with_digit"},
		{Schema: "pg_reserved"},
		{Schema: "dash-ed"},
		{Schema: strings.Repeat("s", identMax+1)},
		{MaxConns: -1},
		{Hub: strings.Repeat("h", hubNameMax+1)},
		{Hub: "nul\x00byte"},
		{Hub: "bad\xffutf8"},
	} {
		if err := bad.withDefaults().validate(); err == nil {
			t.Errorf("Options %+v validated", bad)
		}
		// Refused before any connection is made.
		if _, err := Open(t.Context(), "postgres://nobody@127.0.0.1:1/none", bad); err == nil {
			t.Errorf("Open with Options %+v succeeded", bad)
		}
	}

	t.Setenv(EnvURL, "")
	if got := URLFromEnv("fallback"); got != "fallback" {
		t.Errorf("URLFromEnv with the variable empty = %q, want the fallback", got)
	}
	t.Setenv(EnvURL, "postgres://elsewhere/db")
	if got := URLFromEnv("fallback"); got != "postgres://elsewhere/db" {
		t.Errorf("URLFromEnv = %q, want the variable's value", got)
	}
}

// TestQueries checks that every statement names the hub's quoted schema
// and no placeholder is left.
func TestQueries(t *testing.T) {
	q := newQueries(`"S"`)
	v := reflect.ValueOf(q)
	for i := range v.NumField() {
		name, sql := v.Type().Field(i).Name, v.Field(i).String()
		if sql == "" || strings.Contains(sql, "{s}") {
			t.Errorf("query %s = %q", name, sql)
		}
		if !strings.Contains(sql, `"S".`) && !strings.Contains(sql, "pg_advisory") && !strings.Contains(sql, "pg_notify") && !strings.Contains(sql, "set_config") {
			t.Errorf("query %s does not name the schema: %q", name, sql)
		}
	}
}

func TestPrefixEnd(t *testing.T) {
	for _, tc := range []struct {
		prefix, end string
		ok          bool
	}{
		{"abc", "abd", true},
		{"a\u007f", "a\u0080", true},
		{"é", "ê", true},
		{"x\ud7ff", "x\ue000", true},
		{"a\U0010FFFF", "b", true},
		{"\U0010FFFF", "", false},
	} {
		end, ok := prefixEnd(tc.prefix)
		if end != tc.end || ok != tc.ok {
			t.Errorf("prefixEnd(%q) = %q, %v; want %q, %v", tc.prefix, end, ok, tc.end, tc.ok)
		}
	}
}

func TestMigrationsEmbedded(t *testing.T) {
	list, err := loadMigrations()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) == 0 || SchemaVersion() != len(list) {
		t.Fatalf("%d migrations, SchemaVersion %d", len(list), SchemaVersion())
	}
	for i, m := range list {
		if m.version != i+1 || m.name == "" || strings.TrimSpace(m.sql) == "" {
			t.Errorf("migration %d = {%d %q, %d bytes}", i, m.version, m.name, len(m.sql))
		}
	}
}

// migrationRows returns the versions recorded in a schema.
func migrationRows(t *testing.T, conn *pgx.Conn, schema string) []int32 {
	t.Helper()
	rows, _ := conn.Query(t.Context(), `SELECT version FROM `+pgx.Identifier{schema}.Sanitize()+`.schema_migrations ORDER BY version`)
	v, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		t.Fatalf("read schema_migrations: %v", err)
	}
	return v
}

func wantVersions(t *testing.T, got []int32) {
	t.Helper()
	want := make([]int32, SchemaVersion())
	for i := range want {
		want[i] = int32(i + 1)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("schema_migrations holds versions %v, want %v (each applied once)", got, want)
	}
}

// TestMigrateIdempotent checks that migrating an up-to-date schema again,
// from the same or another Backend, changes nothing and keeps the data.
func TestMigrateIdempotent(t *testing.T) {
	ctx := t.Context()
	b := openTest(t, Options{Hub: "h"})
	if _, err := b.HubCreate(ctx, &backend.HubCreateParams{PartitionCount: 2, Now: t0}); err != nil {
		t.Fatal(err)
	}
	in := &backend.Instance{InstanceID: "i", Name: "n", Status: backend.StatusRunning, CreatedAt: t0, UpdatedAt: t0, Version: 3}
	mustCommit(t, b, &backend.Commit{Now: t0, Writes: backend.Writes{InstanceUpsert: in}})

	for range 3 {
		if err := b.Migrate(ctx); err != nil {
			t.Fatalf("Migrate again: %v", err)
		}
	}
	b2 := openTest(t, Options{Hub: "h", Schema: b.Schema()})
	if err := b2.Migrate(ctx); err != nil {
		t.Fatalf("Migrate from a second Backend: %v", err)
	}
	wantVersions(t, migrationRows(t, adminConn(t), b.Schema()))
	got, err := b2.InstanceGet(ctx, "i")
	if err != nil || got.Version != 3 || !got.CreatedAt.Equal(t0) {
		t.Fatalf("InstanceGet after re-migrating = %+v, %v", got, err)
	}
	// Nanoseconds survive: times are stored as integers.
	if got.CreatedAt.Nanosecond() != t0.Nanosecond() {
		t.Errorf("CreatedAt lost precision: %v, want %v", got.CreatedAt, t0)
	}
	if hub, err := b2.HubGet(ctx); err != nil || hub.PartitionCount != 2 {
		t.Fatalf("HubGet from the second Backend = %+v, %v", hub, err)
	}
}

// TestMigrateNewerSchemaRefused checks that a build does not open a schema
// that a newer build migrated further.
func TestMigrateNewerSchemaRefused(t *testing.T) {
	b := openTest(t, Options{})
	admin := adminConn(t)
	future := SchemaVersion() + 1
	_, err := admin.Exec(t.Context(), `INSERT INTO `+pgx.Identifier{b.Schema()}.Sanitize()+`.schema_migrations (version, name) VALUES ($1, 'future')`, future)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Open(t.Context(), testURL(t), Options{Schema: b.Schema()})
	if err == nil || !strings.Contains(err.Error(), "upgrade taskhub") {
		t.Fatalf("Open of a schema at version %d: got %v, want a refusal asking for an upgrade", future, err)
	}
}

// TestConcurrentOpen opens one new schema from many Backends at once, as
// workers starting together do: each migration is applied exactly once and
// every Open succeeds; then they all create the hub at once and agree on it.
func TestConcurrentOpen(t *testing.T) {
	const n = 8
	u := testURL(t)
	schema := freshSchema(t)
	backends := make([]*Backend, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			backends[i], errs[i] = Open(t.Context(), u, Options{Hub: "together", Schema: schema, MaxConns: 2})
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("concurrent Open %d: %v", i, err)
		}
		t.Cleanup(func() { backends[i].Close() })
	}
	wantVersions(t, migrationRows(t, adminConn(t), schema))

	hubs := make([]*backend.Hub, n)
	for i, b := range backends {
		wg.Go(func() {
			hubs[i], errs[i] = b.HubCreate(t.Context(), &backend.HubCreateParams{PartitionCount: 3, Now: t0.Add(time.Duration(i) * time.Second)})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("concurrent HubCreate %d: %v", i, err)
		}
		if !hubs[i].CreatedAt.Equal(hubs[0].CreatedAt) || hubs[i].PartitionCount != 3 {
			t.Errorf("HubCreate %d = %+v, want the hub created once: %+v", i, *hubs[i], *hubs[0])
		}
	}
	parts, err := backends[0].PartitionList(t.Context())
	if err != nil || len(parts) != 3 {
		t.Fatalf("PartitionList after concurrent creates = %d rows, %v; want 3", len(parts), err)
	}
}

func mustCommit(t testing.TB, b *Backend, units ...*backend.Commit) {
	t.Helper()
	errs, err := b.CommitBatch(context.Background(), units)
	if err != nil {
		t.Fatalf("CommitBatch: %v", err)
	}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("CommitBatch unit %d refused: %v", i, err)
		}
	}
}

func createHub(t testing.TB, b *Backend, partitions int) {
	t.Helper()
	if _, err := b.HubCreate(context.Background(), &backend.HubCreateParams{PartitionCount: partitions, Now: t0}); err != nil {
		t.Fatalf("HubCreate: %v", err)
	}
}

func acquire(t testing.TB, b *Backend, p int, owner string) backend.Fence {
	t.Helper()
	parts, err := b.PartitionList(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got, err := b.PartitionAcquire(context.Background(), &backend.PartitionAcquireParams{
		Partition: p, Owner: owner, ExpectEpoch: parts[p].Epoch, Duration: time.Hour, Now: t0,
	})
	if err != nil {
		t.Fatalf("PartitionAcquire(%d, %s): %v", p, owner, err)
	}
	return backend.Fence{Partition: p, Owner: owner, Epoch: got.Epoch}
}

func controlMsg(id string, p int) *backend.NewMessage {
	return &backend.NewMessage{ID: id, Partition: p, InstanceID: "i-" + id, Data: []byte(id)}
}

// TestTwoHubsIsolated runs two hubs in one database: neither sees the
// other's rows, messages or notifications, and a schema refuses a second
// hub.
func TestTwoHubsIsolated(t *testing.T) {
	ctx := t.Context()
	a := openTest(t, Options{Hub: "alpha"})
	bb := openTest(t, Options{Hub: "beta"})
	createHub(t, a, 2)
	createHub(t, bb, 3)

	notes := make(chan backend.Notification, 100)
	lctx, stop := context.WithCancel(ctx)
	defer stop()
	go bb.Notifications(lctx, func(n backend.Notification) { notes <- n })
	waitListening(t, bb, 0)

	fa := acquire(t, a, 1, "w")
	mustCommit(t, a, &backend.Commit{Fence: &fa, Now: t0, Writes: backend.Writes{
		InstanceUpsert: &backend.Instance{InstanceID: "shared-id", Name: "A", Status: backend.StatusRunning, CreatedAt: t0, UpdatedAt: t0, Version: 1},
		History:        &backend.HistoryAppend{InstanceID: "shared-id", ExecutionID: "e", Events: []backend.HistoryRecord{{Seq: 1, Data: []byte("a")}}},
		Payloads:       []*backend.Payload{{Key: "shared-id/p", InstanceID: "shared-id", Data: []byte("p")}},
		ControlSend:    []*backend.NewMessage{controlMsg("m1", 1)},
		WorkSend:       []*backend.NewMessage{controlMsg("w1", 0)},
	}})
	// beta's own send is notified after alpha's commit: had alpha's
	// notifications reached beta's channel, they would come first.
	mustCommit(t, bb, &backend.Commit{Now: t0, Writes: backend.Writes{ControlSend: []*backend.NewMessage{controlMsg("m2", 2)}}})
	if n := nextNote(t, notes); n.Partition != 2 {
		t.Fatalf("beta's listener got %+v first, want beta's own partition 2: alpha's notification leaked", n)
	}

	if _, err := bb.InstanceGet(ctx, "shared-id"); !errors.Is(err, backend.ErrInstanceNotFound) {
		t.Errorf("beta sees alpha's instance: %v", err)
	}
	if _, err := bb.PayloadGet(ctx, "shared-id/p"); !errors.Is(err, backend.ErrPayloadNotFound) {
		t.Errorf("beta sees alpha's payload: %v", err)
	}
	if h, err := bb.HistoryLoad(ctx, "shared-id"); err != nil || len(h.Events) != 0 {
		t.Errorf("beta sees alpha's history: %+v, %v", h, err)
	}
	m, err := bb.QueueMetrics(ctx, &backend.QueueMetricsParams{Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Control) != 3 || m.Control[1].Length != 0 || m.Control[2].Length != 1 || m.Work.Length != 0 {
		t.Errorf("beta's queues = %+v, want only its own message in partition 2", m)
	}
	if items, err := bb.WorkItemReceive(ctx, &backend.WorkItemReceiveParams{Max: 10, LockDuration: time.Minute, Now: t0}); err != nil || len(items) != 0 {
		t.Errorf("beta received alpha's work items: %d, %v", len(items), err)
	}
	if got, err := a.InstanceGet(ctx, "shared-id"); err != nil || got.Name != "A" {
		t.Errorf("alpha's instance = %+v, %v", got, err)
	}
	// Partitions and leases are per hub too.
	if parts, err := bb.PartitionList(ctx); err != nil || len(parts) != 3 || parts[1].Epoch != 0 {
		t.Errorf("beta's partitions = %v, %v", parts, err)
	}

	// A schema holds one hub.
	_, err = Open(ctx, testURL(t), Options{Hub: "gamma", Schema: a.Schema()})
	var mismatch *HubMismatchError
	if !errors.As(err, &mismatch) || mismatch.Stored != "alpha" || mismatch.Requested != "gamma" {
		t.Errorf("Open of alpha's schema for hub gamma: got %v, want *HubMismatchError", err)
	}
}

// waitListening waits until b's listener has LISTENed on a connection
// other than old.
func waitListening(t testing.TB, b *Backend, old uint32) uint32 {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if pid := b.listenerPID.Load(); pid != 0 && pid != old {
			return pid
		}
		if time.Now().After(deadline) {
			t.Fatalf("the notification listener did not (re)connect within 15s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func nextNote(t testing.TB, notes <-chan backend.Notification) backend.Notification {
	t.Helper()
	select {
	case n := <-notes:
		return n
	case <-time.After(15 * time.Second):
		t.Fatalf("no notification within 15s")
		return backend.Notification{}
	}
}

// notesUntil collects notifications up to and including the first one for
// partition marker.
func notesUntil(t testing.TB, notes <-chan backend.Notification, marker int) []int {
	t.Helper()
	var got []int
	for {
		n := nextNote(t, notes)
		if n.Partition == marker {
			return got
		}
		got = append(got, n.Partition)
	}
}

// TestNotifyAcrossBackends enqueues through one Backend and is notified
// through another (as two processes would be): once per partition and once
// for the work-item queue per batch, only for units that applied, and only
// for batches that committed.
func TestNotifyAcrossBackends(t *testing.T) {
	ctx := t.Context()
	sender := openTest(t, Options{})
	createHub(t, sender, 4)
	listener := openTest(t, Options{Schema: sender.Schema()})

	notes := make(chan backend.Notification, 100)
	lctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- listener.Notifications(lctx, func(n backend.Notification) { notes <- n }) }()
	waitListening(t, listener, 0)

	f := acquire(t, sender, 0, "w")
	stale := backend.Fence{Partition: 0, Owner: "w", Epoch: f.Epoch - 1}
	errs, err := sender.CommitBatch(ctx, []*backend.Commit{
		{Now: t0, Writes: backend.Writes{ControlSend: []*backend.NewMessage{controlMsg("a1", 0), controlMsg("a2", 0), controlMsg("a3", 2)}}},
		{Now: t0, Writes: backend.Writes{ControlSend: []*backend.NewMessage{controlMsg("a4", 2)}, WorkSend: []*backend.NewMessage{controlMsg("a5", 0)}}},
		{Now: t0, Writes: backend.Writes{WorkSend: []*backend.NewMessage{controlMsg("a6", 0)}}},
		// Refused: its send must not be notified.
		{Fence: &stale, Now: t0, Writes: backend.Writes{ControlSend: []*backend.NewMessage{controlMsg("a7", 3)}}},
	})
	if err != nil || errs[0] != nil || errs[1] != nil || errs[2] != nil || !errors.Is(errs[3], backend.ErrLeaseLost) {
		t.Fatalf("CommitBatch = %v, %v", errs, err)
	}
	// A batch that fails as a whole notifies nothing: a1 exists already.
	if _, err := sender.CommitBatch(ctx, []*backend.Commit{
		{Now: t0, Writes: backend.Writes{ControlSend: []*backend.NewMessage{controlMsg("b1", 3)}}},
		{Now: t0, Writes: backend.Writes{ControlSend: []*backend.NewMessage{controlMsg("a1", 3)}}},
	}); err == nil {
		t.Fatal("CommitBatch with a duplicate message ID succeeded")
	}
	// The marker: notifications arrive in commit order, so everything the
	// batches above notified has arrived before it.
	mustCommit(t, sender, &backend.Commit{Now: t0, Writes: backend.Writes{ControlSend: []*backend.NewMessage{controlMsg("marker", 1)}}})
	got := notesUntil(t, notes, 1)
	slices.Sort(got)
	if !slices.Equal(got, []int{-1, 0, 2}) {
		t.Errorf("notifications before the marker = %v, want exactly one each for -1 (work items), 0 and 2", got)
	}

	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Notifications returned %v when its context ended, want nil", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Notifications did not return after its context ended")
	}

	// Close ends a running listener with ErrClosed.
	go func() { done <- listener.Notifications(ctx, func(backend.Notification) {}) }()
	waitListening(t, listener, listener.listenerPID.Load())
	listener.Close()
	select {
	case err := <-done:
		if !errors.Is(err, ErrClosed) {
			t.Errorf("Notifications returned %v after Close, want ErrClosed", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Notifications did not return after Close")
	}
}

// TestNotifyReconnect kills the listener's server process and checks that
// the listener reconnects, wakes every queue once (notifications sent while
// it was away are lost) and then delivers new notifications again.
func TestNotifyReconnect(t *testing.T) {
	ctx := t.Context()
	b := openTest(t, Options{})
	createHub(t, b, 3)
	notes := make(chan backend.Notification, 100)
	done := make(chan error, 1)
	go func() { done <- b.Notifications(ctx, func(n backend.Notification) { notes <- n }) }()
	pid := waitListening(t, b, 0)

	mustCommit(t, b, &backend.Commit{Now: t0, Writes: backend.Writes{ControlSend: []*backend.NewMessage{controlMsg("before", 2)}}})
	if n := nextNote(t, notes); n.Partition != 2 {
		t.Fatalf("first notification = %+v, want partition 2", n)
	}

	for round := range 2 {
		var ok bool
		if err := adminConn(t).QueryRow(ctx, `SELECT pg_terminate_backend($1)`, pid).Scan(&ok); err != nil || !ok {
			t.Fatalf("pg_terminate_backend(%d) = %v, %v", pid, ok, err)
		}
		// The wake-up of every queue after the reconnection: partitions
		// 0..2, then the work-item queue.
		if got := notesUntil(t, notes, -1); !slices.Equal(got, []int{0, 1, 2}) {
			t.Fatalf("round %d: wake-ups after reconnecting = %v, want [0 1 2] then -1", round, got)
		}
		newPID := b.listenerPID.Load()
		if newPID == pid {
			t.Fatalf("round %d: the listener kept server process %d after it was terminated", round, pid)
		}
		pid = newPID
		id := fmt.Sprintf("after-%d", round)
		mustCommit(t, b, &backend.Commit{Now: t0, Writes: backend.Writes{ControlSend: []*backend.NewMessage{controlMsg(id, 1)}}})
		if n := nextNote(t, notes); n.Partition != 1 {
			t.Fatalf("round %d: notification after reconnecting = %+v, want partition 1", round, n)
		}
	}
	select {
	case err := <-done:
		t.Fatalf("Notifications returned %v while its context was live", err)
	default:
	}
}

// TestFenceLocksPartition checks that a commit's fence check cannot pass
// while an acquire of the partition is in flight: the check waits for the
// acquire and then sees the new epoch.
func TestFenceLocksPartition(t *testing.T) {
	ctx := t.Context()
	b := openTest(t, Options{})
	createHub(t, b, 1)
	f := acquire(t, b, 0, "A")

	admin := adminConn(t)
	tx, err := admin.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(ctx, `UPDATE `+pgx.Identifier{b.Schema()}.Sanitize()+`.partitions SET owner = 'B', epoch = epoch + 1 WHERE idx = 0`); err != nil {
		t.Fatal(err)
	}

	type result struct {
		errs []error
		err  error
	}
	res := make(chan result, 1)
	go func() {
		errs, err := b.CommitBatch(ctx, []*backend.Commit{{Fence: &f, Now: t0, Writes: backend.Writes{
			InstanceUpsert: &backend.Instance{InstanceID: "fenced", Name: "n", Status: backend.StatusRunning, CreatedAt: t0, UpdatedAt: t0},
		}}})
		res <- result{errs, err}
	}()
	// Wait until the commit is blocked on the partition row's lock.
	waitBlocked(t, admin, tx.Conn().PgConn().PID())
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	r := <-res
	if r.err != nil || !errors.Is(r.errs[0], backend.ErrLeaseLost) {
		t.Fatalf("commit fenced by the replaced epoch = %v, %v; want ErrLeaseLost", r.errs, r.err)
	}
	if _, err := b.InstanceGet(ctx, "fenced"); !errors.Is(err, backend.ErrInstanceNotFound) {
		t.Errorf("the refused commit wrote its instance: %v", err)
	}
}

// waitBlocked waits until some session waits for a lock that the session
// blocker holds.
func waitBlocked(t testing.TB, admin *pgx.Conn, blocker uint32) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		var n int
		err := admin.QueryRow(context.Background(),
			`SELECT count(*) FROM pg_stat_activity WHERE $1::int = ANY(pg_blocking_pids(pid))`, int32(blocker)).Scan(&n)
		if err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no session blocked on the lock within 15s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestCommitAllOrNothing checks that a storage error in one unit rolls the
// whole batch back, with and without conditions in the batch.
func TestCommitAllOrNothing(t *testing.T) {
	ctx := t.Context()
	b := openTest(t, Options{})
	createHub(t, b, 1)
	f := acquire(t, b, 0, "A")
	mustCommit(t, b, &backend.Commit{Now: t0, Writes: backend.Writes{ControlSend: []*backend.NewMessage{controlMsg("dup", 0)}}})

	for _, fence := range []*backend.Fence{nil, &f} {
		id := fmt.Sprintf("partial-%v", fence != nil)
		_, err := b.CommitBatch(ctx, []*backend.Commit{
			{Fence: fence, Now: t0, Writes: backend.Writes{
				InstanceUpsert: &backend.Instance{InstanceID: id, Name: "n", Status: backend.StatusRunning, CreatedAt: t0, UpdatedAt: t0},
				WorkSend:       []*backend.NewMessage{controlMsg(id, 0)},
			}},
			{Now: t0, Writes: backend.Writes{ControlSend: []*backend.NewMessage{controlMsg("dup", 0)}}},
		})
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "23505" || !strings.Contains(err.Error(), "units 0-1") {
			t.Fatalf("batch with a duplicate message ID (fence %v): got %v, want the unique violation, naming the units", fence != nil, err)
		}
		if _, err := b.InstanceGet(ctx, id); !errors.Is(err, backend.ErrInstanceNotFound) {
			t.Errorf("the failed batch applied its first unit: %v", err)
		}
	}
	m, err := b.QueueMetrics(ctx, &backend.QueueMetricsParams{Now: t0})
	if err != nil || m.Work.Length != 0 || m.Control[0].Length != 1 {
		t.Errorf("queues after the failed batches = %+v, %v; want only the first message", m, err)
	}
	// The connection is usable afterwards: a batch succeeds.
	mustCommit(t, b, &backend.Commit{Fence: &f, Now: t0, Writes: backend.Writes{ControlDelete: []string{"dup"}}})

	// A send to a partition the hub does not have fails the batch.
	if _, err := b.CommitBatch(ctx, []*backend.Commit{{Now: t0, Writes: backend.Writes{ControlSend: []*backend.NewMessage{controlMsg("x", 5)}}}}); err == nil {
		t.Error("a send to partition 5 of a 1-partition hub succeeded")
	}
}

// TestCommitInstanceRace races writers on one instance from several
// Backends (several processes): conditions decided in Go must hold when
// the writes land, including for an instance that has no row yet.
func TestCommitInstanceRace(t *testing.T) {
	ctx := t.Context()
	first := openTest(t, Options{})
	createHub(t, first, 1)
	backends := []*Backend{first}
	for range 3 {
		backends = append(backends, openTest(t, Options{Schema: first.Schema()}))
	}

	// Creation: every writer refuses an existing Running instance; exactly
	// one may create it.
	var created atomic.Int32
	var wg sync.WaitGroup
	for i := range 12 {
		b := backends[i%len(backends)]
		wg.Go(func() {
			errs, err := b.CommitBatch(ctx, []*backend.Commit{{
				Create: &backend.CreateCondition{InstanceID: "race", RefuseStatuses: []backend.Status{backend.StatusRunning}},
				Now:    t0,
				Writes: backend.Writes{
					InstanceUpsert: &backend.Instance{InstanceID: "race", Name: fmt.Sprint(i), Status: backend.StatusRunning, CreatedAt: t0, UpdatedAt: t0},
					History:        &backend.HistoryAppend{InstanceID: "race", ExecutionID: fmt.Sprint(i), Reset: true, Events: []backend.HistoryRecord{{Seq: 1}}},
				},
			}})
			var exists *backend.InstanceExistsError
			switch {
			case err != nil:
				t.Errorf("writer %d: %v", i, err)
			case errs[0] == nil:
				created.Add(1)
			case !errors.As(errs[0], &exists):
				t.Errorf("writer %d refused with %v, want *InstanceExistsError", i, errs[0])
			}
		})
	}
	wg.Wait()
	if n := created.Load(); n != 1 {
		t.Fatalf("%d writers created the instance, want exactly 1", n)
	}

	// Steps: each writer loops read version → commit expecting it. Every
	// accepted step adds one, so the final version counts them.
	var accepted atomic.Int64
	for w := range 8 {
		b := backends[w%len(backends)]
		wg.Go(func() {
			for range 10 {
				in, err := b.InstanceGet(ctx, "race")
				if err != nil {
					t.Error(err)
					return
				}
				next := *in
				next.Version++
				errs, err := b.CommitBatch(ctx, []*backend.Commit{{
					Instance: &backend.InstanceCondition{InstanceID: "race", ExpectVersion: in.Version},
					Now:      t0,
					Writes: backend.Writes{
						InstanceUpsert: &next,
						History:        &backend.HistoryAppend{InstanceID: "race", ExecutionID: in.ExecutionID, Events: []backend.HistoryRecord{{Seq: next.Version + 1}}},
					},
				}})
				switch {
				case err != nil:
					t.Errorf("step: %v", err)
					return
				case errs[0] == nil:
					accepted.Add(1)
				case !errors.Is(errs[0], backend.ErrVersionConflict):
					t.Errorf("step refused with %v, want ErrVersionConflict", errs[0])
				}
			}
		})
	}
	wg.Wait()
	in, err := first.InstanceGet(ctx, "race")
	if err != nil {
		t.Fatal(err)
	}
	if in.Version != accepted.Load() || accepted.Load() == 0 {
		t.Errorf("final version %d after %d accepted steps: a step was applied over a stale version", in.Version, accepted.Load())
	}
	h, err := first.HistoryLoad(ctx, "race")
	if err != nil || int64(len(h.Events)) != accepted.Load()+1 {
		t.Errorf("history has %d events, want %d (creation + steps), err %v", len(h.Events), accepted.Load()+1, err)
	}
}

// TestReadRetriesLostConnection terminates every pooled connection of a
// Backend and checks that reads carry on, retried on new connections.
func TestReadRetriesLostConnection(t *testing.T) {
	ctx := t.Context()
	app := "taskhub_test_" + randomSuffix(t)
	u, err := url.Parse(testURL(t))
	if err != nil {
		t.Skipf("TASKHUB_POSTGRES_URL is not a URL (%v); this test adds application_name to it", err)
	}
	qv := u.Query()
	qv.Set("application_name", app)
	u.RawQuery = qv.Encode()
	b := openURL(t, u.String(), Options{MaxConns: 2})
	createHub(t, b, 2)
	mustCommit(t, b, &backend.Commit{Now: t0, Writes: backend.Writes{
		InstanceUpsert: &backend.Instance{InstanceID: "i", Name: "n", Status: backend.StatusRunning, CreatedAt: t0, UpdatedAt: t0},
	}})

	admin := adminConn(t)
	for round := range 3 {
		// Use both pooled connections, so that both are idle and recently
		// used (the pool does not ping them before handing them out).
		var wg sync.WaitGroup
		for range 2 {
			wg.Go(func() {
				if _, err := b.PartitionList(ctx); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		var killed int
		err := admin.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1`, app).Scan(&killed)
		if err != nil || killed == 0 {
			t.Fatalf("round %d: terminated %d connections, %v", round, killed, err)
		}
		if _, err := b.InstanceGet(ctx, "i"); err != nil {
			t.Fatalf("round %d: InstanceGet after the connections were terminated: %v", round, err)
		}
		if parts, err := b.PartitionList(ctx); err != nil || len(parts) != 2 {
			t.Fatalf("round %d: PartitionList after the connections were terminated: %v", round, err)
		}
	}
}

// TestClosed checks that calls on a closed Backend fail with ErrClosed.
func TestClosed(t *testing.T) {
	ctx := t.Context()
	b := openTest(t, Options{})
	createHub(t, b, 1)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.HubGet(ctx); !errors.Is(err, ErrClosed) {
		t.Errorf("HubGet after Close: %v", err)
	}
	if _, err := b.CommitBatch(ctx, []*backend.Commit{{Now: t0}}); !errors.Is(err, ErrClosed) {
		t.Errorf("CommitBatch after Close: %v", err)
	}
	if _, err := b.WorkItemReceive(ctx, &backend.WorkItemReceiveParams{Max: 1}); !errors.Is(err, ErrClosed) {
		t.Errorf("WorkItemReceive after Close: %v", err)
	}
	if err := b.Notifications(ctx, func(backend.Notification) {}); !errors.Is(err, ErrClosed) {
		t.Errorf("Notifications after Close: %v", err)
	}
	if err := b.Migrate(ctx); !errors.Is(err, ErrClosed) {
		t.Errorf("Migrate after Close: %v", err)
	}
}

// TestCommitMergeSequential checks that a batch whose units touch the same
// rows leaves what applying them one after the other would: CommitBatch
// merges the units' writes per table.
func TestCommitMergeSequential(t *testing.T) {
	ctx := t.Context()
	b := openTest(t, Options{})
	createHub(t, b, 1)
	f := acquire(t, b, 0, "A")
	row := func(id, name string, status backend.Status, version int64) *backend.Instance {
		return &backend.Instance{InstanceID: id, Name: name, ExecutionID: "e", Status: status, CreatedAt: t0, UpdatedAt: t0, Version: version}
	}
	hist := func(id, exec string, reset bool, seqs ...int64) *backend.HistoryAppend {
		h := &backend.HistoryAppend{InstanceID: id, ExecutionID: exec, Reset: reset}
		for _, s := range seqs {
			h.Events = append(h.Events, backend.HistoryRecord{Seq: s, Data: []byte(fmt.Sprint(exec, s))})
		}
		return h
	}
	payload := func(data string) []*backend.Payload {
		return []*backend.Payload{{Key: "x/p", InstanceID: "x", Data: []byte(data)}}
	}

	// Without conditions: one implicit transaction.
	mustCommit(t, b,
		&backend.Commit{Now: t0, Writes: backend.Writes{InstanceUpsert: row("x", "first", backend.StatusRunning, 5), History: hist("x", "e1", false, 1, 2), Payloads: payload("a")}},
		&backend.Commit{Now: t0, Writes: backend.Writes{InstanceUpsert: row("x", "second", backend.StatusCompleted, -1), History: hist("x", "e1", false, 3), Payloads: payload("b")}},
		&backend.Commit{Now: t0, Writes: backend.Writes{InstanceUpsert: row("y", "new", backend.StatusPending, -1), History: hist("x", "e2", true, 1)}},
		&backend.Commit{Now: t0, Writes: backend.Writes{InstanceUpsert: row("x", "third", backend.StatusRunning, -1), History: hist("x", "e2", false, 2)}},
	)
	x, err := b.InstanceGet(ctx, "x")
	if err != nil || x.Name != "third" || x.Status != backend.StatusRunning || x.Version != 5 {
		t.Errorf("x = %+v, %v; want the last row (third, Running) at the last explicit version 5", x, err)
	}
	if y, err := b.InstanceGet(ctx, "y"); err != nil || y.Version != 0 || y.Name != "new" {
		t.Errorf("y = %+v, %v; want a new row at version 0", y, err)
	}
	h, err := b.HistoryLoad(ctx, "x")
	if err != nil || h.ExecutionID != "e2" || len(h.Events) != 2 || string(h.Events[0].Data) != "e21" || string(h.Events[1].Data) != "e22" {
		t.Errorf("history of x = %+v, %v; want e2's events 1 and 2 only (the reset dropped e1's)", h, err)
	}
	if p, err := b.PayloadGet(ctx, "x/p"); err != nil || string(p) != "b" {
		t.Errorf("payload = %q, %v; want the last write", p, err)
	}

	// With conditions: later units see the earlier units' versions.
	errs, err := b.CommitBatch(ctx, []*backend.Commit{
		{Fence: &f, Instance: &backend.InstanceCondition{InstanceID: "x", ExpectVersion: 5}, Now: t0, Writes: backend.Writes{InstanceUpsert: row("x", "third", backend.StatusRunning, 6)}},
		{Fence: &f, Instance: &backend.InstanceCondition{InstanceID: "x", ExpectVersion: 6}, Now: t0, Writes: backend.Writes{InstanceUpsert: row("x", "third", backend.StatusCompleted, 7)}},
		{Instance: &backend.InstanceCondition{InstanceID: "x", ExpectVersion: 6}, Now: t0, Writes: backend.Writes{InstanceUpsert: row("x", "stale", backend.StatusRunning, 99)}},
		{Create: &backend.CreateCondition{InstanceID: "x", RefuseStatuses: []backend.Status{backend.StatusCompleted}}, Now: t0, Writes: backend.Writes{InstanceUpsert: row("x", "again", backend.StatusPending, 0)}},
		{Instance: &backend.InstanceCondition{InstanceID: "y", ExpectVersion: 0}, Now: t0, Writes: backend.Writes{InstanceUpsert: row("y", "kept", backend.StatusRunning, -1)}},
		{Instance: &backend.InstanceCondition{InstanceID: "y", ExpectVersion: 0}, Now: t0, Writes: backend.Writes{InstanceUpsert: row("y", "kept", backend.StatusRunning, 1)}},
	})
	var exists *backend.InstanceExistsError
	if err != nil || errs[0] != nil || errs[1] != nil || !errors.Is(errs[2], backend.ErrVersionConflict) ||
		!errors.As(errs[3], &exists) || exists.Status != backend.StatusCompleted || errs[4] != nil || errs[5] != nil {
		t.Fatalf("conditional batch = %v, %v; want accepted, accepted, version conflict, exists (Completed), accepted, accepted", errs, err)
	}
	if x, err := b.InstanceGet(ctx, "x"); err != nil || x.Version != 7 || x.Status != backend.StatusCompleted {
		t.Errorf("x = %+v, %v; want version 7, Completed", x, err)
	}
	if y, err := b.InstanceGet(ctx, "y"); err != nil || y.Version != 1 {
		t.Errorf("y = %+v, %v; want version 1", y, err)
	}

	// A message deleted and sent again, or sent and deleted, within one
	// batch: the order of the units decides.
	mustCommit(t, b, &backend.Commit{Now: t0, Writes: backend.Writes{ControlSend: []*backend.NewMessage{controlMsg("m1", 0)}}})
	mustCommit(t, b,
		&backend.Commit{Fence: &f, Now: t0, Writes: backend.Writes{ControlDelete: []string{"m1"}}},
		&backend.Commit{Now: t0.Add(time.Second), Writes: backend.Writes{ControlSend: []*backend.NewMessage{controlMsg("m1", 0), controlMsg("m2", 0)}}},
		&backend.Commit{Fence: &f, Now: t0, Writes: backend.Writes{ControlDelete: []string{"m2"}}},
	)
	res, err := b.ControlReceive(ctx, &backend.ControlReceiveParams{Fence: f, Max: 10, LockDuration: time.Minute, Now: t0.Add(time.Second)})
	if err != nil || len(res.Messages) != 1 || res.Messages[0].ID != "m1" || !res.Messages[0].EnqueuedAt.Equal(t0.Add(time.Second)) {
		t.Errorf("control queue = %+v, %v; want only m1 as sent again", res, err)
	}
}
