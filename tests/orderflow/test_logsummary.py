"""orderflow/logsummary.py: per-request events become one log line per interval."""

from __future__ import annotations

import asyncio
import logging

import pytest

from orderflow.logsummary import SummaryLog


class StandInClock:
    """A stand-in for time.monotonic (named as such), moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_is_one_line_at_once_and_one_summary_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    clock = StandInClock()
    summary = SummaryLog(logging.getLogger("t"), "orders refused", 10.0, clock)
    with caplog.at_level(logging.WARNING, "t"):
        summary.note("stream_full")  # the first: at once
        for i in range(10_000):
            clock.now += 0.0005
            summary.note("stream_full" if i % 2 else "publish_timeout")
        assert len(caplog.records) == 1
        clock.now = 1010.0
        summary.flush()  # the interval's end (the loop's timer in the service)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "orders refused: stream_full (further ones are summed every 10s)",
        "orders refused: 10000 in the last 10s (last: stream_full)",
    ]


def test_after_a_quiet_interval_the_next_event_is_logged_at_once(caplog: pytest.LogCaptureFixture) -> None:
    clock = StandInClock()
    summary = SummaryLog(logging.getLogger("t"), "refused", 5.0, clock)
    with caplog.at_level(logging.WARNING, "t"):
        summary.note("a")
        summary.flush()  # nothing summed: no line
        clock.now += 6
        summary.note("b")
    assert [r.getMessage() for r in caplog.records] == [
        "refused: a (further ones are summed every 5s)",
        "refused: b (further ones are summed every 5s)",
    ]


def test_the_summary_is_written_by_a_timer_when_events_stop(caplog: pytest.LogCaptureFixture) -> None:
    async def burst() -> None:
        summary = SummaryLog(logging.getLogger("t"), "refused", 0.2)
        for _ in range(50):
            summary.note("nats_down")
        await asyncio.sleep(0.5)

    with caplog.at_level(logging.WARNING, "t"):
        asyncio.run(burst())
    assert [r.getMessage() for r in caplog.records][1:] == ["refused: 49 in the last 0.2s (last: nats_down)"]
