"""A worker's rank entry on its way out (worker/ranks.py). In process: JetStream is a stand-in."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

from nats.js import JetStreamContext
from standin import settings

from worker.ranks import Ranks
from worker.timing import Timing


class UnansweredJetStream:
    """A stand-in JetStream whose requests are never answered (NATS restarted under them)."""

    async def key_value(self, bucket: str) -> Any:
        await asyncio.sleep(3600)


def test_leaving_gives_up_after_its_bound_when_nats_does_not_answer() -> None:
    """1. A draining worker deletes its rank entry while NATS restarts: no answer comes.
    2. It gives up after Timing's rank_leave_s, inside the drain budget, not after JetStream's 5 s
       timeout per request (key_value, then delete)."""
    leave_s = Timing.derive(settings()).rank_leave_s
    ranks = Ranks("w-1", refresh_s=2, ttl_s=6, on_change=lambda rank: None, leave_s=leave_s)
    started = time.monotonic()
    asyncio.run(ranks.leave(cast(JetStreamContext, UnansweredJetStream())))
    assert leave_s <= time.monotonic() - started < leave_s + 2
