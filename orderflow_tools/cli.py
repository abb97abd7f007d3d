"""The `orderflow` command: dev, ingest, worker, status, cancel, load, report, chaos."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from orderflow.config import ConfigError, Settings, load_settings
from orderflow_tools import dev

# nats-py: max_reconnect_attempts=0 means "no limit" while it picks a server (_select_next_server
# only drops a server after more than N attempts when N > 0), so 0 would retry an unreachable
# server forever; 1 gives up after a second attempt with NoServersError.
CONNECT_ATTEMPTS = 1

# nats-py (aiohttp below it), the services and the tools' heavier modules are imported where they
# are used: `orderflow --help` and a typo answer without loading them.


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings("cli")
    if getattr(args, "nats_url", None):
        from dataclasses import replace

        settings = replace(settings, nats_urls=tuple(args.nats_url.split(",")))
    return settings


def _run_service(module: str) -> int:
    if module == "ingest":
        from ingest.__main__ import main
    else:
        from worker.__main__ import main
    return main()


async def _status(settings: Settings, order_id: str | None) -> int:
    from nats.js.errors import KeyNotFoundError, NotFoundError

    from orderflow import broker, contract

    nc = await broker.connect(settings, "orderflow-cli", max_reconnect_attempts=CONNECT_ATTEMPTS)
    try:
        js = nc.jetstream(timeout=5)
        if order_id:
            kv = await js.key_value(contract.STATUS_BUCKET)
            try:
                entry = await kv.get(order_id)
            except KeyNotFoundError:
                print(f"order {order_id}: not found", file=sys.stderr)
                return 1
            print(json.dumps(json.loads(entry.value or b"{}"), indent=2))
            return 0
        for name in (contract.STREAM, contract.DLQ_STREAM):
            try:
                info = await js.stream_info(name)
                print(f"stream {name:<11} messages {info.state.messages:>8}")
            except NotFoundError:
                print(f"stream {name:<11} (missing)")
        for c in await js.consumers_info(contract.STREAM):
            print(
                f"consumer {c.name:<9} pending {c.num_pending or 0:>8}  ack-pending {c.num_ack_pending or 0:>6}"
                f"  redelivered {c.num_redelivered or 0:>6}  ack_wait {c.config.ack_wait:g}s"
            )
        return 0
    finally:
        await nc.close()


async def _cancel(settings: Settings, order_id: str, timeout_s: float) -> int:
    import nats.errors
    from nats.js.errors import KeyNotFoundError

    from orderflow import broker, contract

    nc = await broker.connect(settings, "orderflow-cli", max_reconnect_attempts=CONNECT_ATTEMPTS)
    try:
        js = nc.jetstream(timeout=5)
        kv = await js.key_value(contract.STATUS_BUCKET)
        try:
            current = contract.decode_status((await kv.get(order_id)).value or b"{}")
        except KeyNotFoundError:
            current = None
        if current is not None and current.status in contract.FINAL_STATUSES:
            print(f"order {order_id} is already {current.status}; nothing to cancel", file=sys.stderr)
            return 1
        try:
            reply = await nc.request(contract.CONTROL_CANCEL, order_id.encode(), timeout=timeout_s)
            print(f"order {order_id}: {reply.data.decode()}")
            return 0
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
            pass
        # Not running anywhere: mark it so that whichever worker receives it terms it unrun.
        record = contract.StatusRecord(
            order_id,
            "cancelled",
            current.attempts if current else 0,
            time.time(),
            error="cancelled before it ran",
        )
        await kv.put(order_id, contract.encode(record))
        print(f"order {order_id}: not running; marked cancelled, it will not run")
        return 0
    finally:
        await nc.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orderflow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    dev.add_parser(sub)
    sub.add_parser("ingest", help="run the ingest service (settings from ORDERFLOW_*)").set_defaults(
        func=lambda a: _run_service("ingest")
    )
    sub.add_parser("worker", help="run a worker process (settings from ORDERFLOW_*)").set_defaults(
        func=lambda a: _run_service("worker")
    )
    st = sub.add_parser("status", help="queue overview, or one order's status")
    st.add_argument("order_id", nargs="?")
    st.add_argument("--nats-url", help="overrides ORDERFLOW_NATS_URL")
    st.set_defaults(func=lambda a: asyncio.run(_status(_settings(a), a.order_id)))
    ca = sub.add_parser("cancel", help="stop one order wherever it runs, or keep it from running")
    ca.add_argument("order_id")
    ca.add_argument("--nats-url", help="overrides ORDERFLOW_NATS_URL")
    ca.add_argument("--timeout-s", type=float, default=2.0, help="how long to wait for the worker's answer")
    ca.set_defaults(func=lambda a: asyncio.run(_cancel(_settings(a), a.order_id, a.timeout_s)))
    from orderflow_tools import chaos, loadrun, report

    loadrun.add_parser(sub)
    report.add_parser(sub)
    chaos.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import nats.errors

    try:
        code: int = args.func(args)
    except ConfigError as exc:
        print(f"orderflow: {exc}", file=sys.stderr)
        return 2
    except (OSError, nats.errors.Error) as exc:
        print(f"orderflow: cannot reach NATS: {exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
