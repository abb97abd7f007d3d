"""Tracing is off by default and costs nothing then (issue #23): which variables turn it on, and,
in a fresh interpreter that builds both services, no OpenTelemetry module imported and no thread
started. The header half (nothing added to the order's message) is in tests/tracing."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from harness import REPO

from orderflow import tracing


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, False),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://tempo:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://tempo:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://tempo:4318"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, False),
        ({"OTEL_SDK_DISABLED": "TRUE", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://tempo:4318"}, False),
        ({"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_SAMPLER": "always_on"}, False),  # no exporter asked for
    ],
)
def test_tracing_is_on_only_when_the_standard_variables_ask_for_it(env: dict[str, str], on: bool) -> None:
    assert tracing.wanted(env) is on


def test_an_unknown_exporter_or_protocol_is_named_at_start_up() -> None:
    from orderflow import otel

    with pytest.raises(otel.TracingConfigError, match="zipkin"):
        otel.Tracer.from_environment("s", "i", {"OTEL_TRACES_EXPORTER": "zipkin"})
    with pytest.raises(otel.TracingConfigError, match="http/json"):
        otel.Tracer.from_environment("s", "i", {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})


_BUILD_BOTH = """
import sys, threading
from prometheus_client import CollectorRegistry
from orderflow.envsettings import load_settings
from orderflow.metrics import IngestMetrics
from ingest.app import create_app
from ingest.state import IngestState
from worker.service import WorkerService

env = {"ORDERFLOW_HTTP_HOST": "127.0.0.1"}
state = IngestState(load_settings("ingest", env), IngestMetrics(CollectorRegistry()))
app = create_app(state)
worker = WorkerService(load_settings("worker", env))
assert state.tracer is None and worker.tracer is None
assert app.entry is app.orders, "POST /orders is wrapped with tracing off"
otel = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
assert not otel, otel
threads = [t.name for t in threading.enumerate()]
assert threads == ["MainThread"], threads
print("off ok")
"""


@pytest.mark.procs
def test_off_the_services_import_no_opentelemetry_and_start_no_thread() -> None:
    """The extra is installed here (the dev extra pulls it in): off is the variables' doing."""
    assert tracing.installed()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "ORDERFLOW_"))}
    done = subprocess.run(
        [sys.executable, "-c", _BUILD_BOTH], env=env, cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and "off ok" in done.stdout, done.stderr[-3000:]
