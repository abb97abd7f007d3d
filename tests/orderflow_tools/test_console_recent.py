"""The console's rates and recent-orders list from the last run events (orderflow_tools/console/
recent.py), in process on recorded RunRecords: bounded by what it is given, never a scan."""

from __future__ import annotations

from orderflow.contract import RunRecord
from orderflow_tools.console import recent


def rec(order_id: str, event: str, at: float, task_type: str | None = "invoice") -> RunRecord:
    return RunRecord(order_id, event, "w-1", 1, at, task_type=task_type)


def test_rates_count_done_and_failed_per_type_over_the_span_of_the_events() -> None:
    records = [
        rec("a", "start", 100.0),
        rec("a", "done", 101.0),
        rec("b", "error", 102.0),
        rec("c", "done", 103.0, "report"),
        rec("d", "done", 104.0, None),  # an older worker's record: no type
    ]
    rates = {r.task_type: r for r in recent.rates(records, now=110.0)}
    assert set(rates) == {"invoice", "report", "?"}
    assert rates["invoice"].window_s == 10.0
    assert (rates["invoice"].done_per_s, rates["invoice"].failed_per_s) == (0.1, 0.1)
    assert (rates["report"].done_per_s, rates["?"].done_per_s) == (0.1, 0.1)
    assert recent.rates([]) == []


def test_orders_by_latest_event_filtered_and_paged() -> None:
    records = [rec(f"o{i}", "start", float(i)) for i in range(120)]
    records += [rec(f"o{i}", "done", 200.0 + i) for i in range(0, 120, 2)]  # the even ones finished
    records.append(rec("x", "error", 500.0, "report"))
    first, more = recent.orders(records, status="running")
    assert more and len(first) == recent.PAGE
    assert all(o.status == "running" and int(o.order_id[1:]) % 2 == 1 for o in first)
    assert first[0].order_id == "o119"  # newest first
    second, more2 = recent.orders(records, status="running", page=1)
    assert not more2 and len(second) == 60 - recent.PAGE
    assert {o.order_id for o in first + second} == {f"o{i}" for i in range(1, 120, 2)}
    failed, _ = recent.orders(records, status="failed")
    assert [(o.order_id, o.task_type) for o in failed] == [("x", "report")]
    assert recent.orders(records, task_type="report")[0] == failed
    assert recent.orders(records, page=99) == ([], False)
