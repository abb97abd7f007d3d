"""Durability said precisely (issue #20): the production values run every stream R3 on a 3-node
JetStream that fsyncs before each PubAck, and give the streams their share of its store; the
server we ship takes that sync policy and reports it in effect. What a 200 survives under each
setting: README, Guarantees."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_tools import CHART, KUSTOMIZE, REPO, deployment, env_of, helm_template, kustomize, validate
from harness import NatsServer

NATS_PROD = REPO / "deploy" / "nats" / "values-prod.yaml"
ORDERFLOW_PROD = CHART / "values-prod.yaml"
GI = 2**30


def nats_prod() -> Any:
    return yaml.safe_load(NATS_PROD.read_text())["config"]


def store_bytes() -> int:
    size = nats_prod()["jetstream"]["fileStore"]["maxSize"]
    assert isinstance(size, str) and size.endswith("Gi"), size
    return int(size[:-2]) * GI


def test_the_production_nats_is_a_3_node_jetstream_that_syncs_before_each_puback() -> None:
    config = nats_prod()
    assert config["cluster"] == {"enabled": True, "replicas": 3}
    jetstream = config["jetstream"]
    assert jetstream["merge"]["sync_interval"] == "always"
    pvc = jetstream["fileStore"]["pvc"]
    assert int(pvc["size"].removesuffix("Gi")) * GI > store_bytes()  # room for the server's own files


@pytest.mark.procs
def test_the_production_values_make_every_stream_r3_with_its_share_of_that_store() -> None:
    """Both services ensure the layout at start-up, so both carry the same values."""
    chart = helm_template("-f", str(ORDERFLOW_PROD))
    validate(chart)
    overlay = kustomize(KUSTOMIZE / "overlays" / "prod")
    for docs in (chart, overlay):
        for component in ("ingest", "worker"):
            env = env_of(deployment(docs, component))
            assert env["ORDERFLOW_STREAM_REPLICAS"]["value"] == "3", component
            assert env["ORDERFLOW_STORE_MAX_BYTES"]["value"] == str(store_bytes()), component


@pytest.mark.procs
def test_the_server_we_ship_takes_the_production_sync_policy_and_reports_it(tmp_path: Path) -> None:
    """The jetstream block the nats chart renders from those values, on a real nats-server."""
    jetstream = nats_prod()["jetstream"]
    conf = tmp_path / "nats.conf"
    sync, size = jetstream["merge"]["sync_interval"], jetstream["fileStore"]["maxSize"]
    conf.write_text(f"jetstream {{ sync_interval: {sync}, max_file_store: {size} }}\n")
    server = NatsServer(tmp_path / "js", tmp_path / "nats.log", extra_args=["-c", str(conf)])
    server.start()
    try:
        with urllib.request.urlopen(server.monitor_url + "/varz", timeout=5) as answer:
            config = json.load(answer)["jetstream"]["config"]
    finally:
        server.stop()
    assert config["sync_always"] is True
    assert config["max_storage"] == store_bytes()
