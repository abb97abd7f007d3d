"""The `orderflow` command fails fast with a message when NATS is not there, never hangs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from harness import REPO, free_port


@pytest.mark.parametrize("command", [["status"], ["status", "o-1"], ["cancel", "o-1"]])
def test_a_command_against_an_unreachable_nats_exits_1_with_a_message(command: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERFLOW_")}
    url = f"nats://127.0.0.1:{free_port()}"  # nothing listens there
    result = subprocess.run(
        [sys.executable, "-m", "orderflow_tools.cli", *command, "--nats-url", url],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,  # it used to retry forever
    )
    assert result.returncode == 1, result.stderr
    assert "orderflow: cannot reach NATS" in result.stderr
    assert "Traceback" not in result.stderr


def test_help_lists_every_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "orderflow_tools.cli", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    for command in ("dev", "ingest", "worker", "status", "cancel", "load", "report", "chaos"):
        assert command in result.stdout
