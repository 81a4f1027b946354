package claim

import (
	"context"
	_ "embed"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dispenserhq/dispenser/internal/pgerr"
)

//go:embed sql/mark_drained.sql
var markDrainedSQL string

// A pool's staged codes are found through its live refill batches
// (migrations/012_hot_claims.sql): each live batch costs a read of its id
// range, so batches whose codes are all gone are marked drained and read no
// more. Reconcile marks them every period; between, a pool running dry gets
// its marks sooner (a refill that finds less than it asked for, a sold-out
// check), so that the checks a sale's last claims and the calls after its
// sell-out make read only the batches still in Redis.
const drainMarkEvery = 500 * time.Millisecond

// drainMarks marks a pool's drained batches at most once per
// drainMarkEvery per process, on the caller's goroutine.
type drainMarks struct {
	db   *pgxpool.Pool
	last sync.Map // pool id -> *atomic.Int64, unix nanoseconds of the last mark
}

// markDrained marks the pool's live batches with no staged code left as
// drained.
func markDrained(ctx context.Context, db *pgxpool.Pool, poolID string) error {
	if _, err := db.Exec(ctx, markDrainedSQL, poolID); err != nil {
		return pgerr.Wrap("mark drained batches", err)
	}
	return nil
}

// maybe marks the pool's drained batches unless this process did so less
// than drainMarkEvery ago. Best effort: reconcile marks what this misses.
func (m *drainMarks) maybe(ctx context.Context, poolID string) {
	v, _ := m.last.LoadOrStore(poolID, new(atomic.Int64))
	last := v.(*atomic.Int64)
	now := time.Now().UnixNano()
	prev := last.Load()
	if now-prev < int64(drainMarkEvery) || !last.CompareAndSwap(prev, now) {
		return
	}
	mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = markDrained(mctx, m.db, poolID)
}
