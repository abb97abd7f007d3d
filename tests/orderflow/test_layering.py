"""The runtime core and the services stand alone: nothing in orderflow/, ingest/ or worker/ imports
the tools wing (orderflow_tools/), which the images do not ship."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_the_runtime_core_and_the_services_never_import_the_tools() -> None:
    offenders = {
        str(path.relative_to(REPO)): sorted(
            m for m in imported_modules(path) if m.split(".")[0] == "orderflow_tools"
        )
        for package in ("orderflow", "ingest", "worker")
        for path in sorted((REPO / package).rglob("*.py"))
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_runtime_core_holds_no_tools() -> None:
    core = {p.stem for p in (REPO / "orderflow").glob("*.py")} - {"__init__"}
    assert not core & {"cli", "dev", "loadrun", "load_k6", "load_metrics", "load_series", "report", "kit"}
    assert not [p for p in (REPO / "orderflow").iterdir() if p.is_dir() and p.name != "__pycache__"]
