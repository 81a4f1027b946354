#!/usr/bin/env bash
# Make sure Postgres and Redis answer at the configured addresses; if one does
# not, install it (Debian packages) when missing and start it, with its data
# under .dev/ in this checkout. Idempotent: services that answer are left
# alone. Used by `make run`, `make test` and .ci/run.
#
# Addresses come from DISPENSER_DATABASE_URL and DISPENSER_REDIS_URL (the same
# variables dispenserd reads); defaults are the local ones.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
dev="$root/.dev"
db_url="${DISPENSER_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/dispenser?sslmode=disable}"
redis_url="${DISPENSER_REDIS_URL:-redis://127.0.0.1:6379/0}"

# host and port out of scheme://[user[:pass]@]host[:port][/...]
hostport() {
	local rest="${1#*://}"
	rest="${rest#*@}"
	rest="${rest%%/*}"
	rest="${rest%%\?*}"
	local host="${rest%%:*}" port="${rest##*:}"
	[[ "$port" == "$rest" ]] && port="$2"
	echo "${host:-127.0.0.1} $port"
}
read -r pg_host pg_port < <(hostport "$db_url" 5432)
read -r redis_host redis_port < <(hostport "$redis_url" 6379)

say() { echo "services: $*" >&2; }

as_root() {
	if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

apt_updated=""
apt_install() {
	if [[ -z "$apt_updated" ]]; then
		as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
		apt_updated=1
	fi
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

pg_up() { pg_isready -q -h "$pg_host" -p "$pg_port" 2>/dev/null; }
redis_up() { [[ "$(redis-cli -h "$redis_host" -p "$redis_port" ping 2>/dev/null)" == "PONG" ]]; }

wait_for() {
	local what="$1" check="$2"
	for _ in $(seq 1 60); do
		if $check; then return 0; fi
		sleep 0.5
	done
	say "$what did not come up; see the logs under $dev"
	return 1
}

is_local() { [[ "$1" == "127.0.0.1" || "$1" == "localhost" || "$1" == "::1" ]]; }

ensure_postgres() {
	if command -v pg_isready >/dev/null && pg_up; then return 0; fi
	if ! is_local "$pg_host"; then
		say "Postgres at $pg_host:$pg_port does not answer and is not local; start it yourself"
		return 1
	fi
	if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
		say "installing PostgreSQL (Debian packages)"
		# Our own cluster lives under .dev/; Debian's default one is not wanted.
		if [[ ! -e /etc/postgresql-common/createcluster.conf ]]; then
			as_root mkdir -p /etc/postgresql-common
			echo "create_main_cluster = false" | as_root tee /etc/postgresql-common/createcluster.conf >/dev/null
		fi
		apt_install postgresql postgresql-client
	fi
	# A cluster of the machine's own on this port: start it.
	if command -v pg_lsclusters >/dev/null; then
		local ver name port
		while read -r ver name port _; do
			if [[ "$port" == "$pg_port" ]]; then
				say "starting PostgreSQL cluster $ver/$name"
				as_root pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" start || true
				wait_for PostgreSQL pg_up && return 0
			fi
		done < <(pg_lsclusters --no-header 2>/dev/null || true)
	fi
	# Otherwise a cluster of our own under .dev/postgres, trust auth on loopback.
	local bin
	bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
	local data="$dev/postgres"
	mkdir -p "$dev"
	local run=()
	if [[ $(id -u) -eq 0 ]]; then
		# initdb refuses to run as root.
		run=(runuser -u postgres --)
		mkdir -p "$data"
		chown postgres: "$dev" "$data"
	fi
	if [[ ! -s "$data/PG_VERSION" ]]; then
		say "initialising a PostgreSQL cluster in $data"
		"${run[@]}" "$bin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 >/dev/null
	fi
	say "starting PostgreSQL from $data on port $pg_port"
	"${run[@]}" "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w \
		-o "-p $pg_port -k /tmp -c listen_addresses=127.0.0.1" start >/dev/null
	wait_for PostgreSQL pg_up
}

ensure_redis() {
	if command -v redis-cli >/dev/null && redis_up; then return 0; fi
	if ! is_local "$redis_host"; then
		say "Redis at $redis_host:$redis_port does not answer and is not local; start it yourself"
		return 1
	fi
	if ! command -v redis-server >/dev/null; then
		say "installing Redis (Debian packages)"
		apt_install redis-server redis-tools
	fi
	mkdir -p "$dev/redis"
	say "starting Redis on port $redis_port (data in $dev/redis)"
	redis-server --daemonize yes --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no \
		--dir "$dev/redis" --logfile "$dev/redis/redis.log"
	wait_for Redis redis_up
}

# PgBouncer is not run as a service: the tests and `make cluster` start
# their own, in front of the database they use. It only has to be installed.
ensure_pgbouncer() {
	if command -v pgbouncer >/dev/null; then return 0; fi
	say "installing PgBouncer (Debian package; not started)"
	apt_install pgbouncer
	# The package starts a system instance on port 6432; nothing here uses it.
	as_root service pgbouncer stop >/dev/null 2>&1 || true
}

# The client examples in docs/CLIENTS.md are run by a test
# (dispenser.TestClientExamples): PHP with its curl extension, Python with
# requests, and curl.
ensure_clients() {
	if ! command -v php >/dev/null || ! php -m 2>/dev/null | grep -qi '^curl$'; then
		say "installing PHP (Debian packages php-cli, php-curl) for the client examples"
		apt_install php-cli php-curl
	fi
	if ! python3 -c 'import requests' 2>/dev/null; then
		say "installing Python requests (Debian package) for the client examples"
		apt_install python3-requests
	fi
	if ! command -v curl >/dev/null; then
		apt_install curl
	fi
}

# The web console's end-to-end tests (console.TestConsoleEndToEnd) drive
# Debian's Chromium, headless.
ensure_chromium() {
	if command -v chromium >/dev/null; then return 0; fi
	say "installing Chromium (Debian package) for the console's browser tests"
	apt_install chromium
}

ensure_postgres
ensure_redis
ensure_pgbouncer
ensure_clients
ensure_chromium
