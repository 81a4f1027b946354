// Package claim hands codes to users, keeping the promises of docs/DESIGN.md
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
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/dispenserhq/dispenser/internal/input"
	"github.com/dispenserhq/dispenser/internal/pgerr"
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
	// ErrRequestReused means the request id belongs to another user of the
	// pool: it was first used, claimed or refused, for someone else. Nothing
	// of that user's claim is revealed.
	ErrRequestReused = errors.New("request id used by another user")
	// ErrHoldLimit means the user has the pool's holds_per_user
	// reservations open. Not recorded: it ends when one of them does.
	ErrHoldLimit = errors.New("user holds the pool's limit of open reservations")
	// ErrReservationPending means the request is an open reservation: it
	// is not a claim until confirmed, and its code is not shown.
	ErrReservationPending = errors.New("the request is an open reservation")
	// ErrReservationExpired means the request was a reservation whose hold
	// ran out before it was confirmed; its code went back to the pool.
	ErrReservationExpired = errors.New("reservation expired")
	// ErrReservationCancelled means the request was a reservation that was
	// cancelled; its code went back to the pool.
	ErrReservationCancelled = errors.New("reservation cancelled")
	// ErrReservationConfirmed means the reservation is a claim already and
	// cannot be cancelled.
	ErrReservationConfirmed = errors.New("reservation already confirmed")
	// ErrReservationNotFound means no reservation was made with the request id.
	ErrReservationNotFound = errors.New("reservation not found")
	// ErrNotReservation means the request id names a ClaimCode claim, not
	// a reservation.
	ErrNotReservation = errors.New("the request id names a claim, not a reservation")
	// ErrStopped means the service is shutting down; nothing was claimed.
	ErrStopped = errors.New("claim service stopped")
	// errStagedEmpty is the Redis allocator's ErrPoolExhausted: nothing is
	// staged for the pool and nothing more could be. It is as much as Redis
	// knows; the service then asks the fallback, which reads Postgres.
	errStagedEmpty = fmt.Errorf("nothing staged: %w", ErrPoolExhausted)
	// errFallbackBusy means the fallback found the pool's only available
	// codes locked by others (a refill staging them, claims taking them):
	// not exhausted, nothing decided; try again shortly.
	errFallbackBusy = errors.New("the pool's last codes are being staged or claimed")
	// ErrStagedUnreachable means the pool's only codes left are staged in a
	// Redis that cannot serve them now (it is unreachable, or it lost them
	// and reconcile has not returned them yet): not sold out, nothing
	// claimed; a retry with the same request id gets a code once they are
	// back. It wraps pgerr.ErrUnavailable.
	ErrStagedUnreachable = fmt.Errorf("the pool's last codes are staged in Redis, which cannot serve them now: %w", pgerr.ErrUnavailable)
)

// Request asks for one code.
type Request struct {
	PoolID    string
	UserID    string
	RequestID string
	// reserve makes the request a reservation holding its code for hold
	// (Service.Reserve sets both; a zero hold is the pool's default).
	reserve bool
	hold    time.Duration
	// redisDown tells the fallback that Redis failed (rather than having
	// nothing staged): staged codes are then not sold out.
	redisDown bool
	// started is when this attempt began: a refusal recorded after it binds
	// it (it may have been about to commit), an older one does not (a retry
	// is decided afresh). Zero: when the allocator sees it.
	started time.Time
}

// holdMillis is the hold in milliseconds as the claim functions take it:
// NULL for a claim.
func (r *Request) holdMillis() pgtype.Int8 {
	return pgtype.Int8{Int64: r.hold.Milliseconds(), Valid: r.hold > 0}
}

// startedAt returns when the attempt began, stamping it now if unset.
func (r *Request) startedAt() time.Time {
	if r.started.IsZero() {
		r.started = time.Now()
	}
	return r.started
}

// prizeKeyPrefix starts the request id of a prize's claim. Callers' request
// ids never hold a control character (input.RequestID), so no ClaimCode or
// GetClaim call can name, pre-empt or read a prize's claim; the schema keeps
// the form for prizes (migrations/005_request_owners.sql).
const prizeKeyPrefix = "\x01prize:"

// PrizeRequestID is the request id of the claim made for a prize.
func PrizeRequestID(prizeID int64) string {
	return prizeKeyPrefix + strconv.FormatInt(prizeID, 10)
}

// prizeOf returns the prize id a request id names, or 0 for a caller's.
func prizeOf(requestID string) int64 {
	rest, ok := strings.CutPrefix(requestID, prizeKeyPrefix)
	if !ok {
		return 0
	}
	id, _ := strconv.ParseInt(rest, 10, 64)
	return id
}

// outcome is what was decided for one request, in the same words in Go, in
// the claim functions (migrations/functions.sql) and in the claim script
// (scripts.go), where it is only what Redis knows.
type outcome string

const (
	outPopped    outcome = "popped"      // Redis: a staged code was popped (Postgres has not decided yet)
	outClaimed   outcome = "claimed"     // committed with the given code
	outReplay    outcome = "replay"      // the request's earlier claim, same user (Redis: its replay record)
	outReused    outcome = "reused"      // the request belongs to another user
	outLimit     outcome = "limit"       // refused: the user's limit (Redis: the user's count says so)
	outExhausted outcome = "exhausted"   // refused: no code left (Redis: nothing staged)
	outRefused   outcome = "refused"     // this code cannot be claimed; try another
	outDup       outcome = "dup"         // the request came twice in one batch
	outOpen      outcome = "open"        // nothing decided (settle only)
	outBusy      outcome = "busy"        // nothing decided: the last codes are locked (fallback only)
	outUnreach   outcome = "unreachable" // nothing decided: the last codes are staged in a Redis that failed (fallback only)

	// Holds (the version 2 functions and the hold functions).
	outHeld           outcome = "held"            // the request is an open hold of this user
	outExpired        outcome = "expired"         // the request was a hold that ran out
	outCancelled      outcome = "cancelled"       // the request was a hold that was cancelled
	outHoldLimit      outcome = "hold_limit"      // refused: the user's open holds (not recorded)
	outConfirmed      outcome = "confirmed"       // the hold became a claim now
	outNotReservation outcome = "not_reservation" // the request is a ClaimCode claim
	outNotFound       outcome = "not_found"       // no such request
)

// refusal is the error a refusing outcome answers with, or nil.
func (o outcome) refusal() error {
	switch o {
	case outReused:
		return ErrRequestReused
	case outLimit:
		return ErrUserLimit
	case outExhausted:
		return ErrPoolExhausted
	case outHoldLimit:
		return ErrHoldLimit
	case outExpired:
		return ErrReservationExpired
	case outCancelled:
		return ErrReservationCancelled
	case outNotReservation:
		return ErrNotReservation
	}
	return nil
}

// FieldError reports an invalid request field (see input.FieldError).
type FieldError = input.FieldError

// Validate checks the user and request ids (the pool id is checked by the
// pool lookup).
func (r Request) Validate() error {
	if err := input.UserID("user_id", r.UserID); err != nil {
		return err
	}
	return input.RequestID("request_id", r.RequestID)
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
	// PathConfirm is a reservation confirmed into a claim.
	PathConfirm Path = "confirm"
)

// Claim is a claim committed in Postgres.
type Claim struct {
	PoolID string
	// RequestID is the caller's request id; empty for a prize's claim.
	RequestID string
	// PrizeID is the prize the claim was made for; 0 for a caller's claim.
	PrizeID int64
	UserID  string
	CodeID  int64
	// Code is the secret itself. It must never reach a log or an error.
	Code      Secret
	ClaimedAt time.Time
	ExpiresAt time.Time // zero: no expiry
	// ReservedAt is when the reservation this claim came from was made;
	// zero for a ClaimCode claim.
	ReservedAt time.Time
	// HeldUntil is set while the row is an open hold (not a claim yet: its
	// code must not be shown), or for an ended hold, when it ran out.
	HeldUntil time.Time
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
// promise; they differ in speed and in what they need to be up. When they
// have nothing to hand out, both answer ErrPoolExhausted (the Redis one as
// errStagedEmpty, which wraps it: the service then asks the fallback).
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

// claimRow holds the columns every claim query and claim function answers
// a claim with, in this order: code_id, code, expires_at, claimed_at. They
// are NULL where nothing was claimed. The functions of version 2 add
// held_until and reserved_at (holdDest).
type claimRow struct {
	codeID                pgtype.Int8
	code                  pgtype.Text
	expires, claimedAt    pgtype.Timestamptz
	heldUntil, reservedAt pgtype.Timestamptz
}

// dest returns the row's Scan destinations, in column order.
func (r *claimRow) dest() []any { return []any{&r.codeID, &r.code, &r.expires, &r.claimedAt} }

// holdDest returns dest and the hold columns' destinations.
func (r *claimRow) holdDest() []any { return append(r.dest(), &r.heldUntil, &r.reservedAt) }

// claim is the row as the Claim of request requestID of userID in poolID.
// A prize's reserved request id becomes PrizeID, so it never reaches a
// caller as a request id.
func (r claimRow) claim(poolID, requestID, userID string) Claim {
	c := Claim{PoolID: poolID, RequestID: requestID, UserID: userID}
	if id := prizeOf(requestID); id != 0 {
		c.RequestID, c.PrizeID = "", id
	}
	c.CodeID, c.Code, c.ExpiresAt, c.ClaimedAt = r.codeID.Int64, Secret(r.code.String), timeOrZero(r.expires), timeOrZero(r.claimedAt)
	c.HeldUntil, c.ReservedAt = timeOrZero(r.heldUntil), timeOrZero(r.reservedAt)
	return c
}

// timeOrZero converts a nullable timestamp.
func timeOrZero(t pgtype.Timestamptz) time.Time {
	if t.Valid {
		return t.Time
	}
	return time.Time{}
}
