"""Every dashboard query and every rule returns data from a real Prometheus scraping a real stack.

Scenario:
  1. nats-server -js on a free port with a temp store; one queued-mode ingest and two workers
     (ORDERFLOW_WORK_S=0.05, a small retryable failure rate so retries and redeliveries happen).
  2. Prometheus from .tools/bin scrapes the three every second and evaluates the chart's rule file.
  3. `orderflow load sine` drives ~20 s of sine load (peak 80 RPS) and samples the services' /metrics;
     `orderflow report` draws the run.
  4. Each dashboard target (with $__rate_interval and $type filled in) is evaluated at the middle
     of the load through the HTTP API and must return at least one series. The one exception is
     explicit: `orderflow_slot_restarts_total` has no series unless a slot crashed, so for panels
     built only on it we require Prometheus to know the metric (scraped metadata) instead. The
     counters of what a healthy run never does (crashes, work redone, refusals, receipt timeouts,
     Idempotency-Key outcomes, checkpoints of sub-second jobs) are exported at 0 from start-up with
     their label values created up front, so their panels answer a real 0 and need no exception
     (nor an `or vector(0)`, which would answer 0 for a target that is not scraped at all).
  5. Every recording rule returns data; every rule evaluates with health "ok"; alert expressions
     evaluate without error and, in this healthy run, fire nothing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness import NatsServer, Service, free_port, http, service_env, wait_until

from dashboards import DASHBOARDS
from dashboards.names import panel_targets, referenced_metric_names
from orderflow_tools import loadrun, report

pytestmark = pytest.mark.procs

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "charts" / "orderflow" / "files" / "prometheus-rules.yaml"
DASHBOARD_DIR = REPO / "charts" / "orderflow" / "dashboards"
# Metrics that legitimately have no series in a healthy run (labelled counters nobody incremented).
NO_SERIES_WHEN_HEALTHY = {"orderflow_slot_restarts_total"}
LOAD_S = 20


@dataclass
class Stack:
    prometheus: str
    run_dir: Path
    load_mid: float  # unix time in the middle of the load


def _service(module: str, nats_url: str, log: Path, **settings: str) -> Service:
    return Service(module, service_env(nats_url, **settings), log).start()


def _prometheus_config(path: Path, ingest: Service, workers: list[Service]) -> None:
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {
                "job_name": "orderflow-ingest",
                "static_configs": [{"targets": [ingest.metrics_url.split("/")[2]]}],
            },
            {
                "job_name": "orderflow-worker",
                "static_configs": [{"targets": [f"127.0.0.1:{w.port}" for w in workers]}],
            },
        ],
    }
    path.write_text(yaml.safe_dump(config))


def _api(base: str, endpoint: str, **params: Any) -> Any:
    url = f"{base}/api/v1/{endpoint}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    status, _, body = http("GET", url)
    payload = json.loads(body)
    assert status == 200 and payload["status"] == "success", f"{endpoint} {params}: {payload}"
    return payload["data"]


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, prometheus_bin: Path, nats_server_bin: Path, k6: Path
) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("observability")
    nats = NatsServer(tmp / "jetstream", tmp / "nats-server.log")
    nats.start()
    services: list[Service] = []
    prom: subprocess.Popen[bytes] | None = None
    try:
        ingest = _service("ingest", nats.url, tmp / "ingest.log")
        services.append(ingest)
        ingest.wait_ready()
        workers = [
            _service(
                "worker", nats.url, tmp / f"worker-{i}.log",
                work_s="0.05", work_fail_rate="0.05", retry_base_s="0.1", consumer_info_interval_s="1",
            )
            for i in range(2)
        ]  # fmt: skip
        services += workers
        for w in workers:
            w.wait_ready()
        _prometheus_config(tmp / "prometheus.yml", ingest, workers)
        port = free_port()
        with (tmp / "prometheus.log").open("wb") as log:
            prom = subprocess.Popen(
                [prometheus_bin, f"--config.file={tmp / 'prometheus.yml'}",
                 f"--storage.tsdb.path={tmp / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: _ready(base, prom), 30, "prometheus to be ready", interval=0.2)
        wait_until(lambda: _all_up(base), 20, "prometheus to scrape all three targets", interval=0.2)

        run_dir = tmp / "run"
        parser = argparse.ArgumentParser()
        sub = parser.add_subparsers()
        loadrun.add_parser(sub)
        report.add_parser(sub)
        metrics = [s.metrics_url for s in workers]
        args = parser.parse_args(
            ["load", "sine", "--url", ingest.url, "--ingest-metrics", ingest.metrics_url, "--duration", f"{LOAD_S}s", "--peak-rps", "80",
             "--out", str(run_dir), "--settle", "10s", "--nats-url", nats.url, "--dev-dir", str(tmp / "no-dev"),
             *[x for m in metrics for x in ("--metrics", m)]]
        )  # fmt: skip
        started = time.time()
        assert args.func(args) == 0, (run_dir / "k6-summary.txt").read_text()
        assert report.run(parser.parse_args(["report", str(run_dir)])) == 0
        time.sleep(3)  # a last scrape and rule evaluation after the queue emptied
        yield Stack(base, run_dir, started + LOAD_S / 2)
    finally:
        if prom is not None:
            prom.terminate()
            prom.wait(10)
        for svc in services:
            svc.stop()
        nats.stop()


def _ready(base: str, prom: subprocess.Popen[bytes]) -> bool:
    assert prom.poll() is None, "prometheus exited"
    try:
        return http("GET", f"{base}/-/ready", timeout=1)[0] == 200
    except OSError:
        return False


def _all_up(base: str) -> bool:
    targets = _api(base, "targets")["activeTargets"]
    return len(targets) == 3 and all(t["health"] == "up" for t in targets)


def _dashboard_queries() -> list[tuple[str, str, str]]:
    out = []
    for name in sorted(DASHBOARDS):
        dashboard = json.loads((DASHBOARD_DIR / name).read_text())
        for title, expr in panel_targets(dashboard):
            out.append((name, title, expr))
    return out


def _rules() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


@pytest.mark.parametrize(("dashboard", "title", "expr"), _dashboard_queries())
def test_dashboard_query_returns_data(stack: Stack, dashboard: str, title: str, expr: str) -> None:
    query = expr.replace("$__rate_interval", "15s").replace("$type", ".*")
    result = _api(stack.prometheus, "query", query=query, time=f"{stack.load_mid:.3f}")["result"]
    if referenced_metric_names(expr) <= NO_SERIES_WHEN_HEALTHY:
        for metric in referenced_metric_names(expr):
            assert _api(stack.prometheus, "metadata", metric=metric), f"{metric} unknown to Prometheus"
        return
    assert result, f"{dashboard} / {title}: no data for {query}"


@pytest.mark.parametrize("rule", [r for r in _rules() if "record" in r], ids=lambda r: r["record"])
def test_recording_rule_returns_data(stack: Stack, rule: dict[str, Any]) -> None:
    result = _api(stack.prometheus, "query", query=rule["record"])["result"]
    assert result, f"{rule['record']}: no data"
    direct = _api(stack.prometheus, "query", query=rule["expr"], time=f"{stack.load_mid:.3f}")["result"]
    assert direct, f"{rule['record']} expression: no data in the middle of the load"


def test_every_rule_evaluates_cleanly_and_a_healthy_run_fires_nothing(stack: Stack) -> None:
    groups = _api(stack.prometheus, "rules")["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert len(rules) == len(_rules())
    for rule in rules:
        assert rule["health"] == "ok", f"{rule['name']}: {rule.get('lastError')}"
        if rule["type"] == "alerting":
            assert rule["state"] == "inactive", f"{rule['name']} is {rule['state']} in a healthy run"
    for rule in _rules():
        if "alert" in rule:
            # evaluates without error; empty is the expected answer in a healthy run
            _api(stack.prometheus, "query", query=rule["expr"], time=f"{stack.load_mid:.3f}")


def test_the_load_run_recorded_the_queue_and_drew_it(stack: Stack) -> None:
    numbers = json.loads((stack.run_dir / "figures.json").read_text())
    assert numbers["status_500"] == 0
    assert numbers["accepted"] == numbers["by_status"]["200"]
    # 5% of runs fail and retry after a short delay, so a few may still be on their way at the end
    assert 0.9 * numbers["accepted"] <= numbers["done"] <= numbers["accepted"]
    assert numbers["backlog_peak"] >= 0 and numbers["peak_rps"] >= 70
    for png in report.PNGS:
        assert (stack.run_dir / png).stat().st_size > 10_000
