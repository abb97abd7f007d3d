"""The worker's autoscaler sees both the backlog and the running work, in both modes and in kustomize.

KEDA (mode keda): a nats-jetstream trigger `lag` and a prometheus trigger `running` combined by
advanced.scalingModifiers into one composite metric, max(lag ?? running ?? F, running ?? lag ?? F),
with fallback.behavior scalingModifiers (KEDA >= 2.20) so that a broken trigger reaches the formula
as nil and `??` uses the other one. The plain HPA (mode hpa): an External and a Pods metric, of
which the HPA takes the larger proposal. The scale-down tolerance is rendered for Kubernetes 1.35+.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from chart_tools import (
    KUSTOMIZE,
    Doc,
    by_kind,
    check_orderflow_env,
    deployment,
    helm_template,
    kustomization,
    kustomize,
    validate,
)

pytestmark = pytest.mark.procs


def _args(mode: str, sets: tuple[str, ...]) -> list[str]:
    """--set-json for each `key=value` (so 0.5 stays a number; helm's --set would make it a string)."""
    return ["--set", f"worker.autoscaling.mode={mode}", *(a for s in sets for a in ("--set-json", s))]


def scaled_object(*sets: str, kube_version: str = "1.34.0") -> Doc:
    args = _args("keda", sets)
    [so] = by_kind(helm_template(*args, kube_version=kube_version), "ScaledObject")
    return so


def worker_hpa(*sets: str, kube_version: str = "1.34.0") -> Doc:
    args = _args("hpa", sets)
    [hpa] = [
        h
        for h in by_kind(helm_template(*args, kube_version=kube_version), "HorizontalPodAutoscaler")
        if h["metadata"]["name"].endswith("-worker")
    ]
    return hpa


def triggers(so: Doc) -> dict[str, Doc]:
    return {t["name"]: t for t in so["spec"]["triggers"]}


def run_formula(formula: str, **values: float | None) -> float | None:
    """The formula the chart writes, evaluated as KEDA's expr does for this narrow grammar:
    max(a ?? b ?? N, b ?? a ?? N), `??` returning its first non-nil operand. A stand-in for the
    expr-lang engine, which is Go; it refuses any other shape, so a new formula needs a new check."""
    match = re.fullmatch(r"max\((\w+) \?\? (\w+) \?\? (\d+), (\w+) \?\? (\w+) \?\? (\d+)\)", formula)
    assert match, f"unexpected formula shape {formula!r}"
    a, b, n, b2, a2, n2 = match.groups()
    assert (a, b, n) == (a2, b2, n2), formula

    def coalesce(*names: str) -> float:
        for name in names:
            value = values[name]
            if value is not None:
                return float(value)
        return float(n)

    return max(coalesce(a, b), coalesce(b, a))


def test_worker_autoscaling_modes_are_exclusive() -> None:
    for mode, kinds in {"none": set(), "keda": {"ScaledObject"}, "hpa": {"HorizontalPodAutoscaler"}}.items():
        docs = helm_template("--set", f"worker.autoscaling.mode={mode}")
        assert {d["kind"] for d in docs} & {"ScaledObject", "HorizontalPodAutoscaler"} == kinds
        # The autoscaler owns the replica count: the Deployment must not fight it on upgrade.
        assert ("replicas" in deployment(docs, "worker")["spec"]) == (mode == "none")


def test_hpa_mode_refuses_scale_to_zero() -> None:
    with pytest.raises(AssertionError, match="minReplicas must be >= 1"):
        helm_template("--set", "worker.autoscaling.mode=hpa,worker.autoscaling.minReplicas=0")


# --- KEDA ------------------------------------------------------------------------------------------------
def test_scaledobject_watches_the_workers_consumer_with_a_rate_limited_scale_down() -> None:
    so = scaled_object("worker.autoscaling.scaleDown.pods=2", "worker.autoscaling.lagPerReplica=8")
    lag = triggers(so)["lag"]
    assert lag["type"] == "nats-jetstream"
    assert lag["metadata"]["stream"] == "ORDERS"
    assert lag["metadata"]["consumer"] == "workers"
    assert lag["metadata"]["natsServerMonitoringEndpoint"].endswith(":8222")
    assert lag["metadata"]["lagThreshold"] == "8"
    scale_down = so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
    assert scale_down["stabilizationWindowSeconds"] == 300
    assert scale_down["policies"] == [{"type": "Pods", "value": 2, "periodSeconds": 60}]


def test_scaledobject_combines_backlog_and_slot_utilisation_in_one_composite_metric() -> None:
    so = scaled_object("worker.autoscaling.lagPerReplica=8", "worker.autoscaling.utilisation.target=0.5")
    running = triggers(so)["running"]
    assert running["type"] == "prometheus"
    assert running["metadata"]["serverAddress"] == "http://prometheus-operated.monitoring.svc:9090"
    query = running["metadata"]["query"]
    # Slot utilisation of this release's workers, scaled to the backlog's unit (messages).
    selector = '{namespace="shop",job="worker"}'
    assert f"sum(orderflow_tasks_in_flight{selector}) / sum(orderflow_pool_slots{selector})" in query
    assert f"count(count by (instance) (orderflow_pool_slots{selector}))" in query
    assert query.endswith("* 8 / 0.5")
    modifiers = so["spec"]["advanced"]["scalingModifiers"]
    # AverageValue: desired pods = ceil(composite / target), the target being lagPerReplica.
    assert modifiers["metricType"] == "AverageValue"
    assert modifiers["target"] == "8"
    assert modifiers["activationTarget"] == "0"
    assert so["spec"]["fallback"] == {"failureThreshold": 3, "replicas": 2, "behavior": "scalingModifiers"}
    # Every name the formula uses is a trigger's.
    assert set(re.findall(r"[a-z_]+", modifiers["formula"])) - {"max"} == set(triggers(so))


@pytest.mark.parametrize(
    ("lag", "running", "pods"),
    [
        (80, 16, 10),  # a backlog: the lag decides (80 / 8)
        (8, 40, 5),  # busy slots and an empty queue: the utilisation decides
        (None, 40, 5),  # NATS monitoring unreachable: the utilisation alone
        (80, None, 10),  # Prometheus unreachable: the backlog alone
        (None, None, 2),  # both broken: fallback.replicas pods
    ],
)
def test_formula_takes_the_larger_signal_and_routes_around_a_broken_one(
    lag: float | None, running: float | None, pods: int
) -> None:
    so = scaled_object("worker.autoscaling.lagPerReplica=8")
    modifiers = so["spec"]["advanced"]["scalingModifiers"]
    composite = run_formula(modifiers["formula"], lag=lag, running=running)
    assert composite is not None
    assert -(-composite // float(modifiers["target"])) == pods  # ceil, as the HPA does
    assert so["spec"]["fallback"]["replicas"] == 2


def test_keda_mode_without_the_utilisation_signal_is_the_lag_trigger_alone() -> None:
    """KEDA < 2.20 has no per-trigger fallback: one trigger and no formula, no fallback."""
    so = scaled_object("worker.autoscaling.utilisation.enabled=false")
    assert list(triggers(so)) == ["lag"]
    assert "scalingModifiers" not in so["spec"]["advanced"]
    assert "fallback" not in so["spec"]


def test_activation_threshold_is_in_the_composite_unit() -> None:
    so = scaled_object("worker.autoscaling.keda.activationLagThreshold=3")
    assert so["spec"]["advanced"]["scalingModifiers"]["activationTarget"] == "3"
    assert triggers(so)["lag"]["metadata"]["activationLagThreshold"] == "3"


# --- plain HPA ---------------------------------------------------------------------------------------------
def test_hpa_mode_has_the_backlog_and_the_utilisation_metric() -> None:
    hpa = worker_hpa("worker.autoscaling.lagPerReplica=8", "worker.autoscaling.utilisation.target=0.75")
    external, pods = hpa["spec"]["metrics"]
    assert external["external"]["metric"]["name"] == "orderflow_consumer_lag"
    assert external["external"]["target"] == {"type": "AverageValue", "averageValue": "8"}
    assert pods["type"] == "Pods"
    assert pods["pods"]["metric"]["name"] == "orderflow_slot_utilisation"
    assert pods["pods"]["target"] == {"type": "AverageValue", "averageValue": "0.75"}
    hpa = worker_hpa("worker.autoscaling.utilisation.enabled=false")
    assert [m["type"] for m in hpa["spec"]["metrics"]] == ["External"]


# --- scale-down tolerance, gated on the cluster version ---------------------------------------------------
@pytest.mark.parametrize(
    ("kube_version", "present"), [("1.32.0", False), ("1.34.0", False), ("1.35.0", True), ("1.37.0", True)]
)
@pytest.mark.parametrize("mode", ["keda", "hpa"])
def test_scale_down_tolerance_is_rendered_only_where_the_cluster_serves_it(
    mode: str, kube_version: str, present: bool
) -> None:
    """HPAConfigurableTolerance: alpha (off by default) in 1.33-1.34, beta and on from 1.35; the
    field does not exist before 1.33. Each rendering validates against its own version's schema."""
    docs = helm_template(
        *_args(mode, ("worker.autoscaling.scaleDown.tolerance=0.25",)), kube_version=kube_version
    )
    validate(docs, kube_version)
    [autoscaler] = by_kind(docs, "ScaledObject" if mode == "keda" else "HorizontalPodAutoscaler")
    spec = autoscaler["spec"]
    behavior = (
        spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"] if mode == "keda" else spec["behavior"]
    )
    assert ("tolerance" in behavior["scaleDown"]) == present
    assert "tolerance" not in behavior["scaleUp"]
    if present:
        assert behavior["scaleDown"]["tolerance"] == "0.25"


def test_a_null_tolerance_leaves_the_cluster_default() -> None:
    hpa = worker_hpa("worker.autoscaling.scaleDown.tolerance=null", kube_version="1.35.0")
    assert "tolerance" not in hpa["spec"]["behavior"]["scaleDown"]


def test_the_validator_knows_tolerance_only_from_1_33() -> None:
    """Guard for the gate: on a 1.32 schema the field is an error, so the gate matters."""
    hpa = worker_hpa(kube_version="1.35.0")
    with pytest.raises(AssertionError, match="tolerance"):
        validate([hpa], "1.32.0")


# --- kustomize --------------------------------------------------------------------------------------------
def _built(tmp_path: Path, *components: str) -> list[Doc]:
    return kustomize(
        kustomization(tmp_path, [KUSTOMIZE / "base"], [KUSTOMIZE / "components" / c for c in components])
    )


def test_kustomize_keda_component_matches_the_chart(tmp_path: Path) -> None:
    [so] = by_kind(_built(tmp_path, "autoscaling-keda"), "ScaledObject")
    chart = scaled_object()
    assert so["spec"]["advanced"]["scalingModifiers"] == chart["spec"]["advanced"]["scalingModifiers"]
    assert so["spec"]["fallback"] == chart["spec"]["fallback"]
    assert set(triggers(so)) == set(triggers(chart))
    # The same query, up to the namespace (the chart's test release is in "shop").
    chart_query = triggers(chart)["running"]["metadata"]["query"].replace(
        'namespace="shop"', 'namespace="orderflow"'
    )
    assert " ".join(triggers(so)["running"]["metadata"]["query"].split()) == chart_query


@pytest.mark.parametrize("path", ["overlays/prod"])
def test_kustomize_utilisation_query_selects_the_namespace_the_workers_run_in(path: str) -> None:
    docs = kustomize(KUSTOMIZE / path)
    for so in by_kind(docs, "ScaledObject"):
        namespaces = set(re.findall(r'namespace="([^"]*)"', triggers(so)["running"]["metadata"]["query"]))
        assert namespaces == {deployment(docs, "worker")["metadata"]["namespace"]}


def test_kustomize_hpa_component_matches_the_chart(tmp_path: Path) -> None:
    [hpa] = [
        h
        for h in by_kind(_built(tmp_path, "autoscaling-hpa"), "HorizontalPodAutoscaler")
        if h["metadata"]["name"] == "orderflow-worker"
    ]
    assert hpa["spec"]["metrics"] == worker_hpa()["spec"]["metrics"]


@pytest.mark.parametrize("autoscaling", ["autoscaling-keda", "autoscaling-hpa"])
def test_kustomize_tolerance_component_adds_the_field_for_1_35(autoscaling: str, tmp_path: Path) -> None:
    docs = _built(tmp_path, autoscaling, "scale-down-tolerance")
    validate(docs, "1.35.0")
    check_orderflow_env(docs)
    [autoscaler] = [
        d
        for d in docs
        if d["kind"] in ("ScaledObject", "HorizontalPodAutoscaler")
        and d["metadata"]["name"] == "orderflow-worker"
    ]
    spec = autoscaler["spec"]
    behavior = (
        spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
        if autoscaler["kind"] == "ScaledObject"
        else spec["behavior"]
    )
    chart = scaled_object(kube_version="1.35.0")
    chart_tolerance = chart["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"][
        "tolerance"
    ]
    assert behavior["scaleDown"]["tolerance"] == chart_tolerance
