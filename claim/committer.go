package claim

import (
	"cmp"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dispenserhq/dispenser/internal/pgerr"
)

//go:embed sql/claim_staged.sql
var claimStagedSQL string

// CommitterConfig tunes the group commit.
type CommitterConfig struct {
	// MaxBatch is the most claims persisted in one transaction; default 256.
	MaxBatch int
	// MaxWait is how long the first claim of a batch waits for others to
	// join it; default 1ms. Under load a batch fills while the one before
	// it commits; when the callers come back in waves (the last batch held
	// nearly all of them), the flusher waits out MaxWait for the next, and
	// sending at once instead measured no faster on a 2-core machine
	// (docs/BENCHMARKS.md, round fourteen).
	MaxWait time.Duration
	// MaxInFlight is how many batches may commit at once; default 1. On a
	// small machine concurrent batches mostly contend for the same index
	// pages and the WAL: at 2 and 4 Postgres spent about 10% more CPU per
	// claim than at 1, at 8 about 2.5 times as much (docs/BENCHMARKS.md);
	// one batch in flight grows to whatever queued meanwhile.
	MaxInFlight int
	// CommitTimeout bounds one batch transaction; default 10s.
	CommitTimeout time.Duration
	// OnBatch, if set, is told the size of every committed batch and how
	// long its transaction took, from sending it to the commit's answer,
	// retries included (metrics).
	OnBatch func(size int, took time.Duration)
}

// commitItem is one claim waiting for its batch.
type commitItem struct {
	req    Request
	codeID int64
	entry  string // the Redis entry, for the ledger
	shard  string // the Redis shard that popped it (stock.Shard)
	// popped is whether this call popped the code (false: Redis replayed
	// it from the request's record; an earlier copy popped it).
	popped bool
	done   chan commitResult
}

// commitResult is Postgres's answer for one item.
type commitResult struct {
	outcome outcome
	claim   Claim
	err     error
}

// committer persists popped codes in group commits: concurrent claims share
// one transaction and one fsync, and each gets its own outcome.
type committer struct {
	db  *pgxpool.Pool
	cfg CommitterConfig
	// refusalTTL is how long a refusal decided in a batch is kept.
	refusalTTL time.Duration
	// onCommitted is called after each committed batch with its items, to
	// clear their in-flight ledger entries.
	onCommitted func([]*commitItem)
	log         *slog.Logger
	group       *grouper[*commitItem]
	// committed counts the claims this committer has committed; at
	// statsCheckAt (which then grows fourfold) it checks the probe
	// tables' statistics in the background (RefreshProbeStats).
	committed    atomic.Int64
	statsCheckAt atomic.Int64
	statsWG      sync.WaitGroup
}

// firstStatsCheck is how many committed claims the first check of the probe
// tables' statistics waits for: ProbeStatsMinPages pages or more of claims.
const firstStatsCheck = 1024

func newCommitter(db *pgxpool.Pool, cfg CommitterConfig, refusalTTL time.Duration, onCommitted func([]*commitItem), log *slog.Logger) *committer {
	cfg.MaxBatch = cmp.Or(cfg.MaxBatch, CommitMaxBatchDefault)
	cfg.MaxWait = cmp.Or(cfg.MaxWait, CommitMaxWaitDefault)
	cfg.MaxInFlight = cmp.Or(cfg.MaxInFlight, CommitMaxInFlightDefault)
	cfg.CommitTimeout = cmp.Or(cfg.CommitTimeout, CommitTimeoutDefault)
	c := &committer{db: db, cfg: cfg, refusalTTL: refusalTTL, onCommitted: onCommitted, log: log}
	c.group = newGrouper(cfg.MaxBatch, cfg.MaxWait, cfg.MaxInFlight, c.flush)
	c.statsCheckAt.Store(firstStatsCheck)
	return c
}

// start starts the batcher and the flushers.
func (c *committer) start() { c.group.start() }

// submit queues an item and waits for its batch. Once queued, the item is
// committed or refused even if ctx ends; the caller then just stops waiting
// (a retry with the same request id finds the claim).
func (c *committer) submit(ctx context.Context, it *commitItem) commitResult {
	it.done = make(chan commitResult, 1)
	r, err := await(ctx, c.group, it, it.done)
	if err != nil {
		return commitResult{err: err}
	}
	return r
}

// Stop stops taking items, commits what was queued and waits for every batch.
func (c *committer) Stop() {
	c.group.Stop()
	c.statsWG.Wait()
}

// checkStats runs RefreshProbeStats in the background once the claims
// committed here reach statsCheckAt, then at four times as many. A sale
// on a claims table analyzed while empty thus gets true statistics (and
// fresh plans) within its first thousand claims or so, instead of at the
// next refill job, by when the plans cached on the empty table's
// statistics have read the pool's claims once per item for seconds.
func (c *committer) checkStats(n int) {
	total := c.committed.Add(int64(n))
	at := c.statsCheckAt.Load()
	if total < at || !c.statsCheckAt.CompareAndSwap(at, at*4) {
		return
	}
	c.statsWG.Go(func() {
		ctx, cancel := context.WithTimeout(context.Background(), c.cfg.CommitTimeout)
		defer cancel()
		_, _ = RefreshProbeStats(ctx, c.db, c.log) // it logs the outcome
	})
}

// flush commits one batch. Items are sorted by pool, user and request so
// that concurrent batches take index locks in one order; a deadlock or
// serialization failure still retries the whole batch, which is safe because
// nothing of a failed transaction remains.
func (c *committer) flush(batch []*commitItem) {
	slices.SortFunc(batch, func(a, b *commitItem) int { return lockOrder(a.req, b.req) })
	start := time.Now()
	results, err := retried(c.log, "group commit", len(batch), func() ([]commitResult, error) { return c.commit(batch) })
	if err != nil {
		err = pgerr.Wrap("group commit", err)
		for _, it := range batch {
			it.done <- commitResult{err: err}
		}
		return
	}
	took := time.Since(start)
	// Answer first: the claims are durable, and clearing their ledger
	// entries is housekeeping (an entry left behind is one the reconciler
	// finds committed and drops).
	for i, it := range batch {
		it.done <- results[i]
	}
	if c.onCommitted != nil {
		c.onCommitted(batch)
	}
	if c.cfg.OnBatch != nil {
		c.cfg.OnBatch(len(batch), took)
	}
	c.checkStats(len(batch))
}

func (c *committer) commit(batch []*commitItem) ([]commitResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.CommitTimeout)
	defer cancel()
	n := len(batch)
	rows, err := commitBatch(ctx, c.db, n, claimStagedSQL, stagedArgs(batch, c.refusalTTL))
	if err != nil {
		return nil, err
	}
	results := make([]commitResult, n)
	for i, r := range rows {
		it := batch[i]
		results[i] = commitResult{outcome: outcome(r.out), claim: r.row.claim(it.req.PoolID, it.req.RequestID, it.req.UserID)}
	}
	return results, nil
}

// stagedArgs are claimStagedSQL's arguments for a batch: the items' columns
// as arrays, then how long refusals are kept.
func stagedArgs(batch []*commitItem, refusalTTL time.Duration) []any {
	n := len(batch)
	pools, reqs, users, codes := make([]string, n), make([]string, n), make([]string, n), make([]int64, n)
	started, holds, popped := make([]time.Time, n), make([]pgtype.Int8, n), make([]bool, n)
	for i, it := range batch {
		pools[i], reqs[i], users[i], codes[i] = it.req.PoolID, it.req.RequestID, it.req.UserID, it.codeID
		started[i], holds[i], popped[i] = it.req.startedAt(), it.req.holdMillis(), it.popped
	}
	return []any{pools, reqs, users, codes, started, holds, popped, refusalTTL}
}

// outcomeRow is one item's row of a batch function: its outcome and its
// claim's columns.
type outcomeRow struct {
	out string
	row claimRow
}

// itemRows reads the rows of a batch function that answers one row per
// item, each led by its item's ord (1-based), into item order; dest gives
// an answer's scan targets after ord. Every item must get exactly one row.
// Each row is scanned into one set of targets made once per batch, then
// copied into place: per row, only the values themselves are allocated.
func itemRows[R any](rows pgx.Rows, n int, dest func(*R) []any) ([]R, error) {
	defer rows.Close()
	out := make([]R, n)
	seen := 0
	var ord int
	var r, zero R
	targets := append([]any{&ord}, dest(&r)...)
	for rows.Next() {
		r = zero
		if err := rows.Scan(targets...); err != nil {
			return nil, err
		}
		if ord < 1 || ord > n {
			return nil, fmt.Errorf("row for item %d of %d", ord, n)
		}
		out[ord-1] = r
		seen++
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if seen != n {
		return nil, fmt.Errorf("%d rows for %d items", seen, n)
	}
	return out, nil
}

// commitBatch runs query, a batch function answering one row per item (ord,
// outcome, then the claim's columns with its hold's), in a transaction of
// its own and returns the rows in item order. BEGIN, the query and COMMIT go
// to Postgres in one round trip (one pipeline with one Sync: if the query
// fails, COMMIT is skipped and nothing of it stays). It returns only after
// COMMIT has answered: Postgres sends the rows before the commit is durable,
// and a code must never be visible before its claim is (promise 3).
func commitBatch(ctx context.Context, db *pgxpool.Pool, n int, query string, args []any) ([]outcomeRow, error) {
	var out []outcomeRow
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	b.Queue(query, args...)
	b.Queue("COMMIT")
	br := db.SendBatch(ctx, b)
	err := func() error {
		if _, err := br.Exec(); err != nil {
			return err
		}
		rows, err := br.Query()
		if err != nil {
			return err
		}
		out, err = itemRows(rows, n, func(r *outcomeRow) []any { return append([]any{&r.out}, r.row.holdDest()...) })
		if err != nil {
			return err
		}
		tag, err := br.Exec()
		if err != nil {
			return err
		}
		if tag.String() != "COMMIT" {
			return errors.New("batch transaction was rolled back")
		}
		return nil
	}()
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	return out, nil
}

// lockOrder orders a batch's requests by pool, user and request, so that
// concurrent batches take request locks, user slots and index entries in
// one order.
func lockOrder(a, b Request) int {
	return cmp.Or(cmp.Compare(a.PoolID, b.PoolID), cmp.Compare(a.UserID, b.UserID), cmp.Compare(a.RequestID, b.RequestID))
}

// retried runs a batch transaction again, up to five times in all, while it
// fails only because of another one (deadlock, serialization failure): safe,
// since nothing of a failed transaction remains.
func retried[T any](log *slog.Logger, what string, size int, run func() (T, error)) (T, error) {
	var v T
	var err error
	for attempt := range 5 {
		v, err = run()
		if err == nil || !isRetryable(err) {
			return v, err
		}
		log.Warn(what+" retried", "attempt", attempt+1, "size", size, "err", err)
		time.Sleep(time.Duration(attempt+1) * 2 * time.Millisecond)
	}
	return v, err
}

// isRetryable reports a transaction that failed only because of another
// one: deadlock or serialization failure.
func isRetryable(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "40P01" || pgErr.Code == "40001")
}
