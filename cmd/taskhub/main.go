// Command taskhub runs and inspects taskhub task hubs: a demo workload, a
// worker with the samples registered, and (in later commands) client and
// operator tools.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := rootCommand().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "taskhub:", err)
		os.Exit(1)
	}
}

func rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "taskhub",
		Short:         "Durable Functions for Go: run and inspect task hubs",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().String("backend", "taskhub.db", "hub storage: a SQLite file path or a postgres:// URL (default: $TASKHUB_POSTGRES_URL if set, else ./taskhub.db)")
	root.PersistentFlags().String("hub", "taskhub", "task hub name")
	root.AddCommand(demoCommand(), workerCommand(), benchCommand(), serveCommand(), hubCommand(), entityCommand())
	root.AddCommand(instanceCommands()...)
	return root
}
