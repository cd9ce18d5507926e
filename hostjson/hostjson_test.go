package hostjson

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/taskhub/taskhub"
	"github.com/taskhub/taskhub/backend/sqlite"
)

// wantMsg is an expected warning or error: its key path, its line (and
// column for errors; 0 = not checked), and a part of its message.
type wantMsg struct {
	key       string
	line, col int
	contains  string
}

// env is a fake environment for %AppSetting% resolution.
func env(vars map[string]string) func(string) (string, bool) {
	return func(name string) (string, bool) {
		v, ok := vars[name]
		return v, ok
	}
}

func checkWarnings(t *testing.T, got []Warning, want []wantMsg) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%d warnings, want %d:\n%s", len(got), len(want), warningList(got))
		return
	}
	for i, w := range want {
		g := got[i]
		if g.Key != w.key || (w.line != 0 && g.Line != w.line) || !strings.Contains(g.Message, w.contains) {
			t.Errorf("warning %d = %v\nwant key %s, line %d, message containing %q", i, g, w.key, w.line, w.contains)
		}
	}
}

func checkErrors(t *testing.T, got []*Error, want []wantMsg) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%d errors, want %d:\n%s", len(got), len(want), errorList(got))
		return
	}
	for i, w := range want {
		g := got[i]
		if g.Key != w.key || g.Line != w.line || (w.col != 0 && g.Column != w.col) || !strings.Contains(g.Message, w.contains) {
			t.Errorf("error %d = %v\nwant key %q at %d:%d, message containing %q", i, g, w.key, w.line, w.col, w.contains)
		}
	}
}

func warningList(ws []Warning) string {
	var b strings.Builder
	for _, w := range ws {
		fmt.Fprintf(&b, "  %v\n", w)
	}
	return b.String()
}

func errorList(es []*Error) string {
	var b strings.Builder
	for _, e := range es {
		fmt.Fprintf(&b, "  %v\n", e)
	}
	return b.String()
}

func readFixture(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestFixtures(t *testing.T) {
	tests := []struct {
		file     string
		env      map[string]string
		want     *Config // nil: the load must fail
		warnings []wantMsg
		errors   []wantMsg
	}{
		{
			file: "full-2x.json",
			want: &Config{
				Shape:   Shape2,
				HubName: "OrdersHub2",
				Worker: taskhub.WorkerOptions{
					PartitionCount:                     8,
					ControlQueueBatchSize:              16,
					ControlQueueBufferThreshold:        128,
					ControlQueueVisibilityTimeout:      150 * time.Second,
					WorkItemVisibilityTimeout:          10 * time.Minute,
					MaxQueuePollingInterval:            5 * time.Second,
					MaxConcurrentActivityFunctions:     12,
					MaxConcurrentOrchestratorFunctions: 7,
					ExtendedSessionIdleTimeout:         45 * time.Second,
					MaxConcurrentEntityFunctions:       3,
					MaxEntityOperationBatchSize:        5000,
				},
			},
		},
		{
			file: "full-1x.json",
			want: &Config{
				Shape:   Shape1,
				HubName: "LegacyHub",
				Worker: taskhub.WorkerOptions{
					PartitionCount:                     2,
					ControlQueueBatchSize:              32,
					ControlQueueBufferThreshold:        64,
					ControlQueueVisibilityTimeout:      time.Minute,
					WorkItemVisibilityTimeout:          time.Hour,
					MaxQueuePollingInterval:            1500 * time.Millisecond,
					MaxConcurrentActivityFunctions:     4,
					MaxConcurrentOrchestratorFunctions: 2,
					DisableExtendedSessions:            true,
				},
			},
			warnings: []wantMsg{
				{"durableTask.azureStorageConnectionStringName", 13, 0, "ignored: taskhub keeps the hub in its own backend"},
				{"durableTask.logReplayEvents", 14, 0, "ignored: taskhub logs through log/slog"},
			},
		},
		{
			file: "unknown-keys.json",
			want: &Config{Shape: Shape2, HubName: "TypoHub"},
			warnings: []wantMsg{
				{"extensions.durableTask.maxConcurentActivityFunctions", 6, 0, `unknown key, ignored: not a Durable Functions setting (did you mean "maxConcurrentActivityFunctions"?)`},
				{"extensions.durableTask.frobnicate", 7, 0, "unknown key, ignored: not a Durable Functions setting"},
				{"extensions.durableTask.storageProvider.partitonCount", 9, 0, `unknown key, ignored: not an Azure Storage provider setting (did you mean "partitionCount"?)`},
				{"extensions.durableTask.storageProvider.colour", 10, 0, "unknown key, ignored"},
				{"extensions.durableTask.storageProvider.hubName", 11, 0, "belongs directly under durableTask, not under storageProvider"},
			},
		},
		{
			file: "ignored-keys.json",
			want: &Config{Shape: Shape2, HubName: "MyTaskHub", Worker: taskhub.WorkerOptions{PartitionCount: 4}},
			warnings: []wantMsg{
				{"extensions.durableTask.defaultVersion", 6, 0, "ignored: taskhub has no orchestration versioning"},
				{"extensions.durableTask.versionMatchStrategy", 7, 0, "ignored: taskhub has no orchestration versioning"},
				{"extensions.durableTask.storageProvider.connectionStringName", 9, 0, "ignored: taskhub keeps the hub in its own backend"},
				{"extensions.durableTask.storageProvider.trackingStoreConnectionStringName", 10, 0, "ignored: taskhub keeps the hub in its own backend"},
				{"extensions.durableTask.storageProvider.useTablePartitionManagement", 11, 0, "ignored: taskhub has a single partition manager"},
				{"extensions.durableTask.tracing", 14, 0, "ignored: taskhub logs through log/slog"},
				{"extensions.durableTask.notifications", 15, 0, "ignored: taskhub publishes no Event Grid notifications"},
				{"extensions.durableTask.useAppLease", 16, 0, "ignored: taskhub has no app lease"},
				{"extensions.durableTask.useGracefulShutdown", 17, 0, "ignored"},
				{"extensions.durableTask.maxOrchestrationActions", 18, 0, "ignored"},
			},
		},
		{
			file: "out-of-range.json",
			errors: []wantMsg{
				{"extensions.durableTask.hubName", 5, 18, `"9lives" does not start with a letter; a task hub name has 3 to 45 letters and digits`},
				{"extensions.durableTask.storageProvider.partitionCount", 7, 27, "17 is out of range; allowed: 1 to 16"},
				{"extensions.durableTask.storageProvider.controlQueueBatchSize", 8, 34, "33 is out of range; allowed: 1 to 32 (an Azure Storage queue returns at most 32 messages per receive)"},
				{"extensions.durableTask.storageProvider.controlQueueBufferThreshold", 9, 40, "0 is out of range; allowed: 1 to 1000"},
				{"extensions.durableTask.storageProvider.controlQueueVisibilityTimeout", 10, 42, `"00:00:30" (30s) is out of range; allowed: 00:01:00 to 01:00:00`},
				{"extensions.durableTask.storageProvider.workItemQueueVisibilityTimeout", 11, 43, `"8.00:00:00" (192h0m0s) is out of range; allowed: 00:00:01 to 7.00:00:00`},
				{"extensions.durableTask.storageProvider.maxQueuePollingInterval", 12, 36, `"02:00:00" (2h0m0s) is out of range; allowed: more than 00:00:00, at most 01:00:00`},
				{"extensions.durableTask.maxConcurrentActivityFunctions", 14, 41, "0 is out of range; allowed: at least 1"},
				{"extensions.durableTask.maxConcurrentOrchestratorFunctions", 15, 45, "-3 is out of range; allowed: at least 1"},
				{"extensions.durableTask.maxConcurrentEntityFunctions", 16, 39, "2.5 is not a whole number; allowed: at least 1"},
				{"extensions.durableTask.extendedSessionsEnabled", 17, 34, `"sometimes" is not a boolean; allowed: true or false`},
				{"extensions.durableTask.extendedSessionIdleTimeoutInSeconds", 18, 46, "0 is out of range; allowed: 1 to 86400 seconds"},
				{"extensions.durableTask.maxEntityOperationBatchSize", 19, 38, "99999999999 is out of range; allowed: at least 1 (1 turns batching off)"},
			},
		},
		{
			file: "bad-durations.json",
			errors: []wantMsg{
				{"extensions.durableTask.storageProvider.controlQueueVisibilityTimeout", 6, 42, "not a number (the Functions host would read 300 as days)"},
				{"extensions.durableTask.storageProvider.workItemQueueVisibilityTimeout", 7, 43, `"5 minutes" is not a duration (expected the form hh:mm:ss)`},
				{"extensions.durableTask.storageProvider.maxQueuePollingInterval", 8, 36, `"00:61:00" is not a duration (minutes 61 out of range 0–59)`},
			},
		},
		{
			file: "comments.json",
			env:  map[string]string{"HUB_NAME": "EnvHub"},
			want: &Config{
				Shape:   Shape2,
				HubName: "EnvHub",
				Worker:  taskhub.WorkerOptions{PartitionCount: 6, MaxQueuePollingInterval: 10 * time.Second},
			},
			warnings: []wantMsg{
				{"extensions.durableTask.tracing", 14, 0, "ignored"},
			},
		},
		{
			file: "malformed.json",
			errors: []wantMsg{
				{"", 6, 7, `malformed JSON: invalid character '"' after object key:value pair (is a comma missing before it?)`},
			},
		},
		{
			file: "neither.json",
			errors: []wantMsg{
				{"", 0, 0, `no durableTask section: expected extensions.durableTask (the Functions 2.x and later layout, with "version": "2.0") or durableTask at the top level (the Functions 1.x layout)`},
			},
		},
		{
			file: "toplevel-in-2x.json",
			errors: []wantMsg{
				{"durableTask", 3, 3, `is at the top level, where a version "2.0" host.json is never read; move it to extensions.durableTask`},
			},
		},
		{
			file: "set-twice.json",
			errors: []wantMsg{
				{"extensions.durableTask.storageProvider.PartitionCount", 6, 46, "partitionCount is also set as extensions.durableTask.partitionCount; set it in one place"},
				{"extensions.durableTask.HUBNAME", 8, 7, "given twice (first on line 7); keys match case-insensitively"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			cfg, warns, errs := load(readFixture(t, tt.file), env(tt.env))
			if tt.want == nil && cfg != nil {
				t.Errorf("config = %+v, want nil (a failed load)", cfg)
			}
			if tt.want != nil {
				if cfg == nil {
					t.Fatalf("load failed:\n%s", errorList(errs))
				}
				if !reflect.DeepEqual(cfg, tt.want) {
					t.Errorf("config\n got %+v\nwant %+v", *cfg, *tt.want)
				}
			}
			checkWarnings(t, warns, tt.warnings)
			checkErrors(t, errs, tt.errors)
		})
	}
}

// TestFixturesMakeValidWorkers hands the loaded options to taskhub.NewWorker,
// which validates them and fills in the defaults for what the file left out.
func TestFixturesMakeValidWorkers(t *testing.T) {
	be, err := sqlite.Open(filepath.Join(t.TempDir(), "hub.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.Close() })
	for _, file := range []string{"full-2x.json", "full-1x.json", "ignored-keys.json"} {
		cfg, _, err := LoadFile(filepath.Join("testdata", file))
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if _, err := taskhub.NewWorker(be, taskhub.NewRegistry(), cfg.Worker); err != nil {
			t.Errorf("%s: NewWorker refused the loaded options: %v", file, err)
		}
	}
}

// loadString runs the loader on an inline document with an empty
// environment.
func loadString(doc string) (*Config, []Warning, []*Error) {
	return load([]byte(doc), env(nil))
}

func TestShapes(t *testing.T) {
	tests := []struct {
		name      string
		doc       string
		wantShape Shape // "" when the load must fail
		warnings  []wantMsg
		errors    []wantMsg
	}{
		{
			name:      "2.x without version",
			doc:       `{"extensions": {"durableTask": {}}}`,
			wantShape: Shape2,
			warnings:  []wantMsg{{"extensions.durableTask", 1, 0, `no "version": "2.0", which the Functions host requires`}},
		},
		{
			name:      "unknown version",
			doc:       `{"version": "3.0", "extensions": {"durableTask": {}}}`,
			wantShape: Shape2,
			warnings:  []wantMsg{{"version", 1, 0, `is "3.0"; the Functions host knows only "2.0"`}},
		},
		{
			name:      "version as a number",
			doc:       `{"Version": 2.0, "extensions": {"durableTask": {}}}`,
			wantShape: Shape2,
			warnings:  []wantMsg{{"Version", 1, 0, `is 2.0; the Functions host knows only "2.0"`}},
		},
		{
			name:      "1.x with other 1.x sections",
			doc:       `{"durableTask": {"hubName": "Abc"}, "queues": {}, "http": {}}`,
			wantShape: Shape1,
		},
		{
			name:      "both layouts: extensions wins",
			doc:       "{\"version\": \"2.0\",\n\"durableTask\": {},\n\"extensions\": {\"durableTask\": {}}}",
			wantShape: Shape2,
			warnings:  []wantMsg{{"durableTask", 2, 0, "ignored: extensions.durableTask is the section read"}},
		},
		{
			name:      "keys match case-insensitively",
			doc:       `{"VERSION": "2.0", "Extensions": {"DURABLETASK": {"StorageProvider": {"PARTITIONCOUNT": 3}}}}`,
			wantShape: Shape2,
		},
		{
			name:      "null section",
			doc:       `{"version": "2.0", "extensions": {"durableTask": null}}`,
			wantShape: Shape2,
		},
		{
			name:   "section is not an object",
			doc:    `{"version": "2.0", "extensions": {"durableTask": [1]}}`,
			errors: []wantMsg{{"extensions.durableTask", 1, 50, "must be an object, not an array"}},
		},
		{
			name:   "extensions is not an object",
			doc:    `{"version": "2.0", "extensions": "durableTask"}`,
			errors: []wantMsg{{"extensions", 1, 34, "must be an object, not a string"}},
		},
		{
			name:   "storageProvider is not an object",
			doc:    `{"version": "2.0", "extensions": {"durableTask": {"storageProvider": 4}}}`,
			errors: []wantMsg{{"extensions.durableTask.storageProvider", 1, 70, "must be an object, not a number"}},
		},
		{
			name:   "top level is not an object",
			doc:    `["durableTask"]`,
			errors: []wantMsg{{"", 1, 1, "the top level must be a JSON object, not an array"}},
		},
		{
			name:   "empty file",
			doc:    "",
			errors: []wantMsg{{"", 1, 1, "malformed JSON: unexpected end of JSON input"}},
		},
		{
			name:   "extensions given twice",
			doc:    "{\"extensions\": {},\n\"Extensions\": {}}",
			errors: []wantMsg{{"Extensions", 2, 1, "given twice (first on line 1)"}, {"", 0, 0, "no durableTask section"}},
		},
		{
			name:   "unclosed comment",
			doc:    "{\"durableTask\": {}\n/* the end",
			errors: []wantMsg{{"", 2, 1, "malformed JSON: block comment /* is never closed"}},
		},
		{
			name:   "text after the object",
			doc:    `{"durableTask": {}} {}`,
			errors: []wantMsg{{"", 1, 21, "malformed JSON: invalid character '{' after top-level value"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, warns, errs := loadString(tt.doc)
			switch {
			case tt.wantShape == "" && cfg != nil:
				t.Errorf("config = %+v, want a failed load", cfg)
			case tt.wantShape != "" && cfg == nil:
				t.Errorf("load failed:\n%s", errorList(errs))
			case tt.wantShape != "" && cfg.Shape != tt.wantShape:
				t.Errorf("shape = %q, want %q", cfg.Shape, tt.wantShape)
			}
			checkWarnings(t, warns, tt.warnings)
			checkErrors(t, errs, tt.errors)
		})
	}
}

// section wraps durableTask settings in a 2.x document.
func section(body string) string {
	return `{"version": "2.0", "extensions": {"durableTask": {` + body + `}}}`
}

func TestValues(t *testing.T) {
	tests := []struct {
		name     string
		body     string // members of durableTask
		want     *Config
		warnings []wantMsg
		errors   []wantMsg
	}{
		{
			name: "numbers and booleans as strings, as the host's binder converts them",
			body: `"maxConcurrentActivityFunctions": " 20 ", "extendedSessionsEnabled": "False", "storageProvider": {"partitionCount": "3"}`,
			want: &Config{Shape: Shape2, Worker: taskhub.WorkerOptions{MaxConcurrentActivityFunctions: 20, DisableExtendedSessions: true, PartitionCount: 3}},
		},
		{
			name: "extendedSessionsEnabled true keeps taskhub's default",
			body: `"extendedSessionsEnabled": true`,
			want: &Config{Shape: Shape2},
		},
		{
			name: "null leaves the default",
			body: `"hubName": null, "maxConcurrentActivityFunctions": null, "storageProvider": {"partitionCount": null}`,
			want: &Config{Shape: Shape2},
		},
		{
			name: "storage settings flat under durableTask (Durable Functions 1.x)",
			body: `"partitionCount": 5, "controlQueueVisibilityTimeout": "00:03:00"`,
			want: &Config{Shape: Shape2, Worker: taskhub.WorkerOptions{PartitionCount: 5, ControlQueueVisibilityTimeout: 3 * time.Minute}},
		},
		{
			name: "bounds are inclusive",
			body: `"extendedSessionIdleTimeoutInSeconds": 86400, "storageProvider": {"partitionCount": 16, "controlQueueBatchSize": 1, "controlQueueBufferThreshold": 1000,
				"controlQueueVisibilityTimeout": "01:00:00", "workItemQueueVisibilityTimeout": "7.00:00:00", "maxQueuePollingInterval": "00:00:00.0000001"}`,
			want: &Config{Shape: Shape2, Worker: taskhub.WorkerOptions{
				ExtendedSessionIdleTimeout: 24 * time.Hour, PartitionCount: 16, ControlQueueBatchSize: 1, ControlQueueBufferThreshold: 1000,
				ControlQueueVisibilityTimeout: time.Hour, WorkItemVisibilityTimeout: 7 * 24 * time.Hour, MaxQueuePollingInterval: 100 * time.Nanosecond,
			}},
			warnings: []wantMsg{},
		},
		{
			name: "wrong JSON types",
			body: `"maxConcurrentActivityFunctions": [4], "extendedSessionsEnabled": 1, "hubName": 42, "extendedSessionIdleTimeoutInSeconds": "00:00:30"`,
			errors: []wantMsg{
				{"extensions.durableTask.maxConcurrentActivityFunctions", 1, 0, "must be a whole number, not an array; allowed: at least 1"},
				{"extensions.durableTask.extendedSessionsEnabled", 1, 0, "1 is not a boolean"},
				{"extensions.durableTask.hubName", 1, 0, "must be a string, not a number"},
				{"extensions.durableTask.extendedSessionIdleTimeoutInSeconds", 1, 0, `"00:00:30" is not a whole number; allowed: 1 to 86400 seconds`},
			},
		},
		{
			name:   "a number past int64",
			body:   `"maxConcurrentActivityFunctions": 99999999999999999999`,
			errors: []wantMsg{{"extensions.durableTask.maxConcurrentActivityFunctions", 1, 0, "99999999999999999999 is out of range; allowed: at least 1"}},
		},
		{
			name:   "a negative duration",
			body:   `"storageProvider": {"maxQueuePollingInterval": "-00:00:05"}`,
			errors: []wantMsg{{"extensions.durableTask.storageProvider.maxQueuePollingInterval", 1, 0, `"-00:00:05" (-5s) is out of range; allowed: more than 00:00:00`}},
		},
		{
			name:   "24:00:00 is refused rather than read as 24 days",
			body:   `"storageProvider": {"workItemQueueVisibilityTimeout": "24:00:00"}`,
			errors: []wantMsg{{"extensions.durableTask.storageProvider.workItemQueueVisibilityTimeout", 1, 0, "hours 24 out of range 0–23 (write one day as 1.00:00:00)"}},
		},
		{
			name:     "entity settings apply to the worker; 1 turns batching off",
			body:     `"maxConcurrentEntityFunctions": "6", "maxEntityOperationBatchSize": 1`,
			want:     &Config{Shape: Shape2, Worker: taskhub.WorkerOptions{MaxConcurrentEntityFunctions: 6, MaxEntityOperationBatchSize: 1}},
			warnings: []wantMsg{},
		},
		{
			name: "entity settings taskhub has no use for are ignored with the reason",
			body: "\"rollbackEntityOperationsOnExceptions\": false,\n\"entityMessageReorderWindowInMinutes\": 30",
			want: &Config{Shape: Shape2},
			warnings: []wantMsg{
				{"extensions.durableTask.rollbackEntityOperationsOnExceptions", 1, 0, "ignored: taskhub always rolls back a failed entity operation, and only that operation"},
				{"extensions.durableTask.entityMessageReorderWindowInMinutes", 2, 0, "ignored: taskhub de-duplicates entity messages by sender sequence"},
			},
		},
		{
			name: "batch size above the buffer threshold is a warning, as in Durable Functions",
			body: `"storageProvider": {"controlQueueBatchSize": 20, "controlQueueBufferThreshold": 10}`,
			want: &Config{Shape: Shape2, Worker: taskhub.WorkerOptions{ControlQueueBatchSize: 20, ControlQueueBufferThreshold: 10}},
			warnings: []wantMsg{
				{"extensions.durableTask.storageProvider.controlQueueBatchSize", 1, 0, "controlQueueBatchSize (20) is larger than controlQueueBufferThreshold (10)"},
			},
		},
		{
			name: "a low buffer threshold is compared with the default batch size",
			body: `"storageProvider": {"controlQueueBufferThreshold": 8}`,
			want: &Config{Shape: Shape2, Worker: taskhub.WorkerOptions{ControlQueueBufferThreshold: 8}},
			warnings: []wantMsg{
				{"extensions.durableTask.storageProvider.controlQueueBufferThreshold", 1, 0, "controlQueueBatchSize (32) is larger than controlQueueBufferThreshold (8)"},
			},
		},
		{
			name: "idle timeout without extended sessions has no effect",
			body: `"extendedSessionsEnabled": false, "extendedSessionIdleTimeoutInSeconds": 60`,
			want: &Config{Shape: Shape2, Worker: taskhub.WorkerOptions{DisableExtendedSessions: true, ExtendedSessionIdleTimeout: time.Minute}},
			warnings: []wantMsg{
				{"extensions.durableTask.extendedSessionIdleTimeoutInSeconds", 1, 0, "has no effect: extendedSessionsEnabled is false"},
			},
		},
		{
			name: "another storage provider's type",
			body: `"storageProvider": {"type": "mssql"}`,
			want: &Config{Shape: Shape2},
			warnings: []wantMsg{
				{"extensions.durableTask.storageProvider.type", 1, 0, "ignored: taskhub uses its own backend"},
			},
		},
		{
			name:   "a key set twice under storageProvider",
			body:   `"storageProvider": {"controlQueueBatchSize": 8, "ControlQueueBatchSize": 9}`,
			errors: []wantMsg{{"extensions.durableTask.storageProvider.ControlQueueBatchSize", 1, 0, "given twice (first on line 1)"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, warns, errs := loadString(section(tt.body))
			if tt.want == nil && cfg != nil {
				t.Errorf("config = %+v, want a failed load", cfg)
			}
			if tt.want != nil {
				if cfg == nil {
					t.Fatalf("load failed:\n%s", errorList(errs))
				}
				if !reflect.DeepEqual(cfg, tt.want) {
					t.Errorf("config\n got %+v\nwant %+v", *cfg, *tt.want)
				}
			}
			checkWarnings(t, warns, tt.warnings)
			checkErrors(t, errs, tt.errors)
		})
	}
}

func TestHubName(t *testing.T) {
	vars := map[string]string{"GOOD": "FromEnv1", "BAD": "from-env", "EMPTY": ""}
	tests := []struct {
		value   string
		want    string // "" when it must be refused
		wantErr string
	}{
		{value: "MyTaskHub", want: "MyTaskHub"},
		{value: "abc", want: "abc"},
		{value: "A23456789012345678901234567890123456789012345", want: "A23456789012345678901234567890123456789012345"}, // 45
		{value: "%GOOD%", want: "FromEnv1"},
		{value: "ab", wantErr: `"ab" is too short`},
		{value: "A234567890123456789012345678901234567890123456", wantErr: "is too long"}, // 46
		{value: "", wantErr: `"" is empty`},
		{value: "1Hub", wantErr: "does not start with a letter"},
		{value: "My-Hub", wantErr: `has '-', which is not a letter or digit`},
		{value: "My Hub", wantErr: `has ' ', which is not a letter or digit`},
		{value: "Hübner", wantErr: `has 'ü', which is not a letter or digit`},
		{value: "Ünter", wantErr: "does not start with a letter"},
		{value: "%MISSING%", wantErr: `"%MISSING%" names the app setting MISSING, which is not set in the environment`},
		{value: "%BAD%", wantErr: `"from-env" (from %BAD%) has '-'`},
		{value: "%EMPTY%", wantErr: `"" (from %EMPTY%) is empty`},
		{value: "%%", wantErr: `"%%" is too short`}, // too short to name an app setting
	}
	for _, tt := range tests {
		cfg, _, errs := load([]byte(section(`"hubName": "`+tt.value+`"`)), env(vars))
		if tt.want != "" {
			if cfg == nil {
				t.Errorf("hubName %q refused:\n%s", tt.value, errorList(errs))
			} else if cfg.HubName != tt.want {
				t.Errorf("hubName %q: HubName = %q, want %q", tt.value, cfg.HubName, tt.want)
			}
			continue
		}
		if len(errs) != 1 || errs[0].Key != "extensions.durableTask.hubName" || !strings.Contains(errs[0].Message, tt.wantErr) {
			t.Errorf("hubName %q: errors\n%s\nwant one on extensions.durableTask.hubName containing %q", tt.value, errorList(errs), tt.wantErr)
		}
		if cfg != nil {
			t.Errorf("hubName %q: config returned with an error", tt.value)
		}
	}
}

func TestByteOrderMark(t *testing.T) {
	doc := append([]byte{0xEF, 0xBB, 0xBF}, "{\"durableTask\": {\"partitionCount\": 0}}"...)
	_, _, errs := load(doc, env(nil))
	// The mark is not a character of the file: column 36 is the 0.
	checkErrors(t, errs, []wantMsg{{"durableTask.partitionCount", 1, 36, "0 is out of range"}})
}

func TestLoadFile(t *testing.T) {
	path := filepath.Join("testdata", "out-of-range.json")
	cfg, _, err := LoadFile(path)
	if cfg != nil {
		t.Errorf("config = %+v, want nil", cfg)
	}
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("err = %v, want it to wrap ErrInvalid", err)
	}
	var first *Error
	if !errors.As(err, &first) || first.File != path {
		t.Fatalf("errors.As found %+v, want an *Error with File %q", first, path)
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != 13 {
		t.Errorf("%d error lines, want 13 (every problem, not just the first):\n%v", len(lines), err)
	}
	wantFirst := path + `:5:18: extensions.durableTask.hubName: "9lives" does not start with a letter`
	if !strings.HasPrefix(lines[0], wantFirst) {
		t.Errorf("first line = %q, want it to start with %q", lines[0], wantFirst)
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, path+":") {
			t.Errorf("line %q does not start with the file name", l)
		}
	}

	cfg, warns, err := LoadFile(filepath.Join("testdata", "full-2x.json"))
	if err != nil || cfg == nil || cfg.HubName != "OrdersHub2" || cfg.Worker.MaxConcurrentEntityFunctions != 3 || len(warns) != 0 {
		t.Errorf("LoadFile(full-2x.json) = %+v, %v, %v", cfg, warns, err)
	}

	_, _, err = LoadFile(filepath.Join("testdata", "no-such-file.json"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: err = %v, want fs.ErrNotExist", err)
	}
}

func TestLoadReadsTheEnvironment(t *testing.T) {
	t.Setenv("TASKHUB_HOSTJSON_TEST_HUB", "EnvironmentHub")
	cfg, _, err := Load(strings.NewReader(section(`"hubName": "%TASKHUB_HOSTJSON_TEST_HUB%"`)))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HubName != "EnvironmentHub" {
		t.Errorf("HubName = %q, want EnvironmentHub", cfg.HubName)
	}
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("disk on fire") }

func TestLoadReadError(t *testing.T) {
	_, _, err := Load(failingReader{})
	if err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Errorf("err = %v, want the read error", err)
	}
	if errors.Is(err, ErrInvalid) {
		t.Errorf("a read error is not an invalid file: %v", err)
	}
}

func TestTooLarge(t *testing.T) {
	doc := section(`"hubName": "Big"`) + strings.Repeat(" ", maxFileSize)
	cfg, _, err := Load(strings.NewReader(doc))
	if cfg != nil || err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("Load(%d bytes) = %v, %v; want a size error", len(doc), cfg, err)
	}
}

func TestErrorString(t *testing.T) {
	tests := []struct {
		err  Error
		want string
	}{
		{Error{File: "host.json", Key: "a.b", Line: 3, Column: 7, Message: "bad"}, "host.json:3:7: a.b: bad"},
		{Error{Key: "a.b", Line: 3, Column: 7, Message: "bad"}, "3:7: a.b: bad"},
		{Error{File: "host.json", Message: "no section"}, "host.json: no section"},
		{Error{Message: "no section"}, "no section"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
	if got := (Warning{Key: "x.y", Line: 4, Message: "ignored"}).String(); got != "line 4: x.y: ignored" {
		t.Errorf("Warning.String() = %q", got)
	}
}

func TestSuggest(t *testing.T) {
	tests := []struct {
		key     string
		storage bool
		want    string
	}{
		{"partitonCount", true, "partitionCount"},
		{"PARTITIONCOUNTS", true, "partitionCount"},
		{"hubname2", false, "hubName"},
		{"hubNam", true, ""}, // hubName is not a storageProvider key
		{"partitionCnt", false, "partitionCount"},
		{"partition", false, ""},
		{"colour", false, ""},
	}
	for _, tt := range tests {
		got := suggest(tt.key, tt.storage)
		want := ""
		if tt.want != "" {
			want = fmt.Sprintf(" (did you mean %q?)", tt.want)
		}
		if got != want {
			t.Errorf("suggest(%q, %v) = %q, want %q", tt.key, tt.storage, got, want)
		}
	}
}

// Every setting must be documented with a field, listed in the package
// doc's key table, and be reachable by its lower-case name, so that the
// tables cannot drift apart.
func TestSettingsTable(t *testing.T) {
	doc, err := os.ReadFile("hostjson.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range settings {
		if !strings.Contains(string(doc), "//\t"+s.name+" ") && !strings.Contains(string(doc), "//\tstorageProvider."+s.name+" ") {
			t.Errorf("%s is missing from the key table of the package doc", s.name)
		}
		lower := strings.ToLower(s.name)
		if s.field == "" {
			t.Errorf("%s has no field", s.name)
		}
		table := taskSettings
		if s.storage {
			table = storageSettings
		}
		if table[lower] != s {
			t.Errorf("%s is not in its lookup table", s.name)
		}
		if ignoredTask[lower] != "" || ignoredStorage[lower] != "" {
			t.Errorf("%s is both read and ignored", s.name)
		}
		hasSetter := s.setInt != nil || s.setDur != nil || s.setBool != nil || s.setStr != nil
		if !hasSetter {
			t.Errorf("%s has no setter", s.name)
		}
	}
}
