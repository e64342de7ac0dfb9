#!/usr/bin/env bash
# perf/bench.sh: start a local 3-server Zatt cluster and drive it with tools/loadgen through a
# matrix of clients (1/16/64/256), value sizes (100 B, 1 KiB) and operations (put, linearizable
# get, 90/10 get/put mix), plus pipelined runs. Writes a markdown table with throughput,
# latency percentiles, errors, each server's CPU seconds (from /proc/PID/stat) and requests per
# server-CPU-second, headed by an environment probe so a noisy run can be told apart.
#
#   perf/bench.sh [--quick] [--duration DUR] [--warmup DUR] [--out FILE]
#
# --quick: 100 B values, 1 and 64 clients, 2 s per run (about half a minute in all).
# Environment: ZATTD_ARGS (extra zattd flags), LOADGEN_ARGS (extra loadgen flags),
# BASE_PORT (first port to try, default 27200), KEEP_DATA=1 (keep the data directories),
# ZATTD (a zattd binary to use instead of building this tree's).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

QUICK=0
DURATION=5s
WARMUP=1s
OUT=""
while [ $# -gt 0 ]; do
    case $1 in
    --quick) QUICK=1; DURATION=2s; WARMUP=500ms ;;
    --duration) DURATION=$2; shift ;;
    --warmup) WARMUP=$2; shift ;;
    --out) OUT=$2; shift ;;
    -h | --help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "bench.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done
mkdir -p "$ROOT/perf/out"
OUT=${OUT:-$ROOT/perf/out/bench-$(date -u +%Y%m%dT%H%M%SZ).md}

build
BASE=$(free_base_port "${BASE_PORT:-27200}" 3)
trap stop_cluster EXIT
# shellcheck disable=SC2086
start_cluster 3 "$BASE" ${ZATTD_ARGS:-}
KEYS=10000

{
    echo "# Zatt benchmark ($( ((QUICK)) && echo quick || echo full ))"
    echo
    probe_line "$DATA"
    echo "- cluster: 3 zattd on loopback ${ZATTD_ARGS:+(zattd $ZATTD_ARGS)}; load generator on the same machine, ${DURATION} per run after ${WARMUP} warm-up, ${KEYS} keys"
    echo
    echo "| op | value | clients | pipeline | req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | errors | server CPU s (1/2/3) | req per server-CPU-s | loadgen CPU % |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
} >"$OUT"

# run LABEL VALUE CLIENTS PIPELINE LOADGEN-ARGS...
run() {
    local label=$1 val=$2 clients=$3 pipeline=$4
    shift 4
    check_cluster
    local before=() after=() p
    for p in "${SERVER_PIDS[@]}"; do before+=("$(cpu_seconds "$p")"); done
    local json t_start t_end
    t_start=$(date +%s.%N)
    # shellcheck disable=SC2086
    if ! json=$("$BIN/loadgen" --endpoints "$ENDPOINTS" --format json --quiet --key-space "$KEYS" \
        --val-size "$val" --clients "$clients" --pipeline "$pipeline" --duration "$DURATION" \
        --warmup "$WARMUP" --timeout 10s "$@" ${LOADGEN_ARGS:-}); then
        log "loadgen failed for $label $val B, $clients clients"
        echo "| $label | $val | $clients | $pipeline | failed | | | | | | | | | |" >>"$OUT"
        return 0
    fi
    t_end=$(date +%s.%N)
    for p in "${SERVER_PIDS[@]}"; do after+=("$(cpu_seconds "$p")"); done
    local cpus total
    cpus=$(awk -v a="${after[*]}" -v b="${before[*]}" 'BEGIN { n = split(a, x, " "); split(b, y, " ");
        for (i = 1; i <= n; i++) printf "%s%.2f", (i > 1 ? "/" : ""), x[i] - y[i] }')
    total=$(awk -v a="${after[*]}" -v b="${before[*]}" 'BEGIN { n = split(a, x, " "); split(b, y, " ");
        for (i = 1; i <= n; i++) s += x[i] - y[i]; print s }')
    # A mix reports its gets' and puts' p99 apart: put them in the label.
    if grep -q '"put":{' <<<"$json"; then
        local gp pp
        gp=$(jnum "$(sed -E 's/.*"get":\{([^}]*)\}.*/\1/' <<<"$json")" p99_us)
        pp=$(jnum "$(sed -E 's/.*"put":\{([^}]*)\}.*/\1/' <<<"$json")" p99_us)
        label=$(awk -v l="$label" -v g="$gp" -v p="$pp" 'BEGIN { printf "%s (p99 get %.2f, put %.2f ms)", l, g / 1000, p / 1000 }')
    fi
    local secs rps
    secs=$(jnum "$json" seconds)
    rps=$(jnum "$json" req_per_s)
    awk -v label="$label" -v val="$val" -v c="$clients" -v d="$pipeline" -v rps="$rps" \
        -v p50="$(jnum "$json" p50_us)" -v p90="$(jnum "$json" p90_us)" -v p99="$(jnum "$json" p99_us)" \
        -v p999="$(jnum "$json" p999_us)" -v mx="$(jnum "$json" max_us)" -v err="$(jnum "$json" errors)" \
        -v cpus="$cpus" -v total="$total" -v wall="$(awk -v a="$t_start" -v b="$t_end" 'BEGIN { print b - a }')" -v lcpu="$(jnum "$json" loadgen_cpu_per_s)" \
        'BEGIN { printf "| %s | %s | %s | %s | %.0f | %.3f | %.3f | %.3f | %.3f | %.1f | %d | %s | %s | %.0f |\n",
            label, (val >= 1024 ? val / 1024 " KiB" : val " B"), c, d, rps, p50 / 1000, p90 / 1000, p99 / 1000,
            p999 / 1000, mx / 1000, err, cpus, (total > 0 ? sprintf("%.0f", rps * wall / total) : "n/a"), lcpu * 100 }' >>"$OUT"
    log "$label $val B c=$clients d=$pipeline: $(printf '%.0f' "$rps") req/s over ${secs}s"
}

if ((QUICK)); then
    VALUES=(100)
    CLIENTS=(1 64)
else
    VALUES=(100 1024)
    CLIENTS=(1 16 64 256)
fi

for val in "${VALUES[@]}"; do
    # Gets should find values: write every key once at this size.
    "$BIN/loadgen" --endpoints "$ENDPOINTS" --op put --preload --total 1 --key-space "$KEYS" \
        --val-size "$val" --quiet --format json >/dev/null
    for c in "${CLIENTS[@]}"; do run put "$val" "$c" 1 --op put; done
    for c in "${CLIENTS[@]}"; do run get "$val" "$c" 1 --op get; done
    for c in "${CLIENTS[@]}"; do run "mix 90/10" "$val" "$c" 1 --op mix --read-ratio 0.9; done
    run put "$val" 16 16 --op put
    ((QUICK)) || run put "$val" 64 16 --op put
    run get "$val" 16 16 --op get
    ((QUICK)) || run "get (stale)" "$val" 64 1 --op get --consistency stale
done

{
    echo
    echo "- load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- pipeline: requests each client keeps in flight; clients share min(clients, 256) connections to the leader (stale gets spread over all three)"
    echo "- server CPU s: user+system CPU each server used during the whole loadgen run (warm-up and connection set-up included); req per server-CPU-s = req/s × the run's wall time / the three servers' CPU seconds"
} >>"$OUT"
log "wrote $OUT"
cat "$OUT"
