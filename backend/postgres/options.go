package postgres

import (
	"fmt"
	"hash/fnv"
	"log/slog"
	"os"
	"strings"
	"time"
	"unicode/utf8"
)

// Defaults of [Options].
const (
	// HubDefault is the hub name used when Options.Hub is empty.
	HubDefault = "taskhub"
	// SchemaPrefix starts every schema name derived from a hub name.
	SchemaPrefix = "taskhub_"
	// MaxConnsDefault is the pool size when Options.MaxConns is zero: enough
	// for a worker polling the 16 control queues of the largest hub, its
	// work-item receives and its committer at once, without crowding a
	// server's default max_connections (100) when a few workers share it.
	MaxConnsDefault = 16
	// RetryTimeoutDefault bounds how long an idempotent read keeps retrying
	// a lost connection.
	RetryTimeoutDefault = 10 * time.Second
)

// EnvURL is the environment variable [URLFromEnv] reads.
const EnvURL = "TASKHUB_POSTGRES_URL"

// Identifier limits: PostgreSQL truncates names to NAMEDATALEN-1 bytes.
const (
	identMax   = 63
	hubNameMax = 256
)

// URLFromEnv returns the connection URL in $TASKHUB_POSTGRES_URL, or fallback
// when the variable is unset or empty.
func URLFromEnv(fallback string) string {
	if u := os.Getenv(EnvURL); u != "" {
		return u
	}
	return fallback
}

// Options configure [Open]. The zero value is valid: every zero field takes
// its documented default.
type Options struct {
	// Hub is the task hub's name. Default HubDefault ("taskhub").
	Hub string

	// Schema is the PostgreSQL schema that holds the hub's tables; several
	// hubs share a database, each in its own schema, and a schema holds one
	// hub (opening it for another hub fails with a *HubMismatchError).
	// Default: derived from Hub by SchemaFor ("taskhub_" + the hub name in
	// lower case). An explicit name must be a plain identifier: a letter or
	// underscore, then letters, digits and underscores, at most 63 bytes,
	// not starting with "pg_". It is used exactly as written (case
	// included) and always quoted.
	Schema string

	// MaxConns is the size of the connection pool. Default MaxConnsDefault
	// (16); it overrides a pool_max_conns parameter in the URL. The
	// connection that Notifications holds for LISTEN is not from the pool.
	MaxConns int32

	// RetryTimeout bounds how long an idempotent read (HubGet, lists,
	// loads, metrics) retries after a lost connection, with back-off.
	// Writes are never retried: their error is returned. Default
	// RetryTimeoutDefault (10s); a negative value disables retries.
	RetryTimeout time.Duration

	// Logger receives the notification listener's reconnect warnings.
	// Default slog.Default().
	Logger *slog.Logger
}

// withDefaults returns a copy of o with every zero field set to its default.
func (o Options) withDefaults() Options {
	if o.Hub == "" {
		o.Hub = HubDefault
	}
	if o.Schema == "" {
		o.Schema = SchemaFor(o.Hub)
	}
	if o.MaxConns == 0 {
		o.MaxConns = MaxConnsDefault
	}
	if o.RetryTimeout == 0 {
		o.RetryTimeout = RetryTimeoutDefault
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// validate reports the first invalid field of o, which must already have its
// defaults applied.
func (o Options) validate() error {
	if len(o.Hub) > hubNameMax {
		return fmt.Errorf("postgres: Options.Hub is %d bytes long; at most %d are allowed", len(o.Hub), hubNameMax)
	}
	if !utf8.ValidString(o.Hub) || strings.ContainsRune(o.Hub, 0) {
		return fmt.Errorf("postgres: Options.Hub %q must be valid UTF-8 without NUL bytes (PostgreSQL text)", o.Hub)
	}
	if err := validateSchema(o.Schema); err != nil {
		return err
	}
	if o.MaxConns < 1 {
		return fmt.Errorf("postgres: Options.MaxConns is %d; it must be positive (zero means %d)", o.MaxConns, MaxConnsDefault)
	}
	return nil
}

// validateSchema accepts plain identifiers only, so a schema name can never
// carry SQL, and it is quoted wherever it is used besides.
func validateSchema(s string) error {
	if s == "" || len(s) > identMax {
		return fmt.Errorf("postgres: schema name %q must be 1 to %d bytes long", s, identMax)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '_', c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return fmt.Errorf("postgres: schema name %q: byte %d (%q) is not allowed; use letters, digits and underscores, starting with a letter or underscore", s, i, c)
		}
	}
	if strings.HasPrefix(strings.ToLower(s), "pg_") {
		return fmt.Errorf("postgres: schema name %q: names starting with pg_ are reserved for the system", s)
	}
	return nil
}

// SchemaFor returns the schema a hub gets by default: SchemaPrefix plus the
// hub name in lower case. A hub name that is not already a plain lower-case
// identifier (or is too long) has its other bytes replaced by underscores
// and a hash of the full name appended, so that distinct hub names still
// get distinct schemas.
func SchemaFor(hub string) string {
	var sb strings.Builder
	sb.WriteString(SchemaPrefix)
	lossy := false
	for i := 0; i < len(hub); i++ {
		c := hub[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '_':
			sb.WriteByte(c)
		case c >= 'A' && c <= 'Z':
			sb.WriteByte(c + ('a' - 'A'))
			lossy = true
		default:
			sb.WriteByte('_')
			lossy = true
		}
	}
	s := sb.String()
	if !lossy && len(s) <= identMax {
		return s
	}
	h := fnv.New32a()
	h.Write([]byte(hub))
	suffix := fmt.Sprintf("_%08x", h.Sum32())
	if len(s) > identMax-len(suffix) {
		s = s[:identMax-len(suffix)]
	}
	return s + suffix
}
