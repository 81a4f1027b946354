package claim

import (
	"context"
	_ "embed"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dispenserhq/dispenser/internal/scanread"
	"github.com/dispenserhq/dispenser/internal/stock"
)

var (
	//go:embed sql/audit.sql
	auditSQL string
	//go:embed sql/staged_ids.sql
	stagedIDsSQL string
)

// AuditReport is a reconciliation of one pool: every count that must be
// zero for the promises to hold, read from Postgres and Redis.
type AuditReport struct {
	PoolID                                           string
	Imported, Available, Staged, Held, Claimed, Void int64
	Claims                                           int64
	MultiClaimed, ClaimsOnUnclaimed, ClaimedNoClaim  int64
	// StagedUnfindable counts staged codes outside every live refill
	// batch's id range: reconcile, which finds staged codes through those
	// ranges, could never return them.
	StagedUnfindable int64
	// AvailableUnfindable counts available codes at or below their pool's
	// refill cursor without a return row: no refill or fallback would find
	// them.
	AvailableUnfindable int64
	UsersOverLimit      int64
	// PrizesAstray counts prizes assigned a code that is not their own
	// claim's (another user's claim, a caller's claim that took the
	// prize's old request id): that code reached two people.
	PrizesAstray int64
	// PrizeClaimsAstray counts claims in the prizes' id space that no
	// prize of the same pool and user holds.
	PrizeClaimsAstray int64
	// RedisDuplicates counts entries staged twice in the Redis lists (the
	// same code in one shard's list twice, or in two shards' lists). Not a
	// double issue: Postgres issues a code once (one claim per code), and
	// the later pop of the code finds it claimed and takes another. A
	// Redis failover that loses writes makes them (a popped entry comes
	// back after Postgres refused its claim and its code was staged
	// again); they leave as the list is popped. Without such a failover
	// there are none, and the tests require that.
	RedisDuplicates int64
	// RedisStale counts list entries whose code Postgres no longer has as
	// staged (harmless: Postgres refuses them; reconcile leaves them).
	RedisStale int64
	// RedisInFlight is the size of the in-flight ledgers.
	RedisInFlight int64
	// RedisShards lists the Redis shards audited: those claims pop from and
	// any other still holding staged codes.
	RedisShards []int
	// RedisError is why Redis could not be audited, if it could not.
	RedisError string
}

// Unbalanced is imported - (available + staged + held + claimed + void):
// codes lost (positive) or appeared from nowhere (negative). Must be zero
// (promise 2).
func (r AuditReport) Unbalanced() int64 {
	return r.Imported - (r.Available + r.Staged + r.Held + r.Claimed + r.Void)
}

// Duplicates counts double issue: codes with two claims, prizes sent a code
// that is not their own claim's, prize claims that no prize holds. Must be
// zero (promise 1). Entries staged twice in Redis are not counted: see
// RedisDuplicates.
func (r AuditReport) Duplicates() int64 {
	return r.MultiClaimed + r.PrizesAstray + r.PrizeClaimsAstray
}

// Lost counts codes not accounted for: the imbalance, claimed codes that no
// claim holds, claims whose code is not claimed, and staged codes that
// reconcile could not find.
func (r AuditReport) Lost() int64 {
	u := r.Unbalanced()
	if u < 0 {
		u = -u
	}
	return u + r.ClaimedNoClaim + r.ClaimsOnUnclaimed + r.StagedUnfindable + r.AvailableUnfindable
}

// Audit reconciles one pool. It reads Postgres in one statement and Redis
// after (every shard that may hold the pool's codes); it changes nothing.
func Audit(ctx context.Context, db *pgxpool.Pool, st *stock.Store, poolID string) (AuditReport, error) {
	r := AuditReport{PoolID: poolID}
	err := scanread.Row(ctx, db, auditSQL, []any{poolID}, &r.Imported, &r.Available, &r.Staged, &r.Held, &r.Claimed, &r.Void,
		&r.MultiClaimed, &r.ClaimsOnUnclaimed, &r.ClaimedNoClaim, &r.StagedUnfindable, &r.AvailableUnfindable, &r.UsersOverLimit, &r.Claims,
		&r.PrizesAstray, &r.PrizeClaimsAstray)
	if err != nil {
		return r, fmt.Errorf("audit %s: %w", poolID, err)
	}
	if st == nil {
		return r, nil
	}
	if r.RedisShards, err = redisShards(ctx, db, poolID); err != nil {
		return r, fmt.Errorf("audit %s: %w", poolID, err)
	}
	var entries []string
	for _, shard := range r.RedisShards {
		name := stock.Shard(poolID, shard)
		list, err := st.StagedEntries(ctx, name)
		var n int64
		if err == nil {
			n, err = st.InFlightLen(ctx, name)
		}
		if err != nil {
			r.RedisError = err.Error()
			return r, nil
		}
		entries = append(entries, list...)
		r.RedisInFlight += n
	}
	seen := make(map[int64]bool, len(entries))
	ids := make([]int64, 0, len(entries))
	for _, e := range entries {
		id, err := stock.EntryCodeID(e)
		if err != nil {
			r.RedisStale++
			continue
		}
		if seen[id] {
			r.RedisDuplicates++
			continue
		}
		seen[id] = true
		ids = append(ids, id)
	}
	rows, err := db.Query(ctx, stagedIDsSQL, poolID, ids)
	if err != nil {
		return r, fmt.Errorf("audit %s: %w", poolID, err)
	}
	staged, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return r, fmt.Errorf("audit %s: %w", poolID, err)
	}
	r.RedisStale += int64(len(ids) - len(staged))
	return r, nil
}
