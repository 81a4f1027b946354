#!/usr/bin/env bash
# `make run`: bring up Postgres and Redis if none answer, migrate, start
# dispenserd with a demo pool of demo codes, print how to look at it, and keep
# the server in the foreground until Ctrl-C.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export DISPENSER_DATABASE_URL="${DISPENSER_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/dispenser?sslmode=disable}"
export DISPENSER_REDIS_URL="${DISPENSER_REDIS_URL:-redis://127.0.0.1:6379/0}"
export DISPENSER_LISTEN="${DISPENSER_LISTEN:-127.0.0.1:50051}"
export DISPENSER_ADDR="${DISPENSER_ADDR:-$DISPENSER_LISTEN}"
export DISPENSER_HTTP_LISTEN="${DISPENSER_HTTP_LISTEN:-127.0.0.1:8080}"
export DISPENSER_CONSOLE_LISTEN="${DISPENSER_CONSOLE_LISTEN:-127.0.0.1:8081}"

scripts/services.sh
mkdir -p .dev bin
go build -o bin/ ./cmd/...

# Create the database if it does not exist yet.
base="${DISPENSER_DATABASE_URL%%\?*}"
query="${DISPENSER_DATABASE_URL#"$base"}"
dbname="${base##*/}"
admin_url="${base%/*}/postgres$query"
if [[ "$(psql "$admin_url" -tAc "SELECT 1 FROM pg_database WHERE datname = '$dbname'")" != "1" ]]; then
	psql "$admin_url" -qc "CREATE DATABASE \"$dbname\""
fi
bin/dispenserd migrate --log-format text
# An admin key for the demo, made once and kept in .dev/ (git-ignored).
if [[ ! -s .dev/demo-admin.key ]]; then
	bin/dispenserd keys create --role admin --name demo 2>/dev/null >.dev/demo-admin.key
	chmod 600 .dev/demo-admin.key
fi
export DISPENSER_KEY="$(cat .dev/demo-admin.key)"

log=.dev/dispenserd.log
bin/dispenserd --log-format text >>"$log" 2>&1 &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null' INT TERM EXIT
for _ in $(seq 1 50); do
	if bin/dispenserctl pools list >/dev/null 2>&1; then break; fi
	if ! kill -0 $pid 2>/dev/null; then
		echo "dispenserd exited; see $log" >&2
		tail -20 "$log" >&2
		exit 1
	fi
	sleep 0.2
done

# A demo pool with 10,000 demo codes, made once and kept in .dev/ so a
# re-run imports nothing new.
bin/dispenserctl pools get demo >/dev/null 2>&1 ||
	bin/dispenserctl pools create demo --name "Demo pool" --limit 1 >/dev/null
if [[ ! -s .dev/demo-codes.txt ]]; then
	for i in $(seq -w 1 10000); do echo "DEMO-$i-$RANDOM$RANDOM"; done >.dev/demo-codes.txt
fi
summary="$(bin/dispenserctl import --pool demo .dev/demo-codes.txt 2>/dev/null)"
echo "${summary%%$'\n'*}"

cat <<MSG

dispenserd is serving gRPC on $DISPENSER_LISTEN, HTTP/JSON on
$DISPENSER_HTTP_LISTEN and the web console on http://$DISPENSER_CONSOLE_LISTEN/
(sign in with the key below; logs: $log).
The demo admin key (also in .dev/demo-admin.key):

  export DISPENSER_KEY=$DISPENSER_KEY

Then claim a demo code over HTTP (run it twice: the same request id gets the
same code back):

  curl -sS -X POST http://$DISPENSER_HTTP_LISTEN/v1/pools/demo/claims -H "Authorization: Bearer \$DISPENSER_KEY" -H 'Content-Type: application/json' -d '{"user_id": "alice", "request_id": "order-1001"}'

or try:

  bin/dispenserctl pools stats demo
  bin/dispenserctl pools list
  go tool -modfile=tools/go.mod grpcurl -plaintext $DISPENSER_LISTEN list
  go tool -modfile=tools/go.mod grpcurl -plaintext -H "authorization: Bearer \$DISPENSER_KEY" -d '{"pool_id":"demo"}' $DISPENSER_LISTEN dispenser.v1.AdminService/GetPoolStats

Ctrl-C stops the server.
MSG
wait $pid
