package migrations_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/tern/v2/migrate"
	"github.com/stretchr/testify/require"

	"github.com/dispenserhq/dispenser/internal/testenv"
	"github.com/dispenserhq/dispenser/migrations"
)

// Migration 012 on a database with a sale under way: each refill batch
// gets the id range of its staged codes, batches with none left are
// drained, and the generated columns say which codes are available and
// which expiring ones are still open.
func TestUpgradeTo012KeepsStagedCodesFindable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	conn := schemaAt(t, 11)

	// Pool p: 10 codes. Batch 1 staged codes 2..4 and 7 (3 and 7 are
	// still staged), batch 2 staged 5 and 6 (both claimed since), code 8
	// is void, 9 and 10 expire (9 available, 10 claimed).
	_, err := conn.Exec(ctx, `
		INSERT INTO pools (id, refill_low_water, refill_batch_size) VALUES ('p', 0, 10);
		INSERT INTO imports (pool_id, format, strict, lines, inserted, duplicates_in_file, duplicates_in_pool, invalid, bytes)
		VALUES ('p', 'lines', false, 10, 10, 0, 0, 0, 100);
		INSERT INTO codes (pool_id, code, import_id, expires_at)
		SELECT 'p', 'CODE-' || i, 1, CASE WHEN i >= 9 THEN now() + interval '1 day' END FROM generate_series(1, 10) i;
		INSERT INTO stage_batches (pool_id, size) VALUES ('p', 4), ('p', 2);
		UPDATE codes SET state = 'staged', stage_batch = 1 WHERE id IN (3, 7);
		UPDATE codes SET state = 'claimed' WHERE id IN (2, 4, 5, 6, 10);
		UPDATE codes SET state = 'void', void_reason = 'recall' WHERE id = 8;`)
	require.NoError(t, err)

	from, to, err := migrations.Migrate(ctx, conn)
	require.NoError(t, err)
	require.EqualValues(t, 11, from)
	require.GreaterOrEqual(t, to, int32(12))

	type batch struct {
		ID          int64
		First, Last *int64
		Drained     bool
	}
	batches, err := pgx.CollectRows(testenv.Must(conn.Query(ctx,
		`SELECT id, first_id, last_id, drained_at IS NOT NULL FROM stage_batches ORDER BY id`)), pgx.RowToStructByPos[batch])
	require.NoError(t, err)
	three, seven := int64(3), int64(7)
	require.Equal(t, []batch{{ID: 1, First: &three, Last: &seven}, {ID: 2, Drained: true}}, batches)

	var staged bool
	require.NoError(t, conn.QueryRow(ctx, `SELECT dispenser_has_staged_v1('p')`).Scan(&staged))
	require.True(t, staged)

	type code struct {
		ID         int64
		Pickable   bool
		ExpiryOpen *bool
	}
	codes, err := pgx.CollectRows(testenv.Must(conn.Query(ctx,
		`SELECT id, pickable, expiry_open FROM codes ORDER BY id`)), pgx.RowToStructByPos[code])
	require.NoError(t, err)
	yes, no := true, false
	require.Equal(t, []code{{1, true, nil}, {2, false, nil}, {3, false, nil}, {4, false, nil}, {5, false, nil},
		{6, false, nil}, {7, false, nil}, {8, false, nil}, {9, true, &yes}, {10, false, &no}}, codes)

	// A batch without a range is refused unless it is drained: a refill of
	// the previous version fails rather than stage codes no lookup finds.
	_, err = conn.Exec(ctx, `INSERT INTO stage_batches (pool_id, size) VALUES ('p', 3)`)
	require.ErrorContains(t, err, "stage_batches_range_check")

	var options []string
	require.NoError(t, conn.QueryRow(ctx, `SELECT reloptions FROM pg_class WHERE oid = 'codes'::regclass`).Scan(&options))
	require.Contains(t, options, "fillfactor=50") // migration 013's
}

// Migration 013 on a database with a sale under way: each pool's refill
// cursor sits just below its first available code (or at its last code when
// none is available), so every available code is above it; the index that
// named the codes' state is gone; a code that becomes available again gets
// a return row.
func TestUpgradeTo013SetsCursorsBelowAvailableCodes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	conn := schemaAt(t, 12)

	// Pool p: codes 1..7; 1..3 and 6 claimed, 4 staged (batch 1), 5 and 7
	// available. Pool q: codes 8 and 9, both claimed. Pool r: none.
	_, err := conn.Exec(ctx, `
		INSERT INTO pools (id, refill_low_water, refill_batch_size) VALUES ('p', 0, 10), ('q', 0, 10), ('r', 0, 10);
		INSERT INTO imports (pool_id, format, strict, lines, inserted, duplicates_in_file, duplicates_in_pool, invalid, bytes)
		VALUES ('p', 'lines', false, 7, 7, 0, 0, 0, 70), ('q', 'lines', false, 2, 2, 0, 0, 0, 20);
		INSERT INTO codes (pool_id, code, import_id) SELECT 'p', 'CODE-' || i, 1 FROM generate_series(1, 7) i;
		INSERT INTO codes (pool_id, code, import_id) SELECT 'q', 'CODE-' || i, 2 FROM generate_series(8, 9) i;
		INSERT INTO stage_batches (pool_id, size, first_id, last_id) VALUES ('p', 1, 4, 4);
		UPDATE codes SET state = 'staged', stage_batch = 1 WHERE id = 4;
		UPDATE codes SET state = 'claimed' WHERE id IN (1, 2, 3, 6, 8, 9);`)
	require.NoError(t, err)

	from, to, err := migrations.Migrate(ctx, conn)
	require.NoError(t, err)
	require.EqualValues(t, 12, from)
	require.GreaterOrEqual(t, to, int32(13))

	type cursor struct {
		Pool  string
		After int64
	}
	cursors, err := pgx.CollectRows(testenv.Must(conn.Query(ctx,
		`SELECT pool_id, after_id FROM stage_cursors ORDER BY pool_id`)), pgx.RowToStructByPos[cursor])
	require.NoError(t, err)
	require.Equal(t, []cursor{{"p", 4}, {"q", 9}, {"r", 0}}, cursors)

	var p, q bool
	require.NoError(t, conn.QueryRow(ctx, `SELECT dispenser_has_available_v1('p'), dispenser_has_available_v1('q')`).Scan(&p, &q))
	require.True(t, p)
	require.False(t, q)

	var pickable bool
	require.NoError(t, conn.QueryRow(ctx, `SELECT to_regclass('codes_pickable_idx') IS NOT NULL`).Scan(&pickable))
	require.False(t, pickable)

	// A code that becomes available again, below the cursor, is returned.
	_, err = conn.Exec(ctx, `UPDATE codes SET state = 'available', stage_batch = NULL WHERE id = 4`)
	require.NoError(t, err)
	var returned []int64
	require.NoError(t, conn.QueryRow(ctx, `SELECT array_agg(code_id ORDER BY code_id) FROM code_returns WHERE pool_id = 'p'`).Scan(&returned))
	require.Equal(t, []int64{4}, returned)
}

// schemaAt returns a connection to a schema of its own, migrated up to
// version (the numbered migrations only, not functions.sql).
func schemaAt(t *testing.T, version int32) *pgx.Conn {
	t.Helper()
	ctx := context.Background()
	name := testenv.Unique("up_")
	admin, err := pgx.Connect(ctx, testenv.DatabaseURL())
	require.NoError(t, err)
	t.Cleanup(func() { admin.Close(context.Background()) })
	_, err = admin.Exec(ctx, "CREATE SCHEMA "+name)
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = admin.Exec(context.Background(), "DROP SCHEMA "+name+" CASCADE") })

	cfg, err := pgx.ParseConfig(testenv.DatabaseURL())
	require.NoError(t, err)
	cfg.RuntimeParams["search_path"] = name
	conn, err := pgx.ConnectConfig(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close(context.Background()) })
	m, err := migrate.NewMigrator(ctx, conn, migrations.VersionTable)
	require.NoError(t, err)
	require.NoError(t, m.LoadMigrations(migrations.Files))
	require.NoError(t, m.MigrateTo(ctx, version))
	return conn
}
