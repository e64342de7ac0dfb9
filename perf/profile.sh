#!/usr/bin/env bash
# perf/profile.sh: profile the leader of a local 3-server cluster under load from tools/loadgen.
# With Linux perf (Debian's linux-perf, installed with apt-get when missing and we are root):
# `perf stat` of the leader (hardware counters when the kernel exposes them, else software
# events), then `perf record --call-graph dwarf` sampling (Rust release builds keep no frame
# pointers; the release profile keeps debug line info), reported as a top-N table of functions and, when
# inferno is installed (`cargo install inferno`), a flame graph. Without a usable perf:
# valgrind's callgrind on server 1 (kept leader by giving the others long election timeouts),
# reported with callgrind_annotate.
#
#   perf/profile.sh [--op put|get|mix] [--clients N] [--pipeline D] [--seconds S] [--top N]
#                   [--flamegraph]
#
# --flamegraph: install inferno from crates.io (cargo install, into perf/out/tools) if missing.
# PROFILER=callgrind forces the valgrind path.
# Output in perf/out/profile-*: the perf stat text, the top-N table, the flame graph SVG.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

OP=put
CLIENTS=64
PIPELINE=1
SECONDS_RUN=10
TOP=30
FLAME=0
while [ $# -gt 0 ]; do
    case $1 in
    --op) OP=$2; shift ;;
    --clients) CLIENTS=$2; shift ;;
    --pipeline) PIPELINE=$2; shift ;;
    --seconds) SECONDS_RUN=$2; shift ;;
    --top) TOP=$2; shift ;;
    --flamegraph) FLAME=1 ;;
    -h | --help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "profile.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done

# Which profiler this machine allows.
TOOL=none
install_perf
HW_COUNTERS=0
if [ "${PROFILER:-}" = callgrind ]; then
    TOOL=callgrind
elif command -v perf >/dev/null 2>&1 && perf stat -e task-clock true >/dev/null 2>&1; then
    TOOL=perf
    if perf stat -e instructions true 2>&1 | grep -q '[0-9][0-9,]*[[:space:]]*instructions'; then
        HW_COUNTERS=1
    fi
elif command -v valgrind >/dev/null 2>&1 || { [ "$(id -u)" = 0 ] && apt-get install -y -q valgrind >/dev/null 2>&1; }; then
    TOOL=callgrind
fi
if [ "$TOOL" = none ]; then
    echo "profile.sh: neither perf nor valgrind is usable here" >&2
    exit 1
fi
log "profiler: $TOOL (hardware counters: $HW_COUNTERS)"

build
mkdir -p "$ROOT/perf/out"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT="$ROOT/perf/out/profile-$STAMP"
BASE=$(free_base_port "${BASE_PORT:-27400}" 3)
trap stop_cluster EXIT

LOADGEN=("$BIN/loadgen" --key-space 10000 --quiet --format json)
LOAD=(--op "$OP" --clients "$CLIENTS" --pipeline "$PIPELINE")

# The pid of the server that leads now (servers are started in id order).
leader_pid() {
    local id
    id=$("$BIN/loadgen" status --endpoints "$ENDPOINTS" --leader-id)
    echo "${SERVER_PIDS[$((id - 1))]}"
}

{
    echo "# Zatt profile: $OP, $CLIENTS clients, pipeline $PIPELINE, ${SECONDS_RUN}s, $TOOL"
    echo
    probe_line "${TMPDIR:-/tmp}"
    echo
} >"$OUT.md"

if [ "$TOOL" = perf ]; then
    start_cluster 3 "$BASE"
    "${LOADGEN[@]}" --endpoints "$ENDPOINTS" --op put --preload --total 1 >/dev/null
    LEADER=$(leader_pid)
    log "leader pid $LEADER"
    if ((HW_COUNTERS)); then
        EVENTS=task-clock,context-switches,cpu-migrations,cycles,instructions,cache-misses,branch-misses
    else
        EVENTS=task-clock,context-switches,cpu-migrations,page-faults
    fi
    perf stat -e "$EVENTS" -p "$LEADER" -o "$OUT.stat" -- sleep "$SECONDS_RUN" &
    STAT=$!
    JSON=$("${LOADGEN[@]}" "${LOAD[@]}" --endpoints "$ENDPOINTS" --duration "${SECONDS_RUN}s")
    wait "$STAT" || true
    perf record -F 499 -e cpu-clock --call-graph dwarf,16384 -p "$LEADER" -o "$OUT.data" -- sleep "$SECONDS_RUN" 2>/dev/null &
    REC=$!
    "${LOADGEN[@]}" "${LOAD[@]}" --endpoints "$ENDPOINTS" --duration "${SECONDS_RUN}s" >/dev/null
    wait "$REC" || true
    {
        echo "loadgen during perf stat: req/s $(jnum "$JSON" req_per_s), p99 $(jnum "$JSON" p99_us) µs"
        echo
        echo '```'
        cat "$OUT.stat"
        echo '```'
        if ((HW_COUNTERS)); then
            awk -v rps="$(jnum "$JSON" req_per_s)" -v s="$SECONDS_RUN" '/instructions/ { gsub(",", "", $1);
                printf "\ninstructions per request (leader): %.0f\n", $1 / (rps * s) }' "$OUT.stat"
        fi
        echo
        echo "## Top $TOP functions of the leader (self time, perf record -e cpu-clock)"
        echo
        echo '```'
        perf report -i "$OUT.data" --stdio --no-children --sort symbol --percent-limit 0.5 2>/dev/null |
            grep -E '^ +[0-9.]+%' | sed -E 's/[[:space:]]+-[[:space:]]+-[[:space:]]*$//' | head -n "$TOP"
        echo '```'
        echo
        echo "## Zatt's own functions by inclusive time (children included)"
        echo
        echo '```'
        perf report -i "$OUT.data" --stdio --children --sort symbol --percent-limit 1 2>/dev/null |
            grep -E '^ +[0-9.]+%' | grep -E 'zatt::' | awk '{ printf "%8s %8s  ", $1, $2; $1 = $2 = $3 = "";
            sub(/^ +/, ""); sub(/[[:space:]]+-[[:space:]]+-[[:space:]]*$/, ""); print }' | head -n "$TOP"
        echo '```'
    } >>"$OUT.md"
    PATH="$ROOT/perf/out/tools/bin:$PATH"
    if ((FLAME)) && ! command -v inferno-flamegraph >/dev/null 2>&1; then
        log "installing inferno (cargo install) for the flame graph"
        cargo install -q --locked inferno --root "$ROOT/perf/out/tools" >&2 || log "inferno did not install"
    fi
    if command -v inferno-collapse-perf >/dev/null 2>&1 && command -v inferno-flamegraph >/dev/null 2>&1; then
        perf script -i "$OUT.data" 2>/dev/null | inferno-collapse-perf | inferno-flamegraph >"$OUT.svg"
        echo "- flame graph: $OUT.svg" >>"$OUT.md"
    else
        echo "- no flame graph: run with --flamegraph (installs inferno) to get one" >>"$OUT.md"
    fi
else
    # callgrind slows its process ~50×: run server 1 under it, give 2 and 3 long election
    # timeouts so that 1 stays leader, and offer a lighter load.
    DATA=$(mktemp -d "${TMPDIR:-/tmp}/zatt-perf.XXXXXX")
    CLUSTER="1=127.0.0.1:$BASE,2=127.0.0.1:$((BASE + 1)),3=127.0.0.1:$((BASE + 2))"
    ENDPOINTS="127.0.0.1:$BASE,127.0.0.1:$((BASE + 1)),127.0.0.1:$((BASE + 2))"
    valgrind --tool=callgrind --callgrind-out-file="$OUT.callgrind" "$ZATTD" --id 1 --cluster "$CLUSTER" \
        --data-dir "$DATA/1" --election-timeout 300ms --heartbeat-interval 100ms >"$DATA/1.log" 2>&1 &
    SERVER_PIDS+=($!)
    for i in 2 3; do
        "$ZATTD" --id "$i" --cluster "$CLUSTER" --data-dir "$DATA/$i" --election-timeout 10s \
            --heartbeat-interval 100ms >"$DATA/$i.log" 2>&1 &
        SERVER_PIDS+=($!)
    done
    JSON=$("${LOADGEN[@]}" --op "$OP" --clients 4 --endpoints "$ENDPOINTS" --duration "${SECONDS_RUN}s" --timeout 30s)
    stop_cluster
    {
        echo "loadgen under callgrind: req/s $(jnum "$JSON" req_per_s)"
        callgrind_annotate "$OUT.callgrind" 2>/dev/null | awk -v rps="$(jnum "$JSON" req_per_s)" \
            -v s="$SECONDS_RUN" '/PROGRAM TOTALS/ { gsub(",", "", $1); if (rps > 0)
            printf "\ninstructions per request (server 1, start-up included): %.0f\n", $1 / (rps * s) }'
        echo
        echo '```'
        callgrind_annotate "$OUT.callgrind" 2>/dev/null | head -n "$((TOP + 25))"
        echo '```'
    } >>"$OUT.md"
fi
log "wrote $OUT.md"
cat "$OUT.md"
