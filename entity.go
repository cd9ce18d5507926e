package taskhub

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/taskhub/taskhub/internal/engine"
	"github.com/taskhub/taskhub/internal/entity"
)

// Entity sentinel errors. Test with errors.Is.
var (
	// ErrInvalidEntityID: an entity ID or entity name is malformed (see
	// [EntityID]).
	ErrInvalidEntityID = errors.New("invalid entity ID")
	// ErrUnknownOperation: an entity function returns an error wrapping it
	// for an operation name it does not handle. The caller then gets the
	// standard non-retryable "operation not found" failure (type
	// "EntityOperationNotFound"), as for a struct-style entity without a
	// method of that name; except for "delete" (see [ImplicitDeleteOperation]).
	ErrUnknownOperation = errors.New("unknown entity operation")
)

// ImplicitDeleteOperation is the operation every entity has, as in
// Durable Functions: an entity that does not implement "delete" (matched
// case-insensitively) itself — an [EntityFunc] returning an error wrapping
// [ErrUnknownOperation] for it, a struct type without a Delete method —
// deletes its state on "delete", with no output and no actions.
const ImplicitDeleteOperation = "delete"

// isImplicitDelete reports whether operation is the implicit delete.
func isImplicitDelete(operation string) bool {
	return strings.EqualFold(operation, ImplicitDeleteOperation)
}

// EntityID identifies a durable entity: the entity's registered Name and a
// Key telling its instances apart (a counter per user, an account per
// number). Entity names are case-insensitive: [NewEntityID] and
// [ParseEntityID] give the name in lower case and [EntityID.String] writes
// it in lower case whatever the struct holds.
//
// A valid ID has a non-empty name without '@' and a non-empty key (which
// may contain '@'); both are UTF-8 without control characters, and the
// whole ID ("@name@key") is at most [MaxInstanceIDLength] bytes long.
// Everything that takes an EntityID refuses an invalid one with an error
// wrapping [ErrInvalidEntityID].
//
// In JSON (and anywhere encoding.TextMarshaler is used) an EntityID is its
// string form; the zero EntityID is the empty string.
type EntityID struct {
	Name string
	Key  string
}

// NewEntityID returns the ID of entity (name, key), with the name in lower
// case. It does not validate: the functions taking the ID do.
func NewEntityID(name, key string) EntityID {
	return EntityID{Name: strings.ToLower(name), Key: key}
}

// String returns the entity's instance ID: "@" + lower-case name + "@" +
// key. It is the ID its messages, its storage row and the status queries
// use.
func (id EntityID) String() string { return entity.ID(id.Name, id.Key) }

// ParseEntityID parses an entity instance ID ("@name@key", the form
// [EntityID.String] returns). The name is lower-cased; an ID that is not of
// this form or is not valid is an error wrapping [ErrInvalidEntityID].
func ParseEntityID(s string) (EntityID, error) {
	name, key, ok := entity.ParseID(s)
	if !ok {
		return EntityID{}, fmt.Errorf("%w: %q is not of the form @name@key", ErrInvalidEntityID, s)
	}
	id := EntityID{Name: strings.ToLower(name), Key: key}
	if err := validateEntityID(id); err != nil {
		return EntityID{}, err
	}
	return id, nil
}

// MarshalText encodes the ID as [EntityID.String] ("" for the zero ID); an
// invalid ID is an error.
func (id EntityID) MarshalText() ([]byte, error) {
	if id == (EntityID{}) {
		return []byte{}, nil
	}
	if err := validateEntityID(id); err != nil {
		return nil, err
	}
	return []byte(id.String()), nil
}

// UnmarshalText is the inverse of MarshalText, through [ParseEntityID].
func (id *EntityID) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*id = EntityID{}
		return nil
	}
	v, err := ParseEntityID(string(b))
	if err != nil {
		return err
	}
	*id = v
	return nil
}

// validateEntityID reports why id cannot be used (an error wrapping
// ErrInvalidEntityID), or nil. Everything that takes an EntityID from a
// user (clients, orchestrations, entities) calls it.
func validateEntityID(id EntityID) error {
	if err := validateEntityName(id.Name); err != nil {
		return err
	}
	switch {
	case id.Key == "":
		return fmt.Errorf("%w: entity %q has an empty key", ErrInvalidEntityID, id.Name)
	case !utf8.ValidString(id.Key):
		return fmt.Errorf("%w: the key of entity %q is not valid UTF-8", ErrInvalidEntityID, id.Name)
	case hasControl(id.Key):
		return fmt.Errorf("%w: the key %q of entity %q contains a control character", ErrInvalidEntityID, id.Key, id.Name)
	}
	if n := 2 + len(strings.ToLower(id.Name)) + len(id.Key); n > MaxInstanceIDLength {
		return fmt.Errorf("%w: entity ID %q is %d bytes long, the limit is %d", ErrInvalidEntityID, id.String(), n, MaxInstanceIDLength)
	}
	return nil
}

// validateEntityName reports why name cannot be an entity name (an error
// wrapping ErrInvalidEntityID), or nil: it must be non-empty, UTF-8 without
// control characters, and without '@' (which ends the name in an ID).
func validateEntityName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty entity name", ErrInvalidEntityID)
	case strings.Contains(name, "@"):
		return fmt.Errorf("%w: entity name %q contains '@'", ErrInvalidEntityID, name)
	case !utf8.ValidString(name):
		return fmt.Errorf("%w: entity name %q is not valid UTF-8", ErrInvalidEntityID, name)
	case hasControl(name):
		return fmt.Errorf("%w: entity name %q contains a control character", ErrInvalidEntityID, name)
	}
	return nil
}

func hasControl(s string) bool {
	return strings.IndexFunc(s, unicode.IsControl) >= 0
}

// SignalEntityOption configures the signalling of an entity, from a
// client, an orchestration or another entity.
type SignalEntityOption func(*signalOptions)

type signalOptions struct {
	at time.Time
}

// WithSignalTime delivers the signal at t rather than at once. A scheduled
// signal is not de-duplicated by sequence number (see docs/entities.md).
func WithSignalTime(t time.Time) SignalEntityOption {
	return func(o *signalOptions) { o.at = t }
}

// signalTime applies opts and returns when the signal is to be delivered
// (zero: at once). Clients and orchestration contexts call it.
func signalTime(opts []SignalEntityOption) time.Time {
	var o signalOptions
	for _, f := range opts {
		if f != nil {
			f(&o)
		}
	}
	return o.at
}

// EntityContext is what an entity operation is given: the entity's ID, the
// operation and its input, the entity's state, and the means to signal
// entities and start orchestrations. Signals and starts are sent only if
// the operation succeeds; a failed operation (error or panic) leaves the
// state as it was and sends nothing.
//
// An EntityContext is valid only during its operation and on the
// operation's goroutine: it must not be kept or used from other goroutines.
// Entity code is not replayed, so it need not be deterministic.
type EntityContext struct {
	entityID  string // "@name@key"
	operation string
	input     []byte
	// state is the current state: the call's (never written to, never
	// returned) until SetState or DeleteState replace it; nil when the
	// entity has none.
	state    []byte
	stateSet bool // SetState or DeleteState was called
	actions  []entity.Action
}

func newEntityContext(c *entity.Call) *EntityContext {
	return &EntityContext{entityID: c.Entity, operation: c.Operation, input: c.Input, state: c.State}
}

// ID returns the entity's ID (its name in lower case).
func (c *EntityContext) ID() EntityID {
	name, key, _ := entity.ParseID(c.entityID)
	return EntityID{Name: name, Key: key}
}

// Operation returns the name of the operation, as the caller spelled it.
// A function-style entity dispatches on it; struct-style entities match it
// case-insensitively.
func (c *EntityContext) Operation() string { return c.operation }

// GetInput decodes the operation's JSON input into v (a pointer). Without
// input v is left unchanged. An input that does not decode into v is a
// non-retryable error naming the entity, the operation and v's type.
func (c *EntityContext) GetInput(v any) error {
	if len(c.input) == 0 {
		return nil
	}
	if err := json.Unmarshal(c.input, v); err != nil {
		return c.inputError(v, err)
	}
	return nil
}

func (c *EntityContext) inputError(v any, err error) error {
	return NonRetryable(fmt.Errorf("entity %q: operation %q: input cannot be decoded into %T: %w", c.entityID, c.operation, v, err))
}

// HasState reports whether the entity has a state: one stored before the
// operation, or one set during it (SetState) and not deleted since.
func (c *EntityContext) HasState() bool { return c.state != nil }

// GetState decodes the entity's current state into v (a pointer). Without
// state v is left unchanged. In a struct-style entity ([RegisterEntityType])
// the receiver is the state and GetState returns the state as it was before
// the operation (or as last set with SetState).
func (c *EntityContext) GetState(v any) error {
	if c.state == nil {
		return nil
	}
	if err := json.Unmarshal(c.state, v); err != nil {
		return fmt.Errorf("entity %q: state cannot be decoded into %T: %w", c.entityID, v, err)
	}
	return nil
}

// SetState replaces the entity's state with v encoded as JSON (a
// json.RawMessage is taken as is and must be valid JSON). The new state is
// stored only if the operation succeeds. An encoding error is returned and
// leaves the state unchanged. In a struct-style entity, a state set this way
// replaces the receiver's (see [RegisterEntityType]).
func (c *EntityContext) SetState(v any) error {
	b, err := encodeJSON(v)
	if err != nil {
		return fmt.Errorf("entity %q: operation %q: state cannot be encoded as JSON: %w", c.entityID, c.operation, err)
	}
	c.state, c.stateSet = b, true
	return nil
}

// DeleteState removes the entity's state once the operation succeeds: the
// entity then has no state, as if never used, until an operation sets one.
func (c *EntityContext) DeleteState() {
	c.state, c.stateSet = nil, true
}

// SignalEntity sends operation with input (JSON-encodable; nil for none)
// to the entity id without waiting for it (one-way), once this operation
// succeeds. With [WithSignalTime] the signal is delivered later.
func (c *EntityContext) SignalEntity(id EntityID, operation string, input any, opts ...SignalEntityOption) error {
	if err := validateEntityID(id); err != nil {
		return fmt.Errorf("entity %q: signal %q: %w", c.entityID, operation, err)
	}
	if operation == "" {
		return fmt.Errorf("entity %q: signal to %q: empty operation name", c.entityID, id.String())
	}
	in, err := encodeInput(input)
	if err != nil {
		return fmt.Errorf("%w: entity %q: signal %q to %q: %w", ErrInvalidInput, c.entityID, operation, id.String(), err)
	}
	c.actions = append(c.actions, entity.Action{Kind: entity.ActionSignal, Target: id.String(), Name: operation, Input: in, At: signalTime(opts)})
	return nil
}

// ScheduleNewOrchestration starts an instance of the named orchestrator
// with input (JSON-encodable; nil for none) once this operation succeeds,
// and returns its instance ID: the one given with [WithStartInstanceID],
// otherwise a random UUID chosen now. [WithStartTime] delays the start.
// [WithReusePolicy] is ignored: the start is a message sent after the
// operation commits, when nobody is left to hear of a refusal, so what
// happens to an instance ID already in use is the engine's rule for
// entity-requested starts, not the caller's. Whether the orchestrator is
// registered is not checked here; an unknown one fails its instance.
func (c *EntityContext) ScheduleNewOrchestration(name string, input any, opts ...ScheduleOption) (instanceID string, err error) {
	var o scheduleOptions
	for _, f := range opts {
		if f != nil {
			f(&o)
		}
	}
	if name == "" {
		return "", fmt.Errorf("entity %q: schedule: empty orchestrator name", c.entityID)
	}
	if !o.idSet {
		o.id = uuid.NewString()
	}
	if err := ValidateInstanceID(o.id); err != nil {
		return "", fmt.Errorf("entity %q: schedule %q: %w", c.entityID, name, err)
	}
	in, err := encodeInput(input)
	if err != nil {
		return "", fmt.Errorf("%w: entity %q: schedule %q: %w", ErrInvalidInput, c.entityID, name, err)
	}
	c.actions = append(c.actions, entity.Action{Kind: entity.ActionStart, Target: o.id, Name: name, Input: in, At: o.startAt})
	return o.id, nil
}

// outcome is the operation's effect on the state and its actions.
func (c *EntityContext) outcome() entity.Outcome {
	o := entity.Outcome{Actions: c.actions}
	if c.stateSet {
		if c.state == nil {
			o.Deleted = true
		} else {
			o.State = c.state
		}
	}
	return o
}

// encodeJSON encodes v, taking a json.RawMessage as is once checked.
func encodeJSON(v any) ([]byte, error) {
	if raw, ok := v.(json.RawMessage); ok {
		if !json.Valid(raw) {
			return nil, errors.New("json.RawMessage is not valid JSON")
		}
		return raw, nil
	}
	return json.Marshal(v)
}

// encodeInput is encodeJSON with nil meaning no input.
func encodeInput(v any) ([]byte, error) {
	if v == nil {
		return nil, nil
	}
	return encodeJSON(v)
}

// operationFailure converts an operation's error into the failure its
// caller gets: ErrUnknownOperation becomes the standard "operation not
// found" failure, anything else is converted as an activity's error is
// (type, message, causes, NonRetryable).
func operationFailure(c *entity.Call, err error) error {
	if errors.Is(err, ErrUnknownOperation) {
		return entity.OperationNotFoundFailure(c.Entity, c.Operation)
	}
	return engine.FailureFromError(err)
}

// EntityFunc implements every operation of a function-style entity: it
// dispatches on ctx.Operation(), reads the input and the state through ctx
// and returns the call's answer, JSON-encoded (nil: no answer). An error
// fails the operation like an activity's error fails a task (wrap it with
// [NonRetryable] to mark it so); an error wrapping [ErrUnknownOperation]
// gives the standard "operation not found" failure, except for "delete",
// which then deletes the state ([ImplicitDeleteOperation]). A failed
// operation changes nothing. A panic fails the operation too.
type EntityFunc func(ctx *EntityContext) (any, error)

// RegisterEntity registers a function-style entity. Entity names are
// case-insensitive, must be non-empty and must not contain '@'.
//
// The state changes only through ctx.SetState and ctx.DeleteState, so an
// operation that calls neither (a read) costs no state encoding or write.
func RegisterEntity(r *Registry, name string, fn EntityFunc) error {
	if fn == nil {
		return fmt.Errorf("register entity %q: nil function", name)
	}
	invoke := func(c entity.Call) (entity.Outcome, error) {
		ctx := newEntityContext(&c)
		v, err := fn(ctx)
		if err != nil {
			if isImplicitDelete(c.Operation) && errors.Is(err, ErrUnknownOperation) {
				return entity.Outcome{Deleted: true}, nil
			}
			return entity.Outcome{}, operationFailure(&c, err)
		}
		out := ctx.outcome()
		if v != nil {
			b, err := encodeJSON(v)
			if err != nil {
				return entity.Outcome{}, outputFailure(&c, err)
			}
			if len(b) > 0 {
				out.Output = b
			}
		}
		return out, nil
	}
	return registerEntityInvoke(r, name, invoke)
}

func outputFailure(c *entity.Call, err error) error {
	return engine.FailureFromError(NonRetryable(fmt.Errorf("entity %q: operation %q: output cannot be encoded as JSON: %w", c.Entity, c.Operation, err)))
}

// registerEntityInvoke adds invoke under the lower-cased name.
func registerEntityInvoke(r *Registry, name string, invoke entity.Invoke) error {
	if err := validateEntityName(name); err != nil {
		return fmt.Errorf("register entity: %w", err)
	}
	key := strings.ToLower(name)
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.entities[key]; dup {
		return fmt.Errorf("register entity: %q is already registered", key)
	}
	if r.entities == nil {
		r.entities = map[string]entity.Invoke{}
	}
	r.entities[key] = invoke
	return nil
}

// entityMethod is one operation of a struct-style entity, analysed once at
// registration.
type entityMethod struct {
	name    string        // Go method name
	fn      reflect.Value // method expression: receiver first
	withCtx bool          // takes *EntityContext after the receiver
	in      reflect.Type  // input type, nil when none
	result  bool          // returns a value
	anyOut  bool          // the value is an interface: nil means no output
	err     bool          // returns an error (last)
}

var (
	entityContextType = reflect.TypeFor[*EntityContext]()
	errorType         = reflect.TypeFor[error]()
)

// entityMethodShapes lists the method shapes RegisterEntityType accepts.
const entityMethodShapes = "func([ctx *taskhub.EntityContext,] [input In]) with no result, error, R or (R, error)"

// skippedEntityMethod reports methods that are not operations: those that
// make the state type a JSON or text (un)marshaler, which serve encoding.
func skippedEntityMethod(m reflect.Method) bool {
	switch m.Name {
	case "MarshalJSON", "UnmarshalJSON", "MarshalText", "UnmarshalText":
		return true
	}
	return false
}

// RegisterEntityType registers a struct-style entity whose state is a T,
// stored as JSON. T must not be a pointer or an interface. Every exported
// method of *T is an operation, matched case-insensitively by name, except
// the encoding hooks MarshalJSON, UnmarshalJSON, MarshalText and
// UnmarshalText. A method takes an optional *EntityContext first, then at
// most one input of any JSON-decodable type (absent input: its zero value),
// and returns nothing, an error, a result R (the call's answer, encoded as
// JSON) or (R, error). A method of any other shape makes registration fail.
//
// Each operation decodes the state into a fresh T (the zero T when the
// entity has no state), calls the method and, if it succeeds, stores the T
// encoded again. A method can override this through its *EntityContext:
// after ctx.DeleteState() the entity has no state and after ctx.SetState(v)
// its state is v, whatever the receiver holds (the last of the two calls
// wins). The state is left as it was when its encoding does not change, and
// an entity without state that ends with the zero T's encoding stays
// without state, so read-only operations write nothing and do not create
// entities. Without a Delete method, the operation "delete" deletes the
// state ([ImplicitDeleteOperation]). An error, a panic, an unknown
// operation (failure type "EntityOperationNotFound") or an input that does not decode (a
// non-retryable failure naming the operation and the type) changes nothing.
func RegisterEntityType[T any](r *Registry, name string) error {
	t := reflect.TypeFor[T]()
	if k := t.Kind(); k == reflect.Pointer || k == reflect.Interface {
		return fmt.Errorf("register entity %q: state type %v: want a non-pointer, non-interface type (its operations are the methods of *T)", name, t)
	}
	zero, err := json.Marshal(new(T))
	if err != nil {
		return fmt.Errorf("register entity %q: state type %v cannot be encoded as JSON: %w", name, t, err)
	}
	ops, err := entityMethods(name, reflect.PointerTo(t))
	if err != nil {
		return err
	}
	invoke := func(c entity.Call) (entity.Outcome, error) {
		m := ops[c.Operation]
		if m == nil {
			if m = ops[strings.ToLower(c.Operation)]; m == nil {
				if isImplicitDelete(c.Operation) {
					return entity.Outcome{Deleted: true}, nil
				}
				return entity.Outcome{}, entity.OperationNotFoundFailure(c.Entity, c.Operation)
			}
		}
		st := new(T)
		if c.State != nil {
			if err := json.Unmarshal(c.State, st); err != nil {
				return entity.Outcome{}, engine.FailureFromError(NonRetryable(fmt.Errorf("entity %q: operation %q: state cannot be decoded into %T: %w", c.Entity, c.Operation, st, err)))
			}
		}
		var ctx *EntityContext
		var argv [3]reflect.Value
		args := append(argv[:0], reflect.ValueOf(st))
		if m.withCtx {
			ctx = newEntityContext(&c)
			args = append(args, reflect.ValueOf(ctx))
		}
		if m.in != nil {
			p := reflect.New(m.in)
			if len(c.Input) > 0 {
				if err := json.Unmarshal(c.Input, p.Interface()); err != nil {
					return entity.Outcome{}, engine.FailureFromError(NonRetryable(fmt.Errorf("entity %q: operation %q (method %s): input cannot be decoded into %v: %w", c.Entity, c.Operation, m.name, m.in, err)))
				}
			}
			args = append(args, p.Elem())
		}
		res := m.fn.Call(args)
		if m.err {
			if e := res[len(res)-1]; !e.IsNil() {
				return entity.Outcome{}, operationFailure(&c, e.Interface().(error))
			}
		}
		var out entity.Outcome
		if ctx != nil {
			out = ctx.outcome()
		}
		if ctx == nil || !ctx.stateSet {
			b, err := json.Marshal(st)
			if err != nil {
				return entity.Outcome{}, engine.FailureFromError(NonRetryable(fmt.Errorf("entity %q: operation %q: state cannot be encoded as JSON: %w", c.Entity, c.Operation, err)))
			}
			if !bytes.Equal(b, c.State) && (c.State != nil || !bytes.Equal(b, zero)) {
				out.State = b
			}
		}
		if m.result {
			v := res[0]
			if !m.anyOut || !v.IsNil() {
				b, err := encodeJSON(v.Interface())
				if err != nil {
					return entity.Outcome{}, outputFailure(&c, err)
				}
				out.Output = b
			}
		}
		return out, nil
	}
	return registerEntityInvoke(r, name, invoke)
}

// entityMethods builds the dispatch table of pt's exported methods, keyed
// by lower-case name and by the Go name (so that the usual spellings are
// found without lower-casing).
func entityMethods(name string, pt reflect.Type) (map[string]*entityMethod, error) {
	ops := map[string]*entityMethod{}
	for i := range pt.NumMethod() {
		rm := pt.Method(i)
		if skippedEntityMethod(rm) {
			continue
		}
		m, err := analyseEntityMethod(rm)
		if err != nil {
			return nil, fmt.Errorf("register entity %q: method %v.%s: %w; allowed shapes: %s", name, pt, rm.Name, err, entityMethodShapes)
		}
		low := strings.ToLower(rm.Name)
		if prev, dup := ops[low]; dup {
			return nil, fmt.Errorf("register entity %q: methods %s and %s of %v are the same operation (names are case-insensitive)", name, prev.name, rm.Name, pt)
		}
		ops[low] = m
		ops[rm.Name] = m
	}
	if len(ops) == 0 {
		return nil, fmt.Errorf("register entity %q: %v has no exported methods, so the entity would have no operations", name, pt)
	}
	return ops, nil
}

// analyseEntityMethod checks a method's shape (see entityMethodShapes).
func analyseEntityMethod(rm reflect.Method) (*entityMethod, error) {
	ft := rm.Type // receiver first
	m := &entityMethod{name: rm.Name, fn: rm.Func}
	if ft.IsVariadic() {
		return nil, errors.New("variadic methods are not operations")
	}
	params := make([]reflect.Type, 0, ft.NumIn()-1)
	for i := 1; i < ft.NumIn(); i++ {
		params = append(params, ft.In(i))
	}
	if len(params) > 0 && params[0] == entityContextType {
		m.withCtx = true
		params = params[1:]
	}
	switch len(params) {
	case 0:
	case 1:
		if params[0] == entityContextType {
			return nil, errors.New("*EntityContext must be the first parameter")
		}
		if err := checkJSONType(params[0], true); err != nil {
			return nil, fmt.Errorf("input type %v: %w", params[0], err)
		}
		m.in = params[0]
	default:
		return nil, fmt.Errorf("%d input parameters, at most one is allowed", len(params))
	}
	switch ft.NumOut() {
	case 0:
	case 1:
		if ft.Out(0) == errorType {
			m.err = true
		} else {
			m.result = true
		}
	case 2:
		if ft.Out(1) != errorType {
			return nil, fmt.Errorf("the second result is %v, not error", ft.Out(1))
		}
		m.result, m.err = true, true
	default:
		return nil, fmt.Errorf("%d results, at most two are allowed", ft.NumOut())
	}
	if m.result {
		rt := ft.Out(0)
		if rt == errorType {
			return nil, errors.New("the result is (error, error)")
		}
		if err := checkJSONType(rt, false); err != nil {
			return nil, fmt.Errorf("result type %v: %w", rt, err)
		}
		m.anyOut = rt.Kind() == reflect.Interface
	}
	return m, nil
}

// checkJSONType refuses the types encoding/json can never handle: chan,
// func, complex and unsafe pointers and, as an input (decode), interfaces
// other than the empty one. The check is shallow: struct fields are not
// inspected.
func checkJSONType(t reflect.Type, decode bool) error {
	switch t.Kind() {
	case reflect.Chan, reflect.Func, reflect.UnsafePointer, reflect.Complex64, reflect.Complex128:
		return fmt.Errorf("a %v cannot be JSON", t.Kind())
	case reflect.Interface:
		if decode && t.NumMethod() > 0 {
			return errors.New("JSON cannot be decoded into a non-empty interface")
		}
	}
	return nil
}
