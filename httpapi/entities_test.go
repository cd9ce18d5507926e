package httpapi_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/taskhub/taskhub"
	"github.com/taskhub/taskhub/httpapi"
	"github.com/taskhub/taskhub/samples"
)

// Names of the entity test functions.
const (
	tallyName  = "Tally"  // a second Counter, for name filters
	holderName = "Holder" // holds a counter's lock until "release"
)

// holder locks the counter of its input key, waits for the event
// "release" and returns the counter's value.
func holder(ctx *taskhub.OrchestrationContext, key string) (int, error) {
	id := taskhub.NewEntityID(samples.CounterName, key)
	unlock, err := ctx.LockEntities(id)
	if err != nil {
		return 0, err
	}
	defer unlock()
	if err := ctx.WaitForExternalEvent("release", 0).Await(nil); err != nil {
		return 0, err
	}
	return taskhub.Await[int](ctx.CallEntity(id, "get", nil))
}

func registerEntities(r *taskhub.Registry) error {
	return errors.Join(
		taskhub.RegisterEntity(r, samples.CounterName, samples.Counter),
		taskhub.RegisterEntity(r, tallyName, samples.Counter),
		taskhub.RegisterOrchestrator(r, holderName, holder),
	)
}

func newEntityEnv(t *testing.T, opts httpapi.Options) *env {
	t.Helper()
	return newEnvWith(t, opts, registerEntities)
}

// waitEntity polls the entity until done accepts what GetEntity answers,
// within the env's deadline.
func (e *env) waitEntity(id taskhub.EntityID, what string, done func(*taskhub.EntityMetadata, error) bool) *taskhub.EntityMetadata {
	e.t.Helper()
	ctx := e.ctx()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		m, err := e.client.GetEntity(ctx, id, true)
		if done(m, err) {
			return m
		}
		select {
		case <-ctx.Done():
			e.t.Fatalf("entity %s: %s: gave up (last answer %+v, %v)", id, what, m, err)
		case <-tick.C:
		}
	}
}

// waitState waits until the entity's state is want (JSON).
func (e *env) waitState(id taskhub.EntityID, want string) *taskhub.EntityMetadata {
	e.t.Helper()
	return e.waitEntity(id, "state "+want, func(m *taskhub.EntityMetadata, err error) bool {
		return err == nil && string(m.State) == want
	})
}

// waitGone waits until the entity has no state.
func (e *env) waitGone(id taskhub.EntityID) {
	e.t.Helper()
	e.waitEntity(id, "no state", func(_ *taskhub.EntityMetadata, err error) bool {
		return errors.Is(err, taskhub.ErrEntityNotFound)
	})
}

// signal posts an operation and checks the empty 202.
func (e *env) signal(name, key, op, body string) {
	e.t.Helper()
	r := e.do(http.MethodPost, "/entities/"+url.PathEscape(name)+"/"+url.PathEscape(key)+"?op="+url.QueryEscape(op), body)
	if wantStatus(e.t, r, http.StatusAccepted); len(r.body) != 0 {
		e.t.Fatalf("signal: 202 with body %s", r.body)
	}
}

func counterID(key string) taskhub.EntityID { return taskhub.NewEntityID(samples.CounterName, key) }

func TestEntitySignalGetDelete(t *testing.T) {
	t.Parallel()
	e := newEntityEnv(t, httpapi.Options{})

	e.signal("Counter", "c1", "add", "5")
	e.signal("counter", "c1", "add", " 2 \n")
	e.waitState(counterID("c1"), "7")

	r := e.do(http.MethodGet, "/entities/Counter/c1", "")
	wantStatus(t, r, http.StatusOK)
	if got := strings.TrimSpace(string(r.body)); got != "7" {
		t.Fatalf("GET: body %q, want the state 7", got)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("GET: Content-Type %q", ct)
	}
	if lm, err := http.ParseTime(r.header.Get("Last-Modified")); err != nil || time.Since(lm) > time.Minute {
		t.Fatalf("GET: Last-Modified %q (%v)", r.header.Get("Last-Modified"), err)
	}
	if r.header.Get(httpapi.EntityBacklogHeader) != "0" || r.header.Get(httpapi.EntityLockedByHeader) != "" {
		t.Fatalf("GET: backlog %q, locked by %q", r.header.Get(httpapi.EntityBacklogHeader), r.header.Get(httpapi.EntityLockedByHeader))
	}
	if r := e.do(http.MethodHead, "/entities/Counter/c1", ""); r.status != http.StatusOK || len(r.body) != 0 {
		t.Fatalf("HEAD: %d %q", r.status, r.body)
	}

	// No body: the operation has no input.
	e.signal("Counter", "c1", "reset", "")
	e.waitState(counterID("c1"), "0")

	// A scheduled signal is delivered at its time, not before.
	at := time.Now().Add(300 * time.Millisecond)
	r = e.do(http.MethodPost, "/entities/Counter/c1?op=add&signalTime="+url.QueryEscape(at.UTC().Format(time.RFC3339Nano)), "3")
	wantStatus(t, r, http.StatusAccepted)
	m := e.waitState(counterID("c1"), "3")
	if m.LastModified.Before(at.Add(-time.Millisecond)) {
		t.Fatalf("scheduled signal for %s applied at %s", at, m.LastModified)
	}

	// DELETE signals the built-in delete: the state goes, GET answers 404.
	r = e.do(http.MethodDelete, "/entities/Counter/c1", "")
	if wantStatus(t, r, http.StatusAccepted); len(r.body) != 0 {
		t.Fatalf("DELETE: 202 with body %s", r.body)
	}
	e.waitGone(counterID("c1"))
	wantError(t, e.do(http.MethodGet, "/entities/Counter/c1", ""), http.StatusNotFound, httpapi.CodeEntityNotFound)
	wantError(t, e.do(http.MethodGet, "/entities/Counter/never", ""), http.StatusNotFound, httpapi.CodeEntityNotFound)
	// Deleting an entity without state is accepted (it is a signal).
	wantStatus(t, e.do(http.MethodDelete, "/entities/Counter/never", ""), http.StatusAccepted)

	// Keys may hold escaped slashes, '@' and spaces.
	e.signal("Counter", "a/b@c d", "add", "1")
	e.waitState(counterID("a/b@c d"), "1")
	r = e.do(http.MethodGet, "/entities/Counter/a%2Fb%40c%20d", "")
	if wantStatus(t, r, http.StatusOK); strings.TrimSpace(string(r.body)) != "1" {
		t.Fatalf("GET of an escaped key: %s", r.body)
	}
}

func TestEntityBadRequests(t *testing.T) {
	t.Parallel()
	e := newEntityEnv(t, httpapi.Options{MaxBodyBytes: 1024})
	long := strings.Repeat("k", taskhub.MaxInstanceIDLength)
	for _, c := range []struct {
		method, path, body string
		status             int
		code               string
		header             []string
	}{
		{"POST", "/entities/Counter/c?op=add", "{", 400, httpapi.CodeInvalidJSON, nil},
		{"POST", "/entities/Counter/c?op=add", "1 2", 400, httpapi.CodeInvalidJSON, nil},
		{"POST", "/entities/Counter/c?op=add", `"` + strings.Repeat("a", 2000) + `"`, 413, httpapi.CodePayloadTooLarge, nil},
		{"POST", "/entities/Counter/c", "1", 400, httpapi.CodeMissingParameter, nil},
		{"POST", "/entities/Counter/c?op=", "1", 400, httpapi.CodeMissingParameter, nil},
		{"POST", "/entities/Counter/c?op=a%00b", "", 400, httpapi.CodeInvalidParameter, nil},
		{"POST", "/entities/Counter/c?op=" + strings.Repeat("o", 257), "", 400, httpapi.CodeInvalidParameter, nil},
		{"POST", "/entities/Counter/c?op=add&signalTime=soon", "1", 400, httpapi.CodeInvalidParameter, nil},
		{"POST", "/entities/Counter/c?op=add&a=%zz", "1", 400, httpapi.CodeInvalidParameter, nil},
		{"POST", "/entities/Coun%40ter/c?op=add", "1", 400, httpapi.CodeInvalidEntityID, nil},
		{"POST", "/entities/bad%01name/c?op=add", "1", 400, httpapi.CodeInvalidEntityID, nil},
		{"POST", "/entities/%FF/c?op=add", "1", 400, httpapi.CodeInvalidEntityID, nil},
		{"GET", "/entities/Counter/%FF", "", 400, httpapi.CodeInvalidEntityID, nil},
		{"GET", "/entities/Counter/line%0Abreak", "", 400, httpapi.CodeInvalidEntityID, nil},
		{"GET", "/entities/Counter/" + long, "", 400, httpapi.CodeInvalidEntityID, nil},
		{"DELETE", "/entities/Counter/" + long, "", 400, httpapi.CodeInvalidEntityID, nil},
		{"DELETE", "/entities/a%40b/c", "", 400, httpapi.CodeInvalidEntityID, nil},
		{"GET", "/entities/a%40b", "", 400, httpapi.CodeInvalidEntityID, nil},
		{"GET", "/entities/" + long, "", 400, httpapi.CodeInvalidEntityID, nil},
		{"GET", "/entities?lastOperationTimeFrom=2024-01-01T00:00:00Z", "", 400, httpapi.CodeInvalidParameter, nil},
		{"GET", "/entities/Counter?lastOperationTimeTo=2024-01-01T00:00:00Z", "", 400, httpapi.CodeInvalidParameter, nil},
		{"GET", "/entities?fetchState=maybe", "", 400, httpapi.CodeInvalidParameter, nil},
		{"GET", "/entities?includeDeleted=2", "", 400, httpapi.CodeInvalidParameter, nil},
		{"GET", "/entities?top=0", "", 400, httpapi.CodeInvalidParameter, nil},
		{"GET", "/entities?top=1001", "", 400, httpapi.CodeInvalidParameter, nil},
		{"GET", "/entities/Counter?namePrefix=c", "", 400, httpapi.CodeInvalidParameter, nil},
		{"GET", "/entities?namePrefix=a%40b", "", 400, httpapi.CodeInvalidEntityID, nil},
		{"GET", "/entities?namePrefix=%01", "", 400, httpapi.CodeInvalidEntityID, nil},
		{"GET", "/entities", "", 400, httpapi.CodeInvalidContinuationToken, []string{httpapi.ContinuationTokenHeader, "!!!"}},
		{"GET", "/entities/Counter/c/more", "", 404, httpapi.CodeNotFound, nil},
	} {
		r := e.do(c.method, c.path, c.body, c.header...)
		d := wantError(t, r, c.status, c.code)
		if c.code == httpapi.CodeInvalidParameter && strings.Contains(c.path, "lastOperationTime") && !strings.Contains(d.Message, "lastOperationTime") {
			t.Errorf("%s %s: message %q does not name the parameter", c.method, c.path, d.Message)
		}
	}

	for _, c := range []struct{ method, path, allow string }{
		{http.MethodPut, "/entities/Counter/c", "GET, HEAD, POST, DELETE"},
		{http.MethodPatch, "/entities/Counter/c", "GET, HEAD, POST, DELETE"},
		{http.MethodPost, "/entities", "GET, HEAD"},
		{http.MethodDelete, "/entities/", "GET, HEAD"},
		{http.MethodPost, "/entities/Counter", "GET, HEAD"},
		{http.MethodDelete, "/entities/Counter/", "GET, HEAD"},
	} {
		r := e.do(c.method, c.path, "")
		if wantError(t, r, http.StatusMethodNotAllowed, httpapi.CodeMethodNotAllowed); r.header.Get("Allow") != c.allow {
			t.Errorf("%s %s: Allow %q, want %q", c.method, c.path, r.header.Get("Allow"), c.allow)
		}
	}
}

func TestListEntities(t *testing.T) {
	t.Parallel()
	e := newEntityEnv(t, httpapi.Options{})
	for i := range 5 {
		e.signal("Counter", fmt.Sprintf("k%d", i), "add", fmt.Sprint(i+1))
	}
	e.signal(tallyName, "t1", "add", "10")
	for i := range 5 {
		e.waitState(counterID(fmt.Sprintf("k%d", i)), fmt.Sprint(i+1))
	}
	e.waitState(taskhub.NewEntityID(tallyName, "t1"), "10")

	list := func(e *env, path string, header ...string) ([]httpapi.Entity, string) {
		t := e.t
		t.Helper()
		r := e.do(http.MethodGet, path, "", header...)
		wantStatus(t, r, http.StatusOK)
		if r.body[0] != '[' {
			t.Fatalf("listing %s is not an array", r.body)
		}
		return decode[[]httpapi.Entity](t, r), r.header.Get(httpapi.ContinuationTokenHeader)
	}
	ids := func(list []httpapi.Entity) []string {
		var out []string
		for _, x := range list {
			out = append(out, x.EntityID.Name+"/"+x.EntityID.Key)
		}
		return out
	}

	t.Run("shape", func(t *testing.T) {
		e := e.sub(t)
		r := e.do(http.MethodGet, "/entities/Counter?top=1", "")
		wantStatus(t, r, http.StatusOK)
		var raw []map[string]json.RawMessage
		if err := json.Unmarshal(r.body, &raw); err != nil || len(raw) != 1 {
			t.Fatalf("listing %s: %v", r.body, err)
		}
		for _, k := range []string{"entityId", "lastOperationTime", "state"} {
			if _, ok := raw[0][k]; !ok {
				t.Fatalf("entity %s lacks %s", r.body, k)
			}
		}
		if string(raw[0]["entityId"]) != `{"name":"counter","key":"k0"}` || string(raw[0]["state"]) != "null" {
			t.Fatalf("entity %s", r.body)
		}
		var when string
		if err := json.Unmarshal(raw[0]["lastOperationTime"], &when); err != nil {
			t.Fatal(err)
		}
		if ts, err := time.Parse(time.RFC3339Nano, when); err != nil || !strings.HasSuffix(when, "Z") || time.Since(ts) > time.Minute {
			t.Fatalf("lastOperationTime %q (%v)", when, err)
		}
	})

	t.Run("filters and state", func(t *testing.T) {
		e := e.sub(t)
		all, _ := list(e, "/entities")
		if want := []string{"counter/k0", "counter/k1", "counter/k2", "counter/k3", "counter/k4", "tally/t1"}; !slices.Equal(ids(all), want) {
			t.Fatalf("all: %v, want %v", ids(all), want)
		}
		for _, x := range all {
			if !x.HasState || !isNull(x.State) || x.LockedBy != "" || x.BacklogQueueSize != 0 {
				t.Fatalf("entity without fetchState: %+v", x)
			}
		}
		if slash, _ := list(e, "/entities/"); !slices.Equal(ids(slash), ids(all)) {
			t.Fatalf("/entities/: %v", ids(slash))
		}
		for _, path := range []string{"/entities/COUNTER", "/entities/counter/", "/entities?namePrefix=co"} {
			if got, _ := list(e, path); len(got) != 5 || got[0].EntityID.Name != "counter" {
				t.Fatalf("%s: %v", path, ids(got))
			}
		}
		tally, _ := list(e, "/entities?namePrefix=T&fetchState=true")
		if len(tally) != 1 || string(tally[0].State) != "10" || tally[0].EntityID != (httpapi.EntityID{Name: "tally", Key: "t1"}) {
			t.Fatalf("tally: %+v", tally)
		}
		counters, _ := list(e, "/entities/Counter?fetchState=true")
		for i, x := range counters {
			if string(x.State) != fmt.Sprint(i+1) {
				t.Fatalf("counter %s state %s, want %d", x.EntityID.Key, x.State, i+1)
			}
		}
		if none, _ := list(e, "/entities/nobody"); len(none) != 0 {
			t.Fatalf("unknown name: %v", ids(none))
		}
	})

	t.Run("paging", func(t *testing.T) {
		e := e.sub(t)
		var got []string
		token, pages := "", 0
		for {
			var hdr []string
			if token != "" {
				hdr = []string{httpapi.ContinuationTokenHeader, token}
			}
			page, next := list(e, "/entities?top=2&fetchState=true", hdr...)
			pages++
			if len(page) > 2 {
				t.Fatalf("page of %d with top=2", len(page))
			}
			for _, x := range page {
				if isNull(x.State) {
					t.Fatalf("%v without its state", x.EntityID)
				}
			}
			got = append(got, ids(page)...)
			if token = next; token == "" {
				break
			}
		}
		if len(got) != 6 || pages != 3 || got[5] != "tally/t1" {
			t.Fatalf("listed %v in %d pages, want 6 in 3", got, pages)
		}
	})

	t.Run("deleted", func(t *testing.T) {
		e := e.sub(t)
		wantStatus(t, e.do(http.MethodDelete, "/entities/Counter/k4", ""), http.StatusAccepted)
		e.waitGone(counterID("k4"))
		if got, _ := list(e, "/entities/counter"); len(got) != 4 {
			t.Fatalf("after delete: %v", ids(got))
		}
		got, _ := list(e, "/entities/counter?includeDeleted=true&fetchState=true")
		if len(got) != 5 || got[4].EntityID.Key != "k4" || got[4].HasState || !isNull(got[4].State) {
			t.Fatalf("with includeDeleted: %+v", got)
		}
	})

	t.Run("locked", func(t *testing.T) {
		e := e.sub(t)
		e.start(holderName, "holder-1", `"k0"`)
		e.waitEntity(counterID("k0"), "locked", func(m *taskhub.EntityMetadata, err error) bool { return err == nil && m.LockedBy == "holder-1" })
		// A signal from a client waits behind the lock.
		e.signal("Counter", "k0", "add", "100")
		e.waitEntity(counterID("k0"), "backlog 1", func(m *taskhub.EntityMetadata, err error) bool { return err == nil && m.BacklogQueueSize == 1 })
		got, _ := list(e, "/entities/counter?top=1")
		if len(got) != 1 || got[0].LockedBy != "holder-1" || got[0].BacklogQueueSize != 1 {
			t.Fatalf("locked entity listed as %+v", got)
		}
		r := e.do(http.MethodGet, "/entities/counter/k0", "")
		if wantStatus(t, r, http.StatusOK); r.header.Get(httpapi.EntityLockedByHeader) != "holder-1" || r.header.Get(httpapi.EntityBacklogHeader) != "1" ||
			strings.TrimSpace(string(r.body)) != "1" {
			t.Fatalf("GET of a locked entity: %s, headers %v", r.body, r.header)
		}
		wantStatus(t, e.do(http.MethodPost, "/instances/holder-1/raiseEvent/release", ""), http.StatusAccepted)
		if st := e.waitDone("holder-1"); st.RuntimeStatus != taskhub.StatusCompleted || string(st.Output) != "1" {
			t.Fatalf("holder ended %s with %s", st.RuntimeStatus, st.Output)
		}
		m := e.waitState(counterID("k0"), "101")
		if m.LockedBy != "" || m.BacklogQueueSize != 0 {
			t.Fatalf("after release: %+v", m)
		}
	})
}

func TestEntityAuth(t *testing.T) {
	t.Parallel()
	const key = "entity-key-0123456789"
	e := newEntityEnv(t, httpapi.Options{Keys: []string{key}})
	for _, c := range []struct{ method, path string }{
		{http.MethodPost, "/entities/Counter/a?op=add"},
		{http.MethodGet, "/entities/Counter/a"},
		{http.MethodDelete, "/entities/Counter/a"},
		{http.MethodGet, "/entities"},
		{http.MethodGet, "/entities/Counter"},
		{http.MethodPut, "/entities/Counter/a"},
	} {
		r := e.do(c.method, c.path, "1")
		wantError(t, r, http.StatusUnauthorized, httpapi.CodeUnauthorized)
		r = e.do(c.method, c.path, "1", "x-functions-key", "wrong")
		wantError(t, r, http.StatusUnauthorized, httpapi.CodeUnauthorized)
	}
	wantStatus(t, e.do(http.MethodPost, "/entities/Counter/a?op=add&code="+key, "4"), http.StatusAccepted)
	e.waitState(counterID("a"), "4")
	wantStatus(t, e.do(http.MethodGet, "/entities/Counter/a", "", "x-functions-key", key), http.StatusOK)
	wantStatus(t, e.do(http.MethodGet, "/entities", "", "Authorization", "Bearer "+key), http.StatusOK)
	wantStatus(t, e.do(http.MethodDelete, "/entities/Counter/a", "", "x-functions-key", key), http.StatusAccepted)
	e.waitGone(counterID("a"))
}
