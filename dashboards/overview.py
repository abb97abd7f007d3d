"""orderflow / Overview: intake, queue, work and reliability on one screen.

The top row is the seed's picture (requests/s by status, Diff by status, Work Done); below it the
queue that absorbs the peak and the worker pool that drains it.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.models import dashboard as dm

from dashboards.common import ORDERS_ROUTE, RATE, datasource_variable, graph, numbered, query, single

UID = "orderflow-overview"
# Each worker reports the same consumer info, so consumer gauges are max'ed, never summed.
PENDING = "max by (consumer) (orderflow_consumer_pending)"
ACK_PENDING = "max by (consumer) (orderflow_consumer_ack_pending)"
REQUESTS = f"orderflow_http_requests_total{{{ORDERS_ROUTE}}}"
REQUESTS_5XX = f'orderflow_http_requests_total{{{ORDERS_ROUTE}, status=~"5.."}}'


def _quantile(q: float, bucket: str, selector: str = "") -> str:
    return f"histogram_quantile({q}, sum by (le) (rate({bucket}{{{selector}}}[{RATE}])))"


def build() -> dm.Dashboard:
    post_latency = "orderflow_http_request_duration_seconds_bucket"
    dash = (
        db.Dashboard("orderflow / Overview")
        .uid(UID)
        .description("Bursty intake in front of a worker pool: what comes in, what waits, what gets done.")
        .tags(["orderflow", "generated"])
        .editable()
        .refresh("10s")
        .time("now-30m", "now")
        .timezone("browser")
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .with_variable(datasource_variable())
        .with_row(db.Row("Now"))
        .with_panel(
            single(
                "Requests/s",
                "POST /orders answered per second, all statuses.",
                f"sum(rate({REQUESTS}[{RATE}]))",
                unit="reqps",
                width=5,
            )
        )
        .with_panel(
            single(
                "5xx share",
                "Share of POST /orders answered 5xx (500 server-kaput in direct mode, 503 when NATS "
                "cannot take the order in queued mode).",
                f"(sum(rate({REQUESTS_5XX}[{RATE}])) or vector(0)) / sum(rate({REQUESTS}[{RATE}]))",
                unit="percentunit",
                width=5,
            )
        )
        .with_panel(
            single("Backlog", "Orders stored but not yet delivered to a worker.", f"sum({PENDING})", width=5)
        )
        .with_panel(
            single(
                "Slots busy",
                "Running jobs over configured worker slots, all workers.",
                "sum(orderflow_tasks_in_flight) / sum(orderflow_pool_slots)",
                unit="percentunit",
                width=5,
            )
        )
        .with_panel(
            single(
                "Dead letters (1h)",
                "Orders moved to ORDERS_DLQ in the last hour.",
                "sum(increase(orderflow_dead_letters_total[1h]))",
                width=4,
            )
        )
        .with_row(db.Row("Intake (ingest)"))
        .with_panel(
            graph(
                "Requests/s by status",
                "The seed's graph: POST /orders answered per second, by HTTP status.",
                [
                    query(
                        f"sum by (status) (rate({REQUESTS}[{RATE}]))",
                        "{{status}}",
                    )
                ],
                unit="reqps",
            )
        )
        .with_panel(
            graph(
                "Diff by status",
                "The seed's Diff: POST /orders answered per interval (increase of the counter), by status.",
                [
                    query(
                        f"sum by (status) (increase({REQUESTS}[{RATE}]))",
                        "{{status}}",
                    )
                ],
                stacked=True,
            )
        )
        .with_panel(
            graph(
                "POST /orders latency",
                "Time to answer POST /orders (in queued mode: until the JetStream PubAck).",
                [
                    query(_quantile(0.5, post_latency, ORDERS_ROUTE), "p50", "A"),
                    query(_quantile(0.99, post_latency, ORDERS_ROUTE), "p99", "B"),
                    query(_quantile(0.99, "orderflow_publish_duration_seconds_bucket"), "publish p99", "C"),
                ],
                unit="s",
            )
        )
        .with_panel(
            graph(
                "Publishes by result",
                "Orders offered to JetStream: stored, duplicate (idempotent retry), or refused "
                "(unavailable, timeout, rejected, overloaded: the client got 503 + Retry-After).",
                [query(f"sum by (result) (rate(orderflow_orders_published_total[{RATE}]))", "{{result}}")],
                unit="ops",
            )
        )
        .with_row(db.Row("Queue and workers"))
        .with_panel(
            graph(
                "Work Done by status",
                "The seed's Work Done: jobs finished per second (workers, or the ingest in direct mode).",
                [query(f"sum by (status) (rate(orderflow_work_done_total[{RATE}]))", "{{status}}")],
                unit="ops",
            )
        )
        .with_panel(
            graph(
                "Accepted vs done",
                "Orders stored vs jobs finished, per second: the gap is what the queue absorbs.",
                [
                    query(
                        f'sum(rate(orderflow_orders_published_total{{result="stored"}}[{RATE}]))',
                        "accepted",
                        "A",
                    ),
                    query(f'sum(rate(orderflow_work_done_total{{status="done"}}[{RATE}]))', "done", "B"),
                ],
                unit="ops",
            )
        )
        .with_panel(
            graph(
                "Queue depth",
                "Consumer num_pending (stored, not delivered) and num_ack_pending (delivered, not acked).",
                [
                    query(PENDING, "pending {{consumer}}", "A"),
                    query(ACK_PENDING, "ack pending {{consumer}}", "B"),
                ],
            )
        )
        .with_panel(
            graph(
                "In flight vs slots",
                "Jobs running now against configured slots, all workers.",
                [
                    query("sum(orderflow_tasks_in_flight)", "in flight", "A"),
                    query("sum(orderflow_pool_slots)", "slots", "B"),
                ],
            )
        )
        .with_row(db.Row("Reliability"))
        .with_panel(
            graph(
                "Redeliveries and dead letters",
                "Messages delivered again (retry, crash, expired ack wait) and messages dead-lettered.",
                [
                    query(f"sum(rate(orderflow_redeliveries_total[{RATE}]))", "redeliveries/s", "A"),
                    query(f"sum(rate(orderflow_dead_letters_total[{RATE}]))", "dead letters/s", "B"),
                ],
                unit="ops",
                width=8,
            )
        )
        .with_panel(
            graph(
                "Drains and hand-backs",
                "Workers draining after SIGTERM, and jobs naked back to the queue at the drain deadline.",
                [
                    query("sum(orderflow_draining)", "workers draining", "A"),
                    query(f"sum(increase(orderflow_drain_handed_back_total[{RATE}]))", "handed back", "B"),
                ],
                width=8,
            )
        )
        .with_panel(
            graph(
                "Slot restarts",
                "Slots or fetch loops that crashed and were restarted by the supervisor.",
                [query(f"sum by (kind) (increase(orderflow_slot_restarts_total[{RATE}]))", "{{kind}}")],
                width=8,
            )
        )
        .with_panel(
            graph(
                "Delivery attempts",
                "Delivery count of the messages slots started (1 = first delivery).",
                [
                    query(_quantile(0.5, "orderflow_task_attempts_bucket"), "p50", "A"),
                    query(_quantile(0.99, "orderflow_task_attempts_bucket"), "p99", "B"),
                ],
                width=24,
                height=6,
            )
        )
    )
    return numbered(dash)
