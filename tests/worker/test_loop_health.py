"""Health that a blocked event loop cannot silence (issue #13, item 9): a handler that blocks the
loop stops every heartbeat, so the worker's liveness must fail, with a reason, before the job's
ack_wait runs out; the probe and metrics endpoints are served from a thread, so they answer while
the loop is blocked. A real worker process, a real blocking handler (tests/support/blocking.py)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from harness import NatsServer, Service, http, publish_orders, run, run_records, wait_until
from poller import Poller

pytestmark = pytest.mark.slow

ACK_WAIT_S = 8.0
LIMIT_S = ACK_WAIT_S / 4  # loop_block_limit_s (worker/timing.py)
BLOCK_S = 6.0  # longer than the limit, shorter than ack_wait: the job itself is not redelivered


class Prober(Poller):
    """GETs `path` every `interval_s` in a thread and keeps (time sent, status, body, seconds taken)."""

    def __init__(self, svc: Service, path: str, interval_s: float = 0.1) -> None:
        super().__init__(interval_s)
        self.url = svc.url + path
        self.answers: list[tuple[float, int, bytes, float]] = []

    def poll(self) -> None:
        sent = time.time()
        try:
            status, _, body = http("GET", self.url, timeout=2.0)
        except OSError:  # no answer within 2 s: recorded as status 0
            status, body = 0, b""
        self.answers.append((sent, status, body, time.time() - sent))

    def between(self, start: float, end: float) -> list[tuple[float, int, bytes, float]]:
        return [a for a in self.answers if start <= a[0] <= end]


def gauge(body: bytes, name: str) -> float:
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


@pytest.mark.timeout(120)
def test_a_blocked_event_loop_fails_liveness_in_time_and_the_probes_still_answer(
    nats_server: NatsServer, spawn: Any
) -> None:
    """1. A worker with ack_wait 8 s: its liveness limit is ack_wait/4 = 2 s. /healthz, /readyz
       and /metrics are polled every 0.1 s from threads of the test.
    2. An order makes its handler call time.sleep(6): the worker's event loop is blocked.
    3. /healthz answers 503 with the reason ("event loop blocked for ...") once the loop has been
       blocked for the limit, and no later than the limit + 1.5 s (watchdog period, probe
       thread, a loaded machine); never before the limit.
    4. While the loop is blocked, /readyz and /metrics answer too, each within a second (they
       are served from a thread): /readyz 503, /metrics 200 with orderflow_event_loop_lag_seconds
       above the limit.
    5. The worker logs the loud line ("event loop blocked for ...") and, once the loop runs
       again, "event loop running again"; /healthz turns 200 again, /readyz too, the lag falls
       back within a second and stays down, and the job completes (done once)."""
    w = spawn("worker", HANDLERS="blocking", ACK_WAIT_S=ACK_WAIT_S, WORK_S="0.1").wait_ready()
    assert w.get("/healthz")[0] == 200
    with Prober(w, "/healthz") as health, Prober(w, "/readyz") as ready, Prober(w, "/metrics") as metrics:
        time.sleep(0.5)
        [order_id] = run(publish_orders(nats_server.url, 1, prefix="blocker", username=f"block-{BLOCK_S:g}"))
        wait_until(
            lambda: any(r.event == "done" for r in run(run_records(nats_server.url)).get(order_id, [])),
            BLOCK_S + 20,
            "the blocking job to finish",
            0.2,
        )
        wait_until(lambda: health.answers and health.answers[-1][1] == 200, 10, "/healthz 200 again", 0.1)
        wait_until(lambda: ready.answers and ready.answers[-1][1] == 200, 10, "/readyz 200 again", 0.1)
        time.sleep(3)  # healthy from then on

    records = run(run_records(nats_server.url))[order_id]
    assert [r.event for r in records] == ["start", "done"]  # ran once, not redelivered meanwhile
    blocked_at = records[0].at  # the handler blocks right after this record is stored
    unblocked_at = blocked_at + BLOCK_S

    # 3: 503 with the reason, in time, not before the limit
    before = health.between(0, blocked_at + LIMIT_S - 0.2)
    assert before and {a[1] for a in before} == {200}, [(round(a[0] - blocked_at, 2), a[1]) for a in before]
    failing = [a for a in health.between(blocked_at, unblocked_at) if a[1] == 503]
    assert failing, "liveness never failed while the loop was blocked"
    first_503 = failing[0][0] + failing[0][3]  # when the answer came
    assert first_503 - blocked_at <= LIMIT_S + 1.5, (
        f"liveness failed {first_503 - blocked_at:.2f}s into the block"
    )
    answer = json.loads(failing[0][2])
    assert answer["status"] == "unhealthy" and answer["reason"].startswith("event loop blocked for"), answer

    # 4: the other endpoints answered while the loop was blocked, promptly
    in_block = (blocked_at + LIMIT_S + 1.5, unblocked_at - 0.5)
    for prober, status in ((ready, 503), (metrics, 200), (health, 503)):
        answers = prober.between(*in_block)
        assert len(answers) >= 5, f"{prober.url}: {len(answers)} answers during the block"
        assert {a[1] for a in answers} == {status}, (prober.url, [a[1] for a in answers])
        assert max(a[3] for a in answers) < 1.0, (prober.url, max(a[3] for a in answers))
    assert all(b"event loop blocked" in a[2] for a in ready.between(*in_block))
    lags = [gauge(a[2], "orderflow_event_loop_lag_seconds") for a in metrics.between(*in_block)]
    assert min(lags) > LIMIT_S and lags == sorted(lags), lags  # growing while it lasts

    # 5: loud in the log, healthy again after
    logs = w.logs()
    assert "event loop blocked for" in logs and "event loop running again" in logs
    assert logs.index("event loop blocked for") < logs.index("event loop running again")
    healthy_again = next(a for a in health.answers if a[0] > unblocked_at and a[1] == 200)
    assert healthy_again[0] - unblocked_at < 2.0
    after = [a for a in health.answers if a[0] > healthy_again[0]]
    assert len(after) >= 10 and {a[1] for a in after} == {200}
    # The gauge is the last measured lag: the block's own length, once the loop answers the
    # watchdog's pending ask, until the next ask is answered (one watch interval, 0.1 s, later).
    # So a scrape racing /healthz's first 200 may still read the block; it falls back right after
    # and stays down.
    lag_after = [
        (a[0], gauge(a[2], "orderflow_event_loop_lag_seconds"))
        for a in metrics.answers
        if a[0] > healthy_again[0]
    ]
    fell_at = next(at for at, lag in lag_after if lag < 0.5)
    assert fell_at - healthy_again[0] < 1.0, lag_after
    settled = [lag for at, lag in lag_after if at >= fell_at]
    assert len(settled) >= 10 and max(settled) < 0.5, lag_after
    assert w.metric('orderflow_work_done_total{status="done"}') == 1
