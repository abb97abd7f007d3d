"""orderflow / Task types: the worker pool per task type (a subject under `orders.`)."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.models import dashboard as dm

from dashboards.common import DATASOURCE, RATE, dashboard, graph, numbered, query, summed

UID = "orderflow-task-types"
TYPE = 'type=~"$type"'
DONE_COUNT = "orderflow_task_duration_seconds_count"
CONSUMER = 'consumer=~"workers|workers-$type"'
# Outcomes (worker/delivery.py Kind) of a run that went wrong: each costs a failed attempt, except
# dead (the order was dead-lettered: failed attempts, crashes or deliveries used up).
FAILED_OUTCOMES = ("retry", "timeout", "poison", "slot_crashed", "dead")
# Deliveries settled without running the handler: the done-dedupe, final or cancelled orders, a
# leftover of a rescheduled retry, a deferral while a live worker holds the lease, and deliveries
# that came after the worker stopped fetching (given back unstarted). None is an attempt.
NOT_RUN_OUTCOMES = (
    "already_done", "already_cancelled", "already_final", "superseded", "running_elsewhere", "unstarted",
)  # fmt: skip
# The rest: runs that ended well or were stopped on purpose (Outcomes/s shows every outcome).
OTHER_OUTCOMES = ("done", "cancelled", "handed_back")
FAILED = f'outcome=~"{"|".join(FAILED_OUTCOMES)}"'
NOT_RUN = f'outcome=~"{"|".join(NOT_RUN_OUTCOMES)}"'


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
        dashboard(
            "orderflow / Task types", UID, "Worker slots, outcomes and run times per task type.", "now-1h"
        )
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
                "Deliveries settled per second by type and outcome. Runs: done, retry, timeout, poison, "
                "slot_crashed, cancelled, handed_back (at a drain deadline), dead (dead-lettered). Not run: "
                "already_done, already_cancelled, already_final, superseded (its retry is scheduled), "
                "running_elsewhere (deferred: a live worker holds the lease), unstarted (came after "
                "fetching stopped).",
                [summed(f"{DONE_COUNT}{{{TYPE}}}", "type, outcome")],
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
                "Runs that failed, per task type and outcome: retry (the handler raised), timeout, poison "
                "(dead-lettered at once), slot_crashed (an error escaped the handler), dead (dead-lettered).",
                [summed(f"{DONE_COUNT}{{{TYPE}, {FAILED}}}", "type, outcome")],
                unit="ops",
            )
        )
        .with_panel(
            graph(
                "Settled without running/s",
                "Deliveries that never reached the handler, per task type and outcome: already_done (the "
                "done-dedupe), already_cancelled, already_final, superseded, running_elsewhere (deferred "
                "while a live worker holds the lease), unstarted (given back after fetching stopped). "
                "None costs an attempt.",
                [summed(f"{DONE_COUNT}{{{TYPE}, {NOT_RUN}}}", "type, outcome")],
                unit="ops",
            )
        )
    )
    return numbered(dash)
