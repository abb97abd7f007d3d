"""NetworkPolicies (charts/orderflow/templates/networkpolicy.yaml, kustomize/components/network-policy):
on by default, each pod may reach NATS and DNS by namespace and pod selectors and the worker the API
server by CIDR, nothing else; the ingest takes its HTTP port from anyone, the worker's metrics port
only the monitoring namespace."""

from __future__ import annotations

import pytest
from chart_tools import ALL_ON, CHART, KUSTOMIZE, Doc, by_kind, helm_template, kustomize, run, tool

pytestmark = pytest.mark.procs

NATS_PEER = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "nats"}},
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "nats"}},
}
DNS_PEER = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
}
MONITORING = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}


def policy(docs: list[Doc], component: str) -> Doc:
    [p] = [p for p in by_kind(docs, "NetworkPolicy") if p["metadata"]["name"].endswith(f"-{component}")]
    return p


def egress_by_port(p: Doc) -> dict[int | str, list[Doc]]:
    return {port["port"]: rule.get("to", []) for rule in p["spec"]["egress"] for port in rule["ports"]}


def test_every_egress_rule_names_its_peers() -> None:
    """An egress rule without `to` allows every address, the internet included: none has one."""
    for docs in (helm_template(), helm_template("-f", str(ALL_ON)), kustomize(KUSTOMIZE / "overlays/prod")):
        policies = by_kind(docs, "NetworkPolicy")
        assert policies
        for p in policies:
            assert p["spec"]["policyTypes"] == ["Ingress", "Egress"]
            for rule in p["spec"]["egress"]:
                assert rule.get("to"), f"{p['metadata']['name']}: {rule}"


def test_defaults_allow_nats_and_dns_by_selectors_and_no_api_server() -> None:
    docs = helm_template()
    for component in ("ingest", "worker"):
        egress = egress_by_port(policy(docs, component))
        assert egress == {4222: [NATS_PEER], 53: [DNS_PEER]}, component
    # Ingest: the API from anyone, its own metrics port from the monitoring namespace only;
    # worker: metrics from the monitoring namespace only.
    ingest = policy(docs, "ingest")["spec"]["ingress"]
    assert [(r["ports"][0]["port"], r.get("from")) for r in ingest] == [
        ("http", None),
        ("metrics", [MONITORING]),
    ]
    assert [r["from"] for r in policy(docs, "worker")["spec"]["ingress"]] == [[MONITORING]]
    # The `helm test` pod: the ingest and DNS, nothing in.
    test = policy(docs, "test")
    assert "ingress" not in test["spec"]
    assert sorted(egress_by_port(test), key=str) == [53, 8080]


def test_the_api_server_is_reached_by_its_cidr_only() -> None:
    docs = helm_template("--set", "networkPolicy.apiServerCidrs={10.1.2.3/32}")
    egress = egress_by_port(policy(docs, "worker"))
    assert egress[443] == egress[6443] == [{"ipBlock": {"cidr": "10.1.2.3/32"}}]
    assert 443 not in egress_by_port(policy(docs, "ingest"))
    docs = helm_template(
        "--set", "networkPolicy.apiServerCidrs={10.1.2.3/32},worker.podDeletionCost.enabled=false"
    )
    assert 443 not in egress_by_port(policy(docs, "worker"))


def test_a_narrowed_ingest_still_lets_in_the_test_pod_and_the_monitoring_on_its_metrics_port() -> None:
    docs = helm_template("-f", str(ALL_ON))
    api, metrics = policy(docs, "ingest")["spec"]["ingress"]
    peers = api["from"]
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}} in peers
    assert MONITORING not in peers  # /metrics is not on the API port
    assert metrics["ports"] == [{"port": "metrics", "protocol": "TCP"}] and metrics["from"] == [MONITORING]
    assert any(
        p.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component") == "test"
        for p in peers
    )


def test_a_value_turns_them_off() -> None:
    assert not by_kind(helm_template("--set", "networkPolicy.enabled=false"), "NetworkPolicy")


def test_the_prod_overlay_sets_the_charts_peers_and_an_api_server_cidr() -> None:
    docs = kustomize(KUSTOMIZE / "overlays/prod")
    for component in ("ingest", "worker"):
        egress = egress_by_port(policy(docs, component))
        assert egress[4222] == [NATS_PEER] and egress[53] == [DNS_PEER], component
    assert egress_by_port(policy(docs, "worker"))[443] == [{"ipBlock": {"cidr": "10.0.0.1/32"}}]
    assert [r["from"] for r in policy(docs, "worker")["spec"]["ingress"]] == [[MONITORING]]
    assert [r.get("from") for r in policy(docs, "ingest")["spec"]["ingress"]] == [None, [MONITORING]]
    # The component takes back the base's checkov skip of the NetworkPolicy check.
    for d in by_kind(docs, "Deployment"):
        assert "checkov.io/skip-network-policy" not in d["metadata"].get("annotations", {})


def test_notes_warn_while_the_worker_has_no_route_to_the_api_server() -> None:
    def notes(*values: str) -> str:
        out = run(tool("helm"), "install", "rel", str(CHART), "-n", "shop", "--dry-run=client", *values)
        return out.split("NOTES:", 1)[1]

    assert "networkPolicy.apiServerCidrs is empty" in notes()
    assert "networkPolicy.apiServerCidrs is empty" not in notes("-f", str(ALL_ON))
    assert "networkPolicy.apiServerCidrs is empty" not in notes(
        "--set", "worker.podDeletionCost.enabled=false"
    )
