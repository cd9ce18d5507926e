package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/taskhub/taskhub"
)

// requestError is a problem with the request itself, answered as is.
type requestError struct {
	status        int
	code, message string
}

func (e *requestError) Error() string { return e.message }

func badRequest(code, format string, args ...any) *requestError {
	return &requestError{http.StatusBadRequest, code, fmt.Sprintf(format, args...)}
}

func badParam(name, format string, args ...any) *requestError {
	return badRequest(CodeInvalidParameter, "query parameter %s: "+format, append([]any{name}, args...)...)
}

// reply answers err: a requestError as it is, anything else through fail.
func (h *handler) reply(w http.ResponseWriter, r *http.Request, err error) {
	var re *requestError
	if errors.As(err, &re) {
		writeError(w, re.status, re.code, re.message)
		return
	}
	h.fail(w, r, err)
}

// pathInstanceID returns the validated instance ID of the path.
func pathInstanceID(r *http.Request, name string) (string, error) {
	id := r.PathValue(name)
	if err := taskhub.ValidateInstanceID(id); err != nil {
		return "", badRequest(CodeInvalidInstanceID, "%s", err.Error())
	}
	return id, nil
}

// validateName checks an orchestrator or event name.
func validateName(what, code, name string) error {
	switch {
	case name == "":
		return badRequest(code, "the %s is empty", what)
	case len(name) > maxNameLength:
		return badRequest(code, "the %s is %d bytes long; the limit is %d", what, len(name), maxNameLength)
	case !utf8.ValidString(name):
		return badRequest(code, "the %s is not valid UTF-8", what)
	case strings.ContainsFunc(name, unicode.IsControl):
		return badRequest(code, "the %s %q contains control characters", what, name)
	}
	return nil
}

// readJSON reads the body: nil when it is empty, else compact JSON.
func (h *handler) readJSON(r *http.Request) ([]byte, error) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, &requestError{http.StatusRequestEntityTooLarge, CodePayloadTooLarge, h.tooLargeMessage()}
		}
		return nil, badRequest(CodeInvalidJSON, "the request body could not be read: %v", err)
	}
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return nil, nil
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil || !json.Valid(b) {
		msg := "the request body is not valid JSON"
		var syntax *json.SyntaxError
		if errors.As(err, &syntax) {
			msg = fmt.Sprintf("%s: %v (at byte %d)", msg, syntax, syntax.Offset)
		}
		return nil, badRequest(CodeInvalidJSON, "%s", msg)
	}
	return buf.Bytes(), nil
}

func boolParam(q url.Values, name string, def bool) (bool, error) {
	s := q.Get(name)
	if s == "" {
		return def, nil
	}
	v, err := strconv.ParseBool(s)
	if err != nil {
		return false, badParam(name, "%q is not true or false", s)
	}
	return v, nil
}

func timeParam(q url.Values, name string) (time.Time, error) {
	s := q.Get(name)
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, badParam(name, "%q is not an RFC 3339 time such as 2024-05-01T12:00:00Z", s)
	}
	return t, nil
}

var allStatuses = []taskhub.Status{
	taskhub.StatusPending, taskhub.StatusRunning, taskhub.StatusCompleted, taskhub.StatusContinuedAsNew,
	taskhub.StatusFailed, taskhub.StatusTerminated, taskhub.StatusSuspended,
}

var finishedStatuses = []taskhub.Status{taskhub.StatusCompleted, taskhub.StatusFailed, taskhub.StatusTerminated}

// statusesParam parses a comma-separated list of runtime statuses, any
// case, each one of allowed.
func statusesParam(q url.Values, name string, allowed []taskhub.Status) ([]taskhub.Status, error) {
	s := q.Get(name)
	if s == "" {
		return nil, nil
	}
	var out []taskhub.Status
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		var found taskhub.Status
		for _, st := range allowed {
			if strings.EqualFold(item, string(st)) {
				found = st
			}
		}
		if found == "" {
			names := make([]string, len(allowed))
			for i, st := range allowed {
				names[i] = string(st)
			}
			return nil, badParam(name, "%q is not one of %s", item, strings.Join(names, ", "))
		}
		if !containsStatus(out, found) {
			out = append(out, found)
		}
	}
	return out, nil
}

func containsStatus(list []taskhub.Status, s taskhub.Status) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// filterParams parses the instance filter shared by listing and purging.
func filterParams(q url.Values, statuses []taskhub.Status) (taskhub.InstanceFilter, error) {
	var f taskhub.InstanceFilter
	var err error
	if f.CreatedFrom, err = timeParam(q, "createdTimeFrom"); err != nil {
		return f, err
	}
	if f.CreatedTo, err = timeParam(q, "createdTimeTo"); err != nil {
		return f, err
	}
	if !f.CreatedFrom.IsZero() && !f.CreatedTo.IsZero() && f.CreatedTo.Before(f.CreatedFrom) {
		return f, badParam("createdTimeTo", "it is before createdTimeFrom")
	}
	if f.Statuses, err = statusesParam(q, "runtimeStatus", statuses); err != nil {
		return f, err
	}
	if p := q.Get("instanceIdPrefix"); p != "" {
		if err := taskhub.ValidateInstanceID(p); err != nil {
			return f, badRequest(CodeInvalidInstanceID, "query parameter instanceIdPrefix: %v", err)
		}
		f.InstanceIDPrefix = p
	}
	return f, nil
}

// pageParams parses the paging of a listing: the top query parameter
// (default PageSizeDefault) and the continuation token header.
func pageParams(r *http.Request, q url.Values) (top int, token string, err error) {
	top = PageSizeDefault
	if s := q.Get("top"); s != "" {
		if top, err = strconv.Atoi(s); err != nil || top < 1 || top > PageSizeMax {
			return 0, "", badParam("top", "%q is not a whole number from 1 to %d", s, PageSizeMax)
		}
	}
	token = r.Header.Get(ContinuationTokenHeader)
	if len(token) > maxTokenLength || strings.ContainsFunc(token, func(c rune) bool { return c <= ' ' || c > '~' }) {
		return 0, "", badRequest(CodeInvalidContinuationToken, "the %s header is not a token this API issued", ContinuationTokenHeader)
	}
	return top, token, nil
}

func reasonParam(q url.Values) (string, error) {
	s := q.Get("reason")
	switch {
	case len(s) > 4096:
		return "", badParam("reason", "it is %d bytes long; the limit is 4096", len(s))
	case !utf8.ValidString(s):
		return "", badParam("reason", "it is not valid UTF-8")
	}
	return s, nil
}

// POST {base}/orchestrators/{function}[/{instanceId}]
func (h *handler) startOrchestration(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("function")
	if err := validateName("orchestrator function name", CodeInvalidFunctionName, name); err != nil {
		h.reply(w, r, err)
		return
	}
	var opts []taskhub.ScheduleOption
	if r.PathValue("instanceId") != "" {
		id, err := pathInstanceID(r, "instanceId")
		if err != nil {
			h.reply(w, r, err)
			return
		}
		opts = append(opts, taskhub.WithStartInstanceID(id))
	}
	input, err := h.readJSON(r)
	if err != nil {
		h.reply(w, r, err)
		return
	}
	h.schedule(w, r, name, input, opts...)
}

// schedule starts an instance and answers 202 with the management payload.
func (h *handler) schedule(w http.ResponseWriter, r *http.Request, name string, input []byte, opts ...taskhub.ScheduleOption) {
	var in any // nil: no input
	if input != nil {
		in = json.RawMessage(input)
	}
	id, err := h.client.ScheduleNewOrchestration(r.Context(), name, in, opts...)
	if err != nil {
		h.reply(w, r, err)
		return
	}
	h.setPolling(w, r, id)
	writeJSON(w, http.StatusAccepted, h.managementPayload(r, id))
}

// GET {base}/instances/{id}
func (h *handler) getInstance(w http.ResponseWriter, r *http.Request) {
	id, err := pathInstanceID(r, "id")
	if err != nil {
		h.reply(w, r, err)
		return
	}
	q := r.URL.Query()
	var showHistory, showOutput, showInput, failWith500 bool
	for _, p := range []struct {
		dst  *bool
		name string
		def  bool
	}{
		{&showHistory, "showHistory", false},
		{&showOutput, "showHistoryOutput", false},
		{&showInput, "showInput", true},
		{&failWith500, "returnInternalServerErrorOnFailure", false},
	} {
		if *p.dst, err = boolParam(q, p.name, p.def); err != nil {
			h.reply(w, r, err)
			return
		}
	}
	st, err := h.client.GetInstance(r.Context(), id)
	if err != nil {
		h.reply(w, r, err)
		return
	}
	body := instanceBody(st, showInput)
	if showHistory {
		evs, err := h.client.GetHistory(r.Context(), id)
		if err != nil {
			h.reply(w, r, err)
			return
		}
		body.HistoryEvents = filterHistory(evs, showInput, showOutput)
	}
	switch st.RuntimeStatus {
	case taskhub.StatusCompleted, taskhub.StatusTerminated:
		writeJSON(w, http.StatusOK, body)
	case taskhub.StatusFailed:
		if !failWith500 {
			writeJSON(w, http.StatusOK, body)
			return
		}
		msg := "the instance failed"
		if st.Failure != nil {
			msg += ": " + st.Failure.Error()
		}
		body.Error = &ErrorDetail{Code: CodeInstanceFailed, Message: msg}
		writeJSON(w, http.StatusInternalServerError, body)
	default: // Pending, Running, Suspended, ContinuedAsNew: poll again
		h.setPolling(w, r, id)
		writeJSON(w, http.StatusAccepted, body)
	}
}

// GET {base}/instances
func (h *handler) listInstances(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	filter, err := filterParams(q, allStatuses)
	if err != nil {
		h.reply(w, r, err)
		return
	}
	showInput, err := boolParam(q, "showInput", false)
	if err != nil {
		h.reply(w, r, err)
		return
	}
	top, token, err := pageParams(r, q)
	if err != nil {
		h.reply(w, r, err)
		return
	}
	page, err := h.client.QueryInstances(r.Context(), taskhub.InstanceQuery{Filter: filter, PageSize: top, ContinuationToken: token})
	if err != nil {
		h.reply(w, r, err)
		return
	}
	out := make([]*Instance, len(page.Instances))
	for i, st := range page.Instances {
		out[i] = instanceBody(st, showInput)
	}
	if page.ContinuationToken != "" {
		w.Header().Set(ContinuationTokenHeader, page.ContinuationToken)
	}
	writeJSON(w, http.StatusOK, out)
}

// purgeResult is the answer of a purge.
type purgeResult struct {
	InstancesDeleted int `json:"instancesDeleted"`
}

// DELETE {base}/instances/{id}
func (h *handler) purgeInstance(w http.ResponseWriter, r *http.Request) {
	id, err := pathInstanceID(r, "id")
	if err != nil {
		h.reply(w, r, err)
		return
	}
	if err := h.client.PurgeInstance(r.Context(), id); err != nil {
		h.reply(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, purgeResult{InstancesDeleted: 1})
}

// DELETE {base}/instances
func (h *handler) purgeInstances(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("createdTimeFrom") == "" {
		h.reply(w, r, badRequest(CodeMissingParameter, "query parameter createdTimeFrom is required to purge instances by filter"))
		return
	}
	filter, err := filterParams(q, finishedStatuses)
	if err != nil {
		h.reply(w, r, err)
		return
	}
	n, err := h.client.PurgeInstances(r.Context(), filter, nil)
	if err != nil {
		if n > 0 {
			h.log.Warn("httpapi: purge by filter stopped part way", "purged", n, "err", err)
		}
		h.reply(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, purgeResult{InstancesDeleted: n})
}

// POST {base}/instances/{id}/raiseEvent/{event}
func (h *handler) raiseEvent(w http.ResponseWriter, r *http.Request) {
	id, err := pathInstanceID(r, "id")
	if err != nil {
		h.reply(w, r, err)
		return
	}
	event := r.PathValue("event")
	if err := validateName("event name", CodeInvalidEventName, event); err != nil {
		h.reply(w, r, err)
		return
	}
	data, err := h.readJSON(r)
	if err != nil {
		h.reply(w, r, err)
		return
	}
	var payload any // nil: the event carries null
	if data != nil {
		payload = json.RawMessage(data)
	}
	if err := h.client.RaiseEvent(r.Context(), id, event, payload); err != nil {
		h.reply(w, r, err)
		return
	}
	writeAccepted(w)
}

// control parses the instance ID and reason of terminate, suspend, resume
// and rewind, and answers 202 when op succeeds.
func (h *handler) control(w http.ResponseWriter, r *http.Request, op func(id, reason string) error) {
	id, err := pathInstanceID(r, "id")
	if err != nil {
		h.reply(w, r, err)
		return
	}
	reason, err := reasonParam(r.URL.Query())
	if err != nil {
		h.reply(w, r, err)
		return
	}
	if err := op(id, reason); err != nil {
		h.reply(w, r, err)
		return
	}
	writeAccepted(w)
}

// POST {base}/instances/{id}/terminate
func (h *handler) terminate(w http.ResponseWriter, r *http.Request) {
	recursive, err := boolParam(r.URL.Query(), "recursive", false)
	if err != nil {
		h.reply(w, r, err)
		return
	}
	h.control(w, r, func(id, reason string) error {
		var why any // nil: no reason, the output stays empty
		if reason != "" {
			why = reason
		}
		return h.client.TerminateInstance(r.Context(), id, why, recursive)
	})
}

// POST {base}/instances/{id}/suspend
func (h *handler) suspend(w http.ResponseWriter, r *http.Request) {
	h.control(w, r, func(id, reason string) error { return h.client.SuspendInstance(r.Context(), id, reason) })
}

// POST {base}/instances/{id}/resume
func (h *handler) resume(w http.ResponseWriter, r *http.Request) {
	h.control(w, r, func(id, reason string) error { return h.client.ResumeInstance(r.Context(), id, reason) })
}

// POST {base}/instances/{id}/rewind
func (h *handler) rewindInstance(w http.ResponseWriter, r *http.Request) {
	h.control(w, r, func(id, reason string) error { return h.rewind(r.Context(), id, reason) })
}

// POST {base}/instances/{id}/restart
func (h *handler) restart(w http.ResponseWriter, r *http.Request) {
	id, err := pathInstanceID(r, "id")
	if err != nil {
		h.reply(w, r, err)
		return
	}
	newID, err := boolParam(r.URL.Query(), "restartWithNewInstanceId", true)
	if err != nil {
		h.reply(w, r, err)
		return
	}
	st, err := h.client.GetInstance(r.Context(), id)
	if err != nil {
		h.reply(w, r, err)
		return
	}
	var opts []taskhub.ScheduleOption
	if !newID {
		// The default reuse policy replaces a finished instance and
		// refuses a running one (409).
		opts = append(opts, taskhub.WithStartInstanceID(id))
	}
	var input []byte
	if len(st.Input) > 0 {
		input = st.Input
	}
	h.schedule(w, r, st.Name, input, opts...)
}
