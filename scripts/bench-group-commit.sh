#!/usr/bin/env bash
# What one group commit costs Postgres, apart from everything else a sale
# runs: dispenser_claim_staged_v3 (the flusher's statement) called by
# pgbench, one client, prepared, each call its own transaction (so its own
# WAL flush, as the flusher's), with batches of each SIZE fresh requests
# for staged codes. Postgres's CPU per claim and per batch comes from
# /proc/<pid>/stat of the private cluster (pg_ticks), and a straight line
# through the batch costs splits them into a fixed part per batch (the
# commit and its WAL flush, the call, each statement's start) and a part
# per claim.
#
#   scripts/bench-group-commit.sh              # sizes 5 25 50, three runs
#   RUNS=3 CLAIMS=30000 scripts/bench-group-commit.sh 5 10 25 50 100
#
# pgbench builds each call's arrays in SQL; that harness is measured the
# same way through a function of the same arguments that reads them and
# writes nothing (no WAL flush), and printed beside. The pool's codes are
# staged by SQL (one stage batch over all of them), not by a refill: the
# statement sees what it sees in a sale, a staged code per item. Before
# each measured run, 2,000 claims are made and the probe tables analyzed
# (what the group commit's own statistics check does in a sale), then a
# CHECKPOINT. Nothing else should run meanwhile; on this machine's shared
# cores one run still spreads by about 15%, so compare sizes within a run.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
runs="${RUNS:-3}" claims="${CLAIMS:-30000}"
sizes=("$@")
[[ ${#sizes[@]} -gt 0 ]] || sizes=(5 25 50)
# shellcheck source=scripts/bench/lib.sh
source scripts/bench/lib.sh
bench_cluster

work="$root/.dev/group-commit"
rm -rf "$work" && mkdir -p "$work"
go build -o "$work/" ./cmd/dispenserd
tpl=dispenser_gc_tpl db=dispenser_gc
# Both databases go at the end, so that autovacuum catching up on them does
# not run beside a later benchmark.
trap 'bench_drop_db "$db"; bench_drop_db "$tpl"' EXIT
codes=$((claims + 2000 + 1000))
bench_fresh_db "$tpl"
DISPENSER_DATABASE_URL="$pg/$tpl?sslmode=disable" "$work/dispenserd" migrate --log-format text >/dev/null 2>&1
psql "$pg/$tpl?sslmode=disable" -q -v ON_ERROR_STOP=1 -v codes="$codes" <<'SQL'
INSERT INTO pools (id, refill_low_water, refill_batch_size) VALUES ('p', 1000, 5000);
INSERT INTO imports (pool_id, format, strict, lines, inserted, duplicates_in_file, duplicates_in_pool, invalid, bytes)
VALUES ('p', 'lines', false, :codes, :codes, 0, 0, 0, 0);
INSERT INTO stage_batches (pool_id, size, first_id, last_id) VALUES ('p', :codes, 1, :codes);
INSERT INTO codes (pool_id, code, state, import_id, stage_batch)
SELECT 'p', md5(g::text), 'staged', 1, 1 FROM generate_series(1, :codes) g;
CREATE SEQUENCE bench_batch;
-- The harness alone: the same arguments, read and counted, nothing written.
CREATE FUNCTION bench_group_commit_noop(p_pool text[], p_request text[], p_user text[], p_code bigint[],
    p_started timestamptz[], p_hold_ms bigint[], p_popped boolean[], p_ttl interval)
RETURNS SETOF integer LANGUAGE sql AS $$ SELECT 1 FROM unnest(p_pool, p_request, p_user, p_code) $$;
VACUUM ANALYZE;
SQL

# script FUNCTION SIZE: a pgbench script of one call of FUNCTION with SIZE
# items: requests r<n> of users u<n> for codes n, n numbered on from the
# batch sequence, so every call claims codes no call claimed before.
script() {
	cat <<SQL
WITH s AS MATERIALIZED (SELECT (nextval('bench_batch') - 1) * $2 AS s)
SELECT count(*) FROM s, $1(
  array_fill('p'::text, ARRAY[$2]),
  ARRAY(SELECT 'r' || g FROM s, generate_series(s.s + 1, s.s + $2) g),
  ARRAY(SELECT 'u' || g FROM s, generate_series(s.s + 1, s.s + $2) g),
  ARRAY(SELECT g::bigint FROM s, generate_series(s.s + 1, s.s + $2) g),
  array_fill(now(), ARRAY[$2]),
  array_fill(NULL::bigint, ARRAY[$2]),
  array_fill(true, ARRAY[$2]),
  interval '1 hour');
SQL
}

# measure FUNCTION SIZE: on a fresh copy of the template, warm up, then
# CLAIMS items in batches of SIZE; prints "SIZE batches items ticks".
measure() {
	local fn="$1" size="$2" n=$((claims / $2)) before after
	bench_fresh_db "$db" "$tpl"
	script "$fn" "$size" >"$work/script.sql"
	pgbench "$pg/$db?sslmode=disable" -n -M prepared -c 1 -t $((2000 / size)) -f "$work/script.sql" >/dev/null 2>&1
	psql "$pg/$db?sslmode=disable" -q -c "ANALYZE claims" -c "ANALYZE refusals" -c "ANALYZE hold_releases" -c "CHECKPOINT"
	before=$(pg_ticks)
	pgbench "$pg/$db?sslmode=disable" -n -M prepared -c 1 -t "$n" -f "$work/script.sql" >"$work/pgbench.out" 2>&1 ||
		{ cat "$work/pgbench.out" >&2; exit 1; }
	after=$(pg_ticks)
	if [[ "$fn" == dispenser_* ]]; then
		local made
		made=$(psql "$pg/$db?sslmode=disable" -tAc "SELECT count(*) FROM claims")
		[[ "$made" == $((n * size + 2000 / size * size)) ]] || { echo "expected every item claimed, got $made claims" >&2; exit 1; }
	fi
	echo "$size $n $((n * size)) $((after - before))"
}

echo "group commit alone: $claims claims per size, pgbench 1 client, prepared; PostgreSQL $(psql "$pg/postgres" -tAc 'SHOW server_version') stock settings on :$bench_pg_port"
results="$work/results"
: >"$results"
for run in $(seq 1 "$runs"); do
	for size in "${sizes[@]}"; do
		out=$(measure dispenser_claim_staged_v3 "$size")
		read -r s n items t <<<"$out"
		out=$(measure bench_group_commit_noop "$size")
		read -r _ _ _ h <<<"$out"
		echo "$run $s $n $items $t $h" >>"$results"
		python3 - "$hz" "$run" "$s" "$n" "$items" "$t" "$h" <<'EOF'
import sys
hz, run, size, n, items, t, h = (int(x) for x in sys.argv[1:])
us = lambda ticks: ticks * 1e6 / hz
print(f"run {run} batches of {size:3d}: Postgres {us(t) / items:6.1f} µs per claim, {us(t) / n:7.0f} per batch"
      f"  (the harness alone {us(h) / items:5.1f} per claim, {us(h) / n:5.0f} per batch)")
EOF
	done
done
python3 - "$hz" "$results" <<'EOF'
import sys
hz = int(sys.argv[1])
rows = [[int(x) for x in l.split()] for l in open(sys.argv[2])]
def fit(col):
    # least squares: cost per batch = fixed + per_item * size, over every run
    pts = [(r[1], r[col] * 1e6 / hz / r[2]) for r in rows]
    if len({x for x, _ in pts}) < 2:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    b = sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)
    return my - b * mx, b
for name, col in (("group commit", 4), ("harness alone", 5)):
    f = fit(col)
    if f:
        print(f"{name}: about {f[0]:.0f} µs per batch plus {f[1]:.1f} per claim (least squares over every run)")
EOF
