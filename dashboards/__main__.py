"""`python -m dashboards [--out DIR]`: regenerate the committed dashboard JSON."""

from __future__ import annotations

import argparse
from pathlib import Path

from dashboards.render import DEFAULT_OUT, write_all


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m dashboards", description=__doc__)
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})"
    )
    args = parser.parse_args()
    for path in write_all(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
