"""A handler's result: stored with `done` in the same write, or the run fails saying why. And the
order's books of runs: how many runs, the first and the last start, beside the failed attempts."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest
from standin import FakeMsg
from test_pipeline import Rig

from orderflow import contract
from worker.handlers import Job


def run_once(handler: Any, record: contract.StatusRecord | None = None, delivered: int = 1) -> Rig:
    async def main() -> Rig:
        rig = Rig(handler)
        if record is not None:
            rig.t.records["o-1"] = record
        rig.pool.start(FakeMsg("o-1", delivered=delivered))
        await rig.until_idle()
        return rig

    return asyncio.run(main())


def test_a_returned_value_is_stored_with_done_in_the_one_write() -> None:
    async def handler(job: Job) -> dict[str, Any]:
        return {"invoice": "INV-7", "lines": [1, 2]}

    rig = run_once(handler)
    assert rig.t.ops() == ["put:done", "ack"]  # no write of its own
    record = rig.t.records["o-1"]
    assert msgspec.json.decode(record.result) == {"invoice": "INV-7", "lines": [1, 2]}
    assert (record.runs, record.attempts) == (1, 0)
    assert record.first_started_at == record.started_at is not None


def test_a_handler_returning_nothing_stores_no_result_field() -> None:
    async def handler(job: Job) -> None:
        return None

    rig = run_once(handler)
    assert b"result" not in contract.encode(rig.t.records["o-1"])


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"f": object()}, "not JSON-serialisable"),
        ("x" * (contract.MAX_RESULT_BYTES + 1), "over 65536"),
    ],
)
def test_a_result_that_cannot_be_stored_is_a_failed_attempt_that_says_why(value: Any, message: str) -> None:
    async def handler(job: Job) -> Any:
        return value

    rig = run_once(handler)
    record = rig.t.records["o-1"]
    assert (record.status, record.attempts, record.runs) == ("queued", 1, 1)
    assert record.error is not None and record.error.startswith("ResultError") and message in record.error
    assert len(record.result) == 0
    assert rig.t.ops()[-1] == "nak"


def test_a_later_run_keeps_the_first_start_and_counts_every_run() -> None:
    async def handler(job: Job) -> int:
        return 42

    earlier = contract.StatusRecord(
        "o-1",
        "queued",
        attempts=1,
        handbacks=1,
        runs=2,
        first_started_at=1000.0,
        started_at=1005.0,
        run_s=3.0,
    )
    rig = run_once(handler, earlier, delivered=3)
    record = rig.t.records["o-1"]
    assert (record.status, record.attempts, record.runs, record.first_started_at) == ("done", 1, 3, 1000.0)
    assert record.started_at is not None and record.started_at > 1005.0
    assert record.run_s >= 3.0
    assert msgspec.json.decode(record.result) == 42
