# Shared by the benchmark scripts (sourced): a private PostgreSQL cluster with
# stock settings, and CPU accounting by process from /proc/<pid>/stat.
#
# After sourcing: $pg is the private cluster's URL prefix (no database).

bench_pg_port="${BENCH_PG_PORT:-25432}"
pg="postgres://postgres@127.0.0.1:$bench_pg_port"

# bench_cluster starts the private cluster under .dev/postgres (initdb on
# first use, stock settings, autovacuum on) unless it answers.
bench_cluster() {
	DISPENSER_DATABASE_URL="$pg/postgres?sslmode=disable" "$root/scripts/services.sh"
}

# bench_fresh_db NAME [TEMPLATE] drops and creates a database on the
# private cluster, a copy of TEMPLATE if given, else with the cluster's
# locale, or BENCH_LOCALE's (e.g. en_US.utf8, which the machine must have:
# localedef -i en_US -f UTF-8 en_US.UTF-8, then restart the cluster).
bench_fresh_db() {
	local create="CREATE DATABASE $1"
	if [[ -n "${2:-}" ]]; then
		create+=" TEMPLATE $2"
	elif [[ -n "${BENCH_LOCALE:-}" ]]; then
		create+=" TEMPLATE template0 LOCALE '$BENCH_LOCALE'"
	fi
	PGOPTIONS="-c client_min_messages=warning" psql "$pg/postgres?sslmode=disable" -q \
		-c "DROP DATABASE IF EXISTS $1" -c "$create" >/dev/null
}

# bench_drop_db NAME drops a database of the private cluster once its
# figures are taken, so that autovacuum, catching up on what its run wrote,
# does not run during the next step and count as that step's CPU.
bench_drop_db() {
	PGOPTIONS="-c client_min_messages=warning" psql "$pg/postgres?sslmode=disable" -q -c "DROP DATABASE IF EXISTS $1" >/dev/null
}

# bench_quiesce DB [TABLE...]: VACUUM ANALYZE the tables of database DB
# (what autovacuum would do some time after a bulk load), then CHECKPOINT,
# then wait (up to a minute) until no autovacuum worker runs: a measured run
# starts with nothing left over from what came before it, neither dirty pages
# nor a checkpoint's full-page writes nor another table's vacuum.
bench_quiesce() {
	local db="$1" t
	shift
	for t in "$@"; do psql "$pg/$db?sslmode=disable" -q -c "VACUUM ANALYZE $t"; done
	psql "$pg/$db?sslmode=disable" -q -c "CHECKPOINT"
	for _ in $(seq 1 120); do
		[[ "$(psql "$pg/postgres?sslmode=disable" -tAc "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'")" == 0 ]] && return 0
		sleep 0.5
	done
}

# codes_file N FILE writes N random codes (16 hex digits), one per line.
codes_file() { od -An -tx8 -N $(($1 * 8)) /dev/urandom | tr -s ' ' '\n' | grep -v '^$' >"$2"; }

# bench_serve BINDIR PORT LOG ENVS [FLAGS...]: starts BINDIR's dispenserd
# on 127.0.0.1:PORT (gRPC only, errors only, logging to LOG) with the
# NAME=value words ENVS in its environment and FLAGS, sets pid to it, and
# waits until it answers BINDIR's dispenserctl (DISPENSER_KEY and
# DISPENSER_ADDR set).
bench_serve() {
	local bin="$1" port="$2" log="$3" envs="$4"
	shift 4
	# shellcheck disable=SC2086 # NAME=value words split on spaces on purpose
	env $envs "$bin/dispenserd" --listen "127.0.0.1:$port" --http-listen "" --console-listen "" --metrics-listen "" \
		--log-format text --log-level error "$@" >>"$log" 2>&1 &
	pid=$!
	for _ in $(seq 1 100); do
		"$bin/dispenserctl" pools list >/dev/null 2>&1 && return 0
		sleep 0.1
	done
}

# bench_pool BINDIR POOL FILE: creates pool POOL (default settings) through
# the server and imports FILE's codes into it.
bench_pool() {
	"$1/dispenserctl" pools create "$2" >/dev/null
	"$1/dispenserctl" import --pool "$2" "$3" >/dev/null 2>&1
}

# ticks PID: CPU ticks (user + system) a live process has used.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }

# pg_ticks: CPU ticks of the private cluster: the postmaster, its live
# children and the children that exited.
pg_ticks() {
	local pm total c
	pm="$(head -1 "$root/.dev/postgres/postmaster.pid")"
	total=$(awk '{print $14 + $15 + $16 + $17}' "/proc/$pm/stat")
	for c in $(pgrep -P "$pm"); do total=$((total + $(ticks "$c"))); done
	echo "$total"
}

redis_pid="$(pgrep -x redis-server | head -1)"
hz="$(getconf CLK_TCK)"

# redis_script_us: microseconds Redis has spent running scripts (EVAL and
# EVALSHA) since its statistics started, from INFO commandstats: the part of
# Redis's CPU that the claim script takes.
# Then the number of script runs: how many requests share one run is how
# well the pipe batches.
redis_script_us() {
	redis-cli info commandstats | awk -F'[=,:]' '/^cmdstat_eval(sha)?:/ {n += $5; c += $3} END {print n + 0, c + 0}'
}

# machine_ticks: the ticks every core of the machine has spent idle (or
# waiting for I/O with nothing to run), then all its ticks, from the first
# line of /proc/stat (guest time is already counted in user time).
machine_ticks() { awk '/^cpu / {print $5 + $6, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9; exit}' /proc/stat; }

# cpu_mark SERVER_PID: prints "server postgres redis" ticks now (server 0 if
# none), then Redis's script time in microseconds and its script runs, then
# the machine's idle and total ticks (machine_ticks).
cpu_mark() {
	local s=0
	[[ -n "${1:-}" ]] && s=$(ticks "$1")
	echo "$s $(pg_ticks) $(ticks "$redis_pid") $(redis_script_us) $(machine_ticks)"
}

# client_cpu CMD...: runs CMD, prints its stdout, and writes the CPU seconds
# it and its children used to the file in $client_cpu_file.
client_cpu() {
	python3 - "$client_cpu_file" "$@" <<'EOF'
import resource, subprocess, sys
out, cmd = sys.argv[1], sys.argv[2:]
rc = subprocess.run(cmd).returncode
r = resource.getrusage(resource.RUSAGE_CHILDREN)
open(out, "w").write(f"{r.ru_utime + r.ru_stime}\n")
sys.exit(rc)
EOF
}

# cpu_report LABEL CALLS BEFORE AFTER CLIENT_SECONDS: CPU per call by
# process, and the share of the machine's cores left idle meanwhile (a load
# that left them idle was held back by something other than CPU: a closed
# loop of callers waiting on a serial step, the disk). With BENCH_FIGURES
# set, the figures are appended to that file too, one JSON object per line.
cpu_report() {
	python3 - "$@" "$hz" <<'EOF'
import json, os, sys
label, calls, before, after, client, hz = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(), sys.argv[4].split(), float(sys.argv[5]), int(sys.argv[6])
d = [(int(a) - int(b)) / hz * 1e6 / calls for a, b in zip(after[:3], before[:3])]
script = (int(after[3]) - int(before[3])) / calls
runs = int(after[4]) - int(before[4])
per_run = f", {calls / runs:.1f} calls per script run" if runs else ""
all_ticks = int(after[6]) - int(before[6])
idle = (int(after[5]) - int(before[5])) / all_ticks if all_ticks > 0 else 0.0
print(f"{label}: CPU per call µs: server {d[0]:.0f}, postgres {d[1]:.0f}, redis {d[2]:.0f} (of it scripts {script:.1f}{per_run}), "
      f"server side total {sum(d):.0f}; client {client * 1e6 / calls:.0f}; the cores idle {100 * idle:.0f}% of the run")
if os.environ.get("BENCH_FIGURES"):
    with open(os.environ["BENCH_FIGURES"], "a") as f:
        f.write(json.dumps({"label": label, "cpu_server": d[0], "cpu_postgres": d[1], "cpu_redis": d[2],
                            "cpu_total": sum(d), "cpu_client": client * 1e6 / calls, "idle": idle}) + "\n")
EOF
}

# cpu_timeline_start SERVER_PID CLIENT_NAME FILE [METRICS_URL]: samples,
# every half second until cpu_timeline_stop, the CPU ticks of the server, the
# private cluster (as pg_ticks counts them), Redis and the processes named
# CLIENT_NAME, the number of keys in Redis's database 0, the ticks the
# hypervisor took from this machine's vCPUs (steal) and the ticks they were
# idle (idle and iowait, both from /proc/stat), and, from the server's
# metrics at METRICS_URL (-1 without it), the group commits it has made and
# the seconds their transactions took; one line "unix-time server postgres
# redis client redis-keys steal idle commits commit-seconds" each, into FILE.
# One Python process reads /proc, so sampling costs little beside the load.
# A long run's first and last seconds can then be compared by CPU per call
# as well as by rate: the rate moves with the machine's phases, the CPU per
# call of the server's processes with what the server does, and the cores'
# idle share and the group commit's time with how long claims wait.
cpu_timeline_start() {
	python3 - "$1" "$2" "$3" "$root/.dev/postgres/postmaster.pid" "$redis_pid" "${4:-}" <<'EOF' &
import os, socket, sys, time, urllib.request
server, client, out, pmfile, redis = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
metrics = sys.argv[6]
rconn = None
def redis_keys():
    # DBSIZE of database 0 over one connection kept open; -1 when Redis
    # does not answer. Redis doubles its key table when the count reaches
    # a power of two and rehashes it step by step over the next commands.
    global rconn
    try:
        if rconn is None:
            rconn = socket.create_connection(("127.0.0.1", 6379), timeout=0.2)
        rconn.sendall(b"*1\r\n$6\r\nDBSIZE\r\n")
        r = rconn.recv(64)
        return int(r[1:r.index(b"\r")]) if r[:1] == b":" else -1
    except (OSError, ValueError):
        rconn = None
        return -1
def stat(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
def steal_idle():
    # The cpu line's eighth value: time the vCPUs were runnable but the host
    # ran something else; its fourth and fifth: time they were idle.
    with open("/proc/stat") as f:
        v = f.readline().split()
    return int(v[8]), int(v[4]) + int(v[5])
last_commits = "-1 -1"
def commits():
    # The group commit's batches and the seconds their transactions took,
    # from the server's metrics: the last read that answered (the counters
    # only grow, so a missed read leaves no gap to misread), or -1 -1 before
    # the first.
    global last_commits
    if not metrics:
        return last_commits
    n = d = None
    try:
        with urllib.request.urlopen(metrics, timeout=0.3) as r:
            for l in r.read().decode().splitlines():
                if l.startswith("dispenser_group_commit_duration_seconds_count"):
                    n = l.split()[-1]
                elif l.startswith("dispenser_group_commit_duration_seconds_sum"):
                    d = l.split()[-1]
    except (OSError, ValueError):
        pass
    if n and d:
        last_commits = f"{n} {d}"
    return last_commits
def ticks(pid, children=False):
    s = stat(pid)
    if s is None:
        return 0
    t = int(s[11]) + int(s[12])
    return t + int(s[13]) + int(s[14]) if children else t
pm = int(open(pmfile).readline())
with open(out, "w", buffering=1) as f:
    while True:
        pg, cl = ticks(pm, True), 0
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            s = stat(d)
            if s is None:
                continue
            if int(s[1]) == pm:
                pg += int(s[11]) + int(s[12])
            else:
                try:
                    with open(f"/proc/{d}/comm") as c:
                        if c.read().strip() == client:
                            cl += int(s[11]) + int(s[12])
                except OSError:
                    pass
        st, idle = steal_idle()
        f.write(f"{time.time():.3f} {ticks(server)} {pg} {ticks(redis)} {cl} {redis_keys()} {st} {idle} {commits()}\n")
        time.sleep(0.5)
EOF
	cpu_timeline_pid=$!
}

# cpu_timeline_stop: ends the sampler cpu_timeline_start started.
cpu_timeline_stop() {
	[[ -n "${cpu_timeline_pid:-}" ]] || return 0
	kill "$cpu_timeline_pid" 2>/dev/null
	wait "$cpu_timeline_pid" 2>/dev/null || true
	cpu_timeline_pid=""
}
