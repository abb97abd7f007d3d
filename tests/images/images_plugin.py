"""Fixtures of the image tests: podman (or a skip/CI failure naming the step), the images built
from this checkout, and a summary of build times and image sizes at the end of the run. A pytest
plugin registered in tests/conftest.py (a second conftest.py would clash with it under mypy);
the fixtures are lazy, so runs without image tests never look for podman."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from podman_engine import SUMMARY, Images, Podman, build_images, container_flags, find_podman, unavailable


@pytest.fixture(scope="session")
def podman() -> Podman:
    return find_podman()


@pytest.fixture(scope="session")
def images(podman: Podman) -> Images:
    built = build_images(podman)
    # Can this machine run a container at all (the flags every test uses)? If not, that is the
    # machine, not the images: skip with podman's words, or fail under CI.
    proc = podman.run(
        "run a container",
        "run",
        "--rm",
        *container_flags(),
        "--entrypoint",
        "python",
        built.worker,
        "-c",
        "print('ok')",
        check=False,
        timeout=120,
    )
    if proc.returncode != 0 or proc.stdout.strip() != "ok":
        unavailable("run a container with podman", (proc.stderr or proc.stdout).strip()[-1500:])
    return built


@pytest.fixture
def containers(podman: Podman) -> Iterator[list[str]]:
    """Names of containers a test started; removed afterwards (by name, only these)."""
    started: list[str] = []
    yield started
    for name in started:
        podman.rm_container(name)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if SUMMARY:
        terminalreporter.section("images")
        for line in SUMMARY:
            terminalreporter.write_line(line)
