package taskhub

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/taskhub/taskhub/internal/engine"
	"github.com/taskhub/taskhub/internal/history"
	"github.com/taskhub/taskhub/internal/orchestration"
)

// OrchestrationContext is what an orchestrator function uses to do durable
// work. Orchestrator code is replayed from history, so it must be
// deterministic: use CurrentTime, NewGUID and activities instead of the wall
// clock, random numbers and I/O. Every method must be called from the
// orchestrator's own goroutine.
type OrchestrationContext struct {
	rt *orchestration.Context
}

// InstanceID returns the orchestration's instance ID.
func (c *OrchestrationContext) InstanceID() string { return c.rt.InstanceID() }

// Name returns the orchestrator's registered name.
func (c *OrchestrationContext) Name() string { return c.rt.Name() }

// CurrentTime returns the time of the current step, as recorded in the
// history: the same value on every replay.
func (c *OrchestrationContext) CurrentTime() time.Time { return c.rt.CurrentTime() }

// IsReplaying reports whether the code is re-executing recorded history.
func (c *OrchestrationContext) IsReplaying() bool { return c.rt.IsReplaying() }

// NewGUID returns a deterministic, replay-safe UUID.
func (c *OrchestrationContext) NewGUID() string { return c.rt.NewGUID() }

// Logger returns a logger that is silent while replaying, so each line is
// logged once.
func (c *OrchestrationContext) Logger() *slog.Logger { return c.rt.Logger() }

// SetCustomStatus sets the instance's custom status, a JSON-encodable value
// shown by status queries.
func (c *OrchestrationContext) SetCustomStatus(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("custom status: %w", err)
	}
	c.rt.SetCustomStatus(b)
	return nil
}

// CallOption configures CallActivity and CallSubOrchestrator.
type CallOption func(*callOptions)

type callOptions struct {
	retry      *RetryPolicy
	timeout    time.Duration
	instanceID string
}

// WithRetry retries a failed call according to policy.
func WithRetry(policy RetryPolicy) CallOption {
	return func(o *callOptions) { p := policy; o.retry = &p }
}

// WithTimeout fails an activity attempt that runs longer than d with a
// timeout error, which the retry policy or the orchestrator then handles.
func WithTimeout(d time.Duration) CallOption {
	return func(o *callOptions) { o.timeout = d }
}

// WithInstanceID sets a sub-orchestration's instance ID (default: derived
// deterministically from the parent's ID and the call).
func WithInstanceID(id string) CallOption {
	return func(o *callOptions) { o.instanceID = id }
}

// RetryPolicy describes how a failed activity or sub-orchestration is
// retried. Retries are durable timers in the orchestration's history, so
// they survive restarts.
type RetryPolicy struct {
	// MaxAttempts is the total number of attempts, the first included.
	MaxAttempts int
	// FirstInterval is the delay before the first retry.
	FirstInterval time.Duration
	// BackoffCoefficient multiplies the delay after each retry (default 1).
	BackoffCoefficient float64
	// MaxInterval caps the delay (0: no cap).
	MaxInterval time.Duration
	// RetryTimeout stops retrying once this much time has passed since the
	// first attempt (0: no limit).
	RetryTimeout time.Duration
	// Handle decides whether a failure is retried (nil: retry all but
	// non-retryable failures).
	Handle func(*FailureDetails) bool
}

func (p *RetryPolicy) internal() *orchestration.RetryPolicy {
	if p == nil {
		return nil
	}
	rp := &orchestration.RetryPolicy{
		MaxAttempts:        p.MaxAttempts,
		FirstInterval:      p.FirstInterval,
		BackoffCoefficient: p.BackoffCoefficient,
		MaxInterval:        p.MaxInterval,
		RetryTimeout:       p.RetryTimeout,
	}
	if h := p.Handle; h != nil {
		rp.Handle = func(f *history.Failure) bool { return h(failureDetails(f)) }
	}
	return rp
}

func marshalInput(what string, v any) ([]byte, error) {
	if raw, ok := v.(json.RawMessage); ok {
		return raw, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("%s: input cannot be encoded as JSON: %w", what, err)
	}
	return b, nil
}

// CallActivity schedules an activity and returns its task. The input must be
// JSON-encodable.
func (c *OrchestrationContext) CallActivity(name string, input any, opts ...CallOption) Task {
	var o callOptions
	for _, f := range opts {
		f(&o)
	}
	b, err := marshalInput("activity "+name, input)
	if err != nil {
		return failedTask(err)
	}
	return Task{c: c, f: c.rt.CallActivity(name, b, orchestration.ActivityOptions{Retry: o.retry.internal(), Timeout: o.timeout})}
}

// CallSubOrchestrator starts an orchestration as a child of this one and
// returns a task that completes with the child's output.
func (c *OrchestrationContext) CallSubOrchestrator(name string, input any, opts ...CallOption) Task {
	var o callOptions
	for _, f := range opts {
		f(&o)
	}
	b, err := marshalInput("sub-orchestration "+name, input)
	if err != nil {
		return failedTask(err)
	}
	return Task{c: c, f: c.rt.CallSubOrchestrator(name, o.instanceID, b, orchestration.SubOrchestratorOptions{Retry: o.retry.internal()})}
}

// CreateTimer returns a task that completes after d (a durable timer).
func (c *OrchestrationContext) CreateTimer(d time.Duration) Task {
	return c.CreateTimerAt(c.CurrentTime().Add(d))
}

// CreateTimerAt returns a task that completes at t (a durable timer).
func (c *OrchestrationContext) CreateTimerAt(t time.Time) Task {
	return Task{c: c, f: c.rt.CreateTimer(t)}
}

// WaitForExternalEvent returns a task that completes when an event with this
// name (case-insensitive) is raised to the instance. With a timeout > 0 the
// task fails with ErrEventTimeout when it passes first; a negative or zero
// timeout waits forever.
func (c *OrchestrationContext) WaitForExternalEvent(name string, timeout time.Duration) Task {
	if timeout <= 0 {
		timeout = -1
	}
	return Task{c: c, f: c.rt.WaitForExternalEvent(name, timeout)}
}

// SendEvent raises an event on another instance (fire and forget).
func (c *OrchestrationContext) SendEvent(instanceID, name string, data any) error {
	b, err := marshalInput("event "+name, data)
	if err != nil {
		return err
	}
	c.rt.SendEvent(instanceID, name, b)
	return nil
}

// ContinueAsNew restarts the orchestration with a new input and an empty
// history when the orchestrator function returns. With keepUnprocessedEvents,
// raised events not yet consumed are carried into the new execution.
func (c *OrchestrationContext) ContinueAsNew(input any, keepUnprocessedEvents bool) error {
	b, err := marshalInput("continue-as-new", input)
	if err != nil {
		return err
	}
	c.rt.ContinueAsNew(b, keepUnprocessedEvents)
	return nil
}

// WhenAll returns a task that completes when every task has; its error is
// the first failure in argument order.
func (c *OrchestrationContext) WhenAll(tasks ...Task) Task {
	fs, err := futures(tasks)
	if err != nil {
		return failedTask(err)
	}
	return Task{c: c, f: c.rt.WhenAll(fs...)}
}

// WhenAny returns a task that completes when the first task does. Await it
// into an int to learn the winner's index.
func (c *OrchestrationContext) WhenAny(tasks ...Task) Task {
	fs, err := futures(tasks)
	if err != nil {
		return failedTask(err)
	}
	return Task{c: c, f: c.rt.WhenAny(fs...), any: true}
}

func futures(tasks []Task) ([]*orchestration.Future, error) {
	fs := make([]*orchestration.Future, len(tasks))
	for i, t := range tasks {
		if t.err != nil {
			return nil, t.err
		}
		fs[i] = t.f
	}
	return fs, nil
}

// Task is a durable operation started by an orchestrator: an activity, a
// sub-orchestration, a timer, an external event, or a combination.
type Task struct {
	c   *OrchestrationContext
	f   *orchestration.Future
	any bool
	err error
}

func failedTask(err error) Task { return Task{err: err} }

// Done reports whether the task has completed (without waiting).
func (t Task) Done() bool { return t.err != nil || (t.f != nil && t.f.Done()) }

// Await waits for the task and decodes its JSON result into out (which may
// be nil to discard it). For a WhenAny task, out receives the winner's index
// and should be an *int.
func (t Task) Await(out any) error {
	if t.err != nil {
		return t.err
	}
	res, err := t.c.rt.Await(t.f)
	if err != nil {
		return wrapTaskError(err)
	}
	if t.any {
		if p, ok := out.(*int); ok {
			*p = t.f.Winner()
		}
		return nil
	}
	if out == nil || len(res) == 0 {
		return nil
	}
	if raw, ok := out.(*json.RawMessage); ok {
		*raw = append((*raw)[:0], res...)
		return nil
	}
	if err := json.Unmarshal(res, out); err != nil {
		return fmt.Errorf("task result cannot be decoded into %T: %w", out, err)
	}
	return nil
}

// Await waits for a task and returns its result as a T.
func Await[T any](t Task) (T, error) {
	var v T
	err := t.Await(&v)
	return v, err
}

// ActivityContext is the context of a running activity: a context.Context
// that is cancelled when the activity times out or the worker shuts down,
// plus the invocation's identity.
type ActivityContext interface {
	context.Context
	// InstanceID is the orchestration that called the activity.
	InstanceID() string
	// Name is the activity's registered name.
	Name() string
	// TaskID identifies the call within the orchestration.
	TaskID() int64
	// Attempt is 1 for the first attempt and counts retries.
	Attempt() int
}

type activityContext struct {
	context.Context
	info engine.ActivityInfo
}

func (a activityContext) InstanceID() string { return a.info.InstanceID }
func (a activityContext) Name() string       { return a.info.Name }
func (a activityContext) TaskID() int64      { return a.info.TaskID }
func (a activityContext) Attempt() int       { return a.info.Attempt }
