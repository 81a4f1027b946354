package claim

import (
	"cmp"
	"context"
	_ "embed"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/dispenserhq/dispenser/internal/pgerr"
	"github.com/dispenserhq/dispenser/internal/stock"
	"github.com/dispenserhq/dispenser/pool"
)

var (
	//go:embed sql/stage_batch.sql
	stageBatchSQL string
	//go:embed sql/stage_plan.sql
	stagePlanSQL string
	//go:embed sql/ensure_cursor.sql
	ensureCursorSQL string
)

// Stager moves pools' available codes into Redis: the refill job, refill
// ahead of demand (through the claim service) and the delivery run's
// pre-staging all stage through it.
type Stager struct {
	db      *pgxpool.Pool
	drained *drainMarks
	stock   *stock.Store
	pgOnly  bool
}

// NewStager returns the stager of the pools in db, staging into rdb under
// keys. A fallbackOnly stager stages nothing (no claim is served from
// Redis).
func NewStager(db *pgxpool.Pool, rdb redis.UniversalClient, keys stock.Keys, fallbackOnly bool) *Stager {
	return &Stager{db: db, drained: &drainMarks{db: db}, stock: stock.New(rdb, keys), pgOnly: fallbackOnly}
}

// Refill stages a batch of the pool's available codes into each of its Redis
// shards holding fewer than its share of the low-water mark, and returns how
// many it staged. A pool of K shards gives each a K-th of its low-water mark
// and batch size (rounded up). A fallback-only stager stages nothing.
//
// A batch is first marked 'staged' in Postgres under a new batch id (which
// records its shard), then pushed with its batch marker by one script. If
// the push fails, or the process dies between the two steps, the batch's
// codes are staged in Postgres but not in Redis; Reconcile returns them to
// available.
func (s *Stager) Refill(ctx context.Context, p pool.Pool) (int, error) {
	if s.pgOnly {
		return 0, nil // nothing is served from Redis, so nothing is staged
	}
	levels, err := s.levels(ctx, p)
	if err != nil {
		return 0, err
	}
	k := shardCount(p)
	low, size := perShard(p.RefillLowWater, k), perShard(p.RefillBatchSize, k)
	total := 0
	for shard, n := range levels {
		if n >= int64(low) && n > 0 {
			continue
		}
		staged, err := s.stageBatch(ctx, p, shard, size)
		total += staged
		if err != nil || staged == 0 {
			return total, err
		}
	}
	return total, nil
}

// StageAtLeast stages batches until at least want codes are in the pool's
// Redis lists (a K-th of want in each of its K shards) or nothing is left to
// stage, and returns how many it staged. A run that knows how many claims it
// is about to make (the prize delivery) uses it so that they ride the Redis
// path and its group commit.
func (s *Stager) StageAtLeast(ctx context.Context, p pool.Pool, want int) (int, error) {
	if s.pgOnly {
		return 0, nil
	}
	k := shardCount(p)
	each := perShard(want, k)
	total := 0
	for {
		levels, err := s.levels(ctx, p)
		if err != nil {
			return total, err
		}
		var sum int64
		for _, n := range levels {
			sum += n
		}
		if sum >= int64(want) {
			return total, nil
		}
		// The emptiest shard gets the next batch.
		shard := 0
		for i, n := range levels {
			if n < levels[shard] {
				shard = i
			}
		}
		staged, err := s.stageBatch(ctx, p, shard, max(1, min(p.RefillBatchSize, each-int(levels[shard]), want-int(sum))))
		total += staged
		if err != nil || staged == 0 {
			return total, err
		}
	}
}

// shardCount is how many Redis shards the pool's claims pop from.
func shardCount(p pool.Pool) int { return max(p.RedisShards, 1) }

// perShard is one shard's share of n over k shards, rounded up.
func perShard(n, k int) int { return (n + k - 1) / k }

// levels reads the staged list length of each of the pool's shards.
func (s *Stager) levels(ctx context.Context, p pool.Pool) ([]int64, error) {
	levels, err := s.stock.ShardLevels(ctx, stock.Shards(p.ID, shardCount(p))...)
	if err != nil {
		return nil, &redisError{fmt.Errorf("staged length: %w", err)}
	}
	return levels, nil
}

// stageChunkMax is the most codes one refill transaction stages. A larger
// refill is staged as several batches, each pushed as soon as it commits:
// the first codes reach Redis sooner, and no transaction writes megabytes of
// WAL that the group commits running beside it must flush with their own.
const stageChunkMax = 2_000

// stageBatch stages up to size available codes into one of the pool's Redis
// shards, in batches of at most stageChunkMax, and returns how many it
// staged; it stops early when the pool has nothing left to stage.
func (s *Stager) stageBatch(ctx context.Context, p pool.Pool, shard, size int) (int, error) {
	total := 0
	for total < size {
		want := min(size-total, stageChunkMax)
		n, err := s.stageChunk(ctx, p, shard, want)
		total += n
		if err != nil || n < want {
			return total, err
		}
	}
	return total, nil
}

// stageChunk moves up to size available codes to staged under a new batch
// id and pushes them, with the batch marker, to the list of one of the
// pool's Redis shards.
func (s *Stager) stageChunk(ctx context.Context, p pool.Pool, shard, size int) (int, error) {
	var batchID int64
	var entries []string
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, stagePlanSQL); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, ensureCursorSQL, p.ID); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, stageBatchSQL, p.ID, shard, size)
		if err != nil {
			return err
		}
		type staged struct {
			Batch int64
			ID    int64
		}
		got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[staged])
		if err != nil {
			return err
		}
		if len(got) > size {
			return fmt.Errorf("staged %d codes for a batch of %d", len(got), size)
		}
		if len(got) == 0 {
			// Committed all the same: the walk may have moved the cursor
			// past codes taken meanwhile.
			return nil
		}
		batchID = got[0].Batch
		slices.SortFunc(got, func(a, b staged) int { return cmp.Compare(a.ID, b.ID) })
		entries = make([]string, 0, len(got))
		for _, st := range got {
			entries = append(entries, stock.FormatEntry(st.ID))
		}
		return nil
	})
	if err != nil {
		return 0, pgerr.Wrap("stage batch", err)
	}
	if len(entries) == 0 {
		s.drained.maybe(ctx, p.ID)
		return 0, nil
	}
	if err := s.stock.Push(ctx, stock.Shard(p.ID, shard), batchID, entries); err != nil {
		return 0, &redisError{fmt.Errorf("push batch %d (reconcile returns its codes): %w", batchID, err)}
	}
	if len(entries) < size {
		// The pool is running dry: its sale's last claims and the calls
		// after its sell-out read the batches still live.
		s.drained.maybe(ctx, p.ID)
	}
	return len(entries), nil
}

// StagedLen is how many codes the pool's Redis lists hold, over its shards.
func (s *Stager) StagedLen(ctx context.Context, p pool.Pool) (int64, error) {
	levels, err := s.levels(ctx, p)
	var n int64
	for _, l := range levels {
		n += l
	}
	return n, err
}
