#!/usr/bin/env bash
# HTTP/JSON beside gRPC: the same claim load from the same client
# (dispenser-bench claims; over HTTP with --http: POST /v1/pools/{pool}/claims,
# HTTP/1.1 keep-alive, one connection per caller), in turn, ROUNDS times, on
# one dispenserd serving both, on the private stock-settings Postgres of the
# other benches. Each run gets a fresh pool with its codes staged beforehand,
# so the runs differ only in the transport. CPU per call by process
# (dispenserd, Postgres, Redis) from /proc.
#
#   CLAIMS=20000 ROUNDS=3 scripts/bench-http.sh     # or: make bench-http
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
# shellcheck source=scripts/bench/lib.sh
source scripts/bench/lib.sh
calls="${CLAIMS:-20000}" conc="${CONCURRENCY:-64}" rounds="${ROUNDS:-3}"
port="${BENCH_PORT:-28093}" http_port="${BENCH_HTTP_PORT:-28094}"
work="$root/.dev/bench-http"
mkdir -p "$work"

bench_cluster
go build -o bin/ ./cmd/...
bench_fresh_db dispenser_bench_http
export DISPENSER_DATABASE_URL="$pg/dispenser_bench_http?sslmode=disable"
export DISPENSER_ADDR="127.0.0.1:$port" DISPENSER_REDIS_NAMESPACE="bench-http"
bin/dispenserd migrate --log-format text >/dev/null 2>&1
DISPENSER_KEY="$(bin/dispenserd keys create --role admin --name bench-http 2>/dev/null)"
export DISPENSER_KEY

bin/dispenserd --listen "127.0.0.1:$port" --http-listen "127.0.0.1:$http_port" --console-listen "" --metrics-listen "" \
	--log-format text --log-level warn >>"$work/server.log" 2>&1 &
pid=$!
cleanup() {
	kill -TERM "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null || true
	redis-cli --scan --pattern "bench-http:*" | xargs -r -n 10000 redis-cli unlink >/dev/null
}
trap cleanup EXIT
for _ in $(seq 1 100); do
	bin/dispenserctl pools list >/dev/null 2>&1 && break
	sleep 0.1
done

# run LABEL [flags...]: one dispenser-bench claims run; its figures and the
# server side's CPU per call.
run() {
	local label="$1" before="" after json=""
	shift
	exec 3< <(bin/dispenser-bench claims --claims "$calls" --concurrency "$conc" --replay-ratio 0.1 "$@" 2>&1)
	while IFS= read -r line <&3; do
		[[ "$line" == "bench: "*" callers, "* ]] && before=$(cpu_mark "$pid")
		[[ "$line" == "{"* ]] && json="$line"
	done
	after=$(cpu_mark "$pid")
	exec 3<&-
	python3 -c "import json,sys; r=json.loads(sys.argv[1]); bad=r['duplicates']+r['lost']+r['limit_violations']+r['replay_mismatches']; print(f\"{sys.argv[2]}: {r['claims_per_s']:.0f} calls/s, p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms; audit {'clean' if bad == 0 else 'BROKEN'}\")" "$json" "$label"
	cpu_report "$label" "$calls" "$before" "$after" 0
}

echo "machine: $(nproc) cores; $calls calls per run, $conc callers, 10% retries, fresh staged pools"
for i in $(seq 1 "$rounds"); do
	echo "== round $i"
	run grpc
	run http --http "http://127.0.0.1:$http_port"
done
