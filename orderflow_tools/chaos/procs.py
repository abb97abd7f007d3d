"""The real processes a chaos rehearsal runs: nats-server, the ingest and worker "pods".

A worker pod is one `python -m worker` process with its own HTTP port. The pod outlives its process
when the kubelet restarts the container (after a SIGKILL), like a Kubernetes pod does; a scale-down
removes the pod: SIGTERM, the grace period, then SIGKILL.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from orderflow_tools.dev import nats_server_command

REPO = Path(__file__).resolve().parent.parent.parent
_DRAIN_LINE = re.compile(r"drained in [0-9.]+s: (\d+) running at SIGTERM, (\d+) handed back at the deadline")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout_s: float) -> tuple[int, bytes] | None:
    """(status, body), or None when nothing answered in time."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except (OSError, ValueError):
        return None


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> {metric name: sum over every label set}."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        name_part, _, value = line.rpartition(" ")
        name = name_part.split("{", 1)[0]
        try:
            out[name] = out.get(name, 0.0) + float(value)
        except ValueError:
            continue
    return out


class Process:
    """A child process in its own session (a terminal's Ctrl-C reaches only the driver)."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                start_new_session=True,
            )

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def send(self, sig: int) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(sig)

    def wait(self, timeout_s: float) -> int | None:
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None


class NatsServer:
    """nats-server -js with its own store; a restart keeps the port and the store."""

    def __init__(self, store: Path, log_path: Path) -> None:
        self.port = free_port()
        self.monitor_port = free_port()
        self.process = Process(
            nats_server_command(store, self.port, self.monitor_port),
            {},
            log_path,
        )

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 20.0) -> None:
        self.process.start()
        health = f"http://127.0.0.1:{self.monitor_port}/healthz?js-enabled-only=true"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.process.alive():
                raise RuntimeError(f"nats-server exited; see {self.process.log_path}")
            answer = http_get(health, 1.0)
            if answer is not None and answer[0] == 200:
                return
            time.sleep(0.1)
        raise RuntimeError(f"nats-server not healthy after {timeout_s:g}s; see {self.process.log_path}")

    def stop(self) -> None:
        self.process.send(signal.SIGTERM)
        if self.process.wait(15) is None:
            self.process.send(signal.SIGKILL)
            self.process.wait(5)

    def restart(self) -> None:
        """SIGTERM, wait for the exit, start again on the same port and store."""
        self.stop()
        self.start()


@dataclass
class Pod:
    """A worker pod. `process` is its current container; `past` keeps the last counters each
    earlier container reported (a restart or the pod's end resets a process's counters)."""

    name: str
    port: int
    created_at: float
    process: Process
    phase: str = "running"  # running | restarting (container killed) | terminating | gone
    ready: bool = False  # /readyz answered 200 at the last probe
    ready_since: float | None = None
    restarts: int = 0
    restart_at: float = 0.0
    terminating_since: float = 0.0
    kill_at: float = 0.0  # end of the grace period
    metrics: dict[str, float] = field(default_factory=dict)
    metrics_at: float = 0.0
    past: list[dict[str, float]] = field(default_factory=list)
    exit_codes: list[int | None] = field(default_factory=list)
    log_offset: int = 0  # where the log stood at SIGTERM (the drain line comes after it)
    handed_back: int = 0  # from the drain log line (the pod may exit before its last scrape)
    grace_killed: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def in_flight(self) -> float:
        return self.metrics.get("orderflow_tasks_in_flight", 0.0)

    def counter(self, name: str) -> float:
        """A counter summed over this pod's containers, the current one as last scraped."""
        return sum(m.get(name, 0.0) for m in self.past) + self.metrics.get(name, 0.0)

    def container_ended(self) -> None:
        self.exit_codes.append(self.process.returncode())
        self.past.append(self.metrics)
        self.metrics = {}
        self.ready = False
        self.ready_since = None


def worker_env(base: dict[str, str], pod_name: str, port: int) -> dict[str, str]:
    return {**base, "ORDERFLOW_HTTP_PORT": str(port), "ORDERFLOW_WORKER_ID": pod_name}


def python_module(module: str) -> list[str]:
    return [sys.executable, "-m", module]


def drain_handed_back(log_path: Path, since: int) -> tuple[int, int]:
    """Sum of 'N handed back at the deadline' in a worker log from byte `since`; and the new end."""
    with log_path.open("rb") as f:
        f.seek(since)
        text = f.read().decode(errors="replace")
        end = f.tell()
    return sum(int(m.group(2)) for m in _DRAIN_LINE.finditer(text)), end
