"""Refusals are counted by reason and logged as one summary line per interval (issue #16 item 2),
against a real nats-server whose ORDERS stream is kept small (ORDERFLOW_STREAM_MAX_BYTES)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from harness import Service, http, wait_until

pytestmark = pytest.mark.procs

ORDER = b'{"product_id": "33", "count": "3", "username": "maksim.konovalov"}'


def test_a_full_stream_refuses_with_503_counted_by_reason_and_logged_once_per_interval(
    spawn: Callable[..., Service],
) -> None:
    """1. ORDERS holds 8 KiB (a few dozen orders), discard new; summaries every second;
    2. 400 orders from 8 clients: the first few dozen 200, the rest 503 + Retry-After;
    3. every 503 is counted under reason stream_full, every 200 is stored;
    4. the log has about one refusal line per second of the run, never one per refused order,
       and the summary names the count and the last reason."""
    svc = spawn("ingest", STREAM_MAX_BYTES=8192, REFUSAL_LOG_INTERVAL_S=1).wait_ready()
    started = time.monotonic()

    def post(_: int) -> tuple[int, str | None]:
        status, headers, _body = http("POST", svc.url + "/orders", ORDER)
        return status, headers.get("retry-after")

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(post, range(400)))
    elapsed_s = time.monotonic() - started
    statuses = Counter(s for s, _ in results)
    assert set(statuses) == {200, 503} and 10 < statuses[200] < 100, statuses
    assert all(retry == "1" for s, retry in results if s == 503)
    assert svc.metric('orderflow_orders_refused_total{reason="stream_full"}') == statuses[503]
    assert svc.metric("orderflow_orders_refused_total") == statuses[503]
    assert svc.metric('orderflow_orders_published_total{result="stored"}') == statuses[200]

    def refusal_lines() -> list[str]:
        return [line for line in svc.logs().splitlines() if "orders refused (503)" in line]

    # The interval running at the end is summed and logged by its timer.
    wait_until(lambda: "in the last 1s" in "".join(refusal_lines()[-1:]), 10, "the closing summary")
    lines = refusal_lines()
    assert 2 <= len(lines) <= elapsed_s + 3, lines
    assert "stream_full: maximum bytes exceeded" in lines[0]
    summed = sum(int(line.split(": ")[2].split(" in the last")[0]) for line in lines[1:])
    assert summed + 1 == statuses[503]  # the first is logged alone, the rest summed
    assert "JetStream refused order" not in svc.logs()
