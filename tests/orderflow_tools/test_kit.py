"""The process kit that dev, chaos, bench and tests share: ports, child processes (ready, exited,
stopped), nats-server restarts, a 3-node cluster's failover, Prometheus text, /proc CPU. Real
processes, all of them short but the cluster's (an election takes 4-9 s: marked slow)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import pytest
from harness import NatsServer, connect, find_binary, wait_until

from orderflow_tools.kit import (
    NatsCluster,
    Process,
    StartError,
    by_name,
    cpu_s,
    descendants,
    free_port,
    http_get,
    parse_metrics,
    pid_alive,
    port_free,
    select,
    stop_all,
    total,
    tree_cpu_s,
)


def python(code: str, log: Path, new_session: bool = False) -> Process:
    return Process([sys.executable, "-c", code], None, log, name="child", new_session=new_session)


def test_a_free_port_can_be_bound_and_a_bound_one_is_not_free() -> None:
    port = free_port()
    assert port_free(port)
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        assert not port_free(port)


def test_an_answer_that_breaks_off_is_no_answer() -> None:
    """A process killed while it answers /metrics: the head promises 100 bytes, 5 come, then the
    connection closes (http.client's IncompleteRead): None, as for no answer at all."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]

        def answer_short() -> None:
            conn, _ = server.accept()
            with conn:
                conn.recv(4096)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhello")

        thread = threading.Thread(target=answer_short)
        thread.start()
        assert http_get(f"http://127.0.0.1:{port}/metrics", 5.0) is None
        thread.join(5)


@pytest.mark.procs
def test_waiting_for_a_child_that_exits_fails_at_once_with_its_log(tmp_path: Path) -> None:
    child = python("print('no config here', flush=True); raise SystemExit(3)", tmp_path / "c.log").start()
    started = time.monotonic()
    with pytest.raises(StartError) as err:
        child.wait_http(f"http://127.0.0.1:{free_port()}/readyz", timeout_s=60)
    assert time.monotonic() - started < 30  # not the 60 s deadline
    assert "child exited with 3" in str(err.value) and "no config here" in str(err.value)


@pytest.mark.procs
def test_waiting_for_a_child_ends_when_its_url_answers_200(tmp_path: Path) -> None:
    port = free_port()
    child = Process(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(tmp_path)],
        None,
        tmp_path / "http.log",
    ).start()
    try:
        child.wait_http(f"http://127.0.0.1:{port}/", timeout_s=30)
        assert child.alive()
    finally:
        assert child.stop(timeout_s=10) == -signal.SIGTERM


@pytest.mark.procs
def test_a_child_that_ignores_sigterm_is_killed_after_the_timeout(tmp_path: Path) -> None:
    log = tmp_path / "stubborn.log"
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ignoring SIGTERM', flush=True); time.sleep(120)"
    )
    child = python(code, log, new_session=True).start()
    wait_until(lambda: "ignoring SIGTERM" in log.read_text(), 30, "the child to install its handler")
    started = time.monotonic()
    assert child.stop(timeout_s=0.5) == -signal.SIGKILL
    assert time.monotonic() - started < 10
    assert not child.alive() and child.returncode() == -signal.SIGKILL


@pytest.mark.procs
def test_a_child_starts_again_after_it_exited_and_appends_to_its_log(tmp_path: Path) -> None:
    log = tmp_path / "again.log"
    child = python("print('run', flush=True)", log)
    first = child.start().wait(30)
    second = child.start().wait(30)
    assert (first, second) == (0, 0)
    assert log.read_text().split() == ["run", "run"]
    child.send(signal.SIGTERM)  # gone: nothing is signalled
    sleeper = python("import time; time.sleep(30)", log).start()
    try:
        with pytest.raises(RuntimeError, match="already running"):
            sleeper.start()
    finally:
        sleeper.kill()


@pytest.mark.procs
def test_stop_all_terminates_together_and_kills_the_rest(tmp_path: Path) -> None:
    polite = python("import time; time.sleep(120)", tmp_path / "a.log").start()
    log = tmp_path / "b.log"
    stubborn = python(
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(120)",
        log,
    ).start()
    wait_until(lambda: "up" in log.read_text(), 30, "the stubborn child to install its handler")
    stop_all([polite, stubborn], timeout_s=1)
    assert (polite.returncode(), stubborn.returncode()) == (-signal.SIGTERM, -signal.SIGKILL)


async def keep_one(url: str, replicas: int) -> None:
    """A stream KIT of `replicas` copies with one message, b"kept", to find after a restart."""
    async with connect(url) as nc:
        js = nc.jetstream()
        await js.add_stream(name="KIT", subjects=["kit.>"], num_replicas=replicas)
        await js.publish("kit.one", b"kept")


async def kept(url: str) -> bytes:
    async with connect(url) as nc:
        msg = await nc.jetstream().get_msg("KIT", 1)
        assert msg.data is not None
        return msg.data


@pytest.mark.procs
def test_a_nats_server_restart_keeps_its_port_and_its_store(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "jetstream", tmp_path / "nats.log")
    server.start()
    try:
        asyncio.run(keep_one(server.url, replicas=1))
        url, monitor = server.url, server.monitor_url
        server.restart()
        assert (server.url, server.monitor_url) == (url, monitor)
        assert asyncio.run(kept(server.url)) == b"kept"
        server.kill()
        assert not server.alive()
        server.start()
        assert asyncio.run(kept(server.url)) == b"kept"
    finally:
        server.stop()


METRICS = """# HELP orderflow_tasks_in_flight Jobs running.
# TYPE orderflow_tasks_in_flight gauge
orderflow_tasks_in_flight{type="a"} 3.0
orderflow_tasks_in_flight{type="b"} 2.0
# TYPE orderflow_http_requests_total counter
orderflow_http_requests_total{method="POST",route="/orders",status="200"} 40.0
orderflow_http_requests_total{method="GET",route="/readyz",status="503"} 2.0
orderflow_http_requests_total{method="POST",route="/orders",status="400"} 1.0
orderflow_http_requests_created{method="POST",route="/orders",status="200"} 1.7e9
orderflow_odd{note="say \\"hi\\", then go"} 1.0
up 1
"""


def test_metrics_text_is_summed_by_name_over_every_label_set() -> None:
    sums = by_name(parse_metrics(METRICS))
    assert sums["orderflow_tasks_in_flight"] == 5.0 and sums["up"] == 1.0
    assert sums["orderflow_http_requests_total"] == 43.0


def test_metrics_text_is_summed_by_name_and_the_labels_asked_for() -> None:
    samples = parse_metrics(METRICS)
    assert total(samples, "orderflow_http_requests_total", route="/orders") == 41.0
    assert total(samples, "orderflow_http_requests_total", route="/orders", status="200") == 40.0
    assert total(samples, "orderflow_http_requests_total", route="/nowhere") == 0.0
    assert (
        select(samples, 'orderflow_http_requests_total{method="POST",route="/orders",status="200"}') == 40.0
    )
    assert select(samples, 'orderflow_http_requests_total{status="503"}') == 2.0
    assert select(samples, "orderflow_tasks_in_flight") == 5.0
    assert select(samples, 'orderflow_odd{note="say \\"hi\\", then go"}') == 1.0
    with pytest.raises(ValueError):
        select(samples, "orderflow_tasks_in_flight{type=a}")


@pytest.mark.procs
def test_cpu_seconds_of_a_process_and_its_children_come_from_proc(tmp_path: Path) -> None:
    log = tmp_path / "tree.log"
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\ntime.sleep(120)"
    code = (
        "import subprocess, sys, time; "
        f"kid = subprocess.Popen([sys.executable, '-c', {burn!r}]); "
        "print(kid.pid, flush=True); time.sleep(120)"
    )
    parent = python(code, log).start()
    assert parent.pid is not None
    try:
        kid = int(wait_until(lambda: log.read_text().strip(), 30, "the grandchild's pid"))
        assert descendants(parent.pid) == [parent.pid, kid]
        wait_until(lambda: cpu_s(kid) >= 0.25, 30, "the grandchild to burn its CPU")
        assert tree_cpu_s(parent.pid) >= cpu_s(kid) >= 0.25
    finally:
        parent.kill()
        if pid_alive(kid):  # orphaned by the SIGKILL; it is ours too
            os.kill(kid, signal.SIGKILL)
    assert cpu_s(parent.pid) == 0.0


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_nats_cluster_elects_leaders_and_a_killed_node_comes_back_on_its_port_and_store(
    tmp_path: Path,
) -> None:
    """1. Three nodes start and agree on a meta leader; an R3 stream gets a leader.
    2. SIGKILL of the stream's leader: the other two elect another one.
    3. The killed node starts again on the same client port and store, the cluster is healthy,
       and the stream still has its message."""
    cluster = NatsCluster(tmp_path / "nats", 3, binary=find_binary("nats-server"))
    cluster.start(timeout_s=60)
    try:
        assert cluster.meta_leader() in cluster.nodes
        assert cluster.url == ",".join(n.url for n in cluster)
        asyncio.run(keep_one(cluster.url, replicas=3))
        leader = cluster.wait_stream_leader("KIT")
        url = cluster[leader].url
        cluster.kill(leader)
        assert not cluster[leader].alive() and not cluster.alive()
        assert cluster.wait_stream_leader("KIT", timeout_s=60, not_on=leader) != leader
        cluster.start_node(leader, timeout_s=60)
        assert cluster.alive() and cluster[leader].url == url
        assert asyncio.run(kept(cluster.url)) == b"kept"
    finally:
        cluster.stop()
