# perf/lib.sh: shared by the perf scripts (sourced, not run). Builds what they need, starts and
# stops a local cluster of zattd processes on loopback, reads a process's CPU seconds from
# /proc/PID/stat, and runs the environment probe. Signals only the processes it started, by PID.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN="$ROOT/target/release"
# ZATTD=/path/to/zattd runs another server build (e.g. to compare two commits); default: this tree's.
ZATTD_GIVEN=${ZATTD:-}
ZATTD=${ZATTD:-$BIN/zattd}
CLK_TCK=$(getconf CLK_TCK)
SERVER_PIDS=()
DATA=""

log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }

build() {
    if [ -z "$ZATTD_GIVEN" ]; then
        log "building zattd and loadgen (release)"
        (cd "$ROOT" && cargo build --release -q -p zatt --bin zattd --bin zatt)
    else
        log "building loadgen (release); server: $ZATTD"
        (cd "$ROOT" && cargo build --release -q -p zatt --bin zatt)
    fi
    (cd "$ROOT" && cargo build --release -q -p zatt-loadgen)
}

# The first of N consecutive ports (UDP and TCP) that nothing on this machine is using.
free_base_port() {
    local want=${1:-27200} n=${2:-3}
    local used
    used=$(ss -Htuan 2>/dev/null | awk '{print $5}' | sed -E 's/.*:([0-9]+)$/\1/' | sort -u)
    local p=$want
    while :; do
        local ok=1
        for ((i = 0; i < n; i++)); do
            if grep -qx "$((p + i))" <<<"$used"; then ok=0; break; fi
        done
        if ((ok)); then echo "$p"; return; fi
        p=$((p + n))
    done
}

# CPU seconds (user + system) of process $1, or nothing when it is gone.
cpu_seconds() {
    [ -r "/proc/$1/stat" ] || return 0
    awk -v t="$CLK_TCK" '{ sub(/^.*\) /, ""); printf "%.3f\n", ($12 + $13) / t }' "/proc/$1/stat"
}

# The whole machine's CPU time so far, as "idle total" in clock ticks (/proc/stat; iowait counts
# as idle). Two readings give the share of the CPUs that nothing used between them: a run that
# leaves much of the machine idle was waiting (on the disk, on wake-ups), not short of CPU.
machine_ticks() { awk '$1 == "cpu" { for (i = 2; i <= 9; i++) t += $i; print $5 + $6, t; exit }' /proc/stat; }
idle_percent() { # "idle total" before, "idle total" after
    awk -v b="$1" -v a="$2" 'BEGIN { split(b, x, " "); split(a, y, " ");
        printf "%.0f", (y[2] > x[2] ? 100 * (y[1] - x[1]) / (y[2] - x[2]) : 0) }'
}

# How the servers' writes are made durable, for a report's header: data directories on tmpfs
# (TMPDIR=/dev/shm, a measure of what the disk costs) are called out as such.
synced_text() {
    if [ "$(stat -f -c %T "$DATA")" = tmpfs ]; then
        echo "data directories in memory (tmpfs): each write synced on a majority before its answer, where a sync costs nothing and nothing survives the machine's restart"
    else
        echo "fsync on, each write durable on a majority before its answer"
    fi
}

# start_cluster N BASE_PORT EXTRA_ZATTD_ARGS...: servers 1..N, data and logs under $DATA. With
# METRICS_BASE set, server i also serves /metrics on 127.0.0.1:METRICS_BASE+i-1 (METRICS holds
# those addresses, space-separated). With PIN_CPUS=1, server i runs on CPU (i-1) mod the CPU
# count only (`zattd --cpus`), and server 1 is made the leader: PINNED then says so for reports
# ("" otherwise).
start_cluster() {
    local n=$1 base=$2
    shift 2
    DATA=$(mktemp -d "${TMPDIR:-/tmp}/zatt-perf.XXXXXX")
    CLUSTER=""
    ENDPOINTS=""
    for ((i = 1; i <= n; i++)); do
        CLUSTER+="${CLUSTER:+,}$i=127.0.0.1:$((base + i - 1))"
        ENDPOINTS+="${ENDPOINTS:+,}127.0.0.1:$((base + i - 1))"
    done
    METRICS=""
    PINNED=""
    local ncpu
    ncpu=$(nproc)
    for ((i = 1; i <= n; i++)); do
        local extra=()
        if [ -n "${METRICS_BASE:-}" ]; then
            extra=(--metrics-listen "127.0.0.1:$((METRICS_BASE + i - 1))")
            METRICS+="${METRICS:+ }127.0.0.1:$((METRICS_BASE + i - 1))"
        fi
        if [ "${PIN_CPUS:-}" = 1 ]; then
            extra+=(--cpus "$(((i - 1) % ncpu))")
            PINNED+="${PINNED:+, }n$i on CPU $(((i - 1) % ncpu))"
        fi
        "$ZATTD" --id "$i" --cluster "$CLUSTER" --data-dir "$DATA/$i" "${extra[@]}" "$@" >"$DATA/$i.log" 2>&1 &
        SERVER_PIDS+=($!)
    done
    [ -n "$PINNED" ] && PINNED="each server pinned to one CPU (\`--cpus\`: $PINNED)"
    log "started $n servers (pids ${SERVER_PIDS[*]}) on $ENDPOINTS, data in $DATA${PINNED:+; $PINNED}"
    # One write through the load generator's leader discovery proves the cluster serves.
    if ! "$BIN/loadgen" --endpoints "$ENDPOINTS" --total 1 --quiet --timeout 20s --format json >/dev/null; then
        log "the cluster did not serve a write within 20 s; server logs:"
        tail -n 20 "$DATA"/*.log >&2
        return 1
    fi
    # Pinned with more servers than CPUs, which server leads decides the layout: the leader
    # alone on a CPU and both followers sharing the other fall behind together under sustained
    # load (perf/RESULTS.md, eleventh pass). Server 1 shares its CPU with a follower in every
    # pinned run, so that runs compare.
    if [ -n "$PINNED" ] && ((n > ncpu)); then
        lead_on 1 || return 1
        PINNED+=", n1 leading (moved there at start)"
    fi
}

# Hands leadership to server $1 of the cluster started and waits, up to 10 s, until it leads.
lead_on() {
    local want=$1 i
    for ((i = 0; i < 50; i++)); do
        [ "$("$BIN/loadgen" status --endpoints "$ENDPOINTS" --leader-id 2>/dev/null)" = "$want" ] && return 0
        "$BIN/zatt" --endpoints "$ENDPOINTS" --timeout 2s transfer-leader "$want" >/dev/null 2>&1 || true
        sleep 0.2
    done
    log "leadership did not move to n$want within 10 s"
    return 1
}

check_cluster() {
    local i=1
    for p in "${SERVER_PIDS[@]}"; do
        if ! kill -0 "$p" 2>/dev/null; then
            log "server $i (pid $p) is gone; its log:"
            tail -n 30 "$DATA/$i.log" >&2
            return 1
        fi
        i=$((i + 1))
    done
}

stop_cluster() {
    local p
    for p in "${SERVER_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${SERVER_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    SERVER_PIDS=()
    if [ -n "$DATA" ] && [ -z "${KEEP_DATA:-}" ]; then rm -rf "$DATA"; fi
}

# Redis, the reference: Debian's redis-server, installed with apt-get when missing (as root).
REDIS_PID=""
REDIS_DIR=""
need_redis() {
    if ! command -v redis-server >/dev/null 2>&1; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
            log "redis-server missing: installing Debian's redis-server"
            apt-get install -y -q redis-server >/dev/null 2>&1 ||
                { apt-get update -q >/dev/null && apt-get install -y -q redis-server >/dev/null; }
        fi
        command -v redis-server >/dev/null 2>&1 || { echo "$(basename "$0"): redis-server is not installed" >&2; exit 1; }
    fi
}

# A Redis with no persistence on 127.0.0.1:$1, answering once this returns. With PIN_CPUS=1 its
# main thread runs on CPU 0 only (`server_cpulist`, Redis's own setting for it), as the Zatt
# servers are pinned then.
start_redis() {
    REDIS_DIR=$(mktemp -d "${TMPDIR:-/tmp}/zatt-redis.XXXXXX")
    local pin=()
    [ "${PIN_CPUS:-}" = 1 ] && pin=(--server_cpulist 0)
    redis-server --port "$1" --bind 127.0.0.1 --save '' --appendonly no --dir "$REDIS_DIR" \
        "${pin[@]}" --daemonize no >"$REDIS_DIR/redis.log" 2>&1 &
    REDIS_PID=$!
    for _ in $(seq 1 100); do redis-cli -p "$1" ping >/dev/null 2>&1 && break; sleep 0.1; done
}

stop_redis() {
    if [ -n "$REDIS_PID" ]; then kill "$REDIS_PID" 2>/dev/null || true; wait "$REDIS_PID" 2>/dev/null || true; fi
    if [ -n "$REDIS_DIR" ]; then rm -rf "$REDIS_DIR"; fi
    REDIS_PID=""
    REDIS_DIR=""
}

# The environment probe as one markdown paragraph (fsync in the data directory's file system).
probe_line() {
    local dir=${1:-${TMPDIR:-/tmp}}
    echo "- $("$BIN/loadgen" probe --dir "$dir")"
    echo "- machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r)"
    echo "- commit: $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown), $(date -u +%Y-%m-%dT%H:%M:%SZ)${ZATTD_GIVEN:+; server binary: $ZATTD_GIVEN, not built from this tree}"
}

# Installs Linux perf (Debian's linux-perf) when it is missing and we are root with apt-get;
# the caller checks whether perf is there afterwards.
install_perf() {
    if ! command -v perf >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        log "perf missing: installing linux-perf"
        (apt-get install -y -q linux-perf >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q linux-perf >/dev/null; }) || true
    fi
}

# A number field of the load generator's JSON object: the first one of that name, so a top-level
# field wins over the same name inside the mix's "get" and "put" objects.
jnum() { grep -oE "\"$2\":-?[0-9.]+" <<<"$1" | head -n 1 | cut -d: -f2; }
