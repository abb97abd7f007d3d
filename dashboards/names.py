"""Which metric names exist (orderflow/metrics.py) and which ones a PromQL expression uses.

Dashboards, rules and their tests check against this, so a renamed metric breaks a test rather
than a graph in production.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry

from orderflow.metrics import IngestMetrics, WorkerMetrics

# Series names a Prometheus client exposes for one metric family, by family type.
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("_count", "_sum", "_created", ""),
    "gauge": ("",),
}
_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
    "and", "or", "unless", "inf", "nan", "atan2", "start", "end",
}  # fmt: skip
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_BRACES = re.compile(r"\{[^{}]*\}|\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"(?<![\w:$.])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()")


def defined_metric_names() -> set[str]:
    """Every series name the ingest and the worker can expose, from fresh registries."""
    names: set[str] = set()
    for metrics in (IngestMetrics, WorkerMetrics):
        registry = CollectorRegistry()
        metrics(registry)
        for family in registry.collect():
            names.update(family.name + suffix for suffix in _SUFFIXES[family.type])
    return names


def referenced_metric_names(expr: str) -> set[str]:
    """Metric names selected by a PromQL expression (not functions, labels or keywords)."""
    text = _STRING.sub('""', expr)
    text = _BRACES.sub(" ", _BRACES.sub(" ", text))  # label matchers, ranges, nested subqueries
    text = _GROUPING.sub(" ", text)
    return {m for m in _IDENT.findall(text) if m.lower() not in _KEYWORDS}


def panel_targets(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, expr) for every Prometheus target, rows included."""
    for panel in dashboard.get("panels", []):
        for inner in [panel, *panel.get("panels", [])]:
            for target in inner.get("targets", []):
                if "expr" in target:
                    yield inner.get("title", "?"), target["expr"]


def variable_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(variable name, PromQL inside label_values()) for query variables."""
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        q = var.get("query")
        text = q.get("query", "") if isinstance(q, dict) else str(q)
        m = re.match(r"^label_values\((.+),\s*\w+\)$", text.strip())
        yield var["name"], m.group(1) if m else text
