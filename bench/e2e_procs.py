"""bench/e2e's processes: nats-server (temp store, free ports), the ingest (P processes on one port),
W workers; and the CPU seconds each has used, read from /proc/<pid>/stat (utime + stime)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import free_port, wait_http
from orderflow_tools.dev import nats_server_command

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
_TICK = os.sysconf("SC_CLK_TCK")


def tool(name: str) -> str:
    found = shutil.which(name, path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if not found:
        raise SystemExit(f"bench: {name} not found (nats-server and k6 come with `make install`)")
    return found


# --- CPU from /proc ------------------------------------------------------------------------------
def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            # the command name may hold spaces and parentheses: split after the last ')'
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def cpu_s(pid: int) -> float:
    """utime + stime of one live process, in seconds (0 once it is gone)."""
    fields = _stat(pid)
    return 0.0 if fields is None else (int(fields[11]) + int(fields[12])) / _TICK


def descendants(pid: int) -> list[int]:
    """pid and every live process below it (the multi-process ingest's children)."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields is not None:
                parent[int(entry)] = int(fields[1])
    out, frontier = [pid], [pid]
    while frontier:
        frontier = [c for c, p in parent.items() if p in frontier]
        out += frontier
    return out


# --- the stack -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class StackConfig:
    ingest_procs: int
    workers: int
    concurrency: int
    job: str  # noop | tiny


@dataclass
class Stack:
    """nats-server, `python -m ingest` (ORDERFLOW_INGEST_PROCESSES=P) and W `python -m worker`."""

    config: StackConfig
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="orderflow-e2e-")))
    nats_port: int = field(default_factory=free_port)
    monitor_port: int = field(default_factory=free_port)
    ingest_port: int = field(default_factory=free_port)
    worker_ports: list[int] = field(default_factory=list)
    nats: subprocess.Popen[bytes] | None = None
    ingest: subprocess.Popen[bytes] | None = None
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    ingest_pids: list[int] = field(default_factory=list)  # the processes that serve the port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.ingest_port}"

    @property
    def monitor_url(self) -> str:
        return f"http://127.0.0.1:{self.monitor_port}"

    def _env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERFLOW_")}
        env.update(
            ORDERFLOW_NATS_URL=f"nats://127.0.0.1:{self.nats_port}",
            ORDERFLOW_HTTP_HOST="127.0.0.1",
            ORDERFLOW_LOG_LEVEL="warning",
        )
        env.update(extra)
        return env

    def _spawn(self, cmd: list[str], env: dict[str, str] | None, log: str) -> subprocess.Popen[bytes]:
        out = open(self.workdir / log, "ab")  # the child keeps its own copy of the fd
        # Own session: a Ctrl-C in the terminal reaches only the bench, which then stops these.
        return subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )

    def start(self) -> None:
        c = self.config
        self.nats = self._spawn(
            nats_server_command(self.workdir / "js", self.nats_port, self.monitor_port, tool("nats-server")),
            None,
            "nats-server.log",
        )
        wait_http(f"{self.monitor_url}/healthz?js-enabled-only=true", self.nats, "nats-server", 15)
        self.ingest = self._spawn(
            [sys.executable, "-m", "ingest"],
            self._env(
                ORDERFLOW_HTTP_PORT=str(self.ingest_port),
                ORDERFLOW_INGEST_PROCESSES=str(c.ingest_procs),
                ORDERFLOW_SHUTDOWN_DELAY_S="0",
                ORDERFLOW_WORKER_ID="e2e-ingest",
            ),
            "ingest.log",
        )
        job = (
            {"ORDERFLOW_HANDLERS": "worker.noop"}
            if c.job == "noop"
            else {"ORDERFLOW_HANDLERS": "worker.demo", "ORDERFLOW_WORK_S": "0.001"}
        )
        for i in range(c.workers):
            port = free_port()
            self.worker_ports.append(port)
            env = self._env(
                ORDERFLOW_HTTP_PORT=str(port),
                ORDERFLOW_WORKER_ID=f"e2e-worker-{i + 1}",
                ORDERFLOW_CONCURRENCY=str(c.concurrency),
                ORDERFLOW_DRAIN_TIMEOUT_S="10",
                **job,
            )
            self.workers.append(self._spawn([sys.executable, "-m", "worker"], env, f"worker-{i + 1}.log"))
        deadline = time.monotonic() + 30
        while True:  # the serving ingest processes: the parent alone, or its P children
            kids = [p for p in descendants(self.ingest.pid) if p != self.ingest.pid]
            if c.ingest_procs == 1 or len(kids) >= c.ingest_procs:
                self.ingest_pids = [self.ingest.pid] if c.ingest_procs == 1 else kids
                break
            if time.monotonic() > deadline or self.ingest.poll() is not None:
                raise SystemExit(
                    f"bench: the ingest did not start its processes; see {self.workdir}/ingest.log"
                )
            time.sleep(0.1)
        for port, proc in zip(self.worker_ports, self.workers, strict=True):
            wait_http(f"http://127.0.0.1:{port}/readyz", proc, "a worker", 30)

    def pids(self) -> dict[str, list[int]]:
        """Processes per component, for CPU accounting (the ingest with all its children)."""
        assert self.nats is not None and self.ingest is not None
        return {
            "nats": [self.nats.pid],
            "ingest": descendants(self.ingest.pid),
            "workers": [w.pid for w in self.workers],
        }

    def stop(self, keep_logs: bool = False) -> None:
        """Workers first (they drain), then the ingest, then NATS; kill what overstays."""
        groups = [self.workers, [self.ingest] if self.ingest else [], [self.nats] if self.nats else []]
        for group in groups:
            for p in group:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            for p in group:
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        for pid in self.ingest_pids:  # children orphaned by a killed parent
            if pid != (self.ingest.pid if self.ingest else -1) and _stat(pid) is not None:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if keep_logs:
            print(f"bench: logs kept in {self.workdir}", file=sys.stderr)
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)
