"""`python -m ingest`: the ingest service, configured from ORDERFLOW_* (see orderflow/config.py)."""

from __future__ import annotations

import asyncio
import sys

from orderflow import httpserver
from orderflow.envsettings import service_settings
from orderflow.lifecycle import setup_logging

ABOUT = "The ingest: takes orders over HTTP and stores each in NATS JetStream before answering 200."


def main(argv: list[str] | None = None) -> int:
    settings = service_settings("ingest", argv, ABOUT)
    if isinstance(settings, int):
        return settings  # --help, an argument, or a bad setting: nothing to start
    setup_logging(settings.log_level, settings.log_format)
    if settings.ingest_processes > 1:
        from ingest.multiproc import run_processes

        return run_processes(settings)
    from ingest.server import serve

    httpserver.new_event_loop_policy()
    return asyncio.run(serve(settings))


if __name__ == "__main__":
    sys.exit(main())
