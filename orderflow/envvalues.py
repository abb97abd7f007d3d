"""How one setting's text becomes its value: numbers with bounds, choices, comma lists, NATS
URLs, booleans, the demo's work range, task types, and a Standard Webhooks secret read from its
file. Each raises ValueError with what is wrong; orderflow/envsettings.py names the variable."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from typing import TypeVar

from orderflow.config import TaskType, WorkRange

_TYPE_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")

T = TypeVar("T")


def number(kind: Callable[[str], T], lo: float | None = None, hi: float | None = None) -> Callable[[str], T]:
    def parse(raw: str) -> T:
        try:
            value = kind(raw.strip())
        except ValueError:
            raise ValueError(f"not a{'n integer' if kind is int else ' number'}") from None
        if lo is not None and value < lo:  # type: ignore[operator]
            raise ValueError(f"must be >= {lo:g}")
        if hi is not None and value > hi:  # type: ignore[operator]
            raise ValueError(f"must be <= {hi:g}")
        return value

    return parse


def choice(*options: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return value

    return parse


def nats_urls(raw: str) -> tuple[str, ...]:
    urls = tuple(u.strip() for u in raw.split(",") if u.strip())
    if not urls:
        raise ValueError("needs at least one nats:// URL")
    for u in urls:
        if not re.match(r"^(nats|tls|ws|wss)://[^\s/]+$", u):
            raise ValueError(f"{u!r} is not a NATS URL like nats://host:4222")
    return urls


def parse_work(raw: str) -> WorkRange:
    m = re.match(r"^\s*([0-9.]+)\s*(?:-\s*([0-9.]+))?\s*$", raw)
    try:
        lo = float(m.group(1)) if m else -1.0
        hi = float(m.group(2)) if m and m.group(2) else lo
    except ValueError:
        lo = hi = -1.0
    if lo < 0 or hi < lo:
        raise ValueError("must be seconds like 0.5 or a range min-max like 1-30")
    return WorkRange(lo, hi)


def boolean(raw: str) -> bool:
    value = raw.strip().lower()
    if value not in ("1", "0", "true", "false", "yes", "no"):
        raise ValueError("must be true or false")
    return value in ("1", "true", "yes")


def comma_list(raw: str) -> tuple[str, ...]:
    items = tuple(x.strip() for x in raw.split(",") if x.strip())
    if not items:
        raise ValueError("must not be empty")
    return items


def task_types(raw: str, concurrency: int, timeout_s: float) -> tuple[TaskType, ...]:
    """`name[:concurrency[:timeout_s]]`, comma-separated, e.g. `default,report:2:7200`."""
    out: list[TaskType] = []
    for item in comma_list(raw):
        parts = item.split(":")
        if len(parts) > 3 or not _TYPE_RE.match(parts[0]):
            raise ValueError(f"{item!r}: expected name[:concurrency[:timeout_s]] with a lowercase name")
        conc = number(int, 1, 10_000)(parts[1]) if len(parts) > 1 else concurrency
        tmo = number(float, 0.01)(parts[2]) if len(parts) > 2 else timeout_s
        if any(t.name == parts[0] for t in out):
            raise ValueError(f"task type {parts[0]!r} given twice")
        out.append(TaskType(parts[0], conc, tmo))
    return tuple(out)


def read_webhook_secret(path: str) -> str:
    """A Standard Webhooks secret file's `whsec_...`; ValueError naming the problem, never the
    content (the worker reads a key's own secret file with it too)."""
    try:
        with open(path, encoding="ascii") as f:
            secret = f.read(4096).strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot be read ({type(exc).__name__})") from None
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except ValueError:
        key = b""
    if not secret.startswith("whsec_") or not 24 <= len(key) <= 64:
        raise ValueError("must hold whsec_ followed by the base64 of 24 to 64 random bytes")
    return secret
