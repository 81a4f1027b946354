package claim

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/dispenserhq/dispenser/internal/testenv"
)

// WarmConn runs the group commit's statement, with its argument types, on a
// migrated schema; where the function is missing (a database not migrated
// yet) it fails and leaves the connection usable.
func TestWarmConnRunsTheGroupCommit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testenv.Postgres(t)
	conn, err := pgx.Connect(ctx, db.URL)
	require.NoError(t, err)
	defer conn.Close(ctx)

	require.NoError(t, WarmConn(ctx, conn))

	bare, err := pgx.Connect(ctx, db.URL)
	require.NoError(t, err)
	defer bare.Close(ctx)
	_, err = bare.Exec(ctx, "SET search_path = pg_catalog")
	require.NoError(t, err)
	require.ErrorContains(t, WarmConn(ctx, bare), "does not exist")
	require.False(t, bare.IsClosed())
	var one int
	require.NoError(t, bare.QueryRow(ctx, "SELECT 1").Scan(&one))
}
