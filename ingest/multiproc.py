"""Several ingest processes on one port (SO_REUSEPORT), each with its own NATS connection.

The parent only supervises: it forwards SIGTERM/SIGINT to every child (each runs the full
shutdown sequence of server.py) and exits with the first failed child's code (0 if none failed).
Children start with the stop signals held (lifecycle.stop_signals_held) until their handler is in place,
so a signal forwarded while one still imports stops it gracefully instead of killing it; they get
SIGTERM from the kernel if this parent dies, so none outlives it.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from prometheus_client.multiprocess import mark_process_dead

from orderflow.config import Settings
from orderflow.lifecycle import die_with_parent, release_stop_signals, stop_signals_held

log = logging.getLogger(__name__)


def run_processes(settings: Settings) -> int:
    # Shared metric files, so that a scrape of any process reports the whole pod (see metrics.py).
    metrics_dir = tempfile.mkdtemp(prefix="orderflow-metrics-")
    env = {
        **os.environ,
        "ORDERFLOW_INGEST_PROCESSES": "1",
        "ORDERFLOW_BIND_WHEN_READY": "true",
        "PROMETHEUS_MULTIPROC_DIR": metrics_dir,
    }
    try:
        return _supervise(settings, env, metrics_dir)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _supervise(settings: Settings, env: dict[str, str], metrics_dir: str) -> int:
    children: list[subprocess.Popen[bytes]] = []
    stopping = False

    def forward(sig: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(sig)

    # The handler first; a signal that comes while the children start waits for all of them.
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    release_stop_signals()
    setup = die_with_parent()
    with stop_signals_held():
        for i in range(settings.ingest_processes):
            child_env = {**env, "ORDERFLOW_WORKER_ID": f"{settings.worker_id}-{i}"}
            children.append(
                subprocess.Popen([sys.executable, "-m", "ingest"], env=child_env, preexec_fn=setup)
            )
    log.info("started %d ingest processes on port %d", len(children), settings.http_port)
    codes: list[int] = []
    while children:
        for child in list(children):
            code = child.poll()
            if code is None:
                continue
            children.remove(child)
            mark_process_dead(child.pid, metrics_dir)  # type: ignore[no-untyped-call]
            codes.append(code)
            if code != 0 and not stopping:
                log.error("ingest process %d exited with %d; stopping the others", child.pid, code)
                forward(signal.SIGTERM, None)
        time.sleep(0.2)
    # The first failure decides; a child killed by a signal exits as a shell reports it (128 + N).
    first = next((c for c in codes if c != 0), 0)
    return 128 - first if first < 0 else first
