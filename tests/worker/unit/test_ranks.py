"""A worker's rank entry on its way out (worker/ranks.py). In process: JetStream is a stand-in."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, cast

import pytest
from nats.js import JetStreamContext
from nats.js.kv import KeyValue
from standin import settings

from orderflow import contract
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


def entry(key: str, started_at: float | None = None) -> KeyValue.Entry:
    """What the KV watch delivers: a put with the worker's start time, or its delete."""
    if started_at is None:
        return KeyValue.Entry(contract.WORKERS_BUCKET, key, None, 2, None, None, "DEL")
    value = json.dumps({"started_at": started_at}).encode()
    return KeyValue.Entry(contract.WORKERS_BUCKET, key, value, 1, None, None, None)


def test_a_rank_change_says_who_left_and_why_never_that_nobody_is_alive(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue #27: the log said "pull priority 1 -> 0 (0 other workers alive)" while the older worker
    still ran (draining: it left the ranks at SIGTERM, its jobs go on).
    1. Worker w-b sees w-a, older: rank 1.
    2. w-a deletes its entry (its drain began): rank 0, and the line says w-a left, draining or
       stopped, and counts the workers that fetch.
    3. w-c, older still, comes and is then not heard of for the TTL: the line says so."""
    ranks: list[int] = []
    r = Ranks("w-b", refresh_s=2, ttl_s=60.0, on_change=ranks.append)
    r._seen_entry(entry("w-a", r.started_at - 10))
    r._seen_entry(None)  # the entries already there are in
    assert ranks == [1]
    with caplog.at_level(logging.INFO, logger="worker.ranks"):
        r._seen_entry(entry("w-a"))
        assert ranks == [1, 0]
        assert "pull priority 1 -> 0: 0 other workers fetching (w-a left: draining or stopped)" in caplog.text
        r._seen_entry(entry("w-c", r.started_at - 20))
        r.ttl_s = 0.05
        time.sleep(0.1)
        r._update()
    assert ranks == [1, 0, 1, 0]
    assert "pull priority 1 -> 0: 0 other workers fetching (w-c not heard of for 0.05s)" in caplog.text
    assert "alive" not in caplog.text


class RecordingKV:
    """A stand-in KV bucket: keeps each put; its watch fails (the loop retries it, not our concern)."""

    def __init__(self, ranks: list[Ranks]) -> None:
        self.puts: list[dict[str, Any]] = []
        self._ranks = ranks

    async def put(self, key: str, value: bytes) -> int:
        self.puts.append(json.loads(value))
        if len(self.puts) == 2:
            self._ranks[0]._left = True  # two refreshes are enough: stop the loop
        return len(self.puts)

    async def watchall(self) -> Any:
        raise RuntimeError("no watch in this stand-in")


class RecordingJetStream:
    def __init__(self, kv: RecordingKV) -> None:
        self.kv = kv

    async def key_value(self, bucket: str) -> Any:
        return self.kv


def test_each_refresh_writes_what_the_worker_knows_beside_started_at() -> None:
    """The record carries the facts as they are at each refresh (the console's workers table),
    and started_at, which the ranks read, stays as it was."""
    facts: list[dict[str, Any]] = [
        {"slots_busy": 1, "slots_total": 4, "draining": False, "deletion_cost": 7},
        {"slots_busy": 3, "slots_total": 4, "draining": False, "deletion_cost": None},
    ]
    slots = iter(facts)
    holder: list[Ranks] = []
    kv = RecordingKV(holder)
    ranks = Ranks("w-1", refresh_s=0.01, ttl_s=6, on_change=lambda rank: None, facts=lambda: next(slots))
    holder.append(ranks)
    asyncio.run(ranks.run(cast(JetStreamContext, RecordingJetStream(kv))))
    assert [p["slots_busy"] for p in kv.puts] == [1, 3]
    assert kv.puts[0]["deletion_cost"] == 7 and kv.puts[1]["deletion_cost"] is None
    assert all(p["started_at"] == ranks.started_at for p in kv.puts)


def test_a_worker_without_facts_writes_started_at_only() -> None:
    holder: list[Ranks] = []
    kv = RecordingKV(holder)
    ranks = Ranks("w-1", refresh_s=0.01, ttl_s=6, on_change=lambda rank: None)
    holder.append(ranks)
    asyncio.run(ranks.run(cast(JetStreamContext, RecordingJetStream(kv))))
    assert kv.puts[0] == {"started_at": ranks.started_at}
