"""Offline checks of the Helm chart and the kustomize tree: lint, render, and validate every object.

How objects are validated: tests/k8s/chart_tools.py. The derived timings (grace periods, liveness)
are in test_chart_timing.py, the autoscaling signals in test_autoscaling.py, the values' documentation and
bounds in test_values.py.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_tools import (
    ALL_ON,
    CHART,
    COMPONENTS,
    KUSTOMIZE,
    OVERLAYS,
    by_kind,
    check_orderflow_env,
    deployment,
    docs_of,
    env_of,
    helm_template,
    kustomization,
    kustomize,
    pod_spec,
    run,
    tool,
    validate,
)

pytestmark = pytest.mark.procs

# The newest Kubernetes without HPAScalingRules.tolerance by default, and the first with it.
KUBE_VERSIONS = ["1.34.0", "1.35.0"]


# --- helm ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("values", [[], ["-f", str(ALL_ON)]], ids=["defaults", "all-on"])
def test_helm_lint_strict(values: list[str], kube_version: str) -> None:
    run(tool("helm"), "lint", "--strict", str(CHART), "--kube-version", kube_version, *values)


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
    "mtls-nkey-per-component": [
        "--set",
        "nats.url=tls://nats:4222,nats.auth.mode=nkey,nats.componentSecrets.ingest=i,"
        "nats.componentSecrets.worker=w,nats.tls.enabled=true,nats.tls.secretName=nats-client-tls",
    ],
}


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_helm_template_renders_valid_objects(variant: str, kube_version: str) -> None:
    docs = helm_template(*VARIANTS[variant], kube_version=kube_version)
    validate(docs, kube_version)
    check_orderflow_env(docs)


def test_defaults_render_the_plain_workloads_with_their_guards() -> None:
    """The workloads, and on by default what keeps them in their lane: a NetworkPolicy per pod
    (the `helm test` pod's included) and the worker's own-pod admission policy with its binding."""
    kinds = sorted(d["kind"] for d in helm_template())
    assert kinds == sorted(
        ["Deployment"] * 2
        + ["Service"] * 2
        + ["PodDisruptionBudget"] * 2
        + ["ServiceAccount", "Role", "RoleBinding", "Pod"]  # no Secret: NATS without auth needs none
        + ["NetworkPolicy"] * 3
        + ["ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"]
    )


def test_every_namespaced_object_names_the_release_namespace() -> None:
    """Explicit, so that `helm template | kubectl apply` never lands in "default" (checkov CKV_K8S_21)."""
    cluster_scoped = {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
    for docs in (helm_template(), helm_template("-f", str(ALL_ON))):
        for d in docs:
            if d["kind"] not in cluster_scoped:
                assert d["metadata"].get("namespace") == "shop", f"{d['kind']}/{d['metadata']['name']}"


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


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("worker.config.drainTimout=30", "drainTimout"),  # typo in a config key
        ("worker.autoscaling.mode=kedaa", "mode"),
        ("ingest.config.mode=fast", "mode"),
        ("nats.url=http://nats:4222", "url"),
        ("worker.config.drainTimeoutS=0", "drainTimeoutS"),
        ("worker.config.ackWaitS=null", "ackWaitS"),  # the liveness probe is derived from it
        ("config.natsDrainTimeoutS=null", "natsDrainTimeoutS"),  # both grace periods add it
        ("worker.autoscaling.lagPerReplica=12.5", "lagPerReplica"),  # KEDA wants an integer
        ("worker.autoscaling.utilisation.target=0", "target"),
        ("worker.config.priority=on", "priority"),  # auto | off
        ("worker.config.maxDeliveries=1", "maxDeliveries"),  # at least 2
        ("ingest.config.httpMaxConnections=0", "httpMaxConnections"),
    ],
)
def test_schema_rejects_typos_and_bad_values(setting: str, message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        helm_template("--set", setting)


def test_nats_identity_and_tls_are_files_mounted_from_secrets_never_env_values() -> None:
    """The chart-created Secret holds the password only; the URL and the user name are plain values,
    the password a file (ORDERFLOW_NATS_PASSWORD_FILE) in a read-only Secret volume."""
    docs = helm_template("--set", "nats.auth.mode=userPassword,nats.auth.user=u,nats.auth.password=p")
    [secret] = by_kind(docs, "Secret")
    assert set(secret["stringData"]) == {"password"}
    for component in ("ingest", "worker"):
        d = deployment(docs, component)
        env = env_of(d)
        assert env["ORDERFLOW_NATS_URL"]["value"] == "nats://nats.nats.svc.cluster.local:4222"
        assert env["ORDERFLOW_NATS_USER"]["value"] == "u"
        assert env["ORDERFLOW_NATS_PASSWORD_FILE"]["value"] == "/etc/orderflow/nats/password"
        assert "ORDERFLOW_NATS_PASSWORD" not in env
        [volume] = [v for v in pod_spec(d)["volumes"] if v["name"] == "nats-identity"]
        assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    check_orderflow_env(docs)


def test_each_component_gets_its_own_nats_identity_and_client_certificate() -> None:
    """Production: one nkey identity and one client certificate (mTLS) per component, each from a
    Secret of its own; the chart creates no Secret."""
    docs = helm_template(
        "--set",
        "nats.url=tls://nats.nats.svc:4222,nats.auth.mode=nkey,"
        "nats.componentSecrets.ingest=orderflow-ingest-nats,nats.componentSecrets.worker=orderflow-worker-nats,"
        "nats.tls.enabled=true,nats.tls.componentSecrets.ingest=orderflow-ingest-tls,"
        "nats.tls.componentSecrets.worker=orderflow-worker-tls,nats.tls.serverName=nats.nats.svc",
    )
    assert not by_kind(docs, "Secret")
    for component in ("ingest", "worker"):
        d = deployment(docs, component)
        env = {n: e["value"] for n, e in env_of(d).items() if n.startswith("ORDERFLOW_NATS_")}
        assert env["ORDERFLOW_NATS_NKEY_SEED_FILE"] == "/etc/orderflow/nats/nkey.seed"
        assert env["ORDERFLOW_NATS_CA_FILE"] == "/etc/orderflow/nats-tls/ca.crt"
        assert env["ORDERFLOW_NATS_CERT_FILE"] == "/etc/orderflow/nats-tls/tls.crt"
        assert env["ORDERFLOW_NATS_KEY_FILE"] == "/etc/orderflow/nats-tls/tls.key"
        assert env["ORDERFLOW_NATS_TLS_HOSTNAME"] == "nats.nats.svc"
        volumes = {v["name"]: v["secret"] for v in pod_spec(d)["volumes"] if "secret" in v}
        assert volumes["nats-identity"]["secretName"] == f"orderflow-{component}-nats"
        assert volumes["nats-tls"]["secretName"] == f"orderflow-{component}-tls"
        assert {i["key"] for i in volumes["nats-tls"]["items"]} == {"ca.crt", "tls.crt", "tls.key"}
        assert all(v["defaultMode"] == 0o440 for v in volumes.values())
    check_orderflow_env(docs)
    validate(docs)


def test_a_secret_revision_rolls_the_pods_and_reveals_nothing() -> None:
    """The pods carry the Secret's revision (a value), never anything computed from its content: a
    hash of a rendered Secret lets whoever may `get pods` try passwords offline."""
    password = "correct-horse-battery-staple"
    auth = f"nats.auth.mode=userPassword,nats.auth.user=orderflow,nats.auth.password={password}"
    docs = helm_template("--set", auth)
    [secret] = by_kind(docs, "Secret")
    digest = hashlib.sha256(yaml.safe_dump(secret).encode()).hexdigest()
    for component in ("ingest", "worker"):
        text = yaml.safe_dump(deployment(docs, component))
        assert password not in text and digest not in text
        annotations = deployment(docs, component)["spec"]["template"]["metadata"]["annotations"]
        assert not [k for k in annotations if k.startswith("checksum/")]
        assert annotations["orderflow.io/nats-secret-revision"] == "1"
        assert not re.search(r"\b[0-9a-f]{32,}\b", text), "a hash in the pod template"
    docs = helm_template("--set", f"{auth},nats.secretRevision=2")
    for component in ("ingest", "worker"):
        annotations = deployment(docs, component)["spec"]["template"]["metadata"]["annotations"]
        assert annotations["orderflow.io/nats-secret-revision"] == "2"


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


def test_each_setting_reaches_the_service_that_reads_it(tmp_path: Path) -> None:
    """The receipt deadlines, the connection cap and the refusal log are the ingest's; the crash and
    delivery caps and the pull priority the worker's; the status TTL (the Idempotency-Keys' too) is
    both services' (each ensures the buckets at start-up and would set them back to its own value)."""
    values = {
        "config": {"statusTtlS": 3600},
        "ingest": {
            "config": {
                "httpHeaderTimeoutS": 2.5,  # a float: `--set` would make it a string
                "httpBodyTimeoutS": 20,
                "httpMaxConnections": 1000,
                "refusalLogIntervalS": 30,
            }
        },
        "worker": {"config": {"maxCrashes": 2, "maxDeliveries": 50, "priority": "off"}},
    }
    (tmp_path / "values.yaml").write_text(yaml.safe_dump(values))
    docs = helm_template("-f", str(tmp_path / "values.yaml"))
    ingest, worker = env_of(deployment(docs, "ingest")), env_of(deployment(docs, "worker"))
    ingest_only = {
        "ORDERFLOW_HTTP_HEADER_TIMEOUT_S": "2.5",
        "ORDERFLOW_HTTP_BODY_TIMEOUT_S": "20",
        "ORDERFLOW_HTTP_MAX_CONNECTIONS": "1000",
        "ORDERFLOW_REFUSAL_LOG_INTERVAL_S": "30",
    }
    worker_only = {
        "ORDERFLOW_MAX_CRASHES": "2",
        "ORDERFLOW_MAX_DELIVERIES": "50",
        "ORDERFLOW_PRIORITY": "off",
    }
    for name, value in ingest_only.items():
        assert ingest[name]["value"] == value and name not in worker, name
    for name, value in worker_only.items():
        assert worker[name]["value"] == value and name not in ingest, name
    assert ingest["ORDERFLOW_STATUS_TTL_S"]["value"] == worker["ORDERFLOW_STATUS_TTL_S"]["value"] == "3600"
    check_orderflow_env(docs)


def test_max_deliver_is_failed_attempts_under_either_name() -> None:
    """worker.config.maxDeliver renders ORDERFLOW_MAX_DELIVER; ORDERFLOW_MAX_ATTEMPTS is the worker's
    other name for it, so the chart refuses it in extraEnv beside maxDeliver (the two disagreeing
    would stop the worker at start-up) and accepts it once maxDeliver is null."""
    env = env_of(deployment(helm_template("--set", "worker.config.maxDeliver=7"), "worker"))
    assert env["ORDERFLOW_MAX_DELIVER"]["value"] == "7"
    alias = (
        "--set",
        "worker.extraEnv[0].name=ORDERFLOW_MAX_ATTEMPTS",
        "--set-string",
        "worker.extraEnv[0].value=3",
    )
    with pytest.raises(AssertionError, match=r"set worker\.config\.maxDeliver instead"):
        helm_template(*alias)
    docs = helm_template("--set", "worker.config.maxDeliver=null", *alias)
    env = env_of(deployment(docs, "worker"))
    assert "ORDERFLOW_MAX_DELIVER" not in env and env["ORDERFLOW_MAX_ATTEMPTS"]["value"] == "3"
    check_orderflow_env(docs)


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
    assert 'call("POST", path, order)' in script and '== "done"' in script
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["TASK_TYPE"] == "default"  # the first task type (tests/k8s/test_worker_groups.py)
    [service] = [s for s in by_kind(docs, "Service") if s["metadata"]["name"].endswith("-ingest")]
    base_url = {e["name"]: e["value"] for e in container["env"]}["BASE_URL"]
    assert base_url == f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}"


def test_notes_render_with_the_derived_grace_period() -> None:
    out = run(tool("helm"), "install", "rel", str(CHART), "-n", "shop", "--dry-run=client", "-f", str(ALL_ON))
    notes = out.split("NOTES:", 1)[1]
    assert "helm test rel -n shop" in notes
    assert "terminationGracePeriodSeconds 70 s (derived)" in notes
    assert "Worker liveness: periodSeconds 2 (derived from ackWaitS 30 s)" in notes
    assert "Worker autoscaling: keda (0..20 pods" in notes
    assert "KEDA >= 2.20 must be installed" in notes


# --- kustomize ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", OVERLAYS)
def test_kustomize_builds_valid_objects(path: str) -> None:
    docs = kustomize(KUSTOMIZE / path)
    validate(docs)
    check_orderflow_env(docs)


@pytest.mark.parametrize("component", COMPONENTS)
def test_each_component_applies_to_the_base_on_its_own(component: str, tmp_path: Path) -> None:
    docs = kustomize(kustomization(tmp_path, [KUSTOMIZE / "base"], [KUSTOMIZE / "components" / component]))
    validate(docs)
    check_orderflow_env(docs)
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


def test_overlays_only_patch_and_keep_secrets_out_of_patches() -> None:
    for overlay in ("dev", "prod"):
        root = KUSTOMIZE / "overlays" / overlay
        overlay_file = yaml.safe_load((root / "kustomization.yaml").read_text())
        assert overlay_file["resources"] == ["../../base"]
        for patch in overlay_file["patches"]:
            docs: list[Any] = docs_of((root / patch["path"]).read_text())
            # A JSON 6902 patch is a list of operations; a strategic merge patch an object.
            objects = [op.get("value") for d in docs if isinstance(d, list) for op in d]
            objects += [d for d in docs if isinstance(d, dict)]
            assert all(not isinstance(o, dict) or o.get("kind") != "Secret" for o in objects), patch
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
    # The fields newer than the installable KEDA model are checked by hand, not waved through.
    [so] = by_kind(helm_template("--set", "worker.autoscaling.mode=keda"), "ScaledObject")
    so["spec"]["fallback"]["behavior"] = "scalingModifier"
    with pytest.raises(AssertionError, match="scalingModifier"):
        validate([so])
    [so] = by_kind(helm_template("--set", "worker.autoscaling.mode=keda"), "ScaledObject")
    so["spec"]["triggers"][1]["metadata"]["thresold"] = "1"
    with pytest.raises(AssertionError, match="thresold"):
        validate([so])


def test_the_nats_secure_component_mounts_one_identity_and_certificate_per_component(tmp_path: Path) -> None:
    docs = kustomize(
        kustomization(tmp_path, [KUSTOMIZE / "base"], [KUSTOMIZE / "components" / "nats-secure"])
    )
    for component in ("ingest", "worker"):
        d = deployment(docs, component)
        volumes = {v["name"]: v["secret"]["secretName"] for v in pod_spec(d)["volumes"] if "secret" in v}
        # beside the ingest's API key file (its own Secret, not NATS's)
        api_keys = {"api-keys": "orderflow-api-keys"} if component == "ingest" else {}
        assert volumes == {
            "nats-identity": f"orderflow-{component}-nats",
            "nats-tls": f"orderflow-{component}-nats-tls",
            **api_keys,
        }
        env = env_of(d)
        assert env["ORDERFLOW_NATS_NKEY_SEED_FILE"]["value"] == "/etc/orderflow/nats/nkey.seed"
        assert env["ORDERFLOW_NATS_CERT_FILE"]["value"] == "/etc/orderflow/nats-tls/tls.crt"
