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

//go:embed sql/count_user_claims.sql
var countUserClaimsSQL string

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
	// Commit tunes the group commit.
	Commit CommitterConfig
	Logger *slog.Logger
}

// RedisAllocator pops staged codes from Redis with one Lua script and
// persists the claims in group commits. Postgres decides every claim: a code
// Postgres refuses is skipped and the claim retried with another.
type RedisAllocator struct {
	db     *pgxpool.Pool
	rdb    redis.UniversalClient
	keys   pool.RedisKeys
	ttl    time.Duration
	tmo    time.Duration
	pipe   *scriptPipe
	commit *committer
	log    *slog.Logger
}

// NewRedisAllocator starts the allocator's group committer; Stop ends it.
func NewRedisAllocator(cfg RedisConfig) *RedisAllocator {
	a := &RedisAllocator{db: cfg.DB, rdb: cfg.Redis, keys: cfg.Keys, ttl: cmp.Or(cfg.ReplayTTL, 24*time.Hour),
		tmo: cmp.Or(cfg.ScriptTimeout, 250*time.Millisecond),
		log: cmp.Or(cfg.Logger, slog.Default())}
	cc := cfg.Commit
	cc.Logger = a.log
	cc.OnCommitted = a.clearLedger
	a.commit = newCommitter(cfg.DB, cc)
	a.pipe = newScriptPipe(cfg.Redis, a.tmo, 4)
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
// caller to the fallback.
func (a *RedisAllocator) Claim(ctx context.Context, p pool.Pool, req Request) (Result, error) {
	keys := []string{a.keys.Staged(p.ID), a.keys.InFlight(p.ID), a.keys.Replay(p.ID, req.RequestID),
		a.keys.UserClaims(p.ID, req.UserID)}
	for range maxRefusals {
		now := time.Now().UnixMilli()
		vals, err := a.pipe.run(ctx, keys, p.PerUserLimit, now, int(a.ttl.Seconds()))
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, ErrStopped) {
				return Result{}, cmp.Or(ctx.Err(), err)
			}
			return Result{}, &redisError{fmt.Errorf("claim script: %w", err)}
		}
		if len(vals) != 2 {
			return Result{}, &redisError{fmt.Errorf("claim script answered %d values", len(vals))}
		}
		status, entry := vals[0], vals[1]
		switch status {
		case "empty":
			return Result{}, errStagedEmpty
		case "limit":
			// The count is a guard; Postgres has the truth.
			held, err := a.countClaims(ctx, p.ID, req.UserID)
			if err != nil {
				return Result{}, err
			}
			if held >= int64(p.PerUserLimit) {
				return Result{}, ErrUserLimit
			}
			sctx, cancel := context.WithTimeout(ctx, a.tmo)
			err = a.rdb.Set(sctx, keys[3], held, a.ttl).Err()
			cancel()
			if err != nil {
				return Result{}, &redisError{err}
			}
			continue
		case "ok", "replay":
		default:
			return Result{}, &redisError{fmt.Errorf("claim script answered %q", status)}
		}
		codeID, err := entryCodeID(entry)
		if err != nil {
			return Result{}, &redisError{err}
		}
		res := a.commit.submit(ctx, &commitItem{req: req, codeID: codeID, entry: entry})
		if res.err != nil {
			return Result{}, res.err
		}
		switch res.outcome {
		case "claimed":
			return Result{Claim: res.claim, Replayed: false, Path: PathRedis}, nil
		case "replay":
			// Postgres already had a claim for this request. If Redis named
			// another code (it forgot the request), the popped one went back
			// to available; point the replay record at the real claim.
			newEntry := ""
			if res.claim.CodeID != codeID {
				newEntry = formatEntry(res.claim.CodeID, res.claim.Code.Reveal())
			}
			if newEntry != "" || status == "ok" {
				a.release(ctx, p.ID, req, entry, cmp.Or(newEntry, entry))
			}
			return Result{Claim: res.claim, Replayed: true, Path: PathReplay}, nil
		case "limit":
			a.release(ctx, p.ID, req, entry, "")
			return Result{}, ErrUserLimit
		case "refused":
			// Claimed elsewhere, void, expired or reconciled: skip it.
			a.release(ctx, p.ID, req, entry, "")
			continue
		default:
			return Result{}, fmt.Errorf("group commit: unexpected outcome %q", res.outcome)
		}
	}
	return Result{}, errStagedEmpty
}

// release undoes a pop Postgres refused or answered from an earlier claim:
// it clears the ledger entry and the count, and points the request's replay
// record at replayTo ("" deletes it). Failures only leave guards and ledger
// entries that expire or that the reconciler clears.
func (a *RedisAllocator) release(ctx context.Context, poolID string, req Request, entry, replayTo string) {
	keys := []string{a.keys.Replay(poolID, req.RequestID), a.keys.UserClaims(poolID, req.UserID), a.keys.InFlight(poolID)}
	err := releaseScript.Run(context.WithoutCancel(ctx), a.rdb, keys, entry, replayTo, int(a.ttl.Seconds())).Err()
	if err != nil {
		a.log.WarnContext(ctx, "release after refusal failed; the reconciler will clear it", "pool", poolID, "err", err)
	}
}

// clearLedger removes committed entries from the in-flight ledgers.
func (a *RedisAllocator) clearLedger(batch []*commitItem) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	pipe := a.rdb.Pipeline()
	for _, it := range batch {
		pipe.ZRem(ctx, a.keys.InFlight(it.req.PoolID), it.entry)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		a.log.Warn("clearing the in-flight ledger failed; the reconciler will clear it", "err", err)
	}
}

func (a *RedisAllocator) countClaims(ctx context.Context, poolID, userID string) (int64, error) {
	var n int64
	if err := a.db.QueryRow(ctx, countUserClaimsSQL, poolID, userID).Scan(&n); err != nil {
		return 0, pool.WrapDBError("count user claims", err)
	}
	return n, nil
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
