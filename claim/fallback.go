package claim

import (
	"cmp"
	"context"
	_ "embed"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dispenserhq/dispenser/internal/pgerr"
	"github.com/dispenserhq/dispenser/pool"
)

//go:embed sql/claim_fallback_many.sql
var claimFallbackManySQL string

// Fallback claims straight from Postgres, each code picked with FOR UPDATE
// SKIP LOCKED so that no claim waits for another. It serves when Redis is
// unreachable or its list is empty. Concurrent claims share a transaction
// (dispenser_claim_fallback_many_v1, each item decided as if alone), so they
// share one round trip and one commit instead of paying one each.
type Fallback struct {
	db         *pgxpool.Pool
	refusalTTL time.Duration
	log        *slog.Logger
	// group batches claims; at most concurrency batches run in Postgres at
	// once: concurrent SKIP LOCKED scans step over each other's locked rows.
	group *grouper[*fallbackItem]
	// after remembers, per pool, the id of the last code claimed: the next
	// scan starts past the dead index entries claimed rows leave behind.
	mu    sync.Mutex
	after map[string]int64
}

// FallbackConcurrencyDefault is how many fallback transactions run in
// Postgres at once, per process, by default. One: each concurrent batch's
// picks step over the codes the others hold locked, and on 2 cores one
// transaction at a time, its batch grown by whatever queued meanwhile, cost
// the server 243 and 246 µs per claim against 273 and 344 for two and 363
// and 396 for four, at the same rate (docs/BENCHMARKS.md, round nineteen).
// A replica then decides its fallback claims one after another in one
// backend; more replicas, or this flag on a Postgres with cores to spare,
// run more at once.
const FallbackConcurrencyDefault = 1

// fallbackMaxBatch is the most claims one fallback transaction decides, and
// fallbackMaxWait how long the first waits for others to join it (under load
// batches fill while the transactions before them run).
const (
	fallbackMaxBatch = 64
	fallbackMaxWait  = 200 * time.Microsecond
	fallbackTimeout  = 10 * time.Second
)

// fallbackItem is one claim waiting for its batch.
type fallbackItem struct {
	req   Request
	after int64
	done  chan fallbackResult
}

type fallbackResult struct {
	outcomeRow
	err error
}

// NewFallback returns the Postgres allocator. Refusals it decides are kept
// for refusalTTL (default RefusalTTLDefault); at most concurrency
// transactions run at once (default FallbackConcurrencyDefault), the claims
// that come meanwhile wait and go together in the next. Start starts its
// batcher, Stop ends it.
func NewFallback(db *pgxpool.Pool, refusalTTL time.Duration, concurrency int, log *slog.Logger) *Fallback {
	f := &Fallback{db: db, refusalTTL: cmp.Or(refusalTTL, RefusalTTLDefault), log: cmp.Or(log, slog.Default()),
		after: map[string]int64{}}
	f.group = newGrouper(fallbackMaxBatch, fallbackMaxWait, cmp.Or(concurrency, FallbackConcurrencyDefault), f.flush)
	return f
}

// Start starts the batcher.
func (f *Fallback) Start() { f.group.start() }

// Stop decides the claims already queued and stops the batcher.
func (f *Fallback) Stop() { f.group.Stop() }

// Claim implements Allocator. The pool's settings are read inside the
// transaction, so p is not needed beyond the request's pool id. Once
// queued, the claim is decided even if ctx ends; the caller then just stops
// waiting (a retry with the same request id finds the claim).
func (f *Fallback) Claim(ctx context.Context, _ pool.Pool, req Request) (Result, error) {
	f.mu.Lock()
	it := &fallbackItem{req: req, after: f.after[req.PoolID], done: make(chan fallbackResult, 1)}
	f.mu.Unlock()
	r, err := await(ctx, f.group, it, it.done)
	if err != nil {
		return Result{}, err
	}
	if r.err != nil {
		return Result{}, pgerr.Wrap("fallback claim", r.err)
	}
	o := outcome(r.out)
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
		return Result{}, fmt.Errorf("fallback claim: unexpected outcome %q", r.out)
	}
	c := r.row.claim(req.PoolID, req.RequestID, req.UserID)
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

// flush decides one batch. Items are sorted by pool, user and request, so
// that concurrent batches take request locks and user slots in one order; a
// deadlock or serialization failure still retries the whole batch, which is
// safe because nothing of a failed transaction remains.
func (f *Fallback) flush(batch []*fallbackItem) {
	slices.SortFunc(batch, func(a, b *fallbackItem) int { return lockOrder(a.req, b.req) })
	results, err := retried(f.log, "fallback batch", len(batch), func() ([]fallbackResult, error) { return f.decide(batch) })
	for i, it := range batch {
		if err != nil {
			it.done <- fallbackResult{err: err}
			continue
		}
		it.done <- results[i]
	}
}

// decide runs one batch transaction (commitBatch): answers are handed out
// only after COMMIT has answered.
func (f *Fallback) decide(batch []*fallbackItem) ([]fallbackResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), fallbackTimeout)
	defer cancel()
	n := len(batch)
	pools, reqs, users, after := make([]string, n), make([]string, n), make([]string, n), make([]int64, n)
	started, holds, down := make([]time.Time, n), make([]pgtype.Int8, n), make([]bool, n)
	for i, it := range batch {
		pools[i], reqs[i], users[i], after[i] = it.req.PoolID, it.req.RequestID, it.req.UserID, it.after
		started[i], holds[i], down[i] = it.req.startedAt(), it.req.holdMillis(), it.req.redisDown
	}
	rows, err := commitBatch(ctx, f.db, n, claimFallbackManySQL,
		[]any{pools, reqs, users, after, started, holds, f.refusalTTL, down})
	if err != nil {
		return nil, err
	}
	results := make([]fallbackResult, n)
	for i, r := range rows {
		results[i] = fallbackResult{outcomeRow: r}
	}
	return results, nil
}
