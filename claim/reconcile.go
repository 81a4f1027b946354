package claim

import (
	"context"
	_ "embed"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/dispenserhq/dispenser/internal/pgerr"
	"github.com/dispenserhq/dispenser/internal/stock"
	"github.com/dispenserhq/dispenser/pool"
)

var (
	//go:embed sql/void_expired.sql
	voidExpiredSQL string
	//go:embed sql/staged_batches.sql
	stagedBatchesSQL string
	//go:embed sql/unstage_batches.sql
	unstageBatchesSQL string
	//go:embed sql/unstage_codes.sql
	unstageCodesSQL string
	//go:embed sql/staged_codes_before.sql
	stagedCodesBeforeSQL string
	//go:embed sql/live_batches.sql
	liveBatchesSQL string
	//go:embed sql/drop_expired_refusals.sql
	dropExpiredRefusalsSQL string
	//go:embed sql/redis_shards.sql
	redisShardsSQL string
	//go:embed sql/drop_stale_returns.sql
	dropStaleReturnsSQL string
)

// Reconciler makes Postgres and Redis agree, pool by pool (the reconcile
// job).
type Reconciler struct {
	db    *pgxpool.Pool
	stock *stock.Store
}

// NewReconciler returns the reconciler of the pools in db and their Redis
// keys in rdb.
func NewReconciler(db *pgxpool.Pool, rdb redis.UniversalClient, keys stock.Keys) *Reconciler {
	return &Reconciler{db: db, stock: stock.New(rdb, keys)}
}

// ReconcileReport counts what a reconciliation changed.
type ReconcileReport struct {
	// Expired codes voided.
	Expired int64
	// Codes returned because Redis lost their batch.
	LostBatches int64
	// Codes returned from the in-flight ledger: popped, never committed.
	Stale int64
	// Staged codes in neither the list nor the ledger, returned while the
	// list was empty.
	Orphans int64
	// Codes returned from shards the pool no longer claims from (its shard
	// count was lowered).
	Dropped int64
}

// Reconcile makes Postgres and Redis agree for one pool. It voids expired
// codes, forgets expired refusals and the return rows of codes taken since
// they came back, and returns to available the staged codes that Redis lost
// (their batch marker is gone), that stayed in the in-flight ledger longer
// than grace (popped by a process that died before its commit), or that are
// in neither list nor ledger. Every change is
// conditional on the code still being staged, so a claim committing at the
// same moment wins. Batches and ledger entries younger than grace are left
// alone: their refill or claim may still be under way.
//
// A pool spread over several Redis shards is reconciled shard by shard (a
// batch lives in one). A shard beyond the pool's shard count (it was
// lowered) gets no claims any more: its batches older than grace are
// returned, and once none is left its keys are deleted.
func (s *Reconciler) Reconcile(ctx context.Context, p pool.Pool, grace time.Duration) (ReconcileReport, error) {
	var rep ReconcileReport
	tag, err := s.db.Exec(ctx, voidExpiredSQL, p.ID)
	if err != nil {
		return rep, pgerr.Wrap("void expired codes", err)
	}
	rep.Expired = tag.RowsAffected()
	if err := markDrained(ctx, s.db, p.ID); err != nil {
		return rep, err
	}
	if _, err := s.db.Exec(ctx, dropExpiredRefusalsSQL, p.ID); err != nil {
		return rep, pgerr.Wrap("drop expired refusals", err)
	}
	if _, err := s.db.Exec(ctx, dropStaleReturnsSQL, p.ID); err != nil {
		return rep, pgerr.Wrap("drop stale returns", err)
	}
	shards, err := redisShards(ctx, s.db, p.ID)
	if err != nil {
		return rep, err
	}
	cutoff := time.Now().Add(-grace)
	for _, shard := range shards {
		if err := s.reconcileShard(ctx, p, shard, cutoff, &rep); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// redisShards returns the Redis shards that may hold the pool's codes (see
// sql/redis_shards.sql).
func redisShards(ctx context.Context, db *pgxpool.Pool, poolID string) ([]int, error) {
	rows, err := db.Query(ctx, redisShardsSQL, poolID)
	if err != nil {
		return nil, pgerr.Wrap("redis shards", err)
	}
	shards, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		return nil, pgerr.Wrap("redis shards", err)
	}
	return shards, nil
}

func (s *Reconciler) reconcileShard(ctx context.Context, p pool.Pool, shard int, cutoff time.Time, rep *ReconcileReport) error {
	st := s.stock
	name := stock.Shard(p.ID, shard)
	dropped := shard >= shardCount(p)

	// 1. Batches Redis lost (on a dropped shard, every old batch).
	rows, err := s.db.Query(ctx, stagedBatchesSQL, p.ID, cutoff, shard)
	if err != nil {
		return pgerr.Wrap("staged batches", err)
	}
	batches, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return pgerr.Wrap("staged batches", err)
	}
	if len(batches) > 0 {
		known := map[int64]bool{}
		if !dropped {
			marked, err := st.Batches(ctx, name)
			if err != nil {
				return &redisError{fmt.Errorf("batch markers: %w", err)}
			}
			for _, id := range marked {
				known[id] = true
			}
		}
		var lost []int64
		for _, b := range batches {
			if !known[b] {
				lost = append(lost, b)
			}
		}
		if len(lost) > 0 {
			tag, err := s.exec(ctx, unstageBatchesSQL, p.ID, lost)
			if err != nil {
				return pgerr.Wrap("return lost batches", err)
			}
			if dropped {
				rep.Dropped += tag.RowsAffected()
			} else {
				rep.LostBatches += tag.RowsAffected()
			}
		}
	}

	// 2. Ledger entries past the grace period.
	stale, err := st.InFlightBefore(ctx, name, cutoff)
	if err != nil {
		return &redisError{fmt.Errorf("in-flight ledger: %w", err)}
	}
	if len(stale) > 0 {
		ids := make([]int64, 0, len(stale))
		for _, e := range stale {
			if id, err := stock.EntryCodeID(e); err == nil {
				ids = append(ids, id)
			}
		}
		tag, err := s.exec(ctx, unstageCodesSQL, p.ID, ids)
		if err != nil {
			return pgerr.Wrap("return stale in-flight codes", err)
		}
		rep.Stale += tag.RowsAffected()
		if err := st.ClearInFlight(ctx, map[string][]string{name: stale}); err != nil {
			return &redisError{fmt.Errorf("clear in-flight ledger: %w", err)}
		}
	}

	// 3. With the list empty, a staged code of an old batch that is not in the
	// ledger is nowhere in Redis (a pop whose ledger write Redis lost).
	if n, err := st.StagedLen(ctx, name); err != nil {
		return &redisError{fmt.Errorf("staged length: %w", err)}
	} else if n == 0 {
		orphans, err := s.returnOrphans(ctx, p.ID, shard, cutoff)
		if err != nil {
			return err
		}
		rep.Orphans += orphans
	}

	// 4. Forget markers of batches with no staged code left; a dropped shard
	// with none left goes altogether.
	left, err := s.dropSpentMarkers(ctx, p.ID, name)
	if err != nil {
		return err
	}
	if dropped && left == 0 {
		if err := st.DropShard(ctx, name); err != nil {
			return &redisError{fmt.Errorf("drop shard: %w", err)}
		}
	}
	return nil
}

// exec runs one of reconcile's conditional updates, again if it lost a
// deadlock: it locks many staged codes at once, in index order, while group
// commits lock theirs in batch order (with no grace period, as in drills,
// they can meet on the same codes). Each run is one statement and every
// change is conditional, so running it again is safe.
func (s *Reconciler) exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	for attempt := 1; ; attempt++ {
		tag, err := s.db.Exec(ctx, sql, args...)
		if err == nil || !isRetryable(err) || attempt == 5 {
			return tag, err
		}
		select {
		case <-ctx.Done():
			return tag, err
		case <-time.After(time.Duration(attempt) * 5 * time.Millisecond):
		}
	}
}

func (s *Reconciler) returnOrphans(ctx context.Context, poolID string, shard int, cutoff time.Time) (int64, error) {
	rows, err := s.db.Query(ctx, stagedCodesBeforeSQL, poolID, cutoff, shard)
	if err != nil {
		return 0, pgerr.Wrap("staged codes", err)
	}
	staged, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil || len(staged) == 0 {
		return 0, pgerr.Wrap("staged codes", err)
	}
	ledger, err := s.stock.InFlight(ctx, stock.Shard(poolID, shard))
	if err != nil {
		return 0, &redisError{fmt.Errorf("in-flight ledger: %w", err)}
	}
	inLedger := map[int64]bool{}
	for _, e := range ledger {
		if id, err := stock.EntryCodeID(e); err == nil {
			inLedger[id] = true
		}
	}
	var orphans []int64
	for _, id := range staged {
		if !inLedger[id] {
			orphans = append(orphans, id)
		}
	}
	if len(orphans) == 0 {
		return 0, nil
	}
	tag, err := s.exec(ctx, unstageCodesSQL, poolID, orphans)
	if err != nil {
		return 0, pgerr.Wrap("return orphaned codes", err)
	}
	return tag.RowsAffected(), nil
}

// dropSpentMarkers forgets the shard's markers of batches with no staged
// code left, and returns how many of its marked batches are still live.
func (s *Reconciler) dropSpentMarkers(ctx context.Context, poolID, shard string) (int, error) {
	ids, err := s.stock.Batches(ctx, shard)
	if err != nil {
		return 0, &redisError{fmt.Errorf("batch markers: %w", err)}
	}
	if len(ids) == 0 {
		return 0, nil
	}
	rows, err := s.db.Query(ctx, liveBatchesSQL, poolID, ids)
	if err != nil {
		return 0, pgerr.Wrap("live batches", err)
	}
	live, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return 0, pgerr.Wrap("live batches", err)
	}
	var spent []int64
	for _, id := range ids {
		if !slices.Contains(live, id) {
			spent = append(spent, id)
		}
	}
	if err := s.stock.DropBatches(ctx, shard, spent); err != nil {
		return 0, &redisError{fmt.Errorf("drop spent markers: %w", err)}
	}
	return len(live), nil
}
