package entity_test

import (
	"fmt"
	"strconv"

	"github.com/taskhub/taskhub/internal/entity"
)

// A counter entity runs one batch: two increments, a failing operation that
// is rolled back alone, and a call answered with the state.
func Example() {
	counter := func(c entity.Call) (entity.Outcome, error) {
		n, _ := strconv.Atoi(string(c.State)) // no state reads as 0
		switch c.Operation {
		case "add":
			d, err := strconv.Atoi(string(c.Input))
			if err != nil {
				return entity.Outcome{}, err
			}
			return entity.Outcome{State: []byte(strconv.Itoa(n + d))}, nil
		case "get":
			return entity.Outcome{Output: c.State}, nil
		}
		return entity.Outcome{}, entity.OperationNotFoundFailure(c.Entity, c.Operation)
	}
	caller := entity.Sender{InstanceID: "orch-1", ExecutionID: "exec-1"}
	reqs := []entity.Request{
		{Kind: entity.Operation, ID: "m1", Sender: caller, Seq: 1, Operation: "add", Input: []byte("5")},
		{Kind: entity.Operation, ID: "m2", Sender: caller, Seq: 2, Operation: "add", Input: []byte("five")},
		{Kind: entity.Operation, ID: "m3", Sender: caller, Seq: 3, Operation: "add", Input: []byte("2")},
		{Kind: entity.Operation, ID: "m1", Sender: caller, Seq: 1, Operation: "add", Input: []byte("5")}, // redelivered
		{Kind: entity.Operation, ID: "m4", Sender: caller, Seq: 4, Operation: "get", WantsResponse: true, TaskID: 7},
	}
	res := entity.Execute(entity.ID("Counter", "c1"), entity.Record{}, nil, reqs, counter, 0)

	fmt.Printf("state %s, %d operations, consumed %v\n", res.State, res.Applied, res.Consumed)
	for _, f := range res.Failures {
		fmt.Printf("%s failed: %s\n", f.RequestID, f.Failure.Message)
	}
	for _, r := range res.Responses {
		fmt.Printf("task %d of %s: %s\n", r.TaskID, r.To.InstanceID, r.Output)
	}
	// Output:
	// state 7, 4 operations, consumed [m1 m1 m2 m3 m4]
	// m2 failed: strconv.Atoi: parsing "five": invalid syntax
	// task 7 of orch-1: 7
}
