package claim

import (
	"cmp"
	"context"
	_ "embed"
	"errors"
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
	//go:embed sql/new_stage_batch.sql
	newStageBatchSQL string
	//go:embed sql/set_stage_batch_size.sql
	setStageBatchSizeSQL string
)

// Stager moves pools' available codes into Redis: the refill job, refill
// ahead of demand (through the claim service) and the delivery run's
// pre-staging all stage through it.
type Stager struct {
	db     *pgxpool.Pool
	stock  *stock.Store
	pgOnly bool
}

// NewStager returns the stager of the pools in db, staging into rdb under
// keys. A fallbackOnly stager stages nothing (no claim is served from
// Redis).
func NewStager(db *pgxpool.Pool, rdb redis.UniversalClient, keys stock.Keys, fallbackOnly bool) *Stager {
	return &Stager{db: db, stock: stock.New(rdb, keys), pgOnly: fallbackOnly}
}

// Refill stages a batch of the pool's available codes into Redis when fewer
// than its low-water mark are staged, and returns how many it staged. A
// fallback-only stager stages nothing.
//
// The batch is first marked 'staged' in Postgres under a new batch id, then
// pushed with its batch marker by one script. If the push fails, or the
// process dies between the two steps, the batch's codes are staged in
// Postgres but not in Redis; Reconcile returns them to available.
func (s *Stager) Refill(ctx context.Context, p pool.Pool) (int, error) {
	if s.pgOnly {
		return 0, nil // nothing is served from Redis, so nothing is staged
	}
	n, err := s.StagedLen(ctx, p.ID)
	if err != nil {
		return 0, err
	}
	if n >= int64(p.RefillLowWater) && n > 0 {
		return 0, nil
	}
	return s.stageBatch(ctx, p, p.RefillBatchSize)
}

// StageAtLeast stages batches until at least want codes are in the pool's
// Redis list or nothing is left to stage, and returns how many it staged. A
// run that knows how many claims it is about to make (the prize delivery)
// uses it so that they ride the Redis path and its group commit.
func (s *Stager) StageAtLeast(ctx context.Context, p pool.Pool, want int) (int, error) {
	if s.pgOnly {
		return 0, nil
	}
	total := 0
	for {
		n, err := s.StagedLen(ctx, p.ID)
		if err != nil {
			return total, err
		}
		if n >= int64(want) {
			return total, nil
		}
		staged, err := s.stageBatch(ctx, p, min(p.RefillBatchSize, want-int(n)))
		total += staged
		if err != nil || staged == 0 {
			return total, err
		}
	}
}

// stageBatch moves up to size available codes to staged under a new batch id
// and pushes them, with the batch marker, to the pool's Redis list.
func (s *Stager) stageBatch(ctx context.Context, p pool.Pool, size int) (int, error) {
	var batchID int64
	var entries []string
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, newStageBatchSQL, p.ID, size).Scan(&batchID); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, stageBatchSQL, p.ID, batchID, size)
		if err != nil {
			return err
		}
		type staged struct {
			ID   int64
			Code string
		}
		got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[staged])
		if err != nil {
			return err
		}
		if len(got) > size {
			return fmt.Errorf("staged %d codes for a batch of %d", len(got), size)
		}
		if len(got) == 0 {
			return errNothingToStage
		}
		slices.SortFunc(got, func(a, b staged) int { return cmp.Compare(a.ID, b.ID) })
		entries = make([]string, 0, len(got))
		for _, st := range got {
			entries = append(entries, stock.FormatEntry(st.ID, st.Code))
		}
		_, err = tx.Exec(ctx, setStageBatchSizeSQL, batchID, len(got))
		return err
	})
	if errors.Is(err, errNothingToStage) {
		return 0, nil
	}
	if err != nil {
		return 0, pgerr.Wrap("stage batch", err)
	}
	if err := s.stock.Push(ctx, p.ID, batchID, entries); err != nil {
		return 0, &redisError{fmt.Errorf("push batch %d (reconcile returns its codes): %w", batchID, err)}
	}
	return len(entries), nil
}

var errNothingToStage = errors.New("nothing to stage")

// StagedLen is the length of the pool's staged list in Redis.
func (s *Stager) StagedLen(ctx context.Context, poolID string) (int64, error) {
	n, err := s.stock.StagedLen(ctx, poolID)
	if err != nil {
		return 0, &redisError{fmt.Errorf("staged length: %w", err)}
	}
	return n, nil
}
