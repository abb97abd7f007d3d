"""The scanners as tests, over every render: the chart's defaults, each charts/orderflow/ci/*values*
file, each kustomize overlay.

- checkov (the dev extra): no failed check. A check a manifest fails on purpose is skipped in that
  manifest with its reason (checkov.io/skip*: "CHECK_ID=reason" annotations; the chart renders each
  only while its reason holds), so a new failure, or a skip without a reason, fails here.
- Pod Security "restricted" (the Kubernetes Pod Security Standards, latest): every pod template,
  checked field by field as the API server's PodSecurity admission does.

checkov is slow (seconds per render): it runs once, over one directory holding every render.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_tools import (
    ALL_ON,
    CHART,
    KUSTOMIZE,
    OVERLAYS,
    Doc,
    by_kind,
    helm_template,
    kustomization,
    kustomize,
    need,
)

pytestmark = pytest.mark.procs

CI_VALUES = sorted(p for p in (CHART / "ci").glob("*values*.y*ml"))
RENDERS: dict[str, Any] = {
    "chart-defaults": lambda: helm_template(),
    **{f"chart-{p.stem}": (lambda p=p: helm_template("-f", str(p))) for p in CI_VALUES},
    **{f"kustomize-{o.replace('/', '-')}": (lambda o=o: kustomize(KUSTOMIZE / o)) for o in OVERLAYS},
    # The console and tracing components are in no overlay (off by default): scanned on top of prod.
    "kustomize-prod-console": lambda: _prod_with("console"),
    "kustomize-prod-tracing": lambda: _prod_with("tracing"),
}


def _prod_with(component: str) -> list[Doc]:
    root = kustomization(
        Path(tempfile.mkdtemp(prefix="orderflow-k8s-")),
        [KUSTOMIZE / "overlays" / "prod"],
        [KUSTOMIZE / "components" / component],
    )
    with (root / "kustomization.yaml").open("a") as f:
        f.write("namespace: orderflow\n")
    return kustomize(root)


assert f"chart-{ALL_ON.stem}" in RENDERS


@pytest.fixture(scope="session")
def checkov_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, list[Doc]]]:
    """{render: {"failed": [...], "skipped": [...], "passed": [...]}} from one checkov run."""
    need("checkov")
    root = tmp_path_factory.mktemp("renders")
    for name, render in RENDERS.items():
        (root / f"{name}.yaml").write_text(yaml.safe_dump_all(render()))
    checkov = Path(sys.executable).parent / "checkov"
    proc = subprocess.run(
        [str(checkov), "-d", str(root), "--framework", "kubernetes", "--output", "json", "--skip-download"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    # 1: some check failed (the tests below name them); anything else but 0 is checkov's own error.
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    results: dict[str, dict[str, list[Doc]]] = {
        n: {"failed": [], "skipped": [], "passed": []} for n in RENDERS
    }
    for kind in ("failed", "skipped", "passed"):
        for check in report["results"][f"{kind}_checks"]:
            results[Path(check["file_path"]).stem][kind].append(check)
    return results


@pytest.mark.timeout(360)
@pytest.mark.parametrize("render", RENDERS)
def test_checkov_finds_nothing_unjustified(
    checkov_results: dict[str, dict[str, list[Doc]]], render: str
) -> None:
    result = checkov_results[render]
    assert result["passed"], "checkov checked nothing: the render did not reach it"
    failed = [f"{c['check_id']} {c['resource']}: {c['check_name']}" for c in result["failed"]]
    assert not failed, "fix it, or skip it in the manifest with its reason:\n" + "\n".join(failed)
    unexplained = [
        f"{c['check_id']} {c['resource']}"
        for c in result["skipped"]
        if c["check_result"].get("suppress_comment", "").strip() in ("", "No comment provided")
    ]
    assert not unexplained, "skipped without a reason:\n" + "\n".join(unexplained)


@pytest.mark.timeout(360)
def test_the_checks_the_issue_named_pass_in_the_defaults(
    checkov_results: dict[str, dict[str, list[Doc]]],
) -> None:
    """Fixed, not skipped: pods without a NetworkPolicy (CKV2_K8S_6), the default namespace
    (CKV_K8S_21), the test pod's CPU limit (CKV_K8S_11 on the Pod)."""
    skipped = {
        (c["check_id"], c["resource"].split(".")[0]) for c in checkov_results["chart-defaults"]["skipped"]
    }
    assert not {s for s in skipped if s[0] in ("CKV2_K8S_6", "CKV_K8S_21")}
    assert ("CKV_K8S_11", "Pod") not in skipped


# --- Pod Security Standards, "restricted" --------------------------------------------------------------
# https://kubernetes.io/docs/concepts/security/pod-security-standards/ (baseline + restricted).
_VOLUME_TYPES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}  # fmt: skip
_SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}  # fmt: skip
_SELINUX_TYPES = {None, "", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}


def restricted_violations(spec: Doc) -> list[str]:
    """What PodSecurity admission at level "restricted" would refuse in this pod spec."""
    out: list[str] = []
    pod_sc = spec.get("securityContext") or {}
    containers = [
        *spec.get("initContainers", []),
        *spec.get("containers", []),
        *spec.get("ephemeralContainers", []),
    ]
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            out.append(key)
    out += [f"volume {v['name']}" for v in spec.get("volumes", []) if not set(v) - {"name"} <= _VOLUME_TYPES]
    out += [f"sysctl {s['name']}" for s in pod_sc.get("sysctls", []) if s["name"] not in _SAFE_SYSCTLS]
    for where, sc in [("pod", pod_sc)] + [(c["name"], c.get("securityContext") or {}) for c in containers]:
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            out.append(f"{where}: hostProcess")
        se = sc.get("seLinuxOptions") or {}
        if se.get("type") not in _SELINUX_TYPES or se.get("user") or se.get("role"):
            out.append(f"{where}: seLinuxOptions")
        if (sc.get("appArmorProfile") or {}).get("type", "RuntimeDefault") not in (
            "RuntimeDefault",
            "Localhost",
        ):
            out.append(f"{where}: appArmorProfile")
        if sc.get("runAsUser") == 0:
            out.append(f"{where}: runAsUser 0")
    for c in containers:
        sc, name = c.get("securityContext") or {}, c["name"]
        if sc.get("privileged"):
            out.append(f"{name}: privileged")
        if sc.get("procMount", "Default") != "Default":
            out.append(f"{name}: procMount")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            out.append(f"{name}: hostPort")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{name}: allowPrivilegeEscalation must be false")
        if not sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")):
            out.append(f"{name}: runAsNonRoot must be true")
        seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"{name}: seccompProfile must be RuntimeDefault or Localhost")
        caps = sc.get("capabilities") or {}
        if "ALL" not in caps.get("drop", []):
            out.append(f"{name}: capabilities must drop ALL")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            out.append(f"{name}: capabilities.add beyond NET_BIND_SERVICE")
    return out


def pod_templates(docs: list[Doc]) -> dict[str, Doc]:
    out = {f"Pod/{d['metadata']['name']}": d["spec"] for d in by_kind(docs, "Pod")}
    for kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        out |= {f"{kind}/{d['metadata']['name']}": d["spec"]["template"]["spec"] for d in by_kind(docs, kind)}
    return out


@pytest.mark.parametrize("render", RENDERS)
def test_every_pod_meets_pod_security_restricted(render: str) -> None:
    templates = pod_templates(RENDERS[render]())
    assert templates
    problems = {name: v for name, spec in templates.items() if (v := restricted_violations(spec))}
    assert not problems, problems


def test_the_restricted_check_sees_a_violation() -> None:
    spec = pod_templates(helm_template())["Deployment/rel-orderflow-worker"]
    spec["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    spec["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
    spec["securityContext"].pop("runAsNonRoot")
    assert restricted_violations(spec) == [
        "volume host",
        "worker: allowPrivilegeEscalation must be false",
        "worker: runAsNonRoot must be true",
    ]
