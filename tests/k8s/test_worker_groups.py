"""Per-type scaling in the chart (issue #27, item 3): with several task types the autoscalers
target each type's consumer, derived as orderflow/contract.py names it (`workers-<type>`), never
typed by hand; worker.ownDeployments runs a heavy type in a Deployment of its own, scaled on its own
consumer and slot use, with its own grace period from its own drain budget; `helm test` posts an
order of a configured type; a value naming a consumer or type that does not exist fails at
`helm template` time. Every rendering here is validated (kubernetes-validate, the CRD models) and
its ORDERFLOW_* env loaded by the real settings loader."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from chart_tools import (
    Doc,
    by_kind,
    check_orderflow_env,
    deployment,
    env_of,
    expected_worker_grace,
    helm_template,
    pod_spec,
    validate,
)

from orderflow import contract

pytestmark = pytest.mark.procs

THREE = ("--set", "config.taskTypes=default\\,invoice:4\\,report:2:7200")
OWN_REPORT = (
    *THREE,
    "--set-json",
    'worker.ownDeployments={"report": {"config": {"drainTimeoutS": 600}, '
    '"autoscaling": {"maxReplicas": 4, "lagPerReplica": 2}}}',
)


def render(*args: str) -> list[Doc]:
    docs = helm_template(*args)
    validate(docs)
    check_orderflow_env(docs)
    return docs


def named(docs: list[Doc], kind: str, suffix: str) -> Doc:
    [doc] = [d for d in by_kind(docs, kind) if d["metadata"]["name"] == f"rel-orderflow-{suffix}"]
    return doc


def lag_consumers(so: Doc) -> dict[str, str]:
    return {
        t["name"]: t["metadata"]["consumer"] for t in so["spec"]["triggers"] if t["type"] == "nats-jetstream"
    }


def run_formula(formula: str, **values: float | None) -> float:
    """KEDA's expr for the chart's one shape, max(a ?? b ?? ... ?? N, ...), `??` taking its first
    non-nil operand (a stand-in for the Go expr-lang engine; any other shape is refused)."""
    match = re.fullmatch(r"max\((.*)\)", formula)
    assert match, formula
    results = []
    for term in match.group(1).split(", "):
        *names, literal = term.split(" ?? ")
        assert literal.isdigit() and all(re.fullmatch(r"[a-z_]+", n) for n in names), term
        results.append(next((float(v) for n in names if (v := values[n]) is not None), float(literal)))
    return max(results)


def test_one_task_type_keeps_the_single_consumer_workers() -> None:
    docs = render("--set", "worker.autoscaling.mode=keda")
    [so] = by_kind(docs, "ScaledObject")
    assert lag_consumers(so) == {"lag": "workers"}
    assert "ORDERFLOW_WORKER_TYPES" not in env_of(deployment(docs, "worker"))


def test_several_task_types_scale_on_each_types_consumer_derived_not_typed() -> None:
    """The bug of the issue: with two types KEDA watched `workers`, which no longer exists."""
    docs = render(*THREE, "--set", "worker.autoscaling.mode=keda")
    [so] = by_kind(docs, "ScaledObject")
    consumers = lag_consumers(so)
    assert consumers == {
        "lag_default": "workers-default",
        "lag_invoice": "workers-invoice",
        "lag_report": "workers-report",
    }
    assert set(consumers.values()) == {
        contract.consumer_name(t, split=True) for t in ("default", "invoice", "report")
    }
    formula = so["spec"]["advanced"]["scalingModifiers"]["formula"]
    assert set(re.findall(r"[a-z_]+", formula)) - {"max"} == {*consumers, "running"}


@pytest.mark.parametrize(
    ("lags", "running", "pods"),
    [
        ((80, 0, 16), 16, 5),  # one type's backlog decides (each pod has a pool per type: not added up)
        ((0, 0, 0), 40, 3),  # busy slots, empty queues: the utilisation
        ((None, 32, None), None, 2),  # two lag triggers and Prometheus broken: the one left
        ((None, None, None), 40, 3),  # NATS monitoring unreachable: the utilisation alone
        ((None, None, None), None, 2),  # all broken: fallback.replicas pods
    ],
)
def test_the_formula_over_several_consumers_takes_the_largest_ask(
    lags: tuple[float | None, ...], running: float | None, pods: int
) -> None:
    [so] = by_kind(helm_template(*THREE, "--set", "worker.autoscaling.mode=keda"), "ScaledObject")
    modifiers = so["spec"]["advanced"]["scalingModifiers"]
    values = dict(zip(("lag_default", "lag_invoice", "lag_report"), lags, strict=True))
    composite = run_formula(modifiers["formula"], running=running, **values)
    assert -(-composite // float(modifiers["target"])) == pods


def test_hpa_mode_has_one_backlog_metric_per_consumer() -> None:
    docs = render(*THREE, "--set", "worker.autoscaling.mode=hpa")
    [hpa] = by_kind(docs, "HorizontalPodAutoscaler")
    external = [
        m["external"]["metric"]["selector"]["matchLabels"]["consumer"]
        for m in hpa["spec"]["metrics"]
        if m["type"] == "External"
    ]
    assert external == ["workers-default", "workers-invoice", "workers-report"]


@pytest.mark.parametrize("mode", ["keda", "hpa"])
def test_a_heavy_type_runs_in_a_deployment_of_its_own_scaled_apart(mode: str) -> None:
    """1. Two Deployments: the main one runs default and invoice, worker-report runs report
       (ORDERFLOW_WORKER_TYPES), both with the full ORDERFLOW_TASK_TYPES, so consumers keep their
       names; their selectors do not overlap (an autoscaler counts only its own pods).
    2. Each has its own grace period from its own drain budget: 60 + 5 + 5 and 600 + 5 + 5.
    3. Each has its own autoscaler on its own consumers and on its own types' slots.
    4. Each has its PodDisruptionBudget; report's pods have a metrics Service labelled as the
       worker's (job="worker" for dashboards and alerts); the worker NetworkPolicy covers both."""
    docs = render(
        *OWN_REPORT, "--set", f"worker.autoscaling.mode={mode}", "--set", "networkPolicy.enabled=true"
    )
    main, report = deployment(docs, "worker"), deployment(docs, "worker-report")
    assert env_of(main)["ORDERFLOW_WORKER_TYPES"]["value"] == "default,invoice"
    assert env_of(report)["ORDERFLOW_WORKER_TYPES"]["value"] == "report"
    assert env_of(main)["ORDERFLOW_TASK_TYPES"] == env_of(report)["ORDERFLOW_TASK_TYPES"]
    for one, other in ((main, report), (report, main)):
        selector = one["spec"]["selector"]["matchLabels"]
        labels = other["spec"]["template"]["metadata"]["labels"]
        assert not selector.items() <= labels.items()
    assert pod_spec(main)["terminationGracePeriodSeconds"] == expected_worker_grace(env_of(main)) == 70
    assert pod_spec(report)["terminationGracePeriodSeconds"] == expected_worker_grace(env_of(report)) == 610

    if mode == "keda":
        main_so, report_so = (
            named(docs, "ScaledObject", "worker"),
            named(docs, "ScaledObject", "worker-report"),
        )
        assert lag_consumers(main_so) == {"lag_default": "workers-default", "lag_invoice": "workers-invoice"}
        assert lag_consumers(report_so) == {"lag": "workers-report"}
        assert report_so["spec"]["scaleTargetRef"]["name"] == "rel-orderflow-worker-report"
        assert report_so["spec"]["maxReplicaCount"] == 4
        assert report_so["spec"]["advanced"]["scalingModifiers"]["target"] == "2"
        queries = {
            so["metadata"]["name"]: next(t for t in so["spec"]["triggers"] if t["name"] == "running")[
                "metadata"
            ]["query"]
            for so in (main_so, report_so)
        }
        assert 'type=~"default|invoice"' in queries["rel-orderflow-worker"]
        assert 'type=~"report"' in queries["rel-orderflow-worker-report"]
    else:
        report_hpa = named(docs, "HorizontalPodAutoscaler", "worker-report")
        [lag] = [m for m in report_hpa["spec"]["metrics"] if m["type"] == "External"]
        assert lag["external"]["metric"]["selector"]["matchLabels"] == {"consumer": "workers-report"}
        assert report_hpa["spec"]["scaleTargetRef"]["name"] == "rel-orderflow-worker-report"

    pdb = named(docs, "PodDisruptionBudget", "worker-report")
    assert pdb["spec"]["selector"]["matchLabels"] == report["spec"]["selector"]["matchLabels"]
    service = named(docs, "Service", "worker-report")
    assert service["metadata"]["labels"]["app.kubernetes.io/component"] == "worker"
    assert service["spec"]["selector"] == report["spec"]["selector"]["matchLabels"]
    policy = named(docs, "NetworkPolicy", "worker")
    [components] = policy["spec"]["podSelector"]["matchExpressions"]
    assert components["values"] == ["worker", "worker-report"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--set-json", 'worker.ownDeployments={"reports": {}}'),
            "worker.ownDeployments.reports: reports is not a task type of config.taskTypes (default, invoice, report)",
        ),
        (
            ("--set-json", 'worker.ownDeployments={"default": {}, "invoice": {}, "report": {}}'),
            "leave at least one to the main worker Deployment",
        ),
        (
            ("--set", "worker.autoscaling.consumer=workers"),
            "worker.autoscaling.consumer=workers: no such consumer for task type(s) default, invoice, report",
        ),
        (
            (
                "--set-json",
                'worker.ownDeployments={"report": {}}',
                "--set",
                "worker.autoscaling.consumer=workers-report",
            ),
            "it is workers-default or workers-invoice",
        ),
        (("--set", "tests.taskType=refund"), "tests.taskType=refund is not a task type of config.taskTypes"),
        (("--set-json", 'worker.ownDeployments={"report": {"replicas": 2}}'), "replicas"),  # the schema
    ],
    ids=[
        "unknown-type",
        "no-type-left",
        "stale-consumer",
        "consumer-of-another-deployment",
        "test-type",
        "typo",
    ],
)
def test_a_value_naming_a_type_or_consumer_that_does_not_exist_fails_at_template_time(
    args: tuple[str, ...], message: str
) -> None:
    with pytest.raises(AssertionError, match=re.escape(message)):
        helm_template(*THREE, *args)


def test_a_consumer_may_still_be_named_when_it_is_one_of_the_derived() -> None:
    docs = render(*THREE, "--set", "worker.autoscaling.mode=keda,worker.autoscaling.consumer=workers-invoice")
    [so] = by_kind(docs, "ScaledObject")
    assert lag_consumers(so) == {"lag": "workers-invoice"}


def helm_test_pod(*args: str) -> tuple[str, dict[str, str]]:
    [pod] = by_kind(helm_template(*args), "Pod")
    [container] = pod["spec"]["containers"]
    return container["command"][-1], {e["name"]: e["value"] for e in container["env"]}


def test_helm_test_posts_an_order_of_a_configured_type() -> None:
    _, env = helm_test_pod(*THREE)
    assert env["TASK_TYPE"] == "default" and json.loads(env["ORDER"])["username"] == "helm-test"
    order = {"customer": "acme", "lines": [{"sku": "a-1", "qty": 1}]}
    _, env = helm_test_pod(
        *THREE, "--set", "tests.taskType=invoice", "--set-json", f"tests.order={json.dumps(order)}"
    )
    assert env["TASK_TYPE"] == "invoice" and json.loads(env["ORDER"]) == order


def test_the_helm_test_script_gets_an_order_of_a_declared_payload_done(spawn: Any) -> None:
    """The rendered `helm test` script itself, run against a real ingest and worker (nats-server on
    a free port; the invoice type declares a payload of its own: tests/support/invoices.py): it
    posts tests.order as an invoice, which the ingest checks by the declared schema, and exits 0
    once the order is done."""
    order = {"customer": "acme", "lines": [{"sku": "a-1", "qty": 1}]}
    script, env = helm_test_pod(
        "--set", "config.taskTypes=default\\,invoice", "--set", "tests.taskType=invoice",
        "--set-json", f"tests.order={json.dumps(order)}", "--set", "tests.timeoutS=30",
    )  # fmt: skip
    types = "default,invoice"
    spawn("worker", HANDLERS="worker.demo,invoices", TASK_TYPES=types).wait_ready()
    ingest = spawn("ingest", TASK_TYPES=types).wait_ready()
    out = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, **env, "BASE_URL": ingest.url},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "status done" in out.stdout


def test_the_docs_example_of_a_deployment_of_its_own_renders_as_documented(tmp_path: Path) -> None:
    """docs/kubernetes.md's worker.ownDeployments values, as written: valid objects, the report
    Deployment with the grace period the docs state (600 + 5 + 5)."""
    from chart_tools import REPO

    text = (REPO / "docs" / "kubernetes.md").read_text()
    [block] = re.findall(r"```yaml\n(config:\n  taskTypes: \"default,report:2:7200\"\n.*?)```", text, re.S)
    values = tmp_path / "values.yaml"
    values.write_text(block)
    docs = render("-f", str(values))
    report = deployment(docs, "worker-report")
    assert pod_spec(report)["terminationGracePeriodSeconds"] == 610
    assert report["spec"]["template"]["spec"]["containers"][0]["image"].startswith("registry.example.com/")
    assert lag_consumers(named(docs, "ScaledObject", "worker-report")) == {"lag": "workers-report"}
