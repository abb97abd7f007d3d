"""bench/e2e's readings: the stream and consumer state from nats-server's monitoring port (/jsz),
the workers' and the ingest's /metrics.

With ORDERFLOW_INGEST_PROCESSES=P a GET on the shared port reaches one of the P processes at random
(SO_REUSEPORT). Since 39df6be they share prometheus_client's multiprocess files
(PROMETHEUS_MULTIPROC_DIR in their environment), so any one answer is the whole pod. Before that,
each process counted only its own requests: then each reading is attributed to the process that
answered it (the server side of our connection in /proc/net/tcp, its socket inode among the
processes' file descriptors), repeated until every process has answered once, and summed.
"""

from __future__ import annotations

import http.client
import json
import os
import urllib.request
from dataclasses import dataclass

from orderflow import contract
from orderflow_tools.kit import parse_metrics, total


def get(url: str, timeout_s: float = 2.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout_s) as r:
        body: bytes = r.read()
        return body


# --- per ingest process -----------------------------------------------------------------------
def _server_inode(server_port: int, client_port: int) -> str | None:
    local, remote = f":{server_port:04X}", f":{client_port:04X}"
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    p = line.split()
                    if p[1].endswith(local) and p[2].endswith(remote):
                        return p[9]
        except OSError:
            continue
    return None


def _owner(inode: str, pids: list[int]) -> int | None:
    target = f"socket:[{inode}]"
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    return pid
            except OSError:
                continue
    return None


def per_process(
    port: int, pids: list[int], path: str, tries_per_pid: int = 40
) -> dict[int, tuple[int, bytes]]:
    """GET `path` from each process serving `port`: {pid: (status, body)}; may miss a process."""
    got: dict[int, tuple[int, bytes]] = {}
    for _ in range(tries_per_pid * len(pids)):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read()
            # Still connected (keep-alive): the answering process holds the server side. The
            # ingest's own /metrics port closes each connection: then only a lone process is known.
            inode = _server_inode(port, conn.sock.getsockname()[1]) if conn.sock is not None else None
            pid = _owner(inode, pids) if inode else None
            if len(pids) == 1 and pid is None:
                pid = pids[0]
            if pid is not None and pid not in got:
                got[pid] = (resp.status, body)
        except OSError:
            pass
        finally:
            conn.close()
        if len(got) == len(pids):
            break
    return got


@dataclass(frozen=True)
class IngestCounts:
    stored: float  # orderflow_orders_published_total{result="stored"}
    duplicate: float
    not_stored: float  # unavailable + timeout + rejected + overloaded
    http_200: float  # orderflow_http_requests_total{route="/orders",method="POST",status="200"}
    http_other: float
    processes_read: int  # how many processes the figures cover


def pod_wide_metrics(pids: list[int]) -> bool:
    """Whether the ingest processes share their metrics (each scrape reports all of them)."""
    for pid in pids:
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if b"\0PROMETHEUS_MULTIPROC_DIR=" in b"\0" + f.read():
                    return True
        except OSError:
            continue
    return False


def ingest_counts(port: int, pids: list[int]) -> IngestCounts:
    if pod_wide_metrics(pids):
        body = get(f"http://127.0.0.1:{port}/metrics")
        parsed = [parse_metrics(body.decode())]
        read = len(pids)
    else:
        answers = per_process(port, pids, "/metrics")
        parsed = [parse_metrics(body.decode()) for status, body in answers.values() if status == 200]
        read = len(parsed)
    published = "orderflow_orders_published_total"
    requests = "orderflow_http_requests_total"

    def s(name: str, **labels: str) -> float:
        return sum(total(p, name, **labels) for p in parsed)

    posts = s(requests, route="/orders", method="POST")
    ok = s(requests, route="/orders", method="POST", status="200")
    stored, dup = s(published, result="stored"), s(published, result="duplicate")
    return IngestCounts(stored, dup, s(published) - stored - dup, ok, posts - ok, read)


def all_ready(port: int, pids: list[int]) -> bool:
    answers = per_process(port, pids, "/readyz", tries_per_pid=10)
    return len(answers) == len(pids) and all(status == 200 for status, _ in answers.values())


# --- workers -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WorkerCounts:
    done: float  # orderflow_work_done_total{status="done"} (includes already-done dedupes)
    error: float
    deduplicated: float
    redeliveries: float
    answered: int


def worker_counts(ports: list[int]) -> WorkerCounts:
    done = error = dedup = redeliv = 0.0
    answered = 0
    for port in ports:
        try:
            m = parse_metrics(get(f"http://127.0.0.1:{port}/metrics").decode())
        except OSError:
            continue
        answered += 1
        done += total(m, "orderflow_work_done_total", status="done")
        error += total(m, "orderflow_work_done_total", status="error")
        dedup += total(m, "orderflow_deduplicated_total")
        redeliv += total(m, "orderflow_redeliveries_total")
    return WorkerCounts(done, error, dedup, redeliv, answered)


# --- NATS ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StreamState:
    last_seq: int  # orders ever stored in ORDERS (a fresh stream: its sequence counts them)
    messages: int  # still in the stream (work-queue retention: acked ones are gone)
    pending: int  # consumer num_pending, summed over the stream's consumers
    ack_pending: int  # delivered, not yet acked

    @property
    def backlog(self) -> int:
        return self.pending + self.ack_pending


# Streams written on a timer, not per order: each worker's liveness record (ORDER_WORKERS, every
# 2 s). Shown, but not counted in "writes per order" (the goal is about the order's own path).
BACKGROUND_STREAMS = frozenset({"KV_ORDER_WORKERS"})


def stream_seqs(monitor_url: str) -> dict[str, int]:
    """Every stream's last sequence: how many messages each has stored (ORDERS, the KV, run records)."""
    data = json.loads(get(f"{monitor_url}/jsz?streams=true"))
    return {
        s["name"]: int(s["state"].get("last_seq", 0))
        for account in data.get("account_details") or []
        for s in account.get("stream_detail") or []
    }


def stream_state(monitor_url: str) -> StreamState:
    data = json.loads(get(f"{monitor_url}/jsz?streams=true&consumers=true"))
    for account in data.get("account_details") or []:
        for stream in account.get("stream_detail") or []:
            if stream["name"] == contract.STREAM:
                consumers = stream.get("consumer_detail") or []
                return StreamState(
                    int(stream["state"].get("last_seq", 0)),
                    int(stream["state"].get("messages", 0)),
                    sum(int(c.get("num_pending", 0)) for c in consumers),
                    sum(int(c.get("num_ack_pending", 0)) for c in consumers),
                )
    return StreamState(0, 0, 0, 0)


def consumer_waiting(monitor_url: str) -> int:
    """Pull requests waiting on the ORDERS consumers (a bound raw consumer keeps one open)."""
    data = json.loads(get(f"{monitor_url}/jsz?streams=true&consumers=true"))
    return sum(
        int(c.get("num_waiting", 0))
        for account in data.get("account_details") or []
        for stream in account.get("stream_detail") or []
        if stream["name"] == contract.STREAM
        for c in stream.get("consumer_detail") or []
    )
