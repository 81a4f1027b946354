package claim

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/dispenserhq/dispenser/internal/stock"
	"github.com/dispenserhq/dispenser/internal/testenv"
	"github.com/dispenserhq/dispenser/pool"
)

func TestMain(m *testing.M) {
	// go-redis redials a node that refused a connection from a goroutine
	// of its own, which sleeps a second between tries and may outlive the
	// client's Close by that second (tests that kill a Redis node).
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).tryDial"))
}

// env is one test's service on its own schema and Redis namespace.
type env struct {
	t     *testing.T
	db    *testenv.Schema
	rdb   redis.UniversalClient
	ns    string // the Redis namespace of keys
	keys  stock.Keys
	store *pool.Store
	svc   *Service
	// stager and reconciler work on the same pools as svc.
	stager     *Stager
	reconciler *Reconciler
}

type envOpts struct {
	// redis, if set, replaces the shared test Redis (fault tests).
	redis redis.UniversalClient
	// db, if set, replaces a schema on the shared test Postgres (fault
	// tests on a cluster of the test's own).
	db *testenv.Schema
}

// start begins a parallel test with an env of its own.
func start(t *testing.T) (context.Context, *env) {
	t.Helper()
	t.Parallel()
	return context.Background(), newEnv(t)
}

func newEnv(t *testing.T, opts ...envOpts) *env {
	t.Helper()
	rdb, ns := testenv.Redis(t)
	var use redis.UniversalClient = rdb
	var db *testenv.Schema
	if len(opts) > 0 {
		if opts[0].redis != nil {
			use = opts[0].redis
		}
		db = opts[0].db
	}
	if db == nil {
		db = testenv.Postgres(t)
	}
	e := &env{t: t, db: db, rdb: use, ns: ns, keys: stock.NewKeys(ns), store: pool.NewStore(db.Pool)}
	e.svc = testenv.Must(NewService(db.Pool, use, e.keys, Config{
		PoolCacheTTL:   20 * time.Millisecond,
		BreakerOpenFor: 100 * time.Millisecond,
		Logger:         slog.New(slog.DiscardHandler),
	}))
	e.stager, e.reconciler = NewStager(db.Pool, use, e.keys, false), NewReconciler(db.Pool, use, e.keys)
	require.NoError(t, e.svc.Start(context.Background()))
	t.Cleanup(e.svc.Stop)
	return e
}

// manualStaging turns refill ahead of demand off, for tests that stage by
// hand and count on exactly what they staged.
func (e *env) manualStaging() { e.svc.redis.ahead = nil }

// fill creates a pool and imports n codes into it: "<prefix>-<i>".
func (e *env) fill(id string, n int, p pool.Pool) pool.Pool {
	e.t.Helper()
	ctx := context.Background()
	p.ID = id
	p, err := e.store.CreatePool(ctx, p)
	require.NoError(e.t, err)
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "%s-CODE-%06d\n", id, i)
	}
	sum, err := e.store.Import(ctx, pool.ImportOptions{PoolID: id, Format: pool.FormatLines}, strings.NewReader(b.String()))
	require.NoError(e.t, err)
	require.EqualValues(e.t, n, sum.Inserted)
	return p
}

// refilled is fill, then one refill of the pool: a pool with a batch of
// codes staged and the rest available.
func (e *env) refilled(id string, n int, settings pool.Pool) pool.Pool {
	e.t.Helper()
	p := e.fill(id, n, settings)
	_, err := e.stager.Refill(context.Background(), p)
	require.NoError(e.t, err)
	return p
}

// fillStaged is fill, then stageAll: a pool whose codes are all in Redis.
func (e *env) fillStaged(id string, n int, settings pool.Pool) pool.Pool {
	e.t.Helper()
	p := e.fill(id, n, settings)
	e.stageAll(p)
	return p
}

// stageAll refills until nothing is left to stage.
func (e *env) stageAll(p pool.Pool) {
	e.t.Helper()
	for {
		// A zero low-water mark with a non-empty list would skip the refill.
		p.RefillLowWater = 1 << 30
		n, err := e.stager.Refill(context.Background(), p)
		require.NoError(e.t, err)
		if n == 0 {
			return
		}
	}
}

// querier runs a query: a pool, a connection or a transaction.
type querier interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}

// stagedIDs is the ids of the first n staged codes of a pool, in id order.
func stagedIDs(t *testing.T, db querier, poolID string, n int) []int64 {
	t.Helper()
	ids, err := pgx.CollectRows(testenv.Must(db.Query(t.Context(),
		`SELECT id FROM codes WHERE pool_id = $1 AND state = 'staged' ORDER BY id LIMIT $2`, poolID, n)), pgx.RowTo[int64])
	require.NoError(t, err)
	return ids
}

// audit checks promises 1, 2 and 5 in Postgres and Redis for a pool, with
// the same reconciliation the bench and the kill drill use.
func (e *env) audit(poolID string) pool.Stats {
	e.t.Helper()
	ctx := context.Background()
	rep, err := Audit(ctx, e.db.Pool, stock.New(e.rdb, e.keys), poolID)
	require.NoError(e.t, err)
	require.Zero(e.t, rep.Unbalanced(), "imported %d != available %d + staged %d + held %d + claimed %d + void %d",
		rep.Imported, rep.Available, rep.Staged, rep.Held, rep.Claimed, rep.Void)
	require.Zero(e.t, rep.Duplicates(), "duplicates: %+v", rep)
	// No test fails Redis over losing writes, so no entry is staged twice.
	require.Zero(e.t, rep.RedisDuplicates, "entries staged twice: %+v", rep)
	require.Zero(e.t, rep.Lost(), "lost: %+v", rep)
	require.Zero(e.t, rep.UsersOverLimit, "users over the limit")
	require.Equal(e.t, rep.Claimed+rep.Held, rep.Claims)
	st, err := e.store.PoolStats(ctx, poolID)
	require.NoError(e.t, err)
	return st
}
