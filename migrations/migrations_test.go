package migrations_test

import (
	"context"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/dispenserhq/dispenser/internal/testenv"
	"github.com/dispenserhq/dispenser/migrations"
)

// Replicas that start together all migrate: the numbered migrations apply
// once, functions.sql is applied by each in turn, and every one succeeds.
// The claim functions exist under their versioned names only.
func TestMigrateConcurrentlyAndFunctions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := testenv.Postgres(t) // migrated once already
	latest, err := migrations.Latest()
	require.NoError(t, err)

	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() {
			conn, err := pgx.Connect(ctx, s.URL)
			if err != nil {
				errs[i] = err
				return
			}
			defer conn.Close(ctx)
			from, to, err := migrations.Migrate(ctx, conn)
			if err == nil && (from != latest || to != latest) {
				t.Errorf("migrate went from %d to %d, want %d to %d", from, to, latest, latest)
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}

	names, err := pgx.CollectRows(testenv.Must(s.Pool.Query(ctx, `
		SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
		WHERE n.nspname = $1 AND p.proname LIKE 'dispenser\_%' ORDER BY 1`, s.Name)), pgx.RowTo[string])
	require.NoError(t, err)
	require.Equal(t, []string{
		"dispenser_advance_cursor_v1",
		"dispenser_cancel_v1", "dispenser_claim_fallback_many_v1", "dispenser_claim_fallback_v1", "dispenser_claim_fallback_v2", "dispenser_claim_fallback_v3",
		"dispenser_claim_staged_v1", "dispenser_claim_staged_v2", "dispenser_claim_staged_v3", "dispenser_code_returned_v1", "dispenser_confirm_many_v1", "dispenser_confirm_v1",
		"dispenser_cursor_v1", "dispenser_decided_v1", "dispenser_decided_v2", "dispenser_expire_holds_v1", "dispenser_give_back_v1",
		"dispenser_has_available_v1", "dispenser_has_staged_v1", "dispenser_hold_row_v1",
		"dispenser_limit_peak_v1", "dispenser_pick_available_v1",
		"dispenser_recorded_v1", "dispenser_recorded_v2", "dispenser_refuse_v1",
		"dispenser_release_hold_v1", "dispenser_release_user_expired_v1", "dispenser_request_lock_v1",
		"dispenser_settle_many_v1", "dispenser_settle_v1", "dispenser_settle_v2", "dispenser_sold_out_v1", "dispenser_take_slot_v1", "dispenser_take_slot_v2", "dispenser_take_slot_v3",
	}, names)

	// Replicas of the previous version lock requests by the same key
	// (migration 005's dispenser_request_lock): the body must never change.
	var same bool
	require.NoError(t, s.Pool.QueryRow(ctx,
		`SELECT dispenser_request_lock_v1('pool-1', 'req/x') = hashtextextended('pool-1/req/x', 0)`).Scan(&same))
	require.True(t, same)
}

// Request and user ids compare as bytes wherever a claim writes or probes
// them (migration 009), as codes do; pool ids keep the database's collation
// in every table, so joins on them use either side's index.
func TestIdCollations(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := testenv.Postgres(t)
	rows, err := s.Pool.Query(ctx, `
		SELECT c.relname || '.' || a.attname, coalesce(co.collname, '')
		FROM pg_attribute a
		JOIN pg_class c ON c.oid = a.attrelid
		JOIN pg_namespace n ON n.oid = c.relnamespace
		LEFT JOIN pg_collation co ON co.oid = a.attcollation
		WHERE n.nspname = $1 AND c.relkind = 'r' AND NOT a.attisdropped
		  AND (a.attname IN ('request_id', 'user_id', 'pool_id', 'code') OR (c.relname = 'pools' AND a.attname = 'id'))
		ORDER BY 1`, s.Name)
	require.NoError(t, err)
	got := map[string]string{}
	for rows.Next() {
		var col, coll string
		require.NoError(t, rows.Scan(&col, &coll))
		got[col] = coll
	}
	require.NoError(t, rows.Err())
	for _, col := range []string{"claims.request_id", "claims.user_id", "refusals.request_id", "refusals.user_id",
		"hold_releases.request_id", "hold_releases.user_id", "codes.code"} {
		require.Equal(t, "C", got[col], col)
	}
	for _, col := range []string{"pools.id", "codes.pool_id", "claims.pool_id", "refusals.pool_id", "hold_releases.pool_id",
		"stage_batches.pool_id", "imports.pool_id", "prizes.pool_id"} {
		require.Equal(t, "default", got[col], col)
	}
}
