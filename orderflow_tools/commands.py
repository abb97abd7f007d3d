"""How an `orderflow` command registers on the CLI's subparsers."""

from __future__ import annotations

import argparse
from typing import Any


def command(subparsers: Any, name: str, summary: str, doc: str | None) -> argparse.ArgumentParser:
    """`orderflow NAME`: `summary` in the command list; its --help prints the module's docstring
    `doc` as written (its lists and examples keep their lines)."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name, help=summary, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    return parser
