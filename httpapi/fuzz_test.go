package httpapi_test

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/taskhub/taskhub"
	"github.com/taskhub/taskhub/httpapi"
	"github.com/taskhub/taskhub/samples"
)

// isToken reports whether s is an HTTP method token; the server refuses
// other methods before any handler runs.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

// FuzzHTTPRequests sends arbitrary requests to the API of a real worker:
// the handler must never panic, and every 4xx and 5xx answer must be a
// JSON error with a code and a message — and none an internal error,
// which would be a request the handler failed to validate.
func FuzzHTTPRequests(f *testing.F) {
	const key = "fuzz-key-0123456789"
	// Only samples whose cost does not depend on the input: a fuzzed
	// FanOutFanIn size could schedule millions of activities.
	client := startWorker(f, func(r *taskhub.Registry) error {
		return errors.Join(
			taskhub.RegisterOrchestrator(r, samples.HelloSequenceName, samples.HelloSequence),
			taskhub.RegisterOrchestrator(r, samples.ApprovalName, samples.Approval),
			taskhub.RegisterActivity(r, samples.SayHelloName, samples.SayHello),
			taskhub.RegisterEntity(r, samples.CounterName, samples.Counter),
		)
	})
	h := httpapi.New(client, httpapi.Options{Keys: []string{key}, MaxBodyBytes: 1 << 16, Logger: quietLogger()})
	base := httpapi.BasePathDefault
	code := "code=" + key
	for _, s := range []struct{ method, path, query, body string }{
		{"POST", base + "/orchestrators/HelloSequence", code, ""},
		{"POST", base + "/orchestrators/HelloSequence/fz-1", code, `{"a":[1,2,{"b":null}]}`},
		{"POST", base + "/orchestrators/Approval/fz-2", code, `{"timeoutSeconds":0}`},
		{"POST", base + "/orchestrators/Approval/fz-2", code, `{"timeoutSeconds":`},
		{"POST", base + "/orchestrators/%00", code, ""},
		{"POST", base + "/orchestrators/HelloSequence/%40x", code, ""},
		{"GET", base + "/instances/fz-1", code + "&showHistory=true&showHistoryOutput=1&showInput=false", ""},
		{"GET", base + "/instances/fz-2", code + "&returnInternalServerErrorOnFailure=true", ""},
		{"GET", base + "/instances", code + "&top=2&runtimeStatus=Running,Completed&createdTimeFrom=2024-01-01T00:00:00Z", ""},
		{"GET", base + "/instances/", code + "&instanceIdPrefix=fz-&showInput=true", ""},
		{"GET", base + "/instances", code + "&top=-5&createdTimeTo=x", ""},
		{"DELETE", base + "/instances", code + "&createdTimeFrom=2024-01-01T00:00:00Z&runtimeStatus=Completed", ""},
		{"DELETE", base + "/instances/fz-1", code, ""},
		{"POST", base + "/instances/fz-2/raiseEvent/Approval", code, `{"approved":true}`},
		{"POST", base + "/instances/fz-2/raiseEvent/%0a", code, `1`},
		{"POST", base + "/instances/fz-2/terminate", code + "&reason=stop&recursive=true", ""},
		{"POST", base + "/instances/fz-2/suspend", code + "&reason=%FF", ""},
		{"POST", base + "/instances/fz-2/resume", code, ""},
		{"POST", base + "/instances/fz-1/restart", code + "&restartWithNewInstanceId=false", ""},
		{"POST", base + "/instances/fz-1/rewind", code, ""},
		{"POST", base + "/entities/Counter/fz-c", code + "&op=add", "5"},
		{"POST", base + "/entities/Counter/fz-c", code + "&op=add&signalTime=2030-01-01T00:00:00Z", "1"},
		{"POST", base + "/entities/Counter/a%2Fb%40c", code + "&op=reset", ""},
		{"POST", base + "/entities/Counter/fz-c", code, `{"x":`},
		{"POST", base + "/entities/Coun%40ter/fz-c", code + "&op=%00", ""},
		{"GET", base + "/entities/Counter/fz-c", code, ""},
		{"GET", base + "/entities/Counter/%FF", code, ""},
		{"DELETE", base + "/entities/Counter/fz-c", code, ""},
		{"GET", base + "/entities", code + "&fetchState=true&includeDeleted=true&top=2", ""},
		{"GET", base + "/entities/Counter/", code + "&fetchState=1&lastOperationTimeFrom=2024-01-01T00:00:00Z", ""},
		{"GET", base + "/entities/", code + "&namePrefix=co&top=0", ""},
		{"PUT", base + "/entities/Counter/fz-c", code, ""},
		{"PATCH", base + "/instances/fz-1", code, ""},
		{"GET", "/", "", ""},
		{"GET", base + "/instances/a/../b", code, ""},
		{"GET", base + "/instances", "code=%zz", ""},
		{"OPTIONS", base + "/instances", code + ";x", ""},
	} {
		f.Add(s.method, s.path, s.query, s.body)
	}
	f.Fuzz(func(t *testing.T, method, path, query, body string) {
		if !isToken(method) {
			return
		}
		target := "/" + strings.TrimPrefix(path, "/")
		if query != "" {
			target += "?" + query
		}
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return // the server answers 400 before any handler runs
		}
		req := &http.Request{
			Method: method, URL: u, RequestURI: target, Host: "api.test",
			Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			Header:        http.Header{"Content-Type": {"application/json"}},
			Body:          io.NopCloser(strings.NewReader(body)),
			ContentLength: int64(len(body)),
		}
		req = req.WithContext(t.Context())
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)

		res := rec.Result()
		if res.StatusCode < 400 {
			if ct := res.Header.Get("Content-Type"); strings.HasPrefix(ct, "application/json") && !json.Valid(rec.Body.Bytes()) {
				t.Fatalf("%s %s: %d with invalid JSON %q", method, target, res.StatusCode, rec.Body.Bytes())
			}
			return
		}
		if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			t.Fatalf("%s %s: %d with Content-Type %q: %q", method, target, res.StatusCode, ct, rec.Body.Bytes())
		}
		var eb httpapi.ErrorBody
		if err := json.Unmarshal(rec.Body.Bytes(), &eb); err != nil || eb.Error == nil || eb.Error.Code == "" || eb.Error.Message == "" {
			t.Fatalf("%s %s: %d with body %q, want a JSON error (%v)", method, target, res.StatusCode, rec.Body.Bytes(), err)
		}
		if eb.Error.Code == httpapi.CodeInternalError {
			t.Fatalf("%s %s: internal error: %s", method, target, eb.Error.Message)
		}
	})
}
