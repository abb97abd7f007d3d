"""Reading k6's `--out json` stream: one JSON object per line, `Point`s carry one sample each.

Shared by `orderflow load` (live progress while the file grows) and `orderflow report`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

ORDERS_REQUEST = "POST /orders"  # the `name` tag k6/lib/checks.js puts on order requests


@dataclass(frozen=True)
class Point:
    metric: str
    t: float  # unix seconds
    value: float
    tags: dict[str, str]


def parse_line(line: str) -> Point | None:
    """A Point from one line of k6 JSON output, or None for metric declarations and junk."""
    try:
        obj: dict[str, Any] = json.loads(line)
    except ValueError:
        return None
    if obj.get("type") != "Point":
        return None
    data = obj["data"]
    t = datetime.fromisoformat(data["time"]).timestamp()
    return Point(
        obj["metric"], t, float(data["value"]), {k: str(v) for k, v in (data.get("tags") or {}).items()}
    )


def read_points(path: Path, metrics: set[str] | None = None) -> Iterator[Point]:
    with path.open(encoding="utf-8") as f:
        for line in f:
            # cheap pre-filter: most lines belong to metrics we do not read
            if metrics is not None and not any(f'"{m}"' in line for m in metrics):
                continue
            point = parse_line(line)
            if point is not None and (metrics is None or point.metric in metrics):
                yield point


class Follower:
    """Reads the complete lines appended to a file since the last call (the file may not exist yet)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: TextIO | None = None
        self._partial = ""

    def new_points(self, metrics: set[str]) -> list[Point]:
        if self._file is None:
            if not self.path.exists():
                return []
            self._file = self.path.open(encoding="utf-8")
        chunk = self._partial + self._file.read()
        lines = chunk.split("\n")
        self._partial = lines.pop()  # an unfinished last line waits for the next call
        out = []
        for line in lines:
            if any(f'"{m}"' in line for m in metrics):
                point = parse_line(line)
                if point is not None:
                    out.append(point)
        return out

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
