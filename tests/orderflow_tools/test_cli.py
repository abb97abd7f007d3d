"""The `orderflow` command fails fast, naming the NATS it could not reach, never hangs; a closed
pipe ends it quietly."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
from harness import REPO, NatsServer, cli, connect, free_port, run

pytestmark = pytest.mark.procs

COMMANDS = [
    ["status"],
    ["status", "o-1"],
    ["status", "o-1", "--watch"],
    ["cancel", "o-1"],
    ["consumers"],
    ["consumers", "delete", "workers"],
    ["dlq", "list"],
    ["dlq", "show", "o-1"],
    ["dlq", "replay", "--all"],
]


def orderflow(*args: str) -> subprocess.CompletedProcess[str]:
    return cli(None, *args)  # within cli's timeout: it used to retry forever


SILENT_COMMANDS = [["status", "o-1"], ["cancel", "o-1"]]


@dataclass(frozen=True)
class Ran:
    url: str
    result: subprocess.CompletedProcess[str]
    took_s: float


def run_against(command: list[str], url: str) -> Ran:
    started = time.monotonic()
    result = orderflow(*command, "--nats-url", url)
    return Ran(url, result, time.monotonic() - started)


@pytest.fixture(scope="module")
def failures() -> Iterator[dict[tuple[str, ...], Ran]]:
    """Every command below run once against a NATS that is not there (a free port: refused) and
    once against a port that accepts and never says a word (not NATS, or a hung one), all at the
    same time: each waits on its own reconnect delays and budget, in parallel, not one by one.
    Keyed by ("refused" | "silent", *command)."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        silent_url = f"nats://127.0.0.1:{silent.getsockname()[1]}"
        cases = [(("silent", *c), c, silent_url) for c in SILENT_COMMANDS]  # the longest, first
        cases += [(("refused", *c), c, f"nats://127.0.0.1:{free_port()}") for c in COMMANDS]
        with ThreadPoolExecutor(len(cases)) as pool:
            ran = {key: pool.submit(run_against, command, url) for key, command, url in cases}
            yield {key: future.result() for key, future in ran.items()}


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_command_against_an_unreachable_nats_exits_1_naming_it(
    command: list[str], failures: dict[tuple[str, ...], Ran]
) -> None:
    ran = failures[("refused", *command)]  # nothing listens at its url
    assert ran.result.returncode == 1, ran.result.stderr
    assert f"orderflow: cannot reach NATS at {ran.url}" in ran.result.stderr
    assert "Traceback" not in ran.result.stderr


@pytest.mark.parametrize("command", SILENT_COMMANDS, ids=" ".join)
def test_a_server_that_never_answers_fails_within_seconds(
    command: list[str], failures: dict[tuple[str, ...], Ran]
) -> None:
    ran = failures[("silent", *command)]
    assert ran.result.returncode == 1, ran.result.stderr
    assert f"cannot reach NATS at {ran.url}" in ran.result.stderr
    assert ran.took_s < 20  # connect attempts of 2 s, a budget of 8 s, and start-up


def test_a_closed_pipe_ends_it_quietly(nats_server: NatsServer) -> None:
    """`orderflow dlq list | head -c 1` with far more lines than a pipe holds: the reader is gone
    long before the last one. No BrokenPipeError report, no "cannot reach NATS" (as it said)."""
    run(_dead_letters(nats_server.url, 3000))
    result = subprocess.run(
        f"{sys.executable} -m orderflow_tools.cli dlq list --nats-url {nats_server.url} | head -c 1",
        shell=True,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout == " "
    assert "Traceback" not in result.stderr and "cannot reach" not in result.stderr, result.stderr
    assert "BrokenPipe" not in result.stderr, result.stderr


async def _dead_letters(url: str, n: int) -> None:
    from nats.js import api

    from orderflow import contract

    async with connect(url) as nc:
        js = nc.jetstream()
        await js.add_stream(api.StreamConfig(name=contract.DLQ_STREAM, subjects=list(contract.DLQ_SUBJECTS)))
        acks = [
            await js.publish_async(
                f"{contract.DLQ_PREFIX}default.o-{i}", b"{}", headers={contract.H_ERROR: "x"}
            )
            for i in range(n)
        ]
        await asyncio.gather(*acks)


def test_help_lists_every_command() -> None:
    result = orderflow("--help")
    assert result.returncode == 0
    for command in (
        "dev",
        "ingest",
        "worker",
        "status",
        "cancel",
        "consumers",
        "dlq",
        "keys",
        "load",
        "report",
        "chaos",
    ):
        assert command in result.stdout
