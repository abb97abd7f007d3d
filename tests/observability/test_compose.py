"""docker-compose.yml is wired right: services, ports, mounts and provisioning reference real files.

No Docker engine here, so the structure is checked by parsing; promtool checks the Prometheus config.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

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


def test_published_ports_are_unique_and_match_the_services() -> None:
    services = _compose()["services"]
    host_ports: list[str] = []
    for service in services.values():
        for port in service.get("ports", []):
            host, container = str(port).split(":")
            host_ports.append(host)
            assert re.fullmatch(r"\d+", container)
    assert len(host_ports) == len(set(host_ports))
    assert "8080:8080" in services["ingest"]["ports"]
    assert "3000:3000" in services["grafana"]["ports"]


def test_every_bind_mount_exists_in_the_repo() -> None:
    for name, service in _compose()["services"].items():
        for source, _ in _bind_mounts(service):
            assert (REPO / source).exists(), f"{name}: {source} missing"


def test_prometheus_loads_the_chart_rules_and_scrapes_both_services(promtool: Path) -> None:
    prometheus = _compose()["services"]["prometheus"]
    mounts = dict(_bind_mounts(prometheus))
    assert mounts["./charts/orderflow/files/prometheus-rules.yaml"].startswith("/etc/prometheus/rules/")
    config_path = REPO / "deploy" / "compose" / "prometheus.yml"
    assert mounts["./deploy/compose/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yaml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["orderflow-ingest"]["static_configs"][0]["targets"] == ["ingest:8080"]
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
