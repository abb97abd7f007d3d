"""Direct mode, the seed's part 1: do the work inline and answer 500 above the box's capacity
(`ORDERFLOW_RATE_LIMIT_RPS`). Kept apart from the queued hot path; it needs no NATS."""

from __future__ import annotations

import asyncio
import random
import time

from ingest import responses
from ingest.state import IngestState
from orderflow import contract


class TokenBucket:
    """`rate` per second with a one-second burst, like the seed's 50 RPS box."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tokens = rate
        self.last = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.rate, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class DirectOrders:
    def __init__(self, state: IngestState) -> None:
        self._capacity = TokenBucket(state.settings.rate_limit_rps)
        self._work = state.settings.work_s
        self._work_done = state.metrics.work_done

    async def __call__(
        self, order: contract.Order | contract.TypedOrder, task_type: str, keyed: bool, client: str | None
    ) -> tuple[int, bytes]:
        # Inline work keeps no records: an Idempotency-Key only names the order id here.
        if not self._capacity.take():
            self._work_done.labels("error").inc()
            return 500, responses.KAPUT
        await asyncio.sleep(random.uniform(self._work.min_s, self._work.max_s))
        self._work_done.labels("done").inc()
        return 200, responses.created(order.order_id)
