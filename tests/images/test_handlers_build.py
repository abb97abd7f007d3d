"""`make images HANDLERS=...` refuses a path that is not an importable package at once, before it
builds or even looks for an engine (the image itself is built and run in test_kube_play.py)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from lockfile import REPO

pytestmark = pytest.mark.procs


def build_with(handlers: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HANDLERS": str(handlers), "CONTAINER_ENGINE": "no-such-engine"}
    return subprocess.run(
        ["bash", str(REPO / "scripts" / "images" / "build.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("missing", "is not a package directory (with __init__.py)"),
        ("no_init", "is not a package directory (with __init__.py)"),
        ("my-app", "my-app is not an importable package name"),
        ("worker", "worker would shadow orderflow's own package"),
    ],
)
def test_a_handlers_path_that_is_no_package_fails_before_any_build(
    tmp_path: Path, layout: str, message: str
) -> None:
    package = tmp_path / layout
    if layout != "missing":
        package.mkdir()
        if layout != "no_init":
            (package / "__init__.py").write_text("")
    result = build_with(package)
    assert result.returncode == 1
    assert "images: FAILED at find the handler package: " in result.stderr
    assert message in result.stderr, result.stderr
    assert "no-such-engine" not in result.stderr
