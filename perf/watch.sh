#!/usr/bin/env bash
# perf/watch.sh: the watch benchmark. Starts a local 3-server cluster, then runs
# examples/watchbench.rs: 64 closed-loop writers put under one prefix, first alone, then while
# 100 watches follow that prefix (spread over the three servers); prints the write rate of both
# phases, the delay from a write's acknowledgement to its event at the watchers (p50, p99, ...),
# whether every watcher got every write, and each server's CPU seconds over the whole run.
#
#   perf/watch.sh [--duration DUR] [--writers N] [--watchers N] [--value-bytes N]
#                 [--watch-on all|followers]
#
# Environment: ZATTD_ARGS (extra zattd flags), BASE_PORT (first port to try, default 27300),
# KEEP_DATA=1 (keep the data directories), ZATTD (another zattd binary).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

ARGS=()
while [ $# -gt 0 ]; do
    case $1 in
    --duration | --writers | --watchers | --value-bytes | --watcher-threads | --warmup | --sample | --watch-on)
        ARGS+=("$1" "$2"); shift ;;
    -h | --help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "watch.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done

build
(cd "$ROOT" && cargo build --release -q --example watchbench)
BASE=$(free_base_port "${BASE_PORT:-27300}" 3)
trap stop_cluster EXIT
# shellcheck disable=SC2086
start_cluster 3 "$BASE" ${ZATTD_ARGS:-}
probe_line "$DATA"
before=()
for p in "${SERVER_PIDS[@]}"; do before+=("$(cpu_seconds "$p")"); done
PIDS=$(IFS=,; echo "${SERVER_PIDS[*]}")
"$BIN/examples/watchbench" --endpoints "$ENDPOINTS" --pids "$PIDS" "${ARGS[@]}"
check_cluster
after=()
for p in "${SERVER_PIDS[@]}"; do after+=("$(cpu_seconds "$p")"); done
echo "- server CPU seconds over the run (1/2/3): $(awk -v a="${after[*]}" -v b="${before[*]}" \
    'BEGIN { n = split(a, x, " "); split(b, y, " ");
             for (i = 1; i <= n; i++) printf "%s%.1f", (i > 1 ? "/" : ""), x[i] - y[i] }')"
