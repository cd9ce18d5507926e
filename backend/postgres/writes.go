package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/taskhub/taskhub/backend"
)

// The writes of a batch are merged per table: the accepted units' history
// rows go in one INSERT, their instance rows in one upsert, and so on, so a
// batch of 64 steps costs a handful of statements instead of hundreds. The
// merge computes what applying the units one after the other would leave:
//
//   - an instance upserted by several units keeps the last row, and the
//     last version that is not -1 (-1 keeps what was stored before);
//   - a history reset drops the rows appended by earlier units of the same
//     instance, and deletes the stored ones;
//   - a payload written twice keeps the last data.
//
// Only a control message sent by one unit and deleted by another (or
// deleted, then sent again) cannot be merged that way; such a unit starts a
// new group, and the groups are written one after the other.

// writeGroup is the merged writes of consecutive accepted units.
type writeGroup struct {
	first, last int // unit indices, for error messages

	doneIDs, doneTokens []string // work items completed

	payloadIndex            map[string]int // by key: index in the payload arrays
	payKeys, payInsts       []string
	payData                 [][]byte
	resetIDs                []string
	history                 map[string]*historyRows
	historyOrder            []string
	instanceIndex           map[string]int
	inst                    instanceColumns
	ctlIDs, ctlInsts        []string
	ctlParts                []int32
	ctlData                 [][]byte
	ctlEnq, ctlVis          []int64
	ctlDeq                  []int32
	ctlEpoch, ctlUntil      []int64
	workDeq                 []int32
	workTokens              []string
	workUntil               []int64
	sent, deleted           map[string]bool
	ctlDelete               []string
	workIDs, workInsts      []string
	workData                [][]byte
	workEnq, workVis        []int64
	poisonIDs, poisonQueues []string
	poisonInsts, poisonWhy  []string
	poisonParts, poisonDQ   []int32
	poisonData              [][]byte
	poisonAt                []int64
	notifyParts             []int32
	notifyWork              bool
	partitionCount          int
}

type historyRows struct {
	seqs  []int64
	execs []string
	data  [][]byte
}

// instanceColumns are the instance rows of an upsert, column by column.
type instanceColumns struct {
	ids, names, execs, statuses, parents []string
	input, output, custom, failure       [][]byte
	created, updated, completed, sched   []int64
	versions                             []int64
}

func newWriteGroup(first, partitionCount int) *writeGroup {
	return &writeGroup{
		first: first, last: first,
		payloadIndex:   map[string]int{},
		history:        map[string]*historyRows{},
		instanceIndex:  map[string]int{},
		sent:           map[string]bool{},
		deleted:        map[string]bool{},
		partitionCount: partitionCount,
	}
}

// conflicts reports whether c sends a control message the group deletes,
// or deletes one it sends: the order of the two would matter.
func (g *writeGroup) conflicts(c *backend.Commit) bool {
	for _, m := range c.Writes.ControlSend {
		if g.deleted[m.ID] {
			return true
		}
	}
	for _, id := range c.Writes.ControlDelete {
		if g.sent[id] {
			return true
		}
	}
	return false
}

// add merges unit i into the group.
func (g *writeGroup) add(i int, c *backend.Commit) error {
	g.last = i
	now := ns(c.Now)
	w := &c.Writes
	if wl := c.WorkItem; wl != nil {
		g.doneIDs = append(g.doneIDs, wl.ID)
		g.doneTokens = append(g.doneTokens, wl.LockToken)
	}
	for _, p := range w.Payloads {
		if k, ok := g.payloadIndex[p.Key]; ok {
			g.payInsts[k], g.payData[k] = p.InstanceID, p.Data
			continue
		}
		g.payloadIndex[p.Key] = len(g.payKeys)
		g.payKeys = append(g.payKeys, p.Key)
		g.payInsts = append(g.payInsts, p.InstanceID)
		g.payData = append(g.payData, p.Data)
	}
	if h := w.History; h != nil {
		rows := g.history[h.InstanceID]
		if rows == nil {
			rows = &historyRows{}
			g.history[h.InstanceID] = rows
			g.historyOrder = append(g.historyOrder, h.InstanceID)
		}
		if h.Reset {
			*rows = historyRows{}
			g.resetIDs = append(g.resetIDs, h.InstanceID)
		}
		for _, e := range h.Events {
			rows.seqs = append(rows.seqs, e.Seq)
			rows.execs = append(rows.execs, h.ExecutionID)
			rows.data = append(rows.data, e.Data)
		}
	}
	if in := w.InstanceUpsert; in != nil {
		g.addInstance(in)
	}
	for _, m := range w.ControlSend {
		if m.Partition < 0 || m.Partition >= g.partitionCount {
			return fmt.Errorf("postgres: commit: unit %d: control message %q: partition %d is out of range [0, %d)",
				i, m.ID, m.Partition, g.partitionCount)
		}
		g.ctlIDs = append(g.ctlIDs, m.ID)
		g.ctlParts = append(g.ctlParts, int32(m.Partition))
		g.ctlInsts = append(g.ctlInsts, m.InstanceID)
		g.ctlData = append(g.ctlData, m.Data)
		g.ctlEnq = append(g.ctlEnq, now)
		g.ctlVis = append(g.ctlVis, visibleAt(m, now))
		// Only messages that may overtake are inserted locked here:
		// proving that any other overtakes nothing would cost this
		// pipelined commit a round trip (see NewMessage.Lock), so those
		// are received in queue order, woken by the notification.
		m.Locked = m.Lock != nil && m.Lock.MayOvertake
		var deq int32
		var epoch, until int64
		if m.Locked {
			deq, epoch, until = 1, m.Lock.Epoch, m.Lock.Until.UnixNano()
		}
		g.ctlDeq = append(g.ctlDeq, deq)
		g.ctlEpoch = append(g.ctlEpoch, epoch)
		g.ctlUntil = append(g.ctlUntil, until)
		g.sent[m.ID] = true
		if !m.Locked { // a locked message is delivered by its sender
			g.notify(int32(m.Partition))
		}
	}
	for _, m := range w.WorkSend {
		g.workIDs = append(g.workIDs, m.ID)
		g.workInsts = append(g.workInsts, m.InstanceID)
		g.workData = append(g.workData, m.Data)
		g.workEnq = append(g.workEnq, now)
		g.workVis = append(g.workVis, visibleAt(m, now))
		var deq int32
		var token string
		var until int64
		m.Locked = m.Lock != nil
		if m.Lock != nil {
			deq, token, until = 1, m.Lock.Token, m.Lock.Until.UnixNano()
		} else {
			g.notifyWork = true // a locked item is run by its sender
		}
		g.workDeq = append(g.workDeq, deq)
		g.workTokens = append(g.workTokens, token)
		g.workUntil = append(g.workUntil, until)
	}
	for _, id := range w.ControlDelete {
		g.ctlDelete = append(g.ctlDelete, id)
		g.deleted[id] = true
	}
	for _, r := range w.Poison {
		g.poisonIDs = append(g.poisonIDs, r.ID)
		g.poisonQueues = append(g.poisonQueues, r.Queue)
		g.poisonParts = append(g.poisonParts, int32(r.Partition))
		g.poisonInsts = append(g.poisonInsts, r.InstanceID)
		g.poisonData = append(g.poisonData, r.Data)
		g.poisonDQ = append(g.poisonDQ, int32(r.DequeueCount))
		g.poisonWhy = append(g.poisonWhy, r.Reason)
		g.poisonAt = append(g.poisonAt, now)
	}
	return nil
}

func (g *writeGroup) notify(p int32) {
	for _, q := range g.notifyParts {
		if q == p {
			return
		}
	}
	g.notifyParts = append(g.notifyParts, p)
}

// addInstance merges an upsert: the last row wins, with the last version
// that is not -1 (a -1 keeps the version before it).
func (g *writeGroup) addInstance(in *backend.Instance) {
	c := &g.inst
	k, ok := g.instanceIndex[in.InstanceID]
	if !ok {
		k = len(c.ids)
		g.instanceIndex[in.InstanceID] = k
		c.ids = append(c.ids, in.InstanceID)
		c.names = append(c.names, "")
		c.execs = append(c.execs, "")
		c.statuses = append(c.statuses, "")
		c.parents = append(c.parents, "")
		c.input = append(c.input, nil)
		c.output = append(c.output, nil)
		c.custom = append(c.custom, nil)
		c.failure = append(c.failure, nil)
		c.created = append(c.created, 0)
		c.updated = append(c.updated, 0)
		c.completed = append(c.completed, 0)
		c.sched = append(c.sched, 0)
		c.versions = append(c.versions, -1)
	}
	c.names[k], c.execs[k], c.statuses[k], c.parents[k] = in.Name, in.ExecutionID, string(in.Status), in.ParentInstanceID
	c.input[k], c.output[k], c.custom[k], c.failure[k] = in.Input, in.Output, in.CustomStatus, in.Failure
	c.created[k], c.updated[k] = ns(in.CreatedAt), ns(in.UpdatedAt)
	c.completed[k], c.sched[k] = ns(in.CompletedAt), ns(in.ScheduledStartAt)
	if in.Version >= 0 {
		c.versions[k] = in.Version
	}
}

// batchWrites is the pipeline of round trip 2.
type batchWrites struct {
	batch pgx.Batch
	// what names each queued statement for error messages; rows, when not
	// -1, is how many rows it must affect.
	what []string
	rows []int64
}

func (w *batchWrites) queue(what string, rows int64, sql string, args ...any) {
	w.batch.Queue(sql, args...)
	w.what = append(w.what, what)
	w.rows = append(w.rows, rows)
}

// queue appends the group's statements to w.
func (g *writeGroup) queue(w *batchWrites, q *queries) {
	units := fmt.Sprintf("unit %d", g.first)
	if g.last != g.first {
		units = fmt.Sprintf("units %d-%d", g.first, g.last)
	}
	what := func(s string) string { return units + ": " + s }
	if len(g.doneIDs) > 0 {
		// Each item was locked and its token checked: all must go.
		w.queue(what("complete work items"), int64(len(g.doneIDs)), q.workComplete, g.doneIDs, g.doneTokens)
	}
	if len(g.payKeys) > 0 {
		w.queue(what("write payloads"), -1, q.payloadPut, g.payKeys, g.payInsts, g.payData)
	}
	if len(g.resetIDs) > 0 {
		w.queue(what("reset history"), -1, q.historyReset, g.resetIDs)
	}
	var hIDs, hExecs []string
	var hSeqs []int64
	var hData [][]byte
	for _, id := range g.historyOrder {
		rows := g.history[id]
		for range rows.seqs {
			hIDs = append(hIDs, id)
		}
		hSeqs = append(hSeqs, rows.seqs...)
		hExecs = append(hExecs, rows.execs...)
		hData = append(hData, rows.data...)
	}
	if len(hIDs) > 0 {
		w.queue(what("append history"), -1, q.historyInsert, hIDs, hSeqs, hExecs, hData)
	}
	if c := &g.inst; len(c.ids) > 0 {
		w.queue(what("write instances"), -1, q.instanceUpsert,
			c.ids, c.names, c.execs, c.statuses, c.input, c.output, c.custom, c.failure,
			c.created, c.updated, c.completed, c.sched, c.parents, c.versions)
		var keep []string
		for k, v := range c.versions {
			if v < 0 {
				keep = append(keep, c.ids[k])
			}
		}
		if len(keep) > 0 {
			w.queue(what("write new instances at version 0"), -1, q.instanceNewVersion, keep)
		}
	}
	if len(g.ctlIDs) > 0 {
		w.queue(what("send control messages"), -1, q.controlInsert, g.ctlIDs, g.ctlParts, g.ctlInsts, g.ctlData, g.ctlEnq, g.ctlVis, g.ctlDeq, g.ctlEpoch, g.ctlUntil)
	}
	if len(g.workIDs) > 0 {
		w.queue(what("send work items"), -1, q.workInsert, g.workIDs, g.workInsts, g.workData, g.workEnq, g.workVis, g.workDeq, g.workTokens, g.workUntil)
	}
	if len(g.ctlDelete) > 0 {
		w.queue(what("delete control messages"), -1, q.controlDelete, g.ctlDelete)
	}
	if len(g.poisonIDs) > 0 {
		w.queue(what("write poison records"), -1, q.poisonInsert,
			g.poisonIDs, g.poisonQueues, g.poisonParts, g.poisonInsts, g.poisonData, g.poisonDQ, g.poisonWhy, g.poisonAt)
	}
}

// writes queues the writes of every unit accepted in results, the
// notifications and, when inTx, the COMMIT of the transaction that check
// began. Without inTx the pipeline is its own implicit transaction, with
// the instance locks first.
func (p *batchPlan) writes(results []error, inTx bool) (*batchWrites, error) {
	q := &p.b.q
	count := int(p.b.partitionCount.Load())
	w := &batchWrites{}
	if !inTx && len(p.lockKeys) > 0 {
		w.queue("lock instances", -1, q.lockKeys, p.lockKeys)
	}
	var (
		g           *writeGroup
		notifyParts []int32
		notifyWork  bool
	)
	flush := func() {
		if g == nil {
			return
		}
		g.queue(w, q)
		for _, part := range g.notifyParts {
			if !containsInt32(notifyParts, part) {
				notifyParts = append(notifyParts, part)
			}
		}
		notifyWork = notifyWork || g.notifyWork
	}
	for i, c := range p.commits {
		if results[i] != nil {
			continue
		}
		if g != nil && g.conflicts(c) {
			flush()
			g = nil
		}
		if g == nil {
			g = newWriteGroup(i, count)
		}
		if err := g.add(i, c); err != nil {
			return nil, err
		}
	}
	flush()
	if notifyWork {
		notifyParts = append(notifyParts, -1)
	}
	if len(notifyParts) > 0 {
		w.queue("notify", -1, q.notify, p.b.channel, notifyParts)
	}
	if inTx {
		w.queue("commit", -1, "COMMIT")
	}
	return w, nil
}

func containsInt32(s []int32, v int32) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// send runs the pipeline and reports the first failure, naming its units.
func (w *batchWrites) send(ctx context.Context, conn *pgx.Conn) error {
	if len(w.what) == 0 {
		return nil
	}
	br := conn.SendBatch(ctx, &w.batch)
	var err error
	for k, what := range w.what {
		tag, xerr := br.Exec()
		if xerr != nil {
			err = fmt.Errorf("postgres: commit: %s: %w", what, xerr)
			break
		}
		if n := w.rows[k]; n >= 0 && tag.RowsAffected() != n {
			// Cannot happen: the rows were locked and checked.
			err = fmt.Errorf("postgres: commit: %s: %d rows affected, want %d", what, tag.RowsAffected(), n)
			break
		}
	}
	if cerr := br.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("postgres: commit: %w", cerr)
	}
	return err
}
