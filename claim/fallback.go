package claim

import (
	"cmp"
	"context"
	_ "embed"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dispenserhq/dispenser/internal/pgerr"
	"github.com/dispenserhq/dispenser/pool"
)

//go:embed sql/claim_fallback.sql
var claimFallbackSQL string

// Fallback claims straight from Postgres: one transaction per claim, the
// code picked with FOR UPDATE SKIP LOCKED so that no claim waits for another.
// It serves when Redis is unreachable or its list is empty.
type Fallback struct {
	db         *pgxpool.Pool
	refusalTTL time.Duration
	// slots bounds the claims in Postgres at once: past a few, concurrent
	// SKIP LOCKED scans mostly step over each other's locked rows.
	slots chan struct{}
	// after remembers, per pool, the id of the last code claimed: the next
	// scan starts past the dead index entries claimed rows leave behind.
	mu    sync.Mutex
	after map[string]int64
}

// FallbackConcurrencyDefault is how many fallback claims run in Postgres at
// once, per process, by default.
const FallbackConcurrencyDefault = 8

// NewFallback returns the Postgres allocator. Refusals it decides are kept
// for refusalTTL (default RefusalTTLDefault); at most concurrency claims run
// at once (default FallbackConcurrencyDefault), the others queue.
func NewFallback(db *pgxpool.Pool, refusalTTL time.Duration, concurrency int) *Fallback {
	return &Fallback{db: db, refusalTTL: cmp.Or(refusalTTL, RefusalTTLDefault), after: map[string]int64{},
		slots: make(chan struct{}, cmp.Or(concurrency, FallbackConcurrencyDefault))}
}

// Claim implements Allocator. The pool's settings are read inside the
// transaction, so p is not needed beyond the request's pool id.
func (f *Fallback) Claim(ctx context.Context, _ pool.Pool, req Request) (Result, error) {
	select {
	case f.slots <- struct{}{}:
		defer func() { <-f.slots }()
	case <-ctx.Done():
		return Result{}, ctx.Err()
	}
	f.mu.Lock()
	after := f.after[req.PoolID]
	f.mu.Unlock()

	var out string
	var row claimRow
	err := f.db.QueryRow(ctx, claimFallbackSQL, req.PoolID, req.RequestID, req.UserID, after, req.startedAt(),
		req.holdMillis(), f.refusalTTL, req.redisDown).Scan(append([]any{&out}, row.holdDest()...)...)
	if err != nil {
		return Result{}, pgerr.Wrap("fallback claim", err)
	}
	o := outcome(out)
	if err := o.refusal(); err != nil {
		return Result{}, err
	}
	if o == outBusy {
		return Result{}, errFallbackBusy
	}
	if o == outUnreach {
		return Result{}, ErrStagedUnreachable
	}
	if o != outClaimed && o != outReplay && o != outHeld {
		return Result{}, fmt.Errorf("fallback claim: unexpected outcome %q", out)
	}
	c := row.claim(req.PoolID, req.RequestID, req.UserID)
	if o == outReplay || o == outHeld {
		return Result{Claim: c, Replayed: true, Path: PathReplay}, nil
	}
	f.mu.Lock()
	if c.CodeID > f.after[req.PoolID] {
		f.after[req.PoolID] = c.CodeID
	}
	f.mu.Unlock()
	return Result{Claim: c, Path: PathFallback}, nil
}
