// Package backend defines the storage contract of a task hub.
//
// It is exported so that the backends in this module (backend/sqlite,
// backend/postgres, backend/azurestorage) can live in their own packages and
// pass one conformance suite (backend/backendtest). It is NOT meant for users
// to implement: the interface grows with the engine and carries no
// compatibility promise.
//
// The interface is partition-scoped, not a bag of primitives. Everything the
// seeds describe that is not storage specific (lease balancing, control-queue
// listeners, prefetch, per-instance batching, replay, throttles, caches, scale
// metrics, large-payload policy, poison policy) lives in the engine. A backend
// stores opaque bytes: history events, messages and instance fields are
// encoded by the engine, and the backend never decodes them.
//
// # Time
//
// Every call that compares against "now" takes it as a parameter (Now), so the
// engine's injected clock decides. Backends with a server-side clock (Azure
// queues) may ignore it and say so with a capability flag.
//
// # Writes
//
// All engine writes that must be atomic go through [Backend.CommitBatch]: a
// list of [Commit] units. A unit is all-or-nothing: its conditions (lease
// fence, instance version, create policy, work-item lock) are checked first and
// a unit whose condition fails writes nothing and reports a typed error. SQL
// backends apply a whole batch in one transaction (group commit: one fsync for
// many steps); a failed condition in one unit does not affect the others.
package backend

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"
)

// Backend is the storage of one task hub.
//
// Method names follow NounVerb(ctx, *NounVerbParams).
type Backend interface {
	// HubCreate creates the hub if it does not exist, and opens it if it does.
	// Opening a hub whose stored partition count differs from
	// params.PartitionCount fails with a *PartitionCountMismatchError.
	HubCreate(ctx context.Context, params *HubCreateParams) (*Hub, error)
	// HubGet returns the hub's metadata, or ErrHubNotFound.
	HubGet(ctx context.Context) (*Hub, error)
	// HubDelete removes the hub and everything in it.
	HubDelete(ctx context.Context) error

	// PartitionList returns every partition row, ordered by index.
	PartitionList(ctx context.Context) ([]*Partition, error)
	// PartitionAcquire takes a partition's lease if its epoch still equals
	// params.ExpectEpoch (compare-and-swap). On success the epoch becomes
	// ExpectEpoch+1, the owner params.Owner, NextOwner is cleared and the lease
	// expires at Now+Duration. A changed epoch gives ErrLeaseConflict.
	// The engine decides whether taking a partition is allowed (free, expired
	// or handed over); the backend only guarantees the swap.
	PartitionAcquire(ctx context.Context, params *PartitionAcquireParams) (*Partition, error)
	// PartitionRenew extends a lease the caller still holds (same owner and
	// epoch, not expired at Now), and returns the row so the owner sees
	// hand-off requests (NextOwner). A lost or expired lease gives
	// ErrLeaseLost: an expired lease may already be taken by another worker
	// reading it as expired, so its holder must re-acquire it instead.
	PartitionRenew(ctx context.Context, params *PartitionRenewParams) (*Partition, error)
	// PartitionRelease gives up a held lease: the owner is cleared and the
	// lease expires now; the epoch stays, and the next acquire increments it.
	// A lost lease gives ErrLeaseLost.
	PartitionRelease(ctx context.Context, params *PartitionReleaseParams) error
	// PartitionRequest records that params.Requester would like the partition
	// (NextOwner), for graceful hand-off. It does not change the owner.
	PartitionRequest(ctx context.Context, params *PartitionRequestParams) error

	// WorkerHeartbeat upserts the worker registry row.
	WorkerHeartbeat(ctx context.Context, worker *Worker) error
	// WorkerList returns the registry rows whose heartbeat is newer than
	// params.Since (all rows when Since is zero).
	WorkerList(ctx context.Context, params *WorkerListParams) ([]*Worker, error)
	// WorkerRemove deletes a worker's registry row (graceful exit).
	WorkerRemove(ctx context.Context, workerID string) error

	// ControlReceive locks and returns up to params.Max visible messages of a
	// partition's control queue, oldest first. A message is visible when its
	// VisibleAt has passed and it is not locked by the caller's epoch (locks
	// taken under an older epoch are void: a new owner sees a crashed
	// owner's messages at once). Receiving increments DequeueCount and locks
	// the message until Now+LockDuration. The caller's lease must be current,
	// else ErrLeaseLost.
	ControlReceive(ctx context.Context, params *ControlReceiveParams) (*ControlReceiveResult, error)
	// ControlRenew extends the locks of received control messages.
	ControlRenew(ctx context.Context, params *ControlRenewParams) error
	// ControlAbandon unlocks received control messages and makes them visible
	// again at params.VisibleAt (back-off). DequeueCount is kept.
	ControlAbandon(ctx context.Context, params *ControlAbandonParams) error

	// WorkItemReceive locks and returns up to params.Max visible work items
	// (competing consumers, oldest first). Each gets a fresh LockToken and
	// is invisible to others until Now+LockDuration. DequeueCount increments.
	WorkItemReceive(ctx context.Context, params *WorkItemReceiveParams) ([]*WorkItem, error)
	// WorkItemRenew extends a work item's lock; a lost lock (expired and
	// taken by another receiver, or deleted) gives ErrLockLost.
	WorkItemRenew(ctx context.Context, params *WorkItemRenewParams) error
	// WorkItemAbandon unlocks a work item and makes it visible at
	// params.VisibleAt. A lost lock gives ErrLockLost.
	WorkItemAbandon(ctx context.Context, params *WorkItemAbandonParams) error

	// CommitBatch applies commit units. The returned slice has one entry per
	// unit: nil when applied, or the condition error that refused it
	// (ErrLeaseLost, ErrVersionConflict, *InstanceExistsError, ErrLockLost).
	// The second result is a storage failure, after which no unit of the
	// batch is applied (SQL backends) or an unknown prefix is (backends
	// without transactions, see Capabilities.Transactional).
	CommitBatch(ctx context.Context, commits []*Commit) ([]error, error)

	// HistoryLoad returns the current execution's history of an instance,
	// ordered by Seq. An instance without history gives an empty result.
	HistoryLoad(ctx context.Context, instanceID string) (*History, error)
	// InstanceGet returns an instance row, or ErrInstanceNotFound.
	InstanceGet(ctx context.Context, instanceID string) (*Instance, error)
	// InstanceList pages through instance rows in InstanceID order.
	InstanceList(ctx context.Context, params *InstanceListParams) (*InstanceListResult, error)
	// InstancePurge deletes finished instances (Completed, Failed,
	// Terminated): their row, history, payloads and pending messages. With
	// params.InstanceID it purges that one instance (ErrInstanceNotFound if
	// absent, ErrInstanceNotFinished if it is not finished); otherwise every
	// finished instance matching params.Filter. Returns how many were purged.
	InstancePurge(ctx context.Context, params *InstancePurgeParams) (int, error)

	// PayloadGet returns a stored large payload (as written), or
	// ErrPayloadNotFound.
	PayloadGet(ctx context.Context, key string) ([]byte, error)

	// PoisonList returns poison records, newest first, at most limit.
	PoisonList(ctx context.Context, limit int) ([]*Poison, error)

	// QueueMetrics samples every queue's length and oldest visible message.
	QueueMetrics(ctx context.Context, params *QueueMetricsParams) (*QueueMetrics, error)

	// Capabilities tells the engine what this backend can do.
	Capabilities() Capabilities

	// Close releases the backend's resources. Safe to call twice.
	Close() error
}

// Notifier is implemented by backends that can push "a message was enqueued
// to partition P / to the work-item queue" across processes (PostgreSQL
// LISTEN/NOTIFY). The engine still polls with back-off as a fallback.
type Notifier interface {
	// Notifications delivers wake-ups until ctx ends. Partition is -1 for
	// the work-item queue.
	Notifications(ctx context.Context, fn func(Notification)) error
}

// Notification is a cross-process wake-up.
type Notification struct {
	Partition int // control-queue partition, or -1 for the work-item queue
}

// Capabilities are backend differences the engine takes into account. A
// difference is a flag here, never a second code path elsewhere.
type Capabilities struct {
	// Transactional is true when CommitBatch applies each batch atomically.
	Transactional bool
	// ServerClock is true when the backend uses its own clock for
	// visibility and lock expiry and ignores the Now parameters.
	ServerClock bool
	// MaxMessageSize is the largest Data a message may carry; larger data
	// must go through a payload. Zero means no limit.
	MaxMessageSize int
}

// Errors returned by backends. Wrap them with %w; callers test with errors.Is.
var (
	ErrHubNotFound         = errors.New("task hub not found")
	ErrLeaseConflict       = errors.New("partition lease changed hands (epoch conflict)")
	ErrLeaseLost           = errors.New("partition lease lost (stale epoch)")
	ErrLockLost            = errors.New("message lock lost")
	ErrVersionConflict     = errors.New("instance history changed since it was loaded")
	ErrInstanceNotFound    = errors.New("instance not found")
	ErrInstanceNotFinished = errors.New("instance is not finished")
	ErrPayloadNotFound     = errors.New("payload not found")
)

// PartitionCountMismatchError is returned when a hub is opened with a partition
// count other than the one it was created with.
type PartitionCountMismatchError struct {
	Hub       string
	Stored    int
	Requested int
}

func (e *PartitionCountMismatchError) Error() string {
	return fmt.Sprintf("task hub %q has %d partitions, but %d were requested: the partition count is fixed when a hub is created",
		e.Hub, e.Stored, e.Requested)
}

// InstanceExistsError is returned by a commit whose Create condition found an
// instance in a refused status.
type InstanceExistsError struct {
	InstanceID string
	Status     Status
}

func (e *InstanceExistsError) Error() string {
	return fmt.Sprintf("instance %q already exists with status %s", e.InstanceID, e.Status)
}

// Hub is a task hub's metadata row.
type Hub struct {
	Name           string
	PartitionCount int
	CreatedAt      time.Time
	// Settings is an opaque engine-owned blob (learned concurrency values
	// and the like); stored and returned as is.
	Settings []byte
}

// HubCreateParams are the parameters of Backend.HubCreate.
type HubCreateParams struct {
	PartitionCount int
	Now            time.Time
}

// Partition is one row of the Partitions table.
type Partition struct {
	Index          int
	Owner          string // worker ID; empty when free
	Epoch          int64  // fencing token; increments on every acquire
	LeaseExpiresAt time.Time
	NextOwner      string // a worker that asked for a graceful hand-off
}

// PartitionAcquireParams are the parameters of Backend.PartitionAcquire.
type PartitionAcquireParams struct {
	Partition   int
	Owner       string
	ExpectEpoch int64
	Duration    time.Duration
	Now         time.Time
}

// PartitionRenewParams are the parameters of Backend.PartitionRenew.
type PartitionRenewParams struct {
	Partition int
	Owner     string
	Epoch     int64
	Duration  time.Duration
	Now       time.Time
}

// PartitionReleaseParams are the parameters of Backend.PartitionRelease.
type PartitionReleaseParams struct {
	Partition int
	Owner     string
	Epoch     int64
	Now       time.Time
}

// PartitionRequestParams are the parameters of Backend.PartitionRequest.
type PartitionRequestParams struct {
	Partition int
	Requester string
}

// Worker is a worker registry row.
type Worker struct {
	ID          string
	Host        string
	StartedAt   time.Time
	HeartbeatAt time.Time
	Partitions  []int
	// Info is an engine-owned JSON document (throttle settings and the like).
	Info []byte
}

// WorkerListParams are the parameters of Backend.WorkerList.
type WorkerListParams struct {
	Since time.Time
}

// Fence makes a commit or call conditional on a partition lease: the unit is
// refused with ErrLeaseLost unless the partition's epoch is still Epoch and its
// owner Owner.
type Fence struct {
	Partition int
	Owner     string
	Epoch     int64
}

// ControlMessage is a message in a partition's control queue.
type ControlMessage struct {
	ID           string
	Partition    int
	InstanceID   string
	Data         []byte
	EnqueuedAt   time.Time
	VisibleAt    time.Time
	DequeueCount int
}

// ControlReceiveParams are the parameters of Backend.ControlReceive.
type ControlReceiveParams struct {
	Fence
	Max          int
	LockDuration time.Duration
	Now          time.Time
}

// ControlReceiveResult is the result of Backend.ControlReceive.
type ControlReceiveResult struct {
	Messages []*ControlMessage
	// NextVisibleAt is the earliest VisibleAt of the partition's messages that
	// are not visible yet (future timers, backed-off messages), or zero. The
	// listener sleeps no longer than that.
	NextVisibleAt time.Time
}

// ControlRenewParams are the parameters of Backend.ControlRenew.
type ControlRenewParams struct {
	Fence
	IDs          []string
	LockDuration time.Duration
	Now          time.Time
}

// ControlAbandonParams are the parameters of Backend.ControlAbandon.
type ControlAbandonParams struct {
	Fence
	IDs       []string
	VisibleAt time.Time
}

// WorkItem is a message in the hub's work-item queue (an activity to run).
type WorkItem struct {
	ID           string
	InstanceID   string
	Data         []byte
	EnqueuedAt   time.Time
	DequeueCount int
	LockToken    string
	LockedUntil  time.Time
}

// WorkItemReceiveParams are the parameters of Backend.WorkItemReceive.
type WorkItemReceiveParams struct {
	Owner        string // worker ID, for diagnostics
	Max          int
	LockDuration time.Duration
	Now          time.Time
}

// WorkItemRenewParams are the parameters of Backend.WorkItemRenew.
type WorkItemRenewParams struct {
	ID           string
	LockToken    string
	LockDuration time.Duration
	Now          time.Time
}

// WorkItemAbandonParams are the parameters of Backend.WorkItemAbandon.
type WorkItemAbandonParams struct {
	ID        string
	LockToken string
	VisibleAt time.Time
}

// NewMessage is a message to enqueue. The engine assigns IDs (unique,
// time-ordered); backends deliver messages of one queue in ID order among
// those visible.
type NewMessage struct {
	ID         string
	Partition  int // control queue partition; ignored for work items
	InstanceID string
	Data       []byte
	// VisibleAt delays delivery (durable timers, scheduled starts). Zero
	// means visible at once.
	VisibleAt time.Time
	// Lock, when set, asks to insert the message as already received by
	// the sender (eager local delivery): DequeueCount 1, locked until
	// Lock.Until by Lock.Epoch (control messages, under the sender's
	// fence) or with Lock.Token (work items). The queue row still guards
	// against a crash: the lock expires, or a newer epoch sees it.
	//
	// A work item is always inserted locked. A control message is inserted
	// locked only if it overtakes nothing (unless Lock.MayOvertake): the
	// partition holds no message that a receive under Lock.Epoch could take
	// now, and the commit sends no such message to the partition before it.
	// Otherwise (or when the backend does not support the check) it is
	// inserted as a plain message, to be received in queue order. Locked
	// reports the outcome.
	Lock *MessageLock
	// Locked is set by the commit: whether the message was inserted
	// locked. Only meaningful once the commit has succeeded.
	Locked bool
}

// MessageLock is the lock of a message inserted as already received.
type MessageLock struct {
	Epoch int64  // control messages
	Token string // work items
	Until time.Time
	// MayOvertake marks a control message whose order relative to the
	// messages waiting in the queue does not matter (the answer to a task
	// of an instance that is running): it is locked without the check.
	MayOvertake bool
}

// WorkItemLock names a received work item whose lock the commit must still
// hold. The commit deletes the work item.
type WorkItemLock struct {
	ID        string
	LockToken string
}

// InstanceCondition makes a commit conditional on the instance row: its
// Version must equal ExpectVersion (0 for an instance without a row).
type InstanceCondition struct {
	InstanceID    string
	ExpectVersion int64
}

// CreateCondition makes a commit conditional on an instance not existing in
// one of RefuseStatuses; otherwise the unit fails with *InstanceExistsError.
// An empty RefuseStatuses never refuses.
type CreateCondition struct {
	InstanceID     string
	RefuseStatuses []Status
}

// HistoryRecord is one encoded history event.
type HistoryRecord struct {
	Seq  int64
	Data []byte
}

// HistoryAppend appends events to an instance's history. When Reset is true
// the instance's existing history (any execution) is deleted first: a new
// execution starts.
type HistoryAppend struct {
	InstanceID  string
	ExecutionID string
	Reset       bool
	Events      []HistoryRecord
}

// History is an instance's current execution history.
type History struct {
	ExecutionID string
	Events      []HistoryRecord
}

// Payload is a large payload stored outside messages and rows. Keys begin with
// the owning instance ID and a slash, so a purge can remove them.
type Payload struct {
	Key        string
	InstanceID string
	Data       []byte
}

// Poison is a message that was received too many times and was set aside.
type Poison struct {
	ID           string
	Queue        string // "control" or "workitem"
	Partition    int
	InstanceID   string
	Data         []byte
	DequeueCount int
	Reason       string
	CreatedAt    time.Time
}

// Commit is one all-or-nothing unit of CommitBatch. Conditions are checked
// before any write; nil conditions are not checked.
type Commit struct {
	// Conditions.
	Fence    *Fence
	Instance *InstanceCondition
	Create   *CreateCondition
	WorkItem *WorkItemLock // deleted by the commit
	Writes   Writes
	// Now stamps EnqueuedAt of sent messages and CreatedAt of poison rows.
	Now time.Time
}

// Writes are the writes of a commit unit, applied in this order.
type Writes struct {
	Payloads       []*Payload
	History        *HistoryAppend
	InstanceUpsert *Instance
	ControlSend    []*NewMessage
	WorkSend       []*NewMessage
	// ControlDelete removes consumed control messages (requires Fence).
	ControlDelete []string
	// Poison inserts poison records; the messages they describe are removed
	// by ControlDelete or WorkItem in the same unit.
	Poison []*Poison
}

// Status is an instance's runtime status, named as in Durable Functions.
type Status string

// Runtime statuses.
const (
	StatusPending        Status = "Pending"
	StatusRunning        Status = "Running"
	StatusCompleted      Status = "Completed"
	StatusContinuedAsNew Status = "ContinuedAsNew"
	StatusFailed         Status = "Failed"
	StatusTerminated     Status = "Terminated"
	StatusSuspended      Status = "Suspended"
)

// Finished reports whether the status is terminal.
func (s Status) Finished() bool {
	return s == StatusCompleted || s == StatusFailed || s == StatusTerminated
}

// Instance is a row of the Instances table: the query model of an instance.
// Input, Output, CustomStatus and Failure are engine-encoded and opaque here.
type Instance struct {
	InstanceID       string
	Name             string
	ExecutionID      string
	Status           Status
	Input            []byte
	Output           []byte
	CustomStatus     []byte
	Failure          []byte
	CreatedAt        time.Time
	UpdatedAt        time.Time
	CompletedAt      time.Time // zero until finished
	ScheduledStartAt time.Time // zero when started at once
	ParentInstanceID string
	// Version is the number of history events of the current execution
	// that the row reflects; commits are conditional on it. An upsert with
	// Version -1 keeps the stored version (0 for a new row): a client that
	// restarts an instance rewrites the row without touching history.
	Version int64
}

// InstanceFilter selects instances. Zero fields do not filter.
type InstanceFilter struct {
	Statuses         []Status
	CreatedFrom      time.Time // inclusive
	CreatedTo        time.Time // exclusive
	Name             string    // exact orchestrator name
	InstanceIDPrefix string
	// ExcludeInstanceIDPrefix leaves out every instance whose ID starts
	// with it (byte-wise; no character is a wildcard), in listings and in
	// filtered purges. Orchestration queries exclude "@" so that they do
	// not see durable entities, whose IDs start with '@'.
	ExcludeInstanceIDPrefix string
}

// InstanceListParams are the parameters of Backend.InstanceList.
type InstanceListParams struct {
	Filter            InstanceFilter
	PageSize          int // 0 means 100
	ContinuationToken string
}

// InstanceListResult is a page of instances. ContinuationToken is empty on the
// last page.
type InstanceListResult struct {
	Instances         []*Instance
	ContinuationToken string
}

// InstancePurgeParams are the parameters of Backend.InstancePurge.
type InstancePurgeParams struct {
	InstanceID string
	Filter     InstanceFilter
	// Limit bounds a filtered purge (0 means no limit), so long purges can
	// report progress in rounds.
	Limit int
	// ExpectVersion, when greater than 0, makes the purge of InstanceID
	// conditional on the row's Version being ExpectVersion: otherwise
	// nothing is deleted and the error wraps ErrVersionConflict. The check
	// and the delete are atomic, so a commit that bumps the version
	// concurrently is never lost. The version is checked before the status,
	// so a stale version gives ErrVersionConflict even if the instance is
	// not finished (a matching version of an unfinished instance gives
	// ErrInstanceNotFinished). 0 does not check; a negative value is an
	// error.
	ExpectVersion int64
	// KeepMessages, for the purge of InstanceID, deletes only the row and
	// the history: the instance's queued messages (control messages and
	// work items) stay, and so do its payloads, which messages queued to it
	// may reference (their owner is the target instance). A durable
	// entity's queued operations must survive the removal of its empty row.
	//
	// ExpectVersion and KeepMessages apply only with InstanceID; a filtered
	// purge with either set fails without deleting anything.
	KeepMessages bool
}

// QueueMetricsParams are the parameters of Backend.QueueMetrics.
type QueueMetricsParams struct {
	Now time.Time
}

// QueueMetrics is a sample of every queue of the hub.
type QueueMetrics struct {
	Control []QueueStat // one per partition, by index
	Work    QueueStat
}

// QueueStat is one queue's length and the enqueue time of its oldest message
// that is visible now (zero when none is).
type QueueStat struct {
	Length          int
	OldestVisibleAt time.Time
	OldestEnqueued  time.Time
}

// ErrInvalidContinuationToken is returned by InstanceList for a token it did
// not issue.
var ErrInvalidContinuationToken = errors.New("invalid continuation token")

// ContinuationToken encodes the last instance ID of a page as the token of
// the next page (instance listings are in instance-ID order).
func ContinuationToken(lastInstanceID string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(lastInstanceID))
}

// ParseContinuationToken returns the instance ID a page starts after; an
// empty token starts at the beginning.
func ParseContinuationToken(token string) (string, error) {
	if token == "" {
		return "", nil
	}
	raw, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || !utf8.Valid(raw) {
		return "", fmt.Errorf("%w %q", ErrInvalidContinuationToken, token)
	}
	return string(raw), nil
}
