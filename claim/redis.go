package claim

import (
	"cmp"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/dispenserhq/dispenser/pool"
)

//go:embed sql/settle.sql
var settleSQL string

// RedisConfig configures the Redis allocator.
type RedisConfig struct {
	DB    *pgxpool.Pool
	Redis redis.UniversalClient
	Keys  pool.RedisKeys
	// ReplayTTL is how long Redis keeps replay records and user counts;
	// older replays are answered from Postgres. Default 24h.
	ReplayTTL time.Duration
	// ScriptTimeout bounds each Redis call of a claim; default 250ms.
	ScriptTimeout time.Duration
	// RefusalTTL is how long refusals are kept (see Config.RefusalTTL);
	// default RefusalTTLDefault.
	RefusalTTL time.Duration
	// Commit tunes the group commit.
	Commit CommitterConfig
	Logger *slog.Logger
}

// RedisAllocator pops staged codes from Redis with one Lua script and
// persists the claims in group commits. Postgres decides every claim: a code
// Postgres refuses is skipped and the claim retried with another.
type RedisAllocator struct {
	db         *pgxpool.Pool
	rdb        redis.UniversalClient
	keys       pool.RedisKeys
	ttl        time.Duration
	tmo        time.Duration
	refusalTTL time.Duration
	// ahead, if set, is told of pops and refills a list found empty.
	ahead  *ahead
	pipe   *scriptPipe
	commit *committer
	log    *slog.Logger
}

// NewRedisAllocator starts the allocator's group committer; Stop ends it.
func NewRedisAllocator(cfg RedisConfig) *RedisAllocator {
	a := &RedisAllocator{db: cfg.DB, rdb: cfg.Redis, keys: cfg.Keys, ttl: cmp.Or(cfg.ReplayTTL, 24*time.Hour),
		tmo: cmp.Or(cfg.ScriptTimeout, 250*time.Millisecond), refusalTTL: cmp.Or(cfg.RefusalTTL, RefusalTTLDefault),
		log: cmp.Or(cfg.Logger, slog.Default())}
	cc := cfg.Commit
	cc.Logger, cc.RefusalTTL = a.log, a.refusalTTL
	cc.OnCommitted = a.clearLedger
	a.commit = newCommitter(cfg.DB, cc)
	// One sender: while its pipeline is out, the next claims queue and go
	// together in the next one (more senders mostly send one script per
	// round trip, and one write(2) each).
	a.pipe = newScriptPipe(cfg.Redis, a.tmo, 1)
	return a
}

// Stop commits the claims already popped and stops the group committer and
// the script pipeline.
func (a *RedisAllocator) Stop() {
	a.commit.Stop()
	a.pipe.close()
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
func (a *RedisAllocator) Claim(ctx context.Context, p pool.Pool, req Request) (Result, error) {
	req.startedAt()
	keys := []string{a.keys.Staged(p.ID), a.keys.InFlight(p.ID), a.keys.Replay(p.ID, req.RequestID),
		a.keys.UserClaims(p.ID, req.UserID)}
	for range maxRefusals {
		now := time.Now().UnixMilli()
		vals, err := a.pipe.run(ctx, keys, p.PerUserLimit, now, int(a.ttl.Seconds()), req.UserID)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, ErrStopped) {
				return Result{}, cmp.Or(ctx.Err(), err)
			}
			return Result{}, &redisError{fmt.Errorf("claim script: %w", err)}
		}
		if len(vals) < 2 {
			return Result{}, &redisError{fmt.Errorf("claim script answered %d values", len(vals))}
		}
		status, entry := outcome(vals[0]), vals[1]
		switch status {
		case outExhausted:
			if a.ahead == nil {
				return Result{}, errStagedEmpty
			}
			// Stage a batch now (or wait for the one another claim started)
			// and pop again; only a pool with nothing left to stage goes to
			// the fallback.
			n, err := a.ahead.empty(ctx, p)
			if err != nil || n == 0 {
				return Result{}, errStagedEmpty
			}
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
			err = a.rdb.Set(sctx, keys[3], held, a.ttl).Err()
			cancel()
			if err != nil {
				return Result{}, &redisError{err}
			}
			continue
		case outPopped, outReplay:
		default:
			return Result{}, &redisError{fmt.Errorf("claim script answered %q", status)}
		}
		codeID, err := entryCodeID(entry)
		if err != nil {
			return Result{}, &redisError{err}
		}
		popped := status == outPopped
		if popped && a.ahead != nil && len(vals) > 2 {
			if left, err := strconv.ParseInt(vals[2], 10, 64); err == nil {
				a.ahead.popped(p, left)
			}
		}
		res := a.commit.submit(ctx, &commitItem{req: req, codeID: codeID, entry: entry})
		if res.err != nil {
			return Result{}, res.err
		}
		switch res.outcome {
		case outClaimed:
			return Result{Claim: res.claim, Replayed: false, Path: PathRedis}, nil
		case outReplay:
			// Postgres already had this user's claim for the request. If
			// Redis named another code (it forgot the request), the popped
			// one went back to available; point the replay record at the
			// real claim.
			record := replayRecord(req.UserID, entry)
			if res.claim.CodeID != codeID {
				record = replayRecord(req.UserID, formatEntry(res.claim.CodeID, res.claim.Code.Reveal()))
			}
			if popped || res.claim.CodeID != codeID {
				a.release(ctx, p.ID, req, entry, record, popped)
			}
			return Result{Claim: res.claim, Replayed: true, Path: PathReplay}, nil
		case outReused, outLimit, outExhausted:
			a.release(ctx, p.ID, req, entry, "", popped)
			return Result{}, res.outcome.refusal()
		case outRefused, outDup:
			// Claimed elsewhere, void, expired or reconciled: skip it.
			a.release(ctx, p.ID, req, entry, "", popped)
			continue
		default:
			return Result{}, fmt.Errorf("group commit: unexpected outcome %q", res.outcome)
		}
	}
	return Result{}, errStagedEmpty
}

// settle asks Postgres about a request Redis would refuse. When Postgres
// has the answer (the request's claim, or a refusal) it is returned with
// decided true; otherwise held is the user's claim count. With limit, a
// user at the pool's limit is refused (and the refusal recorded).
func (a *RedisAllocator) settle(ctx context.Context, req Request, limit bool) (res Result, decided bool, held int64, err error) {
	var out string
	var row claimRow
	err = a.db.QueryRow(ctx, settleSQL, req.PoolID, req.RequestID, req.UserID, limit, req.startedAt(), a.refusalTTL).
		Scan(append(append([]any{&out}, row.dest()...), &held)...)
	if err != nil {
		return Result{}, true, 0, pool.WrapDBError("settle request", err)
	}
	switch o := outcome(out); o {
	case outOpen:
		return Result{}, false, held, nil
	case outReplay:
		return Result{Claim: row.claim(req.PoolID, req.RequestID, req.UserID), Replayed: true, Path: PathReplay}, true, held, nil
	default:
		if err := o.refusal(); err != nil {
			return Result{}, true, held, err
		}
		return Result{}, true, held, fmt.Errorf("settle request: unexpected outcome %q", out)
	}
}

// replayRecord is the value of a replay record: the owner, then the entry.
func replayRecord(userID, entry string) string { return userID + "\n" + entry }

// release undoes a pop Postgres refused or answered from an earlier claim:
// it clears the ledger entry, the count if this call popped the entry, and
// points the request's replay record at replayTo ("" deletes it). Failures
// only leave guards and ledger entries that expire or that the reconciler
// clears.
func (a *RedisAllocator) release(ctx context.Context, poolID string, req Request, entry, replayTo string, popped bool) {
	keys := []string{a.keys.Replay(poolID, req.RequestID), a.keys.UserClaims(poolID, req.UserID), a.keys.InFlight(poolID)}
	counted := "0"
	if popped {
		counted = "1"
	}
	err := releaseScript.Run(context.WithoutCancel(ctx), a.rdb, keys, entry, replayRecord(req.UserID, entry), replayTo,
		int(a.ttl.Seconds()), counted).Err()
	if err != nil {
		a.log.WarnContext(ctx, "release after refusal failed; the reconciler will clear it", "pool", poolID, "err", err)
	}
}

// clearLedger removes committed entries from the in-flight ledgers: one ZREM
// per pool of the batch (the batch is sorted by pool).
func (a *RedisAllocator) clearLedger(batch []*commitItem) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	pipe := a.rdb.Pipeline()
	for start := 0; start < len(batch); {
		end := start + 1
		for end < len(batch) && batch[end].req.PoolID == batch[start].req.PoolID {
			end++
		}
		entries := make([]any, 0, end-start)
		for _, it := range batch[start:end] {
			entries = append(entries, it.entry)
		}
		pipe.ZRem(ctx, a.keys.InFlight(batch[start].req.PoolID), entries...)
		start = end
	}
	if _, err := pipe.Exec(ctx); err != nil {
		a.log.Warn("clearing the in-flight ledger failed; the reconciler will clear it", "err", err)
	}
}

// A staged entry is "<code id>:<code>"; the id lets Postgres update by
// primary key.
func formatEntry(codeID int64, code string) string {
	return strconv.FormatInt(codeID, 10) + ":" + code
}

func entryCodeID(entry string) (int64, error) {
	idText, _, ok := strings.Cut(entry, ":")
	id, err := strconv.ParseInt(idText, 10, 64)
	if !ok || err != nil || id <= 0 {
		return 0, errors.New("malformed staged entry")
	}
	return id, nil
}
