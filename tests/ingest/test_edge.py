"""The HTTP edge under abuse, against a real uvicorn ingest and nats-server (issue #16 items 1, 2):
stalled requests are cut off at the receipt deadline, a cap bounds open connections, and keep-alive
and ordinary orders are unaffected."""

from __future__ import annotations

import json
import resource
import selectors
import socket
import time
from collections.abc import Callable, Iterator
from http.client import HTTPConnection

import pytest
from harness import Service, http, wait_until

ORDER = b'{"product_id": "33", "count": "3", "username": "maksim.konovalov"}'
STALLED = 2000
HEAD_S, BODY_S = 2.0, 4.0


@pytest.fixture
def fd_room() -> Iterator[None]:
    """Room for the stalled connections in this process and in the ingest it spawns (a child
    inherits the limit): both ends of 2 000 loopback connections plus the rest."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * STALLED + 1024
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(f"the hard open-files limit is {hard}; this test needs {need}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, need), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def head(content_length: int, final_blank_line: bool = True) -> bytes:
    lines = [
        "POST /orders HTTP/1.1",
        "Host: 127.0.0.1",
        "Content-Type: application/json",
        f"Content-Length: {content_length}",
    ]
    return ("\r\n".join(lines) + "\r\n" + ("\r\n" if final_blank_line else "")).encode()


def open_stalled(port: int, count: int, payload: bytes) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(payload)
        sock.setblocking(False)
        socks.append(sock)
    return socks


def wait_closed(socks: list[socket.socket], timeout_s: float) -> dict[socket.socket, bytes]:
    """Read every socket until the server closes it; returns what each received. Fails if any is
    still open after timeout_s."""
    received = {s: b"" for s in socks}
    with selectors.DefaultSelector() as sel:
        for s in socks:
            sel.register(s, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout_s
        open_ = len(socks)
        while open_ and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=0.5):
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:
                    data = b""
                if data:
                    received[sock] += data
                else:
                    sel.unregister(sock)
                    open_ -= 1
        assert open_ == 0, f"{open_} of {len(socks)} connections still open after {timeout_s}s"
    for s in socks:
        s.close()
    return received


def post_order(svc: Service) -> int:
    status: int = http("POST", svc.url + "/orders", ORDER, timeout=10)[0]
    return status


def test_stalled_connections_are_closed_at_the_receipt_deadline_while_orders_keep_getting_200(
    fd_room: None, spawn: Callable[..., Service]
) -> None:
    """1. 1 000 connections send a POST head without its final blank line, 1 000 send the head and
       8 000 of a 16 000-byte body, then all 2 000 stall;
    2. meanwhile ordinary orders are answered 200;
    3. every stalled connection is answered 408 and closed within its deadline (head 2 s, body 4 s,
       plus a generous margin for a loaded machine); the closes are counted by phase."""
    svc = spawn("ingest", HTTP_HEADER_TIMEOUT_S=HEAD_S, HTTP_BODY_TIMEOUT_S=BODY_S).wait_ready()
    started = time.monotonic()
    heads = open_stalled(svc.port, STALLED // 2, head(16_000, final_blank_line=False))
    bodies = open_stalled(svc.port, STALLED // 2, head(16_000) + b'{"username": "' + b"x" * 7_986)
    opened_s = time.monotonic() - started
    statuses = [post_order(svc) for _ in range(20)]
    assert statuses == [200] * 20
    received = wait_closed(heads + bodies, opened_s + BODY_S + 30)
    answers = [r.split(b"\r\n", 1)[0] for r in received.values()]
    assert answers.count(b"HTTP/1.1 408 Request Timeout") == STALLED
    assert svc.metric('orderflow_http_request_timeouts_total{phase="headers"}') == STALLED // 2
    assert svc.metric('orderflow_http_request_timeouts_total{phase="body"}') == STALLED // 2
    assert post_order(svc) == 200
    # One summary line per interval, not one per closed connection.
    assert svc.logs().count("connections closed at the receipt deadline") <= 3
    assert svc.metric('orderflow_orders_published_total{result="stored"}') == 21  # nothing else stored


def test_keep_alive_and_slow_but_timely_clients_are_unaffected(spawn: Callable[..., Service]) -> None:
    """1. One keep-alive connection sends orders with pauses longer than the head deadline between
       them (idle time is the keep-alive timeout's, not the receipt deadline's): all 200, one
       connection;
    2. a client dribbling its body within the body deadline gets 200;
    3. a connection that opens and sends nothing is closed (no answer) at the head deadline."""
    svc = spawn("ingest", HTTP_HEADER_TIMEOUT_S=1, HTTP_BODY_TIMEOUT_S=3).wait_ready()
    conn = HTTPConnection("127.0.0.1", svc.port, timeout=10)
    for _ in range(3):
        conn.request("POST", "/orders", ORDER, {"Content-Type": "application/json"})
        response = conn.getresponse()
        assert response.status == 200 and json.loads(response.read())["result"] == "created"
        time.sleep(1.5)
    assert conn.sock is not None  # the same connection throughout
    conn.close()

    with socket.create_connection(("127.0.0.1", svc.port), timeout=10) as sock:
        sock.sendall(head(len(ORDER)))
        for i in range(0, len(ORDER), 12):
            time.sleep(0.2)
            sock.sendall(ORDER[i : i + 12])
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")

    with socket.create_connection(("127.0.0.1", svc.port), timeout=10) as sock:
        started = time.monotonic()
        assert sock.recv(65536) == b""  # closed without an answer: no request was begun
        assert time.monotonic() - started < 10
    wait_until(lambda: svc.metric("orderflow_http_request_timeouts_total") == 1, 5, "the close counted")


def test_connections_past_the_cap_are_refused_with_503_and_retry_after(spawn: Callable[..., Service]) -> None:
    """1. HTTP_MAX_CONNECTIONS=20: 20 connections are held open;
    2. the 21st is answered at once 503 + Retry-After with the contract's body, and closed;
    3. once the 20 close, orders are accepted again; the refusal is counted."""
    svc = spawn("ingest", HTTP_MAX_CONNECTIONS=20, HTTP_HEADER_TIMEOUT_S=30).wait_ready()
    held = [socket.create_connection(("127.0.0.1", svc.port), timeout=10) for _ in range(20)]
    time.sleep(0.5)  # the server has accepted them
    with socket.create_connection(("127.0.0.1", svc.port), timeout=10) as sock:
        sock.sendall(head(len(ORDER)) + ORDER)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    headers, _, body = rest.partition(b"\r\n\r\n")
    assert status_line == b"HTTP/1.1 503 Service Unavailable"
    assert b"retry-after: 1" in headers.lower() and json.loads(body) == {"result": "server-kaput"}
    for sock in held:
        sock.close()
    wait_until(lambda: post_order(svc) == 200, 10, "orders accepted again")
    assert svc.metric("orderflow_http_connections_refused_total") >= 1
    assert svc.metric('orderflow_orders_published_total{result="stored"}') >= 1
