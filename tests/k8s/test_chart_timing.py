"""Derived timings, never set on their own: the grace periods and the worker's liveness probe.

- terminationGracePeriodSeconds of both workloads adds the one NATS drain budget
  (config.natsDrainTimeoutS, ORDERFLOW_NATS_DRAIN_TIMEOUT_S) to their own shutdown;
- the worker's liveness probe restarts a worker whose event loop is blocked before any of its
  jobs is redelivered: ack_wait/4 + periodSeconds x failureThreshold + timeoutSeconds +
  the probe's terminationGracePeriodSeconds < ack_wait/2 (the least a job has left) < ack_wait.
"""

from __future__ import annotations

import math
from dataclasses import fields

import pytest
from chart_tools import (
    KUSTOMIZE,
    OVERLAYS,
    PENDING_SETTINGS,
    container,
    deployment,
    env_of,
    expected_ingest_grace,
    expected_worker_grace,
    helm_template,
    kustomize,
    least_ack_wait_left_s,
    liveness_restart_bound_s,
    pod_spec,
)

from orderflow.config import Settings

pytestmark = pytest.mark.procs


# --- terminationGracePeriodSeconds ----------------------------------------------------------------------
@pytest.mark.parametrize(("drain_s", "grace_s"), [(60, 70), (300, 310), (45.5, 56)])
def test_worker_grace_period_follows_the_drain_timeout(drain_s: float, grace_s: int) -> None:
    """grace = ceil(drainTimeoutS) + ceil(config.natsDrainTimeoutS) (5) + safetyMarginS (5)."""
    worker = deployment(helm_template("--set-json", f"worker.config.drainTimeoutS={drain_s}"), "worker")
    assert pod_spec(worker)["terminationGracePeriodSeconds"] == grace_s
    assert float(env_of(worker)["ORDERFLOW_DRAIN_TIMEOUT_S"]["value"]) == drain_s
    assert expected_worker_grace(env_of(worker)) == grace_s


@pytest.mark.parametrize(
    ("nats_drain_s", "worker_grace_s", "ingest_grace_s"), [(5, 70, 25), (10, 75, 30), (2.5, 68, 23)]
)
def test_both_grace_periods_take_the_one_nats_drain_budget(
    nats_drain_s: float, worker_grace_s: int, ingest_grace_s: int
) -> None:
    """One value feeds both services (their env) and both grace periods."""
    docs = helm_template("--set-json", f"config.natsDrainTimeoutS={nats_drain_s}")
    for component, grace_s in (("worker", worker_grace_s), ("ingest", ingest_grace_s)):
        d = deployment(docs, component)
        assert float(env_of(d)["ORDERFLOW_NATS_DRAIN_TIMEOUT_S"]["value"]) == nats_drain_s
        assert pod_spec(d)["terminationGracePeriodSeconds"] == grace_s


def test_worker_grace_period_includes_the_configured_margin() -> None:
    worker = deployment(
        helm_template(
            "--set",
            "worker.config.drainTimeoutS=120,config.natsDrainTimeoutS=10,worker.termination.safetyMarginS=3",
        ),
        "worker",
    )
    assert pod_spec(worker)["terminationGracePeriodSeconds"] == 120 + 10 + 3


@pytest.mark.parametrize(("delay_s", "timeout_s", "grace_s"), [(5, 10, 25), (7.5, 10, 28), (0, 30, 40)])
def test_ingest_grace_period_follows_its_shutdown_settings(
    delay_s: float, timeout_s: float, grace_s: int
) -> None:
    """grace = ceil(shutdownDelayS + shutdownTimeoutS) + ceil(natsDrainTimeoutS) (5) + safetyMarginS (5);
    no preStop sleep on top."""
    ingest = deployment(
        helm_template(
            "--set-json",
            f"ingest.config.shutdownDelayS={delay_s}",
            "--set-json",
            f"ingest.config.shutdownTimeoutS={timeout_s}",
        ),
        "ingest",
    )
    assert pod_spec(ingest)["terminationGracePeriodSeconds"] == grace_s
    assert "lifecycle" not in container(ingest)


def test_nats_drain_budget_default_is_the_services_default() -> None:
    """The chart's config.natsDrainTimeoutS is Settings.nats_drain_timeout_s's default: the grace
    periods budget what the services actually wait."""
    default = {f.name: f.default for f in fields(Settings)}.get("nats_drain_timeout_s")
    if default is None:
        assert "NATS_DRAIN_TIMEOUT_S" in PENDING_SETTINGS
        pytest.skip("Settings.nats_drain_timeout_s is not in orderflow/config.py yet")
    env = env_of(deployment(helm_template(), "worker"))
    assert float(env["ORDERFLOW_NATS_DRAIN_TIMEOUT_S"]["value"]) == default


@pytest.mark.parametrize("path", OVERLAYS)
def test_kustomize_grace_periods_follow_the_settings(path: str) -> None:
    docs = kustomize(KUSTOMIZE / path)
    worker, ingest = deployment(docs, "worker"), deployment(docs, "ingest")
    assert pod_spec(worker)["terminationGracePeriodSeconds"] == expected_worker_grace(env_of(worker))
    assert pod_spec(ingest)["terminationGracePeriodSeconds"] == expected_ingest_grace(env_of(ingest))


# --- the worker's liveness probe -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("ack_wait_s", "period_s"),
    [
        (30, 2),  # 7.5 + 2 x 2 + 1 + 1 = 13.5 < 15
        (20, 1),  # 5 + 1 x 2 + 1 + 1 = 9 < 10
        (45, 4),  # 11.25 + 4 x 2 + 1 + 1 = 21.25 < 22.5
        (60, 6),  # 15 + 6 x 2 + 1 + 1 = 29 < 30
        (300, 10),  # capped at maxPeriodSeconds
        (86400, 10),
    ],
)
def test_worker_liveness_restarts_a_blocked_loop_before_the_ack_wait_runs_out(
    ack_wait_s: float, period_s: int
) -> None:
    """Scenario: the event loop blocks at t = 0 with jobs running.
    1. /healthz turns 503 at ack_wait/4 (the worker's loop_block_limit_s);
    2. the kubelet's failureThreshold-th failure comes within periodSeconds x failureThreshold,
       each probe taking up to timeoutSeconds;
    3. SIGKILL follows after the probe's terminationGracePeriodSeconds;
    4. every job's message has at least ack_wait/2 left before redelivery: the restart comes first."""
    worker = deployment(helm_template("--set-json", f"worker.config.ackWaitS={ack_wait_s}"), "worker")
    probe = container(worker)["livenessProbe"]
    assert probe["httpGet"]["path"] == "/healthz"
    assert probe["periodSeconds"] == period_s
    bound_s = liveness_restart_bound_s(ack_wait_s, probe)
    assert bound_s < least_ack_wait_left_s(ack_wait_s) < ack_wait_s
    if period_s < 10:  # not capped: the largest period that keeps the bound
        longer = {**probe, "periodSeconds": period_s + 1}
        assert liveness_restart_bound_s(ack_wait_s, longer) >= least_ack_wait_left_s(ack_wait_s)


@pytest.mark.parametrize(
    "settings",
    [
        "worker.livenessProbe.failureThreshold=3",
        "worker.livenessProbe.timeoutSeconds=2,worker.livenessProbe.terminationGracePeriodSeconds=2",
        "worker.livenessProbe.maxPeriodSeconds=1",
    ],
)
def test_worker_liveness_bound_holds_for_other_probe_settings(settings: str) -> None:
    for ack_wait_s in (30, 45, 90):
        docs = helm_template("--set", f"{settings},worker.config.ackWaitS={ack_wait_s}")
        probe = container(deployment(docs, "worker"))["livenessProbe"]
        assert probe["periodSeconds"] >= 1
        assert liveness_restart_bound_s(ack_wait_s, probe) < least_ack_wait_left_s(ack_wait_s)


@pytest.mark.parametrize("ack_wait_s", [12, 16])  # 16: 4 + 1 x 2 + 1 + 1 = 8, equal is not below
def test_worker_liveness_refuses_an_ack_wait_too_short_for_any_period(ack_wait_s: int) -> None:
    with pytest.raises(AssertionError, match=rf"ackWaitS={ack_wait_s} is too short.*timeoutSeconds \(1\)"):
        helm_template("--set", f"worker.config.ackWaitS={ack_wait_s}")


@pytest.mark.parametrize("path", OVERLAYS)
def test_kustomize_liveness_follows_the_ack_wait(path: str) -> None:
    worker = deployment(kustomize(KUSTOMIZE / path), "worker")
    ack_wait_s = float(env_of(worker)["ORDERFLOW_ACK_WAIT_S"]["value"])
    probe = container(worker)["livenessProbe"]
    assert liveness_restart_bound_s(ack_wait_s, probe) < least_ack_wait_left_s(ack_wait_s)


def test_kustomize_and_helm_probes_agree() -> None:
    helm, base = deployment(helm_template(), "worker"), deployment(kustomize(KUSTOMIZE / "base"), "worker")
    assert container(helm)["livenessProbe"] == container(base)["livenessProbe"]
    assert math.isclose(
        float(env_of(helm)["ORDERFLOW_ACK_WAIT_S"]["value"]),
        float(env_of(base)["ORDERFLOW_ACK_WAIT_S"]["value"]),
    )
