"""What tests share against the real thing: a `nats-server -js` on a free port with a temp store,
the services as real processes (`python -m ingest`, `python -m worker`) that get real signals, and
JetStream views for assertions. The processes come from the tools' kit (orderflow_tools.kit); the
fixtures that use them live in the pytest plugin `harness_plugin`, registered in tests/conftest.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import nats
import pytest
from nats.aio.client import Client
from nats.js.errors import KeyNotFoundError

from orderflow_tools import kit
from orderflow_tools.kit import REPO, free_port, parse_metrics, python_module, select

__all__ = [
    "CI",
    "REPO",
    "NatsServer",
    "Service",
    "cli",
    "connect",
    "consumer_info",
    "count_events",
    "events_per_order",
    "find_binary",
    "free_port",
    "http",
    "publish_orders",
    "read_stream",
    "run",
    "run_records",
    "service_env",
    "statuses",
    "stored_messages",
    "stored_order_ids",
    "wait_until",
]

CI = bool(os.environ.get("CI"))
if TYPE_CHECKING:
    from orderflow.contract import RunRecord, StatusRecord

T = TypeVar("T")


def find_binary(name: str, hint: str = "make install puts it in .venv/bin or .tools/bin") -> str:
    """A missing tool fails in CI and skips elsewhere (dramatiq: raise if CI else skip)."""
    path = kit.find_tool(name)
    if path is None:
        message = f"{name} not found ({hint})"
        if CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def http(
    method: str,
    url: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


def wait_until(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class NatsServer(kit.NatsServer):
    """The kit's nats-server with the binary found as tests find tools (skip here, fail in CI)."""

    def __init__(self, store_dir: Path, log_path: Path, extra_args: Sequence[str] = ()) -> None:
        super().__init__(store_dir, log_path, binary=find_binary("nats-server"), extra_args=extra_args)


@contextlib.asynccontextmanager
async def connect(url: str) -> AsyncIterator[Client]:
    """`url` may list several servers, comma-separated (a cluster's url)."""
    nc = await nats.connect(servers=url.split(","), max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    try:
        yield nc
    finally:
        await nc.close()


async def stored_messages(url: str) -> list[Any]:
    """Every message ORDERS holds now, in stream order (ORDERS must exist)."""
    from orderflow import contract

    return await read_stream(url, contract.STREAM, missing_ok=False)


async def stored_order_ids(url: str) -> list[str]:
    """The order id of every message ORDERS holds now, in stream order."""
    return [json.loads(msg.data or b"{}")["order_id"] for msg in await stored_messages(url)]


class Service:
    """`python -m <module>` as a real process with its own HTTP port."""

    def __init__(self, module: str, env: dict[str, str], log_path: Path) -> None:
        self.module = module
        self.port = int(env["ORDERFLOW_HTTP_PORT"])
        self.log_path = log_path
        self.env = env
        self.process = kit.Process(python_module(module), env, log_path, cwd=REPO, name=module)

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return self.process.proc

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Service:
        self.process.start()
        return self

    @property
    def metrics_url(self) -> str:
        """The ingest serves /metrics on a port of its own; the worker beside its probes."""
        port = self.env.get("ORDERFLOW_METRICS_PORT") if self.module == "ingest" else None
        return f"http://127.0.0.1:{port or self.port}/metrics"

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        if path == "/metrics":
            return http("GET", self.metrics_url, headers=headers)
        return http("GET", self.url + path, headers=headers)

    def order_view(self, order_id: str) -> dict[str, Any]:
        """GET /orders/{order_id}, answered 200: the order as the API shows it."""
        status, _, body = self.get(f"/orders/{order_id}")
        assert status == 200, (status, body)
        shown: dict[str, Any] = json.loads(body)
        return shown

    def wait_ready(self, timeout: float = 20) -> Service:
        """Until /readyz answers 200; fails at once, with the log tail, if the process exits."""
        self.process.wait_http(self.url + "/readyz", timeout, interval_s=0.05)
        return self

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def metric(self, selector: str) -> float:
        """Sum of the /metrics samples `selector` picks: `name` (any labels) or `name{k="v",...}`
        (the samples whose labels include those)."""
        _, _, body = self.get("/metrics")
        return select(parse_metrics(body.decode()), selector)

    def stop(self) -> None:
        """SIGKILL: the test is over, nothing needs draining."""
        self.process.kill()


def service_env(nats_url: str, **settings: Any) -> dict[str, str]:
    """The environment of a service under test: this one without ORDERFLOW_*, then a free HTTP
    port on loopback, no shutdown delay, and `settings` as ORDERFLOW_<NAME>."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERFLOW_")}
    env.update(
        ORDERFLOW_NATS_URL=nats_url,
        ORDERFLOW_HTTP_HOST="127.0.0.1",
        ORDERFLOW_HTTP_PORT=str(free_port()),
        ORDERFLOW_METRICS_PORT=str(free_port()),  # the ingest's; a worker serves /metrics on its port
        ORDERFLOW_LOG_LEVEL="info",
        ORDERFLOW_SHUTDOWN_DELAY_S="0",
        PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests" / "support")]),
    )
    env.update({f"ORDERFLOW_{k.upper()}": str(v) for k, v in settings.items()})
    return env


def cli(
    nats_url: str | None, *args: str, timeout: float = 60.0, **settings: str
) -> subprocess.CompletedProcess[str]:
    """`orderflow ARGS` as a user runs it, against `nats_url` (ORDERFLOW_NATS_URL; None: as
    ARGS say, else the default), with this environment's ORDERFLOW_* replaced by `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERFLOW_")}
    env.update({f"ORDERFLOW_{k.upper()}": v for k, v in settings.items()})
    if nats_url is not None:
        env["ORDERFLOW_NATS_URL"] = nats_url
    return subprocess.run(
        [sys.executable, "-m", "orderflow_tools.cli", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


# --- JetStream views for assertions ----------------------------------------------------------
async def publish_orders(
    url: str,
    count: int,
    prefix: str = "o",
    username: str = "m",
    task_type: str = "default",
    keyed: bool = False,
) -> list[str]:
    """Publish valid orders straight to the stream (as the ingest would), ids prefix-0..N; `keyed`
    as the ingest stores an order with an Idempotency-Key (its worker reads its status first)."""
    from orderflow import contract

    ids = [f"{prefix}-{i}" for i in range(count)]
    async with connect(url) as nc:
        js = nc.jetstream()
        futures = [
            await js.publish_async(
                contract.order_subject(task_type, order_id),
                contract.encode(contract.Order(order_id, 1, 1, username, time.time())),
                headers={contract.H_MSG_ID: order_id, **({contract.H_STATUS_CHECK: "1"} if keyed else {})},
            )
            for order_id in ids
        ]
        await asyncio.gather(*futures)
    return ids


async def read_stream(url: str, stream: str, missing_ok: bool = True) -> list[Any]:
    """Every message of a stream, in order (small streams only); a stream that does not exist
    reads as empty, or raises unless `missing_ok`."""
    async with connect(url) as nc:
        js = nc.jetstream()
        try:
            info = await js.stream_info(stream)
        except Exception:
            if missing_ok:
                return []
            raise
        msgs = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            try:
                msgs.append(await js.get_msg(stream, seq))
            except Exception:  # taken by a worker meanwhile (work-queue retention)
                continue
        return msgs


async def run_records(url: str) -> dict[str, list[Any]]:
    """ORDER_RUNS as {order_id: [RunRecord, ...]} in append order."""
    from orderflow import contract

    out: dict[str, list[Any]] = {}
    for msg in await read_stream(url, contract.RUNS_STREAM):
        rec = contract.decode_run(msg.data)
        out.setdefault(rec.order_id, []).append(rec)
    return out


async def statuses(url: str) -> dict[str, Any]:
    from orderflow import contract

    # The keys come from the stream's subjects, not kv.keys(): nats-py's keys() watcher can miss a
    # key that is being rewritten and then raise NoKeysError (seen: 2 of 200 calls while one key
    # was updated every 10 ms), which read as "no status" here.
    prefix = contract.STATUS_SUBJECT_PREFIX
    async with connect(url) as nc:
        js = nc.jetstream()
        try:
            info = await js.stream_info("KV_" + contract.STATUS_BUCKET, subjects_filter=prefix + ">")
            kv = await js.key_value(contract.STATUS_BUCKET)
        except Exception:
            return {}
        out = {}
        for subject in info.state.subjects or {}:
            key = subject[len(prefix) :]
            try:
                entry = await kv.get(key)
            except KeyNotFoundError:  # deleted since
                continue
            if entry.value:
                out[key] = contract.decode_status(entry.value)
        return out


async def consumer_info(url: str, name: str = "workers") -> Any:
    from orderflow import contract

    async with connect(url) as nc:
        return await nc.jetstream().consumer_info(contract.STREAM, name)


def count_events(records: dict[str, list[Any]], event: str) -> dict[str, int]:
    return {k: sum(1 for r in v if r.event == event) for k, v in records.items()}


def events_per_order(url: str, event: str) -> dict[str, int]:
    """How many `event` run records (start, done, error, ...) each order has in ORDER_RUNS now."""
    return count_events(run(run_records(url)), event)


async def kv_value(url: str, bucket: str, key: str) -> bytes | None:
    """What a KV bucket holds for `key` now; None where it holds nothing (never written, deleted)."""
    async with connect(url) as nc:
        kv = await nc.jetstream().key_value(bucket)
        try:
            entry = await kv.get(key)
        except KeyNotFoundError:
            return None
        return entry.value or None


async def kv_put(url: str, bucket: str, key: str, value: bytes) -> None:
    """Write a KV entry as another party would (a worker, an ingest, an operator)."""
    async with connect(url) as nc:
        kv = await nc.jetstream().key_value(bucket)
        await kv.put(key, value)


def status_of(url: str, order_id: str) -> StatusRecord | None:
    """One order's status record, or None."""
    from orderflow import contract

    value = run(kv_value(url, contract.STATUS_BUCKET, order_id))
    return contract.decode_status(value) if value else None


def records_of(url: str, order_id: str) -> list[RunRecord]:
    """One order's run records in append order."""
    found: list[RunRecord] = run(run_records(url)).get(order_id, [])
    return found
