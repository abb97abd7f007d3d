"""Offline checks of the Helm chart and the kustomize tree: lint, render, and validate every object.

Built-in kinds go through kubernetes-validate --strict (unknown fields are errors) for
KUBERNETES_VERSION; the CRD kinds (KEDA ScaledObject, Prometheus Operator ServiceMonitor and
PrometheusRule) through the cloudcoil models of their CRD schemas, round-tripped so that an
unknown field fails too. helm and kubectl come from .tools/bin (scripts/tools/k8s.sh); a missing
one fails in CI and skips elsewhere.
"""

from __future__ import annotations

import copy
import math
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from orderflow.config import KNOWN, ConfigError, load_settings

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / ".tools" / "bin"
CHART = REPO / "charts" / "orderflow"
ALL_ON = CHART / "ci" / "all-on-values.yaml"
KUSTOMIZE = REPO / "kustomize"
OVERLAYS = ["base", "overlays/dev", "overlays/prod"]
COMPONENTS = ["monitoring", "autoscaling-keda", "autoscaling-hpa", "network-policy"]
KUBERNETES_VERSION = "1.34.0"
CI = bool(os.environ.get("CI"))

Doc = dict[str, Any]


def tool(name: str) -> str:
    path = TOOLS / name
    if not os.access(path, os.X_OK):
        message = f"{path} missing: run scripts/tools/k8s.sh"
        if CI:
            pytest.fail(message)
        pytest.skip(message)
    return str(path)


def need(module: str) -> None:
    """The validators are Python packages of the dev extra: missing fails in CI, skips elsewhere."""
    try:
        __import__(module)
    except ImportError:
        message = f"{module} missing: pip install -e '.[dev]'"
        if CI:
            pytest.fail(message)
        pytest.skip(message)


def run(*args: str) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=REPO)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def docs_of(text: str) -> list[Doc]:
    return [d for d in yaml.safe_load_all(text) if d]


@cache
def _helm_template(args: tuple[str, ...], chart: Path = CHART) -> tuple[Doc, ...]:
    out = run(tool("helm"), "template", "rel", str(chart), "--namespace", "shop", *args)
    return tuple(docs_of(out))


def helm_template(*args: str, chart: Path = CHART) -> list[Doc]:
    return copy.deepcopy(list(_helm_template(args, chart)))


@cache
def _kustomize(path: str) -> tuple[Doc, ...]:
    return tuple(docs_of(run(tool("kubectl"), "kustomize", path)))


def kustomize(path: Path) -> list[Doc]:
    return copy.deepcopy(list(_kustomize(str(path))))


def by_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def deployment(docs: list[Doc], component: str) -> Doc:
    [d] = [
        d
        for d in by_kind(docs, "Deployment")
        if d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == component
    ]
    return d


def pod_spec(d: Doc) -> Doc:
    return dict(d["spec"]["template"]["spec"])


def env_of(d: Doc) -> dict[str, Doc]:
    [container] = pod_spec(d)["containers"]
    return {e["name"]: e for e in container.get("env", [])}


# --- validation ------------------------------------------------------------------------------------
def _dropped(sent: Any, kept: Any, path: str = "") -> list[str]:
    """Fields of `sent` that a model round trip did not keep: unknown to the schema."""
    if isinstance(sent, dict) and isinstance(kept, dict):
        out = []
        for key, value in sent.items():
            out += [f"{path}.{key}"] if key not in kept else _dropped(value, kept[key], f"{path}.{key}")
        return out
    if isinstance(sent, list) and isinstance(kept, list):
        return [
            p for i, (a, b) in enumerate(zip(sent, kept, strict=True)) for p in _dropped(a, b, f"{path}[{i}]")
        ]
    return []


def _crd_models() -> dict[str, Any]:
    need("cloudcoil.models.keda")
    need("cloudcoil.models.prometheus_operator")
    from cloudcoil.models.keda.v1alpha1 import ScaledObject
    from cloudcoil.models.prometheus_operator.v1 import PrometheusRule, ServiceMonitor

    return {
        "keda.sh/v1alpha1/ScaledObject": ScaledObject,
        "monitoring.coreos.com/v1/ServiceMonitor": ServiceMonitor,
        "monitoring.coreos.com/v1/PrometheusRule": PrometheusRule,
    }


# Documented metadata of KEDA's nats-jetstream trigger (a free-form map in the CRD schema).
NATS_JETSTREAM_TRIGGER_KEYS = {
    "natsServerMonitoringEndpoint",
    "account",
    "stream",
    "consumer",
    "lagThreshold",
    "activationLagThreshold",
    "useHttps",
}


def validate(docs: list[Doc]) -> None:
    need("kubernetes_validate")
    import kubernetes_validate

    models = _crd_models()
    problems: list[str] = []
    for doc in docs:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        model = models.get(f"{doc['apiVersion']}/{doc['kind']}")
        try:
            if model is None:
                kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
                continue
            kept = model.model_validate(doc).model_dump(by_alias=True, exclude_unset=True, mode="json")
            problems += [f"{name}: unknown field {p}" for p in _dropped(doc, kept)]
            for trigger in doc.get("spec", {}).get("triggers", []):
                unknown = set(trigger["metadata"]) - NATS_JETSTREAM_TRIGGER_KEYS
                problems += [f"{name}: unknown trigger metadata {sorted(unknown)}"] if unknown else []
        except Exception as exc:  # every validator's error type: report them all at once
            problems.append(f"{name}: {type(exc).__name__}: {exc}")
    assert not problems, "\n".join(problems)


def check_orderflow_env(docs: list[Doc]) -> None:
    """Every ORDERFLOW_* env name is a known setting and the literal values load; no service links."""
    placeholders = {
        "ORDERFLOW_NATS_URL": "nats://nats:4222",
        "ORDERFLOW_NATS_USER": "u",
        "ORDERFLOW_NATS_PASSWORD": "p",
    }
    for d in by_kind(docs, "Deployment"):
        assert pod_spec(d)["enableServiceLinks"] is False, d["metadata"]["name"]
        env = env_of(d)
        names = {n for n in env if n.startswith("ORDERFLOW_")}
        unknown = {n for n in names if n.removeprefix("ORDERFLOW_") not in KNOWN}
        assert not unknown, f"{d['metadata']['name']}: unknown settings {unknown}"
        values = {n: e.get("value", placeholders.get(n, "x")) for n, e in env.items() if n in names}
        service = deployment_component(d)
        try:
            load_settings("ingest" if service == "ingest" else "worker", values)
        except ConfigError as exc:
            raise AssertionError(f"{d['metadata']['name']}: {exc}") from None


def deployment_component(d: Doc) -> str:
    return str(d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"])


def expected_worker_grace(env: dict[str, Doc], margins_s: int = 10) -> int:
    return math.ceil(float(env["ORDERFLOW_DRAIN_TIMEOUT_S"]["value"])) + margins_s


def expected_ingest_grace(env: dict[str, Doc], margin_s: int = 5) -> int:
    delay = float(env["ORDERFLOW_SHUTDOWN_DELAY_S"]["value"])
    timeout = float(env["ORDERFLOW_SHUTDOWN_TIMEOUT_S"]["value"])
    return math.ceil(delay + timeout) + margin_s


# --- helm ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("values", [[], ["-f", str(ALL_ON)]], ids=["defaults", "all-on"])
def test_helm_lint_strict(values: list[str]) -> None:
    run(tool("helm"), "lint", "--strict", str(CHART), *values)


VARIANTS: dict[str, list[str]] = {
    "defaults": [],
    "all-on": ["-f", str(ALL_ON)],
    "all-on-hpa": [
        "-f",
        str(ALL_ON),
        "--set",
        "worker.autoscaling.mode=hpa,worker.autoscaling.minReplicas=1",
    ],
    "creds-existing-secret": [
        "--set",
        "nats.existingSecret=nats-client,nats.auth.mode=creds,worker.podDeletionCost.enabled=false",
    ],
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_helm_template_renders_valid_objects(variant: str) -> None:
    docs = helm_template(*VARIANTS[variant])
    validate(docs)
    check_orderflow_env(docs)


def test_defaults_render_the_plain_workloads_only() -> None:
    kinds = sorted(d["kind"] for d in helm_template())
    assert kinds == sorted(
        ["Deployment"] * 2
        + ["Service"] * 2
        + ["PodDisruptionBudget"] * 2
        + ["ServiceAccount", "Role", "RoleBinding", "Secret", "Pod"]
    )


def test_all_on_renders_every_optional_object() -> None:
    docs = helm_template("-f", str(ALL_ON))
    kinds = {d["kind"] for d in docs}
    assert {"ScaledObject", "HorizontalPodAutoscaler", "NetworkPolicy", "ServiceMonitor"} <= kinds
    if (CHART / "files" / "prometheus-rules.yaml").is_file():
        assert by_kind(docs, "PrometheusRule")
    dashboards = sorted((CHART / "dashboards").glob("*.json"))
    configmaps = [
        c for c in by_kind(docs, "ConfigMap") if c["metadata"]["labels"].get("grafana_dashboard") == "1"
    ]
    assert len(configmaps) == len(dashboards)


def test_monitoring_objects_are_skipped_when_their_files_are_absent(tmp_path: Path) -> None:
    chart = tmp_path / "orderflow"
    shutil.copytree(CHART, chart, ignore=shutil.ignore_patterns("files", "dashboards"))
    docs = helm_template("-f", str(ALL_ON), chart=chart)
    assert not by_kind(docs, "PrometheusRule")
    assert not by_kind(docs, "ConfigMap")
    assert by_kind(docs, "ServiceMonitor")


def test_prometheus_rule_carries_the_rule_file_verbatim(tmp_path: Path) -> None:
    chart = tmp_path / "orderflow"
    shutil.copytree(CHART, chart)
    rules = {
        "groups": [
            {
                "name": "orderflow.test",
                "rules": [
                    {
                        "alert": "OrderflowTest",
                        "expr": 'sum(rate(orderflow_work_done_total{status="error"}[5m])) > 0',
                        "for": "5m",
                        "labels": {"severity": "warning"},
                        "annotations": {"summary": "errors on {{ $labels.instance }}"},
                    }
                ],
            }
        ]
    }
    (chart / "files").mkdir(exist_ok=True)
    (chart / "files" / "prometheus-rules.yaml").write_text(yaml.safe_dump(rules))
    [rule] = by_kind(
        helm_template("--set", "metrics.prometheusRule.enabled=true", chart=chart), "PrometheusRule"
    )
    assert rule["spec"] == rules
    validate([rule])


def test_worker_autoscaling_modes_are_exclusive() -> None:
    for mode, kinds in {"none": set(), "keda": {"ScaledObject"}, "hpa": {"HorizontalPodAutoscaler"}}.items():
        docs = helm_template("--set", f"worker.autoscaling.mode={mode}")
        assert {d["kind"] for d in docs} & {"ScaledObject", "HorizontalPodAutoscaler"} == kinds
        # The autoscaler owns the replica count: the Deployment must not fight it on upgrade.
        assert ("replicas" in deployment(docs, "worker")["spec"]) == (mode == "none")


def test_scaledobject_watches_the_workers_consumer_with_a_rate_limited_scale_down() -> None:
    docs = helm_template(
        "--set",
        "worker.autoscaling.mode=keda,worker.autoscaling.scaleDown.pods=2,worker.autoscaling.lagPerReplica=8",
    )
    [so] = by_kind(docs, "ScaledObject")
    [trigger] = so["spec"]["triggers"]
    assert trigger["type"] == "nats-jetstream"
    assert trigger["metadata"]["stream"] == "ORDERS"
    assert trigger["metadata"]["consumer"] == "workers"
    assert trigger["metadata"]["natsServerMonitoringEndpoint"].endswith(":8222")
    assert trigger["metadata"]["lagThreshold"] == "8"
    scale_down = so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
    assert scale_down["stabilizationWindowSeconds"] == 300
    assert scale_down["policies"] == [{"type": "Pods", "value": 2, "periodSeconds": 60}]
    assert so["spec"]["scaleTargetRef"]["name"] == deployment(docs, "worker")["metadata"]["name"]


def test_hpa_mode_refuses_scale_to_zero() -> None:
    with pytest.raises(AssertionError, match="minReplicas must be >= 1"):
        helm_template("--set", "worker.autoscaling.mode=hpa,worker.autoscaling.minReplicas=0")


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("worker.config.drainTimout=30", "drainTimout"),  # typo in a config key
        ("worker.autoscaling.mode=kedaa", "mode"),
        ("ingest.config.mode=fast", "mode"),
        ("nats.url=http://nats:4222", "url"),
        ("worker.config.drainTimeoutS=0", "drainTimeoutS"),
    ],
)
def test_schema_rejects_typos_and_bad_values(setting: str, message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        helm_template("--set", setting)


def test_nats_settings_come_from_the_secret() -> None:
    docs = helm_template("--set", "nats.auth.mode=userPassword,nats.auth.user=u,nats.auth.password=p")
    [secret] = by_kind(docs, "Secret")
    assert set(secret["stringData"]) == {"url", "user", "password"}
    for component in ("ingest", "worker"):
        env = env_of(deployment(docs, component))
        for name in ("ORDERFLOW_NATS_URL", "ORDERFLOW_NATS_USER", "ORDERFLOW_NATS_PASSWORD"):
            assert env[name]["valueFrom"]["secretKeyRef"]["name"] == secret["metadata"]["name"]

    docs = helm_template("--set", "nats.existingSecret=nats-client,nats.auth.mode=creds")
    assert not by_kind(docs, "Secret")
    worker = deployment(docs, "worker")
    assert env_of(worker)["ORDERFLOW_NATS_CREDS_FILE"]["value"] == "/etc/orderflow/nats/nats.creds"
    [volume] = [v for v in pod_spec(worker)["volumes"] if v["name"] == "nats-creds"]
    assert volume["secret"]["secretName"] == "nats-client"


def test_worker_gets_its_pod_identity_and_rbac_for_the_deletion_cost() -> None:
    docs = helm_template()
    worker = deployment(docs, "worker")
    env = env_of(worker)
    assert env["ORDERFLOW_POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["ORDERFLOW_POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    [role] = by_kind(docs, "Role")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "patch"]}]
    [binding] = by_kind(docs, "RoleBinding")
    assert binding["subjects"][0]["name"] == pod_spec(worker)["serviceAccountName"]
    assert pod_spec(deployment(docs, "ingest"))["automountServiceAccountToken"] is False

    docs = helm_template("--set", "worker.podDeletionCost.enabled=false")
    assert not by_kind(docs, "Role")
    assert env_of(deployment(docs, "worker"))["ORDERFLOW_POD_DELETION_COST"]["value"] == "off"
    assert pod_spec(deployment(docs, "worker"))["automountServiceAccountToken"] is False


def test_pods_run_non_root_on_a_read_only_root_filesystem() -> None:
    for pod in [pod_spec(d) for d in by_kind(helm_template(), "Deployment")] + [
        p["spec"] for p in by_kind(helm_template(), "Pod")
    ]:
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in pod["containers"]:
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]


def test_helm_test_pod_polls_the_ingest_service_for_done() -> None:
    docs = helm_template()
    [pod] = by_kind(docs, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    [container] = pod["spec"]["containers"]
    assert container["image"] == "orderflow/ingest:0.1.0"
    script = container["command"][-1]
    compile(script, "helm-test", "exec")  # the inline script is valid python
    assert '"POST", "/orders"' in script and '== "done"' in script
    [service] = [s for s in by_kind(docs, "Service") if s["metadata"]["name"].endswith("-ingest")]
    base_url = {e["name"]: e["value"] for e in container["env"]}["BASE_URL"]
    assert base_url == f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}"


def test_notes_render_with_the_derived_grace_period() -> None:
    out = run(tool("helm"), "install", "rel", str(CHART), "-n", "shop", "--dry-run=client", "-f", str(ALL_ON))
    notes = out.split("NOTES:", 1)[1]
    assert "helm test rel -n shop" in notes
    assert "terminationGracePeriodSeconds 70 s (derived)" in notes
    assert "Worker autoscaling: keda (0..20 pods" in notes


# --- terminationGracePeriodSeconds is derived, never set on its own --------------------------------------
@pytest.mark.parametrize(("drain_s", "grace_s"), [(60, 70), (300, 310), (45.5, 56)])
def test_worker_grace_period_follows_the_drain_timeout(drain_s: float, grace_s: int) -> None:
    """grace = ceil(drainTimeoutS) + natsDrainMarginS (5) + safetyMarginS (5)."""
    worker = deployment(helm_template("--set-json", f"worker.config.drainTimeoutS={drain_s}"), "worker")
    assert pod_spec(worker)["terminationGracePeriodSeconds"] == grace_s
    assert float(env_of(worker)["ORDERFLOW_DRAIN_TIMEOUT_S"]["value"]) == drain_s
    assert expected_worker_grace(env_of(worker)) == grace_s


def test_worker_grace_period_includes_the_configured_margins() -> None:
    worker = deployment(
        helm_template(
            "--set",
            "worker.config.drainTimeoutS=120,worker.termination.natsDrainMarginS=10,worker.termination.safetyMarginS=3",
        ),
        "worker",
    )
    assert pod_spec(worker)["terminationGracePeriodSeconds"] == 120 + 10 + 3


@pytest.mark.parametrize(("delay_s", "timeout_s", "grace_s"), [(5, 10, 20), (7.5, 10, 23), (0, 30, 35)])
def test_ingest_grace_period_follows_its_shutdown_settings(
    delay_s: float, timeout_s: float, grace_s: int
) -> None:
    """grace = ceil(shutdownDelayS + shutdownTimeoutS) + marginS (5); no preStop sleep on top."""
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
    [container] = pod_spec(ingest)["containers"]
    assert "lifecycle" not in container


# --- values.yaml documentation ----------------------------------------------------------------------------
def _values_key_lines() -> Iterator[tuple[str, bool]]:
    """(dotted key path, has a comment right above) for every key line of values.yaml."""
    stack: list[tuple[int, str]] = []
    previous = ""
    for line in (CHART / "values.yaml").read_text().splitlines():
        match = re.match(r"^( *)([A-Za-z_][A-Za-z0-9_]*):", line)
        if match:
            indent = len(match.group(1))
            while stack and stack[-1][0] >= indent:
                stack.pop()
            stack.append((indent, match.group(2)))
            yield ".".join(k for _, k in stack), previous.lstrip().startswith("#")
        if line.strip():
            previous = line


def _schema_paths(schema: Doc, prefix: str = "") -> Iterator[str]:
    for key, sub in schema.get("properties", {}).items():
        path = f"{prefix}{key}"
        yield path
        yield from _schema_paths(sub, path + ".")


def test_every_values_key_is_commented_and_typed_in_the_schema() -> None:
    import json

    schema = json.loads((CHART / "values.schema.json").read_text())
    schema_paths = set(_schema_paths(schema)) - {"global"}
    documented = dict(_values_key_lines())
    missing_in_values = schema_paths - set(documented)
    assert not missing_in_values, f"schema keys without a default in values.yaml: {sorted(missing_in_values)}"
    uncommented = sorted(p for p in schema_paths if not documented[p])
    assert not uncommented, f"values.yaml keys without a comment: {uncommented}"


def test_no_dead_values() -> None:
    """Every values key is read by a template (the config maps are turned into env wholesale)."""
    templates = "\n".join(p.read_text() for p in (CHART / "templates").rglob("*") if p.is_file())
    generic = ("config.", "ingest.config.", "worker.config.")
    free_form = ("podSecurityContext.", "containerSecurityContext.", ".resources.", ".strategy.", ".labels.")
    dead = []
    for path, _ in _values_key_lines():
        if path.startswith(generic) or any(f in f".{path}." for f in free_form):
            continue
        if path.split(".")[-1] not in templates:
            dead.append(path)
    assert not dead, f"values never used by a template: {dead}"


# --- kustomize ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", OVERLAYS)
def test_kustomize_builds_valid_objects(path: str) -> None:
    docs = kustomize(KUSTOMIZE / path)
    validate(docs)
    check_orderflow_env(docs)


@pytest.mark.parametrize("component", COMPONENTS)
def test_each_component_applies_to_the_base_on_its_own(component: str, tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                # kustomize wants relative paths; directories outside the root are fine.
                "resources": [os.path.relpath(KUSTOMIZE / "base", tmp_path)],
                "components": [os.path.relpath(KUSTOMIZE / "components" / component, tmp_path)],
            }
        )
    )
    docs = kustomize(tmp_path)
    validate(docs)
    if component.startswith("autoscaling"):
        for d in by_kind(docs, "Deployment"):
            assert "replicas" not in d["spec"], "the autoscaler owns the replica count"


def test_base_deploys_on_its_own() -> None:
    docs = kustomize(KUSTOMIZE / "base")
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(
        ["Deployment"] * 2
        + ["Service"] * 2
        + ["PodDisruptionBudget"] * 2
        + ["ServiceAccount", "Role", "RoleBinding"]
    )
    assert {d["metadata"]["namespace"] for d in docs} == {"orderflow"}


@pytest.mark.parametrize("path", OVERLAYS)
def test_kustomize_grace_periods_follow_the_settings(path: str) -> None:
    docs = kustomize(KUSTOMIZE / path)
    worker, ingest = deployment(docs, "worker"), deployment(docs, "ingest")
    assert pod_spec(worker)["terminationGracePeriodSeconds"] == expected_worker_grace(env_of(worker))
    assert pod_spec(ingest)["terminationGracePeriodSeconds"] == expected_ingest_grace(env_of(ingest))


def test_overlays_only_patch_and_keep_secrets_out_of_patches() -> None:
    for overlay in ("dev", "prod"):
        root = KUSTOMIZE / "overlays" / overlay
        kustomization = yaml.safe_load((root / "kustomization.yaml").read_text())
        assert kustomization["resources"] == ["../../base"]
        for patch in kustomization["patches"]:
            docs = docs_of((root / patch["path"]).read_text())
            assert all(d["kind"] != "Secret" for d in docs), patch
            text = (root / patch["path"]).read_text()
            assert "secretKeyRef" not in text and "stringData" not in text, patch
    assert "secretGenerator" not in yaml.safe_load(
        (KUSTOMIZE / "overlays/prod/kustomization.yaml").read_text()
    )
    # The dev Secret is generated and the Deployments follow its hashed name.
    dev = kustomize(KUSTOMIZE / "overlays" / "dev")
    [secret] = by_kind(dev, "Secret")
    ref = env_of(deployment(dev, "worker"))["ORDERFLOW_NATS_URL"]["valueFrom"]["secretKeyRef"]["name"]
    assert ref == secret["metadata"]["name"] != "orderflow-nats"


def test_kustomize_and_helm_defaults_agree() -> None:
    """The base is the chart's default install in plain YAML: same grace periods and settings."""
    helm_docs, base = helm_template(), kustomize(KUSTOMIZE / "base")
    for component in ("ingest", "worker"):
        h, k = deployment(helm_docs, component), deployment(base, component)
        assert pod_spec(h)["terminationGracePeriodSeconds"] == pod_spec(k)["terminationGracePeriodSeconds"]
        h_env, k_env = env_of(h), env_of(k)
        for name, entry in k_env.items():
            if "value" in entry:
                assert h_env[name]["value"] == entry["value"], name


def test_the_validators_catch_an_unknown_field() -> None:
    """Guard against a validator that silently accepts everything."""
    worker = deployment(helm_template(), "worker")
    worker["spec"] = {**worker["spec"], "replica": 3}
    with pytest.raises(AssertionError, match="replica"):
        validate([worker])
    [so] = by_kind(helm_template("--set", "worker.autoscaling.mode=keda"), "ScaledObject")
    so["spec"] = {**so["spec"], "minReplicaCont": 1}
    with pytest.raises(AssertionError, match="minReplicaCont"):
        validate([so])
