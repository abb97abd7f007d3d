"""`python -m worker`: a worker process, configured from ORDERFLOW_* (see orderflow/config.py)."""

from __future__ import annotations

import asyncio
import sys

from orderflow import httpserver
from orderflow.envsettings import service_settings
from orderflow.lifecycle import setup_logging

ABOUT = "A worker: pulls orders from NATS JetStream, runs them in bounded pools, drains on SIGTERM."


def main(argv: list[str] | None = None) -> int:
    settings = service_settings("worker", argv, ABOUT)
    if isinstance(settings, int):
        return settings  # --help, an argument, or a bad setting: nothing to start
    setup_logging(settings.log_level, settings.log_format)
    from worker.service import WorkerService

    async def run() -> int:
        try:
            service = WorkerService(settings)
        except (ImportError, ValueError) as exc:
            print(f"worker: {exc}", file=sys.stderr)
            return 2
        return await service.run()

    httpserver.new_event_loop_policy()
    return asyncio.run(run())


if __name__ == "__main__":
    sys.exit(main())
