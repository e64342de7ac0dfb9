#!/usr/bin/env bash
# perf/cost.sh: what a fixed amount of work costs the servers, in measures a busy machine does
# not distort much: CPU seconds (user + system, from /proc/PID/stat) per 100,000 requests on the
# leader, on each follower and on all three together, requests per server-CPU-second, and
# context switches per request; with --strace, system calls per request on the leader by name
# (strace -c -f, in a separate run since strace slows the process it watches). With --redis,
# the same requests against one Redis with no persistence (redis-benchmark), for its
# requests per server-CPU-second.
#
#   perf/cost.sh [--requests N] [--clients C] [--op put|get] [--strace] [--redis] [--runs R]
#
# Environment: ZATTD_ARGS (extra zattd flags), ZATTD (another zattd build), BASE_PORT,
# PIN_CPUS=1 (server i on CPU (i-1) mod the CPU count only, `zattd --cpus`, and server 1 made
# the leader), TMPDIR (where the data directories go; /dev/shm: in memory, what the servers cost
# without the disk). The report goes to perf/out/cost-*.md.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

REQUESTS=200000
CLIENTS=64
OP=put
STRACE=0
REDIS=0
RUNS=1
while [ $# -gt 0 ]; do
    case $1 in
    --requests) REQUESTS=$2; shift ;;
    --clients) CLIENTS=$2; shift ;;
    --op) OP=$2; shift ;;
    --strace) STRACE=1 ;;
    --redis) REDIS=1 ;;
    --runs) RUNS=$2; shift ;;
    -h | --help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "cost.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done

((REDIS)) && need_redis
build
mkdir -p "$ROOT/perf/out"
OUT="$ROOT/perf/out/cost-$(date -u +%Y%m%dT%H%M%SZ).md"
cleanup() {
    stop_cluster
    stop_redis
}
trap cleanup EXIT
BASE=$(free_base_port "${BASE_PORT:-28000}" 4)
KEYS=10000

# Context switches of every thread of process $1 (the loop and the syncer): /proc/PID/status
# counts only the main thread's.
ctxsw() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/^(voluntary|nonvoluntary)_ctxt_switches/ { s += $2 } END { print s + 0 }'; }

# shellcheck disable=SC2086
start_cluster 3 "$BASE" ${ZATTD_ARGS:-}
"$BIN/loadgen" --endpoints "$ENDPOINTS" --op put --key-space "$KEYS" --preload --total 1 --quiet --format json >/dev/null
LEADER_ID=$("$BIN/loadgen" status --endpoints "$ENDPOINTS" --leader-id)
{
    echo "# Cost of $REQUESTS ${OP}s (100 B values, $CLIENTS closed-loop clients, $KEYS keys)"
    echo
    probe_line "$DATA"
    echo "- zattd: 3 servers on loopback ${ZATTD_ARGS:+(zattd $ZATTD_ARGS)}${PINNED:+, $PINNED}, leader n$LEADER_ID; $(synced_text)"
    echo
    echo "| run | req/s | leader CPU µs/req | followers CPU µs/req | all servers CPU s per 100k req | req per server-CPU-s | leader ctx switches/req | followers ctx switches/req | load avg |"
    echo "|---|---|---|---|---|---|---|---|---|"
} >"$OUT"

for ((r = 1; r <= RUNS; r++)); do
    before=() after=() cs0=() cs1=()
    for p in "${SERVER_PIDS[@]}"; do before+=("$(cpu_seconds "$p")"); cs0+=("$(ctxsw "$p")"); done
    json=$("$BIN/loadgen" --endpoints "$ENDPOINTS" --op "$OP" --key-space "$KEYS" --clients "$CLIENTS" \
        --total "$REQUESTS" --warmup 0s --quiet --format json --timeout 20s)
    for p in "${SERVER_PIDS[@]}"; do after+=("$(cpu_seconds "$p")"); cs1+=("$(ctxsw "$p")"); done
    ops=$(jnum "$json" ops)
    awk -v a="${after[*]}" -v b="${before[*]}" -v c0="${cs0[*]}" -v c1="${cs1[*]}" -v l="$LEADER_ID" \
        -v n="$ops" -v rps="$(jnum "$json" req_per_s)" -v r="$r" -v la="$(cut -d' ' -f1 /proc/loadavg)" 'BEGIN {
        k = split(a, x, " "); split(b, y, " "); split(c0, p, " "); split(c1, q, " ");
        for (i = 1; i <= k; i++) { d = x[i] - y[i]; tot += d; if (i == l) lead = d; else { fol += d; fcs += q[i] - p[i] } }
        printf "| %d | %.0f | %.2f | %.2f | %.3f | %.0f | %.2f | %.2f | %s |\n", r, rps, lead * 1e6 / n, fol * 1e6 / n,
            tot * 1e5 / n, n / tot, (q[l] - p[l]) / n, fcs / n, la }' >>"$OUT"
done
{
    echo
    echo "CPU: user + system seconds of each process over the run (clock ticks of 10 ms, so figures under a few seconds are ±1 %). Followers: the two together. Context switches: voluntary and involuntary, of all of a server's threads (the loop and the syncer)."
} >>"$OUT"

if ((STRACE)); then
    # One strace per server, all at once: system calls per request of the whole cluster.
    STS=()
    for i in "${!SERVER_PIDS[@]}"; do
        strace -c -f -p "${SERVER_PIDS[$i]}" -o "$OUT.strace$((i + 1))" &
        STS+=($!)
    done
    sleep 1
    json=$("$BIN/loadgen" --endpoints "$ENDPOINTS" --op "$OP" --key-space "$KEYS" --clients "$CLIENTS" \
        --total "$REQUESTS" --warmup 0s --quiet --format json --timeout 30s)
    for st in "${STS[@]}"; do kill -INT "$st" 2>/dev/null || true; done
    for st in "${STS[@]}"; do wait "$st" 2>/dev/null || true; done
    ops=$(jnum "$json" ops)
    per_call() { awk -v n="$ops" '$1 ~ /^[0-9.]+$/ && NF >= 5 && $NF != "total" { printf "%s %.3f\n", $NF, $4 / n }' "$1"; }
    {
        echo
        echo "System calls per request (strace -c -f on each server, both threads, $ops requests; strace slows the servers, so group commits hold more writes than without it):"
        echo
        echo "| call | leader (n$LEADER_ID) | followers (together) | all three |"
        echo "|---|---|---|---|"
        for i in 1 2 3; do per_call "$OUT.strace$i" | sed "s/^/$i /"; done |
            awk -v l="$LEADER_ID" '{ if ($1 == l) lead[$2] += $3; else fol[$2] += $3; all[$2] += $3 }
                END { for (c in all) printf "| %s | %.3f | %.3f | %.3f |\n", c, lead[c], fol[c], all[c] }' |
            sort -t'|' -k5 -rn | awk -F'|' '$5 + 0 >= 0.001'
        for i in 1 2 3; do per_call "$OUT.strace$i" | sed "s/^/$i /"; done |
            awk -v l="$LEADER_ID" '{ if ($1 == l) a += $3; else b += $3; c += $3 }
                END { printf "| total | %.3f | %.3f | %.3f |\n", a, b, c }'
    } >>"$OUT"
fi

if ((REDIS)); then
    stop_cluster
    RPORT=$((BASE + 3))
    start_redis "$RPORT"
    echo >>"$OUT"
    echo "| redis run | req/s | server CPU µs/req | req per server-CPU-s | load avg |" >>"$OUT"
    echo "|---|---|---|---|---|" >>"$OUT"
    for ((r = 1; r <= RUNS; r++)); do
        b=$(cpu_seconds "$REDIS_PID")
        rps=$(redis-benchmark -p "$RPORT" -t "$( [ "$OP" = get ] && echo get || echo set )" -n "$REQUESTS" \
            -c "$CLIENTS" -d 100 -r "$KEYS" -q 2>/dev/null | tr '\r' '\n' | grep -oE '[0-9.]+ requests per second' | tail -1 | cut -d' ' -f1)
        a=$(cpu_seconds "$REDIS_PID")
        awk -v a="$a" -v b="$b" -v n="$REQUESTS" -v rps="$rps" -v r="$r" -v la="$(cut -d' ' -f1 /proc/loadavg)" \
            'BEGIN { printf "| %d | %.0f | %.2f | %.0f | %s |\n", r, rps, (a - b) * 1e6 / n, n / (a - b), la }' >>"$OUT"
    done
fi
log "wrote $OUT"
cat "$OUT"
