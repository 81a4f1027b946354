package claim

import (
	"cmp"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dispenserhq/dispenser/internal/stock"
	"github.com/dispenserhq/dispenser/pool"
)

// RedisConfig configures the Redis allocator.
type RedisConfig struct {
	// ReplayTTL is how long Redis keeps replay records and user counts;
	// older replays are answered from Postgres. Default 24h.
	ReplayTTL time.Duration
	// ScriptTimeout bounds each Redis call of a claim; default 250ms.
	ScriptTimeout time.Duration
	// Commit tunes the group commit.
	Commit CommitterConfig
}

// RedisAllocator pops staged codes from Redis with one Lua script and
// persists the claims in group commits. Postgres decides every claim: a code
// Postgres refuses is skipped and the claim retried with another.
type RedisAllocator struct {
	db         *pgxpool.Pool
	stock      *stock.Store
	ttl        time.Duration
	tmo        time.Duration
	refusalTTL time.Duration
	// ahead, if set, is told of pops and refills a list found empty.
	ahead *ahead
	// soldOut, if set, refuses at once the claims of a pool with nothing
	// left when they find every shard empty.
	soldOut *soldOut
	// breakers, if set, guard each pool shard (breaker.go).
	breakers *breakers
	pipe     *stock.Pipe
	commit   *committer
	settler  *settler
	log      *slog.Logger
}

// NewRedisAllocator returns the allocator of the pools in st, deciding in db
// and keeping refusals for refusalTTL; Start starts its script sender and
// group committer, Stop ends them.
func NewRedisAllocator(db *pgxpool.Pool, st *stock.Store, refusalTTL time.Duration, log *slog.Logger, cfg RedisConfig) *RedisAllocator {
	a := &RedisAllocator{db: db, stock: st, ttl: cmp.Or(cfg.ReplayTTL, ReplayTTLDefault),
		tmo: cmp.Or(cfg.ScriptTimeout, ScriptTimeoutDefault), refusalTTL: cmp.Or(refusalTTL, RefusalTTLDefault),
		log: cmp.Or(log, slog.Default())}
	a.commit = newCommitter(db, cfg.Commit, a.refusalTTL, a.clearLedger, a.log)
	a.settler = newSettler(db, a.refusalTTL, a.log)
	a.pipe = st.NewPipe(a.tmo, a.log)
	return a
}

// Start starts the script sender, the group committer and the batchers of
// settles and sold-out checks.
func (a *RedisAllocator) Start() {
	a.pipe.Start()
	a.commit.start()
	a.settler.start()
	if a.soldOut != nil {
		a.soldOut.start()
	}
}

// Stop commits the claims already popped, answers the settles and checks
// queued, and stops the batchers and the script pipeline.
func (a *RedisAllocator) Stop() {
	a.commit.Stop()
	a.settler.Stop()
	a.pipe.Stop()
	if a.soldOut != nil {
		a.soldOut.Stop()
	}
}

// redisError marks a failure of Redis itself, as opposed to an answer: the
// service then falls back to Postgres and counts it against the breaker.
type redisError struct{ err error }

func (e *redisError) Error() string { return "redis: " + e.err.Error() }
func (e *redisError) Unwrap() error { return e.err }

var (
	_ Allocator = (*RedisAllocator)(nil)
	_ Allocator = (*Fallback)(nil)
)

// maxRefusals bounds how many refused codes one claim skips before it
// leaves the pool to the fallback (which reads Postgres directly).
const maxRefusals = 8

// Claim pops a code and commits the claim. It returns errStagedEmpty when
// nothing is staged and a *redisError when Redis fails; both send the
// caller to the fallback. A refusal Redis alone would give (the user's
// count, another user's replay record) is first settled in Postgres, which
// may know better: a retry whose replay record expired, a count that
// outlived its claims.
//
// A pool spread over K Redis shards is popped from the user's home shard
// first (stock.HomeShard), then from the next ones while they are empty; the
// user's count and the request's replay record live in the shard that
// popped, so each pop stays one script. A retry that finds a code in
// another shard than its first claim's is answered by Postgres (outReplay)
// and its pop released.
func (a *RedisAllocator) Claim(ctx context.Context, p pool.Pool, req Request) (Result, error) {
	req.startedAt()
	args := stock.ClaimArgs{RequestID: req.RequestID, UserID: req.UserID, Limit: p.PerUserLimit, TTL: a.ttl}
	home := stock.HomeShard(req.UserID, shardCount(p))
	from := home
	for range maxRefusals {
		ans, shard, shardName, err := a.pop(ctx, p, args, from)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, stock.ErrPipeStopped) {
				return Result{}, cmp.Or(ctx.Err(), ErrStopped)
			}
			return Result{}, err // a *redisError, or every shard's breaker open
		}
		from = shard
		status, entry := outcome(ans.Outcome), ans.Entry
		switch status {
		case outExhausted:
			if a.soldOut != nil {
				// Most claims of a flash sale come after its last code:
				// when Postgres has nothing left either, say so now
				// rather than try a refill and the fallback first.
				if sold, err := a.soldOut.check(ctx, req); sold {
					return Result{}, ErrPoolExhausted
				} else if err != nil && ctx.Err() != nil {
					return Result{}, ctx.Err()
				}
			}
			if a.ahead == nil {
				return Result{}, errStagedEmpty
			}
			// Every shard is empty. Stage a batch into the home shard now
			// (or wait for the refills under way) and pop again; only a
			// pool with nothing left to stage goes to the fallback.
			n, err := a.ahead.empty(ctx, p, home)
			if err != nil || n == 0 {
				return Result{}, errStagedEmpty
			}
			from = home
			continue
		case outLimit, outReused:
			res, decided, held, err := a.settle(ctx, req, status == outLimit)
			if err != nil || decided {
				return res, err
			}
			if status == outReused {
				// Redis names another owner and Postgres has nothing for
				// the request yet: the owner's claim is on its way.
				return Result{}, ErrRequestReused
			}
			// The count was a stale guard: set it to Postgres's and retry.
			sctx, cancel := context.WithTimeout(ctx, a.tmo)
			args.PoolID = shardName
			err = a.stock.SetUserCount(sctx, args, held)
			cancel()
			if err != nil {
				return Result{}, &redisError{err}
			}
			continue
		case outPopped, outReplay:
		default:
			return Result{}, &redisError{fmt.Errorf("claim script answered %q", status)}
		}
		codeID, err := stock.EntryCodeID(entry)
		if err != nil {
			return Result{}, &redisError{err}
		}
		popped := status == outPopped
		if popped && a.ahead != nil && ans.Left >= 0 {
			a.ahead.popped(p, shard, shardName, ans.Left)
		}
		res := a.commit.submit(ctx, &commitItem{req: req, codeID: codeID, entry: entry, shard: shardName, popped: popped})
		if res.err != nil {
			return Result{}, res.err
		}
		switch res.outcome {
		case outClaimed:
			return Result{Claim: res.claim, Replayed: false, Path: PathRedis}, nil
		case outReplay, outHeld:
			// Postgres already had this user's claim (or hold) for the request. If
			// Redis named another code (it forgot the request), the popped
			// one went back to available; point the replay record at the
			// real claim.
			replayTo := entry
			if res.claim.CodeID != codeID {
				replayTo = stock.FormatEntry(res.claim.CodeID)
			}
			if popped || res.claim.CodeID != codeID {
				a.release(ctx, shardName, args, entry, replayTo, popped)
			}
			return Result{Claim: res.claim, Replayed: true, Path: PathReplay}, nil
		case outReused, outLimit, outExhausted, outHoldLimit, outExpired, outCancelled:
			a.release(ctx, shardName, args, entry, "", popped)
			return Result{}, res.outcome.refusal()
		case outRefused, outDup:
			// Claimed elsewhere, void, expired or reconciled: skip it.
			a.release(ctx, shardName, args, entry, "", popped)
			continue
		default:
			return Result{}, fmt.Errorf("group commit: unexpected outcome %q", res.outcome)
		}
	}
	return Result{}, errStagedEmpty
}

// pop runs the claim script on shard from of the pool, then on the next
// shards while they answer exhausted (starting a background refill of each)
// or cannot answer (Redis failing, the shard's breaker open), and returns
// the first other answer and the shard that gave it (its index and name).
// When no shard gave one,
// it returns the first failure met (a *redisError or the breaker's error:
// the codes may be in that shard), else exhausted: every shard is empty.
func (a *RedisAllocator) pop(ctx context.Context, p pool.Pool, args stock.ClaimArgs, from int) (stock.Answer, int, string, error) {
	k := shardCount(p)
	shard := from
	var failed error
	for tried := 1; ; tried++ {
		args.PoolID = stock.Shard(p.ID, shard)
		ans, err := a.popShard(ctx, args)
		switch {
		case err == nil && outcome(ans.Outcome) != outExhausted:
			return ans, shard, args.PoolID, nil
		case err == nil:
			if a.ahead != nil && tried < k {
				a.ahead.dry(p, shard, args.PoolID)
			}
		case ctx.Err() != nil || errors.Is(err, stock.ErrPipeStopped):
			return ans, shard, args.PoolID, err
		default:
			failed = cmp.Or(failed, err)
		}
		if tried >= k {
			return stock.Answer{Outcome: string(outExhausted), Left: -1}, shard, args.PoolID, failed
		}
		shard = (shard + 1) % k
	}
}

// popShard runs the claim script on one shard behind its breaker.
func (a *RedisAllocator) popShard(ctx context.Context, args stock.ClaimArgs) (stock.Answer, error) {
	if a.breakers == nil {
		ans, err := a.pipe.Claim(ctx, args)
		return ans, scriptError(ctx, err)
	}
	done, err := a.breakers.of(args.PoolID).Allow()
	if err != nil {
		return stock.Answer{}, err
	}
	ans, err := a.pipe.Claim(ctx, args)
	err = scriptError(ctx, err)
	done(err)
	return ans, err
}

// scriptError marks a claim script's failure as Redis's own, unless the call
// was cancelled or the pipe stopped.
func scriptError(ctx context.Context, err error) error {
	if err == nil || ctx.Err() != nil || errors.Is(err, stock.ErrPipeStopped) {
		return err
	}
	return &redisError{fmt.Errorf("claim script: %w", err)}
}

// settle asks Postgres about a request Redis would refuse. When Postgres
// has the answer (the request's claim, or a refusal) it is returned with
// decided true; otherwise held is the user's claim count. With limit, a
// user at the pool's limit is refused (and the refusal recorded).
func (a *RedisAllocator) settle(ctx context.Context, req Request, limit bool) (res Result, decided bool, held int64, err error) {
	ans := a.settler.settle(ctx, req, limit)
	if ans.err != nil {
		return Result{}, true, 0, ans.err
	}
	switch o := outcome(ans.out); o {
	case outOpen:
		return Result{}, false, ans.held, nil
	case outReplay, outHeld:
		return Result{Claim: ans.row.claim(req.PoolID, req.RequestID, req.UserID), Replayed: true, Path: PathReplay}, true, ans.held, nil
	default:
		if err := o.refusal(); err != nil {
			return Result{}, true, ans.held, err
		}
		return Result{}, true, ans.held, fmt.Errorf("settle request: unexpected outcome %q", ans.out)
	}
}

// release undoes a pop Postgres refused or answered from an earlier claim,
// in the shard that popped: it clears the ledger entry, the count if this
// call popped the entry, and points the request's replay record at the
// entry replayTo ("" deletes it). Failures only leave guards and ledger
// entries that expire or that the reconciler clears.
func (a *RedisAllocator) release(ctx context.Context, shard string, args stock.ClaimArgs, entry, replayTo string, popped bool) {
	args.PoolID = shard
	err := a.stock.Release(context.WithoutCancel(ctx), args, entry, replayTo, popped)
	if err != nil {
		a.log.WarnContext(ctx, "release after refusal failed; the reconciler will clear it", "pool", args.PoolID, "err", err)
	}
}

// clearLedger removes committed entries from the in-flight ledgers, with
// the claim pipe's next pipeline.
func (a *RedisAllocator) clearLedger(batch []*commitItem) {
	byShard := make(map[string][]string, 1)
	for _, it := range batch {
		byShard[it.shard] = append(byShard[it.shard], it.entry)
	}
	a.pipe.Clear(byShard)
}
