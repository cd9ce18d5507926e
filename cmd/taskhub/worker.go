package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/taskhub/taskhub"
	"github.com/taskhub/taskhub/samples"
)

func workerCommand() *cobra.Command {
	var partitions int
	var drain time.Duration
	cmd := &cobra.Command{
		Use:   "worker",
		Short: "Run a worker with the samples registered until SIGTERM or SIGINT",
		RunE: func(cmd *cobra.Command, _ []string) error {
			be, err := openBackend(cmd)
			if err != nil {
				return err
			}
			defer be.Close()
			reg := taskhub.NewRegistry()
			if err := samples.Register(reg); err != nil {
				return err
			}
			logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
			w, err := taskhub.NewWorker(be, reg, taskhub.WorkerOptions{PartitionCount: partitions, Logger: logger})
			if err != nil {
				return err
			}
			if err := w.Start(cmd.Context()); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "worker %s running; SIGTERM hands its partitions off\n", w.ID())
			<-cmd.Context().Done()
			ctx, cancel := context.WithTimeout(context.Background(), drain)
			defer cancel()
			return w.Stop(ctx)
		},
	}
	cmd.Flags().IntVar(&partitions, "partitions", taskhub.PartitionCountDefault, "partition count when the hub is created (1-16)")
	cmd.Flags().DurationVar(&drain, "drain-timeout", 30*time.Second, "how long a graceful stop waits for running work")
	return cmd
}
