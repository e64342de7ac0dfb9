"""Latency of one Python client and throughput of many, against a running cluster.

    python clients/python/bench/latency.py --endpoints 127.0.0.1:5254,127.0.0.1:5255,127.0.0.1:5256

One ``Client`` does ``--ops`` sequential puts, then as many linearizable gets and stale gets of
the same keys, and reports each kind's p50 and p99; then ``--threads`` threads, each with its
own ``Client``, put as fast as they can for ``--seconds`` and the total rate is reported. The
Rust client's counterpart is ``cargo run --release --example client_latency`` with the same
flags. Owns measuring only: a benchmark, never a test (nothing here asserts on time).
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable

from zatt.client import Client


def percentile(sorted_us: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, int(round(p / 100 * len(sorted_us) + 0.5)))
    return sorted_us[min(rank, len(sorted_us)) - 1]


def timed(op_count: int, op: Callable[[int], object]) -> list[float]:
    out = []
    for i in range(op_count):
        t = time.perf_counter()
        op(i)
        out.append((time.perf_counter() - t) * 1e6)
    out.sort()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoints", default="127.0.0.1:5254")
    parser.add_argument("--ops", type=int, default=2000, help="operations per latency series")
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--value-size", type=int, default=100)
    args = parser.parse_args()
    value = b"v" * args.value_size
    endpoints = args.endpoints.split(",")

    with Client(endpoints) as c:
        c.put("bench/warmup", value)
        for _ in range(200):
            c.get("bench/warmup")
        series = {
            "put": timed(args.ops, lambda i: c.put(f"bench/py/{i:06}", value)),
            "get": timed(args.ops, lambda i: c.get(f"bench/py/{i:06}")),
            "get_stale": timed(args.ops, lambda i: c.get(f"bench/py/{i:06}", stale=True)),
        }
        connected = c.connected_to
    print(f"python client, one at a time, {args.ops} ops each, connected to {connected}:")
    for name, us in series.items():
        print(
            f"  {name:<10} p50 {percentile(us, 50):8.1f} us   p99 {percentile(us, 99):8.1f} us"
            f"   mean {sum(us) / len(us):8.1f} us"
        )

    counts = [0] * args.threads
    errors = [0] * args.threads
    start = threading.Barrier(args.threads + 1)
    stop = threading.Event()

    def worker(n: int) -> None:
        with Client(endpoints) as wc:
            wc.put(f"bench/py-t{n}/warmup", value)
            start.wait()
            i = 0
            while not stop.is_set():
                try:
                    wc.put(f"bench/py-t{n}/{i % 1000:04}", value)
                    counts[n] += 1
                except Exception:
                    errors[n] += 1
                i += 1

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(args.threads)]
    for t in threads:
        t.start()
    start.wait()
    began = time.perf_counter()
    time.sleep(args.seconds)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    print(
        f"python client, {args.threads} threads x 1 client each, puts for {elapsed:.1f} s: "
        f"{sum(counts) / elapsed:,.0f} puts/s ({sum(errors)} errors)"
    )


if __name__ == "__main__":
    main()
