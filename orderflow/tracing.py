"""Whether this process traces, decided once at start-up from the standard OpenTelemetry variables,
at no cost when it does not: this module imports nothing of OpenTelemetry; orderflow/otel.py (the
SDK, an exporter and its thread) is imported only when tracing is on.

On when the `otel` extra is installed AND the variables ask for it: `OTEL_TRACES_EXPORTER` names
an exporter (`otlp`), or an OTLP endpoint is set (`OTEL_EXPORTER_OTLP_ENDPOINT`,
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`); never when `OTEL_SDK_DISABLED=true` or the exporter is
`none`. Off is the default: the SDK's own default exporter (`otlp`) would start a thread that
sends to localhost:4318 in every pod that never asked for traces."""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orderflow.otel import Tracer

log = logging.getLogger(__name__)

# The W3C Trace Context headers, carried by hand on the order's NATS message (and every copy of it).
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
_ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def context_of(headers: Mapping[str, str] | None) -> dict[str, str]:
    """The trace context headers among `headers` (none when the order was stored untraced), for a
    new message that belongs to the same order (its callback job)."""
    if not headers:
        return {}
    return {k: headers[k] for k in (TRACEPARENT, TRACESTATE) if k in headers}


def wanted(environ: Mapping[str, str]) -> bool:
    """What the variables ask for, whether or not the SDK is installed."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return False
    return bool(exporter) or any(environ.get(name, "").strip() for name in _ENDPOINTS)


def installed() -> bool:
    return importlib.util.find_spec("opentelemetry.sdk") is not None


def setup(service: str, instance: str, environ: Mapping[str, str] | None = None) -> Tracer | None:
    """This process's tracer, or None (tracing off). `service` is the default `service.name`
    (OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win), `instance` the pod or worker id."""
    env = os.environ if environ is None else environ
    if not wanted(env):
        return None
    if not installed():
        log.warning("OTEL_* variables ask for traces but the `otel` extra is not installed: tracing off")
        return None
    from orderflow import otel, probes

    tracer = otel.Tracer.from_environment(service, instance, env)
    probes.openmetrics = True  # the duration histograms' exemplars show in OpenMetrics only
    return tracer
