"""bench/e2e's processes: nats-server (temp store, free ports), the ingest (P processes on one port),
W workers; and which pids each component is, for the CPU accounting (orderflow_tools.kit.cpu)."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from orderflow_tools.kit import (
    REPO,
    NatsServer,
    Process,
    StartError,
    descendants,
    find_tool,
    free_port,
    pid_alive,
    python_module,
    stop_all,
)


def tool(name: str) -> str:
    found = find_tool(name)
    if not found:
        raise SystemExit(f"bench: {name} not found (nats-server and k6 come with `make install`)")
    return found


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
    ingest_port: int = field(default_factory=free_port)
    worker_ports: list[int] = field(default_factory=list)
    nats: NatsServer | None = None
    ingest: Process | None = None
    workers: list[Process] = field(default_factory=list)
    ingest_pids: list[int] = field(default_factory=list)  # the processes that serve the port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.ingest_port}"

    @property
    def monitor_url(self) -> str:
        assert self.nats is not None
        return self.nats.monitor_url

    def _env(self, **extra: str) -> dict[str, str]:
        assert self.nats is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERFLOW_")}
        env.update(
            ORDERFLOW_NATS_URL=self.nats.url, ORDERFLOW_HTTP_HOST="127.0.0.1", ORDERFLOW_LOG_LEVEL="warning"
        )
        env.update(extra)
        return env

    def _service(self, module: str, env: dict[str, str], log: str) -> Process:
        # Own session: a Ctrl-C in the terminal reaches only the bench, which then stops these.
        return Process(
            python_module(module), env, self.workdir / log, cwd=REPO, new_session=True, name=log
        ).start()

    def start(self) -> None:
        try:
            self._start()
        except StartError as exc:
            raise SystemExit(f"bench: {exc}") from None

    def _start(self) -> None:
        c = self.config
        self.nats = NatsServer(
            self.workdir / "js",
            self.workdir / "nats-server.log",
            binary=tool("nats-server"),
            new_session=True,
        ).start(timeout_s=15)
        self.ingest = self._service(
            "ingest",
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
            self.workers.append(self._service("worker", env, f"worker-{i + 1}.log"))
        ingest_pid = self.ingest.pid
        assert ingest_pid is not None
        deadline = time.monotonic() + 30
        while True:  # the serving ingest processes: the parent alone, or its P children
            kids = [p for p in descendants(ingest_pid) if p != ingest_pid]
            if c.ingest_procs == 1 or len(kids) >= c.ingest_procs:
                self.ingest_pids = [ingest_pid] if c.ingest_procs == 1 else kids
                break
            if time.monotonic() > deadline or not self.ingest.alive():
                raise SystemExit(
                    f"bench: the ingest did not start its processes; see {self.workdir}/ingest.log"
                )
            time.sleep(0.1)
        for port, proc in zip(self.worker_ports, self.workers, strict=True):
            proc.wait_http(f"http://127.0.0.1:{port}/readyz", 30)

    def pids(self) -> dict[str, list[int]]:
        """Processes per component, for CPU accounting (the ingest with all its children)."""
        assert self.nats is not None and self.nats.process.pid is not None
        assert self.ingest is not None and self.ingest.pid is not None
        return {
            "nats": [self.nats.process.pid],
            "ingest": descendants(self.ingest.pid),
            "workers": [w.pid for w in self.workers if w.pid is not None],
        }

    def stop(self, keep_logs: bool = False) -> None:
        """Workers first (they drain), then the ingest, then NATS; kill what overstays."""
        stop_all(self.workers, 20)
        if self.ingest is not None:
            self.ingest.stop(20)
        if self.nats is not None:
            self.nats.stop(20)
        for pid in self.ingest_pids:  # children orphaned by a killed parent
            if pid != (self.ingest.pid if self.ingest else -1) and pid_alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if keep_logs:
            print(f"bench: logs kept in {self.workdir}", file=sys.stderr)
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)
