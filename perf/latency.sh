#!/usr/bin/env bash
# perf/latency.sh: where a put's time and the servers' CPU go, thread by thread, under a few
# closed-loop clients (one by default: the latency case). Starts a local 3-server cluster, runs
# `loadgen --op put`, records the whole machine's scheduler events for a short window with
# `perf sched record`, and reports per put, from `perf sched timehist -s`: how often each
# thread was switched in (each is a sleep and a wake-up: on a virtual machine, an interrupt
# and often a halt) and its CPU time, by role (the leader's loop and syncer, the followers'
# loops and syncers, the load generator, the kernel's block workers). With --trace, also
# `perf sched timehist -w` of the window (every wake-up, who woke whom) in the report's
# directory, to follow single puts by hand.
#
#   perf/latency.sh [--clients N] [--seconds S] [--trace]
#
# Needs Linux perf with scheduler tracepoints (Debian's linux-perf, installed with apt-get when
# missing and we are root; tracefs is mounted when it is not). Environment: ZATTD (another
# zattd build), ZATTD_ARGS (extra zattd flags), BASE_PORT. The report goes to
# perf/out/latency-*.md.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

CLIENTS=1
SECONDS_REC=0.5
TRACE=0
while [ $# -gt 0 ]; do
    case $1 in
    --clients) CLIENTS=$2; shift ;;
    --seconds) SECONDS_REC=$2; shift ;;
    --trace) TRACE=1 ;;
    -h | --help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "latency.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done

install_perf
command -v perf >/dev/null 2>&1 || { echo "latency.sh: needs Linux perf (linux-perf)" >&2; exit 1; }
if [ ! -e /sys/kernel/tracing/events/sched ] && [ "$(id -u)" = 0 ]; then
    mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || true
fi
[ -e /sys/kernel/tracing/events/sched ] || [ -e /sys/kernel/debug/tracing/events/sched ] ||
    { echo "latency.sh: no scheduler tracepoints (tracefs not mounted, and not root to mount it)" >&2; exit 1; }

build
mkdir -p "$ROOT/perf/out"
OUT="$ROOT/perf/out/latency-$(date -u +%Y%m%dT%H%M%SZ).md"
REC=$(mktemp "${TMPDIR:-/tmp}/zatt-sched.XXXXXX")
cleanup() {
    stop_cluster
    rm -f "$REC"
}
trap cleanup EXIT
BASE=$(free_base_port "${BASE_PORT:-28800}" 3)
# shellcheck disable=SC2086
start_cluster 3 "$BASE" ${ZATTD_ARGS:-}
LEADER_ID=$("$BIN/loadgen" status --endpoints "$ENDPOINTS" --leader-id)
LEADER_PID=${SERVER_PIDS[$((LEADER_ID - 1))]}

# The load runs a second before and after the window.
DUR=$(awk -v s="$SECONDS_REC" 'BEGIN { printf "%d", s + 3 }')
JSON=$(mktemp "${TMPDIR:-/tmp}/zatt-latency.XXXXXX")
"$BIN/loadgen" --endpoints "$ENDPOINTS" --op put --key-space 10000 --clients "$CLIENTS" \
    --duration "${DUR}s" --warmup 1s --quiet --format json --timeout 10s >"$JSON" &
LG=$!
sleep 1.5
perf sched record -o "$REC" -a -- sleep "$SECONDS_REC" >/dev/null 2>&1
wait "$LG"
json=$(cat "$JSON")
rm -f "$JSON"
rps=$(jnum "$json" req_per_s)

{
    echo "# Where a put's time goes, thread by thread: $CLIENTS closed-loop client(s), ${SECONDS_REC} s of scheduler events"
    echo
    probe_line "$DATA"
    echo "- zattd: 3 servers on loopback ${ZATTD_ARGS:+(zattd $ZATTD_ARGS)}, leader n$LEADER_ID; \`loadgen --op put --clients $CLIENTS\`: $rps puts/s, p50 $(jnum "$json" p50_us) µs, p99 $(jnum "$json" p99_us) µs"
    echo
    echo "| thread | switched in per put | CPU µs per put |"
    echo "|---|---|---|"
    # Summary lines look like "  zattd[123]  1  2693  48.510 ..." or "  zatt-syncer[456/123] ...":
    # name[tid] or name[tid/pid], then parent, sched-in count, run time in ms.
    perf sched timehist -i "$REC" -s 2>/dev/null |
        awk -v pids="${SERVER_PIDS[*]}" -v leader="$LEADER_PID" -v n="$(awk -v r="$rps" -v s="$SECONDS_REC" 'BEGIN { print r * s }')" '
        BEGIN { k = split(pids, p, " "); for (i = 1; i <= k; i++) server[p[i]] = i }
        $1 ~ /\[[0-9]+(\/[0-9]+)?\]$/ && $3 ~ /^[0-9]+$/ {
            name = $1; sub(/\[.*/, "", name)
            id = $1; sub(/^.*\[/, "", id); sub(/\]$/, "", id)
            split(id, t, "/"); pid = (t[2] != "" ? t[2] : t[1])
            if (pid in server) {
                who = (pid == leader ? "leader" : "follower n" server[pid])
                role = who (name == "zatt-syncer" ? " syncer" : " loop")
            } else if (name ~ /^loadgen/) role = "load generator"
            else if (name ~ /^kworker.*kb/ || name ~ /^kworker.*H/) role = "kernel block workers"
            else next
            ins[role] += $3; ms[role] += $4
        }
        END {
            if (n <= 0) { print "| (no puts in the window) | | |"; exit }
            for (r in ins) printf "| %s | %.2f | %.2f |\n", r, ins[r] / n, ms[r] * 1000 / n
        }' | sort
    echo
    echo "Per put: the thread's switch-ins and run time over the window, divided by the puts the window held at the run's mean rate. Followers are named by server id."
} >"$OUT"
if ((TRACE)); then
    perf sched timehist -i "$REC" -w 2>/dev/null >"${OUT%.md}.timehist.txt" || true
    echo "- every wake-up of the window: ${OUT%.md}.timehist.txt" >>"$OUT"
fi
log "wrote $OUT"
cat "$OUT"
