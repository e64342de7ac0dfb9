#!/usr/bin/env bash
# perf/soak.sh: leader stability under sustained load. Starts a local 3-server cluster, measures
# the maximum durable write rate (64 closed-loop clients), then drives an open loop at a share of
# that rate for a long time and reports whether the leader ever changed: the servers' terms before
# and after, and every "became leader" line the servers logged during the run.
#
#   perf/soak.sh [--profile fast|conservative] [--seconds N] [--share F] [--rate R]
#
# fast:          --election-timeout 25ms --heartbeat-interval 5ms  (the failover profile)
# conservative:  zattd's defaults, --election-timeout 500ms --heartbeat-interval 50ms
# --seconds: length of the loaded run (default 300). --share: fraction of the measured maximum
# (default 0.9). --rate: skip the measurement and use this rate.
# Output: perf/out/soak-PROFILE.txt. Exit 0 when no leader change happened, 1 when one did.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

PROFILE=fast
SECONDS_RUN=300
SHARE=0.9
RATE=""
while [ $# -gt 0 ]; do
    case $1 in
    --profile) PROFILE=$2; shift ;;
    --seconds) SECONDS_RUN=$2; shift ;;
    --share) SHARE=$2; shift ;;
    --rate) RATE=$2; shift ;;
    -h | --help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "soak.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done
case $PROFILE in
fast) TIMING=(--election-timeout 25ms --heartbeat-interval 5ms) ;;
conservative) TIMING=(--election-timeout 500ms --heartbeat-interval 50ms) ;;
*) echo "soak.sh: --profile must be fast or conservative, got '$PROFILE'" >&2; exit 2 ;;
esac

build
mkdir -p "$ROOT/perf/out"
OUT="$ROOT/perf/out/soak-$PROFILE.txt"
BASE=$(free_base_port "${BASE_PORT:-27400}" 3)
trap stop_cluster EXIT
start_cluster 3 "$BASE" "${TIMING[@]}" --log-level info

terms() { "$BIN/loadgen" status --endpoints "$ENDPOINTS" 2>&1 | tr '\n' ' '; }
# The core logs "nN became leader at tT" once per election (the event loop logs its own line too).
leader_lines() { cat "$DATA"/[0-9].log | grep -c "became leader at t" || true; }

if [ -z "$RATE" ]; then
    log "measuring the maximum write rate (64 clients, 10 s)"
    MAX_JSON=$("$BIN/loadgen" --endpoints "$ENDPOINTS" --op put --clients 64 --duration 10s \
        --warmup 2s --quiet --format json)
    MAX=$(jnum "$MAX_JSON" req_per_s)
    RATE=$(awk -v m="$MAX" -v s="$SHARE" 'BEGIN { printf "%d", m * s }')
    log "maximum ${MAX%.*} writes/s; soaking at $RATE/s ($SHARE of it)"
else
    MAX="(not measured)"
fi

BEFORE_TERMS=$(terms)
BEFORE_LEADERS=$(leader_lines)
log "open loop at $RATE writes/s for ${SECONDS_RUN}s; before: $BEFORE_TERMS"
RUN_JSON=$("$BIN/loadgen" --endpoints "$ENDPOINTS" --op put --rate "$RATE" --clients 64 \
    --duration "${SECONDS_RUN}s" --quiet --format json)
check_cluster
AFTER_TERMS=$(terms)
AFTER_LEADERS=$(leader_lines)
CHANGES=$((AFTER_LEADERS - BEFORE_LEADERS))

{
    echo "# Leader stability under load ($PROFILE profile: ${TIMING[*]})"
    echo
    probe_line "$DATA"
    echo
    echo "- maximum write rate, 64 closed-loop clients: $MAX req/s"
    echo "- soak: open loop at $RATE writes/s for ${SECONDS_RUN} s${PINNED:+; $PINNED}"
    echo "- achieved: $(jnum "$RUN_JSON" req_per_s) req/s, errors $(jnum "$RUN_JSON" errors)," \
        "p50 $(jnum "$RUN_JSON" p50_us) us, p99 $(jnum "$RUN_JSON" p99_us) us," \
        "p99.9 $(jnum "$RUN_JSON" p999_us) us, max $(jnum "$RUN_JSON" max_us) us"
    echo "- servers before: $BEFORE_TERMS"
    echo "- servers after:  $AFTER_TERMS"
    echo "- leader elections during the soak (\"became leader at t\" lines the core logged): $CHANGES"
} | tee "$OUT"

[ "$CHANGES" -eq 0 ]
