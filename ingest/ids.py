"""Generated order ids."""

from __future__ import annotations

from nats.nuid import NUID

_DIGITS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _base62(n: int) -> str:
    out = ""
    while n:
        n, r = divmod(n, 62)
        out = _DIGITS[r] + out
    return out.rjust(6, "0")


class IdSource:
    """A random per-process prefix and a counter, base 62. Unique across processes and restarts
    (the prefix), ordered within one process, and a fraction of NUID's cost."""

    def __init__(self) -> None:
        self._prefix = NUID().next().decode()[:12]
        self._counter = 0

    def __call__(self) -> str:
        self._counter += 1
        return self._prefix + _base62(self._counter)
