#!/usr/bin/env bash
# Claim benchmark (docs/BENCHMARKS.md). Everything on this machine, on a
# private PostgreSQL cluster with stock settings (autovacuum on; .dev/postgres
# on port 25432, started if needed) and the machine's Redis:
#
#   1. dispenser-bench claims --default-pool: CLAIMS calls, CONCURRENCY callers,
#      10% retries of earlier request ids, on a fresh pool with default
#      settings and nothing staged (refill must keep up); audited. Then the
#      same with --reserve: every request a ReserveCode and a
#      ConfirmReservation.
#   2. ghz (pinned in tools/ghz): CLAIMS ClaimCode calls, unique request and
#      user ids, CONCURRENCY callers, on a pool with default settings and
#      CODES codes imported; then DURATION (60s) of the same on a fresh pool
#      of twice the codes, to compare the first and last 10 seconds (by
#      rate, and by CPU per call of the server's processes and of ghz,
#      sampled every half second); then
#      CLAIMS ReserveCode calls the same way (holds alone).
#   3. the classic claim (scripts/bench/classic.sql) under pgbench, 32
#      clients, prepared statements, CLAIMS transactions, on its own tables with CODES codes, in
#      the same cluster; its pick's plan is checked to use the partial index.
#   4. ghz again against dispenserd --fallback-only (no Redis: every claim
#      decided in Postgres with SKIP LOCKED, concurrent claims sharing a
#      transaction), CLAIMS/2 calls.
#   5. after the sell-out, where most calls of a flash sale land: a pool of
#      SOLD (9,984) codes claimed to the last by ghz, then CLAIMS/2 more
#      calls of new users, each answered POOL_EXHAUSTED, and CLAIMS/2 calls
#      of the winners asking again (USER_LIMIT_REACHED); beside it the
#      classic on its own tables sold out the same way (pgbench,
#      scripts/bench/classic-soldout.sql: the same transaction, whose pick
#      finds nothing).
#
# Each step of the server starts on a fresh database and an empty Redis
# namespace; each pool's codes, and each classic table, are vacuumed and
# checkpointed before they are claimed (bench_quiesce in scripts/bench/lib.sh),
# and the classic's databases are dropped once measured (so that no step
# pays for autovacuum catching up on another's writes).
# For each: calls/s, p50/p99, claims the fallback served, and CPU per call of
# the server, Postgres and Redis (from /proc/<pid>/stat) and of the client.
# At the end, the goals of issue 9 (docs/BENCHMARKS.md), each checked
# against this run's figures: met or NOT met.
#   CLAIMS=60000 CONCURRENCY=64 CODES=300000 scripts/bench-claims.sh
#   STEPS="3 4" scripts/bench-claims.sh   # only some of the steps
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
# shellcheck source=scripts/bench/lib.sh
source scripts/bench/lib.sh
calls="${CLAIMS:-60000}" conc="${CONCURRENCY:-64}" codes="${CODES:-300000}" duration="${DURATION:-60s}"
sold="${SOLD:-9984}"
steps=" ${STEPS:-1 2 3 4 5} "
step() { [[ "$steps" == *" $1 "* ]]; }
port="${BENCH_PORT:-28091}" metrics_port="${BENCH_METRICS_PORT:-29491}"
work="$root/.dev/bench-claims"
mkdir -p "$work"
client_cpu_file="$work/client-cpu"
# Every step's figures, one JSON object per line, for the goals at the end.
export BENCH_FIGURES="$work/figures.jsonl"
: >"$BENCH_FIGURES"

bench_cluster
go build -o bin/ ./cmd/...
go build -modfile=tools/ghz/go.mod -o "$work/ghz" github.com/bojand/ghz/cmd/ghz

export DISPENSER_DATABASE_URL="$pg/dispenser_bench?sslmode=disable"
export DISPENSER_ADDR="127.0.0.1:$port" DISPENSER_REDIS_NAMESPACE="bench-claims"
# fresh_start: what each step of the server starts from: a database of its
# own (migrated, with an admin key) and an empty Redis namespace, so that no
# step measures the data of the one before (its tables' size and vacuum,
# Redis's keys).
fresh_start() {
	bench_fresh_db dispenser_bench
	bin/dispenserd migrate --log-format text >/dev/null 2>&1
	DISPENSER_KEY="$(bin/dispenserd keys create --role admin --name bench-claims 2>/dev/null)"
	export DISPENSER_KEY
	redis-cli --scan --pattern "bench-claims:*" | xargs -r -n 10000 redis-cli unlink >/dev/null
}
# import_pool POOL FILE: creates a pool with default settings and imports the
# codes of FILE, then lets Postgres settle (bench_quiesce): codes are
# imported before a sale, and vacuumed by then, as the classic's table is.
import_pool() {
	bin/dispenserctl pools create "$1" >/dev/null
	bin/dispenserctl import --pool "$1" "$2" >/dev/null
	bench_quiesce dispenser_bench codes
}

pid=""
serve() {
	bin/dispenserd --listen "127.0.0.1:$port" --http-listen "" --console-listen "" --log-format text --log-level warn \
		--metrics-listen "127.0.0.1:$metrics_port" "$@" >>"$work/server.log" 2>&1 &
	pid=$!
	for _ in $(seq 1 100); do
		bin/dispenserctl pools list >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	return 1
}
stop() { kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; pid=""; }
cleanup() {
	[[ -n "$pid" ]] && kill -9 "$pid" 2>/dev/null
	cpu_timeline_stop
	redis-cli --scan --pattern "bench-claims:*" | xargs -r -n 10000 redis-cli unlink >/dev/null
}
trap cleanup EXIT

# fallbacks: claims the fallback has served since the server started.
fallbacks() {
	curl -s "127.0.0.1:$metrics_port/metrics" |
		awk '/^dispenser_(claims|reservations)_total\{/ && /path="fallback"/ {n += $NF} END {print n + 0}'
}

# commits: "batches claims seconds": the batches the group commit has
# committed since the server started, their claims, and the seconds their
# transactions took.
commits() {
	curl -s "127.0.0.1:$metrics_port/metrics" |
		awk '/^dispenser_group_commit_batch_size_count/ {c = $NF} /^dispenser_group_commit_batch_size_sum/ {s = $NF}
		     /^dispenser_group_commit_duration_seconds_sum/ {d = $NF} END {print c + 0, s + 0, d + 0}'
}

# ghz_run LABEL POOL N|DURATION: N ClaimCode calls (ReserveCode with
# METHOD=ReserveCode; or calls for DURATION, e.g. 60s) with unique ids
# (prefixed with IDS, if set; USERS, if set, is the user id template after
# "u"); prints the figures.
ghz_run() {
	local label="$1" poolid="$2" amount=(-n "$3") n before after f0 c0
	[[ "$3" == *s ]] && amount=(-z "$3")
	local users="${USERS:-}"
	[[ -n "$users" ]] || users="${IDS:-}{{.RequestNumber}}"
	f0=$(fallbacks) c0=$(commits)
	rm -f "$work/timeline"
	[[ "$3" == *s ]] && cpu_timeline_start "$pid" ghz "$work/timeline" "http://127.0.0.1:$metrics_port/metrics"
	before=$(cpu_mark "$pid")
	client_cpu "$work/ghz" --insecure --call "dispenser.v1.ClaimService.${METHOD:-ClaimCode}" \
		-m "{\"authorization\":\"Bearer $DISPENSER_KEY\"}" \
		-d "{\"pool_id\":\"$poolid\",\"user_id\":\"u$users\",\"request_id\":\"r${IDS:-}{{.RequestNumber}}\"}" \
		-c "$conc" "${amount[@]}" -O json "127.0.0.1:$port" >"$work/$poolid.json"
	after=$(cpu_mark "$pid")
	cpu_timeline_stop
	n=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['count'])" "$work/$poolid.json")
	python3 - "$label" "$work/$poolid.json" "$(($(fallbacks) - f0))" "$c0" "$(commits)" "$work/timeline" "$hz" \
		"$root/.dev/postgres/server.log" "$(psql "$pg/postgres" -tAc 'SHOW log_timezone')" <<'EOF'
import json, os, sys
label, path, fb = sys.argv[1], sys.argv[2], sys.argv[3]
(b0, s0, d0), (b1, s1, d1) = (map(float, a.split()) for a in sys.argv[4:6])
timeline, hz = sys.argv[6], int(sys.argv[7])
r = json.load(open(path))
# The group commit's busy share: its transactions' time over the run's (one
# batch in flight, the default).
busy = f", each {1e3 * (d1 - d0) / (b1 - b0):.2f} ms, busy {100 * (d1 - d0) / (r['total'] / 1e9):.0f}% of the run" if b1 > b0 and r.get("total") else ""
batches = f"; group commits {b1 - b0:.0f}, {(s1 - s0) / max(b1 - b0, 1):.1f} claims each{busy}"
lat = {d["percentage"]: d["latency"] / 1e6 for d in r.get("latencyDistribution") or []}
if not lat and r.get("details"):
    # ghz gives no distribution when every call failed (all refused).
    ls = sorted(d["latency"] for d in r["details"])
    lat = {q: ls[min(len(ls) - 1, int(q / 100 * len(ls)))] / 1e6 for q in (50, 99)}
ok = r.get("statusCodeDistribution", {}).get("OK", 0)
det = sorted((d["timestamp"], d["status"]) for d in r.get("details") or [])
decay, cpu_decay, last10_ckpt, redis_grew, steal, waits = "", None, None, None, None, None
if det:
    from datetime import datetime
    ts = [datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp() for t, _ in det]
    t0, t1 = ts[0], ts[-1]
    if t1 - t0 >= 30:
        first = sum(1 for t in ts if t < t0 + 10) / 10
        last = sum(1 for t in ts if t > t1 - 10) / 10
        decay = f"; first 10 s {first:.0f}/s, last 10 s {last:.0f}/s ({100 * (last / first - 1):+.0f}%)"
        # The same two windows by CPU per call, from the samples of the
        # server's processes and ghz (cpu_timeline_start), read at each
        # window's ends by linear interpolation: a rate that falls while the
        # CPU per call holds is the machine slowing, not the server.
        samples = [list(map(float, l.split())) for l in open(timeline)] if os.path.exists(timeline) else []
        def at(t):
            for a, b in zip(samples, samples[1:]):
                if a[0] <= t <= b[0]:
                    w = (t - a[0]) / (b[0] - a[0])
                    return [x + w * (y - x) for x, y in zip(a[1:], b[1:])]
            return None
        def per_call(lo, hi, calls):
            a, b = at(lo), at(hi)
            if a is None or b is None or not calls:
                return None
            d = [(y - x) / hz * 1e6 / calls for x, y in zip(a[:4], b[:4])]
            return sum(d[:3]), d[3], " + ".join(f"{x:.0f}" for x in d[:3])
        cf = per_call(t0, t0 + 10, first * 10)
        cl = per_call(t1 - 10, t1, last * 10)
        if cf and cl:
            cpu_decay = (cl[0] / cf[0] - 1, cl[1] / cf[1] - 1 if cf[1] else 0)
            decay += (f"; server-side CPU per call (dispenserd + Postgres + Redis) first 10 s {cf[0]:.0f} µs ({cf[2]}), "
                      f"last 10 s {cl[0]:.0f} µs ({cl[2]}; {100 * cpu_decay[0]:+.0f}%), "
                      f"ghz's own {cf[1]:.0f}, {cl[1]:.0f} µs ({100 * cpu_decay[1]:+.0f}%)")
        # Checkpoints that started during the run, from the private
        # cluster's log (log_checkpoints is on by default; the bench's own
        # CHECKPOINT before each run logs "immediate force wait" and comes
        # before t0). One requested by WAL volume (max_wal_size) writes a
        # full-page image of each page first touched after it, so one that
        # starts in a window makes that window's claims dearer for Postgres.
        ckpts = []
        try:
            from zoneinfo import ZoneInfo
            tz = ZoneInfo(sys.argv[9])
            for l in open(sys.argv[8], errors="replace"):
                if "checkpoint starting:" not in l:
                    continue
                try:
                    at_ = datetime.strptime(l[:23], "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=tz).timestamp()
                except ValueError:
                    continue
                if t0 <= at_ <= t1:
                    ckpts.append((at_ - t0, l.split("checkpoint starting:", 1)[1].strip()))
        except (OSError, ValueError, KeyError, ImportError):
            pass
        # Whether Redis's key count reached a power of two in the last 10 s
        # (its key table then doubles and is rehashed under the load).
        ka, kb = at(t1 - 10), at(t1)
        if ka and kb and len(ka) > 4 and min(ka[4], kb[4]) >= 0:
            k = 1 << 16
            while k <= kb[4]:
                if ka[4] < k <= kb[4]:
                    redis_grew = f"Redis's key table doubled at {k:,} keys"
                    decay += f"; {redis_grew} in the last 10 s"
                k <<= 1
        # The two windows' ends, and a count of ticks in column c over each
        # window as a share of the cores' time.
        sa, sb = at(t0), at(t0 + 10)
        windows = [(sa, sb), (ka, kb)] if sa and sb and ka and kb else []
        def shares(c):
            return [(y[c] - x[c]) / hz / 10 / (os.cpu_count() or 1) for x, y in windows]
        # The hypervisor's steal time in each window: a machine whose host
        # got busier slows every process alike.
        if windows and len(ka) > 5:
            st = shares(5)
            steal = f"the host's steal time {100 * st[0]:.1f}% of the cores in the first 10 s, {100 * st[1]:.1f}% in the last"
            decay += "; " + steal
        # The cores' idle share and the group commit's time in each window:
        # a rate that falls more than the CPU per call rises left the cores
        # idler, and a group commit that takes longer keeps every claim of
        # its batch waiting.
        if windows and len(ka) > 8:
            idle = shares(6)
            waits = f"the cores idle {100 * idle[0]:.0f}% in the first 10 s, {100 * idle[1]:.0f}% in the last"
            # (Each sample's commit count is -1 until the sampler's first
            # read of the metrics answered.)
            if all(x[8] >= 0 for x in samples) and all(y[7] > x[7] for x, y in windows):
                each = [1e3 * (y[8] - x[8]) / (y[7] - x[7]) for x, y in windows]
                busy = [(y[8] - x[8]) / 10 for x, y in windows]
                waits += (f"; each group commit {each[0]:.2f} ms (busy {100 * busy[0]:.0f}%) in the first 10 s, "
                          f"{each[1]:.2f} ms (busy {100 * busy[1]:.0f}%) in the last")
            decay += "; " + waits
        if ckpts:
            decay += "; checkpoints started " + ", ".join(f"{a:.0f} s in ({why})" for a, why in ckpts)
            late = [(a, why) for a, why in ckpts if a >= t1 - t0 - 10]
            if late:
                last10_ckpt = f"a checkpoint ({late[0][1]}) started {t1 - t0 - late[0][0]:.0f} s before the end"
print(f"{label}: {r['count']} calls, {ok} OK, {r['rps']:.0f} calls/s, p50 {lat.get(50, 0):.1f} ms, "
      f"p99 {lat.get(99, 0):.1f} ms, served by the fallback {fb}{decay}{batches}; "
      f"errors {r.get('errorDistribution') or {}}")
with open(os.environ["BENCH_FIGURES"], "a") as f:
    f.write(json.dumps({"label": label, "per_s": r["rps"], "p99_ms": lat.get(99, 0), "fallback": int(fb),
                        "decay": (last / first - 1) if decay else None,
                        "cpu_decay": cpu_decay[0] if cpu_decay else None,
                        "client_cpu_decay": cpu_decay[1] if cpu_decay else None,
                        "last10_checkpoint": last10_ckpt, "last10_redis": redis_grew, "steal": steal, "waits": waits}) + "\n")
EOF
	cpu_report "$label" "$n" "$before" "$after" "$(cat "$client_cpu_file")"
}

# pgbench_run LABEL DB SCRIPT N WHAT: N transactions of SCRIPT (under
# scripts/bench) under pgbench, 32 clients, prepared statements, on database
# DB of the private cluster; prints WHAT per second, p50/p99 and the CPU per
# transaction.
pgbench_run() {
	local label="$1" db="$2" script="$3" n="$4" what="$5" before after
	rm -f "$work"/pgbench_log.*
	before=$(cpu_mark "")
	(cd "$work" && client_cpu pgbench -n -M prepared -c 32 -j 2 -t $((n / 32)) -l -f "$root/scripts/bench/$script" "$pg/$db" >"$work/pgbench.out" 2>&1)
	after=$(cpu_mark "")
	python3 - "$work" "$label" "$what" <<'EOF'
import glob, json, os, re, sys
work, label, what = sys.argv[1], sys.argv[2], sys.argv[3]
out = open(f"{work}/pgbench.out").read()
tps = float(re.search(r"tps = ([0-9.]+)", out).group(1))
lat = sorted(int(l.split()[2]) for f in glob.glob(f"{work}/pgbench_log.*") for l in open(f))
p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] / 1000
print(f"{label}: {len(lat)} {what}, {tps:.0f} {what}/s, p50 {p(0.5):.1f} ms, p99 {p(0.99):.1f} ms")
with open(os.environ["BENCH_FIGURES"], "a") as f:
    f.write(json.dumps({"label": label, "per_s": tps, "p99_ms": p(0.99)}) + "\n")
EOF
	cpu_report "$label" $((n / 32 * 32)) "$before" "$after" "$(cat "$client_cpu_file")"
}

echo "machine: $(nproc) cores; PostgreSQL $(psql "$pg/postgres" -tAc 'SHOW server_version') (private cluster, stock settings, autovacuum $(psql "$pg/postgres" -tAc 'SHOW autovacuum')); $(redis-server --version | cut -d' ' -f1-3)"
echo "$calls calls, $conc callers, pools of $codes codes (default settings, nothing staged)"

# bench_run LABEL [dispenser-bench claims flags...]: one dispenser-bench
# claims run on a fresh default pool, with the server's CPU per request.
bench_run() {
	local label="$1" before="" after json="" f0
	shift
	exec 3< <(bin/dispenser-bench claims --default-pool --claims "$calls" --concurrency "$conc" --replay-ratio 0.1 "$@" 2>&1)
	f0=$(fallbacks)
	while IFS= read -r line <&3; do
		[[ "$line" == "bench: "*" callers, "* ]] && before=$(cpu_mark "$pid")
		[[ "$line" == "{"* ]] && json="$line"
		[[ "$line" == "  "* || "$line" == "audit:"* ]] && echo "$line"
	done
	after=$(cpu_mark "$pid")
	exec 3<&-
	python3 -c "import json,sys; r=json.loads(sys.argv[1]); print(f\"{sys.argv[3]}: {r['calls']} requests, {r['claims_per_s']:.0f} requests/s, p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, served by the fallback {sys.argv[2]}; audit duplicates {r['duplicates']}, lost {r['lost']}, limit {r['limit_violations']}, replays {r['replay_mismatches']}\")" "$json" "$(($(fallbacks) - f0))" "$label"
	cpu_report "$label" "$calls" "$before" "$after" 0
}

if step 1; then
echo "== 1. dispenser-bench claims --default-pool, then --reserve (reserve + confirm per request)"
fresh_start
serve
bench_run "dispenser-bench claims"
bench_run "dispenser-bench claims --reserve" --reserve
stop
fi

if step 2; then
echo "== 2. ghz"
fresh_start
serve
codes_file "$codes" "$work/codes.txt"
import_pool ghz "$work/codes.txt"
ghz_run "ghz" ghz "$calls"
bin/dispenserctl audit --pool ghz --database-url "$DISPENSER_DATABASE_URL" | tail -1
# Twice the codes: the run must not sell out, or its last seconds measure
# the sell-out, not decay.
codes_file $((2 * codes)) "$work/codes-long.txt"
import_pool ghz-long "$work/codes-long.txt"
ghz_run "ghz, $duration" ghz-long "$duration"
bin/dispenserctl audit --pool ghz-long --database-url "$DISPENSER_DATABASE_URL" | tail -1
# ReserveCode alone, the same way: holds ride the claim path.
import_pool ghz-reserve "$work/codes.txt"
METHOD=ReserveCode ghz_run "ghz ReserveCode" ghz-reserve "$calls"
bin/dispenserctl audit --pool ghz-reserve --database-url "$DISPENSER_DATABASE_URL" | tail -1
stop
fi

if step 3; then
echo "== 3. classic claim, pgbench -c 32"
bench_fresh_db classic_bench
PGOPTIONS="-c client_min_messages=warning" psql "$pg/classic_bench" -q -f scripts/bench/classic-schema.sql
psql "$pg/classic_bench" -q -c "INSERT INTO classic_codes (code) SELECT md5(i::text) FROM generate_series(1, $codes) i" -c "VACUUM ANALYZE classic_codes"
plan="$(psql "$pg/classic_bench" -tAc "EXPLAIN SELECT id FROM classic_codes WHERE state = 'available' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED")"
grep -q classic_codes_available <<<"$plan" || { echo "the classic pick does not use its partial index:"; echo "$plan"; exit 1; }
echo "plan of the pick: $(grep -o 'Index Scan using [a-z_]*' <<<"$plan")"
bench_quiesce classic_bench
pgbench_run "classic (pgbench)" classic_bench classic.sql "$calls" claims
bench_drop_db classic_bench
fi

if step 4; then
echo "== 4. ghz, dispenserd --fallback-only"
fresh_start
serve --fallback-only
codes_file $((calls / 2 + 1000)) "$work/codes-fallback.txt"
import_pool ghz-fallback "$work/codes-fallback.txt"
ghz_run "ghz, fallback only" ghz-fallback $((calls / 2))
stop
fi

if step 5; then
echo "== 5. after the sell-out: $((calls / 2)) calls on a pool of $sold codes claimed to the last, then the classic the same way"
fresh_start
serve
codes_file "$sold" "$work/codes-sold.txt"
import_pool ghz-sold "$work/codes-sold.txt"
IDS=w ghz_run "ghz, the sale" ghz-sold "$sold"
IDS=late ghz_run "ghz, after the sell-out" ghz-sold $((calls / 2))
# The winners asking again, with new request ids: each is at the pool's
# limit (Redis's count, then Postgres's settle, which records the refusal).
IDS=again USERS="w{{randomInt 0 $((sold - 1))}}" ghz_run "ghz, winners asking again" ghz-sold $((calls / 2))
bin/dispenserctl audit --pool ghz-sold --database-url "$DISPENSER_DATABASE_URL" | tail -1
stop
bench_fresh_db classic_sold
PGOPTIONS="-c client_min_messages=warning" psql "$pg/classic_sold" -q -f scripts/bench/classic-schema.sql
psql "$pg/classic_sold" -q -c "INSERT INTO classic_codes (code) SELECT md5(i::text) FROM generate_series(1, $sold) i" -c "VACUUM ANALYZE classic_codes"
pgbench -n -M prepared -c 32 -j 2 -t $((sold / 32)) -f "$root/scripts/bench/classic.sql" "$pg/classic_sold" >/dev/null 2>&1
left="$(psql "$pg/classic_sold" -tAc "SELECT count(*) FROM classic_codes WHERE state = 'available'")"
[[ "$left" == 0 ]] || {
	echo "the classic table is not sold out: $left codes left"
	exit 1
}
bench_quiesce classic_sold classic_codes
pgbench_run "classic (pgbench), after the sell-out" classic_sold classic-soldout.sql $((calls / 2)) calls
bench_drop_db classic_sold
fi

# The goals of issue 9, from this run's figures (those whose steps ran).
python3 - "$BENCH_FIGURES" "$duration" <<'EOF'
import json, os, sys
path, duration = sys.argv[1], sys.argv[2]
fig = {}
for line in open(path):
    r = json.loads(line)
    fig.setdefault(r.pop("label"), {}).update(r)
sale, long_, classic = fig.get("ghz"), fig.get(f"ghz, {duration}"), fig.get("classic (pgbench)")
fallback, after, classic_after = fig.get("ghz, fallback only"), fig.get("ghz, after the sell-out"), fig.get("classic (pgbench), after the sell-out")
rows = []
def goal(what, value, ok):
    rows.append(f"  {what}: {value}: {'met' if ok else 'NOT met'}")
if sale:
    goal("server-side CPU per durable claim, ghz (at most 150 µs; 120 the mark)", f"{sale['cpu_total']:.0f} µs", sale["cpu_total"] <= 150)
    goal("p99 of the ghz sale (under 25 ms)", f"{sale['p99_ms']:.1f} ms", sale["p99_ms"] < 25)
    goal("claims served by the fallback while Redis is up (none)", f"{sale['fallback']}", sale["fallback"] == 0)
if sale and classic:
    goal("throughput against the classic (at least 2.5x)", f"{sale['per_s']:.0f} / {classic['per_s']:.0f} claims/s = {sale['per_s'] / classic['per_s']:.2f}x",
         sale["per_s"] >= 2.5 * classic["per_s"])
    goal("server-side CPU per claim against the classic's (a quarter)", f"{sale['cpu_total']:.0f} / {classic['cpu_total']:.0f} µs = {sale['cpu_total'] / classic['cpu_total']:.2f}",
         sale["cpu_total"] <= classic["cpu_total"] / 4)
    # Not a goal: what the machine allows. ghz shares the cores, so no sale
    # can run faster than the cores divided by ghz's own CPU per claim plus
    # the server side's; and 2.5x the classic needs the server side under
    # the cores divided by that rate, less ghz's own.
    cores, per_claim = os.cpu_count(), sale["cpu_total"] + sale["cpu_client"]
    ceiling, need = cores * 1e6 / per_claim, cores * 1e6 / (2.5 * classic["per_s"]) - sale["cpu_client"]
    rows.append(f"  (the {cores} cores' ceiling at this sale's CPU per claim, {sale['cpu_total']:.0f} µs server side + "
                f"{sale['cpu_client']:.0f} ghz: {ceiling:.0f} claims/s = {ceiling / classic['per_s']:.2f}x the classic; "
                f"2.5x it needs the server side at most {need:.0f} µs per claim; the sale left the cores idle "
                f"{100 * sale.get('idle', 0):.0f}% of its time)")
if long_ and long_.get("decay") is not None:
    why = ""
    if long_.get("cpu_decay") is not None:
        why = (f" (server-side CPU per claim {100 * long_['cpu_decay']:+.0f}%, "
               f"ghz's own {100 * long_['client_cpu_decay']:+.0f}%"
               + "".join(f"; {long_[k]}" for k in ("last10_checkpoint", "last10_redis") if long_.get(k))
               + (" in the last 10 s" if long_.get("last10_redis") else "")
               + "".join(f"; {long_[k]}" for k in ("steal", "waits") if long_.get(k)) + ")")
    goal(f"no decay over {duration} (last 10 s within 10% of the first 10 s)", f"{100 * long_['decay']:+.0f}%{why}", long_["decay"] >= -0.10)
if fallback and classic:
    goal("the fallback alone against the classic, server-side CPU per claim (no more)", f"{fallback['cpu_total']:.0f} / {classic['cpu_total']:.0f} µs",
         fallback["cpu_total"] <= classic["cpu_total"])
if after and classic_after:
    goal("calls after the sell-out against the classic's, server-side CPU per call (no more)", f"{after['cpu_total']:.0f} / {classic_after['cpu_total']:.0f} µs",
         after["cpu_total"] <= classic_after["cpu_total"])
if rows:
    print("== goals of issue 9, this run (bulk import: scripts/bench-import.sh; audits: above)")
    print("\n".join(rows))
EOF
