#!/usr/bin/env bash
# Import benchmark: 1,000,000 random 16-character codes through a running
# dispenserd (the same upload path as `dispenserctl import`), a re-import of
# the same file, and a bare pgx CopyFrom into the same table in the same run.
# Uses a fresh database (dispenser_import_bench) on the private cluster with
# stock settings (scripts/bench/lib.sh) and its own server port, so it
# neither disturbs nor is disturbed by `make run`.
#   CODES=200000 scripts/bench-import.sh    # a smaller run
set -euo pipefail
# Its server port is below the ephemeral range (32768-60999 on Linux), so
# that no outgoing connection can be holding it.
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
codes="${CODES:-1000000}"
# shellcheck source=scripts/bench/lib.sh
source scripts/bench/lib.sh
bench_cluster
go build -o bin/ ./cmd/...

bench_fresh_db dispenser_import_bench
export DISPENSER_DATABASE_URL="$pg/dispenser_import_bench?sslmode=disable"
export DISPENSER_LISTEN="127.0.0.1:${BENCH_PORT:-28092}"
export DISPENSER_ADDR="$DISPENSER_LISTEN"
export DISPENSER_REDIS_NAMESPACE="bench-import"

mkdir -p .dev
bin/dispenserd migrate --log-format text 2>/dev/null
DISPENSER_KEY="$(bin/dispenserd keys create --role admin --name "$(basename "$0")" 2>/dev/null)"
export DISPENSER_KEY
bin/dispenserd --log-format text --metrics-listen "" >.dev/bench-import.log 2>&1 &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null || true; redis-cli --scan --pattern "bench-import:*" | xargs -r redis-cli unlink >/dev/null' EXIT
for _ in $(seq 1 50); do
	bin/dispenserctl pools list >/dev/null 2>&1 && break
	sleep 0.2
done
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB; $(psql "$DISPENSER_DATABASE_URL" -tAc 'SHOW server_version') (private cluster, stock settings)"
bin/dispenser-bench import --codes "$codes"
grep 'import landed' .dev/bench-import.log | sed 's/.*import landed //'
