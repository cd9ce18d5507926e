package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/taskhub/taskhub"
)

// The entity commands (entity signal, get, list, clean) act on an
// entityTarget: the hub in --backend through a taskhub.Client, or the
// Durable Functions HTTP API of --server, whose entity routes they use.
// Cleaning entity storage has no HTTP route, so it needs --backend.

// entityTarget is what the entity commands act on; localTarget and
// httpTarget implement it.
type entityTarget interface {
	// SignalEntity sends op with input (nil: none), at the time at (zero:
	// at once).
	SignalEntity(ctx context.Context, id taskhub.EntityID, op string, input json.RawMessage, at time.Time) error
	// GetEntity returns the entity's metadata with its state, or an error
	// wrapping taskhub.ErrEntityNotFound.
	GetEntity(ctx context.Context, id taskhub.EntityID) (*taskhub.EntityMetadata, error)
	// ListEntities returns one page of entities.
	ListEntities(ctx context.Context, q taskhub.EntityQuery) (*taskhub.EntityPage, error)
	CleanEntityStorage(ctx context.Context, removeEmpty, releaseLocks bool) (taskhub.CleanEntityStorageResult, error)
}

var errCleanNeedsBackend = errors.New(`entity clean needs --backend: the HTTP API has no route that cleans entity storage (run it where the hub's storage is reachable)`)

// entityCommand returns `taskhub entity` with its subcommands, for the
// root command.
func entityCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "entity",
		Short: "Signal, read, list and clean durable entities",
		Long: `entity acts on the durable entities of the hub in --backend or, with
--server, through the Durable Functions HTTP API (clean needs --backend). An
entity is named by its name (case-insensitive, shown in lower case) and key,
and shown as @name@key.`,
		Args: cobra.NoArgs,
	}
	cmd.PersistentFlags().String(serverFlag, "", "act through the Durable Functions HTTP API at this URL (e.g. http://localhost:7071) instead of --backend")
	cmd.PersistentFlags().String(keyFlag, "", "API key for --server, sent as "+dfKeyHeader+" (default $"+clientKeyEnv+")")
	addJSONFlag(cmd)
	cmd.AddCommand(entitySignalCommand(), entityGetCommand(), entityListCommand(), entityCleanCommand())
	return cmd
}

// withEntityTarget runs fn on the target the flags name, and closes it.
func withEntityTarget(cmd *cobra.Command, fn func(ctx context.Context, t entityTarget) error) error {
	t, err := openTarget(cmd)
	if err != nil {
		return err
	}
	defer t.Close()
	et, ok := t.(entityTarget)
	if !ok {
		return fmt.Errorf("internal error: %T cannot act on entities", t)
	}
	return fn(cmd.Context(), et)
}

// parseEntityID checks an entity's name and key given as arguments, so that
// both targets refuse a bad one with the same message.
func parseEntityID(name, key string) (taskhub.EntityID, error) {
	if strings.Contains(name, "@") {
		return taskhub.EntityID{}, fmt.Errorf("%w: entity name %q contains '@'", taskhub.ErrInvalidEntityID, name)
	}
	return taskhub.ParseEntityID(taskhub.NewEntityID(name, key).String())
}

// explainEntity phrases the entity errors both targets share.
func explainEntity(err error, id taskhub.EntityID) error {
	var ce *cliError
	switch {
	case err == nil || errors.As(err, &ce):
		return err
	case errors.Is(err, taskhub.ErrEntityNotFound):
		return &cliError{fmt.Sprintf("entity %q not found: it has no state (never set, or deleted)", id.String()), err}
	}
	return err
}

// signalOutput is the JSON document of entity signal.
type signalOutput struct {
	EntityID  string `json:"entityId"`
	Operation string `json:"operation"`
	// SignalTime is when the signal is delivered, if not at once.
	SignalTime *time.Time `json:"signalTime,omitempty"`
}

func entitySignalCommand() *cobra.Command {
	var input, at string
	cmd := &cobra.Command{
		Use:   "signal <name> <key> <operation>",
		Short: "Send an operation to an entity, without waiting for it",
		Long: `signal stores a one-way operation for the entity; a worker runs it. The
entity need not exist: its first operation creates it. The operation's result
or failure is not reported back. The built-in operation "delete" deletes the
entity's state (unless the entity defines its own).`,
		Example: `  taskhub entity signal Counter user-1 add --input 5
  taskhub entity signal Counter user-1 reset --at 2025-01-31T12:00:00Z
  taskhub entity signal Counter user-1 delete`,
		Args: cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseEntityID(args[0], args[1])
			if err != nil {
				return err
			}
			op := args[2]
			if op == "" {
				return errors.New("the operation name is empty")
			}
			var payload json.RawMessage
			if cmd.Flags().Changed("input") {
				if payload, err = parseJSONFlag("input", input); err != nil {
					return err
				}
			}
			when, err := parseTimeFlag("at", at)
			if err != nil {
				return err
			}
			return withEntityTarget(cmd, func(ctx context.Context, t entityTarget) error {
				if err := t.SignalEntity(ctx, id, op, payload, when); err != nil {
					return explainEntity(err, id)
				}
				out := signalOutput{EntityID: id.String(), Operation: op}
				text := fmt.Sprintf("signal %s sent to entity %s", op, id)
				if !when.IsZero() {
					u := when.UTC()
					out.SignalTime = &u
					text = fmt.Sprintf("signal %s to entity %s scheduled for %s", op, id, tableTime(u))
				}
				if wantJSON(cmd) {
					return renderJSON(cmd.OutOrStdout(), out)
				}
				_, err := fmt.Fprintln(cmd.OutOrStdout(), text)
				return err
			})
		},
	}
	cmd.Flags().StringVar(&input, "input", "", "the operation's input, as JSON (default none)")
	cmd.Flags().StringVar(&at, "at", "", "deliver the signal at this RFC 3339 time (or date) instead of now")
	return cmd
}

func entityGetCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "get <name> <key>",
		Short: "Print an entity's state (with --json, its metadata)",
		Long: `get prints the entity's state as JSON. With --json it prints the entity's
metadata instead: its ID, state, when it last changed, the orchestration
holding its lock and how many requests wait for it. An entity without state
is reported as not found.`,
		Example: `  taskhub entity get Counter user-1
  taskhub entity get Counter user-1 --json`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseEntityID(args[0], args[1])
			if err != nil {
				return err
			}
			return withEntityTarget(cmd, func(ctx context.Context, t entityTarget) error {
				m, err := t.GetEntity(ctx, id)
				if err != nil {
					return explainEntity(err, id)
				}
				if wantJSON(cmd) {
					return renderJSON(cmd.OutOrStdout(), m)
				}
				var buf bytes.Buffer
				if err := json.Indent(&buf, m.State, "", "  "); err != nil {
					return fmt.Errorf("entity %s: the state is not valid JSON: %v", id, err)
				}
				buf.WriteByte('\n')
				_, err = buf.WriteTo(cmd.OutOrStdout())
				return err
			})
		},
	}
}

func entityListCommand() *cobra.Command {
	var (
		name, prefix string
		state, gone  bool
		top          int
		all          bool
		token        string
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List entities, in ID order",
		Long: `list prints the entities with state (with --deleted also those without), in
ID order: one page of at most --top entities, or with --all every page. When
more entities match, the token of the next page is printed (on stderr for
tables, as continuationToken in JSON); pass it to --continuation-token.`,
		Example: `  taskhub entity list --name Counter --state
  taskhub entity list --prefix acc --deleted --all --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if name != "" && prefix != "" {
				return errors.New("--name and --prefix exclude each other")
			}
			for flag, v := range map[string]string{"name": name, "prefix": prefix} {
				if v != "" {
					if _, err := parseEntityID(v, "k"); err != nil {
						return fmt.Errorf("--%s: %w", flag, err)
					}
				}
			}
			if top < 1 || top > listPageMax {
				return fmt.Errorf("--top %d: want a number from 1 to %d", top, listPageMax)
			}
			if all && token != "" {
				return errors.New("--all and --continuation-token exclude each other")
			}
			return withEntityTarget(cmd, func(ctx context.Context, t entityTarget) error {
				q := taskhub.EntityQuery{Name: name, NamePrefix: prefix, IncludeState: state, IncludeDeleted: gone, PageSize: top}
				var res taskhub.EntityPage
				var err error
				res.Entities, res.ContinuationToken, err = collectPages("entity list", all, token, func(tok string) ([]*taskhub.EntityMetadata, string, error) {
					q.ContinuationToken = tok
					page, err := t.ListEntities(ctx, q)
					if err != nil {
						return nil, "", err
					}
					return page.Entities, page.ContinuationToken, nil
				})
				if err != nil {
					return err
				}
				if wantJSON(cmd) {
					return renderJSON(cmd.OutOrStdout(), res)
				}
				if err := printEntityList(cmd.OutOrStdout(), res.Entities, state); err != nil {
					return err
				}
				if res.ContinuationToken != "" {
					fmt.Fprintf(cmd.ErrOrStderr(), "more entities match: use --all, or --continuation-token %s for the next page\n", res.ContinuationToken)
				}
				return nil
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&name, "name", "", "only entities of this name (case-insensitive)")
	f.StringVar(&prefix, "prefix", "", "only entities whose name starts with this")
	f.BoolVar(&state, "state", false, "also show each entity's state")
	f.BoolVar(&gone, "deleted", false, "also list entities without state (deleted, or never set)")
	f.IntVar(&top, "top", 100, fmt.Sprintf("page size (1-%d)", listPageMax))
	f.BoolVar(&all, "all", false, "fetch every page")
	f.StringVar(&token, "continuation-token", "", "continue a previous listing from this token")
	return cmd
}

// printEntityList renders entities as one table row each.
func printEntityList(w io.Writer, list []*taskhub.EntityMetadata, withState bool) error {
	if len(list) == 0 {
		_, err := fmt.Fprintln(w, "no entities match")
		return err
	}
	header := []string{"ENTITY ID", "HAS STATE", "LOCKED BY", "BACKLOG", "LAST MODIFIED"}
	if withState {
		header = append(header, "STATE")
	}
	t := newTextTable(w, header...)
	for _, m := range list {
		has := "no"
		if m.HasState {
			has = "yes"
		}
		row := []string{m.ID.String(), has, m.LockedBy, strconv.Itoa(m.BacklogQueueSize), tableTime(m.LastModified)}
		if withState {
			row = append(row, formatRaw(m.State, detailWidth))
		}
		t.row(row...)
	}
	return t.flush()
}

// entityCount renders "1 empty entity", "2 empty entities".
func entityCount(n int, adjective string) string {
	if n == 1 {
		return "1 " + adjective + " entity"
	}
	return strconv.Itoa(n) + " " + adjective + " entities"
}

func entityCleanCommand() *cobra.Command {
	var removeEmpty, releaseLocks bool
	cmd := &cobra.Command{
		Use:   "clean",
		Short: "Remove empty entities and release locks of finished orchestrations",
		Long: `clean removes the storage of entities that have no state, hold no lock and
have no request waiting (--remove-empty), and releases entity locks held by
orchestrations that have finished or no longer exist (--release-locks).
Without either flag it does both. It needs --backend: the HTTP API has no
route for it.`,
		Example: `  taskhub entity clean
  taskhub entity clean --release-locks`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("remove-empty") && !cmd.Flags().Changed("release-locks") {
				removeEmpty, releaseLocks = true, true
			}
			if !removeEmpty && !releaseLocks {
				return errors.New("nothing to do: give --remove-empty, --release-locks, or neither for both")
			}
			if server, _ := cmd.Flags().GetString(serverFlag); server != "" {
				return errCleanNeedsBackend
			}
			return withEntityTarget(cmd, func(ctx context.Context, t entityTarget) error {
				res, err := t.CleanEntityStorage(ctx, removeEmpty, releaseLocks)
				if err != nil {
					return err
				}
				if wantJSON(cmd) {
					return renderJSON(cmd.OutOrStdout(), res)
				}
				var parts []string
				if removeEmpty {
					parts = append(parts, "removed "+entityCount(res.EmptyEntitiesRemoved, "empty"))
				}
				if releaseLocks {
					lock := "orphaned locks"
					if res.OrphanedLocksReleased == 1 {
						lock = "orphaned lock"
					}
					parts = append(parts, fmt.Sprintf("released %d %s", res.OrphanedLocksReleased, lock))
				}
				_, err = fmt.Fprintln(cmd.OutOrStdout(), strings.Join(parts, "; "))
				return err
			})
		},
	}
	cmd.Flags().BoolVar(&removeEmpty, "remove-empty", false, "remove entities without state, lock or waiting requests (default: on when neither flag is given)")
	cmd.Flags().BoolVar(&releaseLocks, "release-locks", false, "release locks held by finished or missing orchestrations (default: on when neither flag is given)")
	return cmd
}

// Entity operations of localTarget.

func (l *localTarget) SignalEntity(ctx context.Context, id taskhub.EntityID, op string, input json.RawMessage, at time.Time) error {
	var in any // nil: no input
	if input != nil {
		in = input
	}
	var opts []taskhub.SignalEntityOption
	if !at.IsZero() {
		opts = append(opts, taskhub.WithSignalTime(at))
	}
	return l.check(l.client.SignalEntity(ctx, id, op, in, opts...))
}

func (l *localTarget) GetEntity(ctx context.Context, id taskhub.EntityID) (*taskhub.EntityMetadata, error) {
	m, err := l.client.GetEntity(ctx, id, true)
	return m, l.check(err)
}

func (l *localTarget) ListEntities(ctx context.Context, q taskhub.EntityQuery) (*taskhub.EntityPage, error) {
	page, err := l.client.QueryEntities(ctx, q)
	return page, l.check(err)
}

func (l *localTarget) CleanEntityStorage(ctx context.Context, removeEmpty, releaseLocks bool) (taskhub.CleanEntityStorageResult, error) {
	res, err := l.client.CleanEntityStorage(ctx, removeEmpty, releaseLocks)
	return res, l.check(err)
}

// Entity operations of httpTarget, through the Durable Functions entity
// routes.

// Headers of the entity read that taskhub's API adds (see package httpapi).
const (
	entityLockedByHeader = "x-taskhub-entity-locked-by"
	entityBacklogHeader  = "x-taskhub-entity-backlog"
)

func (h *httpTarget) SignalEntity(ctx context.Context, id taskhub.EntityID, op string, input json.RawMessage, at time.Time) error {
	q := url.Values{"op": {op}}
	if !at.IsZero() {
		q.Set("signalTime", at.UTC().Format(time.RFC3339Nano))
	}
	body := []byte(input)
	if body == nil {
		body = []byte{}
	}
	_, _, err := h.do(ctx, http.MethodPost, h.url(q, "entities", id.Name, id.Key), nil, body)
	return err
}

// entityNotFound reports whether an error answer says the entity has no
// state: taskhub's entity_not_found, or Durable Functions' bare 404.
func entityNotFound(err error) bool {
	var re *remoteError
	return errors.As(err, &re) && re.status == http.StatusNotFound && (re.code == "" || re.code == "entity_not_found")
}

func (h *httpTarget) GetEntity(ctx context.Context, id taskhub.EntityID) (*taskhub.EntityMetadata, error) {
	resp, data, err := h.do(ctx, http.MethodGet, h.url(nil, "entities", id.Name, id.Key), nil, nil)
	if entityNotFound(err) {
		return nil, fmt.Errorf("entity %s: %w", id, taskhub.ErrEntityNotFound)
	}
	if err != nil {
		return nil, err
	}
	data = bytes.TrimSpace(data)
	if !json.Valid(data) {
		return nil, errors.New("the server's entity state is not valid JSON")
	}
	m := &taskhub.EntityMetadata{ID: id, State: data, HasState: true, LockedBy: resp.Header.Get(entityLockedByHeader)}
	if lm := resp.Header.Get("Last-Modified"); lm != "" {
		if m.LastModified, err = http.ParseTime(lm); err != nil {
			return nil, fmt.Errorf("the server sent an invalid Last-Modified %q for entity %s", lm, id)
		}
	}
	if b := resp.Header.Get(entityBacklogHeader); b != "" {
		if m.BacklogQueueSize, err = strconv.Atoi(b); err != nil || m.BacklogQueueSize < 0 {
			return nil, fmt.Errorf("the server sent an invalid %s %q for entity %s", entityBacklogHeader, b, id)
		}
	}
	return m, nil
}

// dfEntity is an entity of a listing in the Durable Functions shape, with
// taskhub's additions (absent from Durable Functions' answers).
type dfEntity struct {
	EntityID struct {
		Name string `json:"name"`
		Key  string `json:"key"`
	} `json:"entityId"`
	LastOperationTime string          `json:"lastOperationTime"`
	State             json.RawMessage `json:"state"`
	HasState          *bool           `json:"hasState"`
	LockedBy          string          `json:"lockedBy"`
	BacklogQueueSize  int             `json:"backlogQueueSize"`
}

func (d *dfEntity) metadata() (*taskhub.EntityMetadata, error) {
	id, err := parseEntityID(d.EntityID.Name, d.EntityID.Key)
	if err != nil {
		return nil, fmt.Errorf("the server listed an invalid entity: %w", err)
	}
	m := &taskhub.EntityMetadata{ID: id, HasState: true, LockedBy: d.LockedBy, BacklogQueueSize: d.BacklogQueueSize}
	if d.HasState != nil {
		m.HasState = *d.HasState
	}
	if len(d.State) > 0 && string(d.State) != "null" {
		m.State = d.State
	}
	if d.LastOperationTime != "" {
		if m.LastModified, err = time.Parse(time.RFC3339Nano, d.LastOperationTime); err != nil {
			return nil, fmt.Errorf("the server sent an invalid lastOperationTime %q for entity %s", d.LastOperationTime, id)
		}
	}
	return m, nil
}

func (h *httpTarget) ListEntities(ctx context.Context, q taskhub.EntityQuery) (*taskhub.EntityPage, error) {
	query := url.Values{}
	if q.IncludeState {
		query.Set("fetchState", "true")
	}
	if q.IncludeDeleted {
		query.Set("includeDeleted", "true")
	}
	if q.NamePrefix != "" {
		query.Set("namePrefix", q.NamePrefix)
	}
	if q.PageSize > 0 {
		query.Set("top", strconv.Itoa(q.PageSize))
	}
	segs := []string{"entities"}
	if q.Name != "" {
		segs = append(segs, q.Name)
	}
	var header http.Header
	if q.ContinuationToken != "" {
		header = http.Header{}
		header.Set(dfContinuationHeader, q.ContinuationToken)
	}
	resp, data, err := h.do(ctx, http.MethodGet, h.url(query, segs...), header, nil)
	if err != nil {
		return nil, err
	}
	var list []*dfEntity
	if err := decodeJSON(data, &list, "entity list"); err != nil {
		return nil, err
	}
	page := &taskhub.EntityPage{ContinuationToken: resp.Header.Get(dfContinuationHeader), Entities: make([]*taskhub.EntityMetadata, 0, len(list))}
	for _, d := range list {
		m, err := d.metadata()
		if err != nil {
			return nil, err
		}
		if !q.IncludeState {
			m.State = nil
		}
		page.Entities = append(page.Entities, m)
	}
	return page, nil
}

func (h *httpTarget) CleanEntityStorage(context.Context, bool, bool) (taskhub.CleanEntityStorageResult, error) {
	return taskhub.CleanEntityStorageResult{}, errCleanNeedsBackend
}
