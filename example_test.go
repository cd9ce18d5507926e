package taskhub_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/taskhub/taskhub"
	"github.com/taskhub/taskhub/backend/sqlite"
)

// A worker on an embedded SQLite hub runs an orchestration that calls an
// activity three times in sequence.
func Example() {
	dir, _ := os.MkdirTemp("", "taskhub-example")
	defer os.RemoveAll(dir)
	ctx := context.Background()

	reg := taskhub.NewRegistry()
	_ = taskhub.RegisterActivity(reg, "SayHello", func(ctx taskhub.ActivityContext, city string) (string, error) {
		return "Hello " + city + "!", nil
	})
	_ = taskhub.RegisterOrchestrator(reg, "Hello", func(ctx *taskhub.OrchestrationContext, _ any) ([]string, error) {
		var out []string
		for _, city := range []string{"Tokyo", "Seattle", "London"} {
			s, err := taskhub.Await[string](ctx.CallActivity("SayHello", city))
			if err != nil {
				return nil, err
			}
			out = append(out, s)
		}
		return out, nil
	})

	be, err := sqlite.Open(filepath.Join(dir, "hub.db"), sqlite.Options{})
	if err != nil {
		panic(err)
	}
	defer be.Close()
	w, err := taskhub.NewWorker(be, reg, taskhub.WorkerOptions{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		panic(err)
	}
	if err := w.Start(ctx); err != nil {
		panic(err)
	}
	defer w.Stop(ctx)

	client := w.Client()
	id, _ := client.ScheduleNewOrchestration(ctx, "Hello", nil)
	st, _ := client.WaitForInstanceCompletion(ctx, id)
	fmt.Println(st.RuntimeStatus, string(st.Output))
	// Output: Completed ["Hello Tokyo!","Hello Seattle!","Hello London!"]
}

// An activity error reaches the orchestrator as a *TaskFailedError carrying
// the activity's error message.
func ExampleTaskFailedError() {
	dir, _ := os.MkdirTemp("", "taskhub-example")
	defer os.RemoveAll(dir)
	ctx := context.Background()

	reg := taskhub.NewRegistry()
	_ = taskhub.RegisterActivity(reg, "Charge", func(ctx taskhub.ActivityContext, amount int) (int, error) {
		return 0, taskhub.NonRetryable(fmt.Errorf("card declined for %d", amount))
	})
	_ = taskhub.RegisterOrchestrator(reg, "Checkout", func(ctx *taskhub.OrchestrationContext, amount int) (string, error) {
		_, err := taskhub.Await[int](ctx.CallActivity("Charge", amount))
		if tf, ok := err.(*taskhub.TaskFailedError); ok {
			return "refused: " + tf.Failure.Message, nil
		}
		return "charged", err
	})
	be, _ := sqlite.Open(filepath.Join(dir, "hub.db"), sqlite.Options{})
	defer be.Close()
	w, _ := taskhub.NewWorker(be, reg, taskhub.WorkerOptions{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	_ = w.Start(ctx)
	defer w.Stop(ctx)

	id, _ := w.Client().ScheduleNewOrchestration(ctx, "Checkout", 42)
	st, _ := w.Client().WaitForInstanceCompletion(ctx, id)
	fmt.Println(string(st.Output))
	// Output: "refused: card declined for 42"
}
