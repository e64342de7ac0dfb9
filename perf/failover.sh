#!/usr/bin/env bash
# perf/failover.sh: time leader failover on a local 3-server cluster. `loadgen failover` starts
# the cluster, kills -9 the leader at a random phase of its heartbeat interval while a client
# writes every millisecond, restarts it, and repeats; it reports crash → new leader elected and
# crash → first acknowledged write as percentiles and draws both CDFs as an SVG.
#
#   perf/failover.sh [--profile fast|conservative] [--trials N] [--quick]
#
# fast:          --election-timeout 25ms --heartbeat-interval 5ms  (elections within 25–50 ms)
# conservative:  zattd's defaults, --election-timeout 500ms --heartbeat-interval 50ms
# --quick: 30 trials. Default trials: 1000 (fast), 100 (conservative).
# Output: perf/out/failover-PROFILE.{txt,json,svg}. BASE_PORT picks the first port (default 27300).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

PROFILE=fast
TRIALS=""
QUICK=0
while [ $# -gt 0 ]; do
    case $1 in
    --profile) PROFILE=$2; shift ;;
    --trials) TRIALS=$2; shift ;;
    --quick) QUICK=1 ;;
    -h | --help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "failover.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done
case $PROFILE in
fast) TIMING=(--election-timeout 25ms --heartbeat-interval 5ms); DEFAULT_TRIALS=1000 ;;
conservative) TIMING=(--election-timeout 500ms --heartbeat-interval 50ms); DEFAULT_TRIALS=100 ;;
*) echo "failover.sh: --profile must be fast or conservative, got '$PROFILE'" >&2; exit 2 ;;
esac
((QUICK)) && DEFAULT_TRIALS=30
TRIALS=${TRIALS:-$DEFAULT_TRIALS}

build
mkdir -p "$ROOT/perf/out"
OUT="$ROOT/perf/out/failover-$PROFILE"
BASE=$(free_base_port "${BASE_PORT:-27300}" 3)
{
    echo "# Zatt failover ($PROFILE profile, $TRIALS trials)"
    echo
    probe_line "${TMPDIR:-/tmp}"
    echo
} >"$OUT.txt"
log "running $TRIALS trials ($PROFILE), per-trial lines in $OUT.log"
"$BIN/loadgen" failover --zattd "$ZATTD" --trials "$TRIALS" --base-port "$BASE" "${TIMING[@]}" \
    --svg "$OUT.svg" --format json >"$OUT.json" 2>"$OUT.log" || {
    log "loadgen failover failed:"
    tail -n 20 "$OUT.log" >&2
    exit 1
}
# The same figures as text, from the per-trial lines, for people.
{
    echo '```'
    grep -c '^trial' "$OUT.log" | sed 's/^/trials logged: /'
    cat "$OUT.json"
    echo '```'
    echo
    echo "- load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- picture: $OUT.svg"
} >>"$OUT.txt"
cat "$OUT.txt"
