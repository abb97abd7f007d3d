"""bench/worker: no-op jobs/s of one orderflow worker process against a raw nats-py fetch(100)+ack
loop and a FastStream pull subscriber, same run, same nats-server; plus the pool's own overhead per
job, in process.

    python -m bench.worker [--orders 20000] [--rounds 2] [--concurrency 100]

Each contender gets the same N orders pre-published into a fresh ORDERS stream, then starts; the
rate is N / (time from the first message leaving the stream to the stream being empty; a
work-queue stream drops a message when it is acked). What each does per message differs, and that
is the point: the raw loop only acks (fire-and-forget); the orderflow worker reads the order's
status (dedupe), records processing and, before a confirmed ack_sync, a confirmed done.
Prints figures; it does not pass or fail on timing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nats
from nats.js.errors import NotFoundError

from orderflow import broker, contract
from orderflow.config import load_settings
from orderflow_tools.kit import REPO, NatsServer, Process, StartError, free_port, python_module


async def reset_and_fill(url: str, count: int, raw_consumer: bool) -> None:
    settings = load_settings("cli", {"ORDERFLOW_NATS_URL": url})
    nc = await nats.connect(url)
    js = nc.jetstream(timeout=10)
    for name in (contract.STREAM, "KV_" + contract.STATUS_BUCKET):
        try:
            await js.delete_stream(name)
        except NotFoundError:
            pass
    await broker.ensure_layout(js, settings)
    if raw_consumer:
        # nats-py's fetch() sends no priority group, which a prioritized consumer refuses (400)
        plain = load_settings("cli", {"ORDERFLOW_NATS_URL": url, "ORDERFLOW_PRIORITY": "off"})
        await broker.ensure_consumer(nc, plain, "default")
    payloads = [contract.encode(contract.Order(f"b{i}", 1, 1, "bench", time.time())) for i in range(count)]
    for start in range(0, count, 2000):
        futures = [
            await js.publish_async(f"orders.default.b{start + i}", p)
            for i, p in enumerate(payloads[start : start + 2000])
        ]
        await asyncio.gather(*futures)
    await nc.close()


async def time_consumption(url: str, count: int, proc: Process, timeout_s: float) -> float:
    nc = await nats.connect(url)
    js = nc.jetstream()
    t0 = None
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if not proc.alive():
                raise SystemExit(f"bench: consumer exited with {proc.returncode()}")
            left = (await js.stream_info(contract.STREAM)).state.messages
            now = time.monotonic()
            if t0 is None and left < count:
                t0 = now
            if left == 0 and t0 is not None:
                return count / (now - t0)
            await asyncio.sleep(0.01)
        raise SystemExit("bench: consumer did not finish in time")
    finally:
        await nc.close()


def contender(name: str, url: str, concurrency: int) -> Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERFLOW_")}
    if name == "orderflow worker":
        env.update(
            ORDERFLOW_NATS_URL=url,
            ORDERFLOW_HTTP_PORT=str(free_port()),
            ORDERFLOW_HTTP_HOST="127.0.0.1",
            ORDERFLOW_HANDLERS="worker.noop",
            ORDERFLOW_CONCURRENCY=str(concurrency),
            ORDERFLOW_LOG_LEVEL="warning",
        )
        cmd = python_module("worker")
    elif name == "raw fetch(100)+ack":
        cmd = [*python_module("bench.raw_consumer"), url, contract.DURABLE]
    else:
        cmd = [*python_module("bench.faststream_consumer"), url, "faststream"]
    return Process(cmd, env, Path(os.devnull), cwd=REPO, name=name).start()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--orders", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument(
        "--concurrency", type=int, default=100, help="orderflow worker slots (the raw loop fetches 100)"
    )
    args = ap.parse_args()
    try:
        import faststream  # noqa: F401

        names = ["orderflow worker", "raw fetch(100)+ack", "FastStream pull"]
    except ImportError:
        print("bench: faststream not installed (pip install 'faststream[nats]'); skipping it")
        names = ["orderflow worker", "raw fetch(100)+ack"]

    work = Path(tempfile.mkdtemp(prefix="orderflow-bench-worker-"))
    server = NatsServer(work, Path(os.devnull))
    url = server.url
    try:
        server.start()
    except StartError as exc:
        server.stop()
        raise SystemExit(f"bench: {exc}") from None
    rates: dict[str, list[float]] = {n: [] for n in names}
    try:
        for r in range(args.rounds):
            for name in names:
                asyncio.run(reset_and_fill(url, args.orders, raw_consumer=name.startswith("raw")))
                proc = contender(name, url, args.concurrency)
                try:
                    rate = asyncio.run(time_consumption(url, args.orders, proc, timeout_s=300))
                finally:
                    proc.stop()
                rates[name].append(rate)
                print(f"round {r + 1}/{args.rounds} {name:>20}: {rate:8.0f} jobs/s", flush=True)
    finally:
        server.stop()
    med = {n: statistics.median(v) for n, v in rates.items()}
    import uvloop  # the worker runs on uvloop

    from bench.jobpath import bare_tasks_us, job_path_us

    per_job, _ = uvloop.run(job_path_us(100_000, args.concurrency))
    bare_task = uvloop.run(bare_tasks_us(100_000, args.concurrency))
    print()
    for name in names:
        print(f"{name:>20}: {med[name]:8.0f} jobs/s (median of {args.rounds})")
    base = med["raw fetch(100)+ack"]
    print(f"orderflow / raw loop:   {med['orderflow worker'] / base:.2f}x   (goal >= 0.8x)")
    if "FastStream pull" in med:
        print(
            f"orderflow / FastStream: {med['orderflow worker'] / med['FastStream pull']:.2f}x   (goal >= 1.5x)"
        )
    print(
        f"job path per job (in process, stand-in transport, bench/jobpath.py): {per_job:.1f} us   ("
        f"a bare asyncio task + semaphore: {bare_task:.1f} us)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
