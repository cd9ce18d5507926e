package httpapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/taskhub/taskhub"
	"github.com/taskhub/taskhub/backend"
)

// Defaults and limits of Options and of the routes.
const (
	// BasePathDefault is the Durable Functions 2.x webhook prefix.
	BasePathDefault = "/runtime/webhooks/durabletask"
	// MaxBodyBytesDefault bounds request bodies (4 MiB).
	MaxBodyBytesDefault = 4 << 20
	// RetryAfterDefault is the polling interval suggested to clients of
	// a running instance (the Retry-After header), as Durable Functions.
	RetryAfterDefault = 10 * time.Second
	// PageSizeDefault is the page size of a listing without top.
	PageSizeDefault = 100
	// PageSizeMax is the largest accepted top.
	PageSizeMax = 1000
	// ContinuationTokenHeader carries the paging token of listings, in
	// both directions.
	ContinuationTokenHeader = "x-ms-continuation-token"
	// maxNameLength bounds orchestrator and event names, in bytes.
	maxNameLength = 256
	// maxTokenLength bounds continuation tokens, in bytes.
	maxTokenLength = 4096
)

// Error codes of the JSON error bodies. They are stable: clients may
// switch on them.
const (
	CodeUnauthorized             = "unauthorized"
	CodeNotFound                 = "not_found"
	CodeMethodNotAllowed         = "method_not_allowed"
	CodePayloadTooLarge          = "payload_too_large"
	CodeInvalidJSON              = "invalid_json"
	CodeInvalidInput             = "invalid_input"
	CodeInvalidInstanceID        = "invalid_instance_id"
	CodeInvalidFunctionName      = "invalid_function_name"
	CodeInvalidEventName         = "invalid_event_name"
	CodeInvalidParameter         = "invalid_parameter"
	CodeMissingParameter         = "missing_parameter"
	CodeInvalidContinuationToken = "invalid_continuation_token"
	CodeInvalidEntityID          = "invalid_entity_id"
	CodeInstanceNotFound         = "instance_not_found"
	CodeInstanceExists           = "instance_exists"
	CodeInstanceFinished         = "instance_finished"
	CodeInstanceNotFinished      = "instance_not_finished"
	CodeInstanceNotFailed        = "instance_not_failed"
	CodeInstanceFailed           = "instance_failed"
	CodeEntityNotFound           = "entity_not_found"
	CodeNotImplemented           = "not_implemented"
	CodeUnavailable              = "unavailable"
	CodeInternalError            = "internal_error"
)

// Options configure the handler. The zero value of every field means its
// documented default.
type Options struct {
	// BasePath prefixes every route (default BasePathDefault). It must be
	// an absolute, clean path of letters, digits and - . _ ~ /; "/" mounts
	// the routes at the root.
	BasePath string
	// Keys are the accepted API keys. Empty: no authentication (bind to
	// loopback only). An empty string in Keys never matches.
	Keys []string
	// MaxBodyBytes bounds request bodies (default MaxBodyBytesDefault).
	MaxBodyBytes int64
	// PublicBaseURL returns the scheme and authority (and any path prefix
	// a proxy adds) under which clients reach this handler, without a
	// trailing slash, e.g. "https://hub.example.com". The management URIs
	// are built from it. Default: http or https (by r.TLS) and r.Host;
	// forwarded headers are not trusted by default, so behind a proxy set
	// this.
	PublicBaseURL func(r *http.Request) string
	// RetryAfter is the Retry-After of answers about running instances
	// (default RetryAfterDefault; whole seconds).
	RetryAfter time.Duration
	// Logger receives internal errors (default slog.Default()).
	Logger *slog.Logger
}

var basePathSyntax = regexp.MustCompile(`^(/[A-Za-z0-9\-._~]+)*$`)

func (o Options) withDefaults() Options {
	if o.BasePath == "" {
		o.BasePath = BasePathDefault
	}
	if o.BasePath == "/" {
		o.BasePath = ""
	}
	o.BasePath = strings.TrimSuffix(o.BasePath, "/")
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = MaxBodyBytesDefault
	}
	if o.RetryAfter <= 0 {
		o.RetryAfter = RetryAfterDefault
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

func (o Options) validate() error {
	if !basePathSyntax.MatchString(o.BasePath) || strings.Contains(o.BasePath, "/./") || strings.Contains(o.BasePath, "/../") ||
		strings.HasSuffix(o.BasePath, "/.") || strings.HasSuffix(o.BasePath, "/..") {
		return fmt.Errorf("httpapi: BasePath %q must be an absolute clean path of letters, digits and - . _ ~ /", o.BasePath)
	}
	return nil
}

// handler serves the API. Its routes are registered on a ServeMux; the
// handler itself authenticates, limits the body and then dispatches.
type handler struct {
	client     *taskhub.Client
	opts       Options
	log        *slog.Logger
	keys       [][sha256.Size]byte
	authOn     bool
	retryAfter string
	mux        *http.ServeMux

	// rewind rewinds a failed instance (a field so tests can replace it).
	rewind func(ctx context.Context, instanceID, reason string) error
}

// New returns the HTTP management API of the hub that client talks to.
// It panics if client is nil or Options.BasePath is malformed (programming
// errors, like http.Handle with a bad pattern).
func New(client *taskhub.Client, opts Options) http.Handler {
	if client == nil {
		panic("httpapi: New needs a client")
	}
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		panic(err)
	}
	h := &handler{
		client:     client,
		opts:       opts,
		log:        opts.Logger,
		authOn:     len(opts.Keys) > 0,
		retryAfter: strconv.Itoa(max(1, int(opts.RetryAfter.Round(time.Second)/time.Second))),
		mux:        http.NewServeMux(),
		rewind:     client.RewindInstance,
	}
	for _, k := range opts.Keys {
		if k == "" {
			continue // never matches: see Options.Keys
		}
		h.keys = append(h.keys, sha256.Sum256([]byte(k)))
	}
	h.routes()
	return h
}

// errNotImplemented marks operations the engine does not offer yet.
var errNotImplemented = errors.New("not implemented")

// route is one path with its handlers, in the order of the Allow header.
type route struct {
	path     string
	handlers []methodHandler
}

type methodHandler struct {
	method string
	fn     http.HandlerFunc
}

func post(fn http.HandlerFunc) methodHandler { return methodHandler{http.MethodPost, fn} }
func get(fn http.HandlerFunc) methodHandler  { return methodHandler{http.MethodGet, fn} }
func del(fn http.HandlerFunc) methodHandler  { return methodHandler{http.MethodDelete, fn} }

func (h *handler) routes() {
	b := h.opts.BasePath
	routes := []route{
		{"/orchestrators/{function}", []methodHandler{post(h.startOrchestration)}},
		{"/orchestrators/{function}/{instanceId}", []methodHandler{post(h.startOrchestration)}},
		{"/instances", []methodHandler{get(h.listInstances), del(h.purgeInstances)}},
		{"/instances/{$}", []methodHandler{get(h.listInstances), del(h.purgeInstances)}},
		{"/instances/{id}", []methodHandler{get(h.getInstance), del(h.purgeInstance)}},
		{"/instances/{id}/raiseEvent/{event}", []methodHandler{post(h.raiseEvent)}},
		{"/instances/{id}/terminate", []methodHandler{post(h.terminate)}},
		{"/instances/{id}/suspend", []methodHandler{post(h.suspend)}},
		{"/instances/{id}/resume", []methodHandler{post(h.resume)}},
		{"/instances/{id}/restart", []methodHandler{post(h.restart)}},
		{"/instances/{id}/rewind", []methodHandler{post(h.rewindInstance)}},
		{"/entities", []methodHandler{get(h.listEntities)}},
		{"/entities/{$}", []methodHandler{get(h.listEntities)}},
		{"/entities/{name}", []methodHandler{get(h.listEntities)}},
		{"/entities/{name}/{$}", []methodHandler{get(h.listEntities)}},
		{"/entities/{name}/{key}", []methodHandler{get(h.getEntity), post(h.signalEntity), del(h.deleteEntity)}},
	}
	for _, r := range routes {
		var allowed []string
		for _, m := range r.handlers {
			h.mux.HandleFunc(m.method+" "+b+r.path, m.fn)
			allowed = append(allowed, m.method)
			if m.method == http.MethodGet {
				allowed = append(allowed, http.MethodHead) // GET patterns match HEAD
			}
		}
		// The same path without a method is less specific: it takes the
		// other methods, which get a JSON 405 instead of the mux's text.
		allow := strings.Join(allowed, ", ")
		h.mux.HandleFunc(b+r.path, func(w http.ResponseWriter, req *http.Request) {
			w.Header().Set("Allow", allow)
			writeError(w, http.StatusMethodNotAllowed, CodeMethodNotAllowed, fmt.Sprintf("method %s is not allowed here; allowed: %s", req.Method, allow))
		})
	}
	h.mux.HandleFunc("/", func(w http.ResponseWriter, req *http.Request) {
		writeError(w, http.StatusNotFound, CodeNotFound, "no such route: "+req.URL.Path)
	})
}

// ctxKey keys request-scoped values of the handler.
type ctxKey int

const echoCodeKey ctxKey = iota // the code query parameter that authenticated the request

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// The query may be malformed; the pairs parsed before the error still
	// count for authentication, and the error is reported once the caller
	// is known to hold a key.
	query, queryErr := url.ParseQuery(r.URL.RawQuery)
	if h.authOn {
		ok, byCode := h.authenticate(r, query)
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="taskhub"`)
			writeError(w, http.StatusUnauthorized, CodeUnauthorized,
				"a valid API key is required: send it in the x-functions-key header, as Authorization: Bearer <key>, or in the code query parameter")
			return
		}
		if byCode {
			r = r.WithContext(context.WithValue(r.Context(), echoCodeKey, query.Get("code")))
		}
	}
	if queryErr != nil {
		writeError(w, http.StatusBadRequest, CodeInvalidParameter, "malformed query string: "+queryErr.Error())
		return
	}
	if r.RequestURI == "*" {
		writeError(w, http.StatusNotFound, CodeNotFound, "the request target * is not served here")
		return
	}
	if r.ContentLength > h.opts.MaxBodyBytes {
		writeError(w, http.StatusRequestEntityTooLarge, CodePayloadTooLarge, h.tooLargeMessage())
		return
	}
	if r.Body == nil {
		r.Body = http.NoBody
	}
	r.Body = http.MaxBytesReader(w, r.Body, h.opts.MaxBodyBytes)
	h.mux.ServeHTTP(w, r)
}

func (h *handler) tooLargeMessage() string {
	return fmt.Sprintf("the request body exceeds the limit of %d bytes", h.opts.MaxBodyBytes)
}

// authenticate reports whether the request carries an accepted key, and
// whether the code query parameter was one. Every candidate is compared
// with every key, hashed to a fixed length, without early exit.
func (h *handler) authenticate(r *http.Request, query url.Values) (ok, byCode bool) {
	match := func(candidate string) bool {
		if candidate == "" {
			return false
		}
		sum := sha256.Sum256([]byte(candidate))
		found := 0
		for i := range h.keys {
			found |= subtle.ConstantTimeCompare(sum[:], h.keys[i][:])
		}
		return found == 1
	}
	header := match(r.Header.Get("x-functions-key"))
	bearer := false
	if scheme, token, found := strings.Cut(r.Header.Get("Authorization"), " "); found && strings.EqualFold(scheme, "Bearer") {
		bearer = match(strings.TrimSpace(token))
	}
	code := match(query.Get("code"))
	return header || bearer || code, code
}

// ErrorBody is the JSON body of every 4xx and 5xx answer.
type ErrorBody struct {
	Error *ErrorDetail `json:"error"`
}

// ErrorDetail is an error's stable code and human message.
type ErrorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	// Not HTML-escaped: the answers are application/json with nosniff,
	// and URIs keep their & readable, as Durable Functions writes them.
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		// Only a stored payload that is not JSON can get here.
		status = http.StatusInternalServerError
		buf.Reset()
		_ = enc.Encode(ErrorBody{&ErrorDetail{CodeInternalError, "the response could not be encoded as JSON"}})
	}
	hdr := w.Header()
	hdr.Set("Content-Type", "application/json; charset=utf-8")
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

func writeError(w http.ResponseWriter, status int, code, message string) {
	writeJSON(w, status, ErrorBody{&ErrorDetail{Code: code, Message: message}})
}

// writeAccepted answers 202 without a body.
func writeAccepted(w http.ResponseWriter) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusAccepted)
}

// fail answers the error of a client call: the errors the root package
// documents map to their codes, anything else is logged and answered as
// an internal error without details.
func (h *handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	var exists *taskhub.InstanceExistsError
	var typeErr *json.UnmarshalTypeError
	switch {
	case errors.As(err, &exists):
		writeError(w, http.StatusConflict, CodeInstanceExists, fmt.Sprintf("instance %q already exists with status %s", exists.InstanceID, exists.Status))
	case errors.Is(err, taskhub.ErrInvalidInstanceID):
		writeError(w, http.StatusBadRequest, CodeInvalidInstanceID, err.Error())
	case errors.Is(err, taskhub.ErrInvalidEntityID):
		writeError(w, http.StatusBadRequest, CodeInvalidEntityID, err.Error())
	case errors.Is(err, taskhub.ErrEntityNotFound):
		writeError(w, http.StatusNotFound, CodeEntityNotFound, err.Error())
	case errors.Is(err, taskhub.ErrInstanceNotFound):
		writeError(w, http.StatusNotFound, CodeInstanceNotFound, err.Error())
	case errors.Is(err, taskhub.ErrInstanceFinished):
		writeError(w, http.StatusGone, CodeInstanceFinished, err.Error())
	case errors.Is(err, taskhub.ErrInstanceNotFailed):
		writeError(w, http.StatusConflict, CodeInstanceNotFailed, err.Error())
	case errors.Is(err, taskhub.ErrInstanceNotFinished):
		writeError(w, http.StatusBadRequest, CodeInstanceNotFinished, err.Error())
	case errors.Is(err, taskhub.ErrInvalidInput) || errors.As(err, &typeErr):
		writeError(w, http.StatusBadRequest, CodeInvalidInput, err.Error())
	case errors.Is(err, taskhub.ErrOrchestratorNotFound):
		writeError(w, http.StatusBadRequest, CodeInvalidFunctionName, err.Error())
	case errors.Is(err, backend.ErrInvalidContinuationToken):
		writeError(w, http.StatusBadRequest, CodeInvalidContinuationToken, "the continuation token is not valid")
	case errors.Is(err, errNotImplemented):
		writeError(w, http.StatusNotImplemented, CodeNotImplemented, strings.TrimPrefix(err.Error(), errNotImplemented.Error()+": "))
	case errors.Is(err, taskhub.ErrHubNotFound):
		writeError(w, http.StatusServiceUnavailable, CodeUnavailable, "the task hub does not exist yet: start a worker first")
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		writeError(w, http.StatusServiceUnavailable, CodeUnavailable, "the request was cancelled before it completed")
	default:
		h.log.Error("httpapi: request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		writeError(w, http.StatusInternalServerError, CodeInternalError, "internal error; the server log has the details")
	}
}
