"""`python -m ingest` and `python -m worker` as a user first meets them (issue #27): `--help` says
what the service is and lists every ORDERFLOW_* setting, and an argument it does not take fails at
once with a message, instead of starting the service and printing nothing. Real processes (the
command line is theirs); neither needs NATS for this."""

from __future__ import annotations

import subprocess
import sys

import pytest

from orderflow import envsettings
from orderflow_tools.kit import REPO

pytestmark = pytest.mark.procs


def run_module(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True, timeout=30
    )


@pytest.mark.parametrize("module", ["ingest", "worker"])
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_says_what_it_is_and_lists_every_setting(module: str, flag: str) -> None:
    done = run_module(module, flag)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: python -m {module}\n")
    listed = " ".join(done.stdout.split())  # the names are wrapped over lines
    for name in envsettings.KNOWN:
        assert f"ORDERFLOW_{name}" in listed
    assert done.stderr == ""


@pytest.mark.parametrize("module", ["ingest", "worker"])
def test_an_argument_it_does_not_take_fails_at_once_naming_it(module: str) -> None:
    done = run_module(module, "--port", "8080")
    assert done.returncode == 2
    assert done.stdout == ""
    assert f"{module}: takes no arguments" in done.stderr and "'--port 8080'" in done.stderr
