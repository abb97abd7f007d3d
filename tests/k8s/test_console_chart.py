"""The chart's optional console (console.enabled; docs/console.md): off by default; on, a Deployment
that binds 0.0.0.0 in the pod, the intake's API-key Secret and its own NATS identity mounted as
read-only files (no secret in an env var), a ClusterIP Service, Pod Security "restricted" and a
NetworkPolicy letting in only console.from and out only to NATS and DNS. The rendered env loads
through the console's settings loader (check_orderflow_env, as `orderflow console` reads it)."""

from __future__ import annotations

import pytest
from chart_tools import (
    Doc,
    by_kind,
    check_orderflow_env,
    container,
    deployment,
    env_of,
    helm_template,
    pod_spec,
    validate,
)
from test_scanners import restricted_violations

pytestmark = pytest.mark.procs

FROM = "console.from[0].podSelector.matchLabels.app=ingress-nginx"
ON = (
    "console.enabled=true,nats.auth.mode=nkey,nats.componentSecrets.ingest=i-nats,"
    "nats.componentSecrets.worker=w-nats,nats.componentSecrets.console=c-nats,"
    "nats.tls.enabled=true,nats.tls.secretName=nats-tls,nats.tls.componentSecrets.console=c-tls"
)


def _named(docs: list[Doc], kind: str, component: str) -> list[Doc]:
    return [
        d
        for d in by_kind(docs, kind)
        if d["metadata"]["labels"].get("app.kubernetes.io/component") == component
    ]


def test_the_console_is_off_by_default() -> None:
    docs = helm_template()
    for kind in ("Deployment", "Service", "NetworkPolicy"):
        assert not _named(docs, kind, "console"), kind


def test_the_console_deployment_mounts_its_secrets_as_files_and_is_fenced() -> None:
    docs = helm_template("--set", ON, "--set", FROM)
    validate(docs)
    check_orderflow_env(docs)  # the env names are known settings and load as the CLI's
    assert not by_kind(docs, "Secret"), "each component names its own Secret: the chart makes none"
    d = deployment(docs, "console")
    spec, c = pod_spec(d), container(d)
    assert restricted_violations(spec) == []
    assert spec["automountServiceAccountToken"] is False
    assert c["args"][:2] == ["orderflow", "console"]
    args = c["args"]
    assert args[args.index("--host") + 1] == "0.0.0.0"
    port = int(args[args.index("--port") + 1])
    assert [p["containerPort"] for p in c["ports"]] == [port]

    env = env_of(d)
    assert all("valueFrom" not in e for e in env.values()), "no secret through an env var"
    assert not {"ORDERFLOW_NATS_PASSWORD", "ORDERFLOW_NATS_TOKEN", "ORDERFLOW_AUTH_OPEN"} & set(env)
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v["secret"] for v in spec["volumes"] if "secret" in v}
    ingest_keys = next(v for v in pod_spec(deployment(docs, "ingest"))["volumes"] if v["name"] == "api-keys")
    assert volumes["api-keys"]["secretName"] == ingest_keys["secret"]["secretName"]  # the intake's keys
    assert volumes["nats-identity"]["secretName"] == "c-nats"
    assert volumes["nats-tls"]["secretName"] == "c-tls"
    assert all(v["defaultMode"] == 0o440 for v in volumes.values())
    for name, setting in (
        ("api-keys", "API_KEYS_FILE"),
        ("nats-identity", "NATS_NKEY_SEED_FILE"),
        ("nats-tls", "NATS_CA_FILE"),
    ):
        assert mounts[name]["readOnly"] is True and "subPath" not in mounts[name]
        assert env[f"ORDERFLOW_{setting}"]["value"].startswith(mounts[name]["mountPath"] + "/")

    [svc] = _named(docs, "Service", "console")
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["selector"] == d["spec"]["selector"]["matchLabels"]
    assert [p["targetPort"] for p in svc["spec"]["ports"]] == ["http"]

    [np] = _named(docs, "NetworkPolicy", "console")
    assert np["spec"]["podSelector"]["matchLabels"] == d["spec"]["selector"]["matchLabels"]
    [rule] = np["spec"]["ingress"]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert rule["from"] == [{"podSelector": {"matchLabels": {"app": "ingress-nginx"}}}]
    out_ports = sorted(p["port"] for r in np["spec"]["egress"] for p in r["ports"])
    assert out_ports == [53, 53, 4222], "NATS and DNS only"


def test_without_console_from_nothing_gets_in() -> None:
    [np] = _named(helm_template("--set", "console.enabled=true"), "NetworkPolicy", "console")
    assert np["spec"]["ingress"] == []


def test_a_console_without_its_own_nats_secret_gets_the_charts() -> None:
    """ingest and worker with Secrets of their own, the console without: the chart's Secret is
    made for it rather than a pod waiting on a Secret nobody creates."""
    docs = helm_template(
        "--set",
        "console.enabled=true,nats.auth.mode=nkey,nats.auth.nkeySeed=SUAFAKE,"
        "nats.componentSecrets.ingest=i-nats,nats.componentSecrets.worker=w-nats",
    )
    [secret] = by_kind(docs, "Secret")
    volumes = {
        v["name"]: v["secret"] for v in pod_spec(deployment(docs, "console"))["volumes"] if "secret" in v
    }
    assert volumes["nats-identity"]["secretName"] == secret["metadata"]["name"]
