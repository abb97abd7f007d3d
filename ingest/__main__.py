"""`python -m ingest`: the ingest service, configured from ORDERFLOW_* (see orderflow/config.py)."""

from __future__ import annotations

import asyncio
import sys

from orderflow import httpserver
from orderflow.envsettings import ConfigError, command_line, load_settings
from orderflow.lifecycle import setup_logging

ABOUT = "The ingest: takes orders over HTTP and stores each in NATS JetStream before answering 200."


def main(argv: list[str] | None = None) -> int:
    handled = command_line("ingest", sys.argv[1:] if argv is None else argv, ABOUT)
    if handled is not None:
        return handled
    try:
        settings = load_settings("ingest")
    except ConfigError as exc:
        print(f"ingest: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, settings.log_format)
    if settings.ingest_processes > 1:
        from ingest.multiproc import run_processes

        return run_processes(settings)
    from ingest.server import serve

    httpserver.new_event_loop_policy()
    return asyncio.run(serve(settings))


if __name__ == "__main__":
    sys.exit(main())
