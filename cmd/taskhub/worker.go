package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/taskhub/taskhub"
	"github.com/taskhub/taskhub/samples"
)

func workerCommand() *cobra.Command {
	var drain time.Duration
	var metricsAddr string
	cmd := &cobra.Command{
		Use:   "worker",
		Short: "Run a worker with the samples registered until SIGTERM or SIGINT",
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
			opts, err := workerOptions(cmd, logger)
			if err != nil {
				return err
			}
			be, err := openBackend(cmd)
			if err != nil {
				return err
			}
			defer be.Close()
			reg := taskhub.NewRegistry()
			if err := samples.Register(reg); err != nil {
				return err
			}
			metrics := prometheus.NewRegistry()
			opts.MetricsRegisterer = metrics
			w, err := taskhub.NewWorker(be, reg, opts)
			if err != nil {
				return err
			}
			if metricsAddr != "" {
				stop, err := serveMetrics(metricsAddr, metrics, logger)
				if err != nil {
					return err
				}
				defer stop()
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
	addWorkerFlags(cmd)
	cmd.Flags().StringVar(&metricsAddr, "metrics-addr", "", "serve Prometheus metrics at http://ADDR/metrics (off when empty)")
	cmd.Flags().DurationVar(&drain, "drain-timeout", 30*time.Second, "how long a graceful stop waits for running work")
	return cmd
}
