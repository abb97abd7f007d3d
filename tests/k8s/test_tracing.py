"""Tracing in the chart (values `tracing.*`): off by default, nothing rendered; on, every ingest and
worker container gets the standard OTEL_* variables (no secret among them) that orderflow/tracing.py
reads, and both workloads' NetworkPolicies allow egress to the collector's port, only to its peers."""

from __future__ import annotations

from pathlib import Path

import pytest
from chart_tools import ALL_ON, KUSTOMIZE, Doc, by_kind, helm_template, kustomization, kustomize, validate
from test_network_policy import egress_by_port, policy

from orderflow import tracing

pytestmark = pytest.mark.procs

TEMPO = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}


def otel_env(docs: list[Doc]) -> dict[str, dict[str, str]]:
    """{deployment name: its container's OTEL_* variables}."""
    out = {}
    for d in by_kind(docs, "Deployment"):
        [c] = d["spec"]["template"]["spec"]["containers"]
        out[d["metadata"]["name"]] = {
            e["name"]: e["value"] for e in c.get("env", []) if e["name"].startswith("OTEL_")
        }
    return out


def test_off_by_default_no_variable_and_no_egress_to_a_collector() -> None:
    docs = helm_template()
    assert all(env == {} for env in otel_env(docs).values())
    for component in ("ingest", "worker"):
        assert sorted(egress_by_port(policy(docs, component))) == [53, 4222]


def test_on_every_workload_gets_the_standard_variables_and_its_egress() -> None:
    docs = helm_template(
        "--set", "tracing.enabled=true", "--set", "tracing.endpoint=http://tempo.monitoring:4318"
    )
    envs = otel_env(docs)
    assert len(envs) == 2  # the ingest and the worker
    for name, env in envs.items():
        assert env == {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://tempo.monitoring:4318",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.1",
        }, name
        assert tracing.wanted(env)  # what the services read turns tracing on
    for component in ("ingest", "worker"):
        assert egress_by_port(policy(docs, component))[4318] == [TEMPO], component
    assert 4318 not in egress_by_port(policy(docs, "test"))  # the `helm test` pod sends no traces


def test_all_on_reaches_each_worker_deployment_by_grpc_and_a_cidr_works_too() -> None:
    docs = helm_template("-f", str(ALL_ON))
    envs = otel_env(docs)
    assert envs.pop("rel-orderflow-console") == {}  # an operator's tool, not in the order's path
    assert len(envs) == 3  # the ingest, the worker, the report workers' own Deployment
    for env in envs.values():
        assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "grpc"
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://tempo.monitoring:4317"
        assert not any("HEADERS" in k for k in env)  # a token never rides in env
    for component in ("ingest", "worker"):
        [peer] = egress_by_port(policy(docs, component))[4317]
        assert peer["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "tempo"}}
    docs = helm_template(
        "--set", "tracing.enabled=true", "--set", "tracing.endpoint=http://10.1.2.3:4318",
        "--set", "tracing.sampler=always_on", "--set", "tracing.collectorTo[0].ipBlock.cidr=10.1.2.3/32",
    )  # fmt: skip
    assert all("OTEL_TRACES_SAMPLER_ARG" not in env for env in otel_env(docs).values())  # no ratio to give
    assert egress_by_port(policy(docs, "worker"))[4318] == [{"ipBlock": {"cidr": "10.1.2.3/32"}}]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (["tracing.enabled=true"], "endpoint"),  # on, but where to?
        (["tracing.enabled=true", "tracing.endpoint=tempo:4318"], "endpoint"),  # no scheme
        (["tracing.protocol=thrift"], "protocol"),
        (["tracing.ratio=1.5"], "ratio"),
        (["tracing.sampler=sometimes"], "sampler"),
    ],
)
def test_schema_refuses_bad_tracing_values(settings: list[str], message: str) -> None:
    args = [a for s in settings for a in ("--set", s)]
    with pytest.raises(AssertionError, match=message):
        helm_template(*args)


def test_the_kustomize_component_gives_both_workloads_the_variables_and_their_egress(tmp_path: Path) -> None:
    """kustomize/components/tracing on top of prod: both containers read the standard variables from
    the ConfigMap orderflow-tracing (which orderflow/tracing.py takes as "on"; no exporter headers:
    no secret in env), and both NetworkPolicies allow egress to 4318 only in "monitoring"; the
    render passes kubernetes-validate (the scanners run it in tests/k8s/test_scanners.py)."""
    root = kustomization(tmp_path, [KUSTOMIZE / "overlays" / "prod"], [KUSTOMIZE / "components" / "tracing"])
    docs = kustomize(root)
    [config] = [d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"] == "orderflow-tracing"]
    assert (
        tracing.wanted(config["data"]) and config["data"]["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"
    )
    assert not any("HEADERS" in k or "KEY" in k or "TOKEN" in k for k in config["data"])
    deployments = by_kind(docs, "Deployment")
    assert len(deployments) == 2
    for d in deployments:
        [c] = d["spec"]["template"]["spec"]["containers"]
        assert c["envFrom"] == [{"configMapRef": {"name": "orderflow-tracing"}}], d["metadata"]["name"]
    for component in ("ingest", "worker"):
        assert egress_by_port(policy(docs, component))[4318] == [TEMPO], component
    validate(docs)
