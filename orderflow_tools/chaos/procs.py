"""The real processes a chaos rehearsal runs: nats-server, the ingest and worker "pods".

A worker pod is one `python -m worker` process with its own HTTP port. The pod outlives its process
when the kubelet restarts the container (after a SIGKILL), like a Kubernetes pod does; a scale-down
removes the pod: SIGTERM, the grace period, then SIGKILL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from orderflow_tools.kit import REPO, Process, python_module

_DRAIN_LINE = re.compile(
    r"drained in [0-9.]+s: (\d+) running at SIGTERM, (\d+) handed back at the deadline"
    r"(?:, (\d+) fetched but never started)?(?:, (\d+) handed back by their handlers)?"
)


def service_process(module: str, env: dict[str, str], log_path: Path) -> Process:
    """`python -m module` from the repo, in its own session (a terminal's Ctrl-C reaches only the driver)."""
    return Process(python_module(module), env, log_path, cwd=REPO, new_session=True, name=log_path.stem)


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
    running_at_sigterm: int | None = None  # from the drain log line; None: no drain line
    grace_killed: bool = False
    uid: str = ""  # the ReplicaSet's last tie-breaker
    cost: int = 0  # its controller.kubernetes.io/pod-deletion-cost annotation, as kept (chaos/kube.py)
    cost_patched_at: float = float("-inf")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        assert self.process.log_path is not None  # service_process always logs to a file
        return self.process.log_path

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


_DEADLINE_LINE = re.compile(
    r"draining: \d+ jobs running, deadline ([0-9.]+)s by the (budget|pod) \((.*)\)$", re.M
)


@dataclass(frozen=True)
class Drain:
    """A worker's drain line: what ran at SIGTERM, what it handed back (at the deadline, or its
    handlers before it), what it never started."""

    running: int
    handed_back: int
    unstarted: int
    by_handlers: int = 0


def drain_line(log_path: Path, since: int) -> Drain | None:
    """The last drain line in a worker log from byte `since`; None if it has none (killed first)."""
    with log_path.open("rb") as f:
        f.seek(since)
        text = f.read().decode(errors="replace")
    found = list(_DRAIN_LINE.finditer(text))
    if not found:
        return None
    m = found[-1]
    by_handlers = int(m.group(4) or 0)
    return Drain(int(m.group(1)), int(m.group(2)) + by_handlers, int(m.group(3) or 0), by_handlers)


def deadline_line(log_path: Path, since: int) -> dict[str, object] | None:
    """The deadline the last drain from byte `since` used, which ruled and why; None: no drain."""
    with log_path.open("rb") as f:
        f.seek(since)
        text = f.read().decode(errors="replace")
    found = list(_DEADLINE_LINE.finditer(text))
    if not found:
        return None
    m = found[-1]
    return {"drain_s": float(m.group(1)), "ruled_by": m.group(2), "why": m.group(3)}
