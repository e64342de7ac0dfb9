#!/usr/bin/env bash
# perf/multi.sh: drive one Zatt cluster with N load generators at once, each as if on its own
# machine (its own process, connections and driver thread; here they share this machine), started
# together with `loadgen --start-at`, and combine their JSON summaries with `loadgen merge`: the
# throughput and percentiles of all of them together, beside each one's own. On real machines
# the same steps are: run `loadgen --start-at T --format json ... > boxN.json` on each (clocks
# synchronised), copy the files to one place, `loadgen merge box*.json`.
#
#   perf/multi.sh [--boxes N] [--clients C] [--duration DUR] [--warmup DUR] [--endpoints EPS]
#                 [--out DIR] [-- LOADGEN-ARGS...]
#
# --boxes: load generators (default 2); --clients: closed-loop clients per load generator
# (default 32); --duration/--warmup: per run (default 5s/1s); --endpoints: drive this running
# cluster (default: start a local 3-server cluster as bench.sh does, and stop it after);
# --out: where each run's JSON, its stderr and the merged report go (default
# perf/out/multi-TIMESTAMP). LOADGEN-ARGS go to every load generator (e.g. --op get --preload).
# Environment: LOADGEN (a loadgen binary to use instead of building this tree's), ZATTD_ARGS,
# BASE_PORT, ZATTD, KEEP_DATA (as in bench.sh).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

BOXES=2
CLIENTS=32
DURATION=5s
WARMUP=1s
GIVEN_ENDPOINTS=""
OUTDIR=""
EXTRA=()
while [ $# -gt 0 ]; do
    case $1 in
    --boxes) BOXES=$2; shift ;;
    --clients) CLIENTS=$2; shift ;;
    --duration) DURATION=$2; shift ;;
    --warmup) WARMUP=$2; shift ;;
    --endpoints) GIVEN_ENDPOINTS=$2; shift ;;
    --out) OUTDIR=$2; shift ;;
    --) shift; EXTRA=("$@"); break ;;
    -h | --help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "multi.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if ! [[ $BOXES =~ ^[0-9]+$ ]] || ((BOXES < 1 || BOXES > 64)); then
    echo "multi.sh: --boxes: expected 1 to 64, got '$BOXES'" >&2
    exit 2
fi
OUTDIR=${OUTDIR:-$ROOT/perf/out/multi-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUTDIR"

if [ -n "$GIVEN_ENDPOINTS" ]; then
    if [ -z "${LOADGEN:-}" ]; then
        log "building loadgen (release)"
        (cd "$ROOT" && cargo build --release -q -p zatt-loadgen)
    fi
    ENDPOINTS=$GIVEN_ENDPOINTS
else
    build
    BASE=$(free_base_port "${BASE_PORT:-27200}" 3)
    trap stop_cluster EXIT
    # shellcheck disable=SC2086
    start_cluster 3 "$BASE" ${ZATTD_ARGS:-}
fi
LOADGEN=${LOADGEN:-$BIN/loadgen}

# The common start: far enough ahead for every load generator to start and find the leader.
START_AT=$(awk -v now="$(date +%s.%N)" 'BEGIN { printf "%.3f", now + 2 }')
echo "$START_AT" >"$OUTDIR/start_at"
log "$BOXES load generators × $CLIENTS clients against $ENDPOINTS, starting together at $START_AT"
PIDS=()
for ((i = 1; i <= BOXES; i++)); do
    "$LOADGEN" --endpoints "$ENDPOINTS" --clients "$CLIENTS" --duration "$DURATION" \
        --warmup "$WARMUP" --start-at "$START_AT" --format json --quiet --timeout 10s \
        "${EXTRA[@]}" >"$OUTDIR/box-$i.json" 2>"$OUTDIR/box-$i.err" &
    PIDS+=($!)
done

# Servers' CPU over the measured period (only for a cluster started here, whose PIDs are known):
# sampled from the end of the warm-up to when the last load generator exits.
CPU_BEFORE=()
if [ ${#SERVER_PIDS[@]} -gt 0 ]; then
    warm_s=$(awk -v w="$WARMUP" 'BEGIN { n = w + 0; u = w; sub(/^[0-9.]+/, "", u)
        print (u == "ms" ? n / 1e3 : u == "us" ? n / 1e6 : u == "ns" ? n / 1e9 : u == "m" || u == "min" ? n * 60 : n) }')
    sleep "$(awk -v at="$START_AT" -v w="$warm_s" -v now="$(date +%s.%N)" \
        'BEGIN { d = at + w - now; printf "%.3f", (d > 0 ? d : 0) }')"
    for p in "${SERVER_PIDS[@]}"; do CPU_BEFORE+=("$(cpu_seconds "$p")"); done
fi
FAILED=0
for ((i = 1; i <= BOXES; i++)); do
    if ! wait "${PIDS[$((i - 1))]}"; then
        log "load generator $i failed:"
        cat "$OUTDIR/box-$i.err" >&2
        FAILED=1
    fi
done
((FAILED)) && exit 1
SERVER_CPU=""
if [ ${#SERVER_PIDS[@]} -gt 0 ]; then
    check_cluster
    CPU_AFTER=()
    for p in "${SERVER_PIDS[@]}"; do CPU_AFTER+=("$(cpu_seconds "$p")"); done
    SERVER_CPU=$(awk -v a="${CPU_AFTER[*]}" -v b="${CPU_BEFORE[*]}" 'BEGIN { n = split(a, x, " "); split(b, y, " ");
        for (i = 1; i <= n; i++) { d = x[i] - y[i]; s += d; printf "%s%.2f", (i > 1 ? "/" : ""), d } printf " (total %.2f)", s }')
fi

FILES=()
for ((i = 1; i <= BOXES; i++)); do FILES+=("$OUTDIR/box-$i.json"); done
"$LOADGEN" merge --format json "${FILES[@]}" >"$OUTDIR/merged.json" 2>/dev/null
{
    echo "- $("$LOADGEN" probe --dir "${DATA:-${TMPDIR:-/tmp}}")"
    echo "- $BOXES load generators on this machine, $CLIENTS clients each, $DURATION after $WARMUP warm-up${EXTRA[*]:+, loadgen ${EXTRA[*]}}; cluster $ENDPOINTS${ZATTD_ARGS:+ (zattd $ZATTD_ARGS)}"
    if [ -n "$SERVER_CPU" ]; then echo "- server CPU s during the measured period (1/2/3): $SERVER_CPU"; fi
    echo
    "$LOADGEN" merge "${FILES[@]}"
} | tee "$OUTDIR/merged.txt"
log "each run's JSON and the merged report are in $OUTDIR"
