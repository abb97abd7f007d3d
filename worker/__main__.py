"""`python -m worker`: a worker process, configured from ORDERFLOW_* (see orderflow/config.py)."""

from __future__ import annotations

import sys

from orderflow import httpserver
from orderflow.envsettings import start_service

ABOUT = "A worker: pulls orders from NATS JetStream, runs them in bounded pools, drains on SIGTERM."


def main(argv: list[str] | None = None) -> int:
    settings = start_service("worker", argv, ABOUT)
    if isinstance(settings, int):
        return settings  # --help, an argument, or a bad setting: nothing to start
    from worker.service import WorkerService

    async def run() -> int:
        try:
            service = WorkerService(settings)
        except (ImportError, ValueError) as exc:
            print(f"worker: {exc}", file=sys.stderr)
            return 2
        return await service.run()

    return httpserver.run_service(run())


if __name__ == "__main__":
    sys.exit(main())
