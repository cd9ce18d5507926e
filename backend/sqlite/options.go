package sqlite

import (
	"fmt"
	"strings"
	"time"
)

// Defaults of [Options].
const (
	// HubDefault is the hub name used when Options.Hub is empty.
	HubDefault = "taskhub"
	// BusyTimeoutDefault is how long a call waits for another process's write
	// lock before giving up.
	BusyTimeoutDefault = 10 * time.Second
	// SynchronousDefault makes every durable commit survive power loss.
	SynchronousDefault = "FULL"
)

// hubNameMax bounds hub names so they stay readable in errors and tools.
const hubNameMax = 256

// Options configure [Open]. The zero value is valid: every zero field takes
// its documented default.
type Options struct {
	// Hub is the task hub stored in the file; a file holds one hub. Opening a
	// file that holds another hub fails with a *HubMismatchError.
	// Default HubDefault ("taskhub").
	Hub string

	// BusyTimeout is how long a call waits for the write lock while another
	// process (or another Backend on the same file) holds it, before it fails
	// with SQLITE_BUSY. Default BusyTimeoutDefault (10s).
	BusyTimeout time.Duration

	// Synchronous is SQLite's synchronous setting for durable commits: "FULL"
	// (default: a returned commit survives power loss), "EXTRA", "NORMAL"
	// (survives a process crash; the last commits may be lost on power loss,
	// never corrupted) or "OFF" (tests only). See the package documentation.
	Synchronous string
}

// withDefaults returns a copy of o with every zero field set to its default.
func (o Options) withDefaults() Options {
	if o.Hub == "" {
		o.Hub = HubDefault
	}
	if o.BusyTimeout == 0 {
		o.BusyTimeout = BusyTimeoutDefault
	}
	if o.Synchronous == "" {
		o.Synchronous = SynchronousDefault
	}
	o.Synchronous = strings.ToUpper(o.Synchronous)
	return o
}

// validate reports the first invalid field of o, which must already have its
// defaults applied.
func (o Options) validate() error {
	if len(o.Hub) > hubNameMax {
		return fmt.Errorf("sqlite: Options.Hub is %d bytes long; at most %d are allowed", len(o.Hub), hubNameMax)
	}
	if strings.ContainsRune(o.Hub, 0) {
		return fmt.Errorf("sqlite: Options.Hub %q contains a NUL byte", o.Hub)
	}
	if o.BusyTimeout < 0 {
		return fmt.Errorf("sqlite: Options.BusyTimeout is %v; it must be positive (zero means %v)", o.BusyTimeout, BusyTimeoutDefault)
	}
	if o.BusyTimeout < time.Millisecond {
		return fmt.Errorf("sqlite: Options.BusyTimeout is %v; SQLite counts in milliseconds, so it must be at least 1ms", o.BusyTimeout)
	}
	switch o.Synchronous {
	case "OFF", "NORMAL", "FULL", "EXTRA":
	default:
		return fmt.Errorf("sqlite: Options.Synchronous is %q; want one of OFF, NORMAL, FULL, EXTRA", o.Synchronous)
	}
	return nil
}

// syncLevel orders the synchronous settings so the backend can tell whether
// lowering to NORMAL for lock bookkeeping is a change at all.
func syncLevel(s string) int {
	switch s {
	case "OFF":
		return 0
	case "NORMAL":
		return 1
	case "FULL":
		return 2
	default: // EXTRA
		return 3
	}
}
