"""The `orderflow` command: dev, ingest, worker, status, cancel, pause, resume, console, recent, consumers, dlq, keys,
load, report, chaos."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace

from orderflow.config import Settings
from orderflow.envsettings import ConfigError, load_settings
from orderflow_tools import dev
from orderflow_tools.natsconn import Refused, Unreachable, url_of

# nats-py (aiohttp below it), the services and the tools' heavier modules are imported where they
# are used: `orderflow --help` and a typo answer without loading them.


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings("cli")
    if getattr(args, "nats_url", None):
        settings = replace(settings, nats_urls=tuple(args.nats_url.split(",")))
    args.resolved_settings = settings  # for the error messages of main()
    return settings


def _run_service(module: str) -> int:
    if module == "ingest":
        from ingest.__main__ import main
    else:
        from worker.__main__ import main
    return main()


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
    from orderflow_tools import (
        chaos,
        console,
        consumers,
        dlq,
        keys,
        loadrun,
        orders,
        pauses,
        recentcli,
        report,
    )

    orders.add_parsers(sub, _settings)
    consumers.add_parser(sub, _settings)
    dlq.add_parser(sub, _settings)
    keys.add_parser(sub)
    pauses.add_parsers(sub, _settings)
    console.add_parser(sub, _settings)
    recentcli.add_parser(sub, _settings)
    loadrun.add_parser(sub)
    report.add_parser(sub)
    chaos.add_parser(sub)
    return parser


def _quiet_stdout() -> None:
    """The reader went away (`orderflow dlq list | head`): stop writing, and let the flush at exit
    go nowhere instead of printing a second BrokenPipeError."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import nats.errors

    from orderflow import natsauth, natsmux

    try:
        code: int = args.func(args)
    except ConfigError as exc:
        print(f"orderflow: {exc}", file=sys.stderr)
        return 2
    except Refused as exc:  # a wrong CA, an unknown or revoked user: fix the settings
        print(f"orderflow: {exc}", file=sys.stderr)
        return 2
    except Unreachable as exc:
        print(f"orderflow: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        _quiet_stdout()
        return 1
    except (nats.errors.Error, natsmux.RequestTimeout, natsmux.ConnectionLost, natsmux.JetStreamError) as exc:
        settings = getattr(args, "resolved_settings", None)
        where = f" at {url_of(settings)}" if settings is not None else ""
        print(f"orderflow: NATS{where} failed the request: {natsauth.redact(repr(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
