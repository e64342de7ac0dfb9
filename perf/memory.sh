#!/usr/bin/env bash
# perf/memory.sh: memory per key, Zatt beside Redis, for the same keys in one run. Loads N keys
# (default 1,000,000) of 16 B with 100 B values into a local 3-server Zatt cluster (tools/loadgen
# --preload, keys k000…0 to k…N-1) and reads each server's resident set (VmRSS, and its peak
# VmHWM) from /proc; then loads the same keys and values into one Redis with no persistence
# (redis-cli --pipe) and reads its used_memory_rss. Prints bytes per key for each, whole and
# above the empty process, and writes the report to perf/out/memory-*.md.
#
#   perf/memory.sh [--keys N] [--settle SECONDS]
#
# Redis comes from Debian's redis-server package, installed with apt-get when missing (as root).
# Environment: ZATTD_ARGS (extra zattd flags), BASE_PORT, ZATTD (another zattd build).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

KEYS=1000000
SETTLE=3
while [ $# -gt 0 ]; do
    case $1 in
    --keys) KEYS=$2; shift ;;
    --settle) SETTLE=$2; shift ;;
    -h | --help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "memory.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done

need_redis

build
mkdir -p "$ROOT/perf/out"
OUT="$ROOT/perf/out/memory-$(date -u +%Y%m%dT%H%M%SZ).md"
cleanup() {
    stop_cluster
    stop_redis
}
trap cleanup EXIT

kib() { awk -v f="$2" '$1 == f":" { print $2 }' "/proc/$1/status"; }
per_key() { awk -v b="$1" -v n="$KEYS" 'BEGIN { printf "%.0f", b / n }'; }

BASE=$(free_base_port "${BASE_PORT:-27800}" 4)
METRICS_BASE=$(free_base_port $((BASE + 100)) 3)
# shellcheck disable=SC2086
start_cluster 3 "$BASE" ${ZATTD_ARGS:-}
{
    echo "# Memory per key: $KEYS keys of 16 B with 100 B values"
    echo
    probe_line "$DATA"
    echo "- zattd: 3 servers on loopback ${ZATTD_ARGS:+(zattd $ZATTD_ARGS)}, keys loaded by \`loadgen --preload\` (64 clients, pipeline 16), measured ${SETTLE} s after the last write was applied everywhere"
    echo "- redis: $(redis-server --version | cut -d' ' -f3-4), one process, \`--save '' --appendonly no\`, the same keys and values through \`redis-cli --pipe\`"
    echo
} >"$OUT"

EMPTY=()
for p in "${SERVER_PIDS[@]}"; do EMPTY+=("$(kib "$p" VmRSS)"); done
log "loading $KEYS keys into zattd"
T0=$(date +%s.%N)
"$BIN/loadgen" --endpoints "$ENDPOINTS" --op put --key-size 16 --val-size 100 --key-space "$KEYS" \
    --preload --total 1 --clients 64 --pipeline 16 --quiet --format json --timeout 30s >/dev/null
T1=$(date +%s.%N)
# Every server has applied the leader's last index.
for _ in $(seq 1 100); do
    st=$("$BIN/loadgen" status --endpoints "$ENDPOINTS")
    if [ "$(grep -oE 'applied=[0-9]+' <<<"$st" | sort -u | wc -l)" = 1 ]; then break; fi
    sleep 0.2
done
sleep "$SETTLE"
check_cluster
{
    echo "Loading took $(awk -v a="$T0" -v b="$T1" 'BEGIN { printf "%.1f", b - a }') s. Status after it:"
    echo
    echo '```'
    "$BIN/loadgen" status --endpoints "$ENDPOINTS"
    echo '```'
    echo
    echo "| process | RSS MB | B per key | B per key above the empty process | peak RSS MB (VmHWM) |"
    echo "|---|---|---|---|---|"
} >>"$OUT"
i=0
for p in "${SERVER_PIDS[@]}"; do
    rss=$(kib "$p" VmRSS)
    hwm=$(kib "$p" VmHWM)
    echo "| zattd $((i + 1)) | $((rss / 1024)) | $(per_key $((rss * 1024))) | $(per_key $(((rss - EMPTY[i]) * 1024))) | $((hwm / 1024)) |" >>"$OUT"
    i=$((i + 1))
done
# Where it goes besides the dictionary: the log since the last snapshot and the watch history
# (the history shares its bytes with the log's entries while both hold them). Printed after
# the table above, which Redis's row completes.
metric() { awk -v m="$1" '$1 == m { printf "%.0f", $2 }' <<<"$2"; }
mb() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
BESIDES=""
i=1
for addr in $METRICS; do
    m=$(curl -s --max-time 5 "http://$addr/metrics" || true)
    BESIDES+="| zattd $i | $(metric zatt_raft_log_entries "$m") | $(mb "$(metric zatt_raft_log_bytes "$m")") | $(metric zatt_watch_history_changes "$m") | $(mb "$(metric zatt_watch_history_bytes "$m")") |"$'\n'
    i=$((i + 1))
done
stop_cluster

RPORT=$((BASE + 3))
start_redis "$RPORT"
rinfo() { redis-cli -p "$RPORT" info memory | tr -d '\r' | awk -F: -v f="$1" '$1 == f { print $2 }'; }
REMPTY=$(rinfo used_memory_rss)
log "loading $KEYS keys into redis"
# The keys loadgen writes: 16 bytes, 'k' then the zero-padded decimal index.
awk -v n="$KEYS" 'BEGIN { v = sprintf("%100s", ""); gsub(/ /, "x", v);
    for (i = 0; i < n; i++) printf "*3\r\n$3\r\nSET\r\n$16\r\nk%015d\r\n$100\r\n%s\r\n", i, v }' |
    redis-cli -p "$RPORT" --pipe >/dev/null
sleep "$SETTLE"
RKEYS=$(redis-cli -p "$RPORT" dbsize | tr -d '\r')
RRSS=$(rinfo used_memory_rss)
RUSED=$(rinfo used_memory)
RPEAK=$(rinfo used_memory_peak)
{
    echo "| redis ($RKEYS keys) | $((RRSS / 1048576)) | $(per_key "$RRSS") | $(per_key $((RRSS - REMPTY))) | used_memory $((RUSED / 1048576)) MB, peak $((RPEAK / 1048576)) MB |"
    echo
    echo "B per key: the process's resident set (Redis: \`used_memory_rss\`) divided by $KEYS. The Zatt servers also hold the Raft log since their last snapshot and (while a follower may need it) that snapshot's bytes on disk, not in memory."
    echo
    echo "Besides the dictionary, each Zatt server held (its \`/metrics\`, read with its RSS above; the history's bytes are mostly the log entries' own, shared with the log while it holds them):"
    echo
    echo "| process | log entries since its last snapshot | their bytes (MB) | watch history changes | their bytes (MB) |"
    echo "|---|---|---|---|---|"
    printf '%s' "$BESIDES"
    echo
    echo "- load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
} >>"$OUT"
log "wrote $OUT"
cat "$OUT"
