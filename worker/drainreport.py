"""The drain's figures as one JSON object in the container's termination message file, for whoever
ends the pod: Kubernetes shows it in the pod's status (`lastState.terminated.message`), and the
chaos rehearsal reads its pods' drains from it (orderflow_tools/chaos/procs.py), not from the wording
of a log line.

Written twice: `draining` when the drain starts (its deadline, the jobs running at SIGTERM), then
`drained` when it ends (what it handed back, what it never started). A worker SIGKILLed at the end
of its grace leaves the `draining` record: the file always says how far the drain got, which
metrics cannot (the last scrape comes before the end of the drain, and a killed process answers no
more scrapes). The file is rewritten in place, with one write: Kubernetes mounts it as a file, so
it cannot be replaced by a rename.

ORDERFLOW_TERMINATION_LOG: `auto` (the default: /dev/termination-log inside a cluster, no report
outside), `off`, or a path.
"""

from __future__ import annotations

import logging
from pathlib import Path

import msgspec

from orderflow.config import Settings

log = logging.getLogger(__name__)

KUBERNETES_PATH = Path("/dev/termination-log")  # the kubelet's terminationMessagePath default


class DrainReport(msgspec.Struct, frozen=True, kw_only=True):
    event: str  # "draining" at the start, "drained" at the end
    worker_id: str
    running_at_sigterm: int
    deadline_s: float  # how long the drain had
    ruled_by: str  # which deadline ruled: "budget" or "pod" (worker/deadline.py)
    why: str
    # `drained` only:
    drained_in_s: float | None = None
    handed_back_at_deadline: int | None = None  # stopped at the hand-back deadline
    unstarted: int | None = None  # fetched after the drain began, given back unstarted
    handed_back_by_handlers: int | None = None  # job.handback() then return


def path_of(settings: Settings) -> Path | None:
    mode = settings.termination_log
    if mode == "off":
        return None
    if mode == "auto":
        return KUBERNETES_PATH if settings.kubernetes_service_host else None
    return Path(mode)


def write(path: Path | None, report: DrainReport) -> None:
    if path is None:
        return
    try:
        with path.open("wb") as f:
            f.write(msgspec.json.encode(report))
    except OSError as exc:  # a report is never worth failing a drain over
        log.warning("drain report not written to %s: %r", path, exc)


def read(path: Path) -> DrainReport | None:
    """The last report in `path`; None when there is none (no drain began, or the file is torn)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        return msgspec.json.decode(raw, type=DrainReport)
    except msgspec.DecodeError:
        return None
