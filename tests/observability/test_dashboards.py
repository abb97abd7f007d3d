"""The committed dashboards are generated from dashboards/ and query only metrics orderflow defines."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from dashboards import DASHBOARDS, task_types
from dashboards.common import per_pod
from dashboards.names import defined_metric_names, panel_targets, referenced_metric_names, variable_queries
from dashboards.render import write_all
from worker.delivery import Kind

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "charts" / "orderflow" / "dashboards"


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((COMMITTED / name).read_text(encoding="utf-8"))
    return data


def test_committed_dashboards_are_up_to_date(tmp_path: Path) -> None:
    write_all(tmp_path)  # what `python -m dashboards --out` writes
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


def _panels(name: str) -> dict[str, dict[str, Any]]:
    return {p["title"]: p for p in _load(name)["panels"] if p["type"] != "row"}


def test_overview_shows_interruptions_scale_down_worker_health_and_the_edge() -> None:
    panels = _panels("orderflow-overview.json")
    uses = {
        title: set().union(*(referenced_metric_names(t["expr"]) for t in p["targets"]))
        for title, p in panels.items()
    }
    expected = {
        "Checkpoints/s": {"orderflow_checkpoints_total"},
        "Crashes (runs found dead)": {"orderflow_crashes_total"},
        "Work redone by cause": {"orderflow_work_redone_seconds_total"},
        "Work redone share (15 min)": {"orderflow_work_redone_seconds_total", "orderflow_task_duration_seconds_sum"},
        "Drains and hand-backs": {
            "orderflow_draining", "orderflow_drain_handed_back_total", "orderflow_task_duration_seconds_count",
        },
        "Pod deletion cost per pod": {"orderflow_pod_deletion_cost"},
        "Pull priority per pod": {"orderflow_pull_priority"},
        "Event loop lag per pod": {"orderflow_event_loop_lag_seconds", "orderflow_event_loop_block_limit_seconds"},
        "Orders refused (503) by reason": {"orderflow_orders_refused_total"},
        "Receipt deadline hit, by phase": {"orderflow_http_request_timeouts_total"},
        "Connections refused at the cap": {"orderflow_http_connections_refused_total"},
        "Idempotency-Key outcomes": {"orderflow_idempotent_requests_total"},
    }  # fmt: skip
    for title, metrics in expected.items():
        assert uses.get(title) == metrics, title
    # priority -1 (no priority group) stays on the axis
    assert panels["Pull priority per pod"]["fieldConfig"]["defaults"]["min"] == -1
    # the liveness limit is drawn as a line of its own, not as one more pod
    [limit] = panels["Event loop lag per pod"]["fieldConfig"]["overrides"]
    assert limit["matcher"] == {"id": "byName", "options": "liveness limit"}


def test_task_types_outcome_panels_split_every_outcome_the_worker_has() -> None:
    """Failures/s and Settled without running name each worker outcome once between them, with
    the runs that ended well (or on purpose) beside them: a new outcome must be placed."""
    groups = [task_types.FAILED_OUTCOMES, task_types.NOT_RUN_OUTCOMES, task_types.OTHER_OUTCOMES]
    named = [o for g in groups for o in g]
    assert len(named) == len(set(named))
    assert set(named) == {k.value for k in Kind}
    panels = _panels("orderflow-task-types.json")
    assert task_types.FAILED in panels["Failures/s"]["targets"][0]["expr"]
    assert task_types.NOT_RUN in panels["Settled without running/s"]["targets"][0]["expr"]


@pytest.mark.procs
def test_per_pod_names_a_series_by_its_pod_else_by_its_scrape_address(promtool: Path, tmp_path: Path) -> None:
    """In Kubernetes the ServiceMonitor's `pod` label; in compose or a static config the instance."""
    (tmp_path / "none.yaml").write_text("groups: []\n")
    case = {
        "rule_files": ["none.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {
                        "series": 'orderflow_pod_deletion_cost{instance="10.0.0.5:9090", pod="orderflow-worker-abc"}',
                        "values": "8x5",
                    },
                    {"series": 'orderflow_pod_deletion_cost{instance="127.0.0.1:9091"}', "values": "0x5"},
                ],
                "promql_expr_test": [
                    {
                        "expr": per_pod("orderflow_pod_deletion_cost"),
                        "eval_time": "2m",
                        "exp_samples": [
                            {"labels": '{pod="orderflow-worker-abc"}', "value": 8},
                            {"labels": '{pod="127.0.0.1:9091"}', "value": 0},
                        ],
                    }
                ],
            }
        ],
    }
    (tmp_path / "per_pod_test.yaml").write_text(json.dumps(case))
    result = subprocess.run(
        [promtool, "test", "rules", "per_pod_test.yaml"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_traces_panel_shows_exemplars_and_links_to_the_tempo_variable() -> None:
    """The overview's exemplar panel: both of its p99 queries ask for exemplars (the trace ids the
    ingest and the worker put on the duration histograms), its link searches orderflow's traces in
    the data source of the `tempo` variable (of type tempo), and the Prometheus one stays the
    panel's (the exemplars' link to Tempo is the Prometheus data source's setting)."""
    overview = _load("orderflow-overview.json")
    variables = {v["name"]: v for v in overview["templating"]["list"]}
    assert variables["tempo"]["type"] == "datasource" and variables["tempo"]["query"] == "tempo"
    [panel] = [p for p in overview["panels"] if p["title"] == "Slow requests and runs, with their traces"]
    assert [t["exemplar"] for t in panel["targets"]] == [True, True]
    assert {m for t in panel["targets"] for m in referenced_metric_names(t["expr"])} == {
        "orderflow_http_request_duration_seconds_bucket",
        "orderflow_task_duration_seconds_bucket",
    }
    [link] = panel["links"]
    assert link["url"].startswith('/explore?left={"datasource":"${tempo}"') and "orderflow-" in link["url"]
