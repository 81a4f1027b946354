package claim

import (
	"context"
	_ "embed"
	"log/slog"
	"slices"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dispenserhq/dispenser/internal/pgerr"
)

//go:embed sql/settle.sql
var settleSQL string

// settler answers, from Postgres, the requests that Redis refused (a user's
// count at the limit, a request id another user holds), before the refusal
// reaches the caller (dispenser_settle_v2). Concurrent ones share one
// statement and one commit (dispenser_settle_many_v1): a user at the limit
// asking again is common in a flash sale, and alone each cost a transaction
// of its own (about 700 µs of server CPU, more than three claims).
type settler struct {
	db         *pgxpool.Pool
	refusalTTL time.Duration
	log        *slog.Logger
	group      *grouper[*settleItem]
}

// settler batching: at most settleMaxBatch requests a statement, the first
// waits settleMaxWait for others, settleInFlight statements at once.
const (
	settleMaxBatch = 128
	settleMaxWait  = 200 * time.Microsecond
	settleInFlight = 2
	settleTimeout  = 10 * time.Second
)

type settleItem struct {
	req   Request
	limit bool
	done  chan settleAnswer
}

// settleAnswer is one request's row: its outcome, the claim (for a replay)
// and the user's row count (claims and open holds).
type settleAnswer struct {
	out  string
	row  claimRow
	held int64
	err  error
}

func newSettler(db *pgxpool.Pool, refusalTTL time.Duration, log *slog.Logger) *settler {
	s := &settler{db: db, refusalTTL: refusalTTL, log: log}
	s.group = newGrouper(settleMaxBatch, settleMaxWait, settleInFlight, s.flush)
	return s
}

func (s *settler) start() { s.group.start() }

// Stop answers the requests queued and stops the batcher.
func (s *settler) Stop() { s.group.Stop() }

// settle queues req and waits for Postgres's answer. Once queued, the
// request is decided even if ctx ends; the caller then just stops waiting.
func (s *settler) settle(ctx context.Context, req Request, limit bool) settleAnswer {
	req.startedAt()
	it := &settleItem{req: req, limit: limit, done: make(chan settleAnswer, 1)}
	a, err := await(ctx, s.group, it, it.done)
	if err != nil {
		return settleAnswer{err: err}
	}
	return a
}

// flush decides one batch, its items sorted by pool, user and request so
// that concurrent batches take request locks in one order; a batch that
// lost a deadlock runs again (nothing of it stayed).
func (s *settler) flush(batch []*settleItem) {
	slices.SortFunc(batch, func(a, b *settleItem) int { return lockOrder(a.req, b.req) })
	answers, err := retried(s.log, "settle batch", len(batch), func() ([]settleAnswer, error) { return s.decide(batch) })
	for i, it := range batch {
		if err != nil {
			it.done <- settleAnswer{err: pgerr.Wrap("settle request", err)}
			continue
		}
		it.done <- answers[i]
	}
}

// decide runs one batch: a single statement, so its implicit transaction
// has committed once its rows are read to the end.
func (s *settler) decide(batch []*settleItem) ([]settleAnswer, error) {
	ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
	defer cancel()
	n := len(batch)
	pools, reqs, users, limits, started := make([]string, n), make([]string, n), make([]string, n), make([]bool, n), make([]time.Time, n)
	for i, it := range batch {
		pools[i], reqs[i], users[i], limits[i], started[i] = it.req.PoolID, it.req.RequestID, it.req.UserID, it.limit, it.req.startedAt()
	}
	rows, err := s.db.Query(ctx, settleSQL, pools, reqs, users, limits, started, s.refusalTTL)
	if err != nil {
		return nil, err
	}
	return itemRows(rows, n, func(a *settleAnswer) []any {
		return append(append([]any{&a.out}, a.row.holdDest()...), &a.held)
	})
}
