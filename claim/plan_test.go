package claim

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/dispenserhq/dispenser/internal/stock"
	"github.com/dispenserhq/dispenser/internal/testenv"
	"github.com/dispenserhq/dispenser/pool"
)

// The fallback must read the pool's range of codes_pool_id_idx from its hint
// (or the pool's refill cursor), not the primary key: with the primary key
// every claim re-reads the claimed rows in front of it (measured once: 950
// claims/s instead of 6,900). And the scan must start at its hint: beside
// "pool_id = $1" Postgres started it at the pool's first entry and stepped
// over every entry up to the hint (82 index pages instead of 4 after 30,000
// fallback claims). The case that misled the planner is a pool whose codes
// are all available; the generic plan matters because PL/pgSQL switches to
// it after a few calls. The refill query reads the same index from the
// pool's cursor.
func TestFallbackPlanUsesPartialIndex(t *testing.T) {
	ctx, e := start(t)
	e.fill("big", 20_000, pool.Pool{})
	e.fill("small", 500, pool.Pool{})

	conn, plans := explainingConn(t, e.db.URL)
	// The refill's pick walks the index in order and stops after its batch,
	// also before the table was ever analyzed (a flash sale right after the
	// import, or autovacuum off): then the planner took a bitmap of every
	// available code of the pool and sorted them all, on disk.
	refillPlan := func(mode, poolID string, size int) string {
		tx, err := conn.Begin(ctx)
		require.NoError(t, err)
		defer func() { require.NoError(t, tx.Rollback(ctx)) }()
		_, err = tx.Exec(ctx, stagePlanSQL)
		require.NoError(t, err)
		plan, err := pgx.CollectRows(testenv.Must(tx.Query(ctx, "EXPLAIN "+stageBatchSQL, pgx.QueryExecModeExec, poolID, 0, size)),
			pgx.RowTo[string])
		require.NoError(t, err)
		text := strings.Join(plan, "\n")
		require.Contains(t, text, "Index Scan using codes_pool_id_idx on codes", "refill, %s, pool %s:\n%s", mode, poolID, text)
		require.Contains(t, text, "Index Scan using code_returns_pkey", "refill, %s, pool %s:\n%s", mode, poolID, text)
		require.NotContains(t, text, "Sort", "refill, %s, pool %s:\n%s", mode, poolID, text)
		return text
	}
	// First on tables never analyzed, then with statistics.
	for _, analyzed := range []bool{false, true} {
		if analyzed {
			_, err := e.db.Pool.Exec(ctx, "ANALYZE codes")
			require.NoError(t, err)
		}
		for _, mode := range []string{"force_custom_plan", "force_generic_plan"} {
			_, err := conn.Exec(ctx, "SET plan_cache_mode = "+mode)
			require.NoError(t, err)
			for _, poolID := range []string{"big", "small"} {
				label := fmt.Sprintf("%s, analyzed %t", mode, analyzed)
				refillPlan(label, poolID, 100)
				refillPlan(label, poolID, 10_000)

				for round := range 6 {
					tx, err := conn.Begin(ctx)
					require.NoError(t, err)
					// Claims and holds alike.
					hold := pgtype.Int8{Int64: 60_000, Valid: round%2 == 1}
					// A fresh request alone takes the set-based path
					// (dispenser_pick_available_v1's pick); the same
					// request twice in a batch the per-item one
					// (dispenser_claim_fallback_v3's).
					req := fmt.Sprintf("%s-%t-%d", mode, analyzed, round)
					require.NoError(t, fallbackOnce(ctx, tx, poolID, req, "u", 100, hold, false))
					require.NoError(t, fallbackCopies(ctx, tx, 2, poolID, req+"-twice", "u2", 100, hold, false))
					require.NoError(t, tx.Rollback(ctx))
				}
			}
		}
	}
	picks := map[string]int{}
	for _, plan := range plans() {
		// The fallback's picks past its hint (the refill's plans, read
		// above, and the cursor's lock come here too).
		if !strings.Contains(plan, "LockRows") {
			continue
		}
		var pick string
		for _, p := range []string{"(p_pool, bound)", "(p_pool, p_after)"} {
			if strings.Contains(plan, p) {
				pick = p
			}
		}
		if pick == "" {
			continue
		}
		picks[pick]++
		require.Contains(t, plan, "Index Scan using codes_pool_id_idx", "the fallback pick:\n%s", plan)
		require.NotContains(t, plan, "Sort", "the fallback pick:\n%s", plan)
		for _, line := range strings.Split(plan, "\n") {
			if strings.Contains(line, "Index Cond") {
				require.NotContains(t, line, "(pool_id =", "the fallback pick starts at the pool's first entry:\n%s", plan)
			}
		}
	}
	require.GreaterOrEqual(t, picks["(p_pool, bound)"], 2*2*2*6, "plans of the per-item fallback pick seen")
	require.GreaterOrEqual(t, picks["(p_pool, p_after)"], 2*2*2*6, "plans of the set-based fallback pick seen")
}

// execer runs a statement: a pool, a connection or a transaction.
type execer interface {
	Exec(context.Context, string, ...any) (pgconn.CommandTag, error)
}

// fallbackOnce runs one fallback claim (a hold with hold set) as the
// fallback does, through the batch function, with a batch of one.
func fallbackOnce(ctx context.Context, db execer, poolID, requestID, userID string, after int64, hold pgtype.Int8,
	redisDown bool,
) error {
	return fallbackCopies(ctx, db, 1, poolID, requestID, userID, after, hold, redisDown)
}

// fallbackCopies sends n copies of one fallback claim in one batch.
func fallbackCopies(ctx context.Context, db execer, n int, poolID, requestID, userID string, after int64,
	hold pgtype.Int8, redisDown bool,
) error {
	pools, reqs, users, afters := make([]string, n), make([]string, n), make([]string, n), make([]int64, n)
	started, holds, down := make([]time.Time, n), make([]pgtype.Int8, n), make([]bool, n)
	for i := range n {
		pools[i], reqs[i], users[i], afters[i] = poolID, requestID, userID, after
		started[i], holds[i], down[i] = time.Now(), hold, redisDown
	}
	_, err := db.Exec(ctx, claimFallbackManySQL, pools, reqs, users, afters, started, holds, time.Minute, down)
	return err
}

// explainingConn opens a connection on which auto_explain reports the plan
// of every statement, nested ones (in functions) too, as notices; plans
// returns those seen so far.
func explainingConn(t *testing.T, url string) (conn *pgx.Conn, plans func() []string) {
	t.Helper()
	ctx := context.Background()
	cfg, err := pgx.ParseConfig(url)
	require.NoError(t, err)
	var mu sync.Mutex
	var seen []string
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
		mu.Lock()
		seen = append(seen, n.Message)
		mu.Unlock()
	}
	conn, err = pgx.ConnectConfig(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close(context.Background()) })
	for _, set := range []string{"LOAD 'auto_explain'", "SET auto_explain.log_min_duration = 0",
		"SET auto_explain.log_nested_statements = on", "SET auto_explain.log_level = notice"} {
		_, err := conn.Exec(ctx, set)
		require.NoError(t, err)
	}
	return conn, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), seen...)
	}
}

// The group commit finds each popped code by primary key, in both its
// set-based and its per-item path, with custom and generic plans (PL/pgSQL
// switches to generic ones after five calls): scanning an index of the
// pool's staged codes (as one did before migration 012) instead read every
// staged entry of the pool, and the dead ones claims
// leave in front, for every code, and claims slow down as a sale goes on.
// auto_explain reports the nested statements' plans as notices.
//
// Both with statistics and on tables never analyzed (a sale right after the
// import, or autovacuum off), which is when the refill's pick went wrong.
func TestGroupCommitPlansUsePrimaryKey(t *testing.T) {
	for _, analyzed := range []bool{true, false} {
		t.Run(map[bool]string{true: "analyzed", false: "never analyzed"}[analyzed], func(t *testing.T) {
			groupCommitPlans(t, analyzed)
		})
	}
}

func groupCommitPlans(t *testing.T, analyzed bool) {
	ctx, e := start(t)
	e.manualStaging()
	p := e.fill("big", 20_000, pool.Pool{RefillBatchSize: 10_000})
	analyze := func(table string) {
		if analyzed {
			_, err := e.db.Pool.Exec(ctx, "ANALYZE "+table)
			require.NoError(t, err)
		}
	}
	// Statistics from before the sale, when no code was staged: what misled
	// the planner into the staged index in the claim benchmark. And from
	// when refusals and ended holds were empty: a plan cached then read
	// every row of those tables for every item once they grew (a sale
	// refuses users at their limit by the thousand), until autovacuum
	// analyzed them again, or never with it off.
	for _, table := range []string{"codes", "refusals", "hold_releases"} {
		analyze(table)
	}
	_, err := e.stager.Refill(ctx, p)
	require.NoError(t, err)

	conn, plans := explainingConn(t, e.db.URL)
	ids := stagedIDs(t, e.db.Pool, "big", 40)

	for _, mode := range []string{"force_custom_plan", "force_generic_plan"} {
		_, err := conn.Exec(ctx, "SET plan_cache_mode = "+mode)
		require.NoError(t, err)
		for round := range 7 {
			// Eight items: fresh requests (the set-based path), a request
			// twice (the per-item path), each in a transaction rolled back.
			n := 8
			pools, reqs, users, started := make([]string, n), make([]string, n), make([]string, n), make([]time.Time, n)
			holds, popped := make([]pgtype.Int8, n), make([]bool, n)
			for i := range n {
				// The last item got its code from a replay record.
				popped[i] = i < n-1
				// Ids as long as UUIDs, as most callers send: with such
				// ids, on a claims table never analyzed, the probes for
				// the request and the user once chose the pool's time
				// index and read every claim of the pool for every item.
				pools[i], reqs[i], users[i], started[i] = "big", uuidLike("r", round, i), uuidLike("u", round, i), time.Now()
				// Every other item is a hold.
				holds[i] = pgtype.Int8{Int64: 60_000, Valid: i%2 == 1}
			}
			reqs[n-1], users[n-1] = reqs[n-2], users[n-2]
			tx, err := conn.Begin(ctx)
			require.NoError(t, err)
			rows, err := tx.Query(ctx, claimStagedSQL, pools, reqs, users, ids[round*2:round*2+n], started, holds, popped, time.Minute)
			require.NoError(t, err)
			rows.Close()
			require.NoError(t, rows.Err())
			require.NoError(t, tx.Rollback(ctx))
		}
	}
	commitPlans := plans()

	// The fallback, in a pool with many claims (9,000, seeded in bulk):
	// its statements read what the request and the user need, never a
	// pool's worth of claims or codes.
	seedClaims(t, conn, "big", 9000)
	_, err = conn.Exec(ctx, "UPDATE pools SET per_user_limit = 5 WHERE id = 'big'")
	require.NoError(t, err)
	analyze("claims")
	seen := len(plans())
	for _, mode := range []string{"force_custom_plan", "force_generic_plan"} {
		_, err := conn.Exec(ctx, "SET plan_cache_mode = "+mode)
		require.NoError(t, err)
		for round := range 7 {
			hold := pgtype.Int8{Int64: 60_000, Valid: round%2 == 1}
			require.NoError(t, fallbackOnce(ctx, conn, "big", fmt.Sprintf("%s-%d", mode, round),
				fmt.Sprintf("user-%s-%d", mode, round%3), 0, hold, round%2 == 0))
		}
	}
	fallbackPlans := plans()[seen:]
	require.NotEmpty(t, fallbackPlans)
	for _, plan := range fallbackPlans {
		for _, bad := range []string{"Seq Scan", "Hash Anti Join", "Bitmap Heap Scan on claims"} {
			require.NotContains(t, plan, bad, "a fallback statement reads more than it needs:\n%s", plan)
		}
	}
	for _, plan := range commitPlans {
		require.NotContains(t, plan, "Seq Scan", "a group commit statement reads a whole table:\n%s", plan)
		require.NotContains(t, plan, "Hash Anti Join", "a group commit probe reads every live refusal:\n%s", plan)
		require.NotContains(t, plan, "claims_pool_time_idx", "a group commit probe reads the pool's claims:\n%s", plan)
	}
	// The probes for a request's claim and a user's claims each use their
	// own index, keyed on their id (on a claims table never analyzed, the
	// other index on pool_id is as cheap to the planner).
	all := strings.Join(commitPlans, "\n")
	require.Contains(t, all, "using claims_request_key")
	require.Contains(t, all, "using claims_user_slot_key")
	for _, plan := range append(commitPlans, fallbackPlans...) {
		require.Empty(t, crosswiseProbes(plan), "a probe reads the pool's claims through another probe's index:\n%s", plan)
	}

	updates := 0
	for _, plan := range commitPlans {
		if !strings.Contains(plan, "Update on codes") {
			continue
		}
		updates++
		// Each popped code by its id: the primary key, or (pool_id, id)
		// with both given, one entry either way; never a range of the
		// pool's codes.
		require.Regexp(t, `Index Scan using codes_(pkey|pool_id_idx) on codes k\b[^\n]*\n\s+Index Cond: \([^\n]*\bid = `, plan)
		require.NotContains(t, plan, "ROW(pool_id, id)", "an update of popped codes scans a range of codes:\n%s", plan)
	}
	require.GreaterOrEqual(t, updates, 2*7*2, "plans seen: set-based and per-item, every round")
}

// An export reads a pool's claims in claim order through the time index,
// whose partial predicate (no open hold) the export states; with or without
// statistics.
func TestExportPlanUsesTimeIndex(t *testing.T) {
	ctx, e := start(t)
	e.fill("p1", 3000, pool.Pool{})
	seedClaims(t, e.db.Pool, "p1", 2000)
	for _, analyzed := range []bool{false, true} {
		if analyzed {
			_, err := e.db.Pool.Exec(ctx, "ANALYZE claims")
			require.NoError(t, err)
		}
		plan, err := pgx.CollectRows(testenv.Must(e.db.Pool.Query(ctx, "EXPLAIN "+exportClaimsSQL, pgx.QueryExecModeExec,
			"p1", time.Unix(0, 0), time.Now().Add(time.Hour), time.Unix(0, 0), int64(0), 100)), pgx.RowTo[string])
		require.NoError(t, err)
		require.Contains(t, strings.Join(plan, "\n"), "claims_pool_time_idx", "analyzed %v", analyzed)
	}
}

// The claim path's probes of claims (a request's claim, a user's claims)
// cannot use the time index, even when the planner finds it cheapest: in
// the flash-sale bench with UUID ids, a plan cached on a claims table not
// yet analyzed chose it and read the pool's claims twice per item for the
// whole sale. Here the indexes that should serve the probes are dropped (in
// a transaction rolled back), which leaves the time index the only one on
// pool_id: its partial predicate keeps it out.
func TestClaimProbesCannotUseTimeIndex(t *testing.T) {
	explain := probePlans(t, "claims_request_key", "claims_user_slot_key")
	for _, probe := range []string{requestProbe, userProbe} {
		require.NotContains(t, explain(probe), "claims_pool_time_idx", probe)
	}
}

// The claim path's probes of claims, as the group commit and the fallback
// state them.
const (
	requestProbe = "SELECT 1 FROM claims c WHERE c.pool_id = $1 AND c.request_id = $2"
	userProbe    = "SELECT 1 FROM claims c WHERE c.pool_id = $1 AND c.user_id = $2"
)

// probePlans drops the given constraints of claims in a transaction rolled
// back at the end of the test, with sequential scans off, and returns what
// EXPLAIN shows there for a probe.
func probePlans(t *testing.T, drop ...string) func(probe string) string {
	ctx, e := start(t)
	tx, err := e.db.Pool.Begin(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
	_, err = tx.Exec(ctx, "SET LOCAL enable_seqscan = off")
	require.NoError(t, err)
	for _, c := range drop {
		_, err := tx.Exec(ctx, "ALTER TABLE claims DROP CONSTRAINT "+c)
		require.NoError(t, err)
	}
	return func(probe string) string {
		t.Helper()
		plan, err := pgx.CollectRows(testenv.Must(tx.Query(ctx, "EXPLAIN "+probe, pgx.QueryExecModeExec, "p1", "x")),
			pgx.RowTo[string])
		require.NoError(t, err)
		return strings.Join(plan, "\n")
	}
}

// claimsKeyColumn is the column after pool_id of each index of claims that
// starts with pool_id and serves a probe.
var claimsKeyColumn = map[string]string{"claims_request_key": "request_id", "claims_user_slot_key": "user_id"}

var claimsProbeScan = regexp.MustCompile(`(?:using|Bitmap Index Scan on) (claims_request_key|claims_user_slot_key)\b`)

// crosswiseProbes returns the scans in an EXPLAIN plan that use a claims
// index starting with pool_id without its second column in the index
// condition: a request's probe through the user index, or the reverse,
// which reads every claim of the pool and filters.
func crosswiseProbes(plan string) []string {
	var bad []string
	lines := strings.Split(plan, "\n")
	for i, line := range lines {
		m := claimsProbeScan.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		cond := ""
		if i+1 < len(lines) && strings.Contains(lines[i+1], "Index Cond:") {
			cond = lines[i+1]
		}
		if !strings.Contains(cond, claimsKeyColumn[m[1]]) {
			bad = append(bad, strings.TrimSpace(line)+" / "+strings.TrimSpace(cond))
		}
	}
	return bad
}

// The check above can fail: with the request index gone (in a transaction
// rolled back), a request's probe goes through the user index, and
// crosswiseProbes names it.
func TestCrosswiseProbeIsCaught(t *testing.T) {
	explain := probePlans(t, "claims_request_key")
	byRequest := explain(requestProbe)
	require.Contains(t, byRequest, "claims_user_slot_key", byRequest)
	require.Len(t, crosswiseProbes(byRequest), 1, byRequest)
	byUser := explain(userProbe)
	require.Empty(t, crosswiseProbes(byUser), byUser)
}

// seedClaims claims n available codes of the pool in bulk, bypassing the
// claim path: one claim each of its own user ("seed-<code id>").
func seedClaims(t *testing.T, db execer, poolID string, n int) {
	t.Helper()
	_, err := db.Exec(context.Background(), `WITH c AS (
			UPDATE codes SET state = 'claimed' WHERE id IN (
				SELECT id FROM codes WHERE pool_id = $1 AND state = 'available' ORDER BY id LIMIT $2)
			RETURNING id)
		INSERT INTO claims (pool_id, request_id, user_id, user_slot, code_id)
		SELECT $1, 'seed-' || id, 'seed-user-' || id, 1, id FROM c`, poolID, n)
	require.NoError(t, err)
}

// uuidLike is an id of a UUID's length, unique per kind, round and item.
func uuidLike(kind string, round, item int) string {
	return fmt.Sprintf("%s%07x-%04x-4000-8000-%012x", kind, round, item, round*1000+item)
}

// The hold statements read what they need: the expiry job the partial index
// of open holds, confirm and cancel the request's row, never a pool's
// claims. Seeded with 9,000 claims and 300 holds, some of them due.
func TestHoldPlans(t *testing.T) {
	ctx, e := start(t)
	e.fill("big", 10_000, pool.Pool{})
	_, err := e.db.Pool.Exec(ctx, `WITH c AS (
			UPDATE codes SET state = CASE WHEN id % 30 = 0 THEN 'held' ELSE 'claimed' END::code_state
			WHERE id IN (SELECT id FROM codes WHERE pool_id = 'big' ORDER BY id LIMIT 9000)
			RETURNING id, state)
		INSERT INTO claims (pool_id, request_id, user_id, user_slot, code_id, reserved_at, held_until)
		SELECT 'big', 'seed-' || id, 'seed-user-' || id, 1, id,
		       CASE WHEN state = 'held' THEN now() END,
		       CASE WHEN state = 'held' THEN now() + ((id / 30) % 2) * interval '1 hour' - interval '1 second' END
		FROM c`)
	require.NoError(t, err)
	_, err = e.db.Pool.Exec(ctx, "ANALYZE claims")
	require.NoError(t, err)
	var held []string
	held, err = pgx.CollectRows(testenv.Must(e.db.Pool.Query(ctx,
		`SELECT request_id FROM claims WHERE held_until > now() ORDER BY id LIMIT 10`)), pgx.RowTo[string])
	require.NoError(t, err)
	require.Len(t, held, 10)
	updates := 0

	conn, plans := explainingConn(t, e.db.URL)
	for _, mode := range []string{"force_custom_plan", "force_generic_plan"} {
		_, err := conn.Exec(ctx, "SET plan_cache_mode = "+mode)
		require.NoError(t, err)
		for round := range 6 {
			tx, err := conn.Begin(ctx)
			require.NoError(t, err)
			// A batch of confirms: two open holds (the set-based path) and
			// one twice (the per-item path); then a cancel.
			rows, err := tx.Query(ctx, confirmSQL, []string{"big", "big", "big", "big"},
				[]string{held[round], held[round+1], held[round+2], held[round+2]}, []string{"", "", "", ""})
			require.NoError(t, err)
			rows.Close()
			require.NoError(t, rows.Err())
			rows, err = tx.Query(ctx, cancelSQL, "big", held[round+3], "")
			require.NoError(t, err)
			rows.Close()
			require.NoError(t, rows.Err())
			rows, err = tx.Query(ctx, expireHoldsSQL, "big", 50)
			require.NoError(t, err)
			rows.Close()
			require.NoError(t, rows.Err())
			require.NoError(t, tx.Rollback(ctx))
		}
	}
	expiry := 0
	for _, plan := range plans() {
		for _, bad := range []string{"Seq Scan on claims", "Seq Scan on codes", "Bitmap Heap Scan on claims"} {
			require.NotContains(t, plan, bad, "a hold statement reads more than it needs:\n%s", plan)
		}
		if strings.Contains(plan, "Update on claims") && strings.Contains(plan, "unnest") {
			updates++
			require.Contains(t, plan, "claims_request_key", "the set-based confirm:\n%s", plan)
		}
		if strings.Contains(plan, "LockRows") && strings.Contains(plan, "held_until <= now()") {
			expiry++
			require.Contains(t, plan, "claims_held_idx", plan)
		}
	}
	require.GreaterOrEqual(t, expiry, 2*6, "plans of the expiry pick seen")
	require.GreaterOrEqual(t, updates, 2*6, "plans of the set-based confirm seen")
}

// The sold-out check and the batched settle read, per request, a few rows
// by index (the user's claims, the request's claim, ended hold and
// refusal), and the check per pool the first entry of the partial indexes
// of available and staged codes: never a pool's worth of claims or codes,
// with custom and generic plans, on tables analyzed or not. Seeded as a
// sold-out pool: 9,000 claims (users at their limit of one) and as many
// refusals.
func TestSoldOutAndSettlePlans(t *testing.T) {
	requestProbe := regexp.MustCompile(`Index Cond: \(\(pool_id = \w+\.pool_id\) AND \(request_id = \w+\.request_id\)\)`)
	for _, analyzed := range []bool{true, false} {
		t.Run(map[bool]string{true: "analyzed", false: "never analyzed"}[analyzed], func(t *testing.T) {
			ctx, e := start(t)
			e.fill("big", 9_000, pool.Pool{})
			_, err := e.db.Pool.Exec(ctx, `WITH c AS (
					UPDATE codes SET state = 'claimed' WHERE pool_id = 'big' RETURNING id)
				INSERT INTO claims (pool_id, request_id, user_id, user_slot, code_id)
				SELECT 'big', 'seed-' || id, 'seed-user-' || id, 1, id FROM c`)
			require.NoError(t, err)
			_, err = e.db.Pool.Exec(ctx, `INSERT INTO refusals (pool_id, request_id, user_id, reason, expires_at)
				SELECT 'big', 'refused-' || g, 'refused-user-' || g, 'limit', now() + interval '1 hour'
				FROM generate_series(1, 9000) g`)
			require.NoError(t, err)
			if analyzed {
				for _, table := range []string{"codes", "claims", "refusals", "hold_releases"} {
					_, err := e.db.Pool.Exec(ctx, "ANALYZE "+table)
					require.NoError(t, err)
				}
			}
			conn, plans := explainingConn(t, e.db.URL)
			for _, mode := range []string{"force_custom_plan", "force_generic_plan"} {
				_, err := conn.Exec(ctx, "SET plan_cache_mode = "+mode)
				require.NoError(t, err)
				for round := range 7 {
					rows, err := conn.Query(ctx, soldOutSQL, []string{"big", "big", "big"},
						[]string{fmt.Sprintf("r-%s-%d", mode, round), "seed-1", "refused-1"},
						[]string{fmt.Sprintf("u-%s-%d", mode, round), "seed-user-1", "refused-user-1"},
						[]bool{false, false, round%2 == 0})
					require.NoError(t, err)
					answers, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (bool, error) {
						var ord int
						var sold bool
						return sold, r.Scan(&ord, &sold)
					})
					require.NoError(t, err)
					require.Equal(t, []bool{true, false, false}, answers)

					// Users at their limit asking again (the set-based
					// step), one of them twice (the per-item rest).
					user := fmt.Sprintf("seed-user-%d", 100+round)
					tx, err := conn.Begin(ctx)
					require.NoError(t, err)
					rows, err = tx.Query(ctx, settleSQL, []string{"big", "big", "big"},
						[]string{"again-" + mode, "twice-" + mode, "twice-" + mode}, []string{"seed-user-1", user, user},
						[]bool{true, true, true}, []time.Time{time.Now(), time.Now(), time.Now()}, time.Minute)
					require.NoError(t, err)
					outs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
						var ord int
						var out string
						var skip [7]any
						return out, r.Scan(&ord, &out, &skip[0], &skip[1], &skip[2], &skip[3], &skip[4], &skip[5], &skip[6])
					})
					require.NoError(t, err)
					require.Equal(t, []string{"limit", "limit", "limit"}, outs)
					require.NoError(t, tx.Rollback(ctx))
				}
			}
			checked, settled, staged, available, returned := 0, 0, 0, 0, 0
			for _, plan := range plans() {
				for _, bad := range []string{"Seq Scan", "Bitmap Heap Scan on claims", "Bitmap Heap Scan on codes", "Bitmap Heap Scan on refusals",
					"Bitmap Heap Scan on hold_releases", "hashed SubPlan", "Hash Anti Join", "Hash Semi Join"} {
					require.NotContains(t, plan, bad, "a sold-out check or settle reads more than it needs:\n%s", plan)
				}
				// The request's claim, ended hold and refusal, each probed
				// by key (not a hashed subplan reading a whole table).
				probes := len(requestProbe.FindAllString(plan, -1))
				switch {
				case strings.Contains(plan, "LEFT JOIN empty e"):
					checked++
					for _, index := range []string{"claims_request_key", "claims_user_slot_key", "hold_releases_pkey", "refusals_pkey"} {
						require.Contains(t, plan, index, plan)
					}
					require.Equal(t, 3, probes, plan)
				case strings.Contains(plan, "(p_pool, cur)"):
					// dispenser_has_available_v1: the first code above the
					// pool's cursor, read in order from the cursor (a generic
					// plan of an EXISTS read the pool's whole range of
					// codes_pool_code_key).
					available++
					require.Regexp(t, `Index Scan using codes_pool_id_idx on codes k\b[^\n]*\n\s+Index Cond: \(\(ROW\(pool_id, id\) > ROW\(`, plan)
					require.NotContains(t, plan, "codes_pool_code_key", plan)
				case strings.Contains(plan, "code_returns r JOIN codes k"):
					// ...and the returned ones, each by key.
					returned++
					require.Contains(t, plan, "Scan using code_returns_pkey", plan)
					require.NotContains(t, plan, "codes_pool_code_key", plan)
				case strings.Contains(plan, "b.drained_at IS NULL"):
					// dispenser_has_staged_v1: the live batches, each
					// range of codes by primary key.
					staged++
					for _, index := range []string{"Index Scan using stage_batches_live_idx", "Index Scan using codes_pkey"} {
						require.Contains(t, plan, index, plan)
					}
				case strings.Contains(plan, "Insert on refusals") && strings.Contains(plan, "unnest"):
					settled++
					for _, index := range []string{"claims_request_key", "claims_user_slot_key", "hold_releases_pkey", "refusals_pkey"} {
						require.Contains(t, plan, index, plan)
					}
					require.Equal(t, 3, probes, plan)
				}
			}
			require.GreaterOrEqual(t, checked, 2*7, "plans of the sold-out check seen")
			require.GreaterOrEqual(t, settled, 2*7, "plans of the set-based settle seen")
			require.GreaterOrEqual(t, staged, 2*7, "plans of the staged-codes check seen")
			require.GreaterOrEqual(t, available, 2*7, "plans of the available-codes check seen")
			require.GreaterOrEqual(t, returned, 2*7, "plans of the returned-codes check seen")
		})
	}
}

// The lost-codes check (a claim that found the list empty) takes the
// difference of the pool's staged codes and the ids Redis holds as a set
// operation, with the generic plan too: a filter "id <> ALL (ids)" compares
// each with each.
func TestStagedLostPlanIsASetDifference(t *testing.T) {
	ctx, e := start(t)
	p := e.fill("lost", 500, pool.Pool{})
	e.stageAll(p)
	conn, err := e.db.Pool.Acquire(ctx)
	require.NoError(t, err)
	defer conn.Release()
	_, err = conn.Exec(ctx, "SET plan_cache_mode = force_generic_plan")
	require.NoError(t, err)
	_, err = conn.Exec(ctx, "PREPARE lost_check(text, bigint[]) AS "+stagedLostSQL)
	require.NoError(t, err)
	defer func() { _, _ = conn.Exec(ctx, "DEALLOCATE lost_check") }()
	plan, err := pgx.CollectRows(testenv.Must(conn.Query(ctx, "EXPLAIN EXECUTE lost_check('lost', '{1,2,3,4,5,6,7,8,9,10,11,12}')",
		pgx.QueryExecModeSimpleProtocol)), pgx.RowTo[string])
	require.NoError(t, err)
	text := strings.Join(plan, "\n")
	require.Contains(t, text, "SetOp Except", text)
	require.NotContains(t, text, "<> ALL", text)
	// The pool's live batches, and each one's range of codes by primary
	// key: no index of staged codes is left (migration 012).
	require.Contains(t, text, "stage_batches_live_idx", text)
	require.Contains(t, text, "codes_pkey", text)
	require.NotContains(t, text, "Seq Scan on codes", text)

	var lost bool
	require.NoError(t, conn.QueryRow(ctx, stagedLostSQL, "lost", []int64{}).Scan(&lost))
	require.True(t, lost, "every staged code is missing from an empty Redis")
	var ids []int64
	require.NoError(t, conn.QueryRow(ctx, "SELECT array_agg(id) FROM codes WHERE pool_id = 'lost' AND state = 'staged'").Scan(&ids))
	require.Len(t, ids, 500)
	require.NoError(t, conn.QueryRow(ctx, stagedLostSQL, "lost", append(ids, ids[:10]...)).Scan(&lost))
	require.False(t, lost, "Redis holds them all")
	require.NoError(t, conn.QueryRow(ctx, stagedLostSQL, "lost", ids[1:]).Scan(&lost))
	require.True(t, lost, "one is missing")
}

// A claim of a staged code rewrites its row in place (a HOT update): no
// index of codes names a column the claim changes (migration 012), and the
// page keeps room for the new version (fillfactor). Counted by Postgres in
// group commits of 24 (flash sales averaged about 25 per commit), claims
// and holds alike, in their set-based and their per-item path: codes are
// popped in id order, so each commit rewrites neighbouring rows of one or
// two pages.
//
// Not in parallel with this package's other tests, on a database of its own
// and with no service running: pruning is what frees a page's room for the
// next commit, and it waits until no transaction in the database may still
// see the versions claims leave behind.
func TestClaimUpdatesAreHOT(t *testing.T) {
	ctx := context.Background()
	db := testenv.PostgresOwnDatabase(t)
	rdb, ns := testenv.Redis(t)
	p := hotPool(ctx, t, db.Pool, pool.Pool{ID: "hot", RefillBatchSize: 1000})
	_, err := NewStager(db.Pool, rdb, stock.NewKeys(ns), false).Refill(ctx, p)
	require.NoError(t, err)
	ids := stagedIDs(t, db.Pool, "hot", 240)
	require.Len(t, ids, 240)

	conn, err := db.Pool.Acquire(ctx)
	require.NoError(t, err)
	defer conn.Release()
	const n = 24
	// attempt runs one commit's claims and returns how many of its updates
	// were HOT; it commits only if all were, and rolls back otherwise.
	attempt := func(commit int) int64 {
		pools, reqs, users, started := make([]string, n), make([]string, n), make([]string, n), make([]time.Time, n)
		holds, popped := make([]pgtype.Int8, n), make([]bool, n)
		for i := range n {
			pools[i], reqs[i], users[i], started[i], popped[i] = "hot", fmt.Sprintf("r%d-%d", commit, i), fmt.Sprintf("u%d-%d", commit, i), time.Now(), true
			holds[i] = pgtype.Int8{Int64: 60_000, Valid: i%4 == 1}
		}
		// The last item's code came from a replay record: the per-item path.
		popped[n-1] = false
		tx, err := conn.Begin(ctx)
		require.NoError(t, err)
		defer func() { _ = tx.Rollback(ctx) }()
		// The backend's counts not yet reported include its earlier
		// transactions': take the difference.
		counts := func() (updated, hot int64) {
			require.NoError(t, tx.QueryRow(ctx, `SELECT pg_stat_get_xact_tuples_updated('codes'::regclass),
				pg_stat_get_xact_tuples_hot_updated('codes'::regclass)`).Scan(&updated, &hot))
			return updated, hot
		}
		updated0, hot0 := counts()
		rows, err := tx.Query(ctx, claimStagedSQL, pools, reqs, users, ids[commit*n:(commit+1)*n], started, holds, popped, time.Minute)
		require.NoError(t, err)
		outs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
			var ord int
			var out string
			var skip [6]any
			return out, r.Scan(&ord, &out, &skip[0], &skip[1], &skip[2], &skip[3], &skip[4], &skip[5])
		})
		require.NoError(t, err)
		require.Len(t, outs, n)
		updated, hot := counts()
		updated, hot = updated-updated0, hot-hot0
		require.Equal(t, int64(n), updated, "outcomes %v", outs)
		if hot == n {
			require.NoError(t, tx.Commit(ctx))
		}
		return hot
	}
	// A page's room comes back when the versions earlier commits left are
	// pruned, which happens on a later read of the page once no snapshot
	// may see them; another database's open transaction (the other test
	// packages') holds that back for the whole server. So a commit that
	// finds a page still full is rolled back and tried again, for up to 10
	// s. Without the room the fillfactor keeps, or with an index naming
	// state, a commit never gets there.
	for commit := range len(ids) / n {
		var seen []int64
		deadline := time.Now().Add(10 * time.Second)
		for {
			hot := attempt(commit)
			seen = append(seen, hot)
			if hot == n {
				break
			}
			require.True(t, time.Now().Before(deadline), "commit %d: HOT updates of %d in %d attempts, the last: %v",
				commit, n, len(seen), seen[max(0, len(seen)-10):])
			time.Sleep(20 * time.Millisecond)
		}
		if len(seen) > 1 {
			t.Logf("commit %d: HOT updates of %d per attempt: %v", commit, n, seen)
		}
	}
}

// No index of codes names a column a refill or a claim of a staged code
// writes (state, stage_batch, changed_at, and pickable, generated from
// state), in its key, expressions or predicate: such an index makes every
// staged or claimed code write a new entry into every index of codes.
func TestNoCodesIndexNamesStagingOrClaimColumns(t *testing.T) {
	ctx, e := start(t)
	type use struct{ Index, Column string }
	uses, err := pgx.CollectRows(testenv.Must(e.db.Pool.Query(ctx, `
		SELECT i.indexrelid::regclass::text, a.attname::text
		FROM pg_index i
		JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum > 0 AND NOT a.attisdropped
		WHERE i.indrelid = 'codes'::regclass
		  AND (a.attnum = ANY (i.indkey)
		       OR pg_get_expr(i.indpred, i.indrelid) ~ ('\m' || a.attname || '\M')
		       OR pg_get_expr(i.indexprs, i.indrelid) ~ ('\m' || a.attname || '\M'))
		ORDER BY 1, 2`)), pgx.RowToStructByPos[use])
	require.NoError(t, err)
	byIndex := map[string][]string{}
	for _, u := range uses {
		byIndex[u.Index] = append(byIndex[u.Index], u.Column)
	}
	require.Equal(t, map[string][]string{
		"codes_pkey":          {"id"},
		"codes_pool_code_key": {"code", "pool_id"},
		"codes_pool_id_idx":   {"id", "pool_id"},
		"codes_expiring_idx":  {"expires_at", "expiry_open"},
	}, byIndex)
}

// A refill's updates of codes (available to staged) are HOT too (migration
// 013): no index names what it writes, and freshly imported pages keep half
// their room, so the batch's new row versions fit beside the old ones in
// the refill's one transaction. A row's new version is a little longer (its
// batch id was NULL), so a page's last row or two may not fit: at least nine
// in ten, where none were before.
func TestRefillUpdatesAreHOT(t *testing.T) {
	ctx := context.Background()
	db := testenv.PostgresOwnDatabase(t)
	hotPool(ctx, t, db.Pool, pool.Pool{ID: "hot"})

	conn, err := db.Pool.Acquire(ctx)
	require.NoError(t, err)
	defer conn.Release()
	for round := range 2 {
		tx, err := conn.Begin(ctx)
		require.NoError(t, err)
		var updated0, hot0, updated, hot int64
		counts := `SELECT pg_stat_get_xact_tuples_updated('codes'::regclass), pg_stat_get_xact_tuples_hot_updated('codes'::regclass)`
		require.NoError(t, tx.QueryRow(ctx, counts).Scan(&updated0, &hot0))
		_, err = tx.Exec(ctx, stagePlanSQL)
		require.NoError(t, err)
		_, err = tx.Exec(ctx, ensureCursorSQL, "hot")
		require.NoError(t, err)
		rows, err := tx.Query(ctx, stageBatchSQL, "hot", 0, 1000)
		require.NoError(t, err)
		rows.Close()
		require.NoError(t, rows.Err())
		require.NoError(t, tx.QueryRow(ctx, counts).Scan(&updated, &hot))
		updated, hot = updated-updated0, hot-hot0
		require.EqualValues(t, 1000, updated, "round %d", round)
		require.GreaterOrEqual(t, hot*10, updated*9, "round %d: %d of %d updates HOT", round, hot, updated)
		require.NoError(t, tx.Commit(ctx))
	}
}

// hotPool creates pool p in db with 3,000 codes imported, for the HOT tests.
func hotPool(ctx context.Context, t *testing.T, db *pgxpool.Pool, p pool.Pool) pool.Pool {
	t.Helper()
	store := pool.NewStore(db)
	p, err := store.CreatePool(ctx, p)
	require.NoError(t, err)
	var b strings.Builder
	for i := range 3000 {
		fmt.Fprintf(&b, "%s-CODE-%06d\n", p.ID, i)
	}
	_, err = store.Import(ctx, pool.ImportOptions{PoolID: p.ID, Format: pool.FormatLines}, strings.NewReader(b.String()))
	require.NoError(t, err)
	return p
}

// The group commit's probe of live refusals is a lookup per item, also
// beside a pool's worth of claims on a refusals table never analyzed (a
// sale's first refusals, or autovacuum off): the planner then put a hash
// anti join over every live refusal (read through refusals_expiry_idx)
// first, once per batch, which grows with every user a sale refuses.
func TestGroupCommitRefusalProbeIsALookup(t *testing.T) {
	ctx, e := start(t)
	e.manualStaging()
	p := e.fill("big", 40_000, pool.Pool{RefillBatchSize: 2_000})
	seedClaims(t, e.db.Pool, "big", 30_000)
	for _, table := range []string{"codes", "claims"} {
		_, err := e.db.Pool.Exec(ctx, "ANALYZE "+table)
		require.NoError(t, err)
	}
	_, err := e.stager.Refill(ctx, p)
	require.NoError(t, err)
	ids := stagedIDs(t, e.db.Pool, "big", 28)
	n := len(ids)
	require.Equal(t, 28, n)

	conn, plans := explainingConn(t, e.db.URL)
	for round, mode := range []string{"force_custom_plan", "force_generic_plan"} {
		_, err := conn.Exec(ctx, "SET plan_cache_mode = "+mode)
		require.NoError(t, err)
		pools, reqs, users, started := make([]string, n), make([]string, n), make([]string, n), make([]time.Time, n)
		holds, popped := make([]pgtype.Int8, n), make([]bool, n)
		for i := range n {
			pools[i], reqs[i], users[i] = "big", uuidLike("r", round, i), uuidLike("u", round, i)
			started[i], popped[i] = time.Now(), true
		}
		tx, err := conn.Begin(ctx)
		require.NoError(t, err)
		rows, err := tx.Query(ctx, claimStagedSQL, pools, reqs, users, ids, started, holds, popped, time.Minute)
		require.NoError(t, err)
		rows.Close()
		require.NoError(t, rows.Err())
		require.NoError(t, tx.Rollback(ctx))
	}
	probes := 0
	for _, plan := range plans() {
		if !strings.Contains(plan, "refusals") || !strings.Contains(plan, "Update on codes") {
			continue
		}
		probes++
		require.NotContains(t, plan, "Hash Anti Join", "the refusal probe reads every live refusal:\n%s", plan)
		require.NotContains(t, plan, "Bitmap Heap Scan on refusals", "the refusal probe reads every live refusal:\n%s", plan)
	}
	require.GreaterOrEqual(t, probes, 2, "plans of the set-based group commit seen")
}

// The batched statements of the hot paths (group commit, sold-out check,
// settle, fallback, confirm) each call one PL/pgSQL function, whose plan
// cache, left to itself, planned custom plans again on every call: two to
// three times the CPU of the whole call (docs/BENCHMARKS.md, rounds
// twenty-two and twenty-three). Each runs with generic plans only, whatever
// the session's setting; the tests above check that those plans are good.
func TestHotFunctionsPlanGenericOnly(t *testing.T) {
	ctx, e := start(t)
	called := regexp.MustCompile(`FROM (dispenser_\w+)\(`)
	for _, sql := range []string{claimStagedSQL, soldOutSQL, settleSQL, claimFallbackManySQL, confirmSQL} {
		m := called.FindStringSubmatch(sql)
		require.NotNil(t, m, "no function called in:\n%s", sql)
		var config []string
		require.NoError(t, e.db.Pool.QueryRow(ctx,
			`SELECT coalesce(proconfig, '{}') FROM pg_proc WHERE proname = $1`, m[1]).Scan(&config))
		require.Contains(t, config, "plan_cache_mode=force_generic_plan", "%s plans custom plans", m[1])
	}
	// The helpers they call once per batch read tables, so they are
	// PL/pgSQL: a SQL function that reads a table is not inlined, and is
	// parsed and planned again in every transaction that calls it (the
	// cursor's read cost a sold-out check 50 µs per batch; round
	// twenty-three).
	for _, fn := range []string{"dispenser_cursor_v1", "dispenser_has_available_v1", "dispenser_has_staged_v1",
		"dispenser_pick_available_v1"} {
		var lang string
		require.NoError(t, e.db.Pool.QueryRow(ctx,
			`SELECT l.lanname FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang WHERE p.proname = $1`, fn).Scan(&lang))
		require.Equal(t, "plpgsql", lang, "%s is planned again in every transaction", fn)
	}
}
