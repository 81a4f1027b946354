package claim

import (
	"context"
	_ "embed"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

//go:embed sql/sold_out.sql
var soldOutSQL string

// soldOut answers claims that find nothing staged in Redis whether their
// pool is sold out to them (dispenser_sold_out_v1): nothing left that a
// claim could take, nothing recorded for the request, the user free to take
// a code. Such a claim is refused ErrPoolExhausted at once. Without it, each
// claim of a sold-out pool tried a refill, read Redis's whole list and
// ledger to look for lost codes, and ran a fallback transaction to be told
// the same: three to six times a successful claim's CPU (docs/BENCHMARKS.md,
// round six), and in a flash sale most calls come after the last code is
// gone. The checks of concurrent claims share one read-only statement; a
// claim the check does not clear (or a failed check) goes the way it went
// before.
type soldOut struct {
	db      *pgxpool.Pool
	drained *drainMarks
	group   *grouper[*soldOutItem]
	// refused counts the claims it found sold out.
	refused atomic.Int64
}

// soldOut batching: a batch holds at most soldOutMaxBatch checks, the first
// waits soldOutMaxWait for others, and soldOutInFlight statements run at
// once (more checks queue meanwhile and go together in the next).
const (
	soldOutMaxBatch = 256
	soldOutMaxWait  = 200 * time.Microsecond
	soldOutInFlight = 2
	soldOutTimeout  = 5 * time.Second
)

type soldOutItem struct {
	req  Request
	done chan soldOutResult
}

type soldOutResult struct {
	soldOut bool
	err     error
}

func newSoldOut(db *pgxpool.Pool, drained *drainMarks) *soldOut {
	s := &soldOut{db: db, drained: drained}
	s.group = newGrouper(soldOutMaxBatch, soldOutMaxWait, soldOutInFlight, s.flush)
	return s
}

func (s *soldOut) start() { s.group.start() }

// Stop answers the checks queued and stops the batcher.
func (s *soldOut) Stop() { s.group.Stop() }

// check reports whether req may be refused as exhausted now. An error means
// it could not tell; the caller then goes the fallback's way.
func (s *soldOut) check(ctx context.Context, req Request) (bool, error) {
	it := &soldOutItem{req: req, done: make(chan soldOutResult, 1)}
	r, err := await(ctx, s.group, it, it.done)
	if err != nil {
		return false, err
	}
	if r.soldOut {
		s.refused.Add(1)
	}
	return r.soldOut, r.err
}

func (s *soldOut) flush(batch []*soldOutItem) {
	res, err := s.read(batch)
	for i, it := range batch {
		if err != nil {
			it.done <- soldOutResult{err: err}
			continue
		}
		it.done <- soldOutResult{soldOut: res[i]}
	}
	if err != nil {
		return
	}
	// The answers are out. A sold-out pool's last batches may still be
	// live, and every later check would read their ranges again.
	marked := map[string]bool{}
	for i, it := range batch {
		if res[i] && !marked[it.req.PoolID] {
			marked[it.req.PoolID] = true
			s.drained.maybe(context.Background(), it.req.PoolID)
		}
	}
}

func (s *soldOut) read(batch []*soldOutItem) ([]bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), soldOutTimeout)
	defer cancel()
	n := len(batch)
	pools, reqs, users, holds := make([]string, n), make([]string, n), make([]string, n), make([]bool, n)
	for i, it := range batch {
		pools[i], reqs[i], users[i], holds[i] = it.req.PoolID, it.req.RequestID, it.req.UserID, it.req.holdMillis().Valid
	}
	rows, err := s.db.Query(ctx, soldOutSQL, pools, reqs, users, holds)
	if err != nil {
		return nil, err
	}
	return itemRows(rows, n, func(sold *bool) []any { return []any{sold} })
}
