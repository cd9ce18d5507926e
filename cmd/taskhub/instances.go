package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/taskhub/taskhub"
	"github.com/taskhub/taskhub/backend"
)

// The client commands (start, status, list, raise, terminate, suspend,
// resume, rewind, purge, history) act on an instanceTarget: the hub in
// --backend through a taskhub.Client, or a Durable Functions HTTP API with
// --server. Each command has one code path; the two targets translate.

const (
	serverFlag = "server"
	keyFlag    = "key"
	// clientKeyEnv holds the API key of --server when --key is not given
	// (the variable `taskhub serve` reads its key from).
	clientKeyEnv = "TASKHUB_API_KEY"
	// dfBasePath is the Durable Functions 2.x webhook prefix, used when
	// --server has no path.
	dfBasePath = "/runtime/webhooks/durabletask"
	// dfContinuationHeader carries the paging token of listings.
	dfContinuationHeader = "x-ms-continuation-token"
	// dfKeyHeader carries the API key.
	dfKeyHeader = "x-functions-key"
	// listPageMax is the largest page the HTTP API accepts.
	listPageMax = 1000
	// localWaitPoll caps the polling of a wait on the hub's storage: the
	// CLI runs no worker, so nothing wakes it on a commit.
	localWaitPoll = 250 * time.Millisecond
)

var (
	anyStatus = []taskhub.Status{
		taskhub.StatusPending, taskhub.StatusRunning, taskhub.StatusCompleted, taskhub.StatusContinuedAsNew,
		taskhub.StatusFailed, taskhub.StatusTerminated, taskhub.StatusSuspended,
	}
	purgeableStatuses = []taskhub.Status{taskhub.StatusCompleted, taskhub.StatusFailed, taskhub.StatusTerminated}

	errRewindUnavailable = errors.New(`the server cannot rewind instances (it answered 501)`)
)

// instanceTarget is what the client commands act on.
type instanceTarget interface {
	// Start schedules an instance and returns its ID.
	Start(ctx context.Context, req startRequest) (string, error)
	// Get returns an instance's status, with its input and history when
	// asked for.
	Get(ctx context.Context, id string, opts getOptions) (*instanceView, error)
	// WaitForCompletion waits until the instance has finished.
	WaitForCompletion(ctx context.Context, id string) (*instanceView, error)
	// List returns one page of instances (without their inputs).
	List(ctx context.Context, q taskhub.InstanceQuery) (*taskhub.InstancePage, error)
	RaiseEvent(ctx context.Context, id, event string, data json.RawMessage) error
	Terminate(ctx context.Context, id, reason string, recursive bool) error
	Suspend(ctx context.Context, id, reason string) error
	Resume(ctx context.Context, id, reason string) error
	Rewind(ctx context.Context, id, reason string) error
	// Purge deletes one finished instance.
	Purge(ctx context.Context, id string) error
	// PurgeWhere deletes the finished instances matching f; progress, if
	// the target can report it, is called with the running total.
	PurgeWhere(ctx context.Context, f taskhub.InstanceFilter, progress func(purged int)) (int, error)
	Close() error
}

type startRequest struct {
	Name    string
	Input   json.RawMessage // nil: no input
	ID      string          // empty: a new random ID
	StartAt time.Time       // zero: at once
}

type getOptions struct {
	Input   bool
	History bool
}

// instanceView is an instance's status as the commands print it.
type instanceView struct {
	*taskhub.InstanceStatus
	// History is nil unless asked for.
	History []*taskhub.HistoryEvent `json:"historyEvents,omitempty"`
}

// cliError is an error already phrased for the command line; it keeps the
// cause for errors.Is.
type cliError struct {
	msg string
	err error
}

func (e *cliError) Error() string { return e.msg }
func (e *cliError) Unwrap() error { return e.err }

// explain phrases the errors both targets share the same way.
func explain(err error, id string) error {
	if err == nil {
		return nil
	}
	var ce *cliError
	if errors.As(err, &ce) {
		return err
	}
	switch {
	case errors.Is(err, taskhub.ErrInstanceNotFound):
		return &cliError{fmt.Sprintf("instance %q not found", id), err}
	case errors.Is(err, taskhub.ErrInstanceFinished):
		return &cliError{fmt.Sprintf("instance %q has already finished", id), err}
	case errors.Is(err, taskhub.ErrInstanceNotFinished):
		return &cliError{fmt.Sprintf("instance %q has not finished: only Completed, Failed and Terminated instances can be purged (terminate it first)", id), err}
	case errors.Is(err, taskhub.ErrInstanceNotFailed):
		return &cliError{fmt.Sprintf("instance %q has not failed: only Failed instances can be rewound", id), err}
	}
	return err
}

// instanceCommands returns the client commands, for the root command.
func instanceCommands() []*cobra.Command {
	cmds := []*cobra.Command{
		startCommand(), statusCommand(), listCommand(), historyCommand(),
		raiseCommand(), terminateCommand(), suspendCommand(), resumeCommand(), rewindCommand(),
		purgeCommand(),
	}
	for _, c := range cmds {
		c.PersistentFlags().String(serverFlag, "", "act through the Durable Functions HTTP API at this URL (e.g. http://localhost:7071) instead of --backend")
		c.PersistentFlags().String(keyFlag, "", "API key for --server, sent as "+dfKeyHeader+" (default $"+clientKeyEnv+")")
		addJSONFlag(c)
	}
	return cmds
}

// openTarget returns the target the flags name.
func openTarget(cmd *cobra.Command) (instanceTarget, error) {
	server, _ := cmd.Flags().GetString(serverFlag)
	key, _ := cmd.Flags().GetString(keyFlag)
	if server == "" {
		if key != "" {
			return nil, errors.New("--key is only used with --server")
		}
		be, err := openExistingBackend(cmd)
		if err != nil {
			return nil, err
		}
		spec, _ := cmd.Flags().GetString("backend")
		hub, _ := cmd.Flags().GetString("hub")
		return &localTarget{
			be:     be,
			client: taskhub.NewClient(be, taskhub.ClientOptions{MaxPollInterval: localWaitPoll}),
			hub:    hub, path: spec,
		}, nil
	}
	if cmd.Flags().Changed("backend") {
		return nil, errors.New("--backend and --server exclude each other: the server has its own hub")
	}
	if key == "" {
		key = strings.TrimSpace(os.Getenv(clientKeyEnv))
	}
	return newHTTPTarget(server, key)
}

// openExistingBackend opens --backend, refusing a SQLite file that does not
// exist (opening would create an empty one, and every command would then
// fail with a less helpful message).
func openExistingBackend(cmd *cobra.Command) (backend.Backend, error) {
	spec, _ := cmd.Flags().GetString("backend")
	if !strings.Contains(spec, "://") && !strings.HasPrefix(spec, "file:") && spec != ":memory:" {
		if _, err := os.Stat(spec); errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf(`--backend %s: no such file; create a hub with "taskhub hub create --backend %s" or start a worker on it`, spec, spec)
		}
	}
	return openBackend(cmd)
}

func parseJSONFlag(name, s string) (json.RawMessage, error) {
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		return nil, fmt.Errorf("--%s is not valid JSON: %v", name, err)
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, []byte(s)); err != nil {
		return nil, fmt.Errorf("--%s is not valid JSON: %v", name, err)
	}
	return buf.Bytes(), nil
}

// parseTimeFlag accepts RFC 3339 times and, for convenience, dates (UTC
// midnight).
func parseTimeFlag(name, s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("--%s %q: want an RFC 3339 time such as 2025-01-31T12:00:00Z, or a date such as 2025-01-31", name, s)
}

// parseStatuses parses runtime status names (any case; a flag value may
// hold several, comma-separated) and checks each is allowed.
func parseStatuses(name string, values []string, allowed []taskhub.Status) ([]taskhub.Status, error) {
	var out []taskhub.Status
	for _, v := range values {
		for item := range strings.SplitSeq(v, ",") {
			item = strings.TrimSpace(item)
			if item == "" {
				continue
			}
			var found taskhub.Status
			for _, s := range allowed {
				if strings.EqualFold(item, string(s)) {
					found = s
				}
			}
			if found == "" {
				names := make([]string, len(allowed))
				for i, s := range allowed {
					names[i] = string(s)
				}
				return nil, fmt.Errorf("--%s %q: want one of %s", name, item, strings.Join(names, ", "))
			}
			out = append(out, found)
		}
	}
	return out, nil
}

// filterFlags are the instance filter flags of list and purge.
type filterFlags struct {
	statuses                []string
	prefix                  string
	createdFrom, createdTo  string
	allowedStatuses         []taskhub.Status
	statusHelp, createdHelp string
}

func (ff *filterFlags) add(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringSliceVar(&ff.statuses, "status", nil, ff.statusHelp)
	f.StringVar(&ff.prefix, "prefix", "", "only instances whose ID starts with this")
	f.StringVar(&ff.createdFrom, "created-from", "", ff.createdHelp)
	f.StringVar(&ff.createdTo, "created-to", "", "only instances created before this time (exclusive)")
}

func (ff *filterFlags) filter() (taskhub.InstanceFilter, error) {
	var f taskhub.InstanceFilter
	var err error
	if f.Statuses, err = parseStatuses("status", ff.statuses, ff.allowedStatuses); err != nil {
		return f, err
	}
	if f.CreatedFrom, err = parseTimeFlag("created-from", ff.createdFrom); err != nil {
		return f, err
	}
	if f.CreatedTo, err = parseTimeFlag("created-to", ff.createdTo); err != nil {
		return f, err
	}
	if !f.CreatedFrom.IsZero() && !f.CreatedTo.IsZero() && !f.CreatedTo.After(f.CreatedFrom) {
		return f, fmt.Errorf("--created-to %s is not after --created-from %s", ff.createdTo, ff.createdFrom)
	}
	f.InstanceIDPrefix = ff.prefix
	return f, nil
}

// withTarget runs fn on the target the flags name, and closes it.
func withTarget(cmd *cobra.Command, fn func(ctx context.Context, t instanceTarget) error) error {
	t, err := openTarget(cmd)
	if err != nil {
		return err
	}
	defer t.Close()
	return fn(cmd.Context(), t)
}

func startCommand() *cobra.Command {
	var (
		input, id, startAt string
		wait               bool
		timeout            time.Duration
	)
	cmd := &cobra.Command{
		Use:   "start <orchestrator>",
		Short: "Start an orchestration instance",
		Long: `start schedules an instance of the named orchestrator and prints its ID. A
worker serving the hub runs it. With --wait it also waits until the instance
has finished, prints its status, and exits non-zero unless it completed.`,
		Example: `  taskhub start HelloSequence
  taskhub start FanOutFanIn --input 100 --id fan-1 --wait
  taskhub start Approval --input '{"timeoutSeconds":60}' --start-at 2025-01-31T12:00:00Z`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := startRequest{Name: args[0], ID: id}
			var err error
			if cmd.Flags().Changed("input") {
				if req.Input, err = parseJSONFlag("input", input); err != nil {
					return err
				}
			}
			if req.StartAt, err = parseTimeFlag("start-at", startAt); err != nil {
				return err
			}
			if timeout != 0 && !wait {
				return errors.New("--timeout is only used with --wait")
			}
			return withTarget(cmd, func(ctx context.Context, t instanceTarget) error {
				newID, err := t.Start(ctx, req)
				if err != nil {
					return explain(err, req.ID)
				}
				out, asJSON := cmd.OutOrStdout(), wantJSON(cmd)
				if !wait {
					if asJSON {
						return renderJSON(out, map[string]string{"instanceId": newID, "name": req.Name})
					}
					_, err := fmt.Fprintf(out, "started %s instance %s\n", req.Name, newID)
					return err
				}
				if !asJSON {
					fmt.Fprintf(out, "started %s instance %s; waiting for it to finish\n\n", req.Name, newID)
				}
				if timeout > 0 {
					var cancel context.CancelFunc
					ctx, cancel = context.WithTimeout(ctx, timeout)
					defer cancel()
				}
				v, err := t.WaitForCompletion(ctx, newID)
				if errors.Is(err, context.DeadlineExceeded) {
					return fmt.Errorf("instance %q has not finished after %s", newID, timeout)
				}
				if err != nil {
					return explain(err, newID)
				}
				v.Input = nil
				if asJSON {
					err = renderJSON(out, v)
				} else {
					err = printInstance(out, v)
				}
				if err != nil {
					return err
				}
				if v.RuntimeStatus != taskhub.StatusCompleted {
					msg := fmt.Sprintf("instance %q ended %s", newID, v.RuntimeStatus)
					if v.Failure != nil {
						msg += ": " + v.Failure.Error()
					}
					return errors.New(msg)
				}
				return nil
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&input, "input", "", "the orchestrator's input, as JSON")
	f.StringVar(&id, "id", "", "the instance ID (default: a random UUID)")
	f.StringVar(&startAt, "start-at", "", "start at this RFC 3339 time instead of now")
	f.BoolVar(&wait, "wait", false, "wait until the instance has finished and print its status")
	f.DurationVar(&timeout, "timeout", 0, "with --wait, give up after this long (default: no limit)")
	return cmd
}

func statusCommand() *cobra.Command {
	var showHistory, showInput bool
	cmd := &cobra.Command{
		Use:   "status <instance-id>",
		Short: "Show an instance's status",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withTarget(cmd, func(ctx context.Context, t instanceTarget) error {
				v, err := t.Get(ctx, args[0], getOptions{Input: showInput, History: showHistory})
				if err != nil {
					return explain(err, args[0])
				}
				if wantJSON(cmd) {
					return renderJSON(cmd.OutOrStdout(), v)
				}
				return printInstance(cmd.OutOrStdout(), v)
			})
		},
	}
	cmd.Flags().BoolVar(&showHistory, "history", false, "also show the history of the current execution")
	cmd.Flags().BoolVar(&showInput, "input", false, "also show the input")
	return cmd
}

func historyCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "history <instance-id>",
		Short: "Show the history of an instance's current execution",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withTarget(cmd, func(ctx context.Context, t instanceTarget) error {
				v, err := t.Get(ctx, args[0], getOptions{Input: true, History: true})
				if err != nil {
					return explain(err, args[0])
				}
				if wantJSON(cmd) {
					return renderJSON(cmd.OutOrStdout(), v.History)
				}
				return printHistory(cmd.OutOrStdout(), v.History)
			})
		},
	}
}

// listOutput is the JSON document of list.
type listOutput struct {
	Instances []*taskhub.InstanceStatus `json:"instances"`
	// ContinuationToken is set when more instances match: pass it to
	// --continuation-token for the next page.
	ContinuationToken string `json:"continuationToken,omitempty"`
}

func listCommand() *cobra.Command {
	ff := &filterFlags{
		allowedStatuses: anyStatus,
		statusHelp:      "only instances in these runtime statuses (comma-separated or repeated)",
		createdHelp:     "only instances created at or after this time (RFC 3339 or a date)",
	}
	var (
		top   int
		all   bool
		token string
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List instances, in instance-ID order",
		Long: `list prints instances matching the filters, in instance-ID order: one page of
at most --top instances, or with --all every page. When more instances match,
the token of the next page is printed (on stderr for tables, as
continuationToken in JSON); pass it to --continuation-token.`,
		Example: `  taskhub list --status Running,Pending
  taskhub list --prefix order- --created-from 2025-01-31 --all --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			filter, err := ff.filter()
			if err != nil {
				return err
			}
			if top < 1 || top > listPageMax {
				return fmt.Errorf("--top %d: want a number from 1 to %d", top, listPageMax)
			}
			if all && token != "" {
				return errors.New("--all and --continuation-token exclude each other")
			}
			return withTarget(cmd, func(ctx context.Context, t instanceTarget) error {
				q := taskhub.InstanceQuery{Filter: filter, PageSize: top}
				var res listOutput
				var err error
				res.Instances, res.ContinuationToken, err = collectPages("list", all, token, func(tok string) ([]*taskhub.InstanceStatus, string, error) {
					q.ContinuationToken = tok
					page, err := t.List(ctx, q)
					if err != nil {
						return nil, "", err
					}
					return page.Instances, page.ContinuationToken, nil
				})
				if err != nil {
					return err
				}
				if wantJSON(cmd) {
					return renderJSON(cmd.OutOrStdout(), res)
				}
				if err := printInstanceList(cmd.OutOrStdout(), res.Instances); err != nil {
					return err
				}
				if res.ContinuationToken != "" {
					fmt.Fprintf(cmd.ErrOrStderr(), "more instances match: use --all, or --continuation-token %s for the next page\n", res.ContinuationToken)
				}
				return nil
			})
		},
	}
	ff.add(cmd)
	f := cmd.Flags()
	f.IntVar(&top, "top", 100, fmt.Sprintf("page size (1-%d)", listPageMax))
	f.BoolVar(&all, "all", false, "fetch every page")
	f.StringVar(&token, "continuation-token", "", "continue a previous listing from this token")
	return cmd
}

// operationOutput is the JSON document of the operations that only send a
// message to an instance.
type operationOutput struct {
	InstanceID string `json:"instanceId"`
	Operation  string `json:"operation"`
	Event      string `json:"eventName,omitempty"`
}

// printOperation reports an accepted operation.
func printOperation(cmd *cobra.Command, o operationOutput, text string) error {
	if wantJSON(cmd) {
		return renderJSON(cmd.OutOrStdout(), o)
	}
	_, err := fmt.Fprintln(cmd.OutOrStdout(), text)
	return err
}

func raiseCommand() *cobra.Command {
	var data string
	cmd := &cobra.Command{
		Use:     "raise <instance-id> <event>",
		Short:   "Send an external event to a running instance",
		Example: `  taskhub raise approval-1 Approval --data '{"approved":true}'`,
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, event := args[0], args[1]
			var payload json.RawMessage
			if cmd.Flags().Changed("data") {
				var err error
				if payload, err = parseJSONFlag("data", data); err != nil {
					return err
				}
			}
			return withTarget(cmd, func(ctx context.Context, t instanceTarget) error {
				if err := t.RaiseEvent(ctx, id, event, payload); err != nil {
					return explain(err, id)
				}
				return printOperation(cmd, operationOutput{InstanceID: id, Operation: "raiseEvent", Event: event},
					fmt.Sprintf("event %s sent to instance %s", event, id))
			})
		},
	}
	cmd.Flags().StringVar(&data, "data", "", "the event's data, as JSON (default null)")
	return cmd
}

func terminateCommand() *cobra.Command {
	var reason string
	var recursive bool
	cmd := &cobra.Command{
		Use:   "terminate <instance-id>",
		Short: "Terminate a running instance",
		Long: `terminate asks a running instance to end with status Terminated; the reason
becomes its output. The request is queued: the instance ends when a worker
processes it.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withTarget(cmd, func(ctx context.Context, t instanceTarget) error {
				if err := t.Terminate(ctx, args[0], reason, recursive); err != nil {
					return explain(err, args[0])
				}
				return printOperation(cmd, operationOutput{InstanceID: args[0], Operation: "terminate"},
					fmt.Sprintf("termination of instance %s requested", args[0]))
			})
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why; becomes the instance's output")
	cmd.Flags().BoolVar(&recursive, "recursive", false, "also terminate its running sub-orchestrations")
	return cmd
}

// controlCommand builds suspend and resume, which differ only in words.
func controlCommand(use, short, operation, noun string, op func(instanceTarget) func(ctx context.Context, id, reason string) error) *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   use + " <instance-id>",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withTarget(cmd, func(ctx context.Context, t instanceTarget) error {
				if err := op(t)(ctx, args[0], reason); err != nil {
					return explain(err, args[0])
				}
				return printOperation(cmd, operationOutput{InstanceID: args[0], Operation: operation},
					fmt.Sprintf("%s of instance %s requested", noun, args[0]))
			})
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why (recorded in the history)")
	return cmd
}

func suspendCommand() *cobra.Command {
	return controlCommand("suspend", "Suspend a running instance: its events are kept until it is resumed", "suspend", "suspension",
		func(t instanceTarget) func(context.Context, string, string) error { return t.Suspend })
}

func resumeCommand() *cobra.Command {
	return controlCommand("resume", "Resume a suspended instance", "resume", "resumption",
		func(t instanceTarget) func(context.Context, string, string) error { return t.Resume })
}

func rewindCommand() *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "rewind <instance-id>",
		Short: "Rewind a failed instance: re-run what failed, keep what succeeded",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withTarget(cmd, func(ctx context.Context, t instanceTarget) error {
				if err := t.Rewind(ctx, args[0], reason); err != nil {
					return explain(err, args[0])
				}
				return printOperation(cmd, operationOutput{InstanceID: args[0], Operation: "rewind"},
					fmt.Sprintf("rewind of instance %s requested", args[0]))
			})
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why")
	return cmd
}

// purgeOutput is the JSON document of purge (as the HTTP API answers).
type purgeOutput struct {
	InstancesDeleted int `json:"instancesDeleted"`
}

func purgeCommand() *cobra.Command {
	ff := &filterFlags{
		allowedStatuses: purgeableStatuses,
		statusHelp:      "only instances in these statuses: Completed, Failed, Terminated (default all three)",
		createdHelp:     "purge the finished instances created at or after this time (RFC 3339 or a date)",
	}
	cmd := &cobra.Command{
		Use:   "purge (<instance-id> | --created-from T [--created-to T] [--status S,...] [--prefix P])",
		Short: "Delete finished instances with their history",
		Long: `purge deletes finished (Completed, Failed or Terminated) instances: their
status, history, payloads and pending messages. Give one instance ID, or a
filter starting with --created-from. On --backend, a filtered purge works in
rounds and reports its progress on stderr; through --server it is one
request.`,
		Example: `  taskhub purge hello-1
  taskhub purge --created-from 2025-01-01 --created-to 2025-02-01 --status Completed`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			filterSet := cmd.Flags().Changed("created-from") || cmd.Flags().Changed("created-to") ||
				cmd.Flags().Changed("status") || cmd.Flags().Changed("prefix")
			switch {
			case len(args) == 1 && filterSet:
				return errors.New("purge takes an instance ID or filter flags, not both")
			case len(args) == 0 && ff.createdFrom == "":
				return errors.New("purge needs an instance ID, or --created-from (with optional --created-to, --status and --prefix)")
			}
			report := func(n int) error {
				if wantJSON(cmd) {
					return renderJSON(cmd.OutOrStdout(), purgeOutput{InstancesDeleted: n})
				}
				_, err := fmt.Fprintf(cmd.OutOrStdout(), "purged %s\n", countOf(n, "instance"))
				return err
			}
			if len(args) == 1 {
				return withTarget(cmd, func(ctx context.Context, t instanceTarget) error {
					if err := t.Purge(ctx, args[0]); err != nil {
						return explain(err, args[0])
					}
					return report(1)
				})
			}
			filter, err := ff.filter()
			if err != nil {
				return err
			}
			return withTarget(cmd, func(ctx context.Context, t instanceTarget) error {
				progress := func(n int) {
					fmt.Fprintf(cmd.ErrOrStderr(), "purged %s so far\n", countOf(n, "instance"))
				}
				n, err := t.PurgeWhere(ctx, filter, progress)
				if err != nil {
					if n > 0 {
						return fmt.Errorf("purge stopped after %s: %w", countOf(n, "instance"), err)
					}
					return err
				}
				return report(n)
			})
		},
	}
	ff.add(cmd)
	return cmd
}

// localTarget acts on the hub's storage through a standalone client.
type localTarget struct {
	be     backend.Backend
	client *taskhub.Client
	hub    string
	path   string
}

// check phrases a missing hub.
func (l *localTarget) check(err error) error {
	if errors.Is(err, taskhub.ErrHubNotFound) {
		return hubNotFound(l.hub, l.path, err)
	}
	return err
}

func (l *localTarget) Start(ctx context.Context, r startRequest) (string, error) {
	var opts []taskhub.ScheduleOption
	if r.ID != "" {
		opts = append(opts, taskhub.WithStartInstanceID(r.ID))
	}
	if !r.StartAt.IsZero() {
		opts = append(opts, taskhub.WithStartTime(r.StartAt))
	}
	var input any // nil: no input
	if r.Input != nil {
		input = r.Input
	}
	id, err := l.client.ScheduleNewOrchestration(ctx, r.Name, input, opts...)
	return id, l.check(err)
}

func (l *localTarget) Get(ctx context.Context, id string, opts getOptions) (*instanceView, error) {
	st, err := l.client.GetInstance(ctx, id)
	if err != nil {
		return nil, l.check(err)
	}
	v := &instanceView{InstanceStatus: st}
	if !opts.Input {
		st.Input = nil
	}
	if opts.History {
		h, err := l.client.GetHistory(ctx, id)
		if err != nil {
			return nil, l.check(err)
		}
		if !opts.Input {
			for _, e := range h {
				if e.Type == "ExecutionStarted" {
					e.Input = nil
				}
			}
		}
		v.History = append([]*taskhub.HistoryEvent{}, h...)
	}
	return v, nil
}

func (l *localTarget) WaitForCompletion(ctx context.Context, id string) (*instanceView, error) {
	st, err := l.client.WaitForInstanceCompletion(ctx, id)
	if err != nil {
		return nil, l.check(err)
	}
	return &instanceView{InstanceStatus: st}, nil
}

func (l *localTarget) List(ctx context.Context, q taskhub.InstanceQuery) (*taskhub.InstancePage, error) {
	page, err := l.client.QueryInstances(ctx, q)
	if err != nil {
		return nil, l.check(err)
	}
	for _, s := range page.Instances {
		s.Input = nil
	}
	return page, nil
}

func (l *localTarget) RaiseEvent(ctx context.Context, id, event string, data json.RawMessage) error {
	var payload any // nil: the event carries null
	if data != nil {
		payload = data
	}
	return l.check(l.client.RaiseEvent(ctx, id, event, payload))
}

func (l *localTarget) Terminate(ctx context.Context, id, reason string, recursive bool) error {
	var why any // nil: no reason, the output stays empty
	if reason != "" {
		why = reason
	}
	return l.check(l.client.TerminateInstance(ctx, id, why, recursive))
}

func (l *localTarget) Suspend(ctx context.Context, id, reason string) error {
	return l.check(l.client.SuspendInstance(ctx, id, reason))
}

func (l *localTarget) Resume(ctx context.Context, id, reason string) error {
	return l.check(l.client.ResumeInstance(ctx, id, reason))
}

func (l *localTarget) Rewind(ctx context.Context, id, reason string) error {
	return l.client.RewindInstance(ctx, id, reason)
}

func (l *localTarget) Purge(ctx context.Context, id string) error {
	return l.check(l.client.PurgeInstance(ctx, id))
}

func (l *localTarget) PurgeWhere(ctx context.Context, f taskhub.InstanceFilter, progress func(int)) (int, error) {
	n, err := l.client.PurgeInstances(ctx, f, progress)
	return n, l.check(err)
}

func (l *localTarget) Close() error { return l.be.Close() }

// httpTarget acts through the Durable Functions HTTP management API.
type httpTarget struct {
	base   string // scheme, host and base path, without a trailing slash
	key    string
	client *http.Client
}

// maxResponseBytes bounds what the CLI reads of one answer.
const maxResponseBytes = 64 << 20

func newHTTPTarget(server, key string) (*httpTarget, error) {
	u, err := url.Parse(server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--server %q: want an http:// or https:// URL such as http://localhost:7071", server)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("--server %q: give the scheme, host and optional base path only (the key goes in --key)", server)
	}
	if strings.Trim(u.Path, "/") == "" {
		u.Path, u.RawPath = dfBasePath, ""
	}
	return &httpTarget{
		base:   strings.TrimSuffix(u.String(), "/"),
		key:    key,
		client: &http.Client{Timeout: 2 * time.Minute},
	}, nil
}

// remoteError is an error answer of the API. Sentinel, when set, is the
// taskhub error it stands for, so that explain phrases it as for the local
// target.
type remoteError struct {
	status   int
	code     string
	message  string
	sentinel error
	keySent  bool
}

func (e *remoteError) Error() string {
	if e.status == http.StatusUnauthorized {
		if e.keySent {
			return "the server refused the API key (401 Unauthorized)"
		}
		return fmt.Sprintf("the server needs an API key (401 Unauthorized): pass --key or set %s", clientKeyEnv)
	}
	msg := fmt.Sprintf("the server answered %d %s", e.status, http.StatusText(e.status))
	if e.code != "" {
		msg += " (" + e.code + ")"
	}
	if e.message != "" {
		msg += ": " + e.message
	}
	return msg
}

func (e *remoteError) Unwrap() error { return e.sentinel }

// url returns the URL of the path segments (escaped here) and query.
func (h *httpTarget) url(query url.Values, segments ...string) string {
	var b strings.Builder
	b.WriteString(h.base)
	for _, s := range segments {
		b.WriteByte('/')
		b.WriteString(url.PathEscape(s))
	}
	if len(query) > 0 {
		b.WriteByte('?')
		b.WriteString(query.Encode())
	}
	return b.String()
}

// do sends a request and returns the answer with its body read. Answers
// outside 2xx become a *remoteError.
func (h *httpTarget) do(ctx context.Context, method, u string, header http.Header, body []byte) (*http.Response, []byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, nil, fmt.Errorf("build request: %w", err)
	}
	hdr := header.Clone()
	if hdr == nil {
		hdr = http.Header{}
	}
	req.Header = hdr
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if h.key != "" {
		req.Header.Set(dfKeyHeader, h.key)
	}
	resp, err := h.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		return nil, nil, fmt.Errorf("cannot reach the server: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return nil, nil, fmt.Errorf("read the server's answer: %w", err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp, data, h.errorOf(resp.StatusCode, data)
	}
	return resp, data, nil
}

// errorOf decodes an error answer: {"error":{"code":…,"message":…}}, or
// a bare status as Durable Functions answers some errors.
func (h *httpTarget) errorOf(status int, body []byte) error {
	var eb struct {
		Error *struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	e := &remoteError{status: status, keySent: h.key != ""}
	if json.Unmarshal(body, &eb) == nil && eb.Error != nil {
		e.code, e.message = eb.Error.Code, eb.Error.Message
	} else if s := strings.TrimSpace(string(body)); s != "" && len(s) < 512 && !strings.ContainsAny(s, "<{") {
		e.message = s
	}
	switch {
	case e.code == "instance_not_found" || (e.code == "" && status == http.StatusNotFound):
		e.sentinel = taskhub.ErrInstanceNotFound
	case e.code == "instance_finished" || (e.code == "" && status == http.StatusGone):
		e.sentinel = taskhub.ErrInstanceFinished
	case e.code == "instance_not_finished":
		e.sentinel = taskhub.ErrInstanceNotFinished
	case e.code == "instance_not_failed":
		e.sentinel = taskhub.ErrInstanceNotFailed
	}
	return e
}

func decodeJSON(body []byte, v any, what string) error {
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("the server's %s is not the expected JSON: %v", what, err)
	}
	return nil
}

func (h *httpTarget) Start(ctx context.Context, r startRequest) (string, error) {
	if !r.StartAt.IsZero() {
		return "", errors.New("--start-at is not available with --server: the Durable Functions HTTP API has no scheduled start")
	}
	segs := []string{"orchestrators", r.Name}
	if r.ID != "" {
		segs = append(segs, r.ID)
	}
	body := []byte(r.Input)
	if body == nil {
		body = []byte{}
	}
	_, data, err := h.do(ctx, http.MethodPost, h.url(nil, segs...), nil, body)
	if err != nil {
		return "", err
	}
	var p struct {
		ID string `json:"id"`
	}
	if err := decodeJSON(data, &p, "start answer"); err != nil {
		return "", err
	}
	if p.ID == "" {
		return "", errors.New("the server's start answer has no instance id")
	}
	return p.ID, nil
}

// dfInstance is an instance's status in the Durable Functions shape.
type dfInstance struct {
	Name            string                  `json:"name"`
	InstanceID      string                  `json:"instanceId"`
	RuntimeStatus   taskhub.Status          `json:"runtimeStatus"`
	Input           json.RawMessage         `json:"input"`
	CustomStatus    json.RawMessage         `json:"customStatus"`
	Output          json.RawMessage         `json:"output"`
	CreatedTime     string                  `json:"createdTime"`
	LastUpdatedTime string                  `json:"lastUpdatedTime"`
	FailureDetails  *taskhub.FailureDetails `json:"failureDetails"`
	HistoryEvents   []*taskhub.HistoryEvent `json:"historyEvents"`
}

func (d *dfInstance) status() (*taskhub.InstanceStatus, error) {
	parse := func(name, s string) (time.Time, error) {
		if s == "" {
			return time.Time{}, nil
		}
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return time.Time{}, fmt.Errorf("the server sent an invalid %s %q for instance %q", name, s, d.InstanceID)
		}
		return t, nil
	}
	nonNull := func(b json.RawMessage) json.RawMessage {
		if len(b) == 0 || string(b) == "null" {
			return nil
		}
		return b
	}
	s := &taskhub.InstanceStatus{
		InstanceID: d.InstanceID, Name: d.Name, RuntimeStatus: d.RuntimeStatus,
		Input: nonNull(d.Input), Output: nonNull(d.Output), CustomStatus: nonNull(d.CustomStatus), Failure: d.FailureDetails,
	}
	var err error
	if s.CreatedAt, err = parse("createdTime", d.CreatedTime); err != nil {
		return nil, err
	}
	if s.LastUpdatedAt, err = parse("lastUpdatedTime", d.LastUpdatedTime); err != nil {
		return nil, err
	}
	// Durable Functions repeats a failure's message as the output; the
	// failure is shown on its own.
	if s.Failure != nil {
		if msg, _ := json.Marshal(s.Failure.Error()); bytes.Equal(s.Output, msg) {
			s.Output = nil
		}
	}
	return s, nil
}

func (h *httpTarget) Get(ctx context.Context, id string, opts getOptions) (*instanceView, error) {
	q := url.Values{"showInput": {strconv.FormatBool(opts.Input)}}
	if opts.History {
		q.Set("showHistory", "true")
		q.Set("showHistoryOutput", "true")
	}
	_, data, err := h.do(ctx, http.MethodGet, h.url(q, "instances", id), nil, nil)
	var d dfInstance
	var re *remoteError
	if errors.As(err, &re) && (re.status == http.StatusBadRequest || re.status == http.StatusInternalServerError) &&
		json.Unmarshal(data, &d) == nil && d.InstanceID != "" {
		// Some Durable Functions versions answer the status of a failed or
		// terminated instance with 400 or 500: it is still the status.
		err = nil
	} else if err == nil {
		err = decodeJSON(data, &d, "instance status")
	}
	if err != nil {
		return nil, err
	}
	st, err := d.status()
	if err != nil {
		return nil, err
	}
	if !opts.Input {
		st.Input = nil
	}
	v := &instanceView{InstanceStatus: st}
	if opts.History {
		v.History = append([]*taskhub.HistoryEvent{}, d.HistoryEvents...)
	}
	return v, nil
}

func (h *httpTarget) WaitForCompletion(ctx context.Context, id string) (*instanceView, error) {
	delay := 100 * time.Millisecond
	for {
		v, err := h.Get(ctx, id, getOptions{})
		if err != nil {
			return nil, err
		}
		if v.Finished() {
			return v, nil
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
		delay = min(2*delay, time.Second)
	}
}

func (h *httpTarget) List(ctx context.Context, q taskhub.InstanceQuery) (*taskhub.InstancePage, error) {
	query := url.Values{"showInput": {"false"}}
	if q.PageSize > 0 {
		query.Set("top", strconv.Itoa(q.PageSize))
	}
	setFilter(query, q.Filter)
	var header http.Header
	if q.ContinuationToken != "" {
		header = http.Header{}
		header.Set(dfContinuationHeader, q.ContinuationToken)
	}
	resp, data, err := h.do(ctx, http.MethodGet, h.url(query, "instances"), header, nil)
	if err != nil {
		return nil, err
	}
	var list []*dfInstance
	if err := decodeJSON(data, &list, "instance list"); err != nil {
		return nil, err
	}
	page := &taskhub.InstancePage{ContinuationToken: resp.Header.Get(dfContinuationHeader)}
	for _, d := range list {
		st, err := d.status()
		if err != nil {
			return nil, err
		}
		page.Instances = append(page.Instances, st)
	}
	return page, nil
}

// setFilter adds an instance filter's query parameters.
func setFilter(q url.Values, f taskhub.InstanceFilter) {
	if f.InstanceIDPrefix != "" {
		q.Set("instanceIdPrefix", f.InstanceIDPrefix)
	}
	if !f.CreatedFrom.IsZero() {
		q.Set("createdTimeFrom", f.CreatedFrom.UTC().Format(time.RFC3339Nano))
	}
	if !f.CreatedTo.IsZero() {
		q.Set("createdTimeTo", f.CreatedTo.UTC().Format(time.RFC3339Nano))
	}
	if len(f.Statuses) > 0 {
		names := make([]string, len(f.Statuses))
		for i, s := range f.Statuses {
			names[i] = string(s)
		}
		q.Set("runtimeStatus", strings.Join(names, ","))
	}
}

func (h *httpTarget) RaiseEvent(ctx context.Context, id, event string, data json.RawMessage) error {
	body := []byte(data)
	if body == nil {
		body = []byte{}
	}
	_, _, err := h.do(ctx, http.MethodPost, h.url(nil, "instances", id, "raiseEvent", event), nil, body)
	return err
}

// control posts one of the reason-carrying operations.
func (h *httpTarget) control(ctx context.Context, id, op, reason string, extra url.Values) error {
	q := url.Values{}
	if reason != "" {
		q.Set("reason", reason)
	}
	for k, v := range extra {
		q[k] = v
	}
	_, _, err := h.do(ctx, http.MethodPost, h.url(q, "instances", id, op), nil, []byte{})
	return err
}

func (h *httpTarget) Terminate(ctx context.Context, id, reason string, recursive bool) error {
	var extra url.Values
	if recursive {
		extra = url.Values{"recursive": {"true"}}
	}
	return h.control(ctx, id, "terminate", reason, extra)
}

func (h *httpTarget) Suspend(ctx context.Context, id, reason string) error {
	return h.control(ctx, id, "suspend", reason, nil)
}

func (h *httpTarget) Resume(ctx context.Context, id, reason string) error {
	return h.control(ctx, id, "resume", reason, nil)
}

// Rewind asks the server, so that a server that can rewind is used; one
// that cannot (501) gets the same message as the local target.
func (h *httpTarget) Rewind(ctx context.Context, id, reason string) error {
	err := h.control(ctx, id, "rewind", reason, nil)
	var re *remoteError
	if errors.As(err, &re) && (re.status == http.StatusNotImplemented || re.code == "not_implemented") {
		return &cliError{errRewindUnavailable.Error(), err}
	}
	return err
}

func (h *httpTarget) Purge(ctx context.Context, id string) error {
	_, _, err := h.do(ctx, http.MethodDelete, h.url(nil, "instances", id), nil, nil)
	return err
}

func (h *httpTarget) PurgeWhere(ctx context.Context, f taskhub.InstanceFilter, _ func(int)) (int, error) {
	q := url.Values{}
	setFilter(q, f)
	_, data, err := h.do(ctx, http.MethodDelete, h.url(q, "instances"), nil, nil)
	var re *remoteError
	if errors.As(err, &re) && re.status == http.StatusNotFound && re.code == "" {
		return 0, nil // Durable Functions answers 404 when nothing matched
	}
	if err != nil {
		return 0, err
	}
	var p purgeOutput
	if err := decodeJSON(data, &p, "purge answer"); err != nil {
		return 0, err
	}
	return p.InstancesDeleted, nil
}

func (h *httpTarget) Close() error {
	h.client.CloseIdleConnections()
	return nil
}

// collectPages fetches the page at token and, with all, every page after it;
// it returns the items (never nil, so JSON shows []) and the token of the
// page after the last one fetched.
func collectPages[T any](what string, all bool, token string, fetch func(token string) ([]T, string, error)) ([]T, string, error) {
	items := []T{}
	for {
		page, next, err := fetch(token)
		if err != nil {
			return nil, "", err
		}
		items = append(items, page...)
		if !all || next == "" {
			return items, next, nil
		}
		if next == token {
			return nil, "", fmt.Errorf("%s: the continuation token did not advance; stopping", what)
		}
		token = next
	}
}
