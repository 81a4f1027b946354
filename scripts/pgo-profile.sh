#!/usr/bin/env bash
# Refreshes cmd/dispenserd/default.pgo, the CPU profile the Go toolchain
# builds dispenserd with (profile-guided optimization: `go build` picks up a
# main package's default.pgo by itself). The profile is what the service is
# for: a flash sale, ClaimCode from ghz at 64 callers with unique request
# and user ids, on a pool with default settings, as `make bench` runs it,
# on the private stock-settings cluster (.dev/postgres, port 25432).
#
#   scripts/pgo-profile.sh                    # 200,000 claims, 25 s of profile
#   CLAIMS=300000 SECONDS_PROFILED=40 scripts/pgo-profile.sh
#
# Refresh it after a change to the claim path, then measure the build with
# the new profile beside the old (scripts/bench-ab-ghz.sh).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
calls="${CLAIMS:-200000}" codes="${CODES:-400000}" seconds="${SECONDS_PROFILED:-25}"
# shellcheck source=scripts/bench/lib.sh
source scripts/bench/lib.sh
export DISPENSER_DATABASE_URL="$pg/dispenser_pgo?sslmode=disable"
bench_cluster

work="$root/.dev/pgo"
rm -rf "$work" && mkdir -p "$work/bin"
go build -o "$work/bin/" ./cmd/...
go build -modfile=tools/ghz/go.mod -o "$work/ghz" github.com/bojand/ghz/cmd/ghz
codes_file "$codes" "$work/codes.txt"

port=28095 debug=28096
pid=""
cleanup() {
	[[ -n "$pid" ]] && kill -9 "$pid" 2>/dev/null
	redis-cli --scan --pattern "pgo-profile:*" | xargs -r -n 10000 redis-cli unlink >/dev/null
	bench_drop_db dispenser_pgo
}
trap cleanup EXIT

bench_fresh_db dispenser_pgo
"$work/bin/dispenserd" migrate --log-format text >/dev/null 2>&1
key="$("$work/bin/dispenserd" keys create --role admin 2>/dev/null)"
export DISPENSER_KEY="$key" DISPENSER_ADDR="127.0.0.1:$port" DISPENSER_REDIS_NAMESPACE=pgo-profile
bench_serve "$work/bin" "$port" "$work/server.log" "" --debug-listen "127.0.0.1:$debug"
bench_pool "$work/bin" ghz "$work/codes.txt"
bench_quiesce dispenser_pgo codes

"$work/ghz" --insecure --call dispenser.v1.ClaimService.ClaimCode \
	-m "{\"authorization\":\"Bearer $key\"}" \
	-d '{"pool_id":"ghz","user_id":"u{{.RequestNumber}}","request_id":"r{{.RequestNumber}}"}' \
	-c 64 -n "$calls" -O json "127.0.0.1:$port" >"$work/ghz.json" &
ghz=$!
sleep 2 # past the sale's first second
curl -fsS -o "$work/cpu.pprof" "http://127.0.0.1:$debug/debug/pprof/profile?seconds=$seconds"
wait "$ghz"
kill -TERM "$pid"
wait "$pid" 2>/dev/null || true
pid=""
python3 - "$work/ghz.json" <<'END'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"pgo-profile: a sale of {r['count']} calls at {r['rps']:.0f} calls/s")
END
if ! go tool pprof -top "$work/cpu.pprof" 2>/dev/null | grep -q 'ClaimService_ClaimCode_Handler'; then
	echo "pgo-profile: the profile holds no ClaimCode call; the sale ended before it (raise CLAIMS)" >&2
	exit 1
fi
cp "$work/cpu.pprof" cmd/dispenserd/default.pgo
echo "pgo-profile: wrote cmd/dispenserd/default.pgo ($(wc -c <cmd/dispenserd/default.pgo) bytes)"
