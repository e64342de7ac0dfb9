#!/usr/bin/env bash
# perf/vs-redis.sh: Zatt (3 servers, every write durable on a majority before its answer) beside
# one Redis with no persistence, on this machine, in alternating rounds: writes of 100 B values
# with C closed-loop clients (default 64) and with one client. Each system is driven by its own
# benchmark tool (tools/loadgen, redis-benchmark). For each round: writes/s and the ratio
# Zatt/Redis, p50, server CPU (user + system of every server process over the run, all three
# Zatt replicas counted) and requests per server-CPU-second; beside them, the share of the
# machine's CPU time left idle over the run (much idle: the system was waiting, on its disk or on
# wake-ups, not short of CPU) and the load average.
#
#   perf/vs-redis.sh [--rounds R] [--duration SECONDS] [--clients C]
#
# Redis comes from Debian's redis-server package (installed with apt-get when missing, as root).
# Environment: ZATTD_ARGS (extra zattd flags), ZATTD (another zattd build), BASE_PORT,
# PIN_CPUS=1 (server i on CPU (i-1) mod the CPU count only, `zattd --cpus`, server 1 made the
# leader; Redis's main thread on CPU 0, its `server_cpulist`), TMPDIR (where the servers' data
# directories go; TMPDIR=/dev/shm keeps them in memory, where a sync costs nothing: what the
# disk costs, not a durable setup). The report goes to perf/out/vs-redis-*.md.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

ROUNDS=3
DUR=5
CLIENTS=64
while [ $# -gt 0 ]; do
    case $1 in
    --rounds) ROUNDS=$2; shift ;;
    --duration) DUR=$2; shift ;;
    --clients) CLIENTS=$2; shift ;;
    -h | --help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "vs-redis.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done

need_redis

build
mkdir -p "$ROOT/perf/out"
OUT="$ROOT/perf/out/vs-redis-$(date -u +%Y%m%dT%H%M%SZ).md"
cleanup() {
    stop_cluster
    stop_redis
}
trap cleanup EXIT
KEYS=10000
BASE=$(free_base_port "${BASE_PORT:-28400}" 4)
# shellcheck disable=SC2086
start_cluster 3 "$BASE" ${ZATTD_ARGS:-}
"$BIN/loadgen" --endpoints "$ENDPOINTS" --op put --key-space "$KEYS" --preload --total 1 --quiet --format json >/dev/null
RPORT=$((BASE + 3))
start_redis "$RPORT"

{
    echo "# Zatt beside Redis: writes of 100 B values, $CLIENTS clients and 1 client, $ROUNDS alternating rounds"
    echo
    probe_line "$DATA"
    echo "- Zatt: 3 zattd on loopback ${ZATTD_ARGS:+(zattd $ZATTD_ARGS)}${PINNED:+, $PINNED}, $(synced_text); \`loadgen --op put --clients N --duration ${DUR}s --warmup 1s\`, $KEYS keys"
    echo "- Redis: $(redis-server --version | cut -d' ' -f3), one process, \`--save '' --appendonly no\`${PINNED:+ \`--server_cpulist 0\` (its main thread on CPU 0)}; \`redis-benchmark -t set -d 100 -r $KEYS -c N -n ...\` (about ${DUR} s)"
    echo
    echo "| round | system | clients | writes/s | Zatt/Redis | p50 ms | server CPU s | req per server-CPU-s | machine idle | load avg |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
} >"$OUT"

zatt_run() { # clients -> "rps p50_ms cpu_s per_cpu_s idle%"
    local before=() after=() p json t0 t1
    for p in "${SERVER_PIDS[@]}"; do before+=("$(cpu_seconds "$p")"); done
    t0=$(machine_ticks)
    json=$("$BIN/loadgen" --endpoints "$ENDPOINTS" --op put --key-space "$KEYS" --clients "$1" \
        --duration "${DUR}s" --warmup 1s --quiet --format json --timeout 10s)
    t1=$(machine_ticks)
    for p in "${SERVER_PIDS[@]}"; do after+=("$(cpu_seconds "$p")"); done
    awk -v a="${after[*]}" -v b="${before[*]}" -v r="$(jnum "$json" req_per_s)" -v p="$(jnum "$json" p50_us)" \
        -v s="$(jnum "$json" seconds)" -v i="$(idle_percent "$t0" "$t1")" 'BEGIN { n = split(a, x, " "); split(b, y, " ");
        for (k = 1; k <= n; k++) c += x[k] - y[k];
        printf "%.0f %.3f %.2f %.0f %s\n", r, p / 1000, c, r * (s + 1) / c, i }'
}

redis_run() { # clients requests -> "rps p50_ms cpu_s per_cpu_s idle%"
    local b a outp t0 t1
    b=$(cpu_seconds "$REDIS_PID")
    t0=$(machine_ticks)
    outp=$(redis-benchmark -p "$RPORT" -t set -d 100 -r "$KEYS" -c "$1" -n "$2" -q 2>/dev/null | tr '\r' '\n' | grep 'requests per second' | tail -1)
    t1=$(machine_ticks)
    a=$(cpu_seconds "$REDIS_PID")
    awk -v l="$outp" -v a="$a" -v b="$b" -v n="$2" -v i="$(idle_percent "$t0" "$t1")" 'BEGIN {
        match(l, /[0-9.]+ requests per second/); r = substr(l, RSTART, RLENGTH) + 0;
        p = 0; if (match(l, /p50=[0-9.]+/)) p = substr(l, RSTART + 4, RLENGTH - 4) + 0;
        c = a - b; printf "%.0f %.3f %.2f %.0f %s\n", r, p, c, (c > 0 ? n / c : 0), i }'
}

row() { # round system clients "rps p50 cpu perCpu idle" ratio
    local r=$1 sys=$2 c=$3 ratio=$5
    read -r rps p50 cpu per idle <<<"$4"
    echo "| $r | $sys | $c | $rps | $ratio | $p50 | $cpu | $per | $idle % | $(cut -d' ' -f1 /proc/loadavg) |" >>"$OUT"
}

declare -A NREQ
for ((r = 1; r <= ROUNDS; r++)); do
    for c in "$CLIENTS" 1; do
        if ((r % 2)); then
            z=$(zatt_run "$c")
            # Redis gets about as many requests as Zatt served, so both runs last about as long.
            NREQ[$c]=$(awk -v z="${z%% *}" -v d="$DUR" 'BEGIN { n = int(z * d); print (n < 20000 ? 20000 : n) }')
            rd=$(redis_run "$c" "${NREQ[$c]}")
        else
            rd=$(redis_run "$c" "${NREQ[$c]}")
            z=$(zatt_run "$c")
        fi
        ratio=$(awk -v z="${z%% *}" -v r="${rd%% *}" 'BEGIN { printf "%.2f", (r > 0 ? z / r : 0) }')
        row "$r" Zatt "$c" "$z" "$ratio"
        row "$r" Redis "$c" "$rd" ""
    done
done
{
    echo
    echo "Zatt/Redis: the round's Zatt writes/s over Redis's. Server CPU: user + system seconds of the servers over the run (Zatt: all three, warm-up included, so its req per server-CPU-s counts the warm-up's requests at the same rate). Machine idle: the share of both CPUs' time that nothing used over the run (idle and iowait, from /proc/stat). Odd rounds run Zatt first, even rounds Redis first."
} >>"$OUT"
log "wrote $OUT"
cat "$OUT"
