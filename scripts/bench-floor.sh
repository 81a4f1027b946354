#!/usr/bin/env bash
# What a claim costs dispenserd beyond gRPC's own serving of a call: three
# ghz loads of CLAIMS calls at CONCURRENCY callers through one dispenserd
# (the working tree), one after the other, each with dispenserd's CPU per
# call from /proc/<pid>/stat and the server side's (dispenserd, the private
# cluster, Redis) as the claim benches count it:
#
#   1. grpc.health.v1.Health/Check: a unary call through the same server,
#      its interceptors and limits, that does nothing (the floor);
#   2. ClaimCode on a pool that does not exist: the claim's checks, the
#      pool settings cache and an error with its ErrorInfo, answered
#      without Redis or Postgres;
#   3. ClaimCode on a pool with default settings and CODES codes imported,
#      nothing staged (the flash sale of scripts/bench-ab-ghz.sh).
#
#   scripts/bench-floor.sh
#   RUNS=3 CLAIMS=60000 CODES=300000 CONCURRENCY=64 scripts/bench-floor.sh
#
# Each run starts a fresh database and server. Nothing else should run
# meanwhile: the load, the server, Redis and Postgres share the machine.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
runs="${RUNS:-3}" calls="${CLAIMS:-60000}" codes="${CODES:-300000}" conc="${CONCURRENCY:-64}"
# shellcheck source=scripts/bench/lib.sh
source scripts/bench/lib.sh
export DISPENSER_DATABASE_URL="$pg/dispenser_floor?sslmode=disable" DISPENSER_REDIS_NAMESPACE=bench-floor
bench_cluster

work="$root/.dev/floor"
client_cpu_file="$work/client-cpu"
rm -rf "$work" && mkdir -p "$work"
go build -o "$work/" ./cmd/dispenserd ./cmd/dispenserctl
go build -modfile=tools/ghz/go.mod -o "$work/ghz" github.com/bojand/ghz/cmd/ghz
codes_file "$codes" "$work/codes.txt"

port=28096
pid=""
cleanup() {
	[[ -n "$pid" ]] && kill -9 "$pid" 2>/dev/null
	redis-cli --scan --pattern "bench-floor:*" | xargs -r -n 10000 redis-cli unlink >/dev/null
}
trap cleanup EXIT

# load LABEL METHOD DATA: one ghz load, then its rate and latencies, and its
# CPU per call by process (cpu_report).
load() {
	local before after
	before=$(cpu_mark "$pid")
	client_cpu "$work/ghz" --insecure --call "$2" -m "{\"authorization\":\"Bearer $key\"}" -d "$3" \
		-c "$conc" -n "$calls" -O json "127.0.0.1:$port" >"$work/ghz.json" || true
	after=$(cpu_mark "$pid")
	python3 - "$1" "$work/ghz.json" <<'EOF'
import json, sys
label, path = sys.argv[1], sys.argv[2]
r = json.load(open(path))
# Latencies of every call, errors included (ghz's distribution counts
# only the calls that succeeded).
lat = sorted(x["latency"] / 1e6 for x in r.get("details") or []) or [0.0]
codes = ", ".join(f"{k} {v}" for k, v in sorted(r.get("statusCodeDistribution", {}).items()))
print(f"{label}: {r['rps']:.0f} calls/s ({codes}), p50 {lat[len(lat) // 2]:.1f} ms, p99 {lat[int(len(lat) * 0.99)]:.1f} ms")
EOF
	cpu_report "$1" "$calls" "$before" "$after" "$(cat "$client_cpu_file")"
}

echo "$calls calls per load, $conc callers; pool of $codes codes (default settings); PostgreSQL stock settings on :$bench_pg_port"
for i in $(seq 1 "$runs"); do
	echo "run $i"
	redis-cli --scan --pattern "bench-floor:*" | xargs -r -n 10000 redis-cli unlink >/dev/null
	bench_fresh_db dispenser_floor
	"$work/dispenserd" migrate --log-format text >/dev/null 2>&1
	key="$("$work/dispenserd" keys create --role admin 2>/dev/null)"
	export DISPENSER_KEY="$key" DISPENSER_ADDR="127.0.0.1:$port"
	bench_serve "$work" "$port" "$work/server.log" ""
	bench_pool "$work" sale "$work/codes.txt"
	bench_quiesce dispenser_floor codes
	load "Health/Check" grpc.health.v1.Health.Check '{}'
	load "ClaimCode, no such pool" dispenser.v1.ClaimService.ClaimCode \
		'{"pool_id":"nosuchpool","user_id":"u{{.RequestNumber}}","request_id":"r{{.RequestNumber}}"}'
	load "ClaimCode, the sale" dispenser.v1.ClaimService.ClaimCode \
		'{"pool_id":"sale","user_id":"u{{.RequestNumber}}","request_id":"r{{.RequestNumber}}"}'
	kill -TERM "$pid"
	wait "$pid" 2>/dev/null || true
	pid=""
done
bench_drop_db dispenser_floor
