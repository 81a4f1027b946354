#!/usr/bin/env bash
# Cluster drill: on a fresh local cluster (scripts/cluster.sh: a Redis
# Cluster of 3 masters and 3 replicas, PgBouncer in transaction mode, 3
# dispenserd replicas), a claim storm with 20% duplicate requests spread
# round-robin over the replicas, while the drill
#   1. kills one replica with -9 (and restarts it),
#   2. kills every Postgres backend of the database,
#   3. kills a Redis master (its replica is promoted);
# (in that order, STEP seconds apart), then reconciles and audits. Passes when the bench's checks and
# `dispenserctl audit` find 0 duplicates, 0 lost, 0 over the limit, every
# request id answered one way and nothing left in flight.
#
#   scripts/drill-cluster.sh                  # or: make drill-cluster
#   CLAIMS=12000 STEP=1 scripts/drill-cluster.sh   # the short version CI runs
#
# The drill's pool is spread over SHARDS Redis shards (default 3, so over
# the cluster's masters): the master killed serves some of them.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
claims="${CLAIMS:-30000}"
dir="$root/.dev/cluster"

scripts/cluster.sh down >/dev/null 2>&1 || true
trap 'scripts/cluster.sh down >/dev/null 2>&1 || true' EXIT
REPLICA_ARGS="--reconcile-every 1s --reconcile-grace 3s" LOG_LEVEL=warn scripts/cluster.sh up
# shellcheck source=/dev/null
source "$dir/env"

codes=$((claims * 8 / 10 + 100))
bin/dispenserctl pools create drill --limit 1 --batch-size 2000 --redis-shards "${SHARDS:-3}" >/dev/null
bin/dispenserctl generate --pool drill --count "$codes" --length 16 >/dev/null 2>&1
bin/dispenserctl jobs run refill --pool drill >/dev/null

every="${STEP:-1.5}"
# The load is paced so that it lasts the three faults and a margin for the
# failover however fast the machine is (on a slow one it lasts longer).
rate="$(awk -v n="$claims" -v s="$every" 'BEGIN {printf "%d", n / (3 * s + 8)}')"
echo "drill: $claims calls over 3 replicas, 20% retries of earlier requests, at most $rate a second"
bin/dispenser-bench claims --pool drill --claims "$claims" --concurrency 32 --replay-ratio 0.2 --rate "$rate" \
	--users $((claims * 2)) --retry-for 120s --database-url "$DISPENSER_DATABASE_URL" >"$dir/bench.txt" 2>&1 &
bench=$!
step() { sleep "$every"; kill -0 "$bench" 2>/dev/null || { echo "drill: the bench finished before: $1; raise CLAIMS" >&2; exit 1; }; }

step "the replica kill"
pid1="$(cat "$dir/dispenserd-1.pid")"
kill -9 "$pid1"
echo "drill: kill -9 of replica 1 (pid $pid1)"
sleep 0.5
scripts/cluster.sh restart-replica 1

step "the Postgres backend kill"
n="$(psql "$DISPENSER_DATABASE_URL" -qtAc "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")"
echo "drill: terminated $n Postgres backends"

step "the Redis failover"
master="$(redis-cli -p 17001 cluster nodes | awk '$3 ~ /master/ && $3 !~ /fail/ {split($2, a, "[:@]"); print a[2]; exit}')"
kill -9 "$(cat "$dir/redis-$master/redis.pid")"
echo "drill: kill -9 of the Redis master on port $master"
for _ in $(seq 1 100); do
	redis-cli -p "$([[ $master == 17001 ]] && echo 17002 || echo 17001)" cluster info | grep -q 'cluster_state:ok' && break
	sleep 0.1
done
echo "drill: a replica took over its slots"

rc=0
wait "$bench" || rc=$?
grep -v '^bench:' "$dir/bench.txt" || true
if [[ $rc -ne 0 ]]; then
	echo "drill: FAILED: the bench's checks found a broken promise (exit $rc)" >&2
	exit 1
fi
# Codes popped by the killed replica, or whose ledger entries the old master
# took with it, come back once older than the grace period.
sleep 4
bin/dispenserctl jobs run reconcile --pool drill
bin/dispenserctl audit --pool drill | tee "$dir/audit.txt"
if ! grep -q ", 0 in flight" "$dir/audit.txt"; then
	echo "drill: FAILED: codes still in flight after reconcile" >&2
	exit 1
fi
echo "drill: passed"
