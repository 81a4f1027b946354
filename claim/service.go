package claim

import (
	"cmp"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/dispenserhq/dispenser/internal/fresh"
	"github.com/dispenserhq/dispenser/internal/input"
	"github.com/dispenserhq/dispenser/internal/pgerr"
	"github.com/dispenserhq/dispenser/internal/stock"
	"github.com/dispenserhq/dispenser/pool"
)

//go:embed sql/staged_lost.sql
var stagedLostSQL string

// Defaults of the claim service's tunables; dispenserd's flags use them.
const (
	// RefusalTTLDefault is how long a definite refusal is kept.
	RefusalTTLDefault = 10 * time.Minute
	// PoolCacheTTLDefault is how long pool settings are cached.
	PoolCacheTTLDefault = time.Second
	// BreakerFailuresDefault is how many Redis failures in a row open the breaker.
	BreakerFailuresDefault = 3
	// BreakerOpenForDefault is how long the breaker stays open before a probe.
	BreakerOpenForDefault = time.Second
	// ReplayTTLDefault is how long Redis keeps replay records and user counts.
	ReplayTTLDefault = 24 * time.Hour
	// ScriptTimeoutDefault bounds each Redis call of a claim.
	ScriptTimeoutDefault = 250 * time.Millisecond
	// CommitMaxBatchDefault is the most claims in one group commit.
	CommitMaxBatchDefault = 256
	// CommitMaxWaitDefault is how long a group commit waits to fill.
	CommitMaxWaitDefault = time.Millisecond
	// CommitMaxInFlightDefault is how many group commits run at once.
	CommitMaxInFlightDefault = 1
	// CommitTimeoutDefault bounds one group commit transaction.
	CommitTimeoutDefault = 10 * time.Second
)

// Validate reports a tunable out of range (zero means its default).
func (c Config) Validate() error {
	cc := c.RedisAllocator.Commit
	for _, d := range []struct {
		name string
		bad  bool
	}{
		{"PoolCacheTTL", c.PoolCacheTTL < 0},
		{"BreakerOpenFor", c.BreakerOpenFor < 0},
		{"RefusalTTL", c.RefusalTTL < 0},
		{"FallbackConcurrency", c.FallbackConcurrency < 0},
		{"RedisAllocator.ReplayTTL", c.RedisAllocator.ReplayTTL < 0},
		{"RedisAllocator.ScriptTimeout", c.RedisAllocator.ScriptTimeout < 0},
		{"RedisAllocator.Commit.MaxBatch", cc.MaxBatch < 0 || cc.MaxBatch > 10_000},
		{"RedisAllocator.Commit.MaxWait", cc.MaxWait < 0 || cc.MaxWait > time.Second},
		{"RedisAllocator.Commit.MaxInFlight", cc.MaxInFlight < 0 || cc.MaxInFlight > 64},
		{"RedisAllocator.Commit.CommitTimeout", cc.CommitTimeout < 0},
	} {
		if d.bad {
			return fmt.Errorf("claim config: %s is out of range", d.name)
		}
	}
	return nil
}

// Config configures a Service.
type Config struct {
	// PoolCacheTTL is how long pool settings are cached: pausing a pool
	// takes effect within it. Default 1s.
	PoolCacheTTL time.Duration
	// BreakerFailures is how many Redis failures in a row open a pool
	// shard's breaker; default 3. While it is open, claims skip the shard
	// (a pool of one shard goes straight to Postgres). Each pool shard has
	// its own, so one Redis Cluster master failing over only affects the
	// shards it served.
	BreakerFailures uint32
	// BreakerOpenFor is how long the breaker stays open before one probe
	// may try Redis again; default 1s.
	BreakerOpenFor time.Duration
	// RedisAllocator tunes the Redis allocator.
	RedisAllocator RedisConfig
	// RefusalTTL is how long a definite refusal (USER_LIMIT_REACHED,
	// POOL_EXHAUSTED) of a request is kept: copies and retries of the
	// request within it get the same refusal, even one that was about to
	// commit a claim; after it, a retry is decided afresh. It must outlast
	// the slowest group commit. Defaults to RefusalTTLDefault.
	RefusalTTL time.Duration
	// Now is the clock of the claim window; defaults to time.Now. Tests
	// move it instead of sleeping past a window's end.
	Now func() time.Time
	// FallbackConcurrency bounds the fallback transactions in Postgres at
	// once in this process (each decides the claims that queued meanwhile);
	// defaults to FallbackConcurrencyDefault.
	FallbackConcurrency int
	// FallbackOnly serves every claim from Postgres, never from Redis: the
	// same promises, Postgres-bound throughput. For benchmarks and for running
	// without Redis on purpose.
	FallbackOnly bool
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Service claims codes: pool rules first, then the Redis allocator behind a
// breaker, then the Postgres fallback when Redis fails, is open-circuited or
// has nothing staged.
type Service struct {
	db       *pgxpool.Pool
	pools    *pool.Store
	redis    *RedisAllocator
	fallback *Fallback
	// breakers holds one Redis breaker per pool shard (breaker.go).
	breakers *breakers
	log      *slog.Logger
	pgOnly   bool

	// pools' settings, read at most PoolCacheTTL ago (internal/fresh).
	settings *fresh.Cache[pool.Pool]
	ahead    *ahead
	stager   *Stager
	// confirms batches ConfirmReservation calls like the group commit.
	confirms *grouper[*confirmItem]
	now      func() time.Time
	// running is true between Start and Stop.
	running atomic.Bool
}

// NewService checks cfg and returns the claim service of the pools in db,
// with rdb as the fast allocator's store and keys naming their Redis keys;
// Start starts it, Stop ends it.
func NewService(db *pgxpool.Pool, rdb redis.UniversalClient, keys stock.Keys, cfg Config) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cmp.Or(cfg.Logger, slog.Default())
	refusalTTL := cmp.Or(cfg.RefusalTTL, RefusalTTLDefault)
	s := &Service{
		db:       db,
		pools:    pool.NewStore(db),
		redis:    NewRedisAllocator(db, stock.New(rdb, keys), refusalTTL, log, cfg.RedisAllocator),
		stager:   NewStager(db, rdb, keys, cfg.FallbackOnly),
		fallback: NewFallback(db, refusalTTL, cfg.FallbackConcurrency, log),
		log:      log,
		pgOnly:   cfg.FallbackOnly,
		now:      cfg.Now,
	}
	ttl := cmp.Or(cfg.PoolCacheTTL, PoolCacheTTLDefault)
	s.settings = fresh.New(func(ctx context.Context, id string) (pool.Pool, time.Duration, error) {
		p, err := s.pools.GetPool(ctx, id)
		return p, ttl, err
	}, poolReadTimeout, 0)
	cc := cfg.RedisAllocator.Commit
	s.confirms = newGrouper(cmp.Or(cc.MaxBatch, CommitMaxBatchDefault), cmp.Or(cc.MaxWait, CommitMaxWaitDefault),
		cmp.Or(cc.MaxInFlight, CommitMaxInFlightDefault), s.confirmBatch)
	if !cfg.FallbackOnly {
		s.ahead = newAhead(s)
		s.redis.ahead = s.ahead
		s.redis.soldOut = newSoldOut(db, s.stager.drained)
	}
	s.breakers = newBreakers(cmp.Or(cfg.BreakerFailures, BreakerFailuresDefault), cmp.Or(cfg.BreakerOpenFor, BreakerOpenForDefault), log)
	s.redis.breakers = s.breakers
	if s.now == nil {
		s.now = time.Now
	}
	return s, nil
}

// Start starts the Redis allocator's script sender and group committer (a
// FallbackOnly service has none) and the fallback's batcher. Claims before
// Start, or after Stop, answer ErrStopped.
func (s *Service) Start(context.Context) error {
	if !s.pgOnly {
		s.redis.Start()
	}
	s.fallback.Start()
	s.confirms.start()
	s.running.Store(true)
	return nil
}

// Stop ends refills ahead of demand, commits the claims in flight and stops
// the group committer and the fallback's batcher.
func (s *Service) Stop() {
	s.running.Store(false)
	if s.ahead != nil {
		s.ahead.stop()
	}
	s.redis.Stop()
	s.confirms.Stop()
	s.fallback.Stop()
}

// BreakerState is "closed" (Redis serves), "open" (Postgres serves) or
// "half-open" (one probe is trying Redis).
//
// With a breaker per pool shard, it is "open" if any shard's is, else
// "half-open" if any is, else "closed".
func (s *Service) BreakerState() string { return s.breakers.state().String() }

// Breakers lists the Redis breaker of every pool shard this service has
// claimed from, by shard name.
func (s *Service) Breakers() []ShardBreaker { return s.breakers.states() }

// Claim hands the user a code, or the code an earlier call with the same
// request id got. A request id that another user holds is ErrRequestReused.
func (s *Service) Claim(ctx context.Context, req Request) (Result, error) {
	if err := pool.ValidateID("pool_id", req.PoolID); err != nil {
		return Result{}, err
	}
	if err := req.Validate(); err != nil {
		return Result{}, err
	}
	res, err := s.claim(ctx, req, true)
	if err == nil && !res.Claim.HeldUntil.IsZero() {
		// The request is an open reservation of this user: not a claim
		// until confirmed, and its code is not shown.
		return Result{}, ErrReservationPending
	}
	return res, err
}

// ClaimPrize claims the code of prize prizeID, drawn earlier for userID:
// the same path and promises as Claim (idempotent, the per-user limit, a
// paused pool refuses), but outside the claim window too, since a win drawn
// inside it is delivered later. Its request id (PrizeRequestID) is one no
// caller can send.
func (s *Service) ClaimPrize(ctx context.Context, poolID, userID string, prizeID int64) (Result, error) {
	if err := pool.ValidateID("pool_id", poolID); err != nil {
		return Result{}, err
	}
	if err := input.UserID("user_id", userID); err != nil {
		return Result{}, err
	}
	if prizeID <= 0 {
		return Result{}, &FieldError{Field: "prize_id", Description: "must be positive"}
	}
	return s.claim(ctx, Request{PoolID: poolID, UserID: userID, RequestID: PrizeRequestID(prizeID)}, false)
}

// claim serves a validated request.
func (s *Service) claim(ctx context.Context, req Request, checkWindow bool) (Result, error) {
	if !s.running.Load() {
		return Result{}, ErrStopped
	}
	req.startedAt()
	p, err := s.pool(ctx, req.PoolID)
	if err != nil {
		return Result{}, err
	}
	if p.Paused {
		return Result{}, ErrPoolPaused
	}
	if checkWindow && !p.ClaimWindowOpen(s.now()) {
		return Result{}, ErrPoolClosed
	}
	if req.reserve {
		if req.hold == 0 {
			req.hold = p.HoldDefault
		}
		if req.hold > p.HoldMax {
			return Result{}, &FieldError{Field: "hold_for", Description: fmt.Sprintf("must be at most the pool's hold_max (%s)", p.HoldMax)}
		}
	}
	// A call that ended before anything was taken (its deadline passed on
	// the way, or the caller gave up) takes nothing. One that ends later
	// may still commit its claim, or leave its popped code in flight for
	// the reconciler to give back (docs/RELIABILITY.md).
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	// A pool whose last codes are locked by others (a refill staging them,
	// claims taking them) is not exhausted: wait a little for them to land.
	for attempt := 1; ; attempt++ {
		res, err := s.serve(ctx, p, req)
		if !errors.Is(err, errFallbackBusy) {
			return res, err
		}
		if attempt == busyAttempts {
			return Result{}, fmt.Errorf("claim: %w: %w", pgerr.ErrUnavailable, err)
		}
		select {
		case <-ctx.Done():
			return Result{}, ctx.Err()
		case <-time.After(busyPause):
		}
	}
}

// How long a claim waits for a pool's locked last codes: busyAttempts
// tries, busyPause apart. A refill commits in milliseconds.
const (
	busyAttempts = 40
	busyPause    = 5 * time.Millisecond
)

// serve claims through Redis behind the shards' breakers, or from Postgres.
func (s *Service) serve(ctx context.Context, p pool.Pool, req Request) (Result, error) {
	if s.pgOnly {
		return s.fallback.Claim(ctx, p, req)
	}
	res, err := s.redis.Claim(ctx, p, req)
	var re *redisError
	switch {
	case err == nil:
		return res, nil
	case errors.Is(err, errStagedEmpty):
		// Nothing staged in Redis. If Postgres holds staged codes that
		// Redis has neither listed nor in flight, Redis lost them (a
		// failover that dropped writes, a flush) or a refill is between
		// its two steps: they are coming back, so the pool is not sold out.
		req.redisDown = s.stagedLost(ctx, p)
	case errors.As(err, &re):
		s.log.WarnContext(ctx, "redis failed; claiming from Postgres", "pool", p.ID, "err", err)
		req.redisDown = true
	case isOpen(err):
		req.redisDown = true
	default:
		return Result{}, err
	}
	return s.fallback.Claim(ctx, p, req)
}

// stagedLost reports whether Postgres has any of the pool's codes staged
// that Redis holds neither in its list nor in flight. Redis is read first,
// by code id: a code committed meanwhile is no longer staged in Postgres, a
// code popped meanwhile stays in Redis (list to ledger in one script), so
// only a refill between its two steps (staged in Postgres, not yet pushed)
// can look lost, and its codes are indeed coming. If Redis cannot say, yes.
//
// Only the shards claims pop from count: codes on shards a lowered shard
// count dropped are lost to claims until reconcile returns them.
func (s *Service) stagedLost(ctx context.Context, p pool.Pool) bool {
	rctx, cancel := context.WithTimeout(ctx, s.redis.tmo)
	defer cancel()
	ids, err := s.redis.stock.CodeIDs(rctx, stock.Shards(p.ID, shardCount(p))...)
	if err != nil {
		return true
	}
	var lost bool
	if err := s.db.QueryRow(ctx, stagedLostSQL, p.ID, ids).Scan(&lost); err != nil {
		return false
	}
	return lost
}

// KnownPool reports whether id names a pool this service has found in
// Postgres. Metrics use it so that only real pools become label values,
// whatever ids callers send.
func (s *Service) KnownPool(id string) bool {
	return s.settings.Known(id)
}

// pool returns the pool's settings as read at most PoolCacheTTL ago. A
// busy pool's settings are read again in the background before they age
// out, and concurrent claims that find none share one read: no claim waits
// for Postgres to read them, and their expiry is no stampede of identical
// queries beside the group commits.
func (s *Service) pool(ctx context.Context, id string) (pool.Pool, error) {
	return s.settings.Get(ctx, id)
}

// poolReadTimeout bounds one read of a pool's settings, which the claims
// waiting for it share.
const poolReadTimeout = 5 * time.Second
