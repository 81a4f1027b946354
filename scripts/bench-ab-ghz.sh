#!/usr/bin/env bash
# A/B flash-sale benchmark with ghz: the working tree against an earlier
# revision, alternating, on a private PostgreSQL cluster with stock settings
# (.dev/postgres, port 25432; started by scripts/services.sh if needed) and
# the machine's Redis.
#
#   scripts/bench-ab-ghz.sh REV                 # e.g. scripts/bench-ab-ghz.sh HEAD~3
#   RUNS=3 CLAIMS=60000 CODES=300000 scripts/bench-ab-ghz.sh REV
#   FALLBACK=1 CLAIMS=30000 CODES=40000 scripts/bench-ab-ghz.sh REV   # --fallback-only
#   A_ARGS="--gc-percent 100" scripts/bench-ab-ghz.sh HEAD                # flags, same code
#   B_ENV="GOMAXPROCS=1" scripts/bench-ab-ghz.sh HEAD                     # dispenserd's environment
#   UUIDS=1 BENCH_LOCALE=en_US.utf8 scripts/bench-ab-ghz.sh REV            # UUID ids, en_US database
#   ANALYZED_EMPTY=1 scripts/bench-ab-ghz.sh REV   # claims, refusals and hold_releases analyzed while empty
#   GHZ_ARGS="--connections 4" scripts/bench-ab-ghz.sh HEAD   # more ghz flags, both sides (a diagnostic: the goal's load is ghz's defaults)
#   B_GHZ_WRAP="nice -n 19" scripts/bench-ab-ghz.sh HEAD      # ghz run through a command on one side (a diagnostic)
#
# Each run is what the issue 9 claim bench measures (scripts/bench-claims.sh
# step 2): a fresh database and a pool with default settings, CODES codes
# imported and nothing staged, then CLAIMS ClaimCode calls from ghz at
# CONCURRENCY callers with unique request and user ids, after the codes are
# vacuumed and checkpointed (bench_quiesce, as make bench-claims does); then
# the pool's audit. It prints calls/s, p50/p99, and CPU per call of each server process
# from /proc/<pid>/stat (dispenserd; Postgres: the postmaster, its live
# children and the children that exited; Redis) and of ghz, and how many
# updates of codes were HOT. For p99 it also tells apart the calls of the
# sale's first second and the calls that started while a refill staged
# codes (from its chunks' start times in stage_batches): how many of the
# slowest 1% each holds, and the p99 of the calls after the first second and
# of the calls beside no refill.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
rev="${1:?usage: scripts/bench-ab-ghz.sh REV}"
runs="${RUNS:-3}" calls="${CLAIMS:-60000}" codes="${CODES:-300000}" conc="${CONCURRENCY:-64}"
# shellcheck source=scripts/bench/lib.sh
source scripts/bench/lib.sh
export DISPENSER_DATABASE_URL="$pg/dispenser_ab_ghz?sslmode=disable"
bench_cluster

work="$root/.dev/ab-ghz"
client_cpu_file="$work/client-cpu"
rm -rf "$work" && mkdir -p "$work/a" "$work/b"
git worktree add -f --detach "$work/src" "$rev" >/dev/null 2>&1
trap 'git worktree remove --force "$work/src" >/dev/null 2>&1 || true; cleanup' EXIT
(cd "$work/src" && go build -o "$work/a/" ./cmd/...)
go build -o "$work/b/" ./cmd/...
go build -modfile=tools/ghz/go.mod -o "$work/ghz" github.com/bojand/ghz/cmd/ghz
codes_file "$codes" "$work/codes.txt"

port=28094
# Request and user ids: short and numbered, or, with UUIDS=1, random UUIDs
# as many callers send them.
data='{"pool_id":"ghz","user_id":"u{{.RequestNumber}}","request_id":"r{{.RequestNumber}}"}'
[[ -n "${UUIDS:-}" ]] && data='{"pool_id":"ghz","user_id":"{{newUUID}}","request_id":"{{newUUID}}"}'
fallback=()
[[ -n "${FALLBACK:-}" ]] && fallback=(--fallback-only)
pid=""
cleanup() {
	[[ -n "$pid" ]] && kill -9 "$pid" 2>/dev/null
	redis-cli --scan --pattern "bench-ab-ghz:*" | xargs -r -n 10000 redis-cli unlink >/dev/null
}
run_one() { # label bindir environment [dispenserd flags...]
	local label="$1" bin="$2" envs="$3"
	shift 3
	bench_fresh_db dispenser_ab_ghz
	"$bin/dispenserd" migrate --log-format text >/dev/null 2>&1
	local key before after
	key="$("$bin/dispenserd" keys create --role admin 2>/dev/null)"
	export DISPENSER_KEY="$key" DISPENSER_ADDR="127.0.0.1:$port" DISPENSER_REDIS_NAMESPACE=bench-ab-ghz
	bench_serve "$bin" "$port" "$work/server.log" "$envs" "${fallback[@]}" "$@"
	bench_pool "$bin" ghz "$work/codes.txt"
	# With ANALYZED_EMPTY, the claim path's probe tables are analyzed too,
	# while empty, as `vacuumdb --analyze` (or an ANALYZE after a restore or
	# an upgrade) leaves a new database before its first sale.
	bench_quiesce dispenser_ab_ghz codes ${ANALYZED_EMPTY:+claims refusals hold_releases}
	before=$(cpu_mark "$pid")
	# A_GHZ_WRAP / B_GHZ_WRAP: a command that runs ghz on that side
	# (`nice -n 19`), a diagnostic like GHZ_ARGS.
	local wrap="${A_GHZ_WRAP:-}"
	[[ "$label" == B* ]] && wrap="${B_GHZ_WRAP:-}"
	# shellcheck disable=SC2086 # GHZ_ARGS and the wrapper split on spaces on purpose
	client_cpu $wrap "$work/ghz" --insecure --call dispenser.v1.ClaimService.ClaimCode \
		-m "{\"authorization\":\"Bearer $key\"}" \
		-d "$data" ${GHZ_ARGS:-} \
		-c "$conc" -n "$calls" -O json "127.0.0.1:$port" >"$work/ghz.json"
	after=$(cpu_mark "$pid")
	local audit
	# A failed audit (it exits non-zero) is printed with the run's figures,
	# not fatal: a throwaway build that breaks a promise on purpose (round
	# twelve in docs/BENCHMARKS.md) is still measured.
	audit="$("$bin/dispenserctl" audit --pool ghz --database-url "$DISPENSER_DATABASE_URL" | tail -1 || true)"
	kill -TERM "$pid"
	wait "$pid" 2>/dev/null || true
	pid=""
	# Updates of codes rewritten in place (HOT: no index entry written), of
	# all, the refill's included; its server's backends reported them as
	# they exited.
	local hot
	hot=$(psql "$DISPENSER_DATABASE_URL" -tAc "SELECT n_tup_hot_upd || ' of ' || n_tup_upd FROM pg_stat_user_tables WHERE relname = 'codes'")
	# What the run left in Redis (replay records, counts, the list): its
	# keys, and the memory they held (used_memory before and after they go;
	# UNLINK frees in the background, so wait for lazyfree to finish).
	local keys_held mem_with mem_without
	keys_held=$(redis-cli --scan --pattern "bench-ab-ghz:*" | wc -l)
	mem_with=$(redis-cli info memory | awk -F: '/^used_memory:/ {print $2+0}')
	redis-cli --scan --pattern "bench-ab-ghz:*" | xargs -r -n 10000 redis-cli unlink >/dev/null
	for _ in $(seq 1 50); do
		[[ "$(redis-cli info memory | awk -F: '/^lazyfree_pending_objects:/ {print $2+0}')" == 0 ]] && break
		sleep 0.1
	done
	mem_without=$(redis-cli info memory | awk -F: '/^used_memory:/ {print $2+0}')
	# When each refill chunk began (its transaction's start), to tell the
	# calls that ran beside a refill from the others.
	local staged_at
	staged_at=$(psql "$DISPENSER_DATABASE_URL" -tAc "SELECT string_agg(extract(epoch FROM staged_at)::text, ' ' ORDER BY id) FROM stage_batches")
	python3 - "$label" "$work/ghz.json" "$hz" "$before" "$after" "$(cat "$client_cpu_file")" "$audit" "$keys_held" "$((mem_with - mem_without))" "$hot" "$staged_at" <<'EOF'
import json, sys
from datetime import datetime
label, path, hz, before, after, client, audit = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].split(), sys.argv[5].split(), float(sys.argv[6]), sys.argv[7]
keys_held, mem_held, hot = int(sys.argv[8]), int(sys.argv[9]), sys.argv[10]
chunks = sorted(float(t) for t in sys.argv[11].split())
r = json.load(open(path))
n = r["count"]
lat = {d["percentage"]: d["latency"] / 1e6 for d in r.get("latencyDistribution") or []}
# How many of the calls at or above the p99 started in the sale's first
# second (its start: the first refills, connections and plans warming up).
def start_s(t):
    base, _, frac = t.rstrip("Z").partition(".")
    return datetime.fromisoformat(base).timestamp() + float("0." + (frac or "0"))
details = r.get("details") or []
# Refills: chunks less than 0.3 s apart are one refill, counted from 20 ms
# before its first chunk's start to 60 ms after its last's (about one chunk).
refills = []
for c in chunks:
    if refills and c - refills[-1][1] < 0.3:
        refills[-1][1] = c
    else:
        refills.append([c, c])
def in_refill(t):
    return any(a - 0.02 <= t <= b + 0.06 for a, b in refills)
early, p99_later, beside, slow_beside, p99_apart = 0, 0.0, 0, 0, 0.0
if details:
    t0 = min(start_s(x["timestamp"]) for x in details)
    p99_ns = sorted(x["latency"] for x in details)[int(len(details) * 0.99)]
    slow = [x for x in details if x["latency"] >= p99_ns]
    early = sum(1 for x in slow if start_s(x["timestamp"]) - t0 < 1)
    # p99 of the calls that started after the first second.
    later = sorted(x["latency"] for x in details if start_s(x["timestamp"]) - t0 >= 1)
    p99_later = later[int(len(later) * 0.99)] / 1e6 if later else 0.0
    beside = sum(1 for x in details if in_refill(start_s(x["timestamp"])))
    slow_beside = sum(1 for x in slow if in_refill(start_s(x["timestamp"])))
    apart = sorted(x["latency"] for x in details if not in_refill(start_s(x["timestamp"])))
    p99_apart = apart[int(len(apart) * 0.99)] / 1e6 if apart else 0.0
ok = r.get("statusCodeDistribution", {}).get("OK", 0)
d = [(int(a) - int(b)) / hz * 1e6 / n for a, b in zip(after[:3], before[:3])]
script = (int(after[3]) - int(before[3])) / n
runs = int(after[4]) - int(before[4])
idle = (int(after[5]) - int(before[5])) / max(int(after[6]) - int(before[6]), 1)
print(f"{label:8} {r['rps']:6.0f} calls/s ({ok} of {n} OK)  p50 {lat.get(50, 0):5.1f} ms  p99 {lat.get(99, 0):5.1f} ms ({early} of the slowest 1% in the first second; p99 after it {p99_later:.1f} ms; {slow_beside} beside a refill, which {beside} calls were, p99 of the others {p99_apart:.1f} ms)"
      f"  CPU/call µs: dispenserd {d[0]:4.0f}  postgres {d[1]:4.0f}  redis {d[2]:3.0f} (scripts {script:4.1f}, {n / max(runs, 1):4.1f} calls each)  total {sum(d):4.0f}  ghz {client * 1e6 / n:4.0f}  cores idle {100 * idle:2.0f}%"
      f"  redis keys left {keys_held} ({mem_held / 1048576:.1f} MiB)  codes updates HOT {hot}  audit: {audit}")
EOF
}

echo "A = $(git rev-parse --short "$rev") ${A_ENV:-} ${A_ARGS:-}, B = working tree ${B_ENV:-} ${B_ARGS:-}${FALLBACK:+, --fallback-only}; $calls calls, $conc callers, pools of $codes codes (default settings); PostgreSQL $(psql "$pg/postgres?sslmode=disable" -tAc 'SHOW server_version') stock settings on :$bench_pg_port"
for i in $(seq 1 "$runs"); do
	# shellcheck disable=SC2086 # flags split on spaces on purpose
	run_one "A run $i" "$work/a" "${A_ENV:-}" ${A_ARGS:-}
	# shellcheck disable=SC2086
	run_one "B run $i" "$work/b" "${B_ENV:-}" ${B_ARGS:-}
done
