package pool

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/dispenserhq/dispenser/internal/testenv"
)

// The landing insert skips the codes a pool holds by one anti-join of the
// sorted staged rows with the pool's codes, and inserts plainly: no
// speculative insertion (ON CONFLICT), which probes the unique index before
// each row and writes a second WAL record to confirm it. Checked with the
// pool already holding codes (so the join has something to skip) and with
// other pools' codes beside them.
func TestImportInsertPlanIsAntiJoin(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testenv.Postgres(t)
	s := NewStore(db.Pool)
	for _, id := range []string{"p", "other"} {
		_, err := s.CreatePool(ctx, Pool{ID: id})
		require.NoError(t, err)
		var b strings.Builder
		for i := range 5000 {
			fmt.Fprintf(&b, "%s-%06d\n", id, i)
		}
		_, err = s.Import(ctx, ImportOptions{PoolID: id, Format: FormatLines}, strings.NewReader(b.String()))
		require.NoError(t, err)
	}
	_, err := db.Pool.Exec(ctx, "ANALYZE codes")
	require.NoError(t, err)

	conn, err := db.Pool.Acquire(ctx)
	require.NoError(t, err)
	defer releaseImportConn(conn)
	_, err = conn.Exec(ctx, importCreateTempSQL)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, `INSERT INTO import_rows SELECT g, 'p-new-' || g, NULL FROM generate_series(1, 20000) g`)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, analyzeStagedSQL)
	require.NoError(t, err)

	tx, err := conn.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(ctx) }()
	_, err = tx.Exec(ctx, landingWorkMemSQL)
	require.NoError(t, err)
	rows, err := tx.Query(ctx, "EXPLAIN (COSTS OFF) "+importInsertCodesSQL, "p", int64(1))
	require.NoError(t, err)
	var plan strings.Builder
	for rows.Next() {
		var line string
		require.NoError(t, rows.Scan(&line))
		plan.WriteString(line + "\n")
	}
	require.NoError(t, rows.Err())
	require.Contains(t, plan.String(), "Anti Join", plan.String())
	require.NotContains(t, plan.String(), "Conflict", plan.String())
}
