package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/taskhub/taskhub"
	"github.com/taskhub/taskhub/backend"
)

// hubCommand returns `taskhub hub` with its create, info and delete
// subcommands, for the root command.
func hubCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "hub",
		Short: "Create, inspect and delete the task hub in --backend",
		Args:  cobra.NoArgs,
	}
	addJSONFlag(cmd)
	cmd.AddCommand(hubCreateCommand(), hubInfoCommand(), hubDeleteCommand())
	return cmd
}

// hubFlags returns --hub and --backend, for messages.
func hubFlags(cmd *cobra.Command) (hub, path string) {
	hub, _ = cmd.Flags().GetString("hub")
	path, _ = cmd.Flags().GetString("backend")
	return hub, path
}

// hubNotFound phrases a missing hub.
func hubNotFound(hub, path string, err error) error {
	return &cliError{fmt.Sprintf(`task hub %q does not exist in %s: create it with "taskhub hub create" or start a worker on it`, hub, path), err}
}

// hubCreateOutput is the JSON document of hub create.
type hubCreateOutput struct {
	Hub            string    `json:"hub"`
	Backend        string    `json:"backend"`
	PartitionCount int       `json:"partitionCount"`
	CreatedTime    time.Time `json:"createdTime"`
	// Created is true when this call created the hub (false: it existed).
	Created bool `json:"created"`
}

// hubDeleteOutput is the JSON document of hub delete.
type hubDeleteOutput struct {
	Hub            string `json:"hub"`
	Backend        string `json:"backend"`
	PartitionCount int    `json:"partitionCount"`
	Deleted        bool   `json:"deleted"`
}

func hubCreateCommand() *cobra.Command {
	var partitions int
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create the task hub (or check that it exists with this partition count)",
		Long: `create creates the task hub in --backend with --partitions control-queue
partitions. The count is fixed at creation: when the hub exists, create
succeeds if the counts match and fails naming both counts otherwise.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if partitions < backend.PartitionCountMin || partitions > backend.PartitionCountMax {
				return fmt.Errorf("--partitions %d: want %d to %d", partitions, backend.PartitionCountMin, backend.PartitionCountMax)
			}
			hubName, path := hubFlags(cmd)
			be, err := openBackend(cmd)
			if err != nil {
				return err
			}
			defer be.Close()
			ctx := cmd.Context()
			out := hubCreateOutput{Hub: hubName, Backend: path}
			h, err := be.HubGet(ctx)
			switch {
			case errors.Is(err, backend.ErrHubNotFound):
				if h, err = be.HubCreate(ctx, &backend.HubCreateParams{PartitionCount: partitions, Now: time.Now()}); err != nil {
					return fmt.Errorf("hub create: %w", err)
				}
				out.Created = true
			case err != nil:
				return fmt.Errorf("hub create: %w", err)
			case h.PartitionCount != partitions:
				return &backend.PartitionCountMismatchError{Hub: h.Name, Stored: h.PartitionCount, Requested: partitions}
			}
			out.PartitionCount, out.CreatedTime = h.PartitionCount, h.CreatedAt
			if wantJSON(cmd) {
				return renderJSON(cmd.OutOrStdout(), out)
			}
			verb := "created"
			if !out.Created {
				verb = "exists:"
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s task hub %q in %s with %s\n", verb, hubName, path, countOf(h.PartitionCount, "partition"))
			return err
		},
	}
	cmd.Flags().IntVar(&partitions, "partitions", taskhub.PartitionCountDefault,
		fmt.Sprintf("control-queue partitions (%d-%d), fixed at creation", backend.PartitionCountMin, backend.PartitionCountMax))
	return cmd
}

// hubInfo is the JSON document of hub info.
type hubInfo struct {
	Hub            string          `json:"hub"`
	Backend        string          `json:"backend"`
	PartitionCount int             `json:"partitionCount"`
	CreatedTime    time.Time       `json:"createdTime"`
	SampledTime    time.Time       `json:"sampledTime"`
	ControlQueues  []queueInfo     `json:"controlQueues"`
	WorkItemQueue  queueInfo       `json:"workItemQueue"`
	Partitions     []partitionInfo `json:"partitions"`
	// Workers are the registered workers whose last heartbeat is within
	// LiveWithinSeconds.
	Workers           []hubWorkerInfo `json:"workers"`
	LiveWithinSeconds float64         `json:"liveWithinSeconds"`
}

type queueInfo struct {
	Name      string `json:"name"`
	Partition *int   `json:"partition,omitempty"`
	// Length counts every message, visible or not (future timers, locked).
	Length int `json:"length"`
	// OldestEnqueuedTime and OldestAgeSeconds describe the oldest message
	// that is visible now; absent when none is.
	OldestEnqueuedTime time.Time `json:"oldestEnqueuedTime,omitzero"`
	OldestAgeSeconds   *float64  `json:"oldestAgeSeconds,omitempty"`
}

type partitionInfo struct {
	Partition        int       `json:"partition"`
	Owner            string    `json:"owner,omitempty"`
	Epoch            int64     `json:"epoch"`
	LeaseExpiresTime time.Time `json:"leaseExpiresTime,omitzero"`
	// Leased is true when an owner holds an unexpired lease.
	Leased    bool   `json:"leased"`
	NextOwner string `json:"nextOwner,omitempty"`
}

type hubWorkerInfo struct {
	ID                  string    `json:"id"`
	Host                string    `json:"host"`
	StartedTime         time.Time `json:"startedTime"`
	HeartbeatTime       time.Time `json:"heartbeatTime"`
	HeartbeatAgeSeconds float64   `json:"heartbeatAgeSeconds"`
	// Partitions are those the worker reported in its last heartbeat;
	// LeasedPartitions those it holds an unexpired lease on now (the
	// heartbeat can lag a balancing round behind).
	Partitions       []int           `json:"partitions"`
	LeasedPartitions []int           `json:"leasedPartitions"`
	Info             json.RawMessage `json:"info,omitempty"`
}

// hubLiveWithinDefault: a worker whose heartbeat is older than a lease is
// not counted as live by the balancer either.
const hubLiveWithinDefault = taskhub.LeaseDurationDefault

// loadHubInfo samples the hub's metadata, queues, leases and live workers.
func loadHubInfo(ctx context.Context, be backend.Backend, hubName, path string, liveWithin time.Duration, now time.Time) (*hubInfo, error) {
	h, err := be.HubGet(ctx)
	if errors.Is(err, backend.ErrHubNotFound) {
		return nil, hubNotFound(hubName, path, err)
	}
	if err != nil {
		return nil, err
	}
	metrics, err := be.QueueMetrics(ctx, &backend.QueueMetricsParams{Now: now})
	if err != nil {
		return nil, fmt.Errorf("queue metrics: %w", err)
	}
	parts, err := be.PartitionList(ctx)
	if err != nil {
		return nil, fmt.Errorf("partitions: %w", err)
	}
	workers, err := be.WorkerList(ctx, &backend.WorkerListParams{Since: now.Add(-liveWithin)})
	if err != nil {
		return nil, fmt.Errorf("workers: %w", err)
	}
	info := &hubInfo{
		Hub: h.Name, Backend: path, PartitionCount: h.PartitionCount, CreatedTime: h.CreatedAt, SampledTime: now,
		ControlQueues: []queueInfo{}, Partitions: []partitionInfo{}, Workers: []hubWorkerInfo{},
		LiveWithinSeconds: liveWithin.Seconds(),
	}
	queue := func(name string, partition *int, s backend.QueueStat) queueInfo {
		q := queueInfo{Name: name, Partition: partition, Length: s.Length, OldestEnqueuedTime: s.OldestEnqueued}
		if !s.OldestEnqueued.IsZero() {
			age := max(now.Sub(s.OldestEnqueued), 0).Seconds()
			q.OldestAgeSeconds = &age
		}
		return q
	}
	for i, s := range metrics.Control {
		p := i
		info.ControlQueues = append(info.ControlQueues, queue(controlQueueName(i), &p, s))
	}
	info.WorkItemQueue = queue("workitems", nil, metrics.Work)
	for _, p := range parts {
		info.Partitions = append(info.Partitions, partitionInfo{
			Partition: p.Index, Owner: p.Owner, Epoch: p.Epoch, LeaseExpiresTime: p.LeaseExpiresAt,
			Leased: p.Owner != "" && p.LeaseExpiresAt.After(now), NextOwner: p.NextOwner,
		})
	}
	for _, w := range workers {
		wi := hubWorkerInfo{
			ID: w.ID, Host: w.Host, StartedTime: w.StartedAt, HeartbeatTime: w.HeartbeatAt,
			HeartbeatAgeSeconds: max(now.Sub(w.HeartbeatAt), 0).Seconds(), Partitions: append([]int{}, w.Partitions...),
			LeasedPartitions: []int{},
		}
		for _, p := range info.Partitions {
			if p.Leased && p.Owner == w.ID {
				wi.LeasedPartitions = append(wi.LeasedPartitions, p.Partition)
			}
		}
		if json.Valid(w.Info) {
			wi.Info = w.Info
		}
		info.Workers = append(info.Workers, wi)
	}
	return info, nil
}

func controlQueueName(partition int) string { return fmt.Sprintf("control-%02d", partition) }

func printHubInfo(w io.Writer, info *hubInfo) error {
	f := newLabelRows(w)
	f.add("Task hub", info.Hub)
	f.add("Backend", info.Backend)
	f.add("Partitions", strconv.Itoa(info.PartitionCount))
	f.add("Created", tableTime(info.CreatedTime))
	if err := f.flush(); err != nil {
		return err
	}

	fmt.Fprintln(w)
	t := newTextTable(w, "QUEUE", "LENGTH", "OLDEST AGE")
	for _, q := range append(append([]queueInfo{}, info.ControlQueues...), info.WorkItemQueue) {
		age := ""
		if q.OldestAgeSeconds != nil {
			age = formatAge(time.Duration(*q.OldestAgeSeconds * float64(time.Second)))
		}
		t.row(q.Name, strconv.Itoa(q.Length), age)
	}
	if err := t.flush(); err != nil {
		return err
	}

	fmt.Fprintln(w)
	t = newTextTable(w, "PARTITION", "OWNER", "EPOCH", "LEASE", "NEXT OWNER")
	for _, p := range info.Partitions {
		var lease string
		switch {
		case p.Owner == "":
			lease = "free"
		case p.Leased:
			lease = "expires in " + formatAge(p.LeaseExpiresTime.Sub(info.SampledTime))
		default:
			lease = "expired " + formatAge(info.SampledTime.Sub(p.LeaseExpiresTime)) + " ago"
		}
		t.row(strconv.Itoa(p.Partition), p.Owner, strconv.FormatInt(p.Epoch, 10), lease, p.NextOwner)
	}
	if err := t.flush(); err != nil {
		return err
	}

	fmt.Fprintln(w)
	live := formatAge(time.Duration(info.LiveWithinSeconds * float64(time.Second)))
	if len(info.Workers) == 0 {
		_, err := fmt.Fprintf(w, "no live workers (none has sent a heartbeat in the last %s)\n", live)
		return err
	}
	t = newTextTable(w, "WORKER", "HOST", "STARTED", "LAST HEARTBEAT", "PARTITIONS", "LEASED NOW")
	for _, wk := range info.Workers {
		age := formatAge(time.Duration(wk.HeartbeatAgeSeconds*float64(time.Second))) + " ago"
		t.row(wk.ID, wk.Host, tableTime(wk.StartedTime), age, formatInts(wk.Partitions), formatInts(wk.LeasedPartitions))
	}
	return t.flush()
}

func hubInfoCommand() *cobra.Command {
	var liveWithin time.Duration
	cmd := &cobra.Command{
		Use:   "info",
		Short: "Show the hub's partitions, queues, leases and live workers",
		Long: `info shows the task hub in --backend: its partition count; every control
queue and the work-item queue with its length and the age of its oldest
visible message; the lease of every partition (owner, fencing epoch, expiry,
requested hand-off); and the live workers with the age of their last
heartbeat and the partitions they own.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if liveWithin <= 0 {
				return fmt.Errorf("--live-within %s: want a positive duration", liveWithin)
			}
			hubName, path := hubFlags(cmd)
			be, err := openExistingBackend(cmd)
			if err != nil {
				return err
			}
			defer be.Close()
			info, err := loadHubInfo(cmd.Context(), be, hubName, path, liveWithin, time.Now())
			if err != nil {
				return err
			}
			if wantJSON(cmd) {
				return renderJSON(cmd.OutOrStdout(), info)
			}
			return printHubInfo(cmd.OutOrStdout(), info)
		},
	}
	cmd.Flags().DurationVar(&liveWithin, "live-within", hubLiveWithinDefault, "count a worker as live if its last heartbeat is this recent")
	return cmd
}

func hubDeleteCommand() *cobra.Command {
	var yes, force bool
	cmd := &cobra.Command{
		Use:   "delete --yes",
		Short: "Delete the task hub with every instance, history and queued message",
		Long: `delete removes the task hub in --backend and everything in it: instances,
histories, payloads, queued messages, leases and the worker registry. It
refuses without --yes, and refuses while workers are live on the hub unless
--force is given (a live worker would keep running against a deleted hub).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			hubName, path := hubFlags(cmd)
			if !yes {
				return fmt.Errorf("hub delete removes task hub %q in %s with every instance, history and queued message; pass --yes to confirm", hubName, path)
			}
			be, err := openExistingBackend(cmd)
			if err != nil {
				return err
			}
			defer be.Close()
			ctx := cmd.Context()
			h, err := be.HubGet(ctx)
			if errors.Is(err, backend.ErrHubNotFound) {
				return hubNotFound(hubName, path, err)
			}
			if err != nil {
				return err
			}
			workers, err := be.WorkerList(ctx, &backend.WorkerListParams{Since: time.Now().Add(-hubLiveWithinDefault)})
			if err != nil {
				return fmt.Errorf("workers: %w", err)
			}
			if len(workers) > 0 && !force {
				live, them := "1 worker is", "it"
				if len(workers) > 1 {
					live, them = strconv.Itoa(len(workers))+" workers are", "them"
				}
				return fmt.Errorf("%s live on task hub %q (%s); stop %s first, or pass --force", live, hubName, workers[0].ID, them)
			}
			if err := be.HubDelete(ctx); err != nil {
				return fmt.Errorf("hub delete: %w", err)
			}
			if wantJSON(cmd) {
				return renderJSON(cmd.OutOrStdout(), hubDeleteOutput{Hub: hubName, Backend: path, PartitionCount: h.PartitionCount, Deleted: true})
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "deleted task hub %q from %s\n", hubName, path)
			return err
		},
	}
	cmd.Flags().BoolVar(&yes, "yes", false, "confirm the deletion")
	cmd.Flags().BoolVar(&force, "force", false, "delete even while workers are live on the hub")
	return cmd
}
