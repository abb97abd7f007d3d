"""The order's trace context rides on everything the order becomes (issue #23): a scheduled retry,
a DLQ copy and its replay keep `traceparent`/`tracestate`, so every later run joins the same
trace. The settler against the stand-in transport; the replay's headers as `orderflow dlq replay`
writes them."""

from __future__ import annotations

import asyncio

from standin import FakeMsg, StandInTransport, limits, settings

from orderflow import contract
from orderflow_tools.dlq import Dead, replay_headers
from worker.delivery import Books, Delivery, Kind, Outcome
from worker.outcome import Settler
from worker.transport import Meta

TRACE = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "tracestate": "v=1"}


def settled(kind: Kind, failed: int, callback: bool = False, **env: object) -> dict[str, str]:
    t = StandInTransport()
    s = Settler(t, "me", limits(settings(**env), reschedule_after_s=1.0), 22.5, True)
    msg = FakeMsg("o-1", headers={contract.H_MSG_ID: "o-1", **TRACE})
    d = Delivery(msg, Meta(msg.reply), "default")
    d.order_id = "o-1"
    d.books = Books(failed=failed)
    if callback:
        d.callback_url = "https://hooks.example.com/h"
    asyncio.run(s.settle(d, Outcome(kind, "boom")))
    [(_, _, headers)] = t.published
    return headers


def test_a_scheduled_retry_keeps_the_trace_context() -> None:
    headers = settled(Kind.RETRY, 6, MAX_DELIVER=20, RETRY_BASE_S=60, RETRY_MAX_S=3600)
    assert headers[contract.H_SCHEDULE].startswith("@at ")
    assert {k: headers[k] for k in TRACE} == TRACE


def test_a_dlq_copy_and_its_replay_keep_the_trace_context() -> None:
    headers = settled(Kind.TIMEOUT, 4)
    assert headers[contract.H_REASON] == "attempts"
    assert {k: headers[k] for k in TRACE} == TRACE
    replay = replay_headers(Dead(7, "dlq.orders.default.o-1", 0.0, headers, b"{}"))
    assert {k: replay[k] for k in TRACE} == TRACE


def test_the_callback_job_of_a_final_order_joins_its_trace() -> None:
    headers = settled(Kind.DONE, 0, callback=True)
    assert headers[contract.H_CALLBACK_FOR] == "o-1"
    assert {k: headers[k] for k in TRACE} == TRACE
