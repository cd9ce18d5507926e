package samples

import (
	"errors"
	"fmt"

	"github.com/taskhub/taskhub"
)

// Names of the sample entities and the orchestration that uses them.
const (
	CounterName      = "Counter"
	AccountName      = "Account"
	BankTransferName = "BankTransfer"
)

// RegisterEntities adds the sample entities (Counter, Account) and the
// BankTransfer orchestration to r.
func RegisterEntities(r *taskhub.Registry) error {
	return errors.Join(
		taskhub.RegisterEntity(r, CounterName, Counter),
		taskhub.RegisterEntityType[Account](r, AccountName),
		taskhub.RegisterOrchestrator(r, BankTransferName, BankTransfer),
	)
}

// Counter is a function-style entity holding an int: "add" adds its input,
// "reset" sets it to zero and "get" returns it. The built-in "delete"
// removes it.
func Counter(ctx *taskhub.EntityContext) (any, error) {
	var n int
	if ctx.HasState() {
		if err := ctx.GetState(&n); err != nil {
			return nil, err
		}
	}
	switch ctx.Operation() {
	case "add":
		var d int
		if err := ctx.GetInput(&d); err != nil {
			return nil, err
		}
		return nil, ctx.SetState(n + d)
	case "reset":
		return nil, ctx.SetState(0)
	case "get":
		return n, nil
	}
	return nil, fmt.Errorf("%w: counter has no operation %q", taskhub.ErrUnknownOperation, ctx.Operation())
}

// ErrInsufficientFunds is the failure of a withdrawal larger than the
// balance.
var ErrInsufficientFunds = errors.New("insufficient funds")

// Account is a struct-style entity: each exported method is an operation
// (names are case-insensitive), and the struct is its state.
type Account struct {
	Balance int `json:"balance"`
}

// Deposit adds a positive amount.
func (a *Account) Deposit(amount int) error {
	if amount <= 0 {
		return taskhub.NonRetryable(fmt.Errorf("deposit of %d: the amount must be positive", amount))
	}
	a.Balance += amount
	return nil
}

// Withdraw removes a positive amount that the balance covers.
func (a *Account) Withdraw(amount int) error {
	if amount <= 0 {
		return taskhub.NonRetryable(fmt.Errorf("withdrawal of %d: the amount must be positive", amount))
	}
	if amount > a.Balance {
		return taskhub.NonRetryable(fmt.Errorf("withdrawal of %d from a balance of %d: %w", amount, a.Balance, ErrInsufficientFunds))
	}
	a.Balance -= amount
	return nil
}

// Get returns the balance.
func (a *Account) Get() int { return a.Balance }

// TransferInput is BankTransfer's input: account keys and a positive amount.
type TransferInput struct {
	From   string `json:"from"`
	To     string `json:"to"`
	Amount int    `json:"amount"`
}

// BankTransfer moves Amount from one Account to another inside a critical
// section, so no other transfer can change either balance between the check
// and the move. It returns false when the source cannot cover the amount.
func BankTransfer(ctx *taskhub.OrchestrationContext, in TransferInput) (bool, error) {
	if in.Amount <= 0 || in.From == in.To {
		return false, fmt.Errorf("transfer of %d from %q to %q: need a positive amount and two accounts", in.Amount, in.From, in.To)
	}
	from := taskhub.NewEntityID(AccountName, in.From)
	to := taskhub.NewEntityID(AccountName, in.To)
	unlock, err := ctx.LockEntities(from, to)
	if err != nil {
		return false, err
	}
	defer unlock()
	balance, err := taskhub.Await[int](ctx.CallEntity(from, "get", nil))
	if err != nil {
		return false, err
	}
	if balance < in.Amount {
		return false, nil
	}
	// Both accounts are locked: the two operations may run in parallel.
	if err := ctx.WhenAll(ctx.CallEntity(from, "withdraw", in.Amount), ctx.CallEntity(to, "deposit", in.Amount)).Await(nil); err != nil {
		return false, err
	}
	return true, nil
}
