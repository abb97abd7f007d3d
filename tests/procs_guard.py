"""The fast layer's guard (a pytest plugin, registered in tests/conftest.py): a test that starts a
process must say so with the `procs` marker (or `slow`, which implies it), so that
`make test-fast` (`-m "not slow and not procs"`) stays in process and stays fast.

In every run, `make test` included, starting a process from a test (or its fixtures) that carries
neither marker is refused before the process exists and fails that test with the line to add: a
module that forgets the marker fails CI, not just the fast layer's clock. Every way the suite
starts a process goes through one of the functions patched here (subprocess and asyncio's
subprocesses use `Popen._execute_child`; multiprocessing and the like fork or spawn)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest

VIOLATION = pytest.StashKey[str]()
_running: list[pytest.Item] = []


def _may_start_processes(item: pytest.Item) -> bool:
    return any(item.get_closest_marker(name) is not None for name in ("procs", "slow"))


def _refuse(what: Callable[[tuple[Any, ...]], str], real: Callable[..., Any]) -> Callable[..., Any]:
    def guarded(*args: Any, **kwargs: Any) -> Any:
        item = _running[-1] if _running else None
        if item is not None and not _may_start_processes(item):
            message = (
                f"{item.nodeid} started a process ({what(args)}) without the `procs` marker: "
                "add `pytestmark = pytest.mark.procs` to its module (or mark the test), "
                "or prove the rule in process (make test-fast runs no process)"
            )
            item.stash[VIOLATION] = message
            raise RuntimeError(message)
        return real(*args, **kwargs)

    return guarded


def _argv(index: int) -> Callable[[tuple[Any, ...]], str]:
    def describe(args: tuple[Any, ...]) -> str:
        argv = args[index] if len(args) > index else "?"
        words = [os.fsdecode(argv)] if isinstance(argv, (str, bytes)) else [str(a) for a in argv]
        return " ".join(words)[:120]

    return describe


def pytest_configure(config: pytest.Config) -> None:
    # Popen._execute_child(self, args, ...): every subprocess.* call and asyncio's subprocesses.
    popen: Any = subprocess.Popen
    popen._execute_child = _refuse(_argv(1), popen._execute_child)
    os.fork = _refuse(lambda _: "os.fork", os.fork)
    os.posix_spawn = _refuse(_argv(1), os.posix_spawn)
    os.posix_spawnp = _refuse(_argv(1), os.posix_spawnp)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    # Fixtures start inside the protocol of the first test that needs them (and stop inside the
    # last one's), so a module-scoped nats-server is charged to that module's tests.
    _running.append(item)
    try:
        yield
    finally:
        _running.pop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Iterator[None]:
    # The refusal is raised in the code that asked for the process, which may swallow it (a
    # helper that retries, a `with suppress`): the test fails here whatever that code did.
    outcome: Any = yield
    report = outcome.get_result()
    message = item.stash.get(VIOLATION, None)
    if message is not None and report.passed and report.when in ("setup", "call"):
        report.outcome = "failed"
        report.longrepr = message
