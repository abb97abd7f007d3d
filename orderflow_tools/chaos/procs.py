"""The real processes a chaos rehearsal runs: nats-server, the ingest and worker "pods".

A worker pod is one `python -m worker` process with its own HTTP port. The pod outlives its process
when the kubelet restarts the container (after a SIGKILL), like a Kubernetes pod does; a scale-down
removes the pod: SIGTERM, the grace period, then SIGKILL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from orderflow_tools.kit import REPO, Process, python_module
from worker import drainreport


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
    handed_back: int = 0  # from the drain report (the pod may exit before its last scrape)
    running_at_sigterm: int | None = None  # from the drain report; None: the drain never ended
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
    def drain_report(self) -> drainreport.DrainReport | None:
        return drainreport.read(report_path(self.log_path))

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


def report_path(log_path: Path) -> Path:
    """Where a pod's worker writes its drain report (ORDERFLOW_TERMINATION_LOG, as a kubelet's
    /dev/termination-log): one per pod, beside its log."""
    return log_path.with_suffix(".drain.json")


def worker_env(base: dict[str, str], pod_name: str, port: int, log_path: Path) -> dict[str, str]:
    return {
        **base,
        "ORDERFLOW_HTTP_PORT": str(port),
        "ORDERFLOW_WORKER_ID": pod_name,
        "ORDERFLOW_TERMINATION_LOG": str(report_path(log_path)),
    }


@dataclass(frozen=True)
class Drain:
    """A worker's drain: what ran at SIGTERM, what it handed back (at the deadline, or its
    handlers before it), what it never started."""

    running: int
    handed_back: int
    unstarted: int
    by_handlers: int = 0


def drain_of(report: drainreport.DrainReport | None) -> Drain | None:
    """The figures of a drain that ended; None when it did not (killed first) or never began."""
    if report is None or report.event != "drained":
        return None
    by_handlers = report.handed_back_by_handlers or 0
    at_deadline = report.handed_back_at_deadline or 0
    return Drain(report.running_at_sigterm, at_deadline + by_handlers, report.unstarted or 0, by_handlers)


def deadline_of(report: drainreport.DrainReport | None) -> dict[str, object] | None:
    """The deadline a drain used, which ruled and why; None: no drain began."""
    if report is None:
        return None
    return {"drain_s": report.deadline_s, "ruled_by": report.ruled_by, "why": report.why}
