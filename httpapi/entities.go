package httpapi

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/taskhub/taskhub"
)

// Response headers of GET {base}/entities/{name}/{key}, taskhub additions
// next to the state (the body, as in Durable Functions) and Last-Modified.
const (
	// EntityLockedByHeader names the orchestration instance holding the
	// entity's lock in a critical section; absent when it is not locked.
	EntityLockedByHeader = "x-taskhub-entity-locked-by"
	// EntityBacklogHeader is the number of requests waiting for the lock.
	EntityBacklogHeader = "x-taskhub-entity-backlog"
)

// Entity is an entity as listings answer it, in the Durable Functions shape
// (entityId, lastOperationTime, state) with taskhub's additions.
type Entity struct {
	EntityID EntityID `json:"entityId"`
	// LastOperationTime is when the entity's last batch of operations
	// committed: RFC 3339 in UTC with full precision.
	LastOperationTime string `json:"lastOperationTime"`
	// State is the entity's state with fetchState=true, else null (also
	// for an entity without state, listed with includeDeleted=true).
	State json.RawMessage `json:"state"`
	// HasState is false for an entity whose state was deleted (listed only
	// with includeDeleted=true). A taskhub addition.
	HasState bool `json:"hasState"`
	// LockedBy is the orchestration instance holding the entity's lock in
	// a critical section. A taskhub addition.
	LockedBy string `json:"lockedBy,omitempty"`
	// BacklogQueueSize counts the requests waiting for the lock. A taskhub
	// addition.
	BacklogQueueSize int `json:"backlogQueueSize"`
}

// EntityID is an entity's ID in the Durable Functions shape: the name (in
// lower case) and the key.
type EntityID struct {
	Name string `json:"name"`
	Key  string `json:"key"`
}

func entityBody(m *taskhub.EntityMetadata) *Entity {
	e := &Entity{
		EntityID:         EntityID{Name: m.ID.Name, Key: m.ID.Key},
		HasState:         m.HasState,
		LockedBy:         m.LockedBy,
		BacklogQueueSize: m.BacklogQueueSize,
	}
	if !m.LastModified.IsZero() {
		e.LastOperationTime = m.LastModified.UTC().Format(time.RFC3339Nano)
	}
	if len(m.State) > 0 {
		e.State = m.State
	}
	return e
}

// entityNameError checks an entity name of the path or the namePrefix
// parameter: UTF-8 without control characters or '@' (which ends the name
// in an entity's instance ID), and short enough for an ID.
func entityNameError(what, name string) error {
	switch {
	case name == "":
		return badRequest(CodeInvalidEntityID, "the %s is empty", what)
	case strings.Contains(name, "@"):
		return badRequest(CodeInvalidEntityID, "the %s %q contains '@'", what, name)
	case !utf8.ValidString(name):
		return badRequest(CodeInvalidEntityID, "the %s is not valid UTF-8", what)
	case strings.ContainsFunc(name, unicode.IsControl):
		return badRequest(CodeInvalidEntityID, "the %s %q contains control characters", what, name)
	case len(name) > taskhub.MaxInstanceIDLength-3:
		return badRequest(CodeInvalidEntityID, "the %s is %d bytes long; the limit is %d", what, len(name), taskhub.MaxInstanceIDLength-3)
	}
	return nil
}

// pathEntityID returns the validated entity ID of the path.
func pathEntityID(r *http.Request) (taskhub.EntityID, error) {
	name := r.PathValue("name")
	if err := entityNameError("entity name", name); err != nil {
		return taskhub.EntityID{}, err
	}
	id, err := taskhub.ParseEntityID(taskhub.NewEntityID(name, r.PathValue("key")).String())
	if err != nil {
		return taskhub.EntityID{}, badRequest(CodeInvalidEntityID, "%s", err.Error())
	}
	return id, nil
}

// POST {base}/entities/{name}/{key}?op=
func (h *handler) signalEntity(w http.ResponseWriter, r *http.Request) {
	id, err := pathEntityID(r)
	if err != nil {
		h.reply(w, r, err)
		return
	}
	q := r.URL.Query()
	op := q.Get("op")
	if op == "" {
		h.reply(w, r, badRequest(CodeMissingParameter, "query parameter op (the operation to signal) is required"))
		return
	}
	if err := validateName("operation name (query parameter op)", CodeInvalidParameter, op); err != nil {
		h.reply(w, r, err)
		return
	}
	at, err := timeParam(q, "signalTime")
	if err != nil {
		h.reply(w, r, err)
		return
	}
	input, err := h.readJSON(r)
	if err != nil {
		h.reply(w, r, err)
		return
	}
	var in any // nil: no input
	if input != nil {
		in = json.RawMessage(input)
	}
	var opts []taskhub.SignalEntityOption
	if !at.IsZero() {
		opts = append(opts, taskhub.WithSignalTime(at))
	}
	if err := h.client.SignalEntity(r.Context(), id, op, in, opts...); err != nil {
		h.reply(w, r, err)
		return
	}
	writeAccepted(w)
}

// DELETE {base}/entities/{name}/{key}: signals the implicit delete, as
// Durable Functions does.
func (h *handler) deleteEntity(w http.ResponseWriter, r *http.Request) {
	id, err := pathEntityID(r)
	if err != nil {
		h.reply(w, r, err)
		return
	}
	if err := h.client.SignalEntity(r.Context(), id, taskhub.ImplicitDeleteOperation, nil); err != nil {
		h.reply(w, r, err)
		return
	}
	writeAccepted(w)
}

// GET {base}/entities/{name}/{key}
func (h *handler) getEntity(w http.ResponseWriter, r *http.Request) {
	id, err := pathEntityID(r)
	if err != nil {
		h.reply(w, r, err)
		return
	}
	m, err := h.client.GetEntity(r.Context(), id, true)
	if err != nil {
		h.reply(w, r, err)
		return
	}
	hdr := w.Header()
	if !m.LastModified.IsZero() {
		hdr.Set("Last-Modified", m.LastModified.UTC().Format(http.TimeFormat))
	}
	if m.LockedBy != "" {
		hdr.Set(EntityLockedByHeader, m.LockedBy)
	}
	hdr.Set(EntityBacklogHeader, strconv.Itoa(m.BacklogQueueSize))
	writeJSON(w, http.StatusOK, m.State)
}

// Durable Functions query parameters of the entity listing that taskhub
// does not offer.
var unsupportedEntityParams = []string{"lastOperationTimeFrom", "lastOperationTimeTo"}

// entityQuery parses the entity listing's parameters.
func entityQuery(r *http.Request) (taskhub.EntityQuery, error) {
	var eq taskhub.EntityQuery
	q := r.URL.Query()
	for _, p := range unsupportedEntityParams {
		if _, ok := q[p]; ok {
			return eq, badParam(p, "is not supported: entities cannot be filtered by the time of their last operation")
		}
	}
	if name := r.PathValue("name"); name != "" {
		if err := entityNameError("entity name", name); err != nil {
			return eq, err
		}
		eq.Name = name
	}
	if prefix := q.Get("namePrefix"); prefix != "" {
		if eq.Name != "" {
			return eq, badParam("namePrefix", "cannot be combined with an entity name in the path")
		}
		if err := entityNameError("query parameter namePrefix", prefix); err != nil {
			return eq, err
		}
		eq.NamePrefix = prefix
	}
	var err error
	if eq.IncludeState, err = boolParam(q, "fetchState", false); err != nil {
		return eq, err
	}
	if eq.IncludeDeleted, err = boolParam(q, "includeDeleted", false); err != nil {
		return eq, err
	}
	eq.PageSize, eq.ContinuationToken, err = pageParams(r, q)
	return eq, err
}

// GET {base}/entities[/{name}]
func (h *handler) listEntities(w http.ResponseWriter, r *http.Request) {
	eq, err := entityQuery(r)
	if err != nil {
		h.reply(w, r, err)
		return
	}
	page, err := h.client.QueryEntities(r.Context(), eq)
	if err != nil {
		h.reply(w, r, err)
		return
	}
	out := make([]*Entity, len(page.Entities))
	for i, m := range page.Entities {
		out[i] = entityBody(m)
	}
	if page.ContinuationToken != "" {
		w.Header().Set(ContinuationTokenHeader, page.ContinuationToken)
	}
	writeJSON(w, http.StatusOK, out)
}
