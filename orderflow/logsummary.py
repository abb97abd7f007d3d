"""One log line per interval for events that come per request (refusals, cut-off connections):
a burst of ten thousand refused orders is one WARNING with the count and the last reason, not ten
thousand lines. The first event after a quiet interval is logged at once, so the start of trouble
shows without delay; events inside the interval are summed and logged when it ends."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable


class SummaryLog:
    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._what = what
        self._interval_s = interval_s
        self._clock = clock
        self._next_at = float("-inf")  # the end of the current interval; -inf: none is running
        self._count = 0
        self._last = ""
        self._timer: asyncio.TimerHandle | None = None

    def note(self, reason: str) -> None:
        now = self._clock()
        if now >= self._next_at:
            # No interval running: this one at once, and the next ones are summed.
            self._log.warning(
                "%s: %s (further ones are summed every %gs)", self._what, reason, self._interval_s
            )
            self._next_at = now + self._interval_s
            return
        self._count += 1
        self._last = reason
        if self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # no loop (a unit test): flush() logs the sum
            self._timer = loop.call_later(self._next_at - now, self.flush)

    def flush(self) -> None:
        """Log what the current interval summed (the timer calls this at the interval's end)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._count:
            self._log.warning(
                "%s: %d in the last %gs (last: %s)", self._what, self._count, self._interval_s, self._last
            )
            self._count = 0
            # A steady stream keeps an interval running: one line per interval.
            self._next_at = self._clock() + self._interval_s
