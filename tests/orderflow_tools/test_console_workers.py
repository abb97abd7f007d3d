"""The console's workers table from ORDER_WORKERS records (orderflow_tools/console/data.py), in
process: a record of an older worker (started_at only) shows "?" for what it does not say."""

from __future__ import annotations

from dataclasses import asdict

from orderflow_tools.console.app import _env
from orderflow_tools.console.data import worker_row


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
