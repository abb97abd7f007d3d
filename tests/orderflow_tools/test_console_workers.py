"""The console's workers table from ORDER_WORKERS records (orderflow_tools/console/data.py), in
process: a record of an older worker (started_at only) shows "?" for what it does not say; the
live overview's cache of them against a real nats-server."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict

import pytest
from harness import NatsServer, connect

from orderflow import contract
from orderflow.natsmux import Requester
from orderflow_tools.console.app import _env
from orderflow_tools.console.data import WorkersCache, worker_row
from orderflow_tools.natsconn import Session


def _table(rows: list[dict[str, object]]) -> str:
    html = _env.get_template("overview.html").render(
        who=None, can_act=False, csrf="", o={"types": [], "workers": rows, "at": 0}
    )
    return html.split('<table id="workers">', 1)[1].split("</table>", 1)[0]


def test_a_new_record_fills_the_row_and_an_old_one_shows_question_marks() -> None:
    new = worker_row(
        "w-new",
        5.0,
        1,
        {"started_at": 1.0, "slots_busy": 2, "slots_total": 4, "draining": True, "deletion_cost": 300},
    )
    old = worker_row("w-old", 9.0, 0, {"started_at": 0.5})
    assert (new.slots_busy, new.slots_total, new.draining, new.deletion_cost) == (2, 4, True, 300)
    assert (old.slots_busy, old.slots_total, old.draining, old.deletion_cost) == (None, None, None, None)
    html = _table([asdict(old), asdict(new)])
    old_row, new_row = html.split("<tr><td>w-old</td>", 1)[1].split("<tr><td>w-new</td>")
    assert '<td class="slots">?/?</td>' in old_row and '<td class="draining">?</td>' in old_row
    assert '<td class="cost">?</td>' in old_row
    assert '<td class="slots">2/4</td>' in new_row and '<td class="draining">yes</td>' in new_row
    assert '<td class="cost">300</td>' in new_row


def test_a_field_of_the_wrong_type_is_unknown_not_trusted() -> None:
    row = worker_row(
        "w",
        1.0,
        0,
        {"started_at": 1.0, "slots_busy": "2", "slots_total": True, "draining": "no", "deletion_cost": 1.5},
    )
    assert (row.slots_busy, row.slots_total, row.draining, row.deletion_cost) == (None, None, None, None)


@pytest.mark.procs
def test_the_live_overview_reads_the_workers_at_most_every_few_seconds(nats_server: NatsServer) -> None:
    """WorkersCache on a real ORDER_WORKERS bucket: within its interval a second update reads
    nothing (a worker that appeared meanwhile is not there yet) while the ages still move; after it,
    the new worker shows, oldest first."""

    async def scenario() -> None:
        async with connect(nats_server.url) as nc:
            js = nc.jetstream()
            kv = await js.create_key_value(bucket=contract.WORKERS_BUCKET, history=1)
            now = time.time()
            await kv.put("w-old", json.dumps({"started_at": now - 60}).encode())
            s = Session(nc, js, await Requester(nc, 5.0).start(), nats_server.url)
            cache = WorkersCache(every_s=0.5)
            first = await cache.rows(s)
            await kv.put("w-new", json.dumps({"started_at": now - 10}).encode())
            await asyncio.sleep(0.1)
            second = await cache.rows(s)
            assert [w.pod for w in first] == [w.pod for w in second] == ["w-old"]
            assert second[0].age_s > first[0].age_s
            await asyncio.sleep(0.5)
            assert [(w.pod, w.priority_rank) for w in await cache.rows(s)] == [("w-old", 0), ("w-new", 1)]
            await s.requests.stop()

    asyncio.run(scenario())
