package pool

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/dispenserhq/dispenser/internal/testenv"
)

// The landing insert skips the codes a pool holds by an anti-join of the
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

	// Many rows: an anti-join (the planner picks a merge or a hash).
	plan := explainLanding(ctx, t, db, "p", 20000)
	require.Contains(t, plan, "Anti Join", plan)
	require.NotContains(t, plan, "Conflict", plan)
	// A few rows into a pool of thousands: a probe each, not a pass over
	// every code of the pool.
	plan = explainLanding(ctx, t, db, "p", 20)
	require.Contains(t, plan, "Nested Loop Anti Join", plan)
	require.NotContains(t, plan, "Conflict", plan)
}

// explainLanding stages n new codes for pool poolID on a connection of its
// own, as an import does, and returns the plan of the landing insert.
func explainLanding(ctx context.Context, t *testing.T, db *testenv.Schema, poolID string, n int) string {
	t.Helper()
	conn, err := db.Pool.Acquire(ctx)
	require.NoError(t, err)
	defer releaseImportConn(conn)
	_, err = conn.Exec(ctx, importCreateTempSQL)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, `INSERT INTO import_rows SELECT g, $1 || '-new-' || g, NULL FROM generate_series(1, $2::int) g`, poolID, n)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, analyzeStagedSQL)
	require.NoError(t, err)

	tx, err := conn.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(ctx) }()
	_, err = tx.Exec(ctx, landingWorkMemSQL)
	require.NoError(t, err)
	rows, err := tx.Query(ctx, "EXPLAIN (COSTS OFF) "+importInsertCodesSQL, poolID, int64(1))
	require.NoError(t, err)
	var plan strings.Builder
	for rows.Next() {
		var line string
		require.NoError(t, rows.Scan(&line))
		plan.WriteString(line + "\n")
	}
	require.NoError(t, rows.Err())
	return plan.String()
}
