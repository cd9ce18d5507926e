// Package hostjson loads the Durable Functions settings of an Azure Functions
// host.json file into taskhub's configuration, so that an app moving from
// Durable Functions keeps its tuning.
//
// # Shapes
//
// Two layouts are recognized:
//
//   - 2.x: {"version": "2.0", "extensions": {"durableTask": {...}}}, the
//     layout of the Functions host 2.x and later. Azure Storage settings sit
//     under durableTask.storageProvider (Durable Functions 2.x and later).
//   - 1.x: {"durableTask": {...}} at the top level, the layout of the
//     Functions host 1.x.
//
// In either layout the Azure Storage settings may also sit directly under
// durableTask, as Durable Functions 1.x wrote them; setting one both ways is
// an error. A file with no durableTask section is an error, and so is a
// version "2.0" file whose durableTask is at the top level (the Functions
// host would ignore it).
//
// # What is read
//
// Keys match case-insensitively, as in the Functions host. Comments (// and
// /* */) and trailing commas are accepted, as the host accepts them, and so is
// a UTF-8 byte-order mark. Numbers and booleans may also be given as strings
// ("4", "true"), which the host's configuration binder converts too.
// Durations are .NET TimeSpan strings ("00:05:00", "1.00:00:00",
// "00:00:00.5"); a bare number is refused for them, since the host would read
// 30 as thirty days. A hubName of the form %NAME% is read from the
// environment variable NAME, as the host resolves app settings.
//
// # Keys
//
// Under durableTask (storage keys under storageProvider, or flat in 1.x):
//
//	host.json key                                   field (of Worker unless noted)       allowed
//	hubName                                         Config.HubName                       3–45 letters and digits, starting with a letter
//	storageProvider.partitionCount                  PartitionCount                       1–16
//	storageProvider.controlQueueBatchSize           ControlQueueBatchSize                1–32 (an Azure queue receive returns at most 32)
//	storageProvider.controlQueueBufferThreshold     ControlQueueBufferThreshold          1–1000
//	storageProvider.controlQueueVisibilityTimeout   ControlQueueVisibilityTimeout        00:01:00–01:00:00
//	storageProvider.workItemQueueVisibilityTimeout  WorkItemVisibilityTimeout            00:00:01–7.00:00:00
//	storageProvider.maxQueuePollingInterval         MaxQueuePollingInterval              more than 0, at most 01:00:00
//	maxConcurrentActivityFunctions                  MaxConcurrentActivityFunctions       ≥ 1
//	maxConcurrentOrchestratorFunctions              MaxConcurrentOrchestratorFunctions   ≥ 1
//	maxConcurrentEntityFunctions                    MaxConcurrentEntityFunctions         ≥ 1
//	extendedSessionsEnabled                         DisableExtendedSessions (negated)    true or false
//	extendedSessionIdleTimeoutInSeconds             ExtendedSessionIdleTimeout           1–86400 (seconds)
//	maxEntityOperationBatchSize                     MaxEntityOperationBatchSize          ≥ 1 (1 turns batching off)
//
// Only the keys that the file sets are put into Config.Worker; every other
// field stays zero, which taskhub.NewWorker reads as its documented default.
// One difference from Durable Functions follows: extended sessions are on by
// default in taskhub, so a file without extendedSessionsEnabled leaves them
// on; "extendedSessionsEnabled": false turns them off.
//
// Durable Functions keys that taskhub does not use (connection names,
// tracing, notifications, versioning, partition-manager choices, ...) give a
// Warning that names them as ignored and says why; keys that Durable
// Functions does not know either give a Warning naming them as unknown, with
// a suggestion when one is close. Keys outside the durableTask section
// (logging, functionTimeout, other extensions) belong to the Functions host
// and are not looked at.
//
// # Errors
//
// Every bad value is reported, not just the first: Load returns their
// errors.Join, and each is an *Error naming the key's JSON path as written in
// the file, its line and column, and the allowed range or form. Malformed
// JSON is one *Error with the line and column of the fault.
package hostjson

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/taskhub/taskhub"
)

// Shape is the layout a host.json file was read in.
type Shape string

const (
	// Shape2 is extensions.durableTask: the Functions host 2.x and later
	// (host.json "version": "2.0").
	Shape2 Shape = "2.x"
	// Shape1 is durableTask at the top level: the Functions host 1.x.
	Shape1 Shape = "1.x"
)

// Config is what a host.json file sets for taskhub.
type Config struct {
	// Shape is the layout the file was read in.
	Shape Shape
	// HubName is the task hub name (after %AppSetting% resolution), or ""
	// when the file names none.
	HubName string
	// Worker holds the WorkerOptions fields that the file sets; every other
	// field is zero, meaning its default. It is meant as the starting point
	// of the options passed to taskhub.NewWorker.
	Worker taskhub.WorkerOptions
}

// Warning is a key that was read but not applied: a Durable Functions
// setting that taskhub ignores, a key nobody knows, or a value that has no
// effect.
type Warning struct {
	// Key is the full JSON path as written in the file, e.g.
	// "extensions.durableTask.tracing".
	Key string
	// Line is the 1-based line of the key in the file.
	Line int
	// Message says what is wrong and what taskhub does about it.
	Message string
}

func (w Warning) String() string {
	return fmt.Sprintf("line %d: %s: %s", w.Line, w.Key, w.Message)
}

// ErrInvalid is wrapped by every *Error.
var ErrInvalid = errors.New("invalid host.json")

// Error is one problem in a host.json file.
type Error struct {
	// File is the file name when the file was read by LoadFile.
	File string
	// Key is the full JSON path of the offending key as written in the file,
	// or "" for malformed JSON and a missing section.
	Key string
	// Line and Column (1-based, in characters) locate the value or the
	// fault; 0 when the problem has no single place.
	Line, Column int
	// Message says what is wrong and what is allowed.
	Message string
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		b.WriteString(":")
	}
	if e.Line > 0 {
		fmt.Fprintf(&b, "%d:%d:", e.Line, e.Column)
	}
	if b.Len() > 0 {
		b.WriteString(" ")
	}
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Message)
	return b.String()
}

func (e *Error) Unwrap() error { return ErrInvalid }

// maxFileSize bounds what Load reads; a real host.json is a few kilobytes.
const maxFileSize = 1 << 20

// Load reads a host.json document (at most 1 MiB) and returns what it sets
// for taskhub, and the warnings about keys it did not apply. On error the
// Config is nil and the error joins one *Error per problem; the warnings
// found are still returned.
func Load(r io.Reader) (*Config, []Warning, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxFileSize+1))
	if err != nil {
		return nil, nil, fmt.Errorf("hostjson: reading: %w", err)
	}
	cfg, warns, errs := load(data, os.LookupEnv)
	return cfg, warns, joinErrors(errs)
}

// LoadFile is Load of the named file; each *Error carries the file name.
func LoadFile(path string) (*Config, []Warning, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, nil, fmt.Errorf("hostjson: reading %s: %w", path, err)
	}
	cfg, warns, errs := load(data, os.LookupEnv)
	for _, e := range errs {
		e.File = path
	}
	return cfg, warns, joinErrors(errs)
}

func joinErrors(errs []*Error) error {
	if len(errs) == 0 {
		return nil
	}
	all := make([]error, len(errs))
	for i, e := range errs {
		all[i] = e
	}
	return errors.Join(all...)
}

// loader holds the state of one Load.
type loader struct {
	src   []byte // the file, byte-order mark removed
	env   func(string) (string, bool)
	cfg   Config
	set   map[*setting]applied // settings already applied → where
	warns []Warning
	errs  []*Error
}

func load(data []byte, env func(string) (string, bool)) (*Config, []Warning, []*Error) {
	l := &loader{env: env, set: map[*setting]applied{}}
	if len(data) > maxFileSize {
		l.errs = append(l.errs, &Error{Message: fmt.Sprintf("the file is larger than %d bytes; a host.json is a few kilobytes", maxFileSize)})
		return nil, nil, l.errs
	}
	l.src = data
	if len(data) >= 3 && data[0] == 0xEF && data[1] == 0xBB && data[2] == 0xBF {
		l.src = data[3:]
	}
	root, err := parse(l.src)
	if err != nil {
		var se *syntaxError
		if errors.As(err, &se) {
			line, col := lineCol(l.src, se.offset)
			msg := "malformed JSON: " + se.msg
			if strings.HasSuffix(se.msg, "after object key:value pair") || strings.HasSuffix(se.msg, "after array element") {
				msg += " (is a comma missing before it?)"
			}
			l.errs = append(l.errs, &Error{Line: line, Column: col, Message: msg})
		} else {
			l.errs = append(l.errs, &Error{Message: "malformed JSON: " + err.Error()})
		}
		return nil, nil, l.errs
	}
	if root.kind != kindObject {
		l.fail("", root.offset, "the top level must be a JSON object, not %s", root.kind)
		return nil, nil, l.errs
	}

	section, path := l.findSection(root)
	if section != nil {
		l.readTask(path, section)
		if len(l.errs) == 0 {
			l.crossChecks()
		}
	}
	if len(l.errs) > 0 {
		return nil, l.warns, l.errs
	}
	cfg := l.cfg
	return &cfg, l.warns, nil
}

func parse(src []byte) (*node, error) {
	clean, err := stripJSONC(src)
	if err != nil {
		return nil, err
	}
	return parseTree(clean)
}

// findSection detects the shape and returns the durableTask object and its
// path, or nil after recording why there is none.
func (l *loader) findSection(root *node) (*node, string) {
	version, _ := l.unique(root, "", "version")
	extensions, extPath := l.unique(root, "", "extensions")
	top, topPath := l.unique(root, "", "durableTask")

	var nested *member
	var nestedPath string
	if extensions != nil && extensions.value.kind != kindNull {
		if extensions.value.kind != kindObject {
			l.fail(extPath, extensions.value.offset, "must be an object, not %s", extensions.value.kind)
			return nil, ""
		}
		nested, nestedPath = l.unique(extensions.value, extPath, "durableTask")
	}

	versionText := ""
	if version != nil {
		if version.value.kind == kindString {
			versionText = version.value.str
		}
		if versionText != "2.0" {
			l.warn(version.key, version.keyOffset, fmt.Sprintf(`is %s; the Functions host knows only "2.0" (and no version in 1.x files)`, describe(version.value)))
		}
	}

	switch {
	case nested != nil:
		if version == nil {
			l.warn(nestedPath, nested.keyOffset, `is the Functions 2.x layout, but the file has no "version": "2.0", which the Functions host requires`)
		}
		if top != nil {
			l.warn(topPath, top.keyOffset, "ignored: extensions.durableTask is the section read; a top-level durableTask is the Functions 1.x layout")
		}
		l.cfg.Shape = Shape2
		return l.section(nestedPath, nested.value)
	case top != nil:
		if versionText == "2.0" {
			l.fail(topPath, top.keyOffset, `is at the top level, where a version "2.0" host.json is never read; move it to extensions.durableTask`)
			return nil, ""
		}
		l.cfg.Shape = Shape1
		return l.section(topPath, top.value)
	default:
		l.errs = append(l.errs, &Error{Message: `no durableTask section: expected extensions.durableTask (the Functions 2.x and later layout, with "version": "2.0") or durableTask at the top level (the Functions 1.x layout)`})
		return nil, ""
	}
}

func (l *loader) section(path string, n *node) (*node, string) {
	switch n.kind {
	case kindObject:
		return n, path
	case kindNull:
		return nil, "" // present but empty: nothing is set
	default:
		l.fail(path, n.offset, "must be an object, not %s", n.kind)
		return nil, ""
	}
}

// unique returns the member of obj named key (case-insensitively) and its
// path, reporting a key given twice.
func (l *loader) unique(obj *node, parent, key string) (*member, string) {
	var found *member
	for i := range obj.members {
		m := &obj.members[i]
		if !strings.EqualFold(m.key, key) {
			continue
		}
		if found != nil {
			line, _ := lineCol(l.src, found.keyOffset)
			l.fail(join(parent, m.key), m.keyOffset, "given twice (first on line %d); keys match case-insensitively", line)
			continue
		}
		found = m
	}
	if found == nil {
		return nil, ""
	}
	return found, join(parent, found.key)
}

func join(parent, key string) string {
	if parent == "" {
		return key
	}
	return parent + "." + key
}

// readTask reads the members of the durableTask object.
func (l *loader) readTask(path string, obj *node) {
	seen := map[string]int{}
	for i := range obj.members {
		m := &obj.members[i]
		p := join(path, m.key)
		if l.duplicate(seen, p, m) {
			continue
		}
		lower := strings.ToLower(m.key)
		switch {
		case lower == "storageprovider":
			switch m.value.kind {
			case kindObject:
				l.readStorage(p, m.value)
			case kindNull:
			default:
				l.fail(p, m.value.offset, "must be an object, not %s", m.value.kind)
			}
		case taskSettings[lower] != nil:
			l.apply(taskSettings[lower], p, m)
		case storageSettings[lower] != nil:
			// Durable Functions 1.x: storage settings directly under durableTask.
			l.apply(storageSettings[lower], p, m)
		case ignoredTask[lower] != "":
			l.warn(p, m.keyOffset, "ignored: "+ignoredTask[lower])
		case ignoredStorage[lower] != "":
			l.warn(p, m.keyOffset, "ignored: "+ignoredStorage[lower])
		default:
			l.warn(p, m.keyOffset, "unknown key, ignored: not a Durable Functions setting"+suggest(m.key, false))
		}
	}
}

// readStorage reads the members of durableTask.storageProvider.
func (l *loader) readStorage(path string, obj *node) {
	seen := map[string]int{}
	for i := range obj.members {
		m := &obj.members[i]
		p := join(path, m.key)
		if l.duplicate(seen, p, m) {
			continue
		}
		lower := strings.ToLower(m.key)
		switch {
		case storageSettings[lower] != nil:
			l.apply(storageSettings[lower], p, m)
		case ignoredStorage[lower] != "":
			l.warn(p, m.keyOffset, "ignored: "+ignoredStorage[lower])
		case taskSettings[lower] != nil || ignoredTask[lower] != "":
			l.warn(p, m.keyOffset, "ignored: this key belongs directly under durableTask, not under storageProvider")
		default:
			l.warn(p, m.keyOffset, "unknown key, ignored: not an Azure Storage provider setting"+suggest(m.key, true))
		}
	}
}

// duplicate reports a key given twice in one object and says whether m is
// the repeat.
func (l *loader) duplicate(seen map[string]int, path string, m *member) bool {
	lower := strings.ToLower(m.key)
	if first, ok := seen[lower]; ok {
		line, _ := lineCol(l.src, first)
		l.fail(path, m.keyOffset, "given twice (first on line %d); keys match case-insensitively", line)
		return true
	}
	seen[lower] = m.keyOffset
	return false
}

// apply validates one setting's value and stores it in the Config.
func (l *loader) apply(s *setting, path string, m *member) {
	v := m.value
	if v.kind == kindNull {
		return // null leaves the default, as in the Functions host
	}
	if prev, ok := l.set[s]; ok {
		l.fail(path, v.offset, "%s is also set as %s; set it in one place", s.name, prev.path)
		return
	}
	l.set[s] = applied{path: path, keyOffset: m.keyOffset}
	switch s.kind {
	case kindInt:
		n, ok := l.integer(path, v, s)
		if ok {
			s.setInt(&l.cfg, int(n))
		}
	case kindSeconds:
		n, ok := l.integer(path, v, s)
		if ok {
			s.setDur(&l.cfg, time.Duration(n)*time.Second)
		}
	case kindBoolean:
		b, ok := l.boolean(path, v)
		if ok {
			s.setBool(&l.cfg, b)
		}
	case kindTimeSpan:
		d, ok := l.timeSpan(path, v, s)
		if ok {
			s.setDur(&l.cfg, d)
		}
	case kindHubName:
		name, ok := l.hubName(path, v)
		if ok {
			s.setStr(&l.cfg, name)
		}
	}
}

// integer reads a whole number within the setting's bounds (seconds for
// kindSeconds).
func (l *loader) integer(path string, v *node, s *setting) (int64, bool) {
	lo, hi, unit := s.min, s.max, ""
	if s.kind == kindSeconds {
		lo, hi, unit = s.min/int64(time.Second), s.max/int64(time.Second), " seconds"
	}
	allowed := rangeText(lo, hi) + unit
	if s.why != "" {
		allowed += " (" + s.why + ")"
	}
	var text string
	switch v.kind {
	case kindNumber:
		text = v.number.String()
	case kindString:
		text = strings.TrimSpace(v.str)
	default:
		l.fail(path, v.offset, "must be a whole number, not %s; allowed: %s", v.kind, allowed)
		return 0, false
	}
	n, err := strconv.ParseInt(text, 10, 64)
	if err != nil {
		if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange {
			l.fail(path, v.offset, "%s is out of range; allowed: %s", text, allowed)
		} else {
			l.fail(path, v.offset, "%s is not a whole number; allowed: %s", describe(v), allowed)
		}
		return 0, false
	}
	if n < lo || n > hi {
		l.fail(path, v.offset, "%d is out of range; allowed: %s", n, allowed)
		return 0, false
	}
	return n, true
}

func rangeText(lo, hi int64) string {
	if hi == int32Max {
		return fmt.Sprintf("at least %d", lo)
	}
	return fmt.Sprintf("%d to %d", lo, hi)
}

func (l *loader) boolean(path string, v *node) (bool, bool) {
	switch v.kind {
	case kindBool:
		return v.boolean, true
	case kindString:
		switch strings.ToLower(strings.TrimSpace(v.str)) {
		case "true":
			return true, true
		case "false":
			return false, true
		}
	}
	l.fail(path, v.offset, "%s is not a boolean; allowed: true or false", describe(v))
	return false, false
}

func (l *loader) timeSpan(path string, v *node, s *setting) (time.Duration, bool) {
	lo, hi := time.Duration(s.min), time.Duration(s.max)
	var allowed string
	if lo <= 1 {
		allowed = fmt.Sprintf("more than 00:00:00, at most %s", formatTimeSpan(hi))
	} else {
		allowed = fmt.Sprintf("%s to %s", formatTimeSpan(lo), formatTimeSpan(hi))
	}
	if s.why != "" {
		allowed += " (" + s.why + ")"
	}
	if v.kind != kindString {
		msg := "must be " + timeSpanForm + ", not " + v.kind.String()
		if v.kind == kindNumber {
			msg += fmt.Sprintf(" (the Functions host would read %s as days)", v.number)
		}
		l.fail(path, v.offset, "%s; allowed: %s", msg, allowed)
		return 0, false
	}
	d, err := parseTimeSpan(v.str)
	if err != nil {
		l.fail(path, v.offset, "%q is not a duration (%v); it must be %s", v.str, err, timeSpanForm)
		return 0, false
	}
	if d < lo || d > hi {
		l.fail(path, v.offset, "%q (%s) is out of range; allowed: %s", v.str, d, allowed)
		return 0, false
	}
	return d, true
}

// hubName reads and checks a task hub name, resolving %NAME% from the
// environment first.
func (l *loader) hubName(path string, v *node) (string, bool) {
	if v.kind != kindString {
		l.fail(path, v.offset, "must be a string, not %s", v.kind)
		return "", false
	}
	name := v.str
	source := ""
	if len(name) > 2 && name[0] == '%' && name[len(name)-1] == '%' {
		setting := name[1 : len(name)-1]
		resolved, ok := l.env(setting)
		if !ok {
			l.fail(path, v.offset, "%q names the app setting %s, which is not set in the environment", name, setting)
			return "", false
		}
		name, source = resolved, fmt.Sprintf(" (from %%%s%%)", setting)
	}
	if problem := checkHubName(name); problem != "" {
		l.fail(path, v.offset, "%q%s %s; a task hub name has %d to %d letters and digits and starts with a letter", name, source, problem, hubNameMinLength, hubNameMaxLength)
		return "", false
	}
	return name, true
}

// checkHubName applies Durable Functions' task hub name rule and says what
// breaks it, or "".
func checkHubName(name string) string {
	switch {
	case name == "":
		return "is empty"
	case len(name) < hubNameMinLength:
		return "is too short"
	case len(name) > hubNameMaxLength:
		return "is too long"
	}
	for i, r := range name {
		isLetter := r < unicode.MaxASCII && unicode.IsLetter(r)
		isDigit := r >= '0' && r <= '9'
		if i == 0 && !isLetter {
			return "does not start with a letter"
		}
		if !isLetter && !isDigit {
			return fmt.Sprintf("has %q, which is not a letter or digit", r)
		}
	}
	return ""
}

// applied records where a setting was set.
type applied struct {
	path      string
	keyOffset int
}

// crossChecks warns about combinations that Durable Functions also warns
// about or that have no effect.
func (l *loader) crossChecks() {
	w := l.cfg.Worker
	batchAt, batchSet := l.set[storageSettings["controlqueuebatchsize"]]
	bufferAt, bufferSet := l.set[storageSettings["controlqueuebufferthreshold"]]
	batch := cmp.Or(w.ControlQueueBatchSize, taskhub.ControlQueueBatchSizeDefault)
	buffer := cmp.Or(w.ControlQueueBufferThreshold, taskhub.ControlQueueBufferThresholdDefault)
	if (batchSet || bufferSet) && batch > buffer {
		at := batchAt
		if !batchSet {
			at = bufferAt
		}
		l.warn(at.path, at.keyOffset, fmt.Sprintf("controlQueueBatchSize (%d) is larger than controlQueueBufferThreshold (%d): one receive can take more messages than the buffer should hold; keep the batch size at most the threshold", batch, buffer))
	}
	if at, ok := l.set[taskSettings["extendedsessionidletimeoutinseconds"]]; ok && w.DisableExtendedSessions {
		l.warn(at.path, at.keyOffset, "has no effect: extendedSessionsEnabled is false")
	}
}

func (l *loader) warn(path string, keyOffset int, msg string) {
	line, _ := lineCol(l.src, keyOffset)
	l.warns = append(l.warns, Warning{Key: path, Line: line, Message: msg})
}

func (l *loader) fail(path string, offset int, format string, args ...any) {
	line, col := lineCol(l.src, offset)
	l.errs = append(l.errs, &Error{Key: path, Line: line, Column: col, Message: fmt.Sprintf(format, args...)})
}

// describe quotes a scalar value for messages.
func describe(v *node) string {
	switch v.kind {
	case kindString:
		return strconv.Quote(v.str)
	case kindNumber:
		return v.number.String()
	case kindBool:
		return strconv.FormatBool(v.boolean)
	default:
		return v.kind.String()
	}
}
