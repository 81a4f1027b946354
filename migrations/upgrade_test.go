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
	name := testenv.Unique("up_")
	admin, err := pgx.Connect(ctx, testenv.DatabaseURL())
	require.NoError(t, err)
	defer admin.Close(ctx)
	_, err = admin.Exec(ctx, "CREATE SCHEMA "+name)
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = admin.Exec(context.Background(), "DROP SCHEMA "+name+" CASCADE") })

	cfg, err := pgx.ParseConfig(testenv.DatabaseURL())
	require.NoError(t, err)
	cfg.RuntimeParams["search_path"] = name
	conn, err := pgx.ConnectConfig(ctx, cfg)
	require.NoError(t, err)
	defer conn.Close(ctx)
	m, err := migrate.NewMigrator(ctx, conn, migrations.VersionTable)
	require.NoError(t, err)
	require.NoError(t, m.LoadMigrations(migrations.Files))
	require.NoError(t, m.MigrateTo(ctx, 11))

	// Pool p: 10 codes. Batch 1 staged codes 2..4 and 7 (3 and 7 are
	// still staged), batch 2 staged 5 and 6 (both claimed since), code 8
	// is void, 9 and 10 expire (9 available, 10 claimed).
	_, err = conn.Exec(ctx, `
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
	require.Contains(t, options, "fillfactor=70")
}
