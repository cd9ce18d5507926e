package orchestration

// A readable JSON-lines form of histories for testdata/: one event per line,
// payloads inline as JSON, and two kinds of comment lines:
//
//	# free text
//	#! key value      a directive for the test that reads the file
//
// The binary codec of internal/history is what the engine stores; this one
// exists so recorded histories can be read, diffed and edited by hand.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/taskhub/taskhub/internal/history"
)

type jsonEvent struct {
	Seq         int64           `json:"seq"`
	Type        string          `json:"type"`
	Time        time.Time       `json:"time,omitzero"`
	TaskID      *int64          `json:"taskId,omitempty"`
	Name        string          `json:"name,omitempty"`
	InstanceID  string          `json:"instanceId,omitempty"`
	ExecutionID string          `json:"executionId,omitempty"`
	Input       json.RawMessage `json:"input,omitempty"`
	Failure     *jsonFailure    `json:"failure,omitempty"`
	FireAt      time.Time       `json:"fireAt,omitzero"`
	Status      string          `json:"status,omitempty"`
	Parent      *history.Parent `json:"parent,omitempty"`
	Timeout     string          `json:"timeout,omitempty"`
	Attempt     int32           `json:"attempt,omitempty"`
	Recurse     bool            `json:"recurse,omitempty"`
}

type jsonFailure struct {
	Type         string       `json:"type,omitempty"`
	Message      string       `json:"message"`
	Stack        string       `json:"stack,omitempty"`
	NonRetryable bool         `json:"nonRetryable,omitempty"`
	Cause        *jsonFailure `json:"cause,omitempty"`
}

func toJSONFailure(f *history.Failure) *jsonFailure {
	if f == nil {
		return nil
	}
	return &jsonFailure{Type: f.Type, Message: f.Message, Stack: f.Stack, NonRetryable: f.NonRetryable, Cause: toJSONFailure(f.Cause)}
}

func fromJSONFailure(f *jsonFailure) *history.Failure {
	if f == nil {
		return nil
	}
	return &history.Failure{Type: f.Type, Message: f.Message, Stack: f.Stack, NonRetryable: f.NonRetryable, Cause: fromJSONFailure(f.Cause)}
}

// usesTaskID lists the types whose TaskID means something, so that TaskID 0
// is written for them and left out for the others.
func usesTaskID(t history.Type) bool {
	return kindScheduledBy(t) != 0 || kindCompletedBy(t) != 0
}

func typeByName(s string) (history.Type, bool) {
	for t := history.ExecutionStarted; t.Valid(); t++ {
		if t.String() == s {
			return t, true
		}
	}
	return 0, false
}

func encodeEventJSON(e *history.Event) string {
	j := jsonEvent{
		Seq: e.Seq, Type: e.Type.String(), Time: e.Time, Name: e.Name, InstanceID: e.InstanceID,
		ExecutionID: e.ExecutionID, Input: e.Input, Failure: toJSONFailure(e.Failure), FireAt: e.FireAt,
		Status: e.Status, Parent: e.Parent, Attempt: e.Attempt, Recurse: e.Recurse,
	}
	if usesTaskID(e.Type) || e.TaskID != 0 {
		id := e.TaskID
		j.TaskID = &id
	}
	if e.Timeout != 0 {
		j.Timeout = e.Timeout.String()
	}
	b, err := json.Marshal(j)
	if err != nil {
		panic(fmt.Sprintf("encode %s: %v", e.Type, err))
	}
	return string(b)
}

func decodeEventJSON(line []byte) (*history.Event, error) {
	var j jsonEvent
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields() // a typo in a hand-edited file must not pass silently
	if err := dec.Decode(&j); err != nil {
		return nil, err
	}
	t, ok := typeByName(j.Type)
	if !ok {
		return nil, fmt.Errorf("unknown event type %q", j.Type)
	}
	e := &history.Event{
		Seq: j.Seq, Type: t, Time: j.Time, Name: j.Name, InstanceID: j.InstanceID, ExecutionID: j.ExecutionID,
		Failure: fromJSONFailure(j.Failure), FireAt: j.FireAt, Status: j.Status, Parent: j.Parent,
		Attempt: j.Attempt, Recurse: j.Recurse,
	}
	if len(j.Input) > 0 {
		var buf bytes.Buffer
		if err := json.Compact(&buf, j.Input); err != nil {
			return nil, err
		}
		e.Input = buf.Bytes()
	}
	if j.TaskID != nil {
		e.TaskID = *j.TaskID
	}
	if j.Timeout != "" {
		d, err := time.ParseDuration(j.Timeout)
		if err != nil {
			return nil, err
		}
		e.Timeout = d
	}
	return e, nil
}

// historyFile is a parsed testdata file.
type historyFile struct {
	Comments   []string
	Directives [][2]string // key, value, in file order
	Events     []*history.Event
}

func (f *historyFile) directive(key string) []string {
	var vs []string
	for _, d := range f.Directives {
		if d[0] == key {
			vs = append(vs, d[1])
		}
	}
	return vs
}

func readHistoryFile(path string) (*historyFile, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	f := &historyFile{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "":
		case strings.HasPrefix(line, "#!"):
			key, value, _ := strings.Cut(strings.TrimSpace(line[2:]), " ")
			f.Directives = append(f.Directives, [2]string{key, strings.TrimSpace(value)})
		case strings.HasPrefix(line, "#"):
			f.Comments = append(f.Comments, line)
		default:
			e, err := decodeEventJSON([]byte(line))
			if err != nil {
				return nil, fmt.Errorf("%s:%d: %w", path, n, err)
			}
			f.Events = append(f.Events, e)
		}
	}
	return f, sc.Err()
}

func writeHistoryFile(path string, header []string, events []*history.Event) error {
	var b strings.Builder
	for _, h := range header {
		b.WriteString(h)
		b.WriteByte('\n')
	}
	for _, e := range events {
		b.WriteString(encodeEventJSON(e))
		b.WriteByte('\n')
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}
