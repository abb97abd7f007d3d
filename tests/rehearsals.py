"""A small chaos rehearsal's settings, read by `orderflow chaos`'s own parser: the tests that run
or plan one write the options a person would type, and get what the CLI would run."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any

from harness import find_binary

from orderflow_tools import chaos
from orderflow_tools.chaos import rehearsal
from orderflow_tools.chaos.plan import Settings
from orderflow_tools.loadrun import find_k6

# Kubernetes at a small rehearsal's pace: the HPA syncs every second and removes one pod every 2 s
# after a 5 s window; a stopping ingest waits 1 s before it closes its listener.
FAST_PLATFORM = "--hpa-sync 1 --scale-down-window 5 --scale-down-period 2 --ingest-shutdown-delay-s 1"

# The ledger's figures, which every rehearsal test prints before its asserts.
LEDGER_FIGURES = ("accepted", "done_once", "lost", "done_twice", "in_flight")


def parse(*argv: str) -> argparse.Namespace:
    """`orderflow chaos ARGV` as the CLI parses it."""
    parser = argparse.ArgumentParser()
    chaos.add_parser(parser.add_subparsers())
    return parser.parse_args(["chaos", *argv])


def small_rehearsal(out: Path, options: str) -> Settings:
    """The settings of `orderflow chaos --out OUT OPTIONS` on FAST_PLATFORM: the options of
    `--profile` (default) where OPTIONS leaves one out."""
    settings: Settings = chaos.settings_from_args(
        parse("--out", str(out), *shlex.split(options), *FAST_PLATFORM.split())
    )
    return settings


def run_small_rehearsal(out: Path, options: str) -> dict[str, Any]:
    """Run that rehearsal with real processes and return its summary; it needs nats-server and k6
    (a missing one fails in CI and skips elsewhere)."""
    find_binary("nats-server")
    if find_k6() is None:
        find_binary("k6")
    return rehearsal.run(small_rehearsal(out, options))
