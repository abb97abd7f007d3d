"""Settings are read once, typed, and every bad value is reported with its name at start-up."""

from __future__ import annotations

import subprocess
import sys

import pytest

from orderflow.config import TaskType, WorkRange
from orderflow.envsettings import ConfigError, load_settings


def test_defaults_follow_the_spec_table() -> None:
    s = load_settings("worker", {})
    assert s.nats_urls == ("nats://127.0.0.1:4222",)
    assert (s.http_host, s.http_port) == ("0.0.0.0", 9090)
    # the ingest takes API keys unless told to run open (tests/orderflow/test_auth.py)
    ingest = load_settings("ingest", {"ORDERFLOW_AUTH_OPEN": "true"})
    assert (ingest.http_port, ingest.metrics_port, ingest.api_keys_file, ingest.api_keys_reload_s) == (
        8080,
        9180,
        None,
        5.0,
    )
    assert (s.mode, s.rate_limit_rps, s.concurrency) == ("queued", 50.0, 16)
    assert (s.ack_wait_s, s.task_timeout_s, s.drain_timeout_s, s.max_deliver) == (30, 3600, 60, 5)
    assert s.work_s == WorkRange(0.5, 0.5) and s.work_fail_rate == 0 and s.work_checkpoints
    assert s.task_types == (TaskType("default", 16, 3600.0),)


def test_values_are_parsed_and_derived() -> None:
    s = load_settings(
        "worker",
        {
            "ORDERFLOW_NATS_URL": "nats://a:4222, nats://b:4222",
            "ORDERFLOW_WORK_S": "1-30",
            "ORDERFLOW_CONCURRENCY": "8",
            "ORDERFLOW_TASK_TYPES": "default,report:2:60",
            "ORDERFLOW_DRAIN_TIMEOUT_S": "10",
        },
    )
    assert s.nats_urls == ("nats://a:4222", "nats://b:4222")
    assert s.work_s == WorkRange(1, 30)
    assert s.task_types == (TaskType("default", 8, 3600.0), TaskType("report", 2, 60.0))
    assert s.split_types
    assert (s.max_attempts, s.max_crashes, s.max_deliveries) == (5, 3, 100)


def test_the_demo_checkpoints_can_be_turned_off() -> None:
    assert not load_settings("worker", {"ORDERFLOW_WORK_CHECKPOINTS": "false"}).work_checkpoints
    with pytest.raises(ConfigError, match="ORDERFLOW_WORK_CHECKPOINTS='off': must be true or false"):
        load_settings("worker", {"ORDERFLOW_WORK_CHECKPOINTS": "off"})


def test_max_attempts_is_max_delivers_clearer_name() -> None:
    assert load_settings("worker", {"ORDERFLOW_MAX_ATTEMPTS": "7"}).max_deliver == 7
    assert load_settings("worker", {"ORDERFLOW_MAX_DELIVER": "7"}).max_attempts == 7
    with pytest.raises(ConfigError) as err:
        load_settings("worker", {"ORDERFLOW_MAX_ATTEMPTS": "7", "ORDERFLOW_MAX_DELIVER": "4"})
    assert "ORDERFLOW_MAX_ATTEMPTS=7 and ORDERFLOW_MAX_DELIVER=4 disagree" in str(err.value)


def test_every_bad_value_is_reported_with_its_name() -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(
            "worker",
            {
                "ORDERFLOW_ACK_WAIT_S": "soon",
                "ORDERFLOW_MODE": "fast",
                "ORDERFLOW_CONCURRENCY": "0",
                "ORDERFLOW_WORK_S": "30-1",
                "ORDERFLOW_NATS_URL": "localhost",
                "ORDERFLOW_DRAIN_TIMEOUT": "5",
                "ORDERFLOW_TASK_TYPES": "Bad Name",
            },
        )
    text = str(err.value)
    for name in ("ACK_WAIT_S", "MODE", "CONCURRENCY", "WORK_S", "NATS_URL", "DRAIN_TIMEOUT:", "TASK_TYPES"):
        assert f"ORDERFLOW_{name}" in text
    assert len(err.value.problems) == 7


@pytest.mark.procs
def test_a_service_refuses_to_start_on_bad_config_with_one_clear_message() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ingest"],
        env={"ORDERFLOW_RATE_LIMIT_RPS": "lots", "PATH": ""},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "ORDERFLOW_RATE_LIMIT_RPS='lots': not a number" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_ingest_settings_and_the_multiprocess_dir_are_read_once_into_settings() -> None:
    s = load_settings("ingest", {"ORDERFLOW_HTTP_HOST": "127.0.0.1"})
    assert s.nats_drain_timeout_s == 5.0 and s.prometheus_multiproc_dir is None
    s = load_settings(
        "ingest",
        {
            "PROMETHEUS_MULTIPROC_DIR": "/tmp/metrics",
            "ORDERFLOW_AUTH_OPEN": "true",
            "ORDERFLOW_NATS_DRAIN_TIMEOUT_S": "2.5",
            "ORDERFLOW_HTTP_HEADER_TIMEOUT_S": "3",
            "ORDERFLOW_HTTP_BODY_TIMEOUT_S": "8",
            "ORDERFLOW_HTTP_MAX_CONNECTIONS": "100",
            "ORDERFLOW_STATUS_TTL_S": "3600",
            "ORDERFLOW_REFUSAL_LOG_INTERVAL_S": "30",
            "ORDERFLOW_HTTP_MAX_HEAD_BYTES": "32768",
            "ORDERFLOW_HTTP_MAX_HEADERS": "50",
            "ORDERFLOW_HTTP_MAX_URL_BYTES": "4096",
        },
    )
    assert (s.http_max_head_bytes, s.http_max_headers, s.http_max_url_bytes) == (32768, 50, 4096)
    assert s.prometheus_multiproc_dir == "/tmp/metrics"
    assert (s.nats_drain_timeout_s, s.http_header_timeout_s, s.http_body_timeout_s) == (2.5, 3, 8)
    assert (s.http_max_connections, s.idempotency_ttl_s, s.refusal_log_interval_s) == (100, 3600, 30)
    assert s.idempotency_ttl_s == s.status_ttl_s  # one lifetime: a key is known as long as its order


def test_the_removed_idempotency_ttl_is_named_with_what_replaced_it() -> None:
    """A key had 24 h and its order's status 7 days: one lifetime now (issue #20)."""
    with pytest.raises(ConfigError) as err:
        load_settings("ingest", {"ORDERFLOW_IDEMPOTENCY_TTL_S": "3600", "ORDERFLOW_HTTP_HOST": "127.0.0.1"})
    (problem,) = err.value.problems
    assert "ORDERFLOW_IDEMPOTENCY_TTL_S: removed" in problem and "ORDERFLOW_STATUS_TTL_S" in problem


def test_worker_types_pick_the_served_types_and_must_be_configured() -> None:
    env = {"ORDERFLOW_TASK_TYPES": "default,report:2:7200", "ORDERFLOW_WORKER_TYPES": "report"}
    s = load_settings("worker", env)
    assert [t.name for t in s.served_types] == ["report"] and s.served_types[0].concurrency == 2
    assert s.split_types  # the consumer is still workers-report
    assert [t.name for t in load_settings("worker", {}).served_types] == ["default"]
    with pytest.raises(ConfigError, match="WORKER_TYPES names invoice, not in ORDERFLOW_TASK_TYPES"):
        load_settings("worker", {**env, "ORDERFLOW_WORKER_TYPES": "report,invoice"})
