"""bench/waiters: N clients waiting on N orders at once (`GET /orders/{id}?wait=60`, or the event
stream) against one real ingest process and a real nats-server.

    python -m bench.waiters [--waiters 1000] [--mode wait|events]

1. N orders get a `processing` status record (what a worker writes when it starts a run);
2. N clients wait on them at once; the ingest's memory (RSS) and CPU are read before and while
   they wait, and the consumers on KV_ORDER_STATUS counted (one watch, not one per waiter);
3. every order then gets its `done` record (what a worker writes at the end) and each client's
   answer is timed from that write: p50, p99, max, and how many within 100 ms.

No worker runs: the bench writes the worker's records itself, so the time measured is the ingest's
alone (the watch, the dispatch, the answer). Prints figures; it does not pass or fail on timing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import nats

from orderflow import contract
from orderflow_tools.kit import REPO, NatsServer, Process, free_port, python_module
from orderflow_tools.kit.cpu import cpu_s


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def request(port: int, path: str, done_at: dict[str, float], key: str) -> int:
    """One client: a GET by hand (an HTTP library per waiter would measure the library), read to the
    end of the answer; the time its last byte arrived goes in `done_at`."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    status_line = await reader.readline()
    body = await reader.read()  # to the close: the answer's end, or the stream's
    done_at[key] = time.time()
    writer.close()
    status = int(status_line.split()[1])
    if status != 200 or b'"done"' not in body:
        raise RuntimeError(f"{key}: {status_line!r} {body[-200:]!r}")
    return status


def registered(port: int) -> float:
    """orderflow_waiters of the ingest: clients registered on the watch now."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    found = re.search(r"^orderflow_waiters (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


async def bench(nats_url: str, port: int, metrics_port: int, pid: int, n: int, mode: str) -> None:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    kv = await js.key_value(contract.STATUS_BUCKET)
    ids = [f"bench-{i:05d}" for i in range(n)]
    now = time.time()
    for order_id in ids:
        record = contract.StatusRecord(order_id, "processing", updated_at=now, started_at=now, runs=1)
        await kv.put(order_id, contract.encode(record))
    consumers_before = (await js.stream_info("KV_" + contract.STATUS_BUCKET)).state.consumer_count
    rss0, cpu0 = rss_kib(pid), cpu_s(pid)

    done_at: dict[str, float] = {}
    suffix = "?wait=60" if mode == "wait" else "/events"
    tasks = [asyncio.create_task(request(port, f"/orders/{i}{suffix}", done_at, i)) for i in ids]
    deadline = time.monotonic() + 60
    while registered(metrics_port) < n:  # every client registered on the watch
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {registered(metrics_port):.0f} of {n} waiters registered")
        await asyncio.sleep(0.2)
    cpu_open = cpu_s(pid)
    t_open = time.monotonic()
    await asyncio.sleep(3.0)  # holding: what N waiters cost at rest
    rss1, cpu1 = rss_kib(pid), cpu_s(pid)
    idle_cpu = (cpu1 - cpu_open) / (time.monotonic() - t_open)
    consumers = (await js.stream_info("KV_" + contract.STATUS_BUCKET)).state.consumer_count

    written_at: dict[str, float] = {}
    for order_id in ids:
        record = contract.StatusRecord(order_id, "done", updated_at=time.time(), runs=1)
        written_at[order_id] = time.time()
        await kv.put(order_id, contract.encode(record))
    await asyncio.gather(*tasks)
    cpu2 = cpu_s(pid)
    await nc.close()

    lat_ms = sorted((done_at[i] - written_at[i]) * 1000 for i in ids)
    within = sum(1 for v in lat_ms if v <= 100)
    load = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"mode {mode}: {n} concurrent waiters on one ingest process "
          f"({os.cpu_count()} CPUs, load average {load}: on a shared box the ingest's share of a "
          f"core, not its work, sets the tail)")  # fmt: skip
    print(
        f"  consumers on KV_{contract.STATUS_BUCKET}: {consumers_before} before, {consumers} while {n} wait"
    )
    print(f"  ingest RSS: {rss0 / 1024:.1f} MiB before, {rss1 / 1024:.1f} MiB with {n} waiting "
          f"(+{(rss1 - rss0) / n:.1f} KiB per waiter)")  # fmt: skip
    print(f"  ingest CPU: {cpu_open - cpu0:.2f} s to take the {n} requests and register them; "
          f"{idle_cpu * 100:.1f} % of a core while they wait; {cpu2 - cpu1:.2f} s to answer all {n}")  # fmt: skip
    print(f"  final write -> answer: p50 {statistics.median(lat_ms):.1f} ms, "
          f"p99 {lat_ms[int(len(lat_ms) * 0.99) - 1]:.1f} ms, max {lat_ms[-1]:.1f} ms; "
          f"{within}/{n} within 100 ms")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--waiters", type=int, default=1000)
    parser.add_argument("--mode", choices=("wait", "events"), default="wait")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-waiters-"))
    server = NatsServer(tmp / "js", tmp / "nats.log")
    server.start()
    port, metrics_port = free_port(), free_port()
    env = {
        "ORDERFLOW_NATS_URL": server.url,
        "ORDERFLOW_HTTP_HOST": "127.0.0.1",
        "ORDERFLOW_HTTP_PORT": str(port),
        "ORDERFLOW_METRICS_PORT": str(metrics_port),
        "ORDERFLOW_MAX_WAITERS": str(args.waiters + 100),
        "ORDERFLOW_HTTP_MAX_CONNECTIONS": str(args.waiters + 100),
        "ORDERFLOW_LOG_LEVEL": "warning",
        "PATH": str(Path(sys.executable).parent),
    }
    ingest = Process(python_module("ingest"), env, tmp / "ingest.log", cwd=REPO, name="ingest")
    try:
        ingest.start()
        ingest.wait_http(f"http://127.0.0.1:{port}/readyz", 30)
        assert ingest.proc is not None
        asyncio.run(bench(server.url, port, metrics_port, ingest.proc.pid, args.waiters, args.mode))
    finally:
        ingest.kill()
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
