package partition_test

import (
	"fmt"
	"time"

	"github.com/taskhub/taskhub/backend"
	"github.com/taskhub/taskhub/internal/partition"
)

// A second worker joins a hub of four partitions that the first one holds:
// it asks for two, the owner releases what was asked, the newcomer takes them.
func ExampleBalance() {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	rows := make([]*backend.Partition, 4)
	for i := range rows {
		rows[i] = &backend.Partition{Index: i, Owner: "a", Epoch: 1, LeaseExpiresAt: now.Add(20 * time.Second)}
	}
	live := []string{"a", "b"}

	d := partition.Balance(partition.Snapshot{Now: now, Self: "b", Partitions: rows, Workers: live})
	fmt.Printf("b: target %d, requests %v\n", d.Target, d.Request)
	for _, idx := range d.Request {
		rows[idx].NextOwner = "b" // PartitionRequest
	}

	d = partition.Balance(partition.Snapshot{Now: now, Self: "a", Partitions: rows, Workers: live})
	fmt.Printf("a: target %d, owns %d, releases %v\n", d.Target, d.Owned, d.Release)
	for _, idx := range d.Release {
		rows[idx].Owner, rows[idx].LeaseExpiresAt = "", now // PartitionRelease, after draining
	}

	d = partition.Balance(partition.Snapshot{Now: now, Self: "b", Partitions: rows, Workers: live})
	fmt.Printf("b: acquires %+v\n", d.Acquire)
	// Output:
	// b: target 2, requests [0 1]
	// a: target 2, owns 4, releases [0 1]
	// b: acquires [{Partition:0 ExpectEpoch:1} {Partition:1 ExpectEpoch:1}]
}
