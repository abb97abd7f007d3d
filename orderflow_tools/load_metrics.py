"""Sampling the services' /metrics once a second during a load run, into a JSONL file.

Each line: {"t": unix seconds, "target": url, "ok": bool, "samples": [[name, {labels}, value], ...]}
with only the orderflow_* samples (no `_created` timestamps), so a report can rebuild any series.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orderflow_tools.kit import Sample, parse_metrics


def orderflow_samples(text: str, prefix: str = "orderflow_") -> list[Sample]:
    """The samples worth recording: ours, without the `_created` timestamps."""
    return [s for s in parse_metrics(text) if s.name.startswith(prefix) and not s.name.endswith("_created")]


def scrape(url: str, timeout_s: float = 2.0) -> list[Sample]:
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:
        return orderflow_samples(resp.read().decode("utf-8", "replace"))


@dataclass
class Sampler:
    """Scrapes every target each `interval_s` on a thread; `last` holds the latest samples."""

    targets: list[str]
    out: Path
    interval_s: float = 1.0
    last: dict[str, list[Sample]] = field(default_factory=dict)
    ok: dict[str, bool] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    scrapes: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="metrics-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        with self.out.open("a", encoding="utf-8") as f:
            next_at = time.monotonic()
            while not self._stop.is_set():
                for url in self.targets:
                    t = time.time()
                    try:
                        samples = scrape(url, timeout_s=min(2.0, self.interval_s * 2))
                        self.last[url], self.ok[url] = samples, True
                    except (OSError, ValueError):
                        samples, self.ok[url] = [], False
                        self.failures[url] = self.failures.get(url, 0) + 1
                    f.write(
                        json.dumps({"t": t, "target": url, "ok": self.ok[url], "samples": samples}) + "\n"
                    )
                f.flush()
                self.scrapes += 1
                next_at += self.interval_s
                self._stop.wait(max(0.0, next_at - time.monotonic()))

    def total(self, name: str, **labels: str) -> float | None:
        """Sum of `name` over all targets' latest samples matching `labels`; None if none has it."""
        values = [v for url in self.targets for v in _matching(self.last.get(url, []), name, labels)]
        return sum(values) if values else None

    def maximum(self, name: str, **labels: str) -> float | None:
        values = [v for url in self.targets for v in _matching(self.last.get(url, []), name, labels)]
        return max(values) if values else None


def _matching(samples: list[Sample], name: str, labels: dict[str, str]) -> Iterator[float]:
    for n, lab, v in samples:
        if n == name and all(lab.get(k) == want for k, want in labels.items()):
            yield v


def read_samples(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)
