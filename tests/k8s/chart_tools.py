"""Shared by the tests/k8s modules: render the chart and the kustomize tree, validate every object.

Built-in kinds go through kubernetes-validate --strict (unknown fields are errors) for the
Kubernetes version the objects were rendered for; the CRD kinds (KEDA ScaledObject, Prometheus
Operator ServiceMonitor and PrometheusRule) through the cloudcoil models of their CRD schemas,
round-tripped so that an unknown field fails too. helm and kubectl come from .tools/bin
(scripts/tools/k8s.sh); a missing one fails in CI and skips elsewhere.
"""

from __future__ import annotations

import copy
import math
import os
import re
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from orderflow import natsauth
from orderflow.config import Service
from orderflow.envsettings import KNOWN, ConfigError, load_settings

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / ".tools" / "bin"
CHART = REPO / "charts" / "orderflow"
ALL_ON = CHART / "ci" / "all-on-values.yaml"
KUSTOMIZE = REPO / "kustomize"
OVERLAYS = ["base", "overlays/dev", "overlays/prod"]
COMPONENTS = [
    "monitoring",
    "autoscaling-keda",
    "autoscaling-hpa",
    "network-policy",
    "scale-down-tolerance",
    "nats-secure",
    "worker-admission-policy",
    "console",
    "tracing",
]
# The cluster version everything renders for and validates against unless a test says otherwise.
KUBERNETES_VERSION = "1.34.0"
CI = bool(os.environ.get("CI"))
# Settings the chart renders before orderflow/envsettings.py reads them: nats_drain_timeout_s is being
# added there beside this change. Once a name is in KNOWN it drops out of this set by itself and
# its env is checked like every other; until then it is left out of the settings check.
PENDING_SETTINGS = {"NATS_DRAIN_TIMEOUT_S"} - KNOWN

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


def helm_template(*args: str, chart: Path = CHART, kube_version: str = KUBERNETES_VERSION) -> list[Doc]:
    """`helm template` for a cluster of kube_version (helm's own default is its client's version)."""
    return copy.deepcopy(list(_helm_template((*args, "--kube-version", kube_version), chart)))


@cache
def _kustomize(path: str) -> tuple[Doc, ...]:
    return tuple(docs_of(run(tool("kubectl"), "kustomize", path)))


def kustomize(path: Path) -> list[Doc]:
    return copy.deepcopy(list(_kustomize(str(path))))


def kustomization(tmp_path: Path, resources: list[Path], components: list[Path]) -> Path:
    """A kustomization in tmp_path of the given resources and components (relative paths)."""
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                # kustomize wants relative paths; directories outside the root are fine.
                "resources": [os.path.relpath(r, tmp_path) for r in resources],
                "components": [os.path.relpath(c, tmp_path) for c in components],
            }
        )
    )
    return tmp_path


def by_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def deployment(docs: list[Doc], component: str) -> Doc:
    [d] = [d for d in by_kind(docs, "Deployment") if deployment_component(d) == component]
    return d


def deployment_component(d: Doc) -> str:
    return str(d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"])


def pod_spec(d: Doc) -> Doc:
    return dict(d["spec"]["template"]["spec"])


def container(d: Doc) -> Doc:
    [c] = pod_spec(d)["containers"]
    return dict(c)


def env_of(d: Doc) -> dict[str, Doc]:
    return {e["name"]: e for e in container(d).get("env", [])}


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


# Documented metadata of the KEDA triggers the chart uses (a free-form map in the CRD schema), from
# the scalers' metadata structs in KEDA 2.20 (pkg/scalers/nats_jetstream_scaler.go, prometheus_scaler.go).
TRIGGER_METADATA_KEYS = {
    "nats-jetstream": {
        "natsServerMonitoringEndpoint",
        "account",
        "stream",
        "consumer",
        "lagThreshold",
        "activationLagThreshold",
        "useHttps",
    },
    "prometheus": {
        "serverAddress",
        "query",
        "queryParameters",
        "threshold",
        "activationThreshold",
        "namespace",
        "customHeaders",
        "ignoreNullValues",
        "unsafeSsl",
        "timeout",
    },
}

# ScaledObject fields newer than the newest KEDA model installable here (cloudcoil-models-keda
# 2.16.1; its 2.20 build needs Python >= 3.14): checked by hand against KEDA 2.20.0's CRD
# (config/crd/bases/keda.sh_scaledobjects.yaml), then taken out before the model round trip, which
# checks everything else. fallback.behavior is a string enum (scalingModifiers since 2.20); a
# behavior rule's tolerance is int-or-string (a Quantity, since KEDA 2.18 / Kubernetes 1.33).
_FALLBACK_BEHAVIORS = {"static", "currentReplicas", "currentReplicasIfHigher", "currentReplicasIfLower"}
_QUANTITY = re.compile(r"^(\d+(\.\d*)?|\.\d+)(m|[kMGTPE]i?)?$")


def _keda_2_20_fields(doc: Doc) -> tuple[Doc, list[str]]:
    doc = copy.deepcopy(doc)
    spec = doc.get("spec", {})
    problems = []
    behavior = spec.get("fallback", {}).pop("behavior", None)
    if behavior is not None and behavior not in {*_FALLBACK_BEHAVIORS, "scalingModifiers"}:
        problems.append(f"spec.fallback.behavior: {behavior!r} is not a KEDA 2.20 fallback behavior")
    rules = spec.get("advanced", {}).get("horizontalPodAutoscalerConfig", {}).get("behavior", {})
    for direction in ("scaleUp", "scaleDown"):
        tolerance = rules.get(direction, {}).pop("tolerance", None)
        if tolerance is not None and not (
            (isinstance(tolerance, int) and tolerance >= 0) or _QUANTITY.match(str(tolerance))
        ):
            problems.append(f"behavior.{direction}.tolerance: {tolerance!r} is not a non-negative quantity")
    return doc, problems


def validate(docs: list[Doc], kubernetes_version: str = KUBERNETES_VERSION) -> None:
    need("kubernetes_validate")
    import kubernetes_validate

    # The CRD models are some 5000 pydantic classes (about 10 s to import): only for docs of their groups.
    crd = any(doc["apiVersion"].startswith(("keda.sh/", "monitoring.coreos.com/")) for doc in docs)
    models = _crd_models() if crd else {}
    problems: list[str] = []
    for doc in docs:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        model = models.get(f"{doc['apiVersion']}/{doc['kind']}")
        try:
            if model is None:
                kubernetes_validate.validate(doc, kubernetes_version, strict=True)
                continue
            checked, newer = _keda_2_20_fields(doc) if doc["kind"] == "ScaledObject" else (doc, [])
            problems += [f"{name}: {p}" for p in newer]
            kept = model.model_validate(checked).model_dump(by_alias=True, exclude_unset=True, mode="json")
            problems += [f"{name}: unknown field {p}" for p in _dropped(checked, kept)]
            for trigger in doc.get("spec", {}).get("triggers", []):
                unknown = set(trigger["metadata"]) - TRIGGER_METADATA_KEYS.get(trigger["type"], set())
                problems += (
                    [f"{name}: unknown {trigger['type']} metadata {sorted(unknown)}"] if unknown else []
                )
        except Exception as exc:  # every validator's error type: report them all at once
            problems.append(f"{name}: {type(exc).__name__}: {exc}")
    assert not problems, "\n".join(problems)


@cache
def _stand_in_key_file() -> Path:
    import json
    import tempfile

    from orderflow import auth

    path = Path(tempfile.mkdtemp(prefix="orderflow-k8s-")) / "api-keys.json"
    path.write_text(json.dumps({"keys": [auth.entry("test", [auth.ADMIN], auth.new_key())]}))
    return path


def check_orderflow_env(docs: list[Doc]) -> None:
    """Every ORDERFLOW_* env name is a known setting and the literal values load; no service links;
    no secret in an env value (secretKeyRef): a setting that names a file (the NATS identity and
    TLS) points into a volume mounted read-only, and is checked there rather than loaded here."""
    placeholders = {"ORDERFLOW_NATS_URL": "nats://nats:4222"}
    pending = {f"ORDERFLOW_{s}" for s in PENDING_SETTINGS}
    files = {f"ORDERFLOW_{s}" for s in natsauth.FILE_SETTINGS}
    for d in by_kind(docs, "Deployment"):
        name = d["metadata"]["name"]
        assert pod_spec(d)["enableServiceLinks"] is False, name
        env = env_of(d)
        # The URL carries no credentials (they are files); kustomize keeps it in its Secret.
        from_secrets = [
            n
            for n, e in env.items()
            if "secretKeyRef" in e.get("valueFrom", {}) and n != "ORDERFLOW_NATS_URL"
        ]
        assert not from_secrets, f"{name}: secrets as env values {from_secrets}"
        mounts = {m["mountPath"]: m for m in container(d).get("volumeMounts", [])}
        for n in files & set(env):
            path = env[n]["value"]
            mount = next((m for p, m in mounts.items() if path.startswith(p.rstrip("/") + "/")), None)
            assert mount is not None and mount.get("readOnly"), f"{name}: {n}={path} not in a read-only mount"
        names = {n for n in env if n.startswith("ORDERFLOW_")} - pending - files
        unknown = {n for n in names if n.removeprefix("ORDERFLOW_") not in KNOWN}
        assert not unknown, f"{name}: unknown settings {unknown}"
        values = {n: e.get("value", placeholders.get(n, "x")) for n, e in env.items() if n in names}
        if "ORDERFLOW_NATS_USER" in values:
            values["ORDERFLOW_NATS_PASSWORD"] = "p"  # stands in for the mounted password file
        component = deployment_component(d)
        # The console is `orderflow console`: the CLI's settings.
        service: Service = (
            "ingest" if component == "ingest" else "cli" if component == "console" else "worker"
        )
        if "ORDERFLOW_API_KEYS_FILE" in values:
            # The key file comes from a Secret volume mounted where the setting points (a directory
            # mount: a subPath mount never sees the Secret's updates); a valid file stands in here.
            path = values["ORDERFLOW_API_KEYS_FILE"]
            mount = next((m for p, m in mounts.items() if path.startswith(p.rstrip("/") + "/")), None)
            assert mount is not None and mount.get("readOnly") and "subPath" not in mount, f"{name}: {path}"
            volume = next(v for v in pod_spec(d)["volumes"] if v["name"] == mount["name"])
            assert "secret" in volume, f"{name}: the key file is not a Secret"
            values["ORDERFLOW_API_KEYS_FILE"] = str(_stand_in_key_file())
        try:
            load_settings(service, values)
        except ConfigError as exc:
            raise AssertionError(f"{d['metadata']['name']}: {exc}") from None


# --- the derived timings, as the templates compute them --------------------------------------------
# The application's default of ORDERFLOW_NATS_DRAIN_TIMEOUT_S where a manifest does not set it.
NATS_DRAIN_DEFAULT_S = 5.0


def _env_s(env: dict[str, Doc], name: str, default: float | None = None) -> float:
    if name in env:
        return float(env[name]["value"])
    assert default is not None, f"{name} missing"
    return default


def expected_worker_grace(env: dict[str, Doc], safety_margin_s: int = 5) -> int:
    drain = _env_s(env, "ORDERFLOW_DRAIN_TIMEOUT_S")
    nats = _env_s(env, "ORDERFLOW_NATS_DRAIN_TIMEOUT_S", NATS_DRAIN_DEFAULT_S)
    return math.ceil(drain) + math.ceil(nats) + safety_margin_s


def expected_ingest_grace(env: dict[str, Doc], safety_margin_s: int = 5) -> int:
    delay = _env_s(env, "ORDERFLOW_SHUTDOWN_DELAY_S")
    timeout = _env_s(env, "ORDERFLOW_SHUTDOWN_TIMEOUT_S")
    nats = _env_s(env, "ORDERFLOW_NATS_DRAIN_TIMEOUT_S", NATS_DRAIN_DEFAULT_S)
    return math.ceil(delay + timeout) + math.ceil(nats) + safety_margin_s


def liveness_restart_bound_s(ack_wait_s: float, probe: Doc) -> float:
    """Worst-case seconds from a blocked event loop to the container's SIGKILL.

    /healthz turns 503 after loop_block_limit = ack_wait / 4 (worker/timing.py); the kubelet has its
    failureThreshold-th failure at most periodSeconds x failureThreshold later, each probe taking up
    to timeoutSeconds; SIGKILL follows the probe-level grace period."""
    period, failures = probe["periodSeconds"], probe["failureThreshold"]
    return float(
        ack_wait_s / 4 + period * failures + probe["timeoutSeconds"] + probe["terminationGracePeriodSeconds"]
    )


def least_ack_wait_left_s(ack_wait_s: float) -> float:
    """A running job is never silent for more than ack_wait / 2 (in_progress when its last one is
    ack_wait / 3 old, checked every ack_wait / 6: worker/pool.py), so when the loop blocks each
    job's message has at least this long before JetStream redelivers it."""
    return ack_wait_s / 2
