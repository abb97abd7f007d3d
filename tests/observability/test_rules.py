"""The Prometheus rules are valid, covered by promtool unit tests, and use only orderflow metrics."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from dashboards.names import defined_metric_names, referenced_metric_names

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "charts" / "orderflow" / "files" / "prometheus-rules.yaml"
RULE_TESTS = sorted((REPO / "rules").glob("*_test.yaml"))


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in doc["groups"] for rule in group["rules"]]


@pytest.mark.procs
def test_promtool_check_rules(promtool: Path) -> None:
    result = subprocess.run([promtool, "check", "rules", RULES], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.procs
def test_promtool_unit_tests_pass(promtool: Path) -> None:
    assert RULE_TESTS, "no rules/*_test.yaml"
    result = subprocess.run(
        [promtool, "test", "rules", *RULE_TESTS], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    alerts = {r["alert"] for r in _rules() if "alert" in r}
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text(encoding="utf-8"))["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert alerts - firing == set(), "alerts without a firing test"
    assert alerts - quiet == set(), "alerts without a not-firing test"


def test_rules_use_only_orderflow_metrics_and_their_own_recordings() -> None:
    known = defined_metric_names() | {r["record"] for r in _rules() if "record" in r}
    for rule in _rules():
        used = referenced_metric_names(rule["expr"])
        assert used, rule
        assert used <= known, f"{rule.get('alert') or rule.get('record')}: unknown {sorted(used - known)}"


def test_recording_rule_names_follow_level_metric_operations() -> None:
    for rule in _rules():
        if "record" in rule:
            assert re.fullmatch(r"orderflow:[a-z0-9_]+:[a-z0-9_]+", rule["record"]), rule["record"]
        else:
            assert rule["labels"]["severity"] in {"info", "warning", "critical"}, rule["alert"]
            assert rule["annotations"]["summary"], rule["alert"]


def _docs_prometheus_config_recipe() -> str:
    """The `cat > /tmp/prom.yml <<YAML ... YAML` command of docs/observability.md, as written."""
    text = (REPO / "docs" / "observability.md").read_text(encoding="utf-8")
    section = text.split("### Locally without Docker", 1)[1]
    lines = [line.removeprefix("    ") for line in section.splitlines() if line.startswith("    ")]
    start = next(i for i, line in enumerate(lines) if line.startswith("cat > /tmp/prom.yml"))
    end = next(i for i in range(start + 1, len(lines)) if lines[i] == "YAML")
    return "\n".join(lines[start : end + 1]) + "\n"


@pytest.mark.procs
def test_docs_local_prometheus_recipe_loads_every_rule(promtool: Path, tmp_path: Path) -> None:
    # Prometheus resolves rule_files against the config file's directory and a glob that matches
    # nothing loads 0 rules silently; promtool reports what the config really loads.
    recipe = _docs_prometheus_config_recipe().replace("/tmp/prom.yml", str(tmp_path / "prom.yml"))
    subprocess.run(["bash", "-euc", recipe], cwd=REPO, check=True, timeout=30)
    result = subprocess.run(
        [promtool, "check", "config", tmp_path / "prom.yml"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout, result.stdout
    loaded = re.search(r"SUCCESS: (\d+) rules found", result.stdout)
    assert loaded, result.stdout
    assert int(loaded.group(1)) == len(_rules()) > 0
