"""A handler that does nothing: for benchmarks of the pool's own overhead (ORDERFLOW_HANDLERS=worker.noop)."""

from __future__ import annotations

from orderflow.config import Settings
from worker.handlers import Job, Registry


async def noop(job: Job) -> None:
    return None


def register(registry: Registry, settings: Settings) -> None:
    registry.fallback(noop)
