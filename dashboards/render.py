"""Render the dashboards to stable, diff-friendly JSON files."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as dm

from dashboards import overview, task_types

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "charts" / "orderflow" / "dashboards"

# file name -> builder; the file names are what the chart and compose provisioning mount.
DASHBOARDS: dict[str, Callable[[], dm.Dashboard]] = {
    "orderflow-overview.json": overview.build,
    "orderflow-task-types.json": task_types.build,
}


def render(build: Callable[[], dm.Dashboard]) -> str:
    # Round-trip through json so keys are sorted at every level and the output is byte-stable.
    raw = json.loads(JSONEncoder().encode(build()))
    return json.dumps(raw, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def render_all() -> dict[str, str]:
    return {name: render(build) for name, build in DASHBOARDS.items()}


def write_all(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_all().items():
        path = out / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
