"""Where the services a bench starts come from: this checkout (`now`), or another commit's tree with
a venv of its own (`--baseline-tree PATH`, and any number of `--tree LABEL=PATH` for the steps in
between; scripts/bench/baseline-tree.sh makes one), so that an A/B runs in one bench run on one
machine without committing old code. nats-server, k6 and the bench itself always come from this
checkout; only `python -m ingest` and `python -m worker` (and the tree's own stream layout) come
from the tree.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from orderflow_tools.kit import REPO

SETUP = "bash scripts/bench/baseline-tree.sh d4b8240 /tmp/orderflow-base"
REF_FILE = ".orderflow-baseline-ref"  # written by scripts/bench/baseline-tree.sh

# The tree's own `ensure_layout` (streams and KV buckets as that commit creates them), run by the
# tree's interpreter: from orderflow/streams.py now, orderflow/broker.py in d4b8240 (whose settings
# were read by orderflow/config.py).
_LAYOUT = """
import asyncio, sys
import nats
try:
    from orderflow.envsettings import load_settings
    from orderflow.streams import ensure_layout
except ImportError:  # a tree from before the broker and config splits (d4b8240)
    from orderflow.broker import ensure_layout
    from orderflow.config import load_settings

async def main(url):
    nc = await nats.connect(url)
    await ensure_layout(nc.jetstream(timeout=10), load_settings("cli", {"ORDERFLOW_NATS_URL": url}))
    await nc.close()

asyncio.run(main(sys.argv[1]))
"""


@dataclass(frozen=True)
class Tree:
    label: str  # "now" (this checkout) or "baseline"
    root: Path
    python: str
    commit: str

    def module(self, name: str) -> list[str]:
        """argv of `python -m name` with the tree's interpreter (run it with cwd=root)."""
        return [self.python, "-m", name]

    def ensure_layout(self, nats_url: str) -> None:
        """The streams and KV buckets as this tree's code creates them."""
        done = subprocess.run(
            [self.python, "-c", _LAYOUT, nats_url], cwd=self.root, capture_output=True, text=True, timeout=60
        )
        if done.returncode != 0:
            raise SystemExit(f"bench: the {self.label} tree's layout failed:\n{done.stderr[-2000:]}")


def _commit(root: Path) -> str:
    ref = root / REF_FILE
    if ref.is_file():
        return ref.read_text().strip()[:12]
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def this_tree() -> Tree:
    return Tree("now", REPO, sys.executable, _commit(REPO))


RESERVED = ("now", "raw", "faststream")


def baseline_tree(path: Path, label: str = "baseline") -> Tree:
    """The tree at `path` with its own `.venv`; fails at once, saying how to make one."""
    root = path.resolve()
    python = root / ".venv" / "bin" / "python"
    missing = [
        p for p in (root / "ingest" / "__main__.py", root / "worker" / "__main__.py") if not p.is_file()
    ]
    if missing or not python.is_file():
        what = ", ".join(str(p) for p in missing) if missing else f"{python}"
        raise SystemExit(f"bench: tree {label} at {path}: {what} not found; make one with\n  {SETUP}")
    if root == REPO:
        raise SystemExit(f"bench: tree {label} is this checkout; give the tree of another commit")
    return Tree(label, root, str(python), _commit(root))


def add_tree_args(ap: argparse.ArgumentParser, what: str) -> None:
    ap.add_argument(
        "--baseline-tree",
        type=Path,
        default=None,
        metavar="PATH",
        help=f"also run the {what} of the tree at PATH with its own .venv, labelled baseline "
        f"(make one: {SETUP})",
    )
    ap.add_argument(
        "--tree",
        action="append",
        default=[],
        metavar="LABEL=PATH",
        help=f"also run the {what} of another tree, labelled LABEL (repeatable: the steps between "
        "the baseline and now, for the before/after table)",
    )


def other_trees(args: argparse.Namespace) -> dict[str, Tree]:
    """--baseline-tree and every --tree, in the order given (the baseline first)."""
    out: dict[str, Tree] = {}
    if args.baseline_tree is not None:
        out["baseline"] = baseline_tree(args.baseline_tree)
    for item in args.tree:
        label, sep, path = item.partition("=")
        if not sep or not re.fullmatch(r"[a-z][a-z0-9_-]*", label) or not path:
            raise SystemExit(f"bench: --tree {item!r}: expected LABEL=PATH with a lowercase label")
        if label in out or label in RESERVED:
            raise SystemExit(f"bench: --tree {item!r}: the label {label} is taken")
        out[label] = baseline_tree(Path(path), label)
    return out
