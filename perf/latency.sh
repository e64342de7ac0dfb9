#!/usr/bin/env bash
# perf/latency.sh: where a put's time and the servers' CPU go, thread by thread, under a few
# closed-loop clients (one by default: the latency case). Starts a local 3-server cluster, runs
# `loadgen --op put`, records the whole machine's scheduler events for a short window with
# `perf sched record`, and reports per put, from `perf sched timehist -s`: how often each
# thread was switched in (each is a sleep and a wake-up: on a virtual machine, an interrupt
# and often a halt) and its CPU time, by role (the leader's loop and syncer, the followers'
# loops and syncers, the load generator, the kernel's block workers). With --trace, also
# `perf sched timehist -w` of the window (every wake-up, who woke whom) in the report's
# directory, to follow single puts by hand. Over the same window it records the block layer's
# requests (`block:block_rq_issue`/`_complete`) and reports, per kind (data write, cache flush,
# metadata write), how many the disk got per put and how long each took from issue to
# completion: the disk's own time, apart from the wake-ups around it.
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
BLK=$(mktemp "${TMPDIR:-/tmp}/zatt-block.XXXXXX")
cleanup() {
    stop_cluster
    rm -f "$REC" "$BLK"
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
# How often the CPUs went idle past polling (on a virtual machine a halt: an exit to the host,
# and an interrupt to come back), over the same window.
idle_entries() {
    local n=0 st
    for st in /sys/devices/system/cpu/cpu[0-9]*/cpuidle/state*; do
        [ -r "$st/usage" ] && [ "$(cat "$st/name")" != POLL ] && n=$((n + $(cat "$st/usage")))
    done
    echo "$n"
}
IDLE0=$(idle_entries)
perf record -o "$BLK" -a -e block:block_rq_issue -e block:block_rq_complete -- sleep "$SECONDS_REC" >/dev/null 2>&1 &
BLKREC=$!
perf sched record -o "$REC" -a -- sleep "$SECONDS_REC" >/dev/null 2>&1
wait "$BLKREC" || true
IDLE1=$(idle_entries)
wait "$LG"
json=$(cat "$JSON")
rm -f "$JSON"
rps=$(jnum "$json" req_per_s)
# The puts the window held, at the run's mean rate: what every figure below is divided by.
PUTS=$(awk -v r="$rps" -v s="$SECONDS_REC" 'BEGIN { print r * s }')

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
        awk -v pids="${SERVER_PIDS[*]}" -v leader="$LEADER_PID" -v n="$PUTS" '
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
    if [ -n "$(ls /sys/devices/system/cpu/cpu0/cpuidle 2>/dev/null)" ]; then
        echo
        echo "Idle CPUs entered $(cat /sys/devices/system/cpu/cpuidle/current_driver 2>/dev/null || echo a) sleep state (not polling) $(awk -v a="$IDLE0" -v b="$IDLE1" -v n="$PUTS" 'BEGIN { if (n > 0) printf "%.2f", (b - a) / n }') times per put over the window (on a virtual machine each is a halt: an exit to the host, and an interrupt to come back)."
    fi
    echo
    echo "| disk request (all devices, the whole machine) | per put | device time p50 µs | p90 µs |"
    echo "|---|---|---|---|"
    # The first awk pairs requests and prints "kind<TAB>count<TAB>N" once per kind and
    # "kind<TAB>time<TAB>SECONDS" per completed request; sorted, the second reads each kind's
    # count and then its times in order, and prints the percentiles.
    perf script -i "$BLK" -F time,event,trace 2>/dev/null |
        awk '
        function kind(rwbs) {
            if (rwbs ~ /^F/) return "cache flush"
            if (rwbs ~ /W/ && rwbs ~ /M/) return "metadata write"
            if (rwbs ~ /W/) return "data write"
            if (rwbs ~ /R/) return "read"
            return "other"
        }
        # "T: block:block_rq_issue: DEV RWBS BYTES () SECTOR + N ..." and
        # "T: block:block_rq_complete: DEV RWBS () SECTOR + N ...". A request is paired with
        # its completion by device and sector, first in first out; a flush (sector 0 at issue,
        # -1 at completion) with the latest flush issued, as the device runs one at a time and
        # an event perf lost must not shift every later pair.
        {
            t = $1 + 0; ev = $2; k = kind($4)
            key = $3 " " (k == "cache flush" ? "flush" : (ev ~ /issue/ ? $7 : $6))
            if (ev ~ /issue/) {
                q[key, tail[key]++ + 0] = t
                n[k]++
            } else if (head[key] + 0 < tail[key]) {
                if (k == "cache flush")
                    while (head[key] + 0 < tail[key] - 1) { h = head[key] + 0; delete q[key, h]; head[key] = h + 1 }
                h = head[key] + 0
                printf "%s\ttime\t%.9f\n", k, t - q[key, h]
                delete q[key, h]; head[key] = h + 1
            }
        }
        END { for (k in n) printf "%s\tcount\t%d\n", k, n[k] }' |
        sort -t "$(printf '\t')" -k1,1 -k2,2 -k3,3g |
        awk -F '\t' -v puts="$PUTS" '
        $2 == "count" { n[$1] = $3; next }
        { v[$1, c[$1]++] = $3 }
        END {
            if (puts <= 0) exit
            split("data write|cache flush|metadata write|read|other", kinds, "|")
            for (ki = 1; ki <= 5; ki++) {
                k = kinds[ki]
                if (!(k in n)) continue
                if (!c[k]) { printf "| %s | %.2f | | |\n", k, n[k] / puts; continue }
                printf "| %s | %.2f | %.0f | %.0f |\n", k, n[k] / puts, v[k, int(c[k] * 0.5)] * 1e6, v[k, int(c[k] * 0.9)] * 1e6
            }
        }'
    echo
    echo "Device time: from the block layer handing a request to the disk's driver to its completion, so without the sleeps and wake-ups of the thread that waits for it. A sync is a data write, then a cache flush; this disk runs one flush at a time."
} >"$OUT"
if ((TRACE)); then
    perf sched timehist -i "$REC" -w 2>/dev/null >"${OUT%.md}.timehist.txt" || true
    echo "- every wake-up of the window: ${OUT%.md}.timehist.txt" >>"$OUT"
fi
log "wrote $OUT"
cat "$OUT"
