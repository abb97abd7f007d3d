"""The console's rates and recent-orders list from the last run events (orderflow_tools/console/
recent.py), in process on recorded RunRecords: bounded by what it is given, never a scan; the time range's reads and the
/recent page's checks against a real nats-server, the console's app in process."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from pathlib import Path

import httpx
import pytest
from harness import NatsServer, connect

from orderflow import auth, contract
from orderflow.auth import KeyFile
from orderflow.contract import RunRecord
from orderflow.envsettings import load_settings
from orderflow.natsmux import Requester
from orderflow_tools import cli, recentcli
from orderflow_tools.console import recent
from orderflow_tools.console.app import Console, build
from orderflow_tools.natsconn import Session


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


def test_a_query_is_checked_before_anything_is_read() -> None:
    q = recent.parse_query(
        {"status": "done", "type": "invoice", "since": "2026-12-06T04:00:00Z", "page": "2"}
    )
    assert (q.status, q.task_type, q.page, q.range.until) == ("done", "invoice", 2, None)
    assert q.range.since == dt.datetime(2026, 12, 6, 4, tzinfo=dt.UTC).timestamp()
    # No zone is UTC; an offset is honoured.
    assert (
        recent.parse_range("2026-12-06T05:00:00").since
        == recent.parse_range("2026-12-06T06:00:00+01:00").since
    )
    bad = {
        "status": "lost",
        "type": "no such",
        "page": "-1",
        "since": "yesterday",
        "until": "2026-13-01",
        "before": "12a",
    }
    for name, value in bad.items():
        with pytest.raises(recent.QueryError):
            recent.parse_query({name: value})
    with pytest.raises(recent.QueryError, match="page"):
        recent.parse_query({"page": str(recent.RECENT_RUNS)})
    with pytest.raises(recent.QueryError, match="until must be later than since"):
        recent.parse_query({"since": "2026-12-06T04:00:00Z", "until": "2026-12-06T04:00:00Z"})
    with pytest.raises(recent.QueryError, match="since must be a time"):
        recent.parse_query({"since": "2" * 41})
    with pytest.raises(recent.QueryError, match="before"):
        recent.parse_query({"before": "9" * 20})


@pytest.mark.procs
def test_a_time_range_reads_only_its_own_run_events_newest_first_in_bounded_views(
    nats_server: NatsServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Three batches of run events stored apart in time (ORDER_RUNS' own timestamps): a range
    around the middle one reads its events and no other; with a view smaller than the range the
    newest come first and `older` is where the next view starts, until the range is read. Through
    the console's app (in process, on the same NATS): the range's orders listed, a bad range a 400;
    and `orderflow recent`'s listing of the same range."""
    keys = tmp_path / "keys.json"
    key = auth.new_key()
    keys.write_text(json.dumps({"keys": [auth.entry("viewer", [auth.READ], key)]}))

    async def scenario() -> None:
        async with connect(nats_server.url) as nc:
            js = nc.jetstream()
            await js.add_stream(name=contract.RUNS_STREAM, subjects=[contract.RUNS_PREFIX + ">"])
            marks = []
            for batch in "abc":
                marks.append(time.time())
                for i in range(5):
                    record = contract.RunRecord(
                        f"{batch}{i}", "done", "w-1", 1, time.time(), task_type="invoice"
                    )
                    await js.publish(contract.RUNS_PREFIX + record.order_id, contract.encode(record))
                await asyncio.sleep(0.05)
            marks.append(time.time())
            requests = await Requester(nc, 5.0).start()
            s = Session(nc, js, requests, nats_server.url)
            middle = recent.Range(marks[1], marks[2])
            whole = await recent.runs_between(s, middle)
            assert [r.order_id for r in whole.records] == [f"b{i}" for i in range(5)] and whole.older is None
            first = await recent.runs_between(s, middle, limit=3)
            assert [r.order_id for r in first.records] == ["b2", "b3", "b4"] and first.older is not None
            rest = await recent.runs_between(s, recent.Range(marks[1], marks[2], first.older), limit=3)
            assert [r.order_id for r in rest.records] == ["b0", "b1"] and rest.older is None
            since_c = await recent.runs_between(s, recent.Range(marks[2]))
            assert [r.order_id for r in since_c.records] == [f"c{i}" for i in range(5)]
            assert (await recent.runs_between(s, recent.Range(marks[3] + 60))).records == []

            settings = load_settings("cli", {"ORDERFLOW_NATS_URL": nats_server.url})
            console = Console(settings, KeyFile(str(keys), 60.0), secure_cookie=False)
            console.s = s
            transport = httpx.ASGITransport(app=build(console))
            async with httpx.AsyncClient(
                transport=transport, base_url="http://console", headers={"Authorization": f"Bearer {key}"}
            ) as h:
                iso = [dt.datetime.fromtimestamp(m, dt.UTC).isoformat() for m in marks]
                page = await h.get("/recent", params={"since": iso[1], "until": iso[2], "status": "done"})
                assert page.status_code == 200
                assert [f"/orders/{o}" in page.text for o in ("a4", "b0", "b4", "c0")] == [
                    False,
                    True,
                    True,
                    False,
                ]
                bad = await h.get("/recent", params={"since": iso[2], "until": iso[1]})
                assert bad.status_code == 400 and "until must be later than since" in bad.text
            # The CLI's `orderflow recent`: the same orders, and where the older events are.
            assert await recentcli.show(s, recent.parse_query({"since": iso[1], "until": iso[2]})) == 0
            shown, said = capsys.readouterr()
            assert [line.split()[0] for line in shown.splitlines()] == [f"b{i}" for i in range(4, -1, -1)]
            assert "older" not in said
            await requests.stop()

    asyncio.run(scenario())


def test_orderflow_recent_refuses_a_bad_range_before_connecting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ORDERFLOW_NATS_URL", "nats://127.0.0.1:1")  # nothing there: never reached
    argv = ["recent", "--since", "2026-12-06T05:00Z", "--until", "2026-12-06T04:00Z"]
    assert cli.main(argv) == 2
    assert "until must be later than since" in capsys.readouterr().err
