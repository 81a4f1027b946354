// Package jobs runs the scheduled work of dispenserd on robfig/cron: refill
// (stage codes into Redis for pools below their low-water mark, and keep the
// claim tables' planner statistics true to their size), reconcile
// (void expired codes, return codes Redis lost or that stayed in flight),
// expire holds (end reservations whose hold ran out) and deliver (prizes). Each job runs on one replica at a time, under a Postgres advisory
// lock; a runner that dies mid-batch leaves nothing the next run cannot
// finish, because every step is a conditional update.
package jobs

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/robfig/cron/v3"

	"github.com/dispenserhq/dispenser/claim"
	"github.com/dispenserhq/dispenser/pool"
	"github.com/dispenserhq/dispenser/prize"
)

// ErrBusy means another replica is running the job right now.
var ErrBusy = errors.New("job is running on another replica")

// Defaults of the schedule; dispenserd's flags use them.
const (
	RefillEveryDefault      = 2 * time.Second
	ReconcileEveryDefault   = 30 * time.Second
	ReconcileGraceDefault   = time.Minute
	ExpireHoldsEveryDefault = time.Second
	DeliverScheduleDefault  = "0 3 * * *" // cron: 03:00 every night
)

// Config tunes the Runner.
type Config struct {
	// RefillEvery is the refill period; default 2s.
	RefillEvery time.Duration
	// ReconcileEvery is the reconcile period; default 30s.
	ReconcileEvery time.Duration
	// ReconcileGrace is how old a staged batch or an in-flight entry must be
	// before reconcile may return it; default 1m. It must exceed the longest
	// a claim can take to commit.
	ReconcileGrace time.Duration
	// ExpireHoldsEvery is the hold expiry period; default 1s. Holds end
	// within about this long after their time (a confirm refuses them
	// at once).
	ExpireHoldsEvery time.Duration
	// DeliverSchedule is the deliver job's cron spec (five fields); default
	// "0 3 * * *", nightly at 03:00.
	DeliverSchedule string
	// DeliverLocation is the time zone of DeliverSchedule; default UTC.
	DeliverLocation *time.Location
	// SessionDB, if set, holds the jobs' advisory locks instead of the
	// runner's db (which may sit behind a transaction pooler, where a
	// session lock would stay on a server connection other clients get).
	SessionDB *pgxpool.Pool
	// Observe, if set, is called after every run with its reports, error and
	// duration (metrics).
	Observe func(name Name, reports []PoolReport, err error, took time.Duration)
	Logger  *slog.Logger
}

// Name of a job.
type Name string

// The jobs.
const (
	Refill    Name = "refill"
	Reconcile Name = "reconcile"
	Deliver   Name = "deliver"
	// ExpireHolds ends reservations whose hold ran out.
	ExpireHolds Name = "expire-holds"
)

// LockText names a job's advisory lock. The lock key is a hash of the
// schema and this text, so deployments (and tests) in separate schemas of one
// database never block each other.
func LockText(name Name) string { return "dispenser.job:" + string(name) }

const tryLockSQL = "SELECT pg_try_advisory_lock(hashtextextended(current_schema() || ':' || $1, 0))"
const lockSQL = "SELECT true FROM pg_advisory_lock(hashtextextended(current_schema() || ':' || $1, 0))"
const unlockSQL = "SELECT pg_advisory_unlock(hashtextextended(current_schema() || ':' || $1, 0))"

// PoolReport tells what one job did to one pool.
type PoolReport struct {
	PoolID    string
	Staged    int
	Reconcile claim.ReconcileReport
	Deliver   prize.DeliverReport
	// HoldsExpired counts reservations the expire-holds job ended.
	HoldsExpired int64
	Balanced     bool
	// Stats are the pool's counts after a reconcile; nil for other jobs.
	Stats *pool.Stats
	// RedisStaged is the pool's staged list length after a reconcile, -1
	// when unknown.
	RedisStaged int64
	Err         error
}

// Runner schedules the jobs and runs them on demand.
type Runner struct {
	cfg        Config
	db         *pgxpool.Pool
	stager     *claim.Stager
	reconciler *claim.Reconciler
	deliverer  *prize.Deliverer
	pools      *pool.Store
	cron       *cron.Cron
	log        *slog.Logger
}

// New returns the Runner of the jobs over the pools in db: refill with
// stager, reconcile with reconciler, deliver with deliverer (nil leaves the
// deliver job out); the jobs' advisory locks live in db. Start schedules it.
func New(db *pgxpool.Pool, stager *claim.Stager, reconciler *claim.Reconciler, deliverer *prize.Deliverer, cfg Config) *Runner {
	cfg.RefillEvery = cmp.Or(cfg.RefillEvery, RefillEveryDefault)
	cfg.ReconcileEvery = cmp.Or(cfg.ReconcileEvery, ReconcileEveryDefault)
	cfg.ReconcileGrace = cmp.Or(cfg.ReconcileGrace, ReconcileGraceDefault)
	cfg.ExpireHoldsEvery = cmp.Or(cfg.ExpireHoldsEvery, ExpireHoldsEveryDefault)
	log := cmp.Or(cfg.Logger, slog.Default()).With("component", "jobs")
	cl := cronLogger{log}
	return &Runner{
		cfg:        cfg,
		db:         db,
		stager:     stager,
		reconciler: reconciler,
		deliverer:  deliverer,
		pools:      pool.NewStore(db),
		log:        log,
		cron:       cron.New(cron.WithChain(cron.Recover(cl), cron.SkipIfStillRunning(cl)), cron.WithLogger(cl)),
	}
}

// Start schedules the jobs. They run with ctx (cron gives jobs none) until
// Stop.
func (r *Runner) Start(ctx context.Context) error {
	for name, every := range map[Name]time.Duration{Refill: r.cfg.RefillEvery, Reconcile: r.cfg.ReconcileEvery,
		ExpireHolds: r.cfg.ExpireHoldsEvery} {
		if _, err := r.cron.AddFunc(fmt.Sprintf("@every %s", every), func() {
			if _, err := r.run(ctx, name, "", false); err != nil && !errors.Is(err, ErrBusy) && ctx.Err() == nil {
				r.log.Error("job failed", "job", string(name), "err", err)
			}
		}); err != nil {
			return fmt.Errorf("schedule %s: %w", name, err)
		}
	}
	if r.deliverer != nil {
		spec := cmp.Or(r.cfg.DeliverSchedule, DeliverScheduleDefault)
		loc := cmp.Or(r.cfg.DeliverLocation, time.UTC)
		sched, err := cron.ParseStandard("CRON_TZ=" + loc.String() + " " + spec)
		if err != nil {
			return fmt.Errorf("deliver schedule %q: %w", spec, err)
		}
		r.cron.Schedule(sched, cron.FuncJob(func() {
			if _, err := r.run(ctx, Deliver, "", false); err != nil && !errors.Is(err, ErrBusy) && ctx.Err() == nil {
				r.log.Error("job failed", "job", string(Deliver), "err", err)
			}
		}))
	}
	r.cron.Start()
	return nil
}

// Stop stops scheduling and waits for the running jobs, up to ctx.
func (r *Runner) Stop(ctx context.Context) {
	select {
	case <-r.cron.Stop().Done():
	case <-ctx.Done():
		r.log.Warn("jobs still running at shutdown deadline")
	}
}

// Run runs a job once over every pool, or over one, and returns a report per
// pool. If another replica (or this one's schedule) is running the job, Run
// waits for it to finish, up to ctx. A failure on one pool does not stop the
// others.
func (r *Runner) Run(ctx context.Context, name Name, poolID string) ([]PoolReport, error) {
	return r.run(ctx, name, poolID, true)
}

// run is Run; with wait false it returns ErrBusy at once when the job is
// running elsewhere, as scheduled ticks do.
func (r *Runner) run(ctx context.Context, name Name, poolID string, wait bool) (reports []PoolReport, err error) {
	switch {
	case name == Deliver && r.deliverer == nil:
		return nil, fmt.Errorf("the deliver job is not configured")
	case name != Refill && name != Reconcile && name != Deliver && name != ExpireHolds:
		return nil, fmt.Errorf("unknown job %q", name)
	}
	start := time.Now()
	if r.cfg.Observe != nil {
		defer func() { r.cfg.Observe(name, reports, err, time.Since(start)) }()
	}
	err = r.withLock(ctx, LockText(name), wait, func() error {
		if name == Deliver {
			byPool, err := r.deliverer.Run(ctx, poolID)
			for id, rep := range byPool {
				reports = append(reports, PoolReport{PoolID: id, Deliver: rep})
				r.log.Info("deliver run", "pool", id, "assigned", rep.Assigned, "delivered", rep.Delivered,
					"retried", rep.Retried, "parked", rep.Parked)
			}
			slices.SortFunc(reports, func(a, b PoolReport) int { return cmp.Compare(a.PoolID, b.PoolID) })
			return err
		}
		if name == ExpireHolds {
			// One statement over every pool's due holds (an index of open
			// holds by expiry), not a pass per pool.
			byPool, err := claim.ExpireHolds(ctx, r.db, poolID)
			for id, n := range byPool {
				reports = append(reports, PoolReport{PoolID: id, HoldsExpired: n, RedisStaged: -1})
				r.log.Info("holds expired", "pool", id, "expired", n)
			}
			slices.SortFunc(reports, func(a, b PoolReport) int { return cmp.Compare(a.PoolID, b.PoolID) })
			return err
		}
		if name == Refill {
			// Every claim probes these tables; keep their plans true to
			// their size. A failure is logged and leaves the refill to run.
			_, _ = claim.RefreshProbeStats(ctx, r.db, r.log)
		}
		pools, err := r.selectPools(ctx, poolID)
		if err != nil {
			return err
		}
		for _, p := range pools {
			rep := PoolReport{PoolID: p.ID, RedisStaged: -1}
			switch name {
			case Refill:
				if p.Paused || (!p.ClaimEndsAt.IsZero() && time.Now().After(p.ClaimEndsAt)) {
					continue
				}
				rep.Staged, rep.Err = r.stager.Refill(ctx, p)
			case Reconcile:
				rep.Reconcile, rep.Err = r.reconciler.Reconcile(ctx, p, r.cfg.ReconcileGrace)
				if n, err := r.stager.StagedLen(ctx, p); err == nil {
					rep.RedisStaged = n
				}
				if rep.Err == nil {
					st, err := r.pools.PoolStats(ctx, p.ID)
					rep.Balanced, rep.Err, rep.Stats = st.Balanced(), err, &st
					if err == nil && !st.Balanced() {
						r.log.Error("pool does not balance", "pool", p.ID, "imported", st.Imported,
							"available", st.Available, "staged", st.Staged, "held", st.Held, "claimed", st.Claimed, "void", st.Void)
					}
				}
			}
			if rep.Err != nil {
				r.log.Warn("job failed for a pool", "job", string(name), "pool", p.ID, "err", rep.Err)
			} else if rep.Staged > 0 || rep.Reconcile != (claim.ReconcileReport{}) {
				r.log.Info("job changed a pool", "job", string(name), "pool", p.ID, "staged", rep.Staged,
					"expired", rep.Reconcile.Expired, "returned_lost_batches", rep.Reconcile.LostBatches,
					"returned_stale", rep.Reconcile.Stale, "returned_orphans", rep.Reconcile.Orphans,
					"returned_dropped_shards", rep.Reconcile.Dropped)
			}
			reports = append(reports, rep)
		}
		return nil
	})
	return reports, err
}

func (r *Runner) selectPools(ctx context.Context, poolID string) ([]pool.Pool, error) {
	if poolID != "" {
		p, err := r.pools.GetPool(ctx, poolID)
		if err != nil {
			return nil, err
		}
		return []pool.Pool{p}, nil
	}
	var all []pool.Pool
	after := ""
	for {
		page, err := r.pools.ListPools(ctx, after, 500)
		if err != nil {
			return nil, err
		}
		all = append(all, page...)
		if len(page) < 500 {
			return all, nil
		}
		after = page[len(page)-1].ID
	}
}

// withLock runs fn while holding a session advisory lock on one connection.
// If another replica holds it, withLock waits for it (wait) or returns
// ErrBusy at once. If this process dies, its connection closes and the lock
// is released.
func (r *Runner) withLock(ctx context.Context, key string, wait bool, fn func() error) error {
	conn, err := cmp.Or(r.cfg.SessionDB, r.db).Acquire(ctx)
	if err != nil {
		return fmt.Errorf("job lock: %w", err)
	}
	defer conn.Release()
	var got bool
	q := tryLockSQL
	if wait {
		q = lockSQL
	}
	if err := conn.QueryRow(ctx, q, key).Scan(&got); err != nil {
		return fmt.Errorf("job lock: %w", err)
	}
	if !got {
		return ErrBusy
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, err := conn.Exec(uctx, unlockSQL, key); err != nil {
			// Closing the connection releases the lock for sure.
			_ = conn.Conn().Close(uctx)
		}
	}()
	return fn()
}

// cronLogger adapts slog to cron's logger.
type cronLogger struct{ log *slog.Logger }

func (l cronLogger) Info(msg string, kv ...any) { l.log.Debug(msg, kv...) }
func (l cronLogger) Error(err error, msg string, kv ...any) {
	l.log.Error(msg, append(kv, "err", err)...)
}
