"""`python -m orderflow_tools.chaos ...`: the same as `orderflow chaos ...`."""

from __future__ import annotations

import argparse
import sys

from orderflow_tools.chaos import add_parser


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="orderflow")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["chaos", *(sys.argv[1:] if argv is None else argv)])
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
