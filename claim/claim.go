// Package claim hands codes to users, keeping the promises of DESIGN.md
// whatever happens to Redis, Postgres or the server. Two allocators answer
// the same contract (Allocator): the Redis allocator (one Lua script, then a
// group commit to Postgres) and the Postgres fallback (one SKIP LOCKED
// transaction). Postgres decides every claim in both: see
// migrations/002_claims.sql.
package claim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
	"unicode/utf8"

	"github.com/dispenserhq/dispenser/pool"
)

var (
	// ErrPoolExhausted means the pool has no code left to hand out.
	ErrPoolExhausted = errors.New("pool exhausted")
	// ErrUserLimit means the user already holds the pool's limit of claims.
	ErrUserLimit = errors.New("user limit reached")
	// ErrPoolPaused means the pool is paused.
	ErrPoolPaused = errors.New("pool paused")
	// ErrPoolClosed means the request came outside the pool's claim window.
	ErrPoolClosed = errors.New("pool closed")
	// ErrNotFound means no claim matches.
	ErrNotFound = errors.New("claim not found")
	// ErrStopped means the service is shutting down; nothing was claimed.
	ErrStopped = errors.New("claim service stopped")
	// errStagedEmpty means the pool's Redis list is empty: the fallback
	// decides whether the pool is really exhausted.
	errStagedEmpty = errors.New("no staged code")
)

// Request asks for one code.
type Request struct {
	PoolID    string
	UserID    string
	RequestID string
}

// FieldError reports an invalid request field, named as in the API.
type FieldError struct {
	Field, Description string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Description }

// Validate checks the user and request ids (the pool id is checked by the
// pool lookup).
func (r Request) Validate() error {
	if err := validateKey("user_id", r.UserID); err != nil {
		return err
	}
	return validateKey("request_id", r.RequestID)
}

// validateKey accepts 1 to 128 characters of valid UTF-8 without control
// characters.
func validateKey(field, v string) error {
	if v == "" {
		return &FieldError{field, "is required"}
	}
	if !utf8.ValidString(v) || utf8.RuneCountInString(v) > 128 {
		return &FieldError{field, "must be 1 to 128 characters of UTF-8"}
	}
	for _, r := range v {
		if r < 0x20 || r == 0x7f {
			return &FieldError{field, "must not contain control characters"}
		}
	}
	return nil
}

// Path tells which way a claim was served.
type Path string

const (
	// PathRedis is a code popped from Redis and group-committed.
	PathRedis Path = "redis"
	// PathFallback is a code taken straight from Postgres.
	PathFallback Path = "fallback"
	// PathReplay is an earlier claim of the same request, returned again.
	PathReplay Path = "replay"
)

// Claim is a claim committed in Postgres.
type Claim struct {
	PoolID    string
	RequestID string
	UserID    string
	CodeID    int64
	// Code is the secret itself. It must never reach a log or an error.
	Code      Secret
	ClaimedAt time.Time
	ExpiresAt time.Time // zero: no expiry
}

// Result is the answer to a Request.
type Result struct {
	Claim Claim
	// Replayed is true when the claim existed before this call.
	Replayed bool
	Path     Path
}

// Allocator claims a code for a request from pool p, whose rules (paused,
// window) the caller has already checked. Both implementations keep every
// promise; they differ in speed and in what they need to be up. When it has
// nothing to hand out, the Redis allocator answers errStagedEmpty (the
// fallback may still find codes in Postgres) and the fallback
// ErrPoolExhausted.
type Allocator interface {
	Claim(ctx context.Context, p pool.Pool, req Request) (Result, error)
}

// Secret is a code. Its String, GoString and slog forms are redacted, so a
// code cannot reach a log by accident; Reveal returns the text for the one
// place that must send it (the API answer).
type Secret string

// Reveal returns the code's text.
func (s Secret) Reveal() string { return string(s) }

func (s Secret) String() string   { return "[code]" }
func (s Secret) GoString() string { return "[code]" }

// Format redacts the code in every fmt verb.
func (s Secret) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte("[code]")) }

// LogValue redacts the code in log/slog, whatever the handler.
func (s Secret) LogValue() slog.Value { return slog.StringValue("[code]") }

// MarshalJSON redacts the code in JSON (encoding/json would otherwise write
// the string itself).
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"[code]"`), nil }
