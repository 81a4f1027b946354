package claim

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/dispenserhq/dispenser/pool"
)

// pickSQL is the code-picking query of dispenser_claim_fallback
// (migrations/002_claims.sql), with its variables as parameters.
const pickSQL = `SELECT k.id FROM codes k
WHERE k.pool_id = $1 AND k.state = 'available' AND (k.pool_id, k.id) > ($1, $2)
  AND (k.expires_at IS NULL OR k.expires_at > now())
ORDER BY k.pool_id, k.id
LIMIT 1
FOR UPDATE SKIP LOCKED`

// The fallback must read the partial index of available codes, not the
// primary key: with the primary key every claim re-reads the claimed rows in
// front of it (DESIGN.md measured 950 claims/s instead of 6,900). The case
// that misled the planner is a pool whose codes are all available; the
// generic plan matters because PL/pgSQL switches to it after a few calls.
func TestFallbackPlanUsesPartialIndex(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	e.fill("big", 20_000, pool.Pool{})
	e.fill("small", 500, pool.Pool{})
	_, err := e.db.Pool.Exec(ctx, "ANALYZE codes")
	require.NoError(t, err)

	conn, err := e.db.Pool.Acquire(ctx)
	require.NoError(t, err)
	defer conn.Release()
	for _, mode := range []string{"force_custom_plan", "force_generic_plan"} {
		_, err := conn.Exec(ctx, "SET plan_cache_mode = "+mode)
		require.NoError(t, err)
		for _, poolID := range []string{"big", "small"} {
			for name, q := range map[string]string{"fallback pick": pickSQL, "refill": stageBatchSQL} {
				args := []any{pgx.QueryExecModeExec, poolID, int64(0)}
				if name == "refill" {
					args = append(args, 100)
				}
				rows, err := conn.Query(ctx, "EXPLAIN "+q, args...)
				require.NoError(t, err)
				plan, err := pgx.CollectRows(rows, pgx.RowTo[string])
				require.NoError(t, err)
				text := strings.Join(plan, "\n")
				require.Contains(t, text, "codes_available_idx", "%s, %s, pool %s:\n%s", name, mode, poolID, text)
			}
		}
	}
	_, err = conn.Exec(ctx, "RESET plan_cache_mode")
	require.NoError(t, err)
}
