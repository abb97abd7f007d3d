"""Prometheus text exposition -> samples, and the two sums everyone wants from them: by name (over
every label set) and by name plus some labels. One parser for dev, chaos, bench and tests."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import NamedTuple

from prometheus_client.parser import text_string_to_metric_families

_SELECTOR = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(?:,|$)')


class Sample(NamedTuple):
    name: str  # as exposed: `orderflow_work_done_total`, `..._bucket`, `..._created`
    labels: dict[str, str]
    value: float


def parse_metrics(text: str) -> list[Sample]:
    """Every sample of a /metrics body. Raises ValueError on text that is not the exposition format."""
    return [
        Sample(s.name, dict(s.labels), float(s.value))
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def total(samples: Iterable[Sample], name: str, **labels: str) -> float:
    """Sum of the samples called `name` whose labels include `labels` (0.0 when none does)."""
    want = labels.items()
    return sum(s.value for s in samples if s.name == name and want <= s.labels.items())


def by_name(samples: Iterable[Sample]) -> dict[str, float]:
    """{sample name: sum over every label set}."""
    out: dict[str, float] = {}
    for s in samples:
        out[s.name] = out.get(s.name, 0.0) + s.value
    return out


def select(samples: Iterable[Sample], selector: str) -> float:
    """`total` for a selector written as in the exposition: `name` or `name{a="x",b="y"}`."""
    m = _SELECTOR.match(selector.strip())
    if m is None:
        raise ValueError(f"not a metric selector: {selector!r}")
    name, body = m.group(1), (m.group(2) or "").strip()
    labels: dict[str, str] = {}
    pos = 0
    while pos < len(body):
        lm = _LABEL.match(body, pos)
        if lm is None:
            raise ValueError(f"not a metric selector: {selector!r}")
        labels[lm.group(1)] = re.sub(
            r"\\(.)", lambda e: "\n" if e.group(1) == "n" else e.group(1), lm.group(2)
        )
        pos = lm.end()
    return total(samples, name, **labels)
