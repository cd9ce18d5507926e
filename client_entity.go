package taskhub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/taskhub/taskhub/backend"
	"github.com/taskhub/taskhub/internal/engine"
	"github.com/taskhub/taskhub/internal/history"
)

// ErrEntityNotFound: the entity has no state (it was never given one, or
// it was deleted).
var ErrEntityNotFound = errors.New("entity not found")

// SignalEntity sends a one-way operation to an entity, delivered at once or
// at the time WithSignalTime gives. The entity need not exist: it comes
// into being with its first operation. Signals from one client are not
// de-duplicated (a client has no durable sequence), and a signal is
// committed before SignalEntity returns, so it is never lost.
func (c *Client) SignalEntity(ctx context.Context, id EntityID, operation string, input any, opts ...SignalEntityOption) error {
	if err := validateEntityID(id); err != nil {
		return err
	}
	if operation == "" {
		return fmt.Errorf("signal entity %s: %w: empty operation name", id, ErrInvalidInput)
	}
	b, err := marshalInput("entity operation "+operation, input)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidInput, err)
	}
	at := signalTime(opts)
	ev := &history.Event{Type: history.EntityOperationSignaled, Name: operation, Input: b, FireAt: at}
	return c.c.SendEntity(ctx, id.String(), ev, at)
}

// EntityMetadata describes an entity.
type EntityMetadata struct {
	ID EntityID `json:"entityId"`
	// LastModified is when its last batch committed.
	LastModified time.Time `json:"lastModifiedTime"`
	// State is the entity's state (JSON), when asked for; nil without state.
	State json.RawMessage `json:"state,omitempty"`
	// HasState is false for an entity whose state was deleted (or never
	// set): it is listed only with IncludeDeleted.
	HasState bool `json:"hasState"`
	// LockedBy is the orchestration instance holding the entity's lock in a
	// critical section, or "".
	LockedBy string `json:"lockedBy,omitempty"`
	// BacklogQueueSize counts the requests waiting for the lock.
	BacklogQueueSize int `json:"backlogQueueSize"`
}

// ReadState decodes the entity's state into v.
func (m *EntityMetadata) ReadState(v any) error {
	if len(m.State) == 0 {
		return fmt.Errorf("entity %s: %w", m.ID, ErrEntityNotFound)
	}
	return json.Unmarshal(m.State, v)
}

func entityMetadata(row *backend.Instance, includeState bool) (*EntityMetadata, error) {
	id, err := ParseEntityID(row.InstanceID)
	if err != nil {
		return nil, err
	}
	rec, err := engine.DecodeEntityRecord(row)
	if err != nil {
		return nil, fmt.Errorf("entity %s: record cannot be decoded: %w", id, err)
	}
	m := &EntityMetadata{ID: id, LastModified: row.UpdatedAt, HasState: len(row.Output) > 0, BacklogQueueSize: len(rec.Queued)}
	if rec.LockedBy != nil {
		m.LockedBy = rec.LockedBy.InstanceID
	}
	if includeState && m.HasState {
		m.State = raw(row.Output)
	}
	return m, nil
}

// GetEntity returns an entity's metadata and, with includeState, its state.
// It fails with ErrEntityNotFound when the entity has no state.
func (c *Client) GetEntity(ctx context.Context, id EntityID, includeState bool) (*EntityMetadata, error) {
	if err := validateEntityID(id); err != nil {
		return nil, err
	}
	row, err := c.c.Get(ctx, id.String())
	if errors.Is(err, backend.ErrInstanceNotFound) {
		return nil, fmt.Errorf("entity %s: %w", id, ErrEntityNotFound)
	}
	if err != nil {
		return nil, err
	}
	m, err := entityMetadata(row, includeState)
	if err != nil {
		return nil, err
	}
	if !m.HasState {
		return nil, fmt.Errorf("entity %s: %w", id, ErrEntityNotFound)
	}
	return m, nil
}

// EntityQuery selects entities for QueryEntities. Zero fields do not
// filter.
type EntityQuery struct {
	// Name selects the entities of one name (case-insensitive).
	Name string
	// NamePrefix selects entities whose name starts with it.
	NamePrefix string
	// IncludeState returns each entity's state.
	IncludeState bool
	// IncludeDeleted also lists entities without state.
	IncludeDeleted bool
	// PageSize is the page length (default 100).
	PageSize          int
	ContinuationToken string
}

// EntityPage is one page of QueryEntities. ContinuationToken is empty on
// the last page.
type EntityPage struct {
	Entities          []*EntityMetadata `json:"entities"`
	ContinuationToken string            `json:"continuationToken,omitempty"`
}

// QueryEntities pages through entities in ID order.
func (c *Client) QueryEntities(ctx context.Context, q EntityQuery) (*EntityPage, error) {
	if q.Name != "" && q.NamePrefix != "" {
		return nil, fmt.Errorf("%w: entity query: Name and NamePrefix cannot both be set", ErrInvalidInput)
	}
	prefix := "@"
	switch {
	case q.Name != "":
		if strings.Contains(q.Name, "@") {
			return nil, fmt.Errorf("%w: entity name %q contains '@'", ErrInvalidEntityID, q.Name)
		}
		prefix += strings.ToLower(q.Name) + "@"
	case q.NamePrefix != "":
		prefix += strings.ToLower(q.NamePrefix)
	}
	f := backend.InstanceFilter{InstanceIDPrefix: prefix}
	if !q.IncludeDeleted {
		f.Statuses = []backend.Status{entityStatusWithState}
	}
	res, err := c.c.List(ctx, &backend.InstanceListParams{Filter: f, PageSize: q.PageSize, ContinuationToken: q.ContinuationToken})
	if err != nil {
		return nil, err
	}
	page := &EntityPage{ContinuationToken: res.ContinuationToken, Entities: make([]*EntityMetadata, 0, len(res.Instances))}
	for _, row := range res.Instances {
		m, err := entityMetadata(row, q.IncludeState)
		if err != nil {
			return nil, err
		}
		page.Entities = append(page.Entities, m)
	}
	return page, nil
}

// entityStatusWithState is the row status of an entity that has state; an
// entity without state has status Completed (see docs/entities.md).
const entityStatusWithState = backend.StatusRunning

// CleanEntityStorageResult reports what CleanEntityStorage did.
type CleanEntityStorageResult struct {
	EmptyEntitiesRemoved  int `json:"emptyEntitiesRemoved"`
	OrphanedLocksReleased int `json:"orphanedLocksReleased"`
}

// CleanEntityStorage removes entities that have no state, hold no lock and
// have no request waiting (removeEmpty), and releases locks held by
// orchestrations that have finished or no longer exist
// (releaseOrphanedLocks). A removal is conditional on the entity not having
// changed since it was read, and keeps the entity's queued messages, so it
// never loses an operation.
func (c *Client) CleanEntityStorage(ctx context.Context, removeEmpty, releaseOrphanedLocks bool) (CleanEntityStorageResult, error) {
	var res CleanEntityStorageResult
	token := ""
	for {
		page, err := c.c.List(ctx, &backend.InstanceListParams{Filter: backend.InstanceFilter{InstanceIDPrefix: "@"}, PageSize: 500, ContinuationToken: token})
		if err != nil {
			return res, err
		}
		for _, row := range page.Instances {
			rec, err := engine.DecodeEntityRecord(row)
			if err != nil {
				return res, fmt.Errorf("entity %q: record cannot be decoded: %w", row.InstanceID, err)
			}
			if h := rec.LockedBy; releaseOrphanedLocks && h != nil {
				orphaned, err := c.lockOrphaned(ctx, h.InstanceID, h.ExecutionID)
				if err != nil {
					return res, err
				}
				if orphaned {
					ev := &history.Event{Type: history.EntityLockReleased, Name: h.LockID, InstanceID: h.InstanceID, ExecutionID: h.ExecutionID}
					if err := c.c.SendEntity(ctx, row.InstanceID, ev, time.Time{}); err != nil {
						return res, err
					}
					res.OrphanedLocksReleased++
				}
				continue
			}
			if removeEmpty && len(row.Output) == 0 && rec.Idle() {
				err := c.c.PurgeEntity(ctx, row.InstanceID, row.Version)
				switch {
				case err == nil:
					res.EmptyEntitiesRemoved++
				case errors.Is(err, backend.ErrVersionConflict), errors.Is(err, backend.ErrInstanceNotFound), errors.Is(err, backend.ErrInstanceNotFinished):
					// It changed meanwhile: no longer empty, or gone already.
				default:
					return res, err
				}
			}
		}
		if page.ContinuationToken == "" {
			return res, nil
		}
		token = page.ContinuationToken
	}
}

// lockOrphaned reports whether the lock holder (instance, execution) has
// finished or no longer exists.
func (c *Client) lockOrphaned(ctx context.Context, instanceID, executionID string) (bool, error) {
	row, err := c.c.Get(ctx, instanceID)
	if errors.Is(err, backend.ErrInstanceNotFound) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	return row.Status.Finished() || (executionID != "" && row.ExecutionID != executionID), nil
}
