"""The ingest's HTTP edge: receipt deadlines, the connection cap and bounded heads
(orderflow/edgeprotocol.py), with their events counted and logged as one summary line per interval."""

from __future__ import annotations

import logging
from typing import Any

from ingest import responses
from orderflow import edgeprotocol
from orderflow.config import Settings
from orderflow.logsummary import SummaryLog
from orderflow.metrics import IngestMetrics

log = logging.getLogger(__name__)


class EdgeEvents:
    def __init__(self, settings: Settings, metrics: IngestMetrics) -> None:
        interval_s = settings.refusal_log_interval_s
        self._timeouts: dict[str, Any] = {
            phase: metrics.http_request_timeouts.labels(phase) for phase in ("headers", "body")
        }
        self._refused = metrics.http_connections_refused
        self._timeout_log = SummaryLog(log, "connections closed at the receipt deadline", interval_s)
        self._refusal_log = SummaryLog(
            log, f"connections refused at the cap of {settings.http_max_connections}", interval_s
        )
        self._deadline_s = {"headers": settings.http_header_timeout_s, "body": settings.http_body_timeout_s}
        self._heads = {r: metrics.orders_refused.labels(r) for r in edgeprotocol.HEAD_REFUSALS}
        self._head_log = SummaryLog(log, "requests refused for their head", interval_s)
        self._head_limits = {
            "head_too_large": f"head over {settings.http_max_head_bytes} bytes (431)",
            "too_many_headers": f"more than {settings.http_max_headers} headers (431)",
            "url_too_long": f"URL over {settings.http_max_url_bytes} bytes (414)",
        }

    def receipt_timeout(self, phase: str) -> None:
        self._timeouts[phase].inc()
        self._timeout_log.note(f"{phase} not received within {self._deadline_s[phase]:g}s")

    def connection_refused(self) -> None:
        self._refused.inc()
        self._refusal_log.note("too many open connections")

    def head_refused(self, reason: str) -> None:
        self._heads[reason].inc()
        self._head_log.note(f"{reason}: {self._head_limits[reason]}")


def edge(settings: Settings, metrics: IngestMetrics) -> edgeprotocol.Edge:
    return edgeprotocol.Edge(
        header_timeout_s=settings.http_header_timeout_s,
        body_timeout_s=settings.http_body_timeout_s,
        max_connections=settings.http_max_connections,
        max_head_bytes=settings.http_max_head_bytes,
        max_headers=settings.http_max_headers,
        max_url_bytes=settings.http_max_url_bytes,
        refusal=edgeprotocol.refusal(
            503, responses.KAPUT, ((b"retry-after", str(settings.retry_after_s).encode()),)
        ),
        events=EdgeEvents(settings, metrics),
    )
