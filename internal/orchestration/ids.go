package orchestration

import (
	"strconv"
	"strings"

	"github.com/google/uuid"
)

// idNamespace is the UUID v5 namespace of every ID the runtime derives. It
// is fixed forever: changing it would change the IDs replay computes.
var idNamespace = uuid.MustParse("0f6f1b8e-4c7a-5d21-9e3b-7a64c2d9e815")

// derivedID is a UUID v5 over the parts. IDs must be derived, not random,
// because replay has to compute the same IDs the first run did.
func derivedID(parts ...string) string {
	return uuid.NewSHA1(idNamespace, []byte(strings.Join(parts, "\x00"))).String()
}

func guidID(instanceID, executionID string, n int64) string {
	return derivedID(instanceID, executionID, "guid", strconv.FormatInt(n, 10))
}

func continueAsNewExecutionID(instanceID, executionID string) string {
	return derivedID(instanceID, executionID, "continue-as-new")
}

func childExecutionID(instanceID, executionID string, taskID int64) string {
	return derivedID(instanceID, executionID, "suborchestration", strconv.FormatInt(taskID, 10))
}

// defaultChildID names a sub-orchestration the code did not name:
// "<parent>:<execution prefix>:<TaskID>". The execution prefix keeps the
// children of successive executions (ContinueAsNew restarts TaskIDs at 0)
// from reusing, and so resetting, one another's instances.
func defaultChildID(instanceID, executionID string, taskID int64) string {
	prefix := executionID
	if len(prefix) > 8 {
		prefix = prefix[:8]
	}
	return instanceID + ":" + prefix + ":" + strconv.FormatInt(taskID, 10)
}

// entityLockID names the critical section requested by LockEntities with
// TaskID taskID: unique per instance, execution and TaskID, the same on
// every replay, and independent of the NewGUID sequence.
func entityLockID(instanceID, executionID string, taskID int64) string {
	return derivedID(instanceID, executionID, "entity-lock", strconv.FormatInt(taskID, 10))
}
