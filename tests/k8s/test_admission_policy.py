"""The worker's own-pod admission policy (charts/orderflow/templates/worker-admission-policy.yaml and
kustomize/components/worker-admission-policy): a pod update by the worker's service account is
admitted only on the pod its token is bound to, and only when nothing but the deletion-cost
annotation changes.

The API server is a stand-in here: cel-python evaluates the rendered policy's CEL the way the API
server does (match conditions, then the variables in order, then every validation; any false
validation denies) against admission requests built like the API server's (`object`, `oldObject`,
`request` with `userInfo.extra` from the bound token). What the stand-in cannot prove (the
expressions type-check against the pod schema, the cost budget) a cluster does: docs/kubernetes.md.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from chart_tools import KUSTOMIZE, Doc, by_kind, helm_template, kustomize, need

pytestmark = pytest.mark.procs

COST = "controller.kubernetes.io/pod-deletion-cost"
NAMESPACE = "shop"
WORKER_SA = "rel-orderflow-worker"
OWN_POD = "rel-orderflow-worker-5d8f7c9b4-x2kq7"
OTHER_POD = "rel-orderflow-ingest-6c4d9f8b7-abcde"


def evaluate(policy: Doc, request: dict[str, Any]) -> tuple[bool, list[str]]:
    """(matched, messages of the failed validations) for one admission request."""
    need("celpy")
    import celpy
    from celpy.adapter import json_to_cel

    env = celpy.Environment()

    def run(expression: str, activation: dict[str, Any]) -> Any:
        program = env.program(env.compile(expression))
        return program.evaluate(activation)

    activation: dict[str, Any] = {
        "object": json_to_cel(request["object"]),
        "oldObject": json_to_cel(request["oldObject"]),
        "request": json_to_cel(request["request"]),
    }
    spec = policy["spec"]
    rules = spec["matchConstraints"]["resourceRules"]
    operation, resource = request["request"]["operation"], request["request"]["resource"]["resource"]
    if not any(operation in r["operations"] and resource in r["resources"] for r in rules):
        return False, []
    if not all(bool(run(c["expression"], activation)) for c in spec.get("matchConditions", [])):
        return False, []
    # Each variable may use the ones before it.
    variables: dict[str, Any] = {}
    for v in spec.get("variables", []):
        variables[v["name"]] = run(v["expression"], {**activation, "variables": _cel_map(variables)})
    activation["variables"] = _cel_map(variables)
    failed = [v["message"] for v in spec["validations"] if not bool(run(v["expression"], activation))]
    return True, failed


def _cel_map(values: dict[str, Any]) -> Any:
    from celpy.celtypes import MapType, StringType

    return MapType({StringType(k): v for k, v in values.items()})


def pod(name: str = OWN_POD, cost: str | None = "0") -> Doc:
    annotations = {"kubectl.kubernetes.io/default-container": "worker"}
    if cost is not None:
        annotations[COST] = cost
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "labels": {"app.kubernetes.io/component": "worker", "pod-template-hash": "5d8f7c9b4"},
            "annotations": annotations,
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "w", "uid": "1"}],
            "resourceVersion": "100",
            "managedFields": [{"manager": "kube-controller-manager", "operation": "Update"}],
        },
        "spec": {
            "serviceAccountName": WORKER_SA,
            "containers": [{"name": "worker", "image": "orderflow/worker:0.1.0"}],
        },
    }


def update(
    old: Doc,
    new: Doc,
    username: str = f"system:serviceaccount:{NAMESPACE}:{WORKER_SA}",
    caller_pod: str | None = OWN_POD,
) -> dict[str, Any]:
    extra = {} if caller_pod is None else {"authentication.kubernetes.io/pod-name": [caller_pod]}
    return {
        "object": new,
        "oldObject": old,
        "request": {
            "operation": "UPDATE",
            "namespace": new["metadata"]["namespace"],
            "name": new["metadata"]["name"],
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "userInfo": {"username": username, "groups": ["system:serviceaccounts"], "extra": extra},
        },
    }


def changed(old: Doc, change: Any) -> Doc:
    new = copy.deepcopy(old)
    change(new)
    # What the API server changes itself on every update: never a reason to deny.
    new["metadata"]["managedFields"] = [{"manager": "orderflow-worker", "operation": "Apply"}]
    return new


def set_cost(value: str) -> Any:
    return lambda p: p["metadata"]["annotations"].__setitem__(COST, value)


def policies() -> dict[str, Doc]:
    [chart] = by_kind(helm_template(), "ValidatingAdmissionPolicy")
    [kust] = by_kind(kustomize(KUSTOMIZE / "overlays" / "prod"), "ValidatingAdmissionPolicy")
    return {"chart": chart, "kustomize": kust}


SOURCES = ["chart", "kustomize"]


@pytest.fixture(scope="module")
def rendered() -> dict[str, Doc]:
    return policies()


def service_account(source: str) -> str:
    return WORKER_SA if source == "chart" else "orderflow-worker"


# (case, request builder, admitted?). The builders take the service account the render names.
CASES: list[tuple[str, Any, bool]] = [
    ("own pod, deletion cost changed", lambda sa: update(pod(), changed(pod(), set_cost("7")), _u(sa)), True),
    ("own pod, deletion cost added", lambda sa: update(pod(cost=None), changed(pod(cost=None), set_cost("3")), _u(sa)), True),
    ("own pod, a negative cost", lambda sa: update(pod(), changed(pod(), set_cost("-2")), _u(sa)), True),
    ("own pod, deletion cost removed", lambda sa: update(pod(), changed(pod(), lambda p: p["metadata"]["annotations"].pop(COST)), _u(sa)), True),
    ("another pod, deletion cost", lambda sa: update(pod(OTHER_POD), changed(pod(OTHER_POD), set_cost("7")), _u(sa)), False),
    ("a token bound to no pod", lambda sa: update(pod(), changed(pod(), set_cost("7")), _u(sa), caller_pod=None), False),
    ("own pod, a label", lambda sa: update(pod(), changed(pod(), lambda p: p["metadata"]["labels"].__setitem__("app.kubernetes.io/component", "ingest")), _u(sa)), False),
    ("own pod, the image", lambda sa: update(pod(), changed(pod(), lambda p: p["spec"]["containers"][0].__setitem__("image", "evil/miner:1")), _u(sa)), False),
    ("own pod, activeDeadlineSeconds", lambda sa: update(pod(), changed(pod(), lambda p: p["spec"].__setitem__("activeDeadlineSeconds", 1)), _u(sa)), False),
    ("own pod, another annotation", lambda sa: update(pod(), changed(pod(), lambda p: p["metadata"]["annotations"].__setitem__("prometheus.io/scrape", "false")), _u(sa)), False),
    ("own pod, an annotation removed", lambda sa: update(pod(), changed(pod(), lambda p: p["metadata"]["annotations"].pop("kubectl.kubernetes.io/default-container")), _u(sa)), False),
    ("own pod, owner references dropped", lambda sa: update(pod(), changed(pod(), lambda p: p["metadata"].pop("ownerReferences")), _u(sa)), False),
    ("own pod, a finalizer", lambda sa: update(pod(), changed(pod(), lambda p: p["metadata"].__setitem__("finalizers", ["x/y"])), _u(sa)), False),
    ("own pod, a cost that is no number", lambda sa: update(pod(), changed(pod(), set_cost("high")), _u(sa)), False),
]  # fmt: skip


def _u(sa: str) -> str:
    return f"system:serviceaccount:{NAMESPACE}:{sa}"


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize(("case", "build", "admitted"), CASES, ids=[c[0] for c in CASES])
def test_the_worker_may_patch_only_its_own_pods_deletion_cost(
    rendered: dict[str, Doc], source: str, case: str, build: Any, admitted: bool
) -> None:
    matched, failed = evaluate(rendered[source], build(service_account(source)))
    assert matched, "the policy must apply to the worker's own updates"
    assert (not failed) is admitted, f"{case}: {failed or 'admitted'}"


@pytest.mark.parametrize("source", SOURCES)
def test_a_denial_says_which_rule_it_broke(rendered: dict[str, Doc], source: str) -> None:
    sa = service_account(source)
    _, failed = evaluate(
        rendered[source], update(pod(OTHER_POD), changed(pod(OTHER_POD), set_cost("7")), _u(sa))
    )
    assert failed == ["the worker may update only its own pod (the pod its token is bound to)"]
    image = changed(pod(), lambda p: p["spec"]["containers"][0].__setitem__("image", "evil/miner:1"))
    _, failed = evaluate(rendered[source], update(pod(), image, _u(sa)))
    assert failed == ["the worker may not change a pod's spec (images, activeDeadlineSeconds, ...)"]


@pytest.mark.parametrize("source", SOURCES)
def test_other_callers_are_not_its_business(rendered: dict[str, Doc], source: str) -> None:
    """The controllers, kubectl users and a same-named service account of another namespace are
    left to RBAC: the policy matches only the worker's service account in the pod's namespace."""
    image = changed(
        pod(), lambda p: p["spec"]["containers"][0].__setitem__("image", "orderflow/worker:0.2.0")
    )
    for username in (
        "system:serviceaccount:kube-system:replicaset-controller",
        "alice@example.com",
        f"system:serviceaccount:other:{service_account(source)}",
    ):
        matched, _ = evaluate(rendered[source], update(pod(), image, username, caller_pod=None))
        assert not matched, username


def test_chart_and_component_carry_the_same_rules(rendered: dict[str, Doc]) -> None:
    chart, kust = rendered["chart"]["spec"], rendered["kustomize"]["spec"]
    for key in ("failurePolicy", "matchConstraints", "variables", "validations"):
        assert chart[key] == kust[key], key
    [binding] = by_kind(helm_template(), "ValidatingAdmissionPolicyBinding")
    assert binding["spec"]["validationActions"] == ["Deny"]
    assert binding["spec"]["policyName"] == rendered["chart"]["metadata"]["name"]
    assert binding["spec"]["matchResources"]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": NAMESPACE
    }


def test_the_role_keeps_only_what_the_worker_uses() -> None:
    """get (the annotation's value at start-up, the pod's deletionTimestamp) and patch, on pods only."""
    for docs in (helm_template(), kustomize(KUSTOMIZE / "base")):
        [role] = by_kind(docs, "Role")
        assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "patch"]}]


def test_older_clusters_must_choose() -> None:
    """Below 1.30 there is no ValidatingAdmissionPolicy v1: rendering fails and names both ways out."""
    from chart_tools import CHART, run, tool

    with pytest.raises(AssertionError, match=r"podDeletionCost.enabled=false.*admissionPolicy=false"):
        run(tool("helm"), "template", "rel", str(CHART), "--kube-version", "1.29.0")
    docs = helm_template("--set", "worker.podDeletionCost.admissionPolicy=false", kube_version="1.29.0")
    assert not by_kind(docs, "ValidatingAdmissionPolicy")
    assert by_kind(docs, "Role")
    docs = helm_template("--set", "worker.podDeletionCost.enabled=false", kube_version="1.29.0")
    assert not by_kind(docs, "ValidatingAdmissionPolicy") and not by_kind(docs, "Role")
