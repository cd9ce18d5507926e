package backend

// Partition count limits and default, fixed when a hub is created.
const (
	PartitionCountMin     = 1
	PartitionCountMax     = 16
	PartitionCountDefault = 4
)

// PartitionOf returns the partition of an instance: FNV-1a 32-bit over the
// UTF-8 bytes of the instance ID, modulo the partition count. Entity instance
// IDs ("@name@key") hash the same way.
func PartitionOf(instanceID string, partitionCount int) int {
	const (
		offset32 = 2166136261
		prime32  = 16777619
	)
	h := uint32(offset32)
	for i := 0; i < len(instanceID); i++ {
		h ^= uint32(instanceID[i])
		h *= prime32
	}
	return int(h % uint32(partitionCount))
}
