package httpapi_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
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

const helloOutput = `["Hello Tokyo!","Hello Seattle!","Hello London!"]`

func TestStartOrchestration(t *testing.T) {
	t.Parallel()
	e := newEnv(t, httpapi.Options{})

	t.Run("no body, generated ID", func(t *testing.T) {
		e := e.sub(t)
		r := e.do(http.MethodPost, "/orchestrators/"+samples.HelloSequenceName, "")
		wantStatus(t, r, http.StatusAccepted)
		if r.header.Get("Retry-After") != "10" {
			t.Fatalf("Retry-After %q, want 10", r.header.Get("Retry-After"))
		}
		var raw map[string]string
		if err := json.Unmarshal(r.body, &raw); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"id", "statusQueryGetUri", "sendEventPostUri", "terminatePostUri", "purgeHistoryDeleteUri", "suspendPostUri", "resumePostUri"} {
			if raw[k] == "" {
				t.Fatalf("payload %s lacks %s", r.body, k)
			}
		}
		id := raw["id"]
		inst := e.base + "/instances/" + id
		want := map[string]string{
			"statusQueryGetUri":     inst,
			"sendEventPostUri":      inst + "/raiseEvent/{eventName}",
			"terminatePostUri":      inst + "/terminate?reason={text}",
			"purgeHistoryDeleteUri": inst,
			"suspendPostUri":        inst + "/suspend?reason={text}",
			"resumePostUri":         inst + "/resume?reason={text}",
			"restartPostUri":        inst + "/restart",
		}
		for k, v := range want {
			if raw[k] != v {
				t.Errorf("%s = %q, want %q", k, raw[k], v)
			}
		}
		if r.header.Get("Location") != inst {
			t.Errorf("Location %q, want %q", r.header.Get("Location"), inst)
		}
		st := e.waitDone(id)
		if st.RuntimeStatus != taskhub.StatusCompleted || string(st.Output) != helloOutput || st.Input != nil {
			t.Fatalf("instance %s output %s input %s", st.RuntimeStatus, st.Output, st.Input)
		}
	})

	t.Run("explicit ID and input", func(t *testing.T) {
		e := e.sub(t)
		e.start(samples.FanOutFanInName, "fan-1", " 3 \n")
		st := e.waitDone("fan-1")
		if string(st.Output) != "3" || string(st.Input) != "3" {
			t.Fatalf("output %s input %s, want 3 and 3", st.Output, st.Input)
		}
		// A finished instance's ID can be reused, as in Durable Functions.
		e.start(samples.FanOutFanInName, "fan-1", "2")
		if st := e.waitDone("fan-1"); string(st.Output) != "2" {
			t.Fatalf("reused ID: output %s, want 2", st.Output)
		}
	})

	t.Run("escaped instance ID", func(t *testing.T) {
		e := e.sub(t)
		r := e.do(http.MethodPost, "/orchestrators/HelloSequence/with%20space", "")
		wantStatus(t, r, http.StatusAccepted)
		if p := decode[httpapi.ManagementPayload](t, r); p.ID != "with space" || !strings.HasSuffix(p.StatusQueryGetURI, "/instances/with%20space") {
			t.Fatalf("payload %+v", p)
		}
		e.waitDone("with space")
		wantStatus(t, e.do(http.MethodGet, "/instances/with%20space", ""), http.StatusOK)
	})

	t.Run("running instance ID", func(t *testing.T) {
		e := e.sub(t)
		e.startApproval("dup-1")
		r := e.do(http.MethodPost, "/orchestrators/"+samples.ApprovalName+"/dup-1", `{"timeoutSeconds":0}`)
		wantError(t, r, http.StatusConflict, httpapi.CodeInstanceExists)
	})

	t.Run("invalid requests", func(t *testing.T) {
		e := e.sub(t)
		for _, c := range []struct {
			path, body string
			code       string
		}{
			{"/orchestrators/HelloSequence/@entity", "", httpapi.CodeInvalidInstanceID},
			{"/orchestrators/HelloSequence/a%5Cb", "", httpapi.CodeInvalidInstanceID},
			{"/orchestrators/HelloSequence/a%2Fb", "", httpapi.CodeInvalidInstanceID},
			{"/orchestrators/HelloSequence/tab%09", "", httpapi.CodeInvalidInstanceID},
			{"/orchestrators/HelloSequence/" + strings.Repeat("x", taskhub.MaxInstanceIDLength+1), "", httpapi.CodeInvalidInstanceID},
			{"/orchestrators/bad%01name", "", httpapi.CodeInvalidFunctionName},
			{"/orchestrators/%FF", "", httpapi.CodeInvalidFunctionName},
			{"/orchestrators/" + strings.Repeat("n", 257), "", httpapi.CodeInvalidFunctionName},
			{"/orchestrators/HelloSequence", "{", httpapi.CodeInvalidJSON},
			{"/orchestrators/HelloSequence", "{} {}", httpapi.CodeInvalidJSON},
			{"/orchestrators/HelloSequence", "nope", httpapi.CodeInvalidJSON},
			{"/orchestrators/FanOutFanIn", `"many"`, httpapi.CodeInvalidInput},
		} {
			wantError(t, e.do(http.MethodPost, c.path, c.body), http.StatusBadRequest, c.code)
		}
	})
}

func TestInstanceStatus(t *testing.T) {
	t.Parallel()
	e := newEnv(t, httpapi.Options{})

	t.Run("unknown and invalid", func(t *testing.T) {
		e := e.sub(t)
		wantError(t, e.do(http.MethodGet, "/instances/nobody", ""), http.StatusNotFound, httpapi.CodeInstanceNotFound)
		wantError(t, e.do(http.MethodGet, "/instances/@x", ""), http.StatusBadRequest, httpapi.CodeInvalidInstanceID)
		wantError(t, e.do(http.MethodGet, "/instances/x?showHistory=maybe", ""), http.StatusBadRequest, httpapi.CodeInvalidParameter)
		wantError(t, e.do(http.MethodGet, "/instances/x?showInput=2", ""), http.StatusBadRequest, httpapi.CodeInvalidParameter)
	})

	t.Run("running", func(t *testing.T) {
		e := e.sub(t)
		e.startApproval("run-1")
		r := e.do(http.MethodGet, "/instances/run-1", "")
		wantStatus(t, r, http.StatusAccepted)
		if r.header.Get("Location") != e.base+"/instances/run-1" || r.header.Get("Retry-After") != "10" {
			t.Fatalf("polling headers: Location %q Retry-After %q", r.header.Get("Location"), r.header.Get("Retry-After"))
		}
		in := decode[httpapi.Instance](t, r)
		if in.RuntimeStatus != taskhub.StatusRunning || in.Name != samples.ApprovalName || string(in.Input) != `{"timeoutSeconds":0}` {
			t.Fatalf("status %+v", in)
		}
		in = decode[httpapi.Instance](t, e.do(http.MethodGet, "/instances/run-1?showInput=false", ""))
		if !isNull(in.Input) {
			t.Fatalf("showInput=false: input %s", in.Input)
		}
	})

	t.Run("completed", func(t *testing.T) {
		e := e.sub(t)
		before := time.Now().Add(-time.Second)
		e.start(samples.HelloSequenceName, "done-1", "")
		e.waitDone("done-1")
		r := e.do(http.MethodGet, "/instances/done-1", "")
		wantStatus(t, r, http.StatusOK)
		if r.header.Get("Location") != "" {
			t.Fatalf("a finished instance has Location %q", r.header.Get("Location"))
		}
		// Every Durable Functions member is present, null when absent.
		var raw map[string]json.RawMessage
		if err := json.Unmarshal(r.body, &raw); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"name", "instanceId", "runtimeStatus", "input", "customStatus", "output", "createdTime", "lastUpdatedTime"} {
			if _, ok := raw[k]; !ok {
				t.Fatalf("status %s lacks %s", r.body, k)
			}
		}
		if _, ok := raw["historyEvents"]; ok {
			t.Fatalf("historyEvents without showHistory: %s", r.body)
		}
		if string(raw["customStatus"]) != "null" || string(raw["input"]) != "null" || string(raw["output"]) != helloOutput {
			t.Fatalf("status %s", r.body)
		}
		in := decode[httpapi.Instance](t, r)
		if in.InstanceID != "done-1" || in.Name != samples.HelloSequenceName || in.RuntimeStatus != taskhub.StatusCompleted {
			t.Fatalf("status %+v", in)
		}
		created, err1 := time.Parse(time.RFC3339, in.CreatedTime)
		updated, err2 := time.Parse(time.RFC3339, in.LastUpdatedTime)
		if err := errors.Join(err1, err2); err != nil || !strings.HasSuffix(in.CreatedTime, "Z") || strings.Contains(in.CreatedTime, ".") {
			t.Fatalf("times %q %q: want RFC 3339 UTC seconds (%v)", in.CreatedTime, in.LastUpdatedTime, err)
		}
		if created.Before(before.Truncate(time.Second)) || updated.Before(created) || created.After(time.Now()) {
			t.Fatalf("createdTime %s lastUpdatedTime %s", created, updated)
		}
	})

	t.Run("history", func(t *testing.T) {
		e := e.sub(t)
		events := func(query string) map[string][]*taskhub.HistoryEvent {
			t.Helper()
			in := decode[httpapi.Instance](t, e.do(http.MethodGet, "/instances/done-1?"+query, ""))
			byType := map[string][]*taskhub.HistoryEvent{}
			for _, ev := range in.HistoryEvents {
				byType[ev.Type] = append(byType[ev.Type], ev)
			}
			return byType
		}
		hidden := events("showHistory=true")
		if len(hidden["TaskScheduled"]) != 3 || len(hidden["TaskCompleted"]) != 3 || len(hidden["ExecutionCompleted"]) != 1 {
			t.Fatalf("history %v", hidden)
		}
		for _, ev := range append(hidden["TaskCompleted"], hidden["ExecutionCompleted"]...) {
			if !isNull(ev.Input) {
				t.Fatalf("%s shows its output %s without showHistoryOutput", ev.Type, ev.Input)
			}
		}
		shown := events("showHistory=true&showHistoryOutput=true")
		if got := string(shown["TaskCompleted"][0].Input); got != `"Hello Tokyo!"` {
			t.Fatalf("TaskCompleted output %s with showHistoryOutput", got)
		}
		if got := string(shown["ExecutionCompleted"][0].Input); got != helloOutput {
			t.Fatalf("ExecutionCompleted output %s with showHistoryOutput", got)
		}
		if got := string(shown["TaskScheduled"][0].Input); got != `"Tokyo"` {
			t.Fatalf("TaskScheduled input %s", got)
		}
	})

	t.Run("failed", func(t *testing.T) {
		e := e.sub(t)
		e.start(samples.FanOutFanInName, "fail-1", "-1")
		if st := e.waitDone("fail-1"); st.RuntimeStatus != taskhub.StatusFailed {
			t.Fatalf("status %s, want Failed", st.RuntimeStatus)
		}
		r := e.do(http.MethodGet, "/instances/fail-1", "")
		wantStatus(t, r, http.StatusOK)
		in := decode[httpapi.Instance](t, r)
		var msg string
		if err := json.Unmarshal(in.Output, &msg); err != nil || !strings.Contains(msg, "negative") || in.FailureDetails == nil {
			t.Fatalf("failed status: output %s failure %+v", in.Output, in.FailureDetails)
		}
		r = e.do(http.MethodGet, "/instances/fail-1?returnInternalServerErrorOnFailure=true", "")
		wantError(t, r, http.StatusInternalServerError, httpapi.CodeInstanceFailed)
		if in := decode[httpapi.Instance](t, r); in.RuntimeStatus != taskhub.StatusFailed || in.InstanceID != "fail-1" {
			t.Fatalf("500 body %s lacks the status", r.body)
		}
	})
}

func TestListInstances(t *testing.T) {
	t.Parallel()
	e := newEnv(t, httpapi.Options{})
	begin := time.Now().Add(-2 * time.Second)
	for i := range 5 {
		e.start(samples.FanOutFanInName, fmt.Sprintf("list-%d", i), fmt.Sprint(i+1))
	}
	for i := range 5 {
		e.waitDone(fmt.Sprintf("list-%d", i))
	}
	e.startApproval("other-1")

	list := func(e *env, query string, header ...string) ([]httpapi.Instance, string) {
		t := e.t
		t.Helper()
		r := e.do(http.MethodGet, "/instances?"+query, "", header...)
		wantStatus(t, r, http.StatusOK)
		if r.body[0] != '[' {
			t.Fatalf("listing %s is not an array", r.body)
		}
		return decode[[]httpapi.Instance](t, r), r.header.Get(httpapi.ContinuationTokenHeader)
	}
	ids := func(in []httpapi.Instance) []string {
		var out []string
		for _, x := range in {
			out = append(out, x.InstanceID)
		}
		return out
	}

	t.Run("paging", func(t *testing.T) {
		e := e.sub(t)
		var got []string
		token, pages := "", 0
		for {
			var hdr []string
			if token != "" {
				hdr = []string{httpapi.ContinuationTokenHeader, token}
			}
			page, next := list(e, "instanceIdPrefix=list-&top=2", hdr...)
			pages++
			if len(page) > 2 {
				t.Fatalf("page of %d with top=2", len(page))
			}
			for _, in := range page {
				if !isNull(in.Input) {
					t.Fatalf("input %s shown without showInput", in.Input)
				}
			}
			got = append(got, ids(page)...)
			if token = next; token == "" {
				break
			}
		}
		if want := []string{"list-0", "list-1", "list-2", "list-3", "list-4"}; !slices.Equal(got, want) || pages != 3 {
			t.Fatalf("listed %v in %d pages, want %v in 3", got, pages, want)
		}
	})

	t.Run("filters", func(t *testing.T) {
		e := e.sub(t)
		all, _ := list(e, "")
		if len(all) != 6 {
			t.Fatalf("listed %v, want 6 instances", ids(all))
		}
		slash, _ := list(e, "")
		if r := e.do(http.MethodGet, "/instances/", ""); r.status != http.StatusOK || len(decode[[]httpapi.Instance](t, r)) != len(slash) {
			t.Fatalf("/instances/ answered %d %s", r.status, r.body)
		}
		running, _ := list(e, "runtimeStatus=running")
		if !slices.Equal(ids(running), []string{"other-1"}) {
			t.Fatalf("running: %v", ids(running))
		}
		done, _ := list(e, "runtimeStatus=Completed,%20Failed&instanceIdPrefix=list-&showInput=true")
		if len(done) != 5 || string(done[2].Input) != "3" || string(done[2].Output) != "3" {
			t.Fatalf("completed with input: %+v", done)
		}
		window := url.Values{"createdTimeFrom": {begin.UTC().Format(time.RFC3339Nano)}, "createdTimeTo": {time.Now().Add(time.Minute).UTC().Format(time.RFC3339)}}
		if in, _ := list(e, window.Encode()); len(in) != 6 {
			t.Fatalf("window: %v", ids(in))
		}
		future := url.Values{"createdTimeFrom": {time.Now().Add(time.Hour).UTC().Format(time.RFC3339)}}
		r := e.do(http.MethodGet, "/instances?"+future.Encode(), "")
		if wantStatus(t, r, http.StatusOK); strings.TrimSpace(string(r.body)) != "[]" {
			t.Fatalf("future: %s, want []", r.body)
		}
	})

	t.Run("invalid", func(t *testing.T) {
		e := e.sub(t)
		for _, c := range []struct {
			query, code string
			header      []string
		}{
			{"top=0", httpapi.CodeInvalidParameter, nil},
			{"top=-1", httpapi.CodeInvalidParameter, nil},
			{"top=abc", httpapi.CodeInvalidParameter, nil},
			{"top=1001", httpapi.CodeInvalidParameter, nil},
			{"runtimeStatus=Bogus", httpapi.CodeInvalidParameter, nil},
			{"runtimeStatus=Running,", httpapi.CodeInvalidParameter, nil},
			{"createdTimeFrom=yesterday", httpapi.CodeInvalidParameter, nil},
			{"createdTimeFrom=2024-01-02", httpapi.CodeInvalidParameter, nil},
			{"createdTimeFrom=2024-01-02T00:00:00Z&createdTimeTo=2024-01-01T00:00:00Z", httpapi.CodeInvalidParameter, nil},
			{"showInput=yes", httpapi.CodeInvalidParameter, nil},
			{"instanceIdPrefix=@x", httpapi.CodeInvalidInstanceID, nil},
			{"a=%zz", httpapi.CodeInvalidParameter, nil},
			{"a=1;b=2", httpapi.CodeInvalidParameter, nil},
			{"", httpapi.CodeInvalidContinuationToken, []string{httpapi.ContinuationTokenHeader, "!!!"}},
			{"", httpapi.CodeInvalidContinuationToken, []string{httpapi.ContinuationTokenHeader, "a b"}},
			{"", httpapi.CodeInvalidContinuationToken, []string{httpapi.ContinuationTokenHeader, strings.Repeat("A", 5000)}},
		} {
			wantError(t, e.do(http.MethodGet, "/instances?"+c.query, "", c.header...), http.StatusBadRequest, c.code)
		}
	})
}

func TestRaiseEvent(t *testing.T) {
	t.Parallel()
	e := newEnv(t, httpapi.Options{})
	e.startApproval("ev-1")
	wantError(t, e.do(http.MethodPost, "/instances/ev-1/raiseEvent/Approval", `{"approved":`), http.StatusBadRequest, httpapi.CodeInvalidJSON)
	wantError(t, e.do(http.MethodPost, "/instances/ev-1/raiseEvent/bad%0Aname", `{}`), http.StatusBadRequest, httpapi.CodeInvalidEventName)
	wantError(t, e.do(http.MethodPost, "/instances/@ev/raiseEvent/Approval", `{}`), http.StatusBadRequest, httpapi.CodeInvalidInstanceID)
	wantError(t, e.do(http.MethodPost, "/instances/nobody/raiseEvent/Approval", `{}`), http.StatusNotFound, httpapi.CodeInstanceNotFound)

	r := e.do(http.MethodPost, "/instances/ev-1/raiseEvent/Approval", `{"approved": true}`)
	if wantStatus(t, r, http.StatusAccepted); len(r.body) != 0 {
		t.Fatalf("202 with body %s", r.body)
	}
	if st := e.waitDone("ev-1"); string(st.Output) != `"approved"` {
		t.Fatalf("output %s, want approved", st.Output)
	}
	wantError(t, e.do(http.MethodPost, "/instances/ev-1/raiseEvent/Approval", `{}`), http.StatusGone, httpapi.CodeInstanceFinished)

	// No body: the event carries null, which Approval reads as not approved.
	e.startApproval("ev-2")
	wantStatus(t, e.do(http.MethodPost, "/instances/ev-2/raiseEvent/Approval", ""), http.StatusAccepted)
	if st := e.waitDone("ev-2"); string(st.Output) != `"rejected"` {
		t.Fatalf("output %s, want rejected", st.Output)
	}
}

func TestTerminateSuspendResume(t *testing.T) {
	t.Parallel()
	e := newEnv(t, httpapi.Options{})
	e.startApproval("ctl-1")

	for _, op := range []string{"terminate", "suspend", "resume"} {
		wantError(t, e.do(http.MethodPost, "/instances/nobody/"+op, ""), http.StatusNotFound, httpapi.CodeInstanceNotFound)
		wantError(t, e.do(http.MethodPost, "/instances/@x/"+op, ""), http.StatusBadRequest, httpapi.CodeInvalidInstanceID)
		wantError(t, e.do(http.MethodPost, "/instances/ctl-1/"+op+"?reason=%FF", ""), http.StatusBadRequest, httpapi.CodeInvalidParameter)
		wantError(t, e.do(http.MethodGet, "/instances/ctl-1/"+op, ""), http.StatusMethodNotAllowed, httpapi.CodeMethodNotAllowed)
	}
	wantError(t, e.do(http.MethodPost, "/instances/ctl-1/terminate?recursive=perhaps", ""), http.StatusBadRequest, httpapi.CodeInvalidParameter)

	wantStatus(t, e.do(http.MethodPost, "/instances/ctl-1/suspend?reason=hold", ""), http.StatusAccepted)
	e.waitStatus("ctl-1", taskhub.StatusSuspended)
	r := e.do(http.MethodGet, "/instances/ctl-1", "")
	if wantStatus(t, r, http.StatusAccepted); decode[httpapi.Instance](t, r).RuntimeStatus != taskhub.StatusSuspended || r.header.Get("Retry-After") == "" {
		t.Fatalf("suspended status %s", r.body)
	}

	wantStatus(t, e.do(http.MethodPost, "/instances/ctl-1/resume?reason=go", ""), http.StatusAccepted)
	e.waitStatus("ctl-1", taskhub.StatusRunning)

	wantStatus(t, e.do(http.MethodPost, "/instances/ctl-1/terminate?reason=enough%20now", ""), http.StatusAccepted)
	if st := e.waitDone("ctl-1"); st.RuntimeStatus != taskhub.StatusTerminated || string(st.Output) != `"enough now"` {
		t.Fatalf("terminated: %s output %s", st.RuntimeStatus, st.Output)
	}
	r = e.do(http.MethodGet, "/instances/ctl-1", "")
	if wantStatus(t, r, http.StatusOK); decode[httpapi.Instance](t, r).RuntimeStatus != taskhub.StatusTerminated {
		t.Fatalf("terminated status %s", r.body)
	}
	for _, op := range []string{"terminate", "suspend", "resume"} {
		wantError(t, e.do(http.MethodPost, "/instances/ctl-1/"+op, ""), http.StatusGone, httpapi.CodeInstanceFinished)
	}
}

func TestRestart(t *testing.T) {
	t.Parallel()
	e := newEnv(t, httpapi.Options{})
	e.start(samples.FanOutFanInName, "rs-1", "2")
	e.waitDone("rs-1")

	r := e.do(http.MethodPost, "/instances/rs-1/restart", "")
	wantStatus(t, r, http.StatusAccepted)
	p := decode[httpapi.ManagementPayload](t, r)
	if p.ID == "rs-1" || p.ID == "" || r.header.Get("Location") != p.StatusQueryGetURI {
		t.Fatalf("restart payload %+v, Location %q", p, r.header.Get("Location"))
	}
	if st := e.waitDone(p.ID); st.Name != samples.FanOutFanInName || string(st.Input) != "2" || string(st.Output) != "2" {
		t.Fatalf("restarted %s: input %s output %s", st.Name, st.Input, st.Output)
	}

	r = e.do(http.MethodPost, "/instances/rs-1/restart?restartWithNewInstanceId=false", "")
	wantStatus(t, r, http.StatusAccepted)
	if p := decode[httpapi.ManagementPayload](t, r); p.ID != "rs-1" {
		t.Fatalf("restart in place started %q", p.ID)
	}
	if st := e.waitDone("rs-1"); st.RuntimeStatus != taskhub.StatusCompleted || string(st.Output) != "2" {
		t.Fatalf("restarted in place: %s %s", st.RuntimeStatus, st.Output)
	}

	e.startApproval("rs-run")
	wantError(t, e.do(http.MethodPost, "/instances/rs-run/restart?restartWithNewInstanceId=false", ""), http.StatusConflict, httpapi.CodeInstanceExists)
	wantError(t, e.do(http.MethodPost, "/instances/nobody/restart", ""), http.StatusNotFound, httpapi.CodeInstanceNotFound)
	wantError(t, e.do(http.MethodPost, "/instances/rs-1/restart?restartWithNewInstanceId=maybe", ""), http.StatusBadRequest, httpapi.CodeInvalidParameter)
}

func TestRewind(t *testing.T) {
	t.Parallel()
	e := newEnv(t, httpapi.Options{})
	wantError(t, e.do(http.MethodPost, "/instances/any/rewind?reason=retry", ""), http.StatusNotFound, httpapi.CodeInstanceNotFound)
	wantError(t, e.do(http.MethodPost, "/instances/@x/rewind", ""), http.StatusBadRequest, httpapi.CodeInvalidInstanceID)

	e.start(samples.HelloSequenceName, "rw-ok", "")
	e.waitDone("rw-ok")
	wantError(t, e.do(http.MethodPost, "/instances/rw-ok/rewind", ""), http.StatusConflict, httpapi.CodeInstanceNotFailed)

	// A negative fan-out size fails the orchestration; rewinding it is
	// accepted (and, the input being what it is, fails again).
	e.start(samples.FanOutFanInName, "rw-failed", "-1")
	e.waitDone("rw-failed")
	wantStatus(t, e.do(http.MethodPost, "/instances/rw-failed/rewind?reason=retry", ""), http.StatusAccepted)
}

func TestPurge(t *testing.T) {
	t.Parallel()
	e := newEnv(t, httpapi.Options{})
	begin := time.Now().Add(-2 * time.Second).UTC().Format(time.RFC3339)

	t.Run("one", func(t *testing.T) {
		e := e.sub(t)
		e.start(samples.HelloSequenceName, "pg-1", "")
		e.waitDone("pg-1")
		r := e.do(http.MethodDelete, "/instances/pg-1", "")
		if wantStatus(t, r, http.StatusOK); strings.TrimSpace(string(r.body)) != `{"instancesDeleted":1}` {
			t.Fatalf("purge answered %s", r.body)
		}
		wantError(t, e.do(http.MethodGet, "/instances/pg-1", ""), http.StatusNotFound, httpapi.CodeInstanceNotFound)
		wantError(t, e.do(http.MethodDelete, "/instances/pg-1", ""), http.StatusNotFound, httpapi.CodeInstanceNotFound)
		wantError(t, e.do(http.MethodDelete, "/instances/@x", ""), http.StatusBadRequest, httpapi.CodeInvalidInstanceID)
		e.startApproval("pg-run")
		wantError(t, e.do(http.MethodDelete, "/instances/pg-run", ""), http.StatusBadRequest, httpapi.CodeInstanceNotFinished)
	})

	t.Run("by filter", func(t *testing.T) {
		e := e.sub(t)
		for i := range 3 {
			e.start(samples.HelloSequenceName, fmt.Sprintf("bulk-%d", i), "")
		}
		for i := range 3 {
			e.waitDone(fmt.Sprintf("bulk-%d", i))
		}
		e.startApproval("bulk-run")
		wantError(t, e.do(http.MethodDelete, "/instances", ""), http.StatusBadRequest, httpapi.CodeMissingParameter)
		wantError(t, e.do(http.MethodDelete, "/instances?createdTimeFrom="+begin+"&runtimeStatus=Running", ""), http.StatusBadRequest, httpapi.CodeInvalidParameter)
		wantError(t, e.do(http.MethodDelete, "/instances?createdTimeFrom=soon", ""), http.StatusBadRequest, httpapi.CodeInvalidParameter)
		q := "/instances?createdTimeFrom=" + begin + "&instanceIdPrefix=bulk-&runtimeStatus=Completed,Failed,Terminated"
		r := e.do(http.MethodDelete, q, "")
		if wantStatus(t, r, http.StatusOK); strings.TrimSpace(string(r.body)) != `{"instancesDeleted":3}` {
			t.Fatalf("purge answered %s", r.body)
		}
		wantStatus(t, e.do(http.MethodGet, "/instances/bulk-run", ""), http.StatusAccepted)
		r = e.do(http.MethodDelete, q, "")
		if wantStatus(t, r, http.StatusOK); strings.TrimSpace(string(r.body)) != `{"instancesDeleted":0}` {
			t.Fatalf("second purge answered %s", r.body)
		}
	})
}

func TestAuth(t *testing.T) {
	t.Parallel()
	const key1, key2 = "key-one-0123456789", "key-two-0123456789"
	e := newEnv(t, httpapi.Options{Keys: []string{key1, key2}})

	refused := func(r *response) {
		t.Helper()
		wantError(t, r, http.StatusUnauthorized, httpapi.CodeUnauthorized)
		if r.header.Get("WWW-Authenticate") == "" {
			t.Fatal("401 without WWW-Authenticate")
		}
	}
	refused(e.do(http.MethodGet, "/instances", ""))
	refused(e.do(http.MethodGet, "/no/such/route", ""))
	refused(e.do(http.MethodGet, "/instances?a=%zz", ""))
	refused(e.do(http.MethodPost, "/orchestrators/HelloSequence", ""))
	refused(e.do(http.MethodGet, "/instances?code=wrong", ""))
	refused(e.do(http.MethodGet, "/instances?code=", ""))
	refused(e.do(http.MethodGet, "/instances", "", "x-functions-key", "wrong"))
	refused(e.do(http.MethodGet, "/instances", "", "Authorization", "Bearer wrong"))
	refused(e.do(http.MethodGet, "/instances", "", "Authorization", "Basic "+key1))
	refused(e.do(http.MethodGet, "/instances", "", "Authorization", key1))
	refused(e.do(http.MethodGet, "/instances?code="+key1[:len(key1)-1], ""))

	wantStatus(t, e.do(http.MethodGet, "/instances?code="+key1, ""), http.StatusOK)
	wantStatus(t, e.do(http.MethodGet, "/instances", "", "x-functions-key", key2), http.StatusOK)
	wantStatus(t, e.do(http.MethodGet, "/instances", "", "Authorization", "Bearer "+key1), http.StatusOK)
	wantStatus(t, e.do(http.MethodGet, "/instances", "", "Authorization", "bearer "+key2), http.StatusOK)
	// Authenticated, the malformed query is reported.
	wantError(t, e.do(http.MethodGet, "/instances?a=%zz", "", "x-functions-key", key1), http.StatusBadRequest, httpapi.CodeInvalidParameter)

	// A key given as code is carried by the management URIs, so they can
	// be followed as they are; a key given in a header is not.
	r := e.do(http.MethodPost, "/orchestrators/HelloSequence?code="+key2, "")
	wantStatus(t, r, http.StatusAccepted)
	p := decode[httpapi.ManagementPayload](t, r)
	if !strings.HasSuffix(p.StatusQueryGetURI, "?code="+key2) || !strings.HasSuffix(p.TerminatePostURI, "?reason={text}&code="+key2) {
		t.Fatalf("payload without the code: %+v", p)
	}
	e.waitDone(p.ID)
	wantStatus(t, e.do(http.MethodGet, p.StatusQueryGetURI, ""), http.StatusOK)
	r = e.do(http.MethodPost, "/orchestrators/HelloSequence", "", "x-functions-key", key1)
	if p := decode[httpapi.ManagementPayload](t, r); strings.Contains(p.StatusQueryGetURI, "code=") {
		t.Fatalf("header key copied into %s", p.StatusQueryGetURI)
	}

	t.Run("empty key never matches", func(t *testing.T) {
		e := newEnv(t, httpapi.Options{Keys: []string{""}})
		wantError(t, e.do(http.MethodGet, "/instances?code=", ""), http.StatusUnauthorized, httpapi.CodeUnauthorized)
		wantError(t, e.do(http.MethodGet, "/instances", "", "Authorization", "Bearer "), http.StatusUnauthorized, httpapi.CodeUnauthorized)
		wantError(t, e.do(http.MethodGet, "/instances", ""), http.StatusUnauthorized, httpapi.CodeUnauthorized)
	})
}

// unsized hides a reader's length, so that the request is chunked.
type unsized struct{ io.Reader }

func TestBodyLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, httpapi.Options{MaxBodyBytes: 1024})
	str := func(n int) string { return `"` + strings.Repeat("a", n-2) + `"` } // a JSON string of n bytes

	wantError(t, e.do(http.MethodPost, "/orchestrators/HelloSequence", str(2048)), http.StatusRequestEntityTooLarge, httpapi.CodePayloadTooLarge)
	wantError(t, e.doReader(http.MethodPost, "/orchestrators/HelloSequence", unsized{strings.NewReader(str(2048))}), http.StatusRequestEntityTooLarge, httpapi.CodePayloadTooLarge)
	e.startApproval("big-ev")
	wantError(t, e.doReader(http.MethodPost, "/instances/big-ev/raiseEvent/Approval", unsized{strings.NewReader(str(1025))}), http.StatusRequestEntityTooLarge, httpapi.CodePayloadTooLarge)
	// At the limit it is accepted.
	wantStatus(t, e.do(http.MethodPost, "/instances/big-ev/raiseEvent/Other", str(1024)), http.StatusAccepted)
	wantStatus(t, e.doReader(http.MethodPost, "/orchestrators/HelloSequence", unsized{strings.NewReader(str(1024))}), http.StatusAccepted)

	t.Run("default limit", func(t *testing.T) {
		e := newEnv(t, httpapi.Options{})
		r := e.do(http.MethodPost, "/orchestrators/HelloSequence", str(httpapi.MaxBodyBytesDefault+1))
		wantError(t, r, http.StatusRequestEntityTooLarge, httpapi.CodePayloadTooLarge)
	})
}

func TestRouting(t *testing.T) {
	t.Parallel()
	e := newEnv(t, httpapi.Options{})
	wantError(t, e.do(http.MethodGet, "/nope", ""), http.StatusNotFound, httpapi.CodeNotFound)
	wantError(t, e.do(http.MethodGet, e.srv.URL+"/elsewhere", ""), http.StatusNotFound, httpapi.CodeNotFound)
	wantError(t, e.do(http.MethodGet, "/instances/x/unknownOp", ""), http.StatusNotFound, httpapi.CodeNotFound)
	r := e.do(http.MethodPut, "/instances/x", "")
	if wantError(t, r, http.StatusMethodNotAllowed, httpapi.CodeMethodNotAllowed); r.header.Get("Allow") != "GET, HEAD, DELETE" {
		t.Fatalf("Allow %q", r.header.Get("Allow"))
	}
	r = e.do(http.MethodGet, "/orchestrators/HelloSequence", "")
	if wantError(t, r, http.StatusMethodNotAllowed, httpapi.CodeMethodNotAllowed); r.header.Get("Allow") != "POST" {
		t.Fatalf("Allow %q", r.header.Get("Allow"))
	}
	wantError(t, e.do(http.MethodPost, "/instances", ""), http.StatusMethodNotAllowed, httpapi.CodeMethodNotAllowed)
	if r := e.do(http.MethodHead, "/instances/nobody", ""); r.status != http.StatusNotFound || len(r.body) != 0 {
		t.Fatalf("HEAD: %d %q", r.status, r.body)
	}

	t.Run("custom base path and public URL", func(t *testing.T) {
		e := newEnv(t, httpapi.Options{
			BasePath:      "/api/durable/",
			PublicBaseURL: func(*http.Request) string { return "https://hub.example.com/proxy/" },
		})
		p := e.start(samples.HelloSequenceName, "pub-1", "")
		if p.StatusQueryGetURI != "https://hub.example.com/proxy/api/durable/instances/pub-1" {
			t.Fatalf("status URI %q", p.StatusQueryGetURI)
		}
		e.waitDone("pub-1")
		wantStatus(t, e.do(http.MethodGet, "/instances/pub-1", ""), http.StatusOK)
		wantError(t, e.do(http.MethodGet, e.srv.URL+httpapi.BasePathDefault+"/instances/pub-1", ""), http.StatusNotFound, httpapi.CodeNotFound)
	})

	t.Run("root base path", func(t *testing.T) {
		e := newEnv(t, httpapi.Options{BasePath: "/"})
		e.start(samples.HelloSequenceName, "root-1", "")
		e.waitDone("root-1")
		wantStatus(t, e.do(http.MethodGet, e.srv.URL+"/instances/root-1", ""), http.StatusOK)
	})

	t.Run("invalid base paths panic", func(t *testing.T) {
		e := e.sub(t)
		client := e.client
		for _, bp := range []string{"api", "/a b", "/{x}", "/a/../b", "/a//b", "/a/.", "/GET /x"} {
			func() {
				defer func() {
					if recover() == nil {
						t.Errorf("BasePath %q accepted", bp)
					}
				}()
				httpapi.New(client, httpapi.Options{BasePath: bp})
			}()
		}
	})
}

func TestValidateListenAddress(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		addr          string
		authenticated bool
		ok            bool
		insecure      bool // refused for want of a key
	}{
		{"127.0.0.1:7071", false, true, false},
		{"127.0.0.2:7071", false, true, false},
		{"[::1]:7071", false, true, false},
		{"localhost:0", false, true, false},
		{"LocalHost:7071", false, true, false},
		{":7071", false, false, true},
		{"0.0.0.0:7071", false, false, true},
		{"[::]:7071", false, false, true},
		{"10.1.2.3:7071", false, false, true},
		{"example.com:7071", false, false, true},
		{"localhost.example.com:7071", false, false, true},
		{":7071", true, true, false},
		{"0.0.0.0:7071", true, true, false},
		{"[::]:80", true, true, false},
		{"7071", false, false, false},
		{"127.0.0.1", true, false, false},
		{"127.0.0.1:", false, false, false},
		{"", false, false, false},
	} {
		err := httpapi.ValidateListenAddress(c.addr, c.authenticated)
		if (err == nil) != c.ok || errors.Is(err, httpapi.ErrUnauthenticatedListen) != c.insecure {
			t.Errorf("ValidateListenAddress(%q, %v) = %v; want ok=%v, refused for want of a key=%v", c.addr, c.authenticated, err, c.ok, c.insecure)
		}
	}
}
