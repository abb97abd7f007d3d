"""The fast layer's guard (tests/procs_guard.py): a test without the `procs` (or `slow`) marker that
starts a process is refused before the process exists, whichever way it asks, with the line to
add; a marked test starts its processes as before."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable

import pytest
from procs_guard import VIOLATION

EXIT_3 = [sys.executable, "-c", "raise SystemExit(3)"]


async def _exec() -> int:
    proc = await asyncio.create_subprocess_exec(*EXIT_3)
    return await proc.wait()


STARTS: dict[str, Callable[[], object]] = {
    "subprocess.run": lambda: subprocess.run(EXIT_3, check=False),
    "asyncio": lambda: asyncio.run(_exec()),
}


@pytest.mark.parametrize("how", sorted(STARTS))
def test_a_process_started_without_the_marker_is_refused_naming_the_line_to_add(
    request: pytest.FixtureRequest, how: str
) -> None:
    with pytest.raises(RuntimeError) as refused:
        STARTS[how]()
    # The guard also fails the test in its report whatever the caller did with the error; taken
    # back here, since the refusal is what this test expects.
    recorded = request.node.stash[VIOLATION]
    del request.node.stash[VIOLATION]
    assert str(refused.value) == recorded
    assert request.node.nodeid in recorded
    assert "pytestmark = pytest.mark.procs" in recorded
    assert "raise SystemExit(3)" in recorded  # what it tried to start


@pytest.mark.procs
def test_a_marked_test_starts_its_process() -> None:
    assert subprocess.run(EXIT_3, check=False).returncode == 3
