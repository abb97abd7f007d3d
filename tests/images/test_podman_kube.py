"""The transform of rendered manifests for podman 4.3 (podman_kube): the four changes and only
those, on hand-made Deployments and on the chart's and the dev overlay's real renders."""

from __future__ import annotations

import base64
import json
import re
import subprocess
from typing import Any

import pytest
import yaml
from harness import REPO, find_binary
from podman_kube import (
    ManifestError,
    changes,
    deployments,
    for_podman,
    grace_period_s,
    pod_names,
    probe_endpoints,
    secret_files,
    secrets_for,
)

Doc = dict[str, Any]


def deployment(**container: Any) -> Doc:
    base: Doc = {
        "name": "worker",
        "image": "orderflow/worker:0.1.0",
        "ports": [{"name": "http", "containerPort": 9090, "protocol": "TCP"}],
        "env": [
            {"name": "ORDERFLOW_HTTP_PORT", "value": "9090"},
            {"name": "ORDERFLOW_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {
                "name": "ORDERFLOW_POD_NAMESPACE",
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
            },
            {"name": "ORDERFLOW_NATS_URL", "valueFrom": {"secretKeyRef": {"name": "nats", "key": "url"}}},
        ],
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": 9090}},
        "securityContext": {"readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}},
    }
    base.update(container)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "rel-orderflow-worker"},
        "spec": {
            "replicas": 2,
            "template": {"spec": {"terminationGracePeriodSeconds": 70, "containers": [base]}},
        },
    }


def test_container_ports_go_and_the_namespace_field_ref_becomes_the_namespace() -> None:
    before = deployment()
    after = for_podman(before, "shop")
    assert changes(before, after) == [
        ".spec.template.spec.containers[0].env[2].value added",
        ".spec.template.spec.containers[0].env[2].valueFrom removed",
        ".spec.template.spec.containers[0].ports removed",
    ]
    env = {e["name"]: e for e in after["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["ORDERFLOW_POD_NAMESPACE"] == {"name": "ORDERFLOW_POD_NAMESPACE", "value": "shop"}
    # podman's own downward API and secretKeyRef are left to podman
    assert env["ORDERFLOW_POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["ORDERFLOW_NATS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "nats", "key": "url"}
    assert before["spec"]["template"]["spec"]["containers"][0]["ports"], "the input is not modified"


def test_the_manifests_own_namespace_wins_over_the_default() -> None:
    doc = deployment()
    doc["metadata"]["namespace"] = "orderflow-dev"
    env = for_podman(doc, "default")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "ORDERFLOW_POD_NAMESPACE", "value": "orderflow-dev"} in env


def test_a_referenced_secret_becomes_the_json_podman_4_3_reads() -> None:
    secret = {
        "kind": "Secret",
        "metadata": {"name": "nats"},
        "data": {"user": base64.b64encode(b"u").decode(), "url": base64.b64encode(b"old").decode()},
        "stringData": {"url": "nats://127.0.0.1:4222"},
    }
    payload = json.loads(secrets_for([deployment(), secret])["nats"])
    assert {k: base64.b64decode(v).decode() for k, v in payload.items()} == {
        "url": "nats://127.0.0.1:4222",
        "user": "u",
    }


def test_a_reference_to_a_secret_the_render_lacks_is_a_manifest_error() -> None:
    with pytest.raises(ManifestError, match="Secret nats, which the render does not contain"):
        secrets_for([deployment()])


def test_a_secret_volume_becomes_a_host_directory_with_the_secrets_files(tmp_path: Any) -> None:
    doc = deployment()
    doc["spec"]["template"]["spec"]["volumes"] = [
        {"name": "tmp", "emptyDir": {}},
        {"name": "api-keys", "secret": {"secretName": "keys", "defaultMode": 0o440}},
    ]
    after = for_podman(doc, "shop", {"keys": tmp_path})
    assert after["spec"]["template"]["spec"]["volumes"] == [
        {"name": "tmp", "emptyDir": {}},
        {"name": "api-keys", "hostPath": {"path": str(tmp_path), "type": "Directory"}},
    ]
    secret = {
        "kind": "Secret",
        "metadata": {"name": "keys"},
        "data": {"a.json": base64.b64encode(b"{}").decode()},
        "stringData": {"b.json": "[]"},
    }
    assert secret_files([doc, secret]) == {"keys": {"a.json": b"{}", "b.json": b"[]"}}
    with pytest.raises(ManifestError, match="mounts Secret keys, which the render does not contain"):
        secret_files([doc])


def test_probe_ports_resolve_through_the_container_ports_and_a_missing_name_is_a_manifest_error() -> None:
    assert probe_endpoints(deployment()) == [
        ("worker", "livenessProbe", "/healthz", 9090),
        ("worker", "readinessProbe", "/readyz", 9090),
    ]
    with pytest.raises(ManifestError, match="names port 'http', which the container does not declare"):
        probe_endpoints(deployment(ports=[{"name": "metrics", "containerPort": 9090}]))


def test_pods_and_grace_period_as_podman_plays_a_deployment() -> None:
    doc = deployment()
    assert pod_names(doc) == ["rel-orderflow-worker-pod-0", "rel-orderflow-worker-pod-1"]
    assert grace_period_s(doc) == 70
    del doc["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace_period_s(doc) == 30


# The only paths for_podman may touch in a real render: a container's ports, an env entry
# whose fieldRef was metadata.namespace, and a secret volume turned into a host directory.
ALLOWED = re.compile(
    r"^\.spec\.template\.spec\.((init)?[cC]ontainers\[\d+\]\.(ports removed|env\[\d+\]\.(value added|valueFrom removed))"
    r"|volumes\[\d+\]\.(secret removed|hostPath added))$"
)


def render(kind: str) -> list[Doc]:
    if kind == "chart":
        cmd = [
            find_binary("helm"),
            "template",
            "rel",
            str(REPO / "charts" / "orderflow"),
            "--namespace",
            "shop",
        ]
    else:
        cmd = [find_binary("kubectl"), "kustomize", str(REPO / "kustomize" / "overlays" / "dev")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.mark.procs
@pytest.mark.parametrize("kind", ["chart", "dev-overlay"])
def test_on_the_real_renders_only_ports_and_the_namespace_field_ref_change(kind: str) -> None:
    docs = render(kind)
    found = deployments(docs)
    assert {d["metadata"]["name"].rsplit("-", 1)[1] for d in found} == {"ingest", "worker"}
    for doc in found:
        after = for_podman(doc, "shop")
        touched = changes(doc, after)
        assert touched, "nothing to change: the transform may be obsolete"
        assert [c for c in touched if not ALLOWED.match(c)] == []
        for env in (e for c in after["spec"]["template"]["spec"]["containers"] for e in c.get("env", [])):
            assert (env.get("valueFrom") or {}).get("fieldRef", {}).get("fieldPath") != "metadata.namespace"
    if kind == "dev-overlay":
        assert secrets_for(docs), "the overlay's Deployments take the NATS URL from a rendered Secret"
    else:
        # Since the chart mounts NATS identities as files (issue #21), its defaults put nothing
        # secret in the env: the URL is a plain value and no Secret is referenced through env.
        assert secrets_for(docs) == {}


def test_the_module_docstring_lists_what_docs_kubernetes_md_lists() -> None:
    """docs/kubernetes.md says exactly what the transform changes; keep the two in step."""
    text = (REPO / "docs" / "kubernetes.md").read_text()
    for needle in ("containers[].ports", "metadata.namespace", "secretKeyRef", "is not valid JSON"):
        assert needle in text, f"docs/kubernetes.md does not mention {needle}"
