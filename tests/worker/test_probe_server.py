"""The worker's probe server (worker/health.py) bounds what a client can hold: stalled connections
neither silence /healthz nor pile up threads. In process with real sockets: the server is the
worker's own class on a free port, the state behind it a stand-in (the probes read only it)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from orderflow import probeserver
from worker import health

STALLED = 300


class StandInState:
    """What orderflow/probes.py reads from a service: healthy, ready, an empty registry."""

    exposition = CollectorRegistry()

    def liveness_problem(self) -> str | None:
        return None

    def readiness_problem(self) -> str | None:
        return None


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[health.ProbeServer]:
    monkeypatch.setattr(probeserver, "READ_TIMEOUT_S", 1.0)  # where ProbeServer reads it
    probes = health.ProbeServer("127.0.0.1", 0, StandInState()).start()
    yield probes
    asyncio.run(probes.stop())


def get(port: int, path: str = "/healthz") -> tuple[bytes, float]:
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: probe\r\n\r\n".encode())
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    return answer, time.perf_counter() - started


def stall(port: int, n: int) -> list[socket.socket]:
    """n connections that send half a request line and then nothing."""
    out = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"GET /heal")
        out.append(s)
    return out


def test_healthz_answers_within_100ms_while_300_connections_stall(server: health.ProbeServer) -> None:
    """1. 300 connections each send half a request line and stall. The server accepts them all;
       past the cap it cuts off the oldest one still reading: the first 300 - MAX_CONNECTIONS read
       an EOF, no answer.
    2. With the rest still stalled, /healthz answers 200 on a new connection in under 100 ms,
       five times in a row: the new connection takes a stalled one's slot, it is never refused.
    3. At no point are more than MAX_CONNECTIONS connections (so handler threads) held open."""
    threads_before = threading.active_count()
    held = stall(server.port, STALLED)
    try:
        for s in held[: STALLED - health.MAX_CONNECTIONS]:
            s.settimeout(2)
            assert s.recv(1) == b""
        assert server._server.open_connections() == health.MAX_CONNECTIONS
        for _ in range(5):
            answer, took_s = get(server.port)
            assert answer.startswith(b"HTTP/1.0 200"), answer[:80]
            assert took_s < 0.1, f"/healthz took {took_s * 1000:.0f} ms with {STALLED} stalled connections"
            assert server._server.open_connections() <= health.MAX_CONNECTIONS
        # The cut connections' threads end on their EOF (+ 1: the server's own thread).
        deadline = time.monotonic() + 2
        while threading.active_count() > threads_before + 1 + health.MAX_CONNECTIONS:
            assert time.monotonic() < deadline, f"{threading.active_count()} threads"
            time.sleep(0.01)
    finally:
        for s in held:
            s.close()


def test_a_connection_that_sends_nothing_is_closed_after_the_read_timeout(
    server: health.ProbeServer,
) -> None:
    """A connection that stays silent is closed by the server after READ_TIMEOUT_S (1 s here),
    without an answer, and its slot is free again."""
    [s] = stall(server.port, 1)
    with s:
        s.settimeout(5)
        started = time.monotonic()
        assert s.recv(1) == b""
        assert 0.9 < time.monotonic() - started < 3
    deadline = time.monotonic() + 2
    while server._server.open_connections() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server._server.open_connections() == 0


def test_a_request_being_answered_is_never_cut_off(server: health.ProbeServer) -> None:
    """Past the cap only connections still reading their request are cut: a full request always
    gets its whole answer (here /metrics) even while stalled connections keep arriving."""
    held = stall(server.port, health.MAX_CONNECTIONS)
    try:
        answers: list[bytes] = []
        workers = [
            threading.Thread(target=lambda: answers.append(get(server.port, "/metrics")[0])) for _ in range(8)
        ]
        for t in workers:
            t.start()
        held += stall(server.port, health.MAX_CONNECTIONS)
        for t in workers:
            t.join(5)
        assert len(answers) == 8
        assert all(a.startswith(b"HTTP/1.0 200") for a in answers)
    finally:
        for s in held:
            s.close()
