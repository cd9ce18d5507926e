package taskhub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/taskhub/taskhub/backend"
	"github.com/taskhub/taskhub/internal/clock"
	"github.com/taskhub/taskhub/internal/engine"
	"github.com/taskhub/taskhub/internal/history"
)

// Client starts, inspects and controls orchestration instances of a hub.
type Client struct {
	be  backend.Backend
	c   *engine.Client
	reg *Registry
}

// ClientOptions configure a standalone client.
type ClientOptions struct {
	// MaxPollInterval caps the back-off of waits that cannot be woken by
	// an in-process worker (default 1 s).
	MaxPollInterval time.Duration
	// LargePayloadThreshold must match the workers' (default 45 KB).
	LargePayloadThreshold int
	Clock                 Clock
}

// NewClient returns a client that talks to the hub's storage directly. Its
// waits poll with back-off; prefer Worker.Client in a process that runs a
// worker.
func NewClient(be backend.Backend, opts ClientOptions) *Client {
	if opts.LargePayloadThreshold == 0 {
		opts.LargePayloadThreshold = LargePayloadThresholdDefault
	}
	return newClient(be, nil, opts.Clock, opts.LargePayloadThreshold, opts.MaxPollInterval)
}

func newClient(be backend.Backend, eng *engine.Engine, clk clock.Clock, threshold int, maxPoll time.Duration) *Client {
	return &Client{be: be, c: engine.NewClient(be, eng, clk, threshold, maxPoll)}
}

// MaxInstanceIDLength is the longest accepted instance ID, in bytes.
const MaxInstanceIDLength = 256

// ValidateInstanceID reports why an instance ID is not acceptable: empty,
// longer than MaxInstanceIDLength bytes, not UTF-8, containing control
// characters or one of / \ # ?, or starting with @ (reserved for entities).
func ValidateInstanceID(id string) error {
	switch {
	case id == "":
		return fmt.Errorf("%w: it is empty", ErrInvalidInstanceID)
	case len(id) > MaxInstanceIDLength:
		return fmt.Errorf("%w: it is %d bytes long, the limit is %d", ErrInvalidInstanceID, len(id), MaxInstanceIDLength)
	case !utf8.ValidString(id):
		return fmt.Errorf("%w: it is not valid UTF-8", ErrInvalidInstanceID)
	case id == "." || id == "..":
		return fmt.Errorf("%w: %q is a path element, unreachable over HTTP", ErrInvalidInstanceID, id)
	case strings.HasPrefix(id, "@"):
		return fmt.Errorf("%w: %q starts with @, which is reserved for entities", ErrInvalidInstanceID, id)
	}
	for _, r := range id {
		if unicode.IsControl(r) || strings.ContainsRune(`/\#?`, r) {
			return fmt.Errorf("%w: %q contains the forbidden character %q", ErrInvalidInstanceID, id, r)
		}
	}
	return nil
}

// ReusePolicy says what scheduling does when the instance ID is taken.
type ReusePolicy int

const (
	// ReuseIfFinished (the default) replaces a finished instance and
	// refuses one that is pending, running or suspended.
	ReuseIfFinished ReusePolicy = iota
	// ReuseNever refuses any existing instance.
	ReuseNever
	// ReuseTerminateRunning replaces the instance whatever its status: a
	// running execution is abandoned in favour of the new one.
	ReuseTerminateRunning
)

func (p ReusePolicy) refused() []backend.Status {
	switch p {
	case ReuseNever:
		return []backend.Status{backend.StatusPending, backend.StatusRunning, backend.StatusSuspended, backend.StatusContinuedAsNew,
			backend.StatusCompleted, backend.StatusFailed, backend.StatusTerminated}
	case ReuseTerminateRunning:
		return nil
	default:
		return []backend.Status{backend.StatusPending, backend.StatusRunning, backend.StatusSuspended, backend.StatusContinuedAsNew}
	}
}

// ScheduleOption configures ScheduleNewOrchestration.
type ScheduleOption func(*scheduleOptions)

type scheduleOptions struct {
	id      string
	idSet   bool
	startAt time.Time
	reuse   ReusePolicy
}

// WithStartInstanceID sets the new instance's ID (default: a random UUID).
func WithStartInstanceID(id string) ScheduleOption {
	return func(o *scheduleOptions) { o.id, o.idSet = id, true }
}

// WithStartTime delays the start to t (a scheduled start).
func WithStartTime(t time.Time) ScheduleOption {
	return func(o *scheduleOptions) { o.startAt = t }
}

// WithReusePolicy sets what happens when the instance ID is taken.
func WithReusePolicy(p ReusePolicy) ScheduleOption {
	return func(o *scheduleOptions) { o.reuse = p }
}

// ScheduleNewOrchestration starts an instance of the named orchestrator with
// a JSON-encodable input (a json.RawMessage is taken as is and must be valid
// JSON) and returns its instance ID. An existing instance with the same ID
// fails with *InstanceExistsError unless the reuse policy allows it.
func (c *Client) ScheduleNewOrchestration(ctx context.Context, name string, input any, opts ...ScheduleOption) (string, error) {
	var o scheduleOptions
	for _, f := range opts {
		f(&o)
	}
	if !o.idSet {
		o.id = uuid.NewString()
	}
	if err := ValidateInstanceID(o.id); err != nil {
		return "", err
	}
	if name == "" {
		return "", errors.New("schedule: empty orchestrator name")
	}
	if c.reg != nil {
		if _, ok := c.reg.orchestrator(name); !ok {
			return "", fmt.Errorf("schedule %q: %w with this worker", name, ErrOrchestratorNotFound)
		}
	}
	var in []byte
	if input != nil {
		var err error
		if in, err = marshalInput("orchestrator "+name, input); err != nil {
			return "", fmt.Errorf("%w: %w", ErrInvalidInput, err)
		}
		if !json.Valid(in) {
			return "", fmt.Errorf("%w: orchestrator %q: input is not valid JSON", ErrInvalidInput, name)
		}
		if c.reg != nil {
			if err := c.reg.checkInput(name, in); err != nil {
				return "", fmt.Errorf("%w: %w", ErrInvalidInput, err)
			}
		}
	}
	err := c.c.Schedule(ctx, engine.ScheduleParams{InstanceID: o.id, Name: name, Input: in, StartAt: o.startAt, RefuseStatuses: o.reuse.refused()})
	if err != nil {
		return "", err
	}
	return o.id, nil
}

// Status is an instance's runtime status.
type Status = backend.Status

// Runtime statuses, named as in Durable Functions.
const (
	StatusPending        = backend.StatusPending
	StatusRunning        = backend.StatusRunning
	StatusCompleted      = backend.StatusCompleted
	StatusContinuedAsNew = backend.StatusContinuedAsNew
	StatusFailed         = backend.StatusFailed
	StatusTerminated     = backend.StatusTerminated
	StatusSuspended      = backend.StatusSuspended
)

// InstanceStatus is the state of an instance as the Instances table shows it.
type InstanceStatus struct {
	InstanceID       string          `json:"instanceId"`
	Name             string          `json:"name"`
	ExecutionID      string          `json:"executionId,omitempty"`
	RuntimeStatus    Status          `json:"runtimeStatus"`
	Input            json.RawMessage `json:"input,omitempty"`
	Output           json.RawMessage `json:"output,omitempty"`
	CustomStatus     json.RawMessage `json:"customStatus,omitempty"`
	Failure          *FailureDetails `json:"failureDetails,omitempty"`
	CreatedAt        time.Time       `json:"createdTime"`
	LastUpdatedAt    time.Time       `json:"lastUpdatedTime"`
	CompletedAt      time.Time       `json:"completedTime,omitzero"`
	ScheduledStartAt time.Time       `json:"scheduledStartTime,omitzero"`
	ParentInstanceID string          `json:"parentInstanceId,omitempty"`
}

// Finished reports whether the instance completed, failed or was terminated.
func (s *InstanceStatus) Finished() bool { return s.RuntimeStatus.Finished() }

// ReadOutput decodes the instance's JSON output into v.
func (s *InstanceStatus) ReadOutput(v any) error {
	if len(s.Output) == 0 {
		return errors.New("instance has no output")
	}
	return json.Unmarshal(s.Output, v)
}

func statusFromRow(r *backend.Instance) *InstanceStatus {
	s := &InstanceStatus{
		InstanceID: r.InstanceID, Name: r.Name, ExecutionID: r.ExecutionID, RuntimeStatus: r.Status,
		Input: raw(r.Input), Output: raw(r.Output), CustomStatus: raw(r.CustomStatus),
		CreatedAt: r.CreatedAt, LastUpdatedAt: r.UpdatedAt, CompletedAt: r.CompletedAt,
		ScheduledStartAt: r.ScheduledStartAt, ParentInstanceID: r.ParentInstanceID,
	}
	if len(r.Failure) > 0 {
		var f engine.FailureJSON
		if json.Unmarshal(r.Failure, &f) == nil {
			s.Failure = failureDetails(engine.DecodeFailure(&f))
		}
	}
	return s
}

func raw(b []byte) json.RawMessage {
	if len(b) == 0 {
		return nil
	}
	return json.RawMessage(b)
}

// GetInstance returns an instance's status, or ErrInstanceNotFound.
func (c *Client) GetInstance(ctx context.Context, instanceID string) (*InstanceStatus, error) {
	r, err := c.c.Get(ctx, instanceID)
	if err != nil {
		return nil, fmt.Errorf("get instance %q: %w", instanceID, err)
	}
	return statusFromRow(r), nil
}

// WaitForInstanceStart waits until the instance has left Pending.
func (c *Client) WaitForInstanceStart(ctx context.Context, instanceID string) (*InstanceStatus, error) {
	r, err := c.c.Wait(ctx, instanceID, func(r *backend.Instance) bool { return r.Status != backend.StatusPending })
	if err != nil {
		return nil, fmt.Errorf("wait for start of %q: %w", instanceID, err)
	}
	return statusFromRow(r), nil
}

// WaitForInstanceCompletion waits until the instance has completed, failed
// or been terminated. In a process running a worker it wakes on the commit.
func (c *Client) WaitForInstanceCompletion(ctx context.Context, instanceID string) (*InstanceStatus, error) {
	r, err := c.c.Wait(ctx, instanceID, func(r *backend.Instance) bool { return r.Status.Finished() })
	if err != nil {
		return nil, fmt.Errorf("wait for completion of %q: %w", instanceID, err)
	}
	return statusFromRow(r), nil
}

// WaitForInstance waits until cond holds for the instance's status (an
// instance that does not exist yet is waited for).
func (c *Client) WaitForInstance(ctx context.Context, instanceID string, cond func(*InstanceStatus) bool) (*InstanceStatus, error) {
	r, err := c.c.Wait(ctx, instanceID, func(r *backend.Instance) bool { return cond(statusFromRow(r)) })
	if err != nil {
		return nil, fmt.Errorf("wait for %q: %w", instanceID, err)
	}
	return statusFromRow(r), nil
}

// RaiseEvent sends an event to a running instance. It fails with
// ErrInstanceNotFound or ErrInstanceFinished.
func (c *Client) RaiseEvent(ctx context.Context, instanceID, eventName string, data any) error {
	b, err := marshalInput("event "+eventName, data)
	if err != nil {
		return err
	}
	if eventName == "" {
		return errors.New("raise event: empty event name")
	}
	return c.c.Send(ctx, instanceID, &history.Event{Type: history.EventRaised, Name: eventName, Input: b})
}

// TerminateInstance ends a running instance with status Terminated and the
// reason as its output. With recursive, its running sub-orchestrations are
// terminated too.
func (c *Client) TerminateInstance(ctx context.Context, instanceID string, reason any, recursive bool) error {
	b, err := marshalInput("terminate reason", reason)
	if err != nil {
		return err
	}
	return c.c.Send(ctx, instanceID, &history.Event{Type: history.ExecutionTerminated, Input: b, Recurse: recursive})
}

// SuspendInstance suspends a running instance: events are kept but not
// processed until it is resumed.
func (c *Client) SuspendInstance(ctx context.Context, instanceID, reason string) error {
	b, _ := json.Marshal(reason)
	return c.c.Send(ctx, instanceID, &history.Event{Type: history.ExecutionSuspended, Input: b})
}

// ResumeInstance resumes a suspended instance.
func (c *Client) ResumeInstance(ctx context.Context, instanceID, reason string) error {
	b, _ := json.Marshal(reason)
	return c.c.Send(ctx, instanceID, &history.Event{Type: history.ExecutionResumed, Input: b})
}

// RewindInstance re-runs what made a failed instance fail: its history is
// cut back to before the step that received its first failure, failed
// activities run again (with their original task IDs), failed
// sub-orchestrations are rewound in turn, and results received since are
// delivered again. An instance that failed without a failed task re-runs its
// last step (useful after fixing an orchestrator bug). It fails with
// ErrInstanceNotFound or ErrInstanceNotFailed.
func (c *Client) RewindInstance(ctx context.Context, instanceID, reason string) error {
	b, _ := json.Marshal(reason)
	if err := c.c.Rewind(ctx, instanceID, b); err != nil {
		return fmt.Errorf("rewind %q: %w", instanceID, err)
	}
	return nil
}

// PurgeInstance deletes a finished instance: its row, history and payloads.
// It fails with ErrInstanceNotFound or ErrInstanceNotFinished.
func (c *Client) PurgeInstance(ctx context.Context, instanceID string) error {
	_, err := c.be.InstancePurge(ctx, &backend.InstancePurgeParams{InstanceID: instanceID})
	if err != nil {
		return fmt.Errorf("purge %q: %w", instanceID, err)
	}
	return nil
}

// InstanceFilter selects instances for QueryInstances and PurgeInstances.
// Entities are never selected: see QueryEntities and CleanEntityStorage.
type InstanceFilter struct {
	Statuses         []Status
	CreatedFrom      time.Time // inclusive
	CreatedTo        time.Time // exclusive
	Name             string
	InstanceIDPrefix string
}

func (f InstanceFilter) internal() backend.InstanceFilter {
	return backend.InstanceFilter{Statuses: f.Statuses, CreatedFrom: f.CreatedFrom, CreatedTo: f.CreatedTo, Name: f.Name, InstanceIDPrefix: f.InstanceIDPrefix,
		ExcludeInstanceIDPrefix: "@"}
}

// PurgeInstances deletes every finished instance matching the filter and
// returns how many. progress, if not nil, is called after each round.
func (c *Client) PurgeInstances(ctx context.Context, filter InstanceFilter, progress func(purged int)) (int, error) {
	const round = 500
	total := 0
	for {
		n, err := c.be.InstancePurge(ctx, &backend.InstancePurgeParams{Filter: filter.internal(), Limit: round})
		total += n
		if err != nil {
			return total, fmt.Errorf("purge: %w", err)
		}
		if progress != nil && n > 0 {
			progress(total)
		}
		if n < round {
			return total, nil
		}
	}
}

// InstanceQuery is a page request of QueryInstances.
type InstanceQuery struct {
	Filter            InstanceFilter
	PageSize          int // default 100
	ContinuationToken string
}

// InstancePage is a page of instances; ContinuationToken is empty on the
// last page.
type InstancePage struct {
	Instances         []*InstanceStatus
	ContinuationToken string
}

// QueryInstances lists instances matching a filter, in instance-ID order,
// one page at a time.
func (c *Client) QueryInstances(ctx context.Context, q InstanceQuery) (*InstancePage, error) {
	res, err := c.c.List(ctx, &backend.InstanceListParams{Filter: q.Filter.internal(), PageSize: q.PageSize, ContinuationToken: q.ContinuationToken})
	if err != nil {
		return nil, fmt.Errorf("query instances: %w", err)
	}
	page := &InstancePage{ContinuationToken: res.ContinuationToken, Instances: make([]*InstanceStatus, len(res.Instances))}
	for i, r := range res.Instances {
		page.Instances[i] = statusFromRow(r)
	}
	return page, nil
}

// HistoryEvent is one event of an instance's history, for display.
type HistoryEvent struct {
	Seq          int64           `json:"eventId"`
	Type         string          `json:"eventType"`
	Timestamp    time.Time       `json:"timestamp"`
	Name         string          `json:"name,omitempty"`
	TaskID       int64           `json:"taskId,omitempty"`
	InstanceID   string          `json:"instanceId,omitempty"`
	Input        json.RawMessage `json:"input,omitempty"`
	FireAt       time.Time       `json:"fireAt,omitzero"`
	Status       string          `json:"orchestrationStatus,omitempty"`
	Failure      *FailureDetails `json:"failureDetails,omitempty"`
	ScheduledAt  time.Time       `json:"scheduledTime,omitzero"`
	Attempt      int32           `json:"attempt,omitempty"`
	ExecutionID  string          `json:"executionId,omitempty"`
	ParentID     string          `json:"parentInstanceId,omitempty"`
	ParentTaskID int64           `json:"parentTaskId,omitempty"`
}

// GetHistory returns the history of an instance's current execution.
func (c *Client) GetHistory(ctx context.Context, instanceID string) ([]*HistoryEvent, error) {
	evs, err := c.c.History(ctx, instanceID)
	if err != nil {
		return nil, fmt.Errorf("history of %q: %w", instanceID, err)
	}
	out := make([]*HistoryEvent, len(evs))
	for i, e := range evs {
		h := &HistoryEvent{Seq: e.Seq, Type: e.Type.String(), Timestamp: e.Time, Name: e.Name, TaskID: e.TaskID,
			InstanceID: e.InstanceID, Input: raw(e.Input), FireAt: e.FireAt, Status: e.Status, Failure: failureDetails(e.Failure),
			Attempt: e.Attempt, ExecutionID: e.ExecutionID}
		if e.Parent != nil {
			h.ParentID, h.ParentTaskID = e.Parent.InstanceID, e.Parent.TaskID
		}
		out[i] = h
	}
	return out, nil
}
