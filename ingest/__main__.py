"""`python -m ingest`: the ingest service, configured from ORDERFLOW_* (see orderflow/config.py)."""

from __future__ import annotations

import sys

from orderflow import httpserver
from orderflow.envsettings import start_service

ABOUT = "The ingest: takes orders over HTTP and stores each in NATS JetStream before answering 200."


def main(argv: list[str] | None = None) -> int:
    settings = start_service("ingest", argv, ABOUT)
    if isinstance(settings, int):
        return settings  # --help, an argument, or a bad setting: nothing to start
    if settings.ingest_processes > 1:
        from ingest.multiproc import run_processes

        return run_processes(settings)
    from ingest.server import serve

    return httpserver.run_service(serve(settings))


if __name__ == "__main__":
    sys.exit(main())
