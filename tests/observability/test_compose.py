"""docker-compose.yml is wired right: services, ports, mounts and provisioning reference real files.

No Docker engine here, so the structure is checked by parsing; promtool checks the Prometheus config.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness import find_binary

from orderflow_tools import kit

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return data


def _bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    mounts = []
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            mounts.append((source, target))
    return mounts


def test_the_stack_has_nats_ingest_workers_prometheus_and_grafana() -> None:
    services = _compose()["services"]
    assert {"nats", "ingest", "worker", "prometheus", "grafana"} <= set(services)
    assert "-js" in services["nats"]["command"]
    assert services["worker"]["deploy"]["replicas"] >= 1
    for name in ("ingest", "worker"):
        env = services[name]["environment"]
        assert env["ORDERFLOW_NATS_URL"] == "nats://nats:4222"
        assert "nats" in services[name]["depends_on"]
    assert services["k6"]["profiles"] == ["load"], "k6 must not start with a plain `up`"


def test_images_build_from_the_repo_dockerfiles() -> None:
    services = _compose()["services"]
    for name, dockerfile in (("ingest", "Dockerfile.ingest"), ("worker", "Dockerfile.worker")):
        build = services[name]["build"]
        assert build["dockerfile"] == dockerfile
        assert (REPO / build["context"] / dockerfile).is_file()


def test_published_ports_are_unique_bound_to_localhost_and_match_the_services() -> None:
    """The stack is for this machine: every published port listens on 127.0.0.1 only."""
    services = _compose()["services"]
    host_ports: list[str] = []
    for name, service in services.items():
        for port in service.get("ports", []):
            address, host, container = str(port).split(":")
            assert address == "127.0.0.1", f"{name}: {port}"
            host_ports.append(host)
            assert re.fullmatch(r"\d+", container)
    assert len(host_ports) == len(set(host_ports))
    assert "127.0.0.1:8080:8080" in services["ingest"]["ports"]
    # an ingest without API keys, on purpose: published on the host's loopback only
    assert services["ingest"]["environment"]["ORDERFLOW_AUTH_OPEN"] == "true"
    assert "127.0.0.1:3000:3000" in services["grafana"]["ports"]


def test_no_default_password_and_no_lifecycle_api() -> None:
    """NATS requires a password and Grafana's admin has one, both from the shell's environment
    (compose refuses to start while either is unset, the `:?` guards); the services read theirs
    from a secret file, never an env value; Prometheus's lifecycle API (POST /-/quit) is off."""
    text = COMPOSE.read_text(encoding="utf-8")
    compose = _compose()
    services = compose["services"]
    for var in ("NATS_PASSWORD", "GRAFANA_ADMIN_PASSWORD"):
        assert any(f"${{{var}:?" in guard for guard in compose["x-required-passwords"]), var
    assert compose["secrets"]["nats_password"] == {"environment": "NATS_PASSWORD"}
    assert compose["secrets"]["grafana_admin_password"] == {"environment": "GRAFANA_ADMIN_PASSWORD"}
    for name in ("ingest", "worker"):
        env = services[name]["environment"]
        assert env["ORDERFLOW_NATS_PASSWORD_FILE"] == "/run/secrets/nats_password"
        assert "ORDERFLOW_NATS_PASSWORD" not in env
        assert services[name]["secrets"] == ["nats_password"]
    grafana = services["grafana"]
    assert "GF_SECURITY_ADMIN_PASSWORD" not in grafana["environment"]
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/grafana_admin_password"
    assert "--web.enable-lifecycle" not in services["prometheus"]["command"]
    assert "admin/admin" not in text


def connects(port: int, **auth: str) -> bool:
    """The NATS client protocol by hand: CONNECT (with user and pass when given), PING; PONG means
    admitted, -ERR 'Authorization Violation' refused."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        reader = s.makefile("rb")
        assert reader.readline().startswith(b"INFO ")
        options = {"verbose": False, "pedantic": False, "lang": "python", "version": "test"}
        options |= {"user": auth["user"], "pass": auth["password"]} if auth else {}
        s.sendall(b"CONNECT " + json.dumps(options).encode() + b"\r\nPING\r\n")
        line = reader.readline()
        if line.startswith(b"-ERR") and b"Authorization Violation" in line:
            return False
        assert line == b"PONG\r\n", line
        return True


@pytest.mark.procs
def test_nats_is_at_least_2_12_and_refuses_clients_without_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The image's tag is 2.12 or later (the workers' priority pulls need it), and the server
    config the stack mounts, run by a real nats-server here, refuses an anonymous client and a
    wrong password and admits the stack's user."""
    nats = _compose()["services"]["nats"]
    major, minor = (int(p) for p in re.match(r"nats:(\d+)\.(\d+)", nats["image"]).groups())  # type: ignore[union-attr]
    assert (major, minor) >= (2, 12), nats["image"]
    mounts = dict(_bind_mounts(nats))
    conf = mounts["./deploy/compose/nats.conf"]
    assert nats["command"][-2:] == ["-c", conf]
    password = "s3cret-for-this-test"
    monkeypatch.setenv("NATS_PASSWORD", password)  # what compose gives the nats container
    server = kit.NatsServer(
        tmp_path / "js",
        tmp_path / "nats.log",
        binary=find_binary("nats-server"),
        extra_args=["-c", str(REPO / "deploy" / "compose" / "nats.conf")],
    ).start()
    try:
        assert connects(server.port) is False
        assert connects(server.port, user="orderflow", password="wrong") is False
        assert connects(server.port, user="orderflow", password=password) is True
    finally:
        server.stop()


def test_every_bind_mount_exists_in_the_repo() -> None:
    for name, service in _compose()["services"].items():
        for source, _ in _bind_mounts(service):
            assert (REPO / source).exists(), f"{name}: {source} missing"


@pytest.mark.procs
def test_prometheus_loads_the_chart_rules_and_scrapes_both_services(promtool: Path) -> None:
    prometheus = _compose()["services"]["prometheus"]
    mounts = dict(_bind_mounts(prometheus))
    assert mounts["./charts/orderflow/files/prometheus-rules.yaml"].startswith("/etc/prometheus/rules/")
    config_path = REPO / "deploy" / "compose" / "prometheus.yml"
    assert mounts["./deploy/compose/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yaml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["orderflow-ingest"]["static_configs"][0]["targets"] == ["ingest:9180"]  # its metrics port
    assert jobs["orderflow-worker"]["dns_sd_configs"][0] == {
        "names": ["worker"], "type": "A", "port": 9090, "refresh_interval": "5s"
    }  # fmt: skip
    result = subprocess.run(
        [promtool, "check", "config", config_path], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_provisions_the_datasource_and_the_generated_dashboards() -> None:
    grafana = _compose()["services"]["grafana"]
    mounts = dict(_bind_mounts(grafana))
    provisioning = REPO / "deploy" / "compose" / "grafana" / "provisioning"
    assert mounts["./deploy/compose/grafana/provisioning"] == "/etc/grafana/provisioning"
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())[
        "datasources"
    ]
    assert [(d["type"], d["url"]) for d in datasources] == [("prometheus", "http://prometheus:9090")]
    providers = yaml.safe_load((provisioning / "dashboards" / "orderflow.yaml").read_text())["providers"]
    dashboards_in_container = mounts["./charts/orderflow/dashboards"]
    assert providers[0]["options"]["path"] == dashboards_in_container
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(dashboards_in_container + "/")
    assert (REPO / "charts" / "orderflow" / "dashboards" / Path(home).name).is_file()
    assert grafana["image"].split(":")[1].startswith("11."), "the dashboards target Grafana 11"
