"""A background poller for real-process tests that watch a service while something happens to it."""

from __future__ import annotations

import threading
from typing import Self


class Poller:
    """Calls `poll()` every `interval_s` in a daemon thread from the start of a `with` block to
    its end (then waits up to 10 s for the last call)."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def poll(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll()
            self._stop.wait(self.interval_s)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
