package jobs_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/dispenserhq/dispenser/claim"
	"github.com/dispenserhq/dispenser/internal/stock"
	"github.com/dispenserhq/dispenser/internal/testenv"
	"github.com/dispenserhq/dispenser/jobs"
	"github.com/dispenserhq/dispenser/pool"
	"github.com/dispenserhq/dispenser/prize"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

type bundle struct {
	db     *testenv.Schema
	store  *pool.Store
	claims *claim.Service
	keys   stock.Keys
	runner *jobs.Runner
}

func setup(t *testing.T) *bundle {
	t.Helper()
	db := testenv.Postgres(t)
	rdb, ns := testenv.Redis(t)
	log := slog.New(slog.DiscardHandler)
	keys := stock.NewKeys(ns)
	svc := testenv.Must(claim.NewService(db.Pool, rdb, keys, claim.Config{Logger: log}))
	require.NoError(t, svc.Start(context.Background()))
	t.Cleanup(svc.Stop)
	r := jobs.New(db.Pool, claim.NewStager(db.Pool, rdb, keys, false), claim.NewReconciler(db.Pool, rdb, keys), nil,
		jobs.Config{RefillEvery: 100 * time.Millisecond,
			ReconcileEvery: 100 * time.Millisecond, ReconcileGrace: time.Hour, Logger: log})
	return &bundle{db: db, store: pool.NewStore(db.Pool), claims: svc, keys: keys, runner: r}
}

func (b *bundle) fill(t *testing.T, p pool.Pool, n int) {
	t.Helper()
	ctx := context.Background()
	_, err := b.store.CreatePool(ctx, p)
	require.NoError(t, err)
	var data strings.Builder
	for i := range n {
		fmt.Fprintf(&data, "%s-%06d\n", p.ID, i)
	}
	_, err = b.store.Import(ctx, pool.ImportOptions{PoolID: p.ID, Format: pool.FormatLines}, strings.NewReader(data.String()))
	require.NoError(t, err)
}

func staged(t *testing.T, b *bundle, id string) int64 {
	t.Helper()
	st, err := b.store.PoolStats(context.Background(), id)
	require.NoError(t, err)
	require.True(t, st.Balanced())
	return st.Staged
}

// The schedule refills active pools by itself, skips paused ones, and stops
// cleanly.
func TestScheduledRefill(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.fill(t, pool.Pool{ID: "live", RefillLowWater: 10, RefillBatchSize: 25}, 100)
	b.fill(t, pool.Pool{ID: "paused", Paused: true}, 100)
	ctx, cancel := context.WithCancel(context.Background())
	require.NoError(t, b.runner.Start(ctx))
	require.Eventually(t, func() bool { return staged(t, b, "live") == 25 }, 10*time.Second, 20*time.Millisecond)
	cancel()
	stopCtx, stop := context.WithTimeout(context.Background(), 5*time.Second)
	defer stop()
	b.runner.Stop(stopCtx)
	require.EqualValues(t, 25, staged(t, b, "live"), "above the low-water mark, no more refills")
	require.Zero(t, staged(t, b, "paused"))
}

// Only one replica runs a job at a time: while another holds the job's
// advisory lock, a scheduled run skips (ErrBusy) and Run waits for it.
func TestRunIsExclusiveAcrossReplicas(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	b.fill(t, pool.Pool{ID: "p1"}, 10)
	other, err := b.db.Pool.Acquire(ctx)
	require.NoError(t, err)
	defer other.Release()
	lock := "SELECT pg_try_advisory_lock(hashtextextended(current_schema() || ':' || $1, 0))"
	var got bool
	require.NoError(t, other.QueryRow(ctx, lock, jobs.LockText(jobs.Refill)).Scan(&got))
	require.True(t, got)
	_, err = jobs.TryRun(b.runner, ctx, jobs.Refill, "")
	require.ErrorIs(t, err, jobs.ErrBusy)
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	_, err = b.runner.Run(short, jobs.Refill, "")
	require.ErrorIs(t, err, context.DeadlineExceeded, "Run waits for the lock, up to its deadline")
	// Reconcile has its own lock and runs.
	reports, err := b.runner.Run(ctx, jobs.Reconcile, "")
	require.NoError(t, err)
	require.Len(t, reports, 1)
	require.True(t, reports[0].Balanced)

	_, err = other.Exec(ctx, "SELECT pg_advisory_unlock(hashtextextended(current_schema() || ':' || $1, 0))",
		jobs.LockText(jobs.Refill))
	require.NoError(t, err)
	reports, err = b.runner.Run(ctx, jobs.Refill, "p1")
	require.NoError(t, err)
	require.Equal(t, 10, reports[0].Staged)
}

// The deliver schedule is a cron spec in a time zone; a bad one is refused at
// start-up rather than never firing.
func TestDeliverSchedule(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	rdb, ns := testenv.Redis(t)
	log := slog.New(slog.DiscardHandler)
	keys := stock.NewKeys(ns)
	svc := testenv.Must(claim.NewService(db.Pool, rdb, keys, claim.Config{Logger: log}))
	stager, reconciler := claim.NewStager(db.Pool, rdb, keys, false), claim.NewReconciler(db.Pool, rdb, keys)
	require.NoError(t, svc.Start(context.Background()))
	t.Cleanup(svc.Stop)
	d := prize.NewDeliverer(db.Pool, svc, nil, prize.DeliverConfig{Logger: log})
	shanghai, err := time.LoadLocation("Asia/Shanghai")
	require.NoError(t, err)

	ok := jobs.New(db.Pool, stager, reconciler, d, jobs.Config{DeliverSchedule: "30 2 * * *", DeliverLocation: shanghai, Logger: log})
	ctx, cancel := context.WithCancel(context.Background())
	require.NoError(t, ok.Start(ctx))
	cancel()
	ok.Stop(context.Background())

	bad := jobs.New(db.Pool, stager, reconciler, d, jobs.Config{DeliverSchedule: "at three", Logger: log})
	require.ErrorContains(t, bad.Start(context.Background()), "deliver schedule")
	bad.Stop(context.Background())

	none := jobs.New(db.Pool, stager, reconciler, nil, jobs.Config{Logger: log})
	_, err = none.Run(context.Background(), jobs.Deliver, "")
	require.ErrorContains(t, err, "not configured")
}
