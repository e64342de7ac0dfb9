#!/usr/bin/env bash
# perf/restart.sh: how long a server with many keys takes to serve again after a restart, as
# the server reports it in its own log ("serving N ms after start": recovery of the data
# directory, the snapshot restored into the dictionary, the committed log after it applied).
# Loads N keys (default 1,000,000; 16 B keys, 100 B values) into a local 3-server cluster,
# then stops server 3 (SIGTERM) and starts it again, --times times, while the other two run.
#
#   perf/restart.sh [--keys N] [--times T]
#
# Environment: ZATTD_ARGS (extra zattd flags), ZATTD (another zattd build), BASE_PORT.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

KEYS=1000000
TIMES=3
while [ $# -gt 0 ]; do
    case $1 in
    --keys) KEYS=$2; shift ;;
    --times) TIMES=$2; shift ;;
    -h | --help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "restart.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done

build
mkdir -p "$ROOT/perf/out"
OUT="$ROOT/perf/out/restart-$(date -u +%Y%m%dT%H%M%SZ).md"
trap stop_cluster EXIT
BASE=$(free_base_port "${BASE_PORT:-28300}" 3)
# shellcheck disable=SC2086
start_cluster 3 "$BASE" ${ZATTD_ARGS:-}
log "loading $KEYS keys"
"$BIN/loadgen" --endpoints "$ENDPOINTS" --op put --key-size 16 --val-size 100 --key-space "$KEYS" \
    --preload --total 1 --clients 64 --pipeline 16 --quiet --format json --timeout 30s >/dev/null
{
    echo "# Restart of a server holding $KEYS keys (16 B keys, 100 B values)"
    echo
    probe_line "$DATA"
    echo
    echo "| restart | server's own log line | data directory |"
    echo "|---|---|---|"
} >"$OUT"
for ((t = 1; t <= TIMES; t++)); do
    sleep 2
    kill "${SERVER_PIDS[2]}"
    wait "${SERVER_PIDS[2]}" 2>/dev/null || true
    size=$(du -sh "$DATA/3" | cut -f1)
    # shellcheck disable=SC2086
    "$ZATTD" --id 3 --cluster "$CLUSTER" --data-dir "$DATA/3" ${ZATTD_ARGS:-} >"$DATA/3.log" 2>&1 &
    SERVER_PIDS[2]=$!
    line=""
    for _ in $(seq 1 300); do
        line=$(grep -m1 -oE "serving [0-9]+ ms after start.*" "$DATA/3.log" || true)
        [ -n "$line" ] && break
        sleep 0.1
    done
    echo "| $t | ${line:-no serving line within 30 s} | $size ($(ls "$DATA/3" | grep -c '\.wal$') segments, snapshot $(du -h "$DATA"/3/*.snap 2>/dev/null | cut -f1 | head -1)) |" >>"$OUT"
done
echo >>"$OUT"
echo "- load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT"
log "wrote $OUT"
cat "$OUT"
