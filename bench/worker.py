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
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

import nats
from nats.js.errors import NotFoundError

from bench.common import free_port, stop
from orderflow import broker, contract
from orderflow.config import TaskType, load_settings
from orderflow.dev import nats_server_command

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


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
        await broker.ensure_consumer(js, settings, "default")
    payloads = [contract.encode(contract.Order(f"b{i}", 1, 1, "bench", time.time())) for i in range(count)]
    for start in range(0, count, 2000):
        futures = [await js.publish_async("orders.default", p) for p in payloads[start : start + 2000]]
        await asyncio.gather(*futures)
    await nc.close()


async def time_consumption(url: str, count: int, proc: subprocess.Popen[bytes], timeout_s: float) -> float:
    nc = await nats.connect(url)
    js = nc.jetstream()
    t0 = None
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"bench: consumer exited with {proc.returncode}")
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


def contender(name: str, url: str, concurrency: int) -> subprocess.Popen[bytes]:
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
        cmd = [sys.executable, "-m", "worker"]
    elif name == "raw fetch(100)+ack":
        cmd = [sys.executable, "-m", "bench.raw_consumer", url, contract.DURABLE]
    else:
        cmd = [sys.executable, "-m", "bench.faststream_consumer", url, "faststream"]
    return subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# --- the pool's own cost, in process, with stand-ins for NATS (no I/O at all) -------------------
class _StubMsg:
    """Stands in for a JetStream message: the pool only reads these attributes."""

    __slots__ = ("_ackd", "data", "headers", "metadata", "reply", "subject")

    def __init__(self, i: int, data: bytes) -> None:
        self.data = data
        self.reply = f"$JS.ACK.ORDERS.workers.1.{i}.{i}.0.0"
        self.subject = "orders.default"
        self.headers = None
        self._ackd = False
        self.metadata = types.SimpleNamespace(num_delivered=1, sequence=types.SimpleNamespace(stream=i))

    async def in_progress(self) -> None:
        return None

    async def nak(self, delay: float | None = None) -> None:
        return None


class _StubStatus:
    async def get(self, order_id: str) -> None:
        return None

    async def put(self, record: Any, confirm: bool = False) -> None:
        return None

    async def record_run(self, *args: Any) -> None:
        return None


class _StubSettler:
    async def settle(self, d: Any, outcome: Any) -> Any:
        return outcome.kind


async def pool_overhead_us(jobs: int, capacity: int) -> tuple[float, float]:
    from prometheus_client import CollectorRegistry

    from orderflow.metrics import WorkerMetrics
    from worker.pool import Pool

    async def noop(job: Any) -> None:
        return None

    pool = Pool(
        TaskType("default", capacity, 60.0),
        noop,
        _StubSettler(),
        _StubStatus(),  # type: ignore[arg-type]
        WorkerMetrics(CollectorRegistry()),
        "bench",
        10.0,
        5,
    )
    data = contract.encode(contract.Order("b1", 1, 1, "bench", 0.0))
    msgs = [_StubMsg(i, data) for i in range(jobs)]
    start = time.perf_counter()
    for msg in msgs:
        if pool.free_slots <= 0:
            await pool.wait_for_free_slot()
        pool.start(msg)  # type: ignore[arg-type]
    await pool.wait_idle()
    per_job = (time.perf_counter() - start) / jobs * 1e6

    # For scale: the same number of bare asyncio tasks running a no-op, as many at a time.
    sem = asyncio.Semaphore(capacity)

    async def bare() -> None:
        async with sem:
            return None

    start = time.perf_counter()
    await asyncio.gather(*(bare() for _ in range(jobs)))
    return per_job, (time.perf_counter() - start) / jobs * 1e6


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
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    server = subprocess.Popen(
        nats_server_command(work, port, binary=str(BIN / "nats-server")),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    rates: dict[str, list[float]] = {n: [] for n in names}
    try:
        for r in range(args.rounds):
            for name in names:
                asyncio.run(reset_and_fill(url, args.orders, raw_consumer=name.startswith("raw")))
                proc = contender(name, url, args.concurrency)
                try:
                    rate = asyncio.run(time_consumption(url, args.orders, proc, timeout_s=300))
                finally:
                    stop(proc)
                rates[name].append(rate)
                print(f"round {r + 1}/{args.rounds} {name:>20}: {rate:8.0f} jobs/s", flush=True)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(15)
    med = {n: statistics.median(v) for n, v in rates.items()}
    import uvloop  # the worker runs on uvloop

    per_job, bare_task = uvloop.run(pool_overhead_us(100_000, args.concurrency))
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
        f"pool overhead per job (in process, no I/O): {per_job:.1f} us   (goal <= 10 us; "
        f"a bare asyncio task + semaphore: {bare_task:.1f} us)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
