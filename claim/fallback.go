package claim

import (
	"context"
	_ "embed"
	"fmt"
	"github.com/dispenserhq/dispenser/pool"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
)

//go:embed sql/claim_fallback.sql
var claimFallbackSQL string

// Fallback claims straight from Postgres: one transaction per claim, the
// code picked with FOR UPDATE SKIP LOCKED so that no claim waits for another.
// It serves when Redis is unreachable or its list is empty.
type Fallback struct {
	db *pgxpool.Pool
	// after remembers, per pool, the id of the last code claimed: the next
	// scan starts past the dead index entries claimed rows leave behind.
	mu    sync.Mutex
	after map[string]int64
}

// NewFallback returns the Postgres allocator.
func NewFallback(db *pgxpool.Pool) *Fallback {
	return &Fallback{db: db, after: map[string]int64{}}
}

// Claim implements Allocator. The pool's settings are read inside the
// transaction, so p is not needed beyond the request's pool id.
func (f *Fallback) Claim(ctx context.Context, _ pool.Pool, req Request) (Result, error) {
	f.mu.Lock()
	after := f.after[req.PoolID]
	f.mu.Unlock()

	var outcome string
	var codeID pgtype.Int8
	var code pgtype.Text
	var expires, claimedAt pgtype.Timestamptz
	var userID pgtype.Text
	err := f.db.QueryRow(ctx, claimFallbackSQL, req.PoolID, req.RequestID, req.UserID, after).
		Scan(&outcome, &codeID, &code, &expires, &claimedAt, &userID)
	if err != nil {
		return Result{}, pool.WrapDBError("fallback claim", err)
	}
	switch outcome {
	case "exhausted":
		return Result{}, ErrPoolExhausted
	case "limit":
		return Result{}, ErrUserLimit
	case "claimed", "replay":
	default:
		return Result{}, fmt.Errorf("fallback claim: unexpected outcome %q", outcome)
	}
	c := Claim{PoolID: req.PoolID, RequestID: req.RequestID, UserID: userID.String, CodeID: codeID.Int64,
		Code: Secret(code.String), ClaimedAt: claimedAt.Time}
	if expires.Valid {
		c.ExpiresAt = expires.Time
	}
	if outcome == "replay" {
		return Result{Claim: c, Replayed: true, Path: PathReplay}, nil
	}
	f.mu.Lock()
	if c.CodeID > f.after[req.PoolID] {
		f.after[req.PoolID] = c.CodeID
	}
	f.mu.Unlock()
	return Result{Claim: c, Path: PathFallback}, nil
}

// timeOrZero converts a nullable timestamp.
func timeOrZero(t pgtype.Timestamptz) time.Time {
	if t.Valid {
		return t.Time
	}
	return time.Time{}
}
