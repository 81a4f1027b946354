#!/usr/bin/env bash
# Cluster bench: the same claim load three ways, side by side on this
# machine (so the point is that the cluster works and what its layers cost,
# not absolute speed: everything shares two cores):
#   single   one dispenserd, one Redis node, Postgres direct;
#   cluster  three replicas (client round-robin), a Redis Cluster of 3+3,
#            the claim path through PgBouncer (scripts/cluster.sh);
#   shards3  the cluster, with the pool spread over 3 Redis shards;
#   one      one replica of that cluster.
# Each run is `dispenser-bench claims --default-pool` (fresh pool with
# default settings, nothing staged: refill must keep up; 10% retries;
# audited), ROUNDS times in turn, on the private stock-settings Postgres
# cluster of the other benches. CPU per answered call is summed by process
# name over /proc (dispenserd, redis-server, pgbouncer, postgres: the
# machine's own idle Postgres counts too, a few µs), with the WAL Postgres
# wrote and the transactions it committed per call.
#
#   CLAIMS=20000 ROUNDS=3 scripts/bench-cluster.sh     # or: make bench-cluster
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
claims="${CLAIMS:-20000}" rounds="${ROUNDS:-3}" conc="${CONCURRENCY:-64}"
dir="$root/.dev/cluster"
single_port=28110 single_redis=17100
# Everything on the private stock-settings cluster (.dev/postgres, port 25432).
# shellcheck source=scripts/bench/lib.sh
source scripts/bench/lib.sh
bench_cluster
export DISPENSER_CLUSTER_PG="$pg"

scripts/cluster.sh down >/dev/null 2>&1 || true
single_pid=""
cleanup() {
	[[ -n "$single_pid" ]] && kill "$single_pid" 2>/dev/null
	redis-cli -p "$single_redis" shutdown nosave >/dev/null 2>&1 || true
	psql "$pg/postgres" -qc "DROP DATABASE IF EXISTS dispenser_single WITH (FORCE)" 2>/dev/null || true
	scripts/cluster.sh down >/dev/null 2>&1 || true
}
trap cleanup EXIT
LOG_LEVEL=warn scripts/cluster.sh up >/dev/null
# shellcheck source=/dev/null
source "$dir/env"
cluster_addr="$DISPENSER_ADDR"

# The single-node set-up, beside it.
mkdir -p "$dir/single-redis"
redis-server --port "$single_redis" --bind 127.0.0.1 --daemonize yes --save "" --appendonly no --dir "$dir/single-redis"
psql "$pg/postgres" -qc "DROP DATABASE IF EXISTS dispenser_single WITH (FORCE)" -c "CREATE DATABASE dispenser_single"
single_db="$pg/dispenser_single?sslmode=disable"
DISPENSER_DATABASE_URL="$single_db" bin/dispenserd migrate --log-format text >/dev/null 2>&1
single_key="$(DISPENSER_DATABASE_URL="$single_db" bin/dispenserd keys create --role admin 2>/dev/null)"
DISPENSER_DATABASE_URL="$single_db" DISPENSER_REDIS_URL="redis://127.0.0.1:$single_redis/0" \
	bin/dispenserd --listen "127.0.0.1:$single_port" --metrics-listen "" --http-listen "" --console-listen "" --log-format text --log-level warn \
	>>"$dir/single.log" 2>&1 &
single_pid=$!
for _ in $(seq 1 100); do
	DISPENSER_KEY="$single_key" bin/dispenserctl --addr "127.0.0.1:$single_port" pools list >/dev/null 2>&1 && break
	sleep 0.1
done

name_ticks() { # sum of utime+stime of the processes named $1
	local name="$1" sum=0 f line fields
	for f in /proc/[0-9]*/stat; do
		{ read -r line <"$f"; } 2>/dev/null || continue
		[[ "$line" == *"($name) "* ]] || continue
		read -ra fields <<<"${line##*) }"
		sum=$((sum + fields[11] + fields[12]))
	done
	echo "$sum"
}
redis_ticks() { # pid:ticks of every redis-server, comma-separated
	local f line fields out=""
	for f in /proc/[0-9]*/stat; do
		{ read -r line <"$f"; } 2>/dev/null || continue
		[[ "$line" == *"(redis-server) "* ]] || continue
		read -ra fields <<<"${line##*) }"
		out+="${line%% *}:$((fields[11] + fields[12])),"
	done
	echo "${out%,}"
}
marks() {
	echo "$(name_ticks dispenserd) $(name_ticks redis-server) $(name_ticks pgbouncer) $(name_ticks postgres)" \
		"$(psql "$pg/postgres" -qtAc "SELECT pg_current_wal_lsn() - '0/0', (SELECT sum(xact_commit) FROM pg_stat_database)")" \
		"$(redis_ticks)"
}

run() { # label addr key db redis [shards]
	local label="$1" addr="$2" key="$3" db="$4" redis="$5" shards="${6:-1}" before after json=""
	exec 3< <(DISPENSER_KEY="$key" bin/dispenser-bench claims --addr "$addr" --default-pool --claims "$claims" \
		--concurrency "$conc" --replay-ratio 0.1 --database-url "$db" --redis-url "$redis" \
		--redis-namespace "$DISPENSER_REDIS_NAMESPACE" --redis-shards "$shards" 2>&1)
	while IFS= read -r line <&3; do
		[[ "$line" == "bench: "*" callers, "* ]] && before=$(marks)
		[[ "$line" == "{"* ]] && json="$line"
	done
	after=$(marks)
	exec 3<&-
	python3 - "$label" "$json" "$before" "$after" "$(getconf CLK_TCK)" <<'EOF'
import json, sys
label, r, b, a, hz = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3].split(), sys.argv[4].split(), int(sys.argv[5])
n = r["claims"]
d = [(int(x) - int(y)) / hz * 1e6 / n for x, y in zip(a[:4], b[:4])]
wal, commits = (float(a[4].split("|")[0]) - float(b[4].split("|")[0])) / n, (int(a[4].split("|")[1]) - int(b[4].split("|")[1])) / n
# The busiest Redis process: how much of the Redis work one node carries.
rb = dict(x.split(":") for x in b[5].split(",") if x) if len(b) > 5 else {}
ra = dict(x.split(":") for x in a[5].split(",") if x) if len(a) > 5 else {}
per = [(int(t) - int(rb.get(pid, t))) / hz * 1e6 / n for pid, t in ra.items() if pid in rb]
busiest = max(per, default=0)
share = busiest / sum(per) * 100 if sum(per) else 0
bad = r["duplicates"] + r["lost"] + r["limit_violations"] + r["replay_mismatches"]
print(f"{label:8} {r['claims_per_s']:7.0f} calls/s  p50 {r['p50_ms']:5.1f} ms  p99 {r['p99_ms']:6.1f} ms  "
      f"CPU per call µs: dispenserd {d[0]:.0f}, redis {d[1]:.0f} (busiest node {busiest:.0f}, {share:.0f}%), pgbouncer {d[2]:.0f}, postgres {d[3]:.0f}, "
      f"total {sum(d):.0f}; Postgres WAL {wal:.0f} bytes and {commits:.2f} commits per call; audit {'clean' if bad == 0 else 'BROKEN'}")
EOF
}

echo "machine: $(nproc) cores; $claims calls per run, $conc callers, 10% retries, fresh default pools"
for i in $(seq 1 "$rounds"); do
	echo "== round $i"
	run single "127.0.0.1:$single_port" "$single_key" "$single_db" "redis://127.0.0.1:$single_redis/0"
	DISPENSER_REDIS_NAMESPACE=cluster run cluster "$cluster_addr" "$DISPENSER_KEY" "$DISPENSER_DATABASE_URL" "$DISPENSER_REDIS_URL"
	DISPENSER_REDIS_NAMESPACE=cluster run shards3 "$cluster_addr" "$DISPENSER_KEY" "$DISPENSER_DATABASE_URL" "$DISPENSER_REDIS_URL" 3
	DISPENSER_REDIS_NAMESPACE=cluster run one "${cluster_addr%%,*}" "$DISPENSER_KEY" "$DISPENSER_DATABASE_URL" "$DISPENSER_REDIS_URL"
done
