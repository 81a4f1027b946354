#!/usr/bin/env bash
# A/B claim benchmark: the working tree against an earlier revision, side by
# side in one run, on a private PostgreSQL cluster with stock settings
# (.dev/postgres, port 25432; started by scripts/services.sh if needed).
#
#   scripts/bench-ab.sh REV            # e.g. scripts/bench-ab.sh HEAD~5
#   RUNS=3 CLAIMS=20000 CONCURRENCY=64 scripts/bench-ab.sh REV
#   B_ARGS="--commit-max-wait 3ms" scripts/bench-ab.sh HEAD   # flags, same code
#   HTTP=1 scripts/bench-ab.sh REV     # the same load over HTTP/JSON (POST /v1/pools/{pool}/claims)
#
# Each round runs `dispenser-bench claims` (fresh pool, staged, audited) against a
# dispenserd built from REV, then from the working tree; every bench must
# audit clean. Per run it prints answered calls/s, p50/p99, and CPU per
# answered call of each server process, read from /proc/<pid>/stat before and
# after: dispenserd, Postgres (the postmaster, its live children and the
# children that exited) and Redis. The client's CPU is not counted.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
rev="${1:?usage: scripts/bench-ab.sh REV}"
runs="${RUNS:-3}" claims="${CLAIMS:-20000}" conc="${CONCURRENCY:-64}"
# shellcheck source=scripts/bench/lib.sh
source scripts/bench/lib.sh
export DISPENSER_DATABASE_URL="$pg/dispenser_ab?sslmode=disable"
bench_cluster

work="$root/.dev/ab"
rm -rf "$work" && mkdir -p "$work/a" "$work/b"
git worktree add -f --detach "$work/src" "$rev" >/dev/null 2>&1
trap 'git worktree remove --force "$work/src" >/dev/null 2>&1 || true; cleanup' EXIT
(cd "$work/src" && go build -o "$work/a/" ./cmd/...)
go build -o "$work/b/" ./cmd/...

# With HTTP=1 the callers claim over HTTP/JSON (dispenserd's gateway, on a
# port of its own), the rest as over gRPC.
http_listen=(--http-listen "") http_load=()
if [[ -n "${HTTP:-}" ]]; then
	http_listen=(--http-listen 127.0.0.1:28097)
	http_load=(--http http://127.0.0.1:28097)
fi
pid=""
cleanup() {
	[[ -n "$pid" ]] && kill -9 "$pid" 2>/dev/null
	redis-cli --scan --pattern "bench-ab:*" | xargs -r -n 10000 redis-cli unlink >/dev/null
}
run_one() { # label bindir [dispenserd flags...]
	local label="$1" bin="$2"
	shift 2
	bench_fresh_db dispenser_ab
	"$bin/dispenserd" migrate --log-format text >/dev/null 2>&1
	local key
	key="$("$bin/dispenserd" keys create --role admin 2>/dev/null)"
	DISPENSER_KEY="$key" DISPENSER_LISTEN=127.0.0.1:28093 DISPENSER_REDIS_NAMESPACE=bench-ab \
		"$bin/dispenserd" --log-format text --log-level error --metrics-listen "" "${http_listen[@]}" "$@" >>"$work/server.log" 2>&1 &
	pid=$!
	for _ in $(seq 1 100); do
		DISPENSER_KEY="$key" "$bin/dispenserctl" --addr 127.0.0.1:28093 pools list >/dev/null 2>&1 && break
		sleep 0.1
	done
	# The bench fills and stages its pool before the load; count from the
	# load's start, which it reports on stderr, to its JSON line (the window
	# also holds the bench's audit: one read of the pool).
	local d0 p0 r0 d1 p1 r1 out
	# The load tool is the working tree's on both sides.
	exec 3< <(DISPENSER_KEY="$key" DISPENSER_REDIS_NAMESPACE=bench-ab "$work/b/dispenser-bench" --addr 127.0.0.1:28093 \
		claims --claims "$claims" --concurrency "$conc" --replay-ratio 0.1 "${http_load[@]}" 2>&1)
	while IFS= read -r line <&3; do
		if [[ "$line" == "bench: "*" callers, "* ]]; then
			d0=$(ticks "$pid") p0=$(pg_ticks) r0=$(ticks "$redis_pid")
		fi
		if [[ "$line" == "{"* ]]; then out="$line"; fi
	done
	d1=$(ticks "$pid") p1=$(pg_ticks) r1=$(ticks "$redis_pid")
	exec 3<&-
	kill -TERM "$pid"; wait "$pid" 2>/dev/null || true; pid=""
	redis-cli --scan --pattern "bench-ab:*" | xargs -r -n 10000 redis-cli unlink >/dev/null
	python3 - "$label" "$out" "$hz" "$((d1 - d0))" "$((p1 - p0))" "$((r1 - r0))" <<'EOF'
import json, sys
label, line, hz, d, p, r = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), *map(int, sys.argv[4:])
calls = line["calls"]
us = lambda t: t / hz * 1e6 / calls
bad = line["duplicates"] + line["lost"] + line["limit_violations"] + line["replay_mismatches"]
print(f"{label:8} {line['claims_per_s']:8.0f} calls/s  p50 {line['p50_ms']:6.1f} ms  p99 {line['p99_ms']:6.1f} ms"
      f"  CPU/call µs: dispenserd {us(d):5.0f}  postgres {us(p):5.0f}  redis {us(r):4.0f}  total {us(d+p+r):5.0f}"
      f"  audit {'clean' if bad == 0 else 'BROKEN'}")
EOF
}

echo "A = $(git rev-parse --short "$rev") ${A_ARGS:-}, B = working tree ${B_ARGS:-}; $claims calls${HTTP:+ over HTTP/JSON}, $conc callers, 10% replays; PostgreSQL $(psql "$pg/postgres?sslmode=disable" -tAc 'SHOW server_version') stock settings on :$bench_pg_port"
for i in $(seq 1 "$runs"); do
	# shellcheck disable=SC2086 # flags split on spaces on purpose
	run_one "A run $i" "$work/a" ${A_ARGS:-}
	# shellcheck disable=SC2086
	run_one "B run $i" "$work/b" ${B_ARGS:-}
done
