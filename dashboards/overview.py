"""orderflow / Overview: intake, queue, work and reliability on one screen.

The top row is the seed's picture (requests/s by status, Diff by status, Work Done); below it the
queue that absorbs the peak and the worker pool that drains it.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.models import dashboard as dm

from dashboards.common import ORDERS_ROUTE, RATE, dashboard, graph, numbered, per_pod, query, single, summed

UID = "orderflow-overview"
# Each worker reports the same consumer info, so consumer gauges are max'ed, never summed.
PENDING = "max by (consumer) (orderflow_consumer_pending)"
ACK_PENDING = "max by (consumer) (orderflow_consumer_ack_pending)"
REQUESTS = f"orderflow_http_requests_total{{{ORDERS_ROUTE}}}"
REQUESTS_5XX = f'orderflow_http_requests_total{{{ORDERS_ROUTE}, status=~"5.."}}'
# A limit drawn as a red dashed line, not as one more series.
LIMIT_LINE = [
    dm.DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": "red"}),
    dm.DynamicConfigValue(id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]}),
    dm.DynamicConfigValue(id_val="custom.fillOpacity", value=0),
]
# Deliveries settled with an outcome (worker/delivery.py Kind), counted by the duration histogram.
SETTLED = "orderflow_task_duration_seconds_count"
# Job time lost to interruptions over all job time: every settled delivery's time from delivery to
# settlement, plus the lost part of the runs found dead (they never settled). A fixed 15 min window:
# both counters move in lumps when a long job ends, so a few-second window would only show spikes.
REDONE_SHARE = (
    "sum(rate(orderflow_work_redone_seconds_total[15m])) / ("
    "sum(rate(orderflow_task_duration_seconds_sum[15m])) + "
    'sum(rate(orderflow_work_redone_seconds_total{cause="crash"}[15m])))'
)


def _quantile(q: float, bucket: str, selector: str = "") -> str:
    return f"histogram_quantile({q}, sum by (le) (rate({bucket}{{{selector}}}[{RATE}])))"


# Grafana's Explore, searching the orderflow services' traces in the `tempo` variable's data source.
TEMPO_SEARCH = (
    '/explore?left={"datasource":"${tempo}","queries":[{"refId":"A","queryType":"traceql",'
    '"query":"{resource.service.name=~\\"orderflow-.*\\"}"}]}'
)


def build() -> dm.Dashboard:
    post_latency = "orderflow_http_request_duration_seconds_bucket"
    dash = (
        dashboard(
            "orderflow / Overview",
            UID,
            "Bursty intake in front of a worker pool: what comes in, what waits, what gets done.",
            "now-30m",
        )
        .with_variable(db.DatasourceVariable("tempo").label("Traces").type("tempo"))
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
                [summed(REQUESTS, "status")],
                unit="reqps",
            )
        )
        .with_panel(
            graph(
                "Diff by status",
                "The seed's Diff: POST /orders answered per interval (increase of the counter), by status.",
                [summed(REQUESTS, "status", fn="increase")],
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
                [summed("orderflow_orders_published_total", "result")],
                unit="ops",
            )
        )
        .with_row(db.Row("Edge (ingest)"))
        .with_panel(
            graph(
                "Orders refused (503) by reason",
                "POST /orders answered 503 + Retry-After, nothing stored, by reason: nats_down, "
                "jetstream_unavailable, publish_timeout (transient: NATS or a failover), stream_full (an "
                "ORDERS limit, ORDERFLOW_STREAM_MAX_*), storage_full (JetStream out of storage: an operator "
                "has to act), rejected (another JetStream error), overloaded (too many publishes in flight); "
                "and requests refused for their head before they reach the app: head_too_large and "
                "too_many_headers (431), url_too_long (414).",
                [summed("orderflow_orders_refused_total", "reason")],
                unit="reqps",
                width=6,
                stacked=True,
            )
        )
        .with_panel(
            graph(
                "Receipt deadline hit, by phase",
                "Connections closed because the request head (ORDERFLOW_HTTP_HEADER_TIMEOUT_S) or its body "
                "(ORDERFLOW_HTTP_BODY_TIMEOUT_S) did not arrive in time, answered 408 where a response "
                "could still be written: stalled or very slow clients.",
                [summed("orderflow_http_request_timeouts_total", "phase")],
                unit="ops",
                width=6,
            )
        )
        .with_panel(
            graph(
                "Connections refused at the cap",
                "New connections answered 503 and closed because the process already had "
                "ORDERFLOW_HTTP_MAX_CONNECTIONS open (a flood of connections, or clients not reusing them).",
                [summed("orderflow_http_connections_refused_total", legend="refused")],
                unit="ops",
                width=6,
            )
        )
        .with_panel(
            graph(
                "Idempotency-Key outcomes",
                "Orders sent with an Idempotency-Key, by outcome: new (published), retry (an earlier "
                "attempt failed; published again), replay (answered 200 from the key record, nothing "
                "stored), mismatch (422, another body), in_flight (409), unavailable (503, the key store "
                "did not answer).",
                [summed("orderflow_idempotent_requests_total", "outcome")],
                unit="reqps",
                width=6,
                stacked=True,
            )
        )
        .with_row(db.Row("Queue and workers"))
        .with_panel(
            graph(
                "Work Done by status",
                "The seed's Work Done: jobs finished per second (workers, or the ingest in direct mode).",
                [summed("orderflow_work_done_total", "status")],
                unit="ops",
            )
        )
        .with_panel(
            graph(
                "Accepted vs done",
                "Orders stored vs jobs finished, per second: the gap is what the queue absorbs.",
                [
                    summed('orderflow_orders_published_total{result="stored"}', legend="accepted", ref="A"),
                    summed('orderflow_work_done_total{status="done"}', legend="done", ref="B"),
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
                    summed("orderflow_redeliveries_total", legend="redeliveries/s", ref="A"),
                    summed("orderflow_dead_letters_total", legend="dead letters/s", ref="B"),
                ],
                unit="ops",
                width=8,
            )
        )
        .with_panel(
            graph(
                "Drains and hand-backs",
                "Workers draining after SIGTERM, and deliveries they gave back to the queue (none is a "
                "failed attempt): all of them, and those running at the drain deadline (their work since "
                "the last checkpoint is redone); the rest came after fetching stopped and never started.",
                [
                    query("sum(orderflow_draining)", "workers draining", "A"),
                    summed("orderflow_drain_handed_back_total", legend="handed back", fn="increase", ref="B"),
                    summed(
                        f'{SETTLED}{{outcome="handed_back"}}',
                        legend="of them running at the deadline",
                        fn="increase",
                        ref="C",
                    ),
                ],
                width=8,
            )
        )
        .with_panel(
            graph(
                "Slot restarts",
                "Slots or fetch loops that crashed and were restarted by the supervisor.",
                [summed("orderflow_slot_restarts_total", "kind", fn="increase")],
                width=8,
            )
        )
        .with_panel(
            graph(
                "Deliveries per started run",
                "Deliveries of each order whose handler started, this one included (1 = first delivery). "
                "Retries, hand-backs, crashes and deferrals all add one; only failures count against "
                "ORDERFLOW_MAX_DELIVER.",
                [
                    query(_quantile(0.5, "orderflow_task_attempts_bucket"), "p50", "A"),
                    query(_quantile(0.99, "orderflow_task_attempts_bucket"), "p99", "B"),
                ],
                width=24,
                height=6,
            )
        )
        .with_row(db.Row("Long jobs and interruptions"))
        .with_panel(
            graph(
                "Checkpoints/s",
                "Checkpoints stored by running jobs (job.checkpoint, confirmed by JetStream). The next "
                "run of an interrupted order resumes from its last one.",
                [summed("orderflow_checkpoints_total", legend="checkpoints/s")],
                unit="ops",
                width=6,
            )
        )
        .with_panel(
            graph(
                "Crashes (runs found dead)",
                "Deliveries that found the order's previous run dead: its worker was killed mid-job "
                "(SIGKILL, OOM kill; also the kill after a failed liveness probe or an exhausted grace "
                "period). An order that crashes ORDERFLOW_MAX_CRASHES runs is dead-lettered.",
                [summed("orderflow_crashes_total", legend="crashes", fn="increase")],
                width=6,
            )
        )
        .with_panel(
            graph(
                "Work redone by cause",
                "Seconds of job time lost to interruptions, per second (1 = one slot's worth of work "
                "thrown away): handback, since the last checkpoint (or the start) of each job handed back "
                "at a drain deadline; crash, the same for each run found dead (a lower bound).",
                [summed("orderflow_work_redone_seconds_total", "cause")],
                width=6,
                stacked=True,
            )
        )
        .with_panel(
            graph(
                "Work redone share (15 min)",
                "Work redone as a share of all job time over the last 15 minutes (job time: every settled "
                "delivery's, plus what the dead runs lost). Frequent checkpoints keep it low however many "
                "scale-downs interrupt long jobs.",
                [query(REDONE_SHARE, "redone share")],
                unit="percentunit",
                width=6,
            )
        )
        .with_row(db.Row("Scale-down"))
        .with_panel(
            graph(
                "Pod deletion cost per pod",
                "The pod-deletion-cost each worker wants (kept on its pod's annotation, rate-limited, "
                "when worker.podDeletionCost is on): 0 idle, else the seconds of work a kill would lose "
                "(since each running job's last checkpoint), rounded down to a power of two. A "
                "scale-down removes the lowest first: when load falls, the newest workers (highest pull "
                "priority) should sit at 0.",
                [query(per_pod("orderflow_pod_deletion_cost"), "{{pod}}")],
                width=8,
            )
        )
        .with_panel(
            graph(
                "Pull priority per pod",
                "Each worker's pull priority: 0 is the oldest live worker, served first; a higher number "
                "gets messages only when the lower ones have no pull outstanding (capped at 9). -1: no "
                "priority group (ORDERFLOW_PRIORITY=off, or a server older than 2.12).",
                [query(per_pod("orderflow_pull_priority"), "{{pod}}")],
                width=8,
                minimum=-1,
            )
        )
        .with_panel(
            graph(
                "In flight per pod",
                "Jobs running on each worker. Under light load the work concentrates on the lowest "
                "pull priorities and the newest workers run dry.",
                [query(per_pod("orderflow_tasks_in_flight", "sum"), "{{pod}}")],
                width=8,
            )
        )
        .with_row(db.Row("Worker health"))
        .with_panel(
            graph(
                "Event loop lag per pod",
                "How late each worker's event loop ran a callback that a watchdog thread schedules every "
                "0.1 s; it keeps growing while the loop is blocked (a handler making a sync call), and "
                "every heartbeat stops meanwhile. The worker logs an error above 1 s; /healthz answers "
                "503 once the loop has not run for the liveness limit (ack_wait/4), and the kubelet "
                "restarts the pod.",
                [
                    query(per_pod("orderflow_event_loop_lag_seconds"), "{{pod}}", "A"),
                    query("min(orderflow_event_loop_block_limit_seconds)", "liveness limit", "B"),
                ],
                unit="s",
                width=24,
            ).override_by_name("liveness limit", LIMIT_LINE)
        )
        .with_row(db.Row("Traces"))
        .with_panel(
            graph(
                "Slow requests and runs, with their traces",
                "p99 of POST /orders and of the runs, with exemplars: each dot is one traced request or "
                "run and carries its trace id (the ingest and the worker add it to the duration histograms "
                "when tracing is on and Prometheus scrapes OpenMetrics). A dot opens its trace in Tempo "
                "through the Prometheus data source's exemplarTraceIdDestinations (trace_id -> the Tempo "
                "data source: docs/observability.md); the panel link searches the orderflow traces in the "
                "Tempo data source of the `tempo` variable.",
                [
                    query(_quantile(0.99, post_latency, ORDERS_ROUTE), "POST /orders p99", "A").exemplar(
                        True
                    ),
                    query(_quantile(0.99, "orderflow_task_duration_seconds_bucket"), "run p99", "B").exemplar(
                        True
                    ),
                ],
                unit="s",
                width=24,
            ).links([db.DashboardLink("orderflow traces in ${tempo}").url(TEMPO_SEARCH).target_blank(True)])
        )
    )
    return numbered(dash)
