#!/usr/bin/env bash
# A local deployment of several parts, on this machine, from Debian packages:
# a Redis Cluster of 3 masters and 3 replicas, PgBouncer in transaction
# pooling mode in front of Postgres, and 3 dispenserd replicas whose claim
# path goes through both. Everything lives under .dev/cluster and listens on
# loopback ports below the ephemeral range.
#
#   scripts/cluster.sh up        # or: make cluster
#   scripts/cluster.sh status
#   scripts/cluster.sh down      # or: make cluster-down
#
# After `up`, .dev/cluster/env holds the variables that reach it:
#   source .dev/cluster/env && bin/dispenserctl pools list
# (DISPENSER_ADDR lists the three replicas: the tools balance round-robin.)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
dir="$root/.dev/cluster"
redis_ports=(17001 17002 17003 17004 17005 17006) # cluster bus: +10000
bouncer_port=16432
grpc_ports=(28101 28102 28103)
metrics_ports=(29101 29102 29103)
http_ports=(28201 28202 28203)
db=dispenser_cluster
# The Postgres it fronts (a URL without a database): the machine's, unless
# DISPENSER_CLUSTER_PG names another (the cluster bench uses its private one).
pg="${DISPENSER_CLUSTER_PG:-postgres://postgres@127.0.0.1:5432}"
namespace=cluster

say() { echo "cluster: $*"; }

redis_url() {
	local u="redis+cluster://127.0.0.1:${redis_ports[0]}?dial_timeout=300ms"
	for p in "${redis_ports[@]:1}"; do u+="&addr=127.0.0.1:$p"; done
	echo "$u"
}

start_redis_node() { # port
	local p="$1" d="$dir/redis-$1"
	mkdir -p "$d"
	redis-server --port "$p" --bind 127.0.0.1 --daemonize yes --save "" --appendonly no --dir "$d" \
		--cluster-enabled yes --cluster-config-file "$d/nodes.conf" --cluster-node-timeout 2000 \
		--cluster-replica-validity-factor 0 --repl-diskless-sync-delay 0 \
		--logfile "$d/redis.log" --pidfile "$d/redis.pid"
}

cluster_ok() { redis-cli -p "${redis_ports[0]}" cluster info 2>/dev/null | grep -q 'cluster_state:ok'; }

up_redis() {
	if cluster_ok; then
		say "Redis Cluster already up"
		return
	fi
	for p in "${redis_ports[@]}"; do start_redis_node "$p"; done
	for p in "${redis_ports[@]}"; do
		for _ in $(seq 1 50); do redis-cli -p "$p" ping >/dev/null 2>&1 && break; sleep 0.1; done
	done
	local nodes=()
	for p in "${redis_ports[@]}"; do nodes+=("127.0.0.1:$p"); done
	redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >"$dir/redis-create.log" 2>&1
	for _ in $(seq 1 100); do cluster_ok && break; sleep 0.2; done
	cluster_ok || { say "Redis Cluster did not come up; see $dir/redis-create.log"; exit 1; }
	say "Redis Cluster up: 3 masters, 3 replicas on ports ${redis_ports[*]}"
}

up_pgbouncer() {
	if pg_isready -h 127.0.0.1 -p "$bouncer_port" >/dev/null 2>&1; then
		say "PgBouncer already up"
		return
	fi
	local host port user
	read -r user host port < <(python3 -c 'import sys, urllib.parse as u; p = u.urlparse(sys.argv[1]); print(p.username or "postgres", p.hostname or "127.0.0.1", p.port or 5432)' "$pg")
	mkdir -p "$dir/pgbouncer"
	chmod 777 "$dir/pgbouncer"
	cat >"$dir/pgbouncer/pgbouncer.ini" <<EOF
[databases]
$db = host=$host port=$port dbname=$db user=$user

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $bouncer_port
unix_socket_dir =
auth_type = trust
auth_file = $dir/pgbouncer/users.txt
pool_mode = transaction
max_client_conn = 1000
default_pool_size = 40
ignore_startup_parameters = extra_float_digits
logfile = $dir/pgbouncer/pgbouncer.log
pidfile = $dir/pgbouncer/pgbouncer.pid
EOF
	echo "\"$user\" \"\"" >"$dir/pgbouncer/users.txt"
	chmod 644 "$dir/pgbouncer/pgbouncer.ini" "$dir/pgbouncer/users.txt"
	local as=()
	[[ $(id -u) -eq 0 ]] && as=(-u postgres)
	pgbouncer -d "${as[@]}" "$dir/pgbouncer/pgbouncer.ini"
	for _ in $(seq 1 50); do pg_isready -h 127.0.0.1 -p "$bouncer_port" >/dev/null 2>&1 && break; sleep 0.1; done
	say "PgBouncer up on port $bouncer_port (transaction pooling) in front of $db"
}

write_env() {
	local addrs
	addrs="$(printf '127.0.0.1:%s,' "${grpc_ports[@]}")"
	cat >"$dir/env" <<EOF
export DISPENSER_ADDR=${addrs%,}
export DISPENSER_DATABASE_URL='$pg/$db?sslmode=disable'
export DISPENSER_REDIS_URL='$(redis_url)'
export DISPENSER_REDIS_NAMESPACE=$namespace
export DISPENSER_KEY=$(cat "$dir/admin.key")
export DISPENSER_HTTP=http://127.0.0.1:${http_ports[0]}
EOF
}

start_replica() { # index
	local i="$1"
	DISPENSER_DATABASE_URL="postgres://postgres@127.0.0.1:$bouncer_port/$db?sslmode=disable" \
		DISPENSER_DATABASE_DIRECT_URL="$pg/$db?sslmode=disable" \
		DISPENSER_REDIS_URL="$(redis_url)" DISPENSER_REDIS_NAMESPACE="$namespace" \
		bin/dispenserd --listen "127.0.0.1:${grpc_ports[$i]}" --metrics-listen "127.0.0.1:${metrics_ports[$i]}" \
		--http-listen "127.0.0.1:${http_ports[$i]}" --console-listen "" \
		--log-format text --log-level "${LOG_LEVEL:-info}" ${REPLICA_ARGS:-} >>"$dir/dispenserd-$i.log" 2>&1 &
	echo $! >"$dir/dispenserd-$i.pid"
}

replica_up() { # index
	DISPENSER_KEY="$(cat "$dir/admin.key")" bin/dispenserctl --addr "127.0.0.1:${grpc_ports[$1]}" --timeout 2s pools list >/dev/null 2>&1
}

up_replicas() {
	go build -o bin/ ./cmd/...
	psql "$pg/postgres?sslmode=disable" -qtAc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1 ||
		psql "$pg/postgres?sslmode=disable" -qc "CREATE DATABASE $db"
	DISPENSER_DATABASE_URL="$pg/$db?sslmode=disable" bin/dispenserd migrate --log-format text >/dev/null 2>&1
	if [[ ! -s "$dir/admin.key" ]]; then
		DISPENSER_DATABASE_URL="$pg/$db?sslmode=disable" bin/dispenserd keys create --role admin --name cluster \
			2>/dev/null >"$dir/admin.key"
	fi
	for i in 0 1 2; do
		if [[ -f "$dir/dispenserd-$i.pid" ]] && kill -0 "$(cat "$dir/dispenserd-$i.pid")" 2>/dev/null; then continue; fi
		start_replica "$i"
	done
	for i in 0 1 2; do
		for _ in $(seq 1 100); do replica_up "$i" && break; sleep 0.1; done
		replica_up "$i" || { say "replica $i did not come up; see $dir/dispenserd-$i.log"; exit 1; }
	done
	write_env
	say "3 dispenserd replicas up on ports ${grpc_ports[*]} (metrics ${metrics_ports[*]})"
	say "reach them with: source .dev/cluster/env"
}

down() {
	for i in 0 1 2; do
		[[ -f "$dir/dispenserd-$i.pid" ]] && kill -TERM "$(cat "$dir/dispenserd-$i.pid")" 2>/dev/null || true
	done
	[[ -f "$dir/pgbouncer/pgbouncer.pid" ]] && kill "$(cat "$dir/pgbouncer/pgbouncer.pid")" 2>/dev/null || true
	for p in "${redis_ports[@]}"; do redis-cli -p "$p" shutdown nosave >/dev/null 2>&1 || true; done
	sleep 0.5
	rm -rf "$dir"
	psql "$pg/postgres?sslmode=disable" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" 2>/dev/null || true
	say "down"
}

status() {
	cluster_ok && say "Redis Cluster: ok" || say "Redis Cluster: down"
	redis-cli -p "${redis_ports[0]}" cluster nodes 2>/dev/null | awk '{print "  " $2, $3}' | sed 's/@[0-9]*//' || true
	pg_isready -h 127.0.0.1 -p "$bouncer_port" >/dev/null 2>&1 && say "PgBouncer: up" || say "PgBouncer: down"
	for i in 0 1 2; do
		replica_up "$i" && say "replica $i (127.0.0.1:${grpc_ports[$i]}): serving" || say "replica $i: down"
	done
}

case "${1:-up}" in
up)
	scripts/services.sh
	mkdir -p "$dir"
	up_redis
	up_pgbouncer
	up_replicas
	;;
down) down ;;
status) status ;;
restart-replica) start_replica "$2" ;;
*)
	echo "usage: $0 up|down|status" >&2
	exit 2
	;;
esac
