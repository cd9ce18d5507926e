package httpapi_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/taskhub/taskhub"
	"github.com/taskhub/taskhub/backend/sqlite"
	"github.com/taskhub/taskhub/httpapi"
	"github.com/taskhub/taskhub/samples"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// startWorker runs a worker with the functions of register on a fresh
// SQLite hub and returns its client.
func startWorker(tb testing.TB, register func(*taskhub.Registry) error) *taskhub.Client {
	tb.Helper()
	be, err := sqlite.Open(filepath.Join(tb.TempDir(), "hub.db"), sqlite.Options{})
	if err != nil {
		tb.Fatalf("open sqlite: %v", err)
	}
	tb.Cleanup(func() { be.Close() })
	reg := taskhub.NewRegistry()
	if err := register(reg); err != nil {
		tb.Fatalf("register: %v", err)
	}
	w, err := taskhub.NewWorker(be, reg, taskhub.WorkerOptions{
		Logger:               quietLogger(),
		LeaseDuration:        2 * time.Second,
		LeaseRenewInterval:   500 * time.Millisecond,
		LeaseAcquireInterval: 200 * time.Millisecond,
	})
	if err != nil {
		tb.Fatalf("NewWorker: %v", err)
	}
	if err := w.Start(context.Background()); err != nil {
		tb.Fatalf("Start: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := w.Stop(ctx); err != nil {
			tb.Errorf("Stop: %v", err)
		}
	})
	return w.Client()
}

// env is the API on a real HTTP server in front of a real worker with the
// samples.
type env struct {
	t      *testing.T
	client *taskhub.Client
	srv    *httptest.Server
	base   string // server URL + base path
}

func newEnv(t *testing.T, opts httpapi.Options) *env {
	t.Helper()
	return newEnvWith(t, opts, samples.Register)
}

// newEnvWith is newEnv with the functions of register.
func newEnvWith(t *testing.T, opts httpapi.Options, register func(*taskhub.Registry) error) *env {
	t.Helper()
	client := startWorker(t, register)
	if opts.Logger == nil {
		opts.Logger = quietLogger()
	}
	srv := httptest.NewServer(httpapi.New(client, opts))
	t.Cleanup(srv.Close)
	base := opts.BasePath
	if base == "" {
		base = httpapi.BasePathDefault
	}
	return &env{t: t, client: client, srv: srv, base: srv.URL + strings.TrimSuffix(base, "/")}
}

// sub returns the env for a subtest, so that its failures stop the
// subtest.
func (e *env) sub(t *testing.T) *env {
	c := *e
	c.t = t
	return &c
}

func isNull(raw json.RawMessage) bool { return len(raw) == 0 || string(raw) == "null" }

func (e *env) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	e.t.Cleanup(cancel)
	return ctx
}

// response is an answer read in full.
type response struct {
	status int
	header http.Header
	body   []byte
}

// do sends a request to path (relative to the base path unless it is a
// full URL) with body (none when empty) and header pairs.
func (e *env) do(method, path, body string, header ...string) *response {
	e.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	return e.doReader(method, path, rd, header...)
}

func (e *env) doReader(method, path string, body io.Reader, header ...string) *response {
	e.t.Helper()
	url := path
	if !strings.HasPrefix(path, "http") {
		url = e.base + path
	}
	req, err := http.NewRequestWithContext(e.ctx(), method, url, body)
	if err != nil {
		e.t.Fatalf("new request: %v", err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return &response{status: res.StatusCode, header: res.Header, body: b}
}

func (r *response) String() string { return string(r.body) }

func wantStatus(t *testing.T, r *response, status int) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d; body %s", r.status, status, r.body)
	}
}

// wantError checks a JSON error answer with its code.
func wantError(t *testing.T, r *response, status int, code string) *httpapi.ErrorDetail {
	t.Helper()
	wantStatus(t, r, status)
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("Content-Type %q, want JSON; body %s", ct, r.body)
	}
	var body httpapi.ErrorBody
	if err := json.Unmarshal(r.body, &body); err != nil || body.Error == nil {
		t.Fatalf("error body %s: %v", r.body, err)
	}
	if body.Error.Code != code || body.Error.Message == "" {
		t.Fatalf("error %+v, want code %s with a message", body.Error, code)
	}
	return body.Error
}

func decode[T any](t *testing.T, r *response) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatalf("decode %T from %s: %v", v, r.body, err)
	}
	return v
}

// start posts to the start route and checks the 202 answer.
func (e *env) start(function, id, input string) *httpapi.ManagementPayload {
	e.t.Helper()
	path := "/orchestrators/" + function
	if id != "" {
		path += "/" + id
	}
	r := e.do(http.MethodPost, path, input)
	wantStatus(e.t, r, http.StatusAccepted)
	p := decode[*httpapi.ManagementPayload](e.t, r)
	if id != "" && p.ID != id {
		e.t.Fatalf("started %q, want %q", p.ID, id)
	}
	if loc := r.header.Get("Location"); loc != p.StatusQueryGetURI {
		e.t.Fatalf("Location %q, want the status URI %q", loc, p.StatusQueryGetURI)
	}
	return p
}

func (e *env) waitDone(id string) *taskhub.InstanceStatus {
	e.t.Helper()
	st, err := e.client.WaitForInstanceCompletion(e.ctx(), id)
	if err != nil {
		e.t.Fatalf("wait for %s: %v", id, err)
	}
	return st
}

func (e *env) waitStatus(id string, status taskhub.Status) {
	e.t.Helper()
	_, err := e.client.WaitForInstance(e.ctx(), id, func(s *taskhub.InstanceStatus) bool { return s.RuntimeStatus == status })
	if err != nil {
		e.t.Fatalf("wait for %s to be %s: %v", id, status, err)
	}
}

// startApproval starts an Approval waiting an hour for its event and waits
// until it runs.
func (e *env) startApproval(id string) {
	e.t.Helper()
	e.start(samples.ApprovalName, id, `{"timeoutSeconds":0}`)
	if _, err := e.client.WaitForInstanceStart(e.ctx(), id); err != nil {
		e.t.Fatalf("wait for start of %s: %v", id, err)
	}
}
