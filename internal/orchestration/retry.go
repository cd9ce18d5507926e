package orchestration

import (
	"errors"
	"math"
	"time"

	"github.com/taskhub/taskhub/internal/history"
)

// RetryPolicy retries a failed activity or sub-orchestration. The runtime
// applies it by itself, deterministically: each attempt is a new scheduling
// event (Attempt 1, 2, ...) with a new TaskID, and the wait between attempts
// is a durable timer in history, so retries survive restarts and replay
// without any user code being involved.
type RetryPolicy struct {
	// MaxAttempts is the total number of attempts, the first included;
	// values below 2 mean no retry.
	MaxAttempts int
	// FirstInterval is the delay before the first retry. Zero or less
	// retries at once, without a timer.
	FirstInterval time.Duration
	// MaxInterval caps the delay (0: no cap).
	MaxInterval time.Duration
	// BackoffCoefficient multiplies the delay after each retry: the delay
	// before attempt n+1 is FirstInterval × BackoffCoefficient^(n-1).
	// Zero or less means 1.
	BackoffCoefficient float64
	// RetryTimeout stops retrying when the next attempt would start more
	// than this long (in history time) after the first one (0: no limit).
	RetryTimeout time.Duration
	// Handle decides whether a failure is retried (nil: all are). It runs
	// inside the step, also on replay, so it must be deterministic. A
	// failure marked NonRetryable is never retried, whatever Handle says.
	Handle func(*history.Failure) bool
}

// ActivityOptions configure CallActivity.
type ActivityOptions struct {
	// Retry retries failed attempts (nil: one attempt).
	Retry *RetryPolicy
	// Timeout is recorded on the TaskScheduled event for the activity
	// worker, which fails an attempt that runs longer (0: no timeout).
	Timeout time.Duration
}

// SubOrchestratorOptions configure CallSubOrchestrator.
type SubOrchestratorOptions struct {
	// Retry retries failed attempts (nil: one attempt). Each attempt of a
	// child without an explicit instance ID is a new child instance.
	Retry *RetryPolicy
}

// retryCall runs the attempts of one call with a retry policy. It listens
// to the current attempt's future, then to the timer before the next one.
// It is driven from the step (driver side), never from user code.
type retryCall struct {
	c          *Context
	kind       taskKind
	name       string
	instanceID string
	input      []byte
	timeout    time.Duration
	policy     RetryPolicy
	attempt    int32
	firstAt    time.Time
	inTimer    bool
	result     *Future
}

func (c *Context) withRetry(kind taskKind, name, instanceID string, input []byte, timeout time.Duration, p *RetryPolicy) *Future {
	r := &retryCall{
		c: c, kind: kind, name: name, instanceID: instanceID, input: input, timeout: timeout,
		policy: *p, attempt: 1, firstAt: c.in.clock, result: &Future{},
	}
	r.schedule()
	return r.result
}

func (r *retryCall) schedule() {
	var t *task
	if r.kind == kindActivity {
		t = r.c.scheduleActivity(r.name, r.input, r.timeout, r.attempt)
	} else {
		t = r.c.scheduleSub(r.name, r.instanceID, r.input, r.attempt)
	}
	r.inTimer = false
	t.future.listen(r, 0)
}

func (r *retryCall) futureDone(f *Future, _ int) {
	if r.c.ended {
		return
	}
	if r.inTimer {
		r.attempt++
		r.schedule()
		return
	}
	if f.err == nil {
		r.result.resolve(f.value, nil)
		return
	}
	delay, ok := r.nextDelay(f.err)
	if !ok {
		r.result.resolve(nil, f.err)
		return
	}
	if delay <= 0 {
		r.attempt++
		r.schedule()
		return
	}
	t := r.c.scheduleTimer(r.c.in.clock.Add(delay))
	r.inTimer = true
	t.future.listen(r, 0)
}

// nextDelay decides whether attempt r.attempt, which failed with err, is
// retried, and after which delay.
func (r *retryCall) nextDelay(err error) (time.Duration, bool) {
	p := &r.policy
	if int(r.attempt) >= max(p.MaxAttempts, 1) {
		return 0, false
	}
	failure := &history.Failure{Message: err.Error()}
	var tf *TaskFailedError
	if errors.As(err, &tf) && tf.Failure != nil {
		failure = tf.Failure
	}
	if failure.NonRetryable {
		return 0, false
	}
	if p.Handle != nil && !r.handle(failure) {
		return 0, false
	}
	coef := p.BackoffCoefficient
	if coef <= 0 {
		coef = 1
	}
	d := float64(p.FirstInterval) * math.Pow(coef, float64(r.attempt-1))
	if p.MaxInterval > 0 && d > float64(p.MaxInterval) {
		d = float64(p.MaxInterval)
	}
	delay := time.Duration(math.MaxInt64)
	if d < float64(math.MaxInt64) {
		delay = time.Duration(d)
	}
	if p.RetryTimeout > 0 && r.c.in.clock.Add(delay).Sub(r.firstAt) > p.RetryTimeout {
		return 0, false
	}
	return delay, true
}

// handle runs the user's Handle on the driver side; a panic there must not
// take down the step, so it counts as "do not retry" (the same on replay).
func (r *retryCall) handle(f *history.Failure) (retry bool) {
	defer func() {
		if p := recover(); p != nil {
			r.c.in.log.Error("retry policy Handle panicked: not retrying", "instance", r.c.instanceID, "name", r.name, "panic", p)
			retry = false
		}
	}()
	return r.policy.Handle(f)
}
