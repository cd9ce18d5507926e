// Package partition spreads a task hub's partitions over its live workers.
//
// A hub has P control-queue partitions (1 to 16). A worker processes a
// partition only while it holds the partition's lease: a row of the
// Partitions table naming it as Owner, with an expiry (LeaseExpiresAt) and an
// Epoch, the fencing token. This package holds the rules for who should hold
// what, as one pure function, [Balance]: it reads a snapshot of the rows and
// of the live workers and says what one worker should acquire, release and
// ask for. It does no I/O and reads no clock, so every rule is tested
// exhaustively in memory (see the scenarios in testdata/ and the simulator
// in the tests). The partition manager around it does the calls.
//
// # Timings
//
// The reference defaults: a lease lasts 30 s ([LeaseDurationDefault]), its
// owner renews it every 10 s ([RenewIntervalDefault]), and every worker reads
// the table and balances every 10 s ([BalanceIntervalDefault]).
//
// # The rules
//
// W is the number of live workers (fresh heartbeat in the registry). Each
// should hold floor(P/W) or ceil(P/W) partitions; the targets add up to P, the
// extra ones going first to workers that already hold ceil(P/W) or more (so
// that a balanced hub has nobody to move), then to the smallest IDs.
//
//   - Only current leases count. A partition with no owner, or whose lease
//     has run out, is free.
//   - A free partition goes to a live worker below its target: to the worker
//     that asked for it if it was released for a hand-off, else to whoever
//     misses the most. A worker never takes a partition whose lease is
//     current, even if the owner is missing from the registry: the owner may
//     be slow rather than dead, and if it is dead the lease runs out within
//     30 s.
//   - When no free partition is left for it, a worker below target asks a
//     worker above target for one (PartitionRequest sets NextOwner), largest
//     surplus first.
//   - The owner, when it sees the request and is still above target and the
//     requester still live and short, drains the partition's work and
//     releases it; the requester then acquires it with the next epoch. An
//     owner never gives a partition away unasked: the request confirms, from
//     the requester's own reading, that the move is still wanted.
//   - A worker shutting down (Draining) releases everything and takes nothing.
//
// Balance computes one plan for the whole hub from the snapshot, and returns
// the caller's part. Workers that read the same rows therefore make moves that
// fit together: they take different free partitions and ask for different
// busy ones, so nobody relies on losing a race to be correct.
//
// # Fencing: why a stale owner cannot commit
//
// Leases are about time, and time lies: a worker can be paused for a minute,
// its clock can drift, a renewal can be slow. The guarantee that matters,
// that only one worker changes a partition's state at a time, rests on the
// epoch instead:
//
//  1. Every acquire is a compare-and-swap: it succeeds only if the epoch is
//     still the one the acquirer read, and it increments it. So a partition's
//     epochs only grow, and each epoch is granted to one acquire, one worker.
//  2. Every write that needs the partition (commit units with a Fence,
//     control-queue receive, renew and abandon, lease renew and release)
//     names the owner and epoch it holds, and the backend checks them against
//     the row atomically with the write, refusing with ErrLeaseLost when they
//     differ.
//  3. A worker whose lease was taken over therefore holds an epoch lower than
//     the row's; every write it attempts is refused, however late it wakes
//     up and whatever its clock says. If nobody took the partition over, its
//     epoch still matches and its write is accepted, which is harmless: no
//     one else has written under another epoch meanwhile.
//
// So writes to a partition are ordered by epoch and never interleave between
// two owners. Lease expiry only decides when a partition may be taken over
// (liveness); a worker that keeps processing past its expiry wastes work that
// its fenced commit will then refuse, but corrupts nothing. Control messages
// locked under an older epoch are visible again to the new owner at once.
//
// # What the partition manager must do
//
// The rules above assume the caller:
//
//   - renews every held lease before it runs out, and stops processing a
//     partition when a renewal fails or its own view of the expiry (measured
//     from before it sent the renewal, less a margin for clock skew) passes;
//   - never renews a lease that has already run out, but acquires it again:
//     PartitionRenew checks only owner and epoch, so renewing an expired
//     lease could succeed just as another worker, having read it as expired,
//     acquires it with the same expected epoch, and both would believe they
//     hold it. An acquire bumps the epoch, so one of the two loses the swap;
//   - stops processing a partition before releasing it;
//   - uses a fresh worker ID per process: a crashed worker's rows still name
//     it, and a new process reusing the ID would count those leases as its
//     own without holding them;
//   - removes its registry row when it starts draining, so the others stop
//     planning with it;
//   - treats registry rows older than the lease duration as dead. A longer
//     TTL keeps a crashed worker in the plan after its leases have run out,
//     and the partitions planned for it stay unowned until its row goes
//     stale.
//
// # Bounds
//
// With fresh reads, a joining worker gets its share in two balance rounds
// when the others read after its request (ask; release and acquire), three
// when everyone reads at once (ask; release; acquire). A graceful leave is
// absorbed in one or two rounds, as free partitions. A crash is absorbed when
// its leases run out: at most one lease duration after its last renewal. A
// requester that dies mid hand-off leaves the released partitions unowned
// until its registry row goes stale (one TTL).
package partition
