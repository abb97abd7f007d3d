"""`orderflow keys new NAME --scope S ... [--file PATH]`: mint an API key for the ingest
(orderflow/auth.py), so that no operator hashes one by hand.

The key goes to stdout alone (`KEY=$(orderflow keys new shop --scope orders:write --file keys.json)`),
once: only its SHA-256 is kept. With `--file` its entry is added to that key file (created 0600,
replaced atomically, so an ingest watching it never reads half a file); without, the entry is
printed on stderr to add by hand."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from orderflow import auth


def add_parser(sub: Any) -> None:
    keys = sub.add_parser("keys", help="API keys for the ingest")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    new = keys_sub.add_parser("new", help="mint a key: the key on stdout (once), its entry in the file")
    new.add_argument("name", help="who the key is for (shown in order records and logs)")
    new.add_argument(
        "--scope",
        action="append",
        choices=auth.SCOPES,
        required=True,
        help="repeat for several: orders:write (POST), orders:read (its own orders), admin (everything)",
    )
    new.add_argument("--file", help="the key file to add the entry to (created if missing)")
    new.set_defaults(func=_new)


def _new(args: argparse.Namespace) -> int:
    key = auth.new_key()
    entry = auth.entry(args.name, args.scope, key)
    try:
        auth.parse_keys(json.dumps({"keys": [entry]}).encode(), "the new entry")
    except auth.KeyFileError as exc:
        print(f"orderflow keys: {exc}", file=sys.stderr)
        return 2
    if args.file:
        problem = _add(Path(args.file), entry)
        if problem:
            print(f"orderflow keys: {problem}", file=sys.stderr)
            return 2
        print(f"key {args.name!r} added to {args.file}; the key, shown only now:", file=sys.stderr)
    else:
        print(f"add this entry to the key file: {json.dumps(entry)}", file=sys.stderr)
        print("the key, shown only now:", file=sys.stderr)
    print(key)
    return 0


def _add(path: Path, entry: dict[str, object]) -> str | None:
    data: dict[str, Any] = {"keys": []}
    if path.exists():
        try:
            auth.read_keys(str(path))
        except auth.KeyFileError as exc:
            return f"not adding to a file that does not load: {exc}"
        data = json.loads(path.read_bytes())
        if any(e.get("name") == entry["name"] for e in data["keys"]):
            return f"{path}: a key named {entry['name']!r} is already there (names are unique)"
    data["keys"].append(entry)
    fd, tmp = tempfile.mkstemp(dir=path.parent or ".", prefix=".keys-")
    try:
        with os.fdopen(fd, "w") as f:  # mkstemp creates it 0600
            json.dump(data, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return None
