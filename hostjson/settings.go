package hostjson

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/taskhub/taskhub/backend"
)

// valueKind is the form a setting's value takes in host.json.
type valueKind int

const (
	kindInt      valueKind = iota // a whole number (or a string holding one)
	kindBoolean                   // true / false (or "true" / "false")
	kindTimeSpan                  // a .NET TimeSpan string
	kindSeconds                   // a whole number of seconds
	kindHubName                   // a task hub name, or %AppSetting% naming one
)

// setting is one host.json key that taskhub reads.
type setting struct {
	// name is the key as the Durable Functions documentation spells it.
	name string
	// storage marks an Azure Storage provider setting: under storageProvider
	// (Durable Functions 2.x) or directly under durableTask (1.x).
	storage bool
	kind    valueKind
	// min and max bound the value: a count for kindInt, nanoseconds for
	// kindTimeSpan and kindSeconds.
	min, max int64
	// why says where the bounds come from, for error messages.
	why string
	// field names the WorkerOptions or Config field, for docs and messages.
	field string

	setInt  func(*Config, int)
	setDur  func(*Config, time.Duration)
	setBool func(*Config, bool)
	setStr  func(*Config, string)
}

// Bounds of the settings taskhub reads. Where Durable Functions or Azure
// Storage sets a limit, it is used; the rest are taskhub's own sanity bounds.
const (
	// controlQueueBatchSizeMax: an Azure Storage queue hands out at most 32
	// messages per receive, so the Azure Storage provider cannot use more.
	controlQueueBatchSizeMax = 32
	// controlQueueBufferThresholdMax: Durable Functions refuses more than 1000.
	controlQueueBufferThresholdMax = 1000
	// controlQueueVisibilityTimeoutMin and ...Max: Durable Functions' bounds.
	controlQueueVisibilityTimeoutMin = time.Minute
	controlQueueVisibilityTimeoutMax = time.Hour
	// workItemVisibilityTimeoutMin and ...Max: an Azure Storage queue's
	// visibility timeout is 1 second to 7 days.
	workItemVisibilityTimeoutMin = time.Second
	workItemVisibilityTimeoutMax = 7 * 24 * time.Hour
	// maxQueuePollingIntervalMax: taskhub's bound (Durable Functions only
	// asks for a positive value). Longer waits only delay work enqueued by
	// other processes.
	maxQueuePollingIntervalMax = time.Hour
	// extendedSessionIdleTimeoutMax: taskhub's bound on
	// extendedSessionIdleTimeoutInSeconds (one day).
	extendedSessionIdleTimeoutMax = 24 * time.Hour
	// hubNameMinLength and hubNameMaxLength: Durable Functions' task hub
	// name rule (letters and digits, starting with a letter).
	hubNameMinLength = 3
	hubNameMaxLength = 45
)

// The .NET settings are Int32s.
const int32Max = math.MaxInt32

// settings are the keys taskhub reads, in the order of the docs table.
var settings = []*setting{
	{
		name: "hubName", kind: kindHubName, field: "Config.HubName",
		setStr: func(c *Config, v string) { c.HubName = v },
	},
	{
		name: "partitionCount", storage: true, kind: kindInt,
		min: backend.PartitionCountMin, max: backend.PartitionCountMax,
		why:    "Durable Functions' limit; fixed when the hub is created",
		field:  "WorkerOptions.PartitionCount",
		setInt: func(c *Config, v int) { c.Worker.PartitionCount = v },
	},
	{
		name: "controlQueueBatchSize", storage: true, kind: kindInt,
		min: 1, max: controlQueueBatchSizeMax,
		why:    "an Azure Storage queue returns at most 32 messages per receive",
		field:  "WorkerOptions.ControlQueueBatchSize",
		setInt: func(c *Config, v int) { c.Worker.ControlQueueBatchSize = v },
	},
	{
		name: "controlQueueBufferThreshold", storage: true, kind: kindInt,
		min: 1, max: controlQueueBufferThresholdMax,
		why:    "Durable Functions' limit",
		field:  "WorkerOptions.ControlQueueBufferThreshold",
		setInt: func(c *Config, v int) { c.Worker.ControlQueueBufferThreshold = v },
	},
	{
		name: "controlQueueVisibilityTimeout", storage: true, kind: kindTimeSpan,
		min: int64(controlQueueVisibilityTimeoutMin), max: int64(controlQueueVisibilityTimeoutMax),
		why:    "Durable Functions' limit",
		field:  "WorkerOptions.ControlQueueVisibilityTimeout",
		setDur: func(c *Config, v time.Duration) { c.Worker.ControlQueueVisibilityTimeout = v },
	},
	{
		name: "workItemQueueVisibilityTimeout", storage: true, kind: kindTimeSpan,
		min: int64(workItemVisibilityTimeoutMin), max: int64(workItemVisibilityTimeoutMax),
		why:    "an Azure Storage queue's visibility timeout is 1 second to 7 days",
		field:  "WorkerOptions.WorkItemVisibilityTimeout",
		setDur: func(c *Config, v time.Duration) { c.Worker.WorkItemVisibilityTimeout = v },
	},
	{
		name: "maxQueuePollingInterval", storage: true, kind: kindTimeSpan,
		min: 1, max: int64(maxQueuePollingIntervalMax),
		why:    "positive, as Durable Functions requires; at most an hour, taskhub's bound",
		field:  "WorkerOptions.MaxQueuePollingInterval",
		setDur: func(c *Config, v time.Duration) { c.Worker.MaxQueuePollingInterval = v },
	},
	{
		name: "maxConcurrentActivityFunctions", kind: kindInt, min: 1, max: int32Max,
		field:  "WorkerOptions.MaxConcurrentActivityFunctions",
		setInt: func(c *Config, v int) { c.Worker.MaxConcurrentActivityFunctions = v },
	},
	{
		name: "maxConcurrentOrchestratorFunctions", kind: kindInt, min: 1, max: int32Max,
		field:  "WorkerOptions.MaxConcurrentOrchestratorFunctions",
		setInt: func(c *Config, v int) { c.Worker.MaxConcurrentOrchestratorFunctions = v },
	},
	{
		name: "maxConcurrentEntityFunctions", kind: kindInt, min: 1, max: int32Max,
		field:  "WorkerOptions.MaxConcurrentEntityFunctions",
		setInt: func(c *Config, v int) { c.Worker.MaxConcurrentEntityFunctions = v },
	},
	{
		name: "extendedSessionsEnabled", kind: kindBoolean,
		field:   "WorkerOptions.DisableExtendedSessions (negated)",
		setBool: func(c *Config, v bool) { c.Worker.DisableExtendedSessions = !v },
	},
	{
		name: "extendedSessionIdleTimeoutInSeconds", kind: kindSeconds,
		min: int64(time.Second), max: int64(extendedSessionIdleTimeoutMax),
		why:    "taskhub's bound",
		field:  "WorkerOptions.ExtendedSessionIdleTimeout",
		setDur: func(c *Config, v time.Duration) { c.Worker.ExtendedSessionIdleTimeout = v },
	},
	{
		name: "maxEntityOperationBatchSize", kind: kindInt, min: 1, max: int32Max,
		why:    "1 turns batching off",
		field:  "WorkerOptions.MaxEntityOperationBatchSize",
		setInt: func(c *Config, v int) { c.Worker.MaxEntityOperationBatchSize = v },
	},
}

// Reasons given for known Durable Functions keys that taskhub ignores.
const (
	whyConnection = "taskhub keeps the hub in its own backend, not in Azure Storage"
	whyPartitions = "taskhub has a single partition manager: leases with fencing epochs"
	whyTracing    = "taskhub logs through log/slog"
	whyEventGrid  = "taskhub publishes no Event Grid notifications"
	whyVersioning = "taskhub has no orchestration versioning settings"
	whyHTTP       = "taskhub's HTTP API (package httpapi, taskhub serve) is configured by its own options"
	whyAppLease   = "taskhub has no app lease; workers share partitions through leases"
	whyGrpc       = "taskhub runs no out-of-process gRPC workers"
	whyRollback   = "taskhub always rolls back a failed entity operation, and only that operation"
	whyReorder    = "taskhub de-duplicates entity messages by sender sequence in the entity's record, with no time window"
	whyStorage    = "it tunes the Azure Storage provider, which taskhub does not use"
	whyProvider   = "taskhub uses its own backend, whichever provider is named here"
)

// ignoredTask are Durable Functions keys directly under durableTask that
// taskhub does not use, keyed in lower case. Durable Functions 1.x spelled
// several of them flat (eventGrid*, traceInputsAndOutputs, ...).
var ignoredTask = lowerKeys(map[string]string{
	"defaultVersion":                        whyVersioning,
	"versionMatchStrategy":                  whyVersioning,
	"versionFailureStrategy":                whyVersioning,
	"tracing":                               whyTracing,
	"traceInputsAndOutputs":                 whyTracing,
	"traceReplayEvents":                     whyTracing,
	"logReplayEvents":                       whyTracing,
	"httpSettings":                          whyHTTP,
	"notificationUrl":                       whyHTTP,
	"notifications":                         whyEventGrid,
	"eventGridTopicEndpoint":                whyEventGrid,
	"eventGridKeySettingName":               whyEventGrid,
	"eventGridPublishRetryCount":            whyEventGrid,
	"eventGridPublishRetryInterval":         whyEventGrid,
	"eventGridPublishRetryHttpStatus":       whyEventGrid,
	"eventGridPublishEventTypes":            whyEventGrid,
	"customLifeCycleNotificationHelperType": whyEventGrid,
	"useAppLease":                           whyAppLease,
	"appLeaseOptions":                       whyAppLease,
	"useGracefulShutdown":                   "shutdown is the program's call to Worker.Stop",
	"maxOrchestrationActions":               "taskhub does not cap actions per step",
	"storeInputsInOrchestrationHistory":     "taskhub always keeps activity inputs in the history",
	"overridableExistingInstanceStates":     "WithReusePolicy decides what scheduling does with a taken instance ID",
	"throwStatusExceptionsOnRaiseEvent":     "Client.RaiseEvent always reports a missing or finished instance as an error",
	"localRpcEndpointEnabled":               whyGrpc,
	"maxGrpcMessageSizeInBytes":             whyGrpc,
	"grpcHttpClientTimeout":                 whyGrpc,
	"rollbackEntityOperationsOnExceptions":  whyRollback,
	"entityMessageReorderWindowInMinutes":   whyReorder,
	"azureStorageConnectionStringName":      whyConnection,
})

// ignoredStorage are Azure Storage provider keys (under storageProvider,
// or flat under durableTask in 1.x) that taskhub does not use.
var ignoredStorage = lowerKeys(map[string]string{
	"type":                              whyProvider,
	"connectionName":                    whyConnection,
	"connectionStringName":              whyConnection,
	"trackingStoreConnectionName":       whyConnection,
	"trackingStoreConnectionStringName": whyConnection,
	"trackingStoreNamePrefix":           whyConnection,
	"useLegacyPartitionManagement":      whyPartitions,
	"useTablePartitionManagement":       whyPartitions,
	"partitionTableOperationTimeout":    whyPartitions,
	"fetchLargeMessagesAutomatically":   whyStorage,
	"queueClientMessageEncoding":        whyStorage,
	"useInstanceTableEtag":              whyStorage,
	"allowReplayingTerminalInstances":   whyStorage,
})

func lowerKeys(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[strings.ToLower(k)] = v
	}
	return out
}

// Settings looked up by lower-case name.
var (
	taskSettings    = map[string]*setting{}
	storageSettings = map[string]*setting{}
)

func init() {
	for _, s := range settings {
		if s.storage {
			storageSettings[strings.ToLower(s.name)] = s
		} else {
			taskSettings[strings.ToLower(s.name)] = s
		}
	}
}

// suggest returns ` (did you mean "x"?)` when key is a near miss of a
// key known at its level, or "".
func suggest(key string, storage bool) string {
	lower := strings.ToLower(key)
	var names []string
	for _, s := range settings {
		if s.storage || !storage {
			names = append(names, s.name)
		}
	}
	best, bestDist := "", 3 // suggest only within two edits
	for _, name := range names {
		if d := editDistance(lower, strings.ToLower(name)); d < bestDist {
			best, bestDist = name, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
