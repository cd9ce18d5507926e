package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/taskhub/taskhub"
)

// The client and operator commands print human tables by default and one
// JSON document with --json, for scripts. Times are UTC: RFC 3339 with
// seconds in tables about instances and hubs, with milliseconds in
// histories (steps are often less than a second apart); JSON keeps full
// precision.

const (
	jsonFlag        = "json"
	tableTimeFormat = "2006-01-02T15:04:05Z"
	eventTimeFormat = "2006-01-02T15:04:05.000Z"
	// detailWidth bounds payloads shown in table cells, in runes.
	detailWidth = 60
)

// addJSONFlag adds the persistent --json flag to a command.
func addJSONFlag(cmd *cobra.Command) {
	cmd.PersistentFlags().Bool(jsonFlag, false, "print one JSON document instead of a table")
}

// wantJSON reports whether --json was given.
func wantJSON(cmd *cobra.Command) bool {
	v, _ := cmd.Flags().GetBool(jsonFlag)
	return v
}

// renderJSON writes v as one indented JSON document.
func renderJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// textTable renders aligned columns. Empty cells are shown as "-", so that
// every column stays visible (and parseable by whitespace).
type textTable struct {
	tw *tabwriter.Writer
}

func newTextTable(w io.Writer, header ...string) *textTable {
	t := &textTable{tw: tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)}
	if len(header) > 0 {
		t.row(header...)
	}
	return t
}

func (t *textTable) row(cells ...string) {
	for i, c := range cells {
		if c == "" {
			c = "-"
		}
		// A tab or newline in a value would break the layout.
		c = strings.Map(func(r rune) rune {
			if r == '\t' || r == '\n' || r == '\r' {
				return ' '
			}
			return r
		}, c)
		if i > 0 {
			fmt.Fprint(t.tw, "\t")
		}
		fmt.Fprint(t.tw, c)
	}
	fmt.Fprintln(t.tw)
}

func (t *textTable) flush() error { return t.tw.Flush() }

// labelRows renders "label  value" lines; rows with an empty value are
// skipped.
type labelRows struct {
	t *textTable
}

func newLabelRows(w io.Writer) *labelRows { return &labelRows{t: newTextTable(w)} }

func (f *labelRows) add(label, value string) {
	if value != "" {
		f.t.row(label, value)
	}
}

func (f *labelRows) flush() error { return f.t.flush() }

func tableTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(tableTimeFormat)
}

func eventTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(eventTimeFormat)
}

// formatAge renders a duration for people: milliseconds below a second,
// whole seconds above.
func formatAge(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	if d < time.Second {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

// formatRaw renders a JSON payload for a table cell, shortened to limit
// runes (0: not shortened).
func formatRaw(b json.RawMessage, limit int) string {
	return shorten(strings.TrimSpace(string(b)), limit)
}

// shorten cuts s to limit runes, marking the cut with an ellipsis (limit 0:
// no limit).
func shorten(s string, limit int) string {
	if limit > 0 && utf8.RuneCountInString(s) > limit {
		r := []rune(s)
		s = string(r[:limit-1]) + "…"
	}
	return s
}

func formatInts(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}

// countOf renders "1 instance", "2 instances".
func countOf(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}

// printInstance renders an instance's status as label/value lines and,
// when the view carries one, its history as a table below.
func printInstance(w io.Writer, v *instanceView) error {
	s := v.InstanceStatus
	f := newLabelRows(w)
	f.add("Instance ID", s.InstanceID)
	f.add("Name", s.Name)
	f.add("Status", string(s.RuntimeStatus))
	f.add("Execution ID", s.ExecutionID)
	f.add("Parent", s.ParentInstanceID)
	f.add("Created", tableTime(s.CreatedAt))
	f.add("Scheduled start", tableTime(s.ScheduledStartAt))
	f.add("Last updated", tableTime(s.LastUpdatedAt))
	f.add("Completed", tableTime(s.CompletedAt))
	f.add("Input", formatRaw(s.Input, 0))
	f.add("Output", formatRaw(s.Output, 0))
	f.add("Custom status", formatRaw(s.CustomStatus, 0))
	if s.Failure != nil {
		f.add("Failure", s.Failure.Error())
	}
	if err := f.flush(); err != nil {
		return err
	}
	if v.History == nil {
		return nil
	}
	fmt.Fprintf(w, "\nHistory (%s)\n", countOf(len(v.History), "event"))
	return printHistory(w, v.History)
}

// printInstanceList renders instances as one table row each.
func printInstanceList(w io.Writer, list []*taskhub.InstanceStatus) error {
	if len(list) == 0 {
		_, err := fmt.Fprintln(w, "no instances match")
		return err
	}
	t := newTextTable(w, "INSTANCE ID", "NAME", "STATUS", "CREATED", "LAST UPDATED")
	for _, s := range list {
		t.row(s.InstanceID, s.Name, string(s.RuntimeStatus), tableTime(s.CreatedAt), tableTime(s.LastUpdatedAt))
	}
	return t.flush()
}

// taskEvents are the event types whose TaskID means something (0 is a
// valid task ID, so it cannot be told from "none" by value).
var taskEvents = map[string]bool{
	"TaskScheduled": true, "TaskCompleted": true, "TaskFailed": true,
	"TimerCreated": true, "TimerFired": true,
	"SubOrchestrationCreated": true, "SubOrchestrationCompleted": true, "SubOrchestrationFailed": true,
	"EventSent": true,
}

// printHistory renders history events as a table. Completions name the
// task they complete, looked up from its scheduling event.
func printHistory(w io.Writer, events []*taskhub.HistoryEvent) error {
	taskNames := map[int64]string{}
	for _, e := range events {
		switch e.Type {
		case "TaskScheduled", "SubOrchestrationCreated", "TimerCreated":
			name := e.Name
			if e.Type == "TimerCreated" {
				name = "(timer)"
			}
			taskNames[e.TaskID] = name
		}
	}
	t := newTextTable(w, "SEQ", "TYPE", "TIME", "NAME", "TASK", "DETAIL")
	for _, e := range events {
		name, task := e.Name, ""
		if taskEvents[e.Type] {
			task = strconv.FormatInt(e.TaskID, 10)
			if name == "" {
				name = taskNames[e.TaskID]
			}
		}
		t.row(strconv.FormatInt(e.Seq, 10), e.Type, eventTime(e.Timestamp), name, task, eventDetail(e))
	}
	return t.flush()
}

// eventDetail summarizes what an event carries: its status, target,
// payload, fire time or failure.
func eventDetail(e *taskhub.HistoryEvent) string {
	var parts []string
	if e.Status != "" {
		parts = append(parts, e.Status)
	}
	if e.InstanceID != "" {
		parts = append(parts, "instance "+e.InstanceID)
	}
	if e.Attempt > 1 {
		parts = append(parts, "attempt "+strconv.Itoa(int(e.Attempt)))
	}
	if !e.FireAt.IsZero() {
		parts = append(parts, "fires at "+eventTime(e.FireAt))
	}
	if len(e.Input) > 0 {
		parts = append(parts, formatRaw(e.Input, detailWidth))
	}
	if e.Failure != nil {
		parts = append(parts, "failure: "+shorten(e.Failure.Error(), detailWidth))
	}
	return strings.Join(parts, " ")
}
