package httpapi

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/taskhub/taskhub"
)

// ManagementPayload is the Durable Functions HTTP management payload,
// answered when an instance is started or restarted.
type ManagementPayload struct {
	ID                    string `json:"id"`
	StatusQueryGetURI     string `json:"statusQueryGetUri"`
	SendEventPostURI      string `json:"sendEventPostUri"`
	TerminatePostURI      string `json:"terminatePostUri"`
	PurgeHistoryDeleteURI string `json:"purgeHistoryDeleteUri"`
	SuspendPostURI        string `json:"suspendPostUri"`
	ResumePostURI         string `json:"resumePostUri"`
	RestartPostURI        string `json:"restartPostUri"`
}

// Instance is the status of an instance as the API answers it, in the
// Durable Functions shape. Absent values are JSON null, as there.
type Instance struct {
	Name            string          `json:"name"`
	InstanceID      string          `json:"instanceId"`
	RuntimeStatus   taskhub.Status  `json:"runtimeStatus"`
	Input           json.RawMessage `json:"input"`
	CustomStatus    json.RawMessage `json:"customStatus"`
	Output          json.RawMessage `json:"output"`
	CreatedTime     string          `json:"createdTime"`
	LastUpdatedTime string          `json:"lastUpdatedTime"`
	// FailureDetails of a Failed instance (a taskhub addition; output
	// holds the failure message, as in Durable Functions).
	FailureDetails *taskhub.FailureDetails `json:"failureDetails,omitempty"`
	// HistoryEvents is present with showHistory=true.
	HistoryEvents []*taskhub.HistoryEvent `json:"historyEvents,omitzero"`
	// Error is set only on the 500 answer of
	// returnInternalServerErrorOnFailure.
	Error *ErrorDetail `json:"error,omitempty"`
}

// timeFormat is how Durable Functions writes instance times: RFC 3339,
// UTC, whole seconds.
const timeFormat = "2006-01-02T15:04:05Z"

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(timeFormat)
}

func instanceBody(st *taskhub.InstanceStatus, showInput bool) *Instance {
	in := &Instance{
		Name:            st.Name,
		InstanceID:      st.InstanceID,
		RuntimeStatus:   st.RuntimeStatus,
		CustomStatus:    st.CustomStatus,
		Output:          st.Output,
		CreatedTime:     formatTime(st.CreatedAt),
		LastUpdatedTime: formatTime(st.LastUpdatedAt),
		FailureDetails:  st.Failure,
	}
	if showInput {
		in.Input = st.Input
	}
	if len(in.Output) == 0 && st.Failure != nil {
		in.Output, _ = json.Marshal(st.Failure.Error())
	}
	return in
}

// Events whose payload is a result, shown only with showHistoryOutput.
var outputEvents = map[string]bool{"ExecutionCompleted": true, "TaskCompleted": true, "SubOrchestrationCompleted": true}

func filterHistory(evs []*taskhub.HistoryEvent, showInput, showOutput bool) []*taskhub.HistoryEvent {
	for _, e := range evs {
		if (!showOutput && outputEvents[e.Type]) || (!showInput && e.Type == "ExecutionStarted") {
			e.Input = nil
		}
	}
	if evs == nil {
		evs = []*taskhub.HistoryEvent{}
	}
	return evs
}

// publicBase returns the scheme and authority clients use to reach the
// handler, without a trailing slash.
func (h *handler) publicBase(r *http.Request) string {
	if h.opts.PublicBaseURL != nil {
		return strings.TrimSuffix(h.opts.PublicBaseURL(r), "/")
	}
	if r.Host == "" {
		return "" // relative URIs rather than made-up ones
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// instanceURI is the absolute URI of an instance's resource.
func (h *handler) instanceURI(r *http.Request, id string) string {
	return h.publicBase(r) + h.opts.BasePath + "/instances/" + url.PathEscape(id)
}

// withCode appends the query of a management URI: the literal Durable
// Functions placeholders (which must stay unescaped) and the code that
// authenticated the request, if it came as a query parameter.
func withCode(r *http.Request, uri, query string) string {
	if code, ok := r.Context().Value(echoCodeKey).(string); ok && code != "" {
		if query != "" {
			query += "&"
		}
		query += "code=" + url.QueryEscape(code)
	}
	if query == "" {
		return uri
	}
	return uri + "?" + query
}

func (h *handler) managementPayload(r *http.Request, id string) *ManagementPayload {
	u := h.instanceURI(r, id)
	return &ManagementPayload{
		ID:                    id,
		StatusQueryGetURI:     withCode(r, u, ""),
		SendEventPostURI:      withCode(r, u+"/raiseEvent/{eventName}", ""),
		TerminatePostURI:      withCode(r, u+"/terminate", "reason={text}"),
		PurgeHistoryDeleteURI: withCode(r, u, ""),
		SuspendPostURI:        withCode(r, u+"/suspend", "reason={text}"),
		ResumePostURI:         withCode(r, u+"/resume", "reason={text}"),
		RestartPostURI:        withCode(r, u+"/restart", ""),
	}
}

// setPolling sets the headers of an answer about an instance that is not
// finished: where to poll and how soon.
func (h *handler) setPolling(w http.ResponseWriter, r *http.Request, id string) {
	w.Header().Set("Location", withCode(r, h.instanceURI(r, id), ""))
	w.Header().Set("Retry-After", h.retryAfter)
}
