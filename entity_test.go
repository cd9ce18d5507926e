package taskhub

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/taskhub/taskhub/internal/entity"
	"github.com/taskhub/taskhub/internal/history"
)

// ---- helpers ----

func entityInvoke(t testing.TB, r *Registry, name string) entity.Invoke {
	t.Helper()
	inv, ok := r.entity(name)
	if !ok || inv == nil {
		t.Fatalf("entity %q not found in registry", name)
	}
	return inv
}

// invokeOp runs one operation with input encoded as JSON (nil: none).
func invokeOp(t testing.TB, inv entity.Invoke, id, op string, input any, state string) (entity.Outcome, error) {
	t.Helper()
	c := entity.Call{Entity: id, Operation: op, RequestID: "r1", Sender: entity.Sender{InstanceID: "client"}}
	if input != nil {
		b, err := json.Marshal(input)
		if err != nil {
			t.Fatal(err)
		}
		c.Input = b
	}
	if state != "" {
		c.State = []byte(state)
	}
	return inv(c)
}

func mustSucceed(t testing.TB, out entity.Outcome, err error) entity.Outcome {
	t.Helper()
	if err != nil {
		t.Fatalf("operation failed: %v", err)
	}
	return out
}

func mustFail(t testing.TB, out entity.Outcome, err error) *history.Failure {
	t.Helper()
	if err == nil {
		t.Fatalf("operation succeeded (%+v), want a failure", out)
	}
	var f *history.Failure
	if !errors.As(err, &f) {
		t.Fatalf("error %T %v is not a *history.Failure", err, err)
	}
	if out.State != nil || out.Deleted || out.Output != nil || out.Actions != nil {
		t.Errorf("failed operation returned a non-empty outcome %+v", out)
	}
	return f
}

func succeed(t testing.TB, inv entity.Invoke, id, op string, input any, state string) entity.Outcome {
	t.Helper()
	out, err := invokeOp(t, inv, id, op, input, state)
	return mustSucceed(t, out, err)
}

func fail(t testing.TB, inv entity.Invoke, id, op string, input any, state string) *history.Failure {
	t.Helper()
	out, err := invokeOp(t, inv, id, op, input, state)
	return mustFail(t, out, err)
}

func wantState(t testing.TB, out entity.Outcome, want string) {
	t.Helper()
	if out.Deleted {
		t.Fatalf("state deleted, want %s", want)
	}
	if string(out.State) != want {
		t.Fatalf("state = %q, want %q", out.State, want)
	}
}

func wantUnchanged(t testing.TB, out entity.Outcome) {
	t.Helper()
	if out.State != nil || out.Deleted {
		t.Fatalf("state changed (state %q, deleted %v), want unchanged", out.State, out.Deleted)
	}
}

// ---- EntityID ----

func TestEntityIDStringParse(t *testing.T) {
	id := NewEntityID("Counter", "user@example.com")
	if id.Name != "counter" {
		t.Errorf("NewEntityID name = %q, want lower case", id.Name)
	}
	if got, want := id.String(), "@counter@user@example.com"; got != want {
		t.Fatalf("String() = %q, want %q", got, want)
	}
	if got := (EntityID{Name: "MixedCase", Key: "k"}).String(); got != "@mixedcase@k" {
		t.Errorf("String() of a literal = %q, want the name lower-cased", got)
	}
	if got := id.String(); got != entity.ID("Counter", "user@example.com") {
		t.Errorf("String() = %q differs from entity.ID", got)
	}
	back, err := ParseEntityID(id.String())
	if err != nil {
		t.Fatal(err)
	}
	if back != id {
		t.Fatalf("ParseEntityID(String()) = %+v, want %+v", back, id)
	}
	up, err := ParseEntityID("@Counter@K")
	if err != nil {
		t.Fatal(err)
	}
	if up != (EntityID{Name: "counter", Key: "K"}) {
		t.Errorf("ParseEntityID(@Counter@K) = %+v, want name lowered and key kept", up)
	}
}

func TestEntityIDInvalid(t *testing.T) {
	for _, s := range []string{"", "@", "@@key", "@counter@", "counter@key", "@counter", "@name@k\x00ey", "@" + strings.Repeat("n", 300) + "@k"} {
		if id, err := ParseEntityID(s); err == nil {
			t.Errorf("ParseEntityID(%q) = %+v, want an error", s, id)
		} else if !errors.Is(err, ErrInvalidEntityID) {
			t.Errorf("ParseEntityID(%q) error %v does not wrap ErrInvalidEntityID", s, err)
		}
	}
	for _, id := range []EntityID{{}, {Name: "", Key: "k"}, {Name: "a@b", Key: "k"}, {Name: "counter", Key: ""}, {Name: "c\tx", Key: "k"}} {
		if err := validateEntityID(id); !errors.Is(err, ErrInvalidEntityID) {
			t.Errorf("validateEntityID(%+v) = %v, want ErrInvalidEntityID", id, err)
		}
	}
	if err := validateEntityID(NewEntityID("Counter", "@weird@key")); err != nil {
		t.Errorf("a key may contain '@': %v", err)
	}
}

func TestEntityIDJSON(t *testing.T) {
	type msg struct {
		ID    EntityID `json:"id"`
		Other EntityID `json:"other"`
	}
	b, err := json.Marshal(msg{ID: NewEntityID("Account", "42")})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), `{"id":"@account@42","other":""}`; got != want {
		t.Fatalf("JSON = %s, want %s", got, want)
	}
	var m msg
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if m.ID != NewEntityID("account", "42") || m.Other != (EntityID{}) {
		t.Fatalf("decoded %+v", m)
	}
	if err := json.Unmarshal([]byte(`{"id":"account/42"}`), &m); !errors.Is(err, ErrInvalidEntityID) {
		t.Errorf("decoding a bad ID: %v, want ErrInvalidEntityID", err)
	}
	if _, err := json.Marshal(msg{ID: EntityID{Name: "a@b", Key: "k"}}); !errors.Is(err, ErrInvalidEntityID) {
		t.Errorf("encoding a bad ID: %v, want ErrInvalidEntityID", err)
	}
	// As a map key too.
	b, err = json.Marshal(map[EntityID]int{NewEntityID("c", "1"): 1})
	if err != nil || string(b) != `{"@c@1":1}` {
		t.Errorf("map key JSON = %s, %v", b, err)
	}
}

// ---- function style ----

var errNegative = errors.New("negative amount")

func counterEntity(ctx *EntityContext) (any, error) {
	var n int
	if err := ctx.GetState(&n); err != nil {
		return nil, err
	}
	switch ctx.Operation() {
	case "add":
		var d int
		if err := ctx.GetInput(&d); err != nil {
			return nil, err
		}
		if d < 0 {
			return nil, errNegative
		}
		if d > 1000 {
			return nil, NonRetryable(fmt.Errorf("too large: %d", d))
		}
		return nil, ctx.SetState(n + d)
	case "reset":
		return nil, ctx.SetState(0)
	case "get":
		return n, nil
	case "has":
		return ctx.HasState(), nil
	case "delete":
		ctx.DeleteState()
		return nil, nil
	case "whoami":
		return ctx.ID(), nil
	}
	return nil, fmt.Errorf("counter: %w %q", ErrUnknownOperation, ctx.Operation())
}

func TestEntityFuncCounter(t *testing.T) {
	r := NewRegistry()
	if err := RegisterEntity(r, "Counter", counterEntity); err != nil {
		t.Fatal(err)
	}
	inv := entityInvoke(t, r, "counter")
	if _, ok := r.entity("COUNTER"); !ok {
		t.Error("registry lookup is not case-insensitive")
	}
	id := NewEntityID("counter", "c1").String()

	out := succeed(t, inv, id, "add", 5, "")
	wantState(t, out, "5")
	if out.Output != nil {
		t.Errorf("add answered %q, want no output", out.Output)
	}
	out = succeed(t, inv, id, "add", 3, "5")
	wantState(t, out, "8")

	// No input leaves the target unchanged: add nothing.
	out = succeed(t, inv, id, "add", nil, "8")
	wantState(t, out, "8")

	out = succeed(t, inv, id, "get", nil, "8")
	wantUnchanged(t, out)
	if string(out.Output) != "8" {
		t.Errorf("get = %q, want 8", out.Output)
	}
	out = succeed(t, inv, id, "get", nil, "")
	if string(out.Output) != "0" {
		t.Errorf("get without state = %q, want 0", out.Output)
	}
	out = succeed(t, inv, id, "has", nil, "")
	if string(out.Output) != "false" {
		t.Errorf("has without state = %q", out.Output)
	}
	out = succeed(t, inv, id, "has", nil, "1")
	if string(out.Output) != "true" {
		t.Errorf("has with state = %q", out.Output)
	}
	out = succeed(t, inv, id, "whoami", nil, "")
	if string(out.Output) != `"@counter@c1"` {
		t.Errorf("whoami = %s", out.Output)
	}

	out = succeed(t, inv, id, "reset", nil, "8")
	wantState(t, out, "0")

	out = succeed(t, inv, id, "delete", nil, "8")
	if !out.Deleted || out.State != nil {
		t.Errorf("delete: %+v, want Deleted", out)
	}

	// Unknown operation: the standard failure.
	f := fail(t, inv, id, "multiply", 2, "8")
	if f.Type != entity.FailureTypeOperationNotFound || !f.NonRetryable {
		t.Errorf("unknown operation failure = %+v", f)
	}
	if !strings.Contains(f.Message, "multiply") || !strings.Contains(f.Message, id) {
		t.Errorf("unknown operation message %q does not name the operation and the entity", f.Message)
	}

	// An error fails the operation like an activity error.
	f = fail(t, inv, id, "add", -1, "8")
	if f.Message != errNegative.Error() || f.NonRetryable || f.Type != "*errors.errorString" {
		t.Errorf("error failure = %+v", f)
	}
	f = fail(t, inv, id, "add", 5000, "8")
	if !f.NonRetryable || !strings.Contains(f.Message, "too large") {
		t.Errorf("non-retryable failure = %+v", f)
	}

	// Input that does not decode.
	f = fail(t, inv, id, "add", "ten", "8")
	if !f.NonRetryable {
		t.Errorf("bad input failure is retryable: %+v", f)
	}
	for _, want := range []string{id, `"add"`, "*int"} {
		if !strings.Contains(f.Message, want) {
			t.Errorf("bad input message %q does not contain %s", f.Message, want)
		}
	}
	// A state that does not decode.
	f = fail(t, inv, id, "get", nil, `"x"`)
	if !strings.Contains(f.Message, "state") {
		t.Errorf("bad state message %q", f.Message)
	}
}

func TestEntityFuncThroughExecute(t *testing.T) {
	r := NewRegistry()
	if err := RegisterEntity(r, "counter", counterEntity); err != nil {
		t.Fatal(err)
	}
	inv := entityInvoke(t, r, "counter")
	id := NewEntityID("counter", "x").String()
	op := func(reqID, name string, in string, call bool) entity.Request {
		q := entity.Request{Kind: entity.Operation, ID: reqID, Sender: entity.Sender{InstanceID: "orch", ExecutionID: "e"}, Operation: name, WantsResponse: call, TaskID: 1}
		if in != "" {
			q.Input = []byte(in)
		}
		return q
	}
	res := entity.Execute(id, entity.Record{}, nil, []entity.Request{
		op("1", "add", "2", false),
		op("2", "add", "-4", true), // fails: rolled back
		op("3", "add", "3", false),
		op("4", "get", "", true),
	}, inv, 0)
	if string(res.State) != "5" || !res.StateChanged {
		t.Fatalf("state after batch = %q (changed %v), want 5", res.State, res.StateChanged)
	}
	if len(res.Responses) != 2 || res.Responses[0].Failure == nil || string(res.Responses[1].Output) != "5" {
		t.Fatalf("responses = %+v", res.Responses)
	}
}

func TestEntityFuncOutputs(t *testing.T) {
	r := NewRegistry()
	err := RegisterEntity(r, "out", func(ctx *EntityContext) (any, error) {
		switch ctx.Operation() {
		case "raw":
			return json.RawMessage(`{"a":1}`), nil
		case "badraw":
			return json.RawMessage(`{`), nil
		case "chan":
			return make(chan int), nil
		case "setbad":
			return nil, ctx.SetState(make(chan int))
		case "setdel":
			if err := ctx.SetState(1); err != nil {
				return nil, err
			}
			ctx.DeleteState()
			return ctx.HasState(), nil
		case "delset":
			ctx.DeleteState()
			return nil, ctx.SetState("again")
		}
		return nil, ErrUnknownOperation
	})
	if err != nil {
		t.Fatal(err)
	}
	inv := entityInvoke(t, r, "out")
	id := "@out@1"
	out := succeed(t, inv, id, "raw", nil, "")
	if string(out.Output) != `{"a":1}` {
		t.Errorf("raw output = %s", out.Output)
	}
	if f := fail(t, inv, id, "badraw", nil, ""); !f.NonRetryable {
		t.Errorf("invalid raw output: %+v", f)
	}
	if f := fail(t, inv, id, "chan", nil, ""); !strings.Contains(f.Message, "output") {
		t.Errorf("unencodable output: %+v", f)
	}
	if f := fail(t, inv, id, "setbad", nil, "1"); !strings.Contains(f.Message, "state cannot be encoded") {
		t.Errorf("unencodable state: %+v", f)
	}
	out = succeed(t, inv, id, "setdel", nil, "1")
	if !out.Deleted || string(out.Output) != "false" {
		t.Errorf("set then delete: %+v", out)
	}
	out = succeed(t, inv, id, "delset", nil, "1")
	wantState(t, out, `"again"`)
	if f := fail(t, inv, id, "nope", nil, ""); f.Type != entity.FailureTypeOperationNotFound {
		t.Errorf("bare ErrUnknownOperation: %+v", f)
	}
	// The implicit delete: the function does not handle "delete".
	for _, op := range []string{"delete", "Delete"} {
		out = succeed(t, inv, id, op, nil, "1")
		if !out.Deleted || out.State != nil || out.Output != nil || out.Actions != nil {
			t.Errorf("implicit %s: %+v", op, out)
		}
	}
}

// ---- struct style ----

type testCounter struct {
	Value int `json:"value"`
}

func (c *testCounter) Add(n int)                 { c.Value += n }
func (c *testCounter) Reset()                    { c.Value = 0 }
func (c *testCounter) Get() int                  { return c.Value }
func (c *testCounter) Delete(ctx *EntityContext) { ctx.DeleteState() }
func (c *testCounter) Replace(ctx *EntityContext, n int) error {
	c.Value = -1 // ignored: SetState wins
	return ctx.SetState(testCounter{Value: n})
}

var errInsufficientFunds = errors.New("insufficient funds")

type testAccount struct {
	Amount int `json:"balance"`
}

type transfer struct {
	To     string `json:"to"`
	Amount int    `json:"amount"`
}

func (a *testAccount) Deposit(amount int) error {
	if amount <= 0 {
		return fmt.Errorf("deposit %d: amount must be positive", amount)
	}
	a.Amount += amount
	return nil
}

func (a *testAccount) Withdraw(amount int) error {
	if amount > a.Amount {
		return fmt.Errorf("withdraw %d from %d: %w", amount, a.Amount, errInsufficientFunds)
	}
	a.Amount -= amount
	return nil
}

func (a *testAccount) Balance() int { return a.Amount }

func (a *testAccount) Delete(ctx *EntityContext) { ctx.DeleteState() }

// Transfer withdraws and signals the target account's deposit.
func (a *testAccount) Transfer(ctx *EntityContext, t transfer) (int, error) {
	if err := a.Withdraw(t.Amount); err != nil {
		return 0, err
	}
	if err := ctx.SignalEntity(NewEntityID("account", t.To), "Deposit", t.Amount); err != nil {
		return 0, err
	}
	return a.Amount, nil
}

// Info returns an interface result: nil means no output.
func (a *testAccount) Info(verbose bool) any {
	if !verbose {
		return nil
	}
	return map[string]int{"balance": a.Amount}
}

func TestEntityTypeCounter(t *testing.T) {
	r := NewRegistry()
	if err := RegisterEntityType[testCounter](r, "Counter"); err != nil {
		t.Fatal(err)
	}
	inv := entityInvoke(t, r, "counter")
	id := "@counter@1"

	out := succeed(t, inv, id, "Add", 5, "")
	wantState(t, out, `{"value":5}`)
	out = succeed(t, inv, id, "add", 2, `{"value":5}`)
	wantState(t, out, `{"value":7}`)
	out = succeed(t, inv, id, "ADD", nil, `{"value":7}`) // zero input: unchanged
	wantUnchanged(t, out)
	out = succeed(t, inv, id, "gEt", nil, `{"value":7}`)
	wantUnchanged(t, out)
	if string(out.Output) != "7" {
		t.Errorf("get = %s", out.Output)
	}
	// Zero start: a read on an entity without state stays without state.
	out = succeed(t, inv, id, "get", nil, "")
	wantUnchanged(t, out)
	if string(out.Output) != "0" {
		t.Errorf("get without state = %s", out.Output)
	}
	out = succeed(t, inv, id, "reset", nil, `{"value":7}`)
	wantState(t, out, `{"value":0}`)
	out = succeed(t, inv, id, "delete", nil, `{"value":7}`)
	if !out.Deleted {
		t.Errorf("delete: %+v", out)
	}
	out = succeed(t, inv, id, "replace", 42, `{"value":7}`)
	wantState(t, out, `{"value":42}`)

	f := fail(t, inv, id, "multiply", 2, `{"value":7}`)
	if f.Type != entity.FailureTypeOperationNotFound {
		t.Errorf("unknown operation: %+v", f)
	}
	f = fail(t, inv, id, "add", "five", `{"value":7}`)
	if !f.NonRetryable || !strings.Contains(f.Message, `"add"`) || !strings.Contains(f.Message, "int") {
		t.Errorf("bad input failure: %+v", f)
	}
	f = fail(t, inv, id, "get", nil, `[1]`)
	if !strings.Contains(f.Message, "state cannot be decoded") {
		t.Errorf("bad state failure: %+v", f)
	}
}

func TestEntityTypeAccount(t *testing.T) {
	r := NewRegistry()
	if err := RegisterEntityType[testAccount](r, "account"); err != nil {
		t.Fatal(err)
	}
	inv := entityInvoke(t, r, "Account")
	id := NewEntityID("account", "alice").String()

	out := succeed(t, inv, id, "balance", nil, "")
	wantUnchanged(t, out)
	if string(out.Output) != "0" {
		t.Errorf("balance of a new account = %s", out.Output)
	}
	out = succeed(t, inv, id, "deposit", 100, "")
	wantState(t, out, `{"balance":100}`)
	if out.Output != nil {
		t.Errorf("deposit answered %s", out.Output)
	}

	f := fail(t, inv, id, "Withdraw", 150, `{"balance":100}`)
	if !strings.Contains(f.Message, "insufficient funds") || f.NonRetryable {
		t.Errorf("overdraft failure: %+v", f)
	}
	f = fail(t, inv, id, "deposit", -5, `{"balance":100}`)
	if !strings.Contains(f.Message, "must be positive") {
		t.Errorf("negative deposit failure: %+v", f)
	}
	out = succeed(t, inv, id, "WITHDRAW", 30, `{"balance":100}`)
	wantState(t, out, `{"balance":70}`)
	out = succeed(t, inv, id, "Balance", nil, `{"balance":70}`)
	wantUnchanged(t, out)
	if string(out.Output) != "70" {
		t.Errorf("balance = %s", out.Output)
	}

	f = fail(t, inv, id, "deposit", map[string]int{"amount": 1}, `{"balance":70}`)
	if !f.NonRetryable || !strings.Contains(f.Message, `"deposit"`) || !strings.Contains(f.Message, "int") {
		t.Errorf("bad input failure: %+v", f)
	}

	out = succeed(t, inv, id, "transfer", transfer{To: "bob", Amount: 20}, `{"balance":70}`)
	wantState(t, out, `{"balance":50}`)
	if string(out.Output) != "50" {
		t.Errorf("transfer answered %s", out.Output)
	}
	want := []entity.Action{{Kind: entity.ActionSignal, Target: "@account@bob", Name: "Deposit", Input: []byte("20")}}
	if !actionsEqual(out.Actions, want) {
		t.Errorf("transfer actions = %+v, want %+v", out.Actions, want)
	}
	// A failed transfer sends nothing and changes nothing.
	fail(t, inv, id, "transfer", transfer{To: "bob", Amount: 500}, `{"balance":70}`)

	out = succeed(t, inv, id, "info", false, `{"balance":70}`)
	if out.Output != nil {
		t.Errorf("nil interface result answered %s", out.Output)
	}
	out = succeed(t, inv, id, "info", true, `{"balance":70}`)
	if string(out.Output) != `{"balance":70}` {
		t.Errorf("info = %s", out.Output)
	}

	out = succeed(t, inv, id, "delete", nil, `{"balance":70}`)
	if !out.Deleted || out.State != nil {
		t.Errorf("delete: %+v", out)
	}
	// The encoding hooks are not operations.
	r2 := NewRegistry()
	if err := RegisterEntityType[hookState](r2, "hooked"); err != nil {
		t.Fatal(err)
	}
	f = fail(t, entityInvoke(t, r2, "hooked"), "@hooked@1", "marshaljson", nil, "")
	if f.Type != entity.FailureTypeOperationNotFound {
		t.Errorf("MarshalJSON is an operation: %+v", f)
	}
	out = succeed(t, entityInvoke(t, r2, "hooked"), "@hooked@1", "inc", nil, "41")
	wantState(t, out, "42")
	// The implicit delete of a type without a Delete method.
	out = succeed(t, entityInvoke(t, r2, "hooked"), "@hooked@1", "DELETE", nil, "41")
	if !out.Deleted {
		t.Errorf("implicit delete: %+v", out)
	}
}

type hookState struct{ N int }

func (h hookState) MarshalJSON() ([]byte, error)  { return json.Marshal(h.N) }
func (h *hookState) UnmarshalJSON(b []byte) error { return json.Unmarshal(b, &h.N) }
func (h *hookState) Inc()                         { h.N++ }

func actionsEqual(a, b []entity.Action) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Kind != b[i].Kind || a[i].Target != b[i].Target || a[i].Name != b[i].Name ||
			string(a[i].Input) != string(b[i].Input) || !a[i].At.Equal(b[i].At) {
			return false
		}
	}
	return true
}

type badTwoInputs struct{}

func (*badTwoInputs) Op(a, b int) {}

type badTwoResults struct{}

func (*badTwoResults) Op() (int, int) { return 0, 0 }

type badCtxLast struct{}

func (*badCtxLast) Op(n int, ctx *EntityContext) {}

type badVariadic struct{}

func (*badVariadic) Op(ns ...int) {}

type badChanInput struct{}

func (*badChanInput) Op(c chan int) {}

type badThreeResults struct{}

func (*badThreeResults) Op() (int, int, error) { return 0, 0, nil }

type badInterfaceInput struct{}

func (*badInterfaceInput) Op(s fmt.Stringer) {}

type badFuncResult struct{}

func (*badFuncResult) Op() func() { return nil }

type badCaseCollision struct{}

func (*badCaseCollision) AddX() {}
func (*badCaseCollision) Addx() {}

type noMethods struct{ N int }

func TestEntityTypeRegistrationErrors(t *testing.T) {
	r := NewRegistry()
	shape := func(name string, err error) {
		t.Helper()
		if err == nil {
			t.Errorf("%s: registration succeeded, want an error", name)
			return
		}
		if !strings.Contains(err.Error(), ".Op") || !strings.Contains(err.Error(), "allowed shapes") {
			t.Errorf("%s: error %q does not name the method and the allowed shapes", name, err)
		}
	}
	shape("two inputs", RegisterEntityType[badTwoInputs](r, "e1"))
	shape("two results", RegisterEntityType[badTwoResults](r, "e2"))
	shape("ctx last", RegisterEntityType[badCtxLast](r, "e3"))
	shape("variadic", RegisterEntityType[badVariadic](r, "e4"))
	shape("chan input", RegisterEntityType[badChanInput](r, "e5"))
	shape("three results", RegisterEntityType[badThreeResults](r, "e6"))
	shape("interface input", RegisterEntityType[badInterfaceInput](r, "e7"))
	shape("func result", RegisterEntityType[badFuncResult](r, "e8"))
	for _, name := range []string{"e1", "e2", "e3", "e4", "e5", "e6", "e7", "e8"} {
		if _, ok := r.entity(name); ok {
			t.Errorf("%s registered despite the error", name)
		}
	}
	if err := RegisterEntityType[badCaseCollision](r, "e9"); err == nil || !strings.Contains(err.Error(), "AddX") {
		t.Errorf("case collision: %v", err)
	}
	if err := RegisterEntityType[noMethods](r, "e10"); err == nil {
		t.Error("a type without methods registered")
	}
	if err := RegisterEntityType[*testCounter](r, "e11"); err == nil {
		t.Error("a pointer state type registered")
	}
	if err := RegisterEntityType[any](r, "e12"); err == nil {
		t.Error("an interface state type registered")
	}

	// Names and duplicates.
	if err := RegisterEntityType[testCounter](r, "Counter"); err != nil {
		t.Fatal(err)
	}
	if err := RegisterEntityType[testCounter](r, "COUNTER"); err == nil || !strings.Contains(err.Error(), "already registered") {
		t.Errorf("duplicate (other case): %v", err)
	}
	if err := RegisterEntity(r, "counter", counterEntity); err == nil {
		t.Error("duplicate across styles registered")
	}
	for _, name := range []string{"", "a@b"} {
		if err := RegisterEntityType[testCounter](r, name); !errors.Is(err, ErrInvalidEntityID) {
			t.Errorf("RegisterEntityType(%q) = %v, want ErrInvalidEntityID", name, err)
		}
		if err := RegisterEntity(r, name, counterEntity); !errors.Is(err, ErrInvalidEntityID) {
			t.Errorf("RegisterEntity(%q) = %v, want ErrInvalidEntityID", name, err)
		}
	}
	if err := RegisterEntity(r, "nilfn", nil); err == nil {
		t.Error("nil function registered")
	}
}

// ---- actions ----

func TestEntityActions(t *testing.T) {
	at := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	var generated string
	r := NewRegistry()
	err := RegisterEntity(r, "fan", func(ctx *EntityContext) (any, error) {
		switch ctx.Operation() {
		case "go":
			if err := ctx.SignalEntity(NewEntityID("Counter", "a"), "add", 1); err != nil {
				return nil, err
			}
			if err := ctx.SignalEntity(NewEntityID("counter", "b"), "reset", nil, WithSignalTime(at)); err != nil {
				return nil, err
			}
			id, err := ctx.ScheduleNewOrchestration("Process", map[string]int{"n": 1}, WithStartInstanceID("job-1"), WithStartTime(at), WithReusePolicy(ReuseNever))
			if err != nil || id != "job-1" {
				return nil, fmt.Errorf("schedule with ID: %q %v", id, err)
			}
			if generated, err = ctx.ScheduleNewOrchestration("Cleanup", nil); err != nil {
				return nil, err
			}
			return generated, nil
		case "fail":
			if err := ctx.SignalEntity(NewEntityID("counter", "a"), "add", 1); err != nil {
				return nil, err
			}
			return nil, errors.New("boom")
		}
		return nil, ErrUnknownOperation
	})
	if err != nil {
		t.Fatal(err)
	}
	inv := entityInvoke(t, r, "fan")
	out := succeed(t, inv, "@fan@1", "go", nil, "")
	if _, err := uuid.Parse(generated); err != nil {
		t.Errorf("generated instance ID %q is not a UUID: %v", generated, err)
	}
	if string(out.Output) != `"`+generated+`"` {
		t.Errorf("output %s, want the generated ID", out.Output)
	}
	want := []entity.Action{
		{Kind: entity.ActionSignal, Target: "@counter@a", Name: "add", Input: []byte("1")},
		{Kind: entity.ActionSignal, Target: "@counter@b", Name: "reset", At: at},
		{Kind: entity.ActionStart, Target: "job-1", Name: "Process", Input: []byte(`{"n":1}`), At: at},
		{Kind: entity.ActionStart, Target: generated, Name: "Cleanup"},
	}
	if !actionsEqual(out.Actions, want) {
		t.Fatalf("actions:\n got %+v\nwant %+v", out.Actions, want)
	}
	if out.Actions[1].Input != nil || out.Actions[3].Input != nil {
		t.Errorf("nil input encoded: %q %q", out.Actions[1].Input, out.Actions[3].Input)
	}
	wantUnchanged(t, out)

	// A second run generates another ID.
	first := generated
	succeed(t, inv, "@fan@1", "go", nil, "")
	if generated == first {
		t.Error("the same instance ID was generated twice")
	}

	fail(t, inv, "@fan@1", "fail", nil, "") // checks that no action is returned

	// Through the executor: the failed operation's signal is not sent.
	res := entity.Execute("@fan@1", entity.Record{}, nil, []entity.Request{
		{Kind: entity.Operation, ID: "1", Sender: entity.Sender{InstanceID: "c"}, Operation: "fail"},
		{Kind: entity.Operation, ID: "2", Sender: entity.Sender{InstanceID: "c"}, Operation: "go"},
	}, inv, 0)
	if len(res.Outbound) != 4 || res.Outbound[0].Target != "@counter@a" || !res.Outbound[1].At.Equal(at) || res.Outbound[2].Target != "job-1" {
		t.Errorf("outbound = %+v", res.Outbound)
	}

}

// TestEntityActionErrors checks the errors of invalid signals and starts
// directly on a context.
func TestEntityActionErrors(t *testing.T) {
	ctx := newEntityContext(&entity.Call{Entity: "@fan@1", Operation: "op"})
	if err := ctx.SignalEntity(EntityID{Name: "a@b", Key: "k"}, "add", nil); !errors.Is(err, ErrInvalidEntityID) {
		t.Errorf("bad name: %v", err)
	}
	if err := ctx.SignalEntity(EntityID{Name: "counter"}, "add", nil); !errors.Is(err, ErrInvalidEntityID) {
		t.Errorf("empty key: %v", err)
	}
	if err := ctx.SignalEntity(NewEntityID("counter", "k"), "", nil); err == nil {
		t.Error("empty operation accepted")
	}
	if err := ctx.SignalEntity(NewEntityID("counter", "k"), "add", make(chan int)); !errors.Is(err, ErrInvalidInput) {
		t.Errorf("unencodable input: %v", err)
	}
	if _, err := ctx.ScheduleNewOrchestration("P", nil, WithStartInstanceID("@nope")); !errors.Is(err, ErrInvalidInstanceID) {
		t.Errorf("entity-like instance ID: %v", err)
	}
	if _, err := ctx.ScheduleNewOrchestration("", nil); err == nil {
		t.Error("empty orchestrator name accepted")
	}
	if _, err := ctx.ScheduleNewOrchestration("P", json.RawMessage("{")); !errors.Is(err, ErrInvalidInput) {
		t.Errorf("invalid raw input: %v", err)
	}
	if len(ctx.actions) != 0 {
		t.Errorf("invalid requests produced actions %+v", ctx.actions)
	}
	if err := ctx.SetState(make(chan int)); err == nil || ctx.stateSet {
		t.Errorf("unencodable state: %v (stateSet %v)", err, ctx.stateSet)
	}
}

func TestEntitySignalTime(t *testing.T) {
	if !signalTime(nil).IsZero() {
		t.Error("no option: want zero time")
	}
	at := time.Unix(1700000000, 0)
	if got := signalTime([]SignalEntityOption{nil, WithSignalTime(at)}); !got.Equal(at) {
		t.Errorf("signalTime = %v, want %v", got, at)
	}
}

func TestEntityConcurrentInvoke(t *testing.T) {
	r := NewRegistry()
	if err := RegisterEntityType[testCounter](r, "counter"); err != nil {
		t.Fatal(err)
	}
	if err := RegisterEntity(r, "fcounter", counterEntity); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, name := range []string{"counter", "fcounter"} {
				inv, _ := r.entity(name)
				var state []byte
				for range 200 {
					out, err := inv(entity.Call{Entity: entity.ID(name, fmt.Sprint(g)), Operation: "add", Input: []byte("1"), State: state})
					if err != nil {
						t.Error(err)
						return
					}
					state = out.State
				}
				want := "200"
				if name == "counter" {
					want = `{"value":200}`
				}
				if string(state) != want {
					t.Errorf("%s: state %s, want %s", name, state, want)
				}
			}
		}()
	}
	wg.Wait()
}

// ---- benchmarks ----

func benchmarkEntityAdd(b *testing.B, inv entity.Invoke, name string) {
	c := entity.Call{Entity: entity.ID(name, "bench"), Operation: "add", Input: []byte("1"), Sender: entity.Sender{InstanceID: "client"}}
	b.ReportAllocs()
	for b.Loop() {
		out, err := inv(c)
		if err != nil {
			b.Fatal(err)
		}
		c.State = out.State
	}
}

func BenchmarkEntityFuncAdd(b *testing.B) {
	r := NewRegistry()
	if err := RegisterEntity(r, "counter", counterEntity); err != nil {
		b.Fatal(err)
	}
	benchmarkEntityAdd(b, entityInvoke(b, r, "counter"), "counter")
}

func BenchmarkEntityTypeAdd(b *testing.B) {
	r := NewRegistry()
	if err := RegisterEntityType[testCounter](r, "counter"); err != nil {
		b.Fatal(err)
	}
	benchmarkEntityAdd(b, entityInvoke(b, r, "counter"), "counter")
}

func BenchmarkEntityTypeGet(b *testing.B) {
	r := NewRegistry()
	if err := RegisterEntityType[testCounter](r, "counter"); err != nil {
		b.Fatal(err)
	}
	inv := entityInvoke(b, r, "counter")
	c := entity.Call{Entity: "@counter@bench", Operation: "get", State: []byte(`{"value":12345}`)}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := inv(c); err != nil {
			b.Fatal(err)
		}
	}
}
