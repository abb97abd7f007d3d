"""orderflow / Task types: the worker pool per task type (a subject under `orders.`)."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.models import dashboard as dm

from dashboards.common import DATASOURCE, RATE, datasource_variable, graph, numbered, query

UID = "orderflow-task-types"
TYPE = 'type=~"$type"'
DONE_COUNT = "orderflow_task_duration_seconds_count"
CONSUMER = 'consumer=~"workers|workers-$type"'


def _type_variable() -> db.QueryVariable:
    return (
        db.QueryVariable("type")
        .label("Task type")
        .datasource(DATASOURCE)
        .query({"query": "label_values(orderflow_pool_slots, type)", "refId": "type"})
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dm.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
    )


def _duration(q: float) -> str:
    return (
        f"histogram_quantile({q}, sum by (type, le) "
        f'(rate(orderflow_task_duration_seconds_bucket{{{TYPE}, outcome="done"}}[{RATE}])))'
    )


def build() -> dm.Dashboard:
    dash = (
        db.Dashboard("orderflow / Task types")
        .uid(UID)
        .description("Worker slots, outcomes and run times per task type.")
        .tags(["orderflow", "generated"])
        .editable()
        .refresh("10s")
        .time("now-1h", "now")
        .timezone("browser")
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .with_variable(datasource_variable())
        .with_variable(_type_variable())
        .with_row(db.Row("Pool"))
        .with_panel(
            graph(
                "In flight vs slots",
                "Jobs running now and configured slots, per task type, all workers.",
                [
                    query(f"sum by (type) (orderflow_tasks_in_flight{{{TYPE}}})", "{{type}} in flight", "A"),
                    query(f"sum by (type) (orderflow_pool_slots{{{TYPE}}})", "{{type}} slots", "B"),
                ],
            )
        )
        .with_panel(
            graph(
                "Backlog",
                "Pending and ack-pending of the consumer serving the type (`workers`, or `workers-<type>` "
                "when types are split).",
                [
                    query(
                        f"max by (consumer) (orderflow_consumer_pending{{{CONSUMER}}})",
                        "pending {{consumer}}",
                        "A",
                    ),
                    query(
                        f"max by (consumer) (orderflow_consumer_ack_pending{{{CONSUMER}}})",
                        "ack pending {{consumer}}",
                        "B",
                    ),
                ],
            )
        )
        .with_row(db.Row("Outcomes"))
        .with_panel(
            graph(
                "Outcomes/s",
                "Jobs ended per second by type and outcome: done, retry, poison, dead, timeout, cancelled, "
                "handed_back.",
                [
                    query(
                        f"sum by (type, outcome) (rate({DONE_COUNT}{{{TYPE}}}[{RATE}]))",
                        "{{type}} {{outcome}}",
                    )
                ],
                unit="ops",
                stacked=True,
            )
        )
        .with_panel(
            graph(
                "Run time of done jobs",
                "p50 / p90 / p99 of successful jobs, per task type.",
                [
                    query(_duration(0.5), "{{type}} p50", "A"),
                    query(_duration(0.9), "{{type}} p90", "B"),
                    query(_duration(0.99), "{{type}} p99", "C"),
                ],
                unit="s",
            )
        )
        .with_panel(
            graph(
                "Failures/s",
                "Jobs that did not finish well, per task type and outcome.",
                [
                    query(
                        "sum by (type, outcome) (rate(orderflow_task_duration_seconds_count"
                        f'{{{TYPE}, outcome!="done"}}[{RATE}]))',
                        "{{type}} {{outcome}}",
                    )
                ],
                unit="ops",
                width=24,
                height=6,
            )
        )
    )
    return numbered(dash)
