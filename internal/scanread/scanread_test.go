package scanread_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/dispenserhq/dispenser/internal/scanread"
	"github.com/dispenserhq/dispenser/internal/testenv"
)

// A read runs with JIT off in a read-only transaction of its own, and leaves
// the connection as it found it: idle, with the server's JIT setting, even
// after a statement that failed.
func TestRowReadsWithoutJITAndLeavesTheConnectionClean(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := testenv.Postgres(t)
	cfg, err := pgxpool.ParseConfig(s.URL)
	require.NoError(t, err)
	cfg.MaxConns = 1 // every call below on the same connection, or a new one
	db, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(db.Close)

	var sessionJIT string
	require.NoError(t, db.QueryRow(ctx, "SELECT set_config('jit', 'on', false)").Scan(&sessionJIT)) // the session's own

	var jit, readOnly string
	var n int64
	require.NoError(t, scanread.Row(ctx, db, "SELECT current_setting('jit'), current_setting('transaction_read_only'), $1::bigint",
		[]any{int64(7)}, &jit, &readOnly, &n))
	require.Equal(t, "off", jit)
	require.Equal(t, "on", readOnly)
	require.Equal(t, int64(7), n)

	require.NoError(t, db.QueryRow(ctx, "SHOW jit").Scan(&jit))
	require.Equal(t, "on", jit, "SET LOCAL must end with the read's transaction")

	// A write is refused, and nothing stays open.
	_, err = db.Exec(ctx, "CREATE TABLE scanread_t (x int)")
	require.NoError(t, err)
	var x int
	err = scanread.Row(ctx, db, "INSERT INTO scanread_t VALUES (1) RETURNING x", nil, &x)
	require.ErrorContains(t, err, "read-only transaction")
	require.NoError(t, db.QueryRow(ctx, "SELECT count(*) FROM scanread_t").Scan(&x))
	require.Zero(t, x)
	conn, err := db.Acquire(ctx)
	require.NoError(t, err)
	require.Equal(t, byte('I'), conn.Conn().PgConn().TxStatus(), "idle, not in a transaction")
	conn.Release()

	// No row is pgx.ErrNoRows, as with QueryRow.
	err = scanread.Row(ctx, db, "SELECT 1 WHERE false", nil, &x)
	require.ErrorIs(t, err, pgx.ErrNoRows)
}
