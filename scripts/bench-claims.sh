#!/usr/bin/env bash
# Claim benchmark: `dispenserctl bench --compare` through a running dispenserd,
# then the same workload against a fallback-only dispenserd (every claim a
# SKIP LOCKED transaction). Fresh database (dispenser_bench), own port and
# Redis namespace. Everything runs on this one machine.
#   CLAIMS=20000 CONCURRENCY=64 scripts/bench-claims.sh
set -euo pipefail
# Its server port is below the ephemeral range (32768-60999 on Linux), so
# that no outgoing connection can be holding it.
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
claims="${CLAIMS:-30000}"
conc="${CONCURRENCY:-64}"
scripts/services.sh
go build -o bin/ ./cmd/...
pg="${DISPENSER_BENCH_PG:-postgres://postgres@127.0.0.1:5432}"
psql "$pg/postgres?sslmode=disable" -qc "DROP DATABASE IF EXISTS dispenser_bench" -c "CREATE DATABASE dispenser_bench" 2>/dev/null
export DISPENSER_DATABASE_URL="$pg/dispenser_bench?sslmode=disable"
export DISPENSER_LISTEN="127.0.0.1:${BENCH_PORT:-28091}" DISPENSER_ADDR="127.0.0.1:${BENCH_PORT:-28091}"
export DISPENSER_REDIS_NAMESPACE="bench-claims"
mkdir -p .dev
bin/dispenserd migrate --log-format text 2>/dev/null
DISPENSER_KEY="$(bin/dispenserd keys create --role admin --name "$(basename "$0")" 2>/dev/null)"
export DISPENSER_KEY

pid=""
serve() {
	bin/dispenserd --log-format text --log-level error --metrics-listen "" "$@" >>.dev/bench-claims.log 2>&1 &
	pid=$!
	for _ in $(seq 1 100); do
		bin/dispenserctl pools list >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	return 1
}
stop() { kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; pid=""; }
cleanup() {
	[[ -n "$pid" ]] && kill -9 "$pid" 2>/dev/null
	# The bench's replay records and guards live for a day; drop them now.
	redis-cli --scan --pattern "bench-claims:*" | xargs -r -n 10000 redis-cli unlink >/dev/null
}
trap cleanup EXIT

echo "machine: $(nproc) cores; PostgreSQL $(psql "$DISPENSER_DATABASE_URL" -tAc 'SHOW server_version'), autovacuum $(psql "$DISPENSER_DATABASE_URL" -tAc 'SHOW autovacuum'); $(redis-server --version | cut -d' ' -f1-3)"
echo "== dispenserctl bench --claims $claims --concurrency $conc --replay-ratio 0.1 --compare"
serve
bin/dispenserctl bench --claims "$claims" --concurrency "$conc" --replay-ratio 0.1 --compare 2>/dev/null
stop
echo "== the same workload, dispenserd --fallback-only"
serve --fallback-only
bin/dispenserctl bench --claims "$claims" --concurrency "$conc" --replay-ratio 0.1 2>/dev/null
stop
