"""Sampling JetStream itself once a second during a load run, into nats.jsonl: the backlog without
any worker's help, and at the moment it is asked (the workers' orderflow_consumer_pending gauge is
refreshed only every ORDERFLOW_CONSUMER_INFO_INTERVAL_S, 5 s by default).

Each line, like metrics.jsonl's: {"t", "target": "nats", "ok", "error"?, "samples": [[name, {labels}, value], ...]}
with `nats_consumer_pending{consumer}` (not yet delivered), `nats_consumer_ack_pending{consumer}`
(delivered, not yet acked: running), `nats_stream_messages` and `nats_stream_last_seq` of ORDERS
(stored in all; a work-queue stream drops a message once it is acked or termed), and
`nats_live_workers` (entries in KV ORDER_WORKERS, when the workers keep it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from pathlib import Path
from typing import Any

from orderflow.config import Settings
from orderflow_tools.natsconn import url_of

TARGET = "nats"


async def sample(nc: Any) -> list[list[Any]]:
    from nats.js.errors import BucketNotFoundError, NoKeysError, NotFoundError

    from orderflow import consumers, contract

    js = nc.jetstream(timeout=2.0)
    out: list[list[Any]] = []
    for c in await consumers.list_consumers(nc):
        out.append(["nats_consumer_pending", {"consumer": c.name}, float(c.pending)])
        out.append(["nats_consumer_ack_pending", {"consumer": c.name}, float(c.ack_pending)])
    with contextlib.suppress(NotFoundError):
        info = await js.stream_info(contract.STREAM)
        out.append(["nats_stream_messages", {"stream": contract.STREAM}, float(info.state.messages)])
        out.append(["nats_stream_last_seq", {"stream": contract.STREAM}, float(info.state.last_seq)])
    with contextlib.suppress(BucketNotFoundError, NotFoundError):
        kv = await js.key_value(contract.WORKERS_BUCKET)
        try:
            live = len(await kv.keys())
        except NoKeysError:
            live = 0
        out.append(["nats_live_workers", {}, float(live)])
    return out


class NatsSampler:
    """Samples on its own thread (its own event loop); `last` holds the latest samples."""

    def __init__(self, settings: Settings, out: Path, interval_s: float = 1.0) -> None:
        self.settings = settings
        self.out = out
        self.interval_s = interval_s
        self.last: list[list[Any]] = []
        self.ok = False
        self.failures = 0
        self.scrapes = 0
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return url_of(self.settings)  # credentials hidden: it is printed and written to runs

    def probe(self) -> str | None:
        """None if NATS answers, else why not (said once, up front)."""

        async def once() -> None:
            from orderflow_tools.natsconn import connect

            nc = await connect(self.settings, "orderflow-load")
            try:
                self.last = await sample(nc)
            finally:
                await nc.close()

        try:
            asyncio.run(once())
        except Exception as exc:
            return str(exc) or type(exc).__name__
        return None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._run()), name="nats-sampler", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    async def _run(self) -> None:
        from orderflow_tools.natsconn import connect

        nc: Any = None
        with self.out.open("a", encoding="utf-8") as f:
            next_at = time.monotonic()
            while not self._stop.is_set():
                t = time.time()
                line: dict[str, Any] = {"t": t, "target": TARGET}
                try:
                    if nc is None or nc.is_closed:
                        nc = await connect(self.settings, "orderflow-load")
                    self.last, self.ok = await asyncio.wait_for(sample(nc), 5.0), True
                    line.update(ok=True, samples=self.last)
                except Exception as exc:
                    self.ok, self.failures = False, self.failures + 1
                    self.error = str(exc) or type(exc).__name__
                    line.update(ok=False, error=self.error, samples=[])
                f.write(json.dumps(line) + "\n")
                f.flush()
                self.scrapes += 1
                next_at += self.interval_s
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()

    def total(self, name: str) -> float | None:
        values = [v for n, _, v in self.last if n == name]
        return sum(values) if values else None
