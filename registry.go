package taskhub

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/taskhub/taskhub/internal/engine"
	"github.com/taskhub/taskhub/internal/entity"
	"github.com/taskhub/taskhub/internal/orchestration"
)

// Registry holds the orchestrators and activities a worker can run, by
// name. Register everything before starting a worker.
type Registry struct {
	mu            sync.RWMutex
	orchestrators map[string]registeredOrchestrator
	activities    map[string]registeredActivity
	// entities maps lower-case entity names to their operations; created
	// by the first RegisterEntity or RegisterEntityType (see entity.go).
	entities map[string]entity.Invoke
}

type registeredOrchestrator struct {
	fn         orchestration.Func
	checkInput func([]byte) error
}

type registeredActivity struct {
	fn      engine.ActivityFunc
	timeout time.Duration
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{orchestrators: map[string]registeredOrchestrator{}, activities: map[string]registeredActivity{}}
}

// RegisterOrchestrator registers an orchestrator function. Its input is
// decoded from JSON into In and its output encoded as JSON. An input that
// does not decode fails the instance with a message saying so.
func RegisterOrchestrator[In, Out any](r *Registry, name string, fn func(ctx *OrchestrationContext, input In) (Out, error)) error {
	if name == "" {
		return fmt.Errorf("register orchestrator: empty name")
	}
	decode := func(b []byte) (In, error) {
		var in In
		if len(b) == 0 {
			return in, nil
		}
		if err := json.Unmarshal(b, &in); err != nil {
			return in, fmt.Errorf("orchestrator %q: input cannot be decoded into %T: %w", name, in, err)
		}
		return in, nil
	}
	wrapped := func(rc *orchestration.Context) ([]byte, error) {
		in, err := decode(rc.Input())
		if err != nil {
			return nil, err
		}
		out, err := fn(&OrchestrationContext{rt: rc}, in)
		if err != nil {
			return nil, err
		}
		b, err := json.Marshal(out)
		if err != nil {
			return nil, fmt.Errorf("orchestrator %q: output cannot be encoded as JSON: %w", name, err)
		}
		return b, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.orchestrators[name]; dup {
		return fmt.Errorf("register orchestrator: %q is already registered", name)
	}
	r.orchestrators[name] = registeredOrchestrator{fn: wrapped, checkInput: func(b []byte) error { _, err := decode(b); return err }}
	return nil
}

// ActivityOption configures a registered activity.
type ActivityOption func(*registeredActivity)

// ActivityTimeout sets the default timeout of every attempt of the
// activity; a call's WithTimeout overrides it.
func ActivityTimeout(d time.Duration) ActivityOption {
	return func(a *registeredActivity) { a.timeout = d }
}

// RegisterActivity registers an activity function. Its input is decoded
// from JSON into In and its output encoded as JSON.
func RegisterActivity[In, Out any](r *Registry, name string, fn func(ctx ActivityContext, input In) (Out, error), opts ...ActivityOption) error {
	if name == "" {
		return fmt.Errorf("register activity: empty name")
	}
	a := registeredActivity{}
	for _, o := range opts {
		o(&a)
	}
	a.fn = func(ctx context.Context, info engine.ActivityInfo, input []byte) ([]byte, error) {
		var in In
		if len(input) > 0 {
			if err := json.Unmarshal(input, &in); err != nil {
				return nil, NonRetryable(fmt.Errorf("activity %q: input cannot be decoded into %T: %w", name, in, err))
			}
		}
		out, err := fn(activityContext{Context: ctx, info: info}, in)
		if err != nil {
			return nil, err
		}
		b, err := json.Marshal(out)
		if err != nil {
			return nil, NonRetryable(fmt.Errorf("activity %q: output cannot be encoded as JSON: %w", name, err))
		}
		return b, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.activities[name]; dup {
		return fmt.Errorf("register activity: %q is already registered", name)
	}
	r.activities[name] = a
	return nil
}

func (r *Registry) orchestrator(name string) (orchestration.Func, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	o, ok := r.orchestrators[name]
	return o.fn, ok
}

func (r *Registry) activity(name string) (engine.ActivityFunc, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	a, ok := r.activities[name]
	return a.fn, ok
}

// entity returns the operations of the entity named name, which is
// case-insensitive (the engine passes the name parsed from an entity ID).
func (r *Registry) entity(name string) (entity.Invoke, bool) {
	name = strings.ToLower(name) // no allocation when already lower case
	r.mu.RLock()
	defer r.mu.RUnlock()
	fn, ok := r.entities[name]
	return fn, ok
}

func (r *Registry) activityTimeout(name string) time.Duration {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.activities[name].timeout
}

// checkInput validates an orchestrator input against the registered input
// type, when the orchestrator is known here.
func (r *Registry) checkInput(name string, b []byte) error {
	r.mu.RLock()
	o, ok := r.orchestrators[name]
	r.mu.RUnlock()
	if !ok {
		return nil
	}
	return o.checkInput(b)
}
