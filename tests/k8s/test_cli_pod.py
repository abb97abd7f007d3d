"""The operator CLI's Pod of docs/kubernetes.md ("The CLI in the cluster"), as written there: a valid
manifest (kubernetes-validate), Pod Security "restricted", the CLI's own NATS identity from Secrets
mounted as files (no secret in an env var), and the orderflow/tools image. tests/images plays it."""

from __future__ import annotations

from pathlib import Path

import yaml
from chart_tools import Doc, validate
from test_scanners import restricted_violations

DOCS = Path(__file__).resolve().parents[2] / "docs" / "kubernetes.md"


def cli_pod() -> Doc:
    text = DOCS.read_text().split("### The CLI in the cluster", 1)[1]
    block = text.split("```yaml\n# orderflow-cli.yaml", 1)[1].split("```", 1)[0]
    doc = yaml.safe_load("# orderflow-cli.yaml" + block)
    assert isinstance(doc, dict)
    return doc


def test_the_cli_pod_is_valid_restricted_and_has_its_own_identity_from_files() -> None:
    pod = cli_pod()
    validate([pod])
    spec = pod["spec"]
    assert restricted_violations(spec) == []
    [container] = spec["containers"]
    assert container["image"].rsplit(":", 1)[0].endswith("/orderflow/tools")
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    env = {e["name"]: e for e in container["env"]}
    assert all("valueFrom" not in e for e in env.values()), "no secret through an env var"
    assert not {"ORDERFLOW_NATS_PASSWORD", "ORDERFLOW_NATS_TOKEN"} & set(env)
    secrets = {v["name"]: v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v}
    assert secrets == {"nats-identity": "orderflow-cli-nats", "nats-tls": "orderflow-cli-nats-tls"}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert env["ORDERFLOW_NATS_NKEY_SEED_FILE"]["value"].startswith(mounts["nats-identity"] + "/")
    for name in ("CA", "CERT", "KEY"):
        assert env[f"ORDERFLOW_NATS_{name}_FILE"]["value"].startswith(mounts["nats-tls"] + "/")
    assert spec["securityContext"]["fsGroup"] == spec["securityContext"]["runAsGroup"]
    assert spec["automountServiceAccountToken"] is False
