"""The committed dashboards are generated from dashboards/ and query only metrics orderflow defines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dashboards import DASHBOARDS
from dashboards.names import defined_metric_names, panel_targets, referenced_metric_names, variable_queries

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "charts" / "orderflow" / "dashboards"


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((COMMITTED / name).read_text(encoding="utf-8"))
    return data


def test_committed_dashboards_are_up_to_date(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "dashboards", "--out", str(tmp_path)],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    generated = sorted(p.name for p in tmp_path.iterdir())
    assert generated == sorted(DASHBOARDS)
    for name in generated:
        committed = COMMITTED / name
        assert committed.is_file(), f"{committed} missing: run `python -m dashboards`"
        assert (tmp_path / name).read_text(encoding="utf-8") == committed.read_text(encoding="utf-8"), (
            f"{committed} is stale: run `python -m dashboards` and commit the result"
        )


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_every_panel_queries_only_metrics_defined_in_orderflow_metrics(name: str) -> None:
    defined = defined_metric_names()
    dashboard = _load(name)
    queries = [*panel_targets(dashboard), *variable_queries(dashboard)]
    assert queries, "a dashboard without queries"
    for title, expr in queries:
        used = referenced_metric_names(expr)
        assert used, f"{title}: no metric in {expr!r}"
        assert used <= defined, f"{title}: unknown metrics {sorted(used - defined)} in {expr!r}"


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_every_panel_uses_the_datasource_variable(name: str) -> None:
    dashboard = _load(name)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


def test_panel_ids_are_unique_and_uids_are_stable() -> None:
    uids = set()
    for name in DASHBOARDS:
        dashboard = _load(name)
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids)), name
        uids.add(dashboard["uid"])
    assert uids == {"orderflow-overview", "orderflow-task-types"}


def test_overview_has_the_seed_panels_and_the_queue_panels() -> None:
    titles = {p["title"] for p in _load("orderflow-overview.json")["panels"]}
    expected = {
        "Requests/s by status",
        "Diff by status",
        "Work Done by status",
        "Queue depth",
        "In flight vs slots",
        "POST /orders latency",
        "Redeliveries and dead letters",
        "Drains and hand-backs",
        "Slot restarts",
    }
    assert expected <= titles
    seed = next(p for p in _load("orderflow-overview.json")["panels"] if p["title"] == "Requests/s by status")
    assert seed["targets"][0]["expr"] == (
        'sum by (status) (rate(orderflow_http_requests_total{route="/orders"}[$__rate_interval]))'
    )


def test_task_types_dashboard_filters_by_the_type_variable() -> None:
    dashboard = _load("orderflow-task-types.json")
    names = [v["name"] for v in dashboard["templating"]["list"]]
    assert names == ["datasource", "type"]
    exprs = [expr for _, expr in panel_targets(dashboard)]
    assert all("$type" in expr for expr in exprs)
