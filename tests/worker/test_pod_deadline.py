"""The drain meets the platform's real deadline (issue #25): a worker reads its own pod's deletion
at SIGTERM and hands back before the kubelet's SIGKILL, however short the grace. Real nats-server,
real `python -m worker` processes and signals; the Kubernetes API is the stand-in
(orderflow_tools/kit/kubeapi.py), which the worker's real `kubernetes` client reaches through a
kubeconfig. The test plays the kubelet: it deletes the pod on the stand-in, sends SIGTERM, and
would SIGKILL at the end of the grace. The arithmetic is in tests/worker/unit/test_timing.py."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import NatsServer, Service, records_of, service_env, status_of, wait_until
from order_waits import publish_one, wait_started_on, wait_status

from orderflow import contract
from orderflow_tools.kit.kubeapi import KubeApiStandIn
from worker import drainreport

pytestmark = pytest.mark.slow

NAMESPACE = "orderflow"


@pytest.fixture
def kube_api() -> Iterator[KubeApiStandIn]:
    with KubeApiStandIn(NAMESPACE) as api:
        yield api


@pytest.fixture
def pod_worker(tmp_path: Path, nats_server: NatsServer, kube_api: KubeApiStandIn) -> Iterator[Any]:
    """pod_worker(name, **settings): a worker in pod `name` of the stand-in, reading its deadline."""
    kubeconfig = kube_api.write_kubeconfig(tmp_path / "kubeconfig")
    started: list[Service] = []

    def factory(name: str, **settings: Any) -> Service:
        kube_api.add_pod(name)
        env = service_env(
            nats_server.url,
            WORKER_ID=name,
            POD_NAME=name,
            POD_NAMESPACE=NAMESPACE,
            POD_DEADLINE="on",
            POD_DELETION_COST="off",
            TERMINATION_LOG=str(report_path(tmp_path, name)),
            **settings,
        )
        svc = Service("worker", {**env, "KUBECONFIG": str(kubeconfig)}, tmp_path / f"{name}.log")
        started.append(svc)
        return svc.start().wait_ready(60)  # importing the kubernetes client takes a while

    yield factory
    for svc in started:
        svc.stop()


def report_path(tmp_path: Path, name: str) -> Path:
    """Where pod `name`'s worker writes its drain report (worker/drainreport.py)."""
    return tmp_path / f"{name}.drain.json"


def drained(tmp_path: Path, name: str) -> drainreport.DrainReport:
    report = drainreport.read(report_path(tmp_path, name))
    assert report is not None and report.event == "drained", report
    return report


def delete_pod(api: KubeApiStandIn, w: Service, name: str, grace_s: int) -> tuple[float, int | None]:
    """The kubelet's part: the deletion recorded, SIGTERM, SIGKILL at the end of the grace. Returns
    how long the worker took to exit and its exit code (None: it had to be SIGKILLed)."""
    api.delete(name, grace_s)
    sent = time.monotonic()
    w.signal(signal.SIGTERM)
    code = w.process.wait(grace_s)
    took = time.monotonic() - sent
    if code is None:
        w.process.kill(10)
    return took, code


def finish_elsewhere(spawn: Any, url: str, order_id: str) -> contract.StatusRecord:
    spawn("worker", WORKER_ID="B", HANDLERS="blocking", WORK_S="0.2").wait_ready()
    return wait_status(url, order_id, "done", 30, "B to finish the order", 0.1)


@pytest.mark.timeout(120)
def test_a_pod_deleted_with_a_5s_grace_hands_its_long_job_back_before_5s_and_no_crash_is_recorded(
    nats_server: NatsServer, kube_api: KubeApiStandIn, pod_worker: Any, spawn: Any, tmp_path: Path
) -> None:
    """1. Worker A (drain budget 60 s, so a 70 s grace by the chart) runs a 30 s job whose handler
       never looks at job.stopping (tests/support/blocking.py: one long sleep).
    2. The pod is deleted with a 5 s grace (`kubectl delete --grace-period=5`), then SIGTERM.
    3. A reads its pod: the SIGKILL is at most 5 s away, so it drains against 5 s - 1 s margin, not
       60 s (its drain report says so, and so does /metrics while it drains); the handler is cancelled at
       that deadline and the order goes back (`queued`, a hand-back, no attempt).
    4. The order is back before the 5 s are up (its `queued` record's time), and A exits 0 (on a
       loaded machine its exit may come after the kubelet's SIGKILL: nothing runs there by then).
    5. Worker B takes the order at once and finishes it: no crash on its books, never dead-lettered."""
    url = nats_server.url
    a = pod_worker("A", HANDLERS="blocking", WORK_S="30", DRAIN_TIMEOUT_S="60", CONCURRENCY="1")
    order_id = publish_one(url, "grace")
    wait_started_on(url, order_id, "A")

    kube_api.delete("A", 5)
    sigterm_at = time.time()
    a.signal(signal.SIGTERM)
    wait_until(lambda: report_path(tmp_path, "A").exists(), 3, "A to start draining", 0.05)
    deadline_s = a.metric('orderflow_drain_deadline_seconds{ruled_by="pod"}')
    code = a.process.wait(max(0.1, sigterm_at + 5 - time.time()))
    if code is None:  # the kubelet's SIGKILL at the end of the grace
        a.process.kill(10)
    assert 3.0 <= deadline_s <= 4.0
    assert kube_api.reads("A") == 1
    # The drain ended, and the order was back (`queued`, a hand-back, no attempt), before 5 s.
    report = drained(tmp_path, "A")
    assert report.ruled_by == "pod" and report.why.startswith("pod deleted with a 5s grace"), report
    assert report.handed_back_at_deadline == 1, a.logs()[-2000:]
    st = status_of(url, order_id)
    assert st is not None
    assert (st.status, st.handbacks, st.crashes, st.attempts) == ("queued", 1, 0, 0), st
    assert st.updated_at < sigterm_at + 5, f"handed back {st.updated_at - sigterm_at:.1f}s after SIGTERM"
    # On a quiet machine it exits 0 well before then; on this loaded one the tail after the drain
    # (closing the connection, the interpreter's exit) has run past the SIGKILL: the job was back.
    assert code in (0, None), code

    final = finish_elsewhere(spawn, url, order_id)
    assert (final.handbacks, final.crashes, final.attempts) == (1, 0, 0), final


@pytest.mark.timeout(120)
def test_a_handler_using_job_stopping_checkpoints_and_returns_before_its_deadline(
    nats_server: NatsServer, kube_api: KubeApiStandIn, pod_worker: Any, tmp_path: Path
) -> None:
    """1. Worker A runs the demo handler's 30 s job (it checkpoints every 2 s); budget 60 s.
    2. The pod is evicted with a 10 s grace (a DisruptionTarget condition), then SIGTERM: A's
       deadline is about 9 s, its hand-back 8 s or so after the SIGTERM.
    3. The handler sees job.stopping; the rest of its job (about 28 s) does not fit job.deadline_s,
       so it checkpoints its progress at once, calls job.handback() and returns: no cancel, no
       attempt. A exits well before its deadline, naming the eviction in its drain report.
    4. The order's checkpoint is where the handler stopped (its `interrupted` run record)."""
    url = nats_server.url
    a = pod_worker("A", WORK_S="30", DRAIN_TIMEOUT_S="60", CONCURRENCY="1")
    order_id = publish_one(url, "grace")
    wait_started_on(url, order_id, "A")
    time.sleep(1.0)

    kube_api.delete("A", 10, disruption="EvictionByEvictionAPI")
    sent = time.monotonic()
    a.signal(signal.SIGTERM)
    code = a.process.wait(10)
    took = time.monotonic() - sent
    assert code == 0 and took < 5, f"A took {took:.1f}s (exit {code})"
    report = drained(tmp_path, "A")
    assert "DisruptionTarget EvictionByEvictionAPI" in report.why
    assert (report.handed_back_at_deadline, report.handed_back_by_handlers) == (0, 1)
    st = status_of(url, order_id)
    assert st is not None
    assert (st.status, st.handbacks, st.crashes, st.attempts) == ("queued", 1, 0, 0), st
    [stopped] = [r for r in records_of(url, order_id) if r.event == "interrupted"]
    assert stopped.progress_s is not None and stopped.progress_s >= 1.0
    assert json.loads(bytes(st.checkpoint))["done_s"] == pytest.approx(stopped.progress_s, abs=0.002)


@pytest.mark.timeout(120)
def test_a_failed_pod_read_falls_back_to_the_budget(
    nats_server: NatsServer, kube_api: KubeApiStandIn, pod_worker: Any, tmp_path: Path
) -> None:
    """1. Worker A (budget 3 s) runs a 30 s job that ignores job.stopping.
    2. The API server does not answer within a second (the stand-in stalls 3 s): A keeps its
       budget, says why in its drain report, and hands the job back at the budget's deadline (about 2.7 s
       after the SIGTERM, not sooner than the second it waited for the pod).
    3. Worker C, idle, finds the API refusing (403, RBAC missing): the budget too, named as such."""
    url = nats_server.url
    a = pod_worker("A", HANDLERS="blocking", WORK_S="30", DRAIN_TIMEOUT_S="3", CONCURRENCY="1")
    order_id = publish_one(url, "grace")
    wait_started_on(url, order_id, "A")
    kube_api.stall(3.0)
    took, code = delete_pod(kube_api, a, "A", 30)
    assert code == 0 and 2.5 <= took < 8, f"A took {took:.1f}s (exit {code})"
    report = drained(tmp_path, "A")
    assert (report.deadline_s, report.ruled_by) == (3.0, "budget")
    assert report.why.startswith("pod orderflow/A not read: TimeoutError"), report
    assert report.handed_back_at_deadline == 1
    st = status_of(url, order_id)
    assert st is not None and (st.status, st.handbacks, st.crashes) == ("queued", 1, 0), st

    kube_api.stall(0)
    kube_api.fail(403)
    c = pod_worker("C", DRAIN_TIMEOUT_S="3")
    took, code = delete_pod(kube_api, c, "C", 30)
    assert code == 0, c.logs()[-2000:]
    report = drained(tmp_path, "C")
    assert report.ruled_by == "budget" and report.why.startswith("pod orderflow/C not read: HTTP 403")
