#!/usr/bin/env bash
# Kill drill: start dispenserd, run `dispenser-bench claims` against it (and,
# beside it on a second pool, `dispenser-bench claims --reserve`: every
# request a reservation then its confirm), kill -9 the server several times
# mid-run and restart it, then reconcile and audit. Passes when every
# answered claim is committed in Postgres and nothing is lost or doubled
# (both benches' audits and `dispenserctl audit` of both pools exit 0, and
# no code is staged twice in Redis).
#
#   scripts/drill-kill.sh                     # 40,000 calls, 4 kills
#   CLAIMS=8000 KILLS=2 scripts/drill-kill.sh # the short version CI runs
set -euo pipefail
# Its server port is below the ephemeral range (32768-60999 on Linux), so
# that no outgoing connection can be holding it.
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
claims="${CLAIMS:-40000}"
kills="${KILLS:-4}"
every="${KILL_EVERY:-2}"
port="${DRILL_PORT:-28092}"

scripts/services.sh
go build -o bin/ ./cmd/...
mkdir -p .dev
pg="${DISPENSER_DRILL_PG:-postgres://postgres@127.0.0.1:5432}"
psql "$pg/postgres?sslmode=disable" -qc "DROP DATABASE IF EXISTS dispenser_drill" -c "CREATE DATABASE dispenser_drill" 2>/dev/null
export DISPENSER_DATABASE_URL="$pg/dispenser_drill?sslmode=disable"
export DISPENSER_LISTEN="127.0.0.1:$port" DISPENSER_ADDR="127.0.0.1:$port"
export DISPENSER_REDIS_NAMESPACE="drill-$$"
log=.dev/drill-kill.log
: >"$log"
bin/dispenserd migrate --log-format text 2>/dev/null
DISPENSER_KEY="$(bin/dispenserd keys create --role admin --name "$(basename "$0")" 2>/dev/null)"
export DISPENSER_KEY

pid=""
start_server() {
	bin/dispenserd --log-format text --metrics-listen "" --http-listen "" --console-listen "" --reconcile-every 1s --reconcile-grace 3s >>"$log" 2>&1 &
	pid=$!
	for _ in $(seq 1 100); do
		bin/dispenserctl pools list >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	echo "drill: dispenserd did not come up; see $log" >&2
	return 1
}
cleanup() {
	if [[ -n "$pid" ]]; then
		kill -9 "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	fi
	redis-cli --scan --pattern "drill-$$:*" | xargs -r -n 10000 redis-cli unlink >/dev/null 2>&1 || true
}
trap cleanup EXIT

start_server
codes=$((claims * 9 / 10 + 100))
bin/dispenserctl pools create drill --limit 1 --low-water 100000 --batch-size 100000 >/dev/null
# head closes the pipe once it has its lines: tr's SIGPIPE is expected.
(tr -dc 'A-HJ-NP-Z2-9' </dev/urandom | fold -w 16 | head -n "$codes" >.dev/drill-codes.txt) || true
[[ $(wc -l <.dev/drill-codes.txt) -eq $codes ]]
# The summary's first line only (no `| head`: under pipefail, the import's
# remaining lines would meet a closed pipe).
summary="$(bin/dispenserctl import --pool drill .dev/drill-codes.txt 2>/dev/null)"
echo "${summary%%$'\n'*}"
bin/dispenserctl jobs run refill --pool drill >/dev/null
holds=$((claims / 4))
bin/dispenserctl pools create drill-holds --limit 1 >/dev/null
head -n $((holds + 100)) .dev/drill-codes.txt | sed 's/^/H/' >.dev/drill-hold-codes.txt
bin/dispenserctl import --pool drill-holds .dev/drill-hold-codes.txt >/dev/null

# Both loads are paced so that they last every kill and a margin however
# fast the machine is (on a slow one they last longer).
lasts="$(awk -v k="$kills" -v e="$every" 'BEGIN {print k * (e + 1) + 4}')"
rate="$(awk -v n="$claims" -v t="$lasts" 'BEGIN {printf "%d", n / t}')"
rate_holds="$(awk -v n="$holds" -v t="$lasts" 'BEGIN {printf "%d", n / t}')"
echo "drill: $claims calls, at most $rate a second, $kills kill -9 of the server, one every ${every}s"
bin/dispenser-bench claims --pool drill --claims "$claims" --concurrency 32 --replay-ratio 0.2 --rate "$rate" \
	--retry-for 120s >.dev/drill-bench.txt 2>&1 &
bench=$!
bin/dispenser-bench claims --reserve --pool drill-holds --claims "$holds" --concurrency 16 --replay-ratio 0.2 --rate "$rate_holds" \
	--retry-for 120s >.dev/drill-bench-holds.txt 2>&1 &
bench_holds=$!
for i in $(seq 1 "$kills"); do
	sleep "$every"
	if ! kill -0 "$bench" 2>/dev/null; then
		echo "drill: FAILED: the bench finished before kill $i; raise CLAIMS" >&2
		exit 1
	fi
	kill -9 "$pid"
	wait "$pid" 2>/dev/null || true
	echo "drill: kill -9 #$i"
	sleep 0.3
	start_server
done
rc=0 rc_holds=0
wait "$bench" || rc=$?
wait "$bench_holds" || rc_holds=$?
cat .dev/drill-bench.txt | grep -v '^bench:' || true
echo "drill: reserve + confirm on drill-holds:"
cat .dev/drill-bench-holds.txt | grep -v '^bench:' || true
if [[ $rc -ne 0 || $rc_holds -ne 0 ]]; then
	echo "drill: FAILED: a bench's audit found a broken promise (exit $rc, $rc_holds)" >&2
	exit 1
fi

# Popped codes whose commit died with a server sit in the in-flight ledger;
# once they are older than the grace period, reconcile returns them.
sleep 4
for p in drill drill-holds; do
	bin/dispenserctl jobs run reconcile --pool "$p"
	bin/dispenserctl audit --pool "$p" | tee .dev/drill-audit.txt
	if ! grep -q ", 0 in flight" .dev/drill-audit.txt; then
		echo "drill: FAILED: codes of $p still in flight after reconcile" >&2
		exit 1
	fi
	# Redis is not failed over here, so no entry may be staged twice (the
	# audit reports such entries without failing: see RELIABILITY).
	if ! grep -q "redis: 0 entries staged twice" .dev/drill-audit.txt; then
		echo "drill: FAILED: codes of $p staged twice in Redis" >&2
		exit 1
	fi
done
echo "drill: passed"
