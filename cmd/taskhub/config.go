package main

import (
	"fmt"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/taskhub/taskhub"
	"github.com/taskhub/taskhub/hostjson"
)

// addWorkerFlags adds the flags shared by commands that run a worker.
func addWorkerFlags(cmd *cobra.Command) {
	cmd.Flags().String("config", "", "a Durable Functions host.json: its extensions.durableTask settings configure the worker")
	cmd.Flags().Int("partitions", taskhub.PartitionCountDefault, "partition count when the hub is created (1-16); overrides host.json")
}

// workerOptions builds the worker's options from --config and --partitions.
// A host.json hubName applies unless --hub was given. Call it before
// openBackend, which reads --hub.
func workerOptions(cmd *cobra.Command, logger *slog.Logger) (taskhub.WorkerOptions, error) {
	var opts taskhub.WorkerOptions
	if path, _ := cmd.Flags().GetString("config"); path != "" {
		cfg, warnings, err := hostjson.LoadFile(path)
		if err != nil {
			return opts, fmt.Errorf("--config: %w", err)
		}
		for _, w := range warnings {
			logger.Warn("host.json: "+w.Message, "key", w.Key, "line", w.Line)
		}
		opts = cfg.Worker
		if cfg.HubName != "" && !cmd.Flags().Changed("hub") {
			if err := cmd.Flags().Set("hub", cfg.HubName); err != nil {
				return opts, err
			}
		}
	}
	if cmd.Flags().Changed("partitions") || opts.PartitionCount == 0 {
		opts.PartitionCount, _ = cmd.Flags().GetInt("partitions")
	}
	opts.Logger = logger
	return opts, nil
}
