"""Bad input gets a clear 4xx, never a 5xx, a crash or a hung request (README: guarantee 4).

Against the real thing: `python -m ingest` (uvicorn) in front of a real nats-server.
1. schemathesis generates requests from the ingest's own /openapi.json, valid and invalid:
   never a 5xx, and every answer conforms to the document (status, content type, body, headers).
2. hypothesis throws arbitrary JSON values and bytes at `validation.validate_order`: it never
   raises, and returns an Order or a non-empty list of errors naming a real field.
3. Raw sockets do what HTTP libraries will not: oversized, truncated and dribbled bodies, broken
   framing. Every request ends within a bounded time, never with a 5xx; the ingest stays up.

ORDERFLOW_FUZZ_EXAMPLES=10000 turns the modest CI run into the long one (>= 10k requests).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import threading
import time
import unicodedata
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest
import schemathesis
from harness import NatsServer, Service, connect, http, service_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from orderflow import contract, validation
from orderflow_tools.kit import parse_metrics

EXAMPLES = int(os.environ.get("ORDERFLOW_FUZZ_EXAMPLES") or 0)
LONG = EXAMPLES > 0
# Per operation and generation mode; the long run spreads its examples over the 5 strategies that
# have something to vary (/healthz and /readyz take no input: one example each).
API_EXAMPLES = EXAMPLES // 5 + 100 if LONG else 60
VALIDATOR_EXAMPLES = EXAMPLES if LONG else 300
pytestmark = pytest.mark.timeout(0 if LONG else 60)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
FIELDS = {"body", "product_id", "count", "username"}
REQUESTS = {"schemathesis": 0, "raw": 0}


def _settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,  # no .hypothesis/ directory in the repository
        suppress_health_check=list(HealthCheck),
        derandomize=not LONG,  # CI: the same examples every run; the long run explores
    )


@pytest.fixture(scope="module")
def ingest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    nats = NatsServer(tmp / "jetstream", tmp / "nats-server.log")
    nats.start()
    svc = Service("ingest", service_env(nats.url, LOG_LEVEL="warning"), tmp / "ingest.log")
    try:
        yield svc.start().wait_ready()
    finally:
        svc.stop()
        nats.stop()


def server_errors(svc: Service) -> dict[str, float]:
    """5xx answers the ingest itself counted, by label set (a /readyz 503 while connecting is by
    design and not counted)."""
    _, _, body = svc.get("/metrics")
    return {
        f"{s.name}{s.labels}": s.value
        for s in parse_metrics(body.decode())
        if s.name == "orderflow_http_requests_total"
        and re.fullmatch(r"5\d\d", s.labels.get("status", ""))
        and s.labels.get("route") != "/readyz"
        and s.value
    }


BASELINE: dict[str, float] = {}  # 5xx counted before the current test (a failure is reported once)


@pytest.fixture(autouse=True)
def _baseline(request: pytest.FixtureRequest) -> None:
    BASELINE.clear()
    if "ingest" in request.fixturenames:
        BASELINE.update(server_errors(request.getfixturevalue("ingest")))


def assert_healthy(svc: Service) -> None:
    assert svc.proc is not None and svc.proc.poll() is None, svc.logs()[-3000:]
    assert svc.get("/healthz")[0] == 200
    new = {k: v - BASELINE.get(k, 0.0) for k, v in server_errors(svc).items() if v > BASELINE.get(k, 0.0)}
    assert new == {}, svc.logs()[-3000:]
    assert "Traceback" not in svc.logs(), svc.logs()[-3000:]


# --- 1. schemathesis against /openapi.json ---------------------------------------------------
@pytest.mark.procs
@pytest.mark.parametrize(
    ("path", "method", "mode"),
    [
        ("/orders", "POST", GenerationMode.POSITIVE),
        ("/orders", "POST", GenerationMode.NEGATIVE),
        ("/orders/batch", "POST", GenerationMode.POSITIVE),
        ("/orders/batch", "POST", GenerationMode.NEGATIVE),
        ("/orders/{order_id}", "GET", GenerationMode.POSITIVE),
        # any string is a valid order id to the document: the negative cases are ?wait's values
        ("/orders/{order_id}", "GET", GenerationMode.NEGATIVE),
        ("/orders/{order_id}/events", "GET", GenerationMode.POSITIVE),
        ("/healthz", "GET", GenerationMode.POSITIVE),
        ("/readyz", "GET", GenerationMode.POSITIVE),
    ],
    ids=lambda v: str(v),
)
def test_generated_requests_never_get_a_5xx_and_answers_match_the_document(
    ingest: Service, path: str, method: str, mode: GenerationMode
) -> None:
    schema = schemathesis.openapi.from_url(ingest.url + "/openapi.json")
    operation = schema[path][method]
    sent = 0

    @_settings(API_EXAMPLES)
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case: Any) -> None:
        nonlocal sent
        sent += 1
        case.call_and_validate(base_url=ingest.url, checks=CHECKS, timeout=10)

    check()
    REQUESTS["schemathesis"] += sent
    print(f"\n{method} {path} {mode.value}: {sent} requests")
    assert sent > 0
    assert_healthy(ingest)


@pytest.mark.procs
def test_real_orders_answer_as_documented_with_every_field_of_the_view(ingest: Service) -> None:
    """Random ids are 404s: here an order whose record has every field set (as workers write it)
    and a queued one are read through GET, GET ?wait and /events, each answer checked against the
    document like the generated ones."""
    full = contract.StatusRecord(
        "fuzz-full", "done", 1, time.time(), worker_id="w", task_type="default", started_at=time.time(),
        first_started_at=time.time() - 5, runs=2, result=msgspec.Raw(b'{"n":[1,"x",null]}'),
        finished_at=time.time(), error="E", deliveries=2, handbacks=0, crashes=0, run_s=1.5,
        error_class="handler_error",
    )  # fmt: skip
    asyncio.run(_put_record(ingest, full))
    _, _, created = http("POST", ingest.url + "/orders", VALID)
    queued = json.loads(created)["order_id"]
    schema = schemathesis.openapi.from_url(ingest.url + "/openapi.json")
    get, events = schema["/orders/{order_id}"]["GET"], schema["/orders/{order_id}/events"]["GET"]
    for order_id in ("fuzz-full", queued):
        for case in (
            get.Case(path_parameters={"order_id": order_id}),
            get.Case(path_parameters={"order_id": order_id}, query={"wait": 0.2}),
            events.Case(path_parameters={"order_id": order_id}) if order_id == "fuzz-full" else None,
        ):
            if case is not None:
                response = case.call_and_validate(base_url=ingest.url, checks=CHECKS, timeout=10)
                assert response.status_code == 200
    assert_healthy(ingest)


async def _put_record(svc: Service, record: contract.StatusRecord) -> None:
    async with connect(svc.env["ORDERFLOW_NATS_URL"]) as nc:
        kv = await nc.jetstream().key_value(contract.STATUS_BUCKET)
        await kv.put(record.order_id, contract.encode(record))


# --- 2. the validator ------------------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
quantity_like = (
    st.integers(-5, 105)
    | st.integers()
    | st.booleans()
    | st.none()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.from_regex(r"\A-?[0-9]{1,10}\Z")
    | st.text(max_size=10)
    | st.sampled_from(["5\n", "5 ", " 5", "007", "-0", "+5", "5.0", "1e2", "\u0665"])  # near misses
    | json_values
)
username_like = (
    st.text(max_size=70)
    | st.sampled_from(["", " ", "\t\n", "x" * 64, "x" * 65, "m\x1b[2J", "m\u202egnp.exe", "m\x85", "m\u2066"])
    | json_values
)
order_like = st.fixed_dictionaries(
    {},
    optional={
        "product_id": quantity_like,
        "count": quantity_like,
        "username": username_like,
        "extra": json_values,
    },
)


def _valid_quantity(value: Any) -> bool:
    if isinstance(value, bool) or value is None:
        return False
    if isinstance(value, int):
        return 0 <= value <= 100
    # decimal strings; the validator bounds their length (int() of a huge string costs CPU)
    return (
        isinstance(value, str)
        and len(value) <= 8
        and re.fullmatch(r"-?[0-9]+", value) is not None
        and 0 <= int(value) <= 100
    )


# The spec's model of a username's forbidden characters, written apart from the validator's regex:
# controls (Cc), line and paragraph separators (Zl, Zp) and the bidi formatting characters.
_BIDI = {0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)}


def _readable(name: str) -> bool:
    return not any(unicodedata.category(c) in ("Cc", "Zl", "Zp") or ord(c) in _BIDI for c in name)


def _expect_valid(body: Any) -> bool:
    if not isinstance(body, dict):
        return False
    name = body.get("username")
    return (
        _valid_quantity(body.get("product_id", None))
        and _valid_quantity(body.get("count", None))
        and isinstance(name, str)
        and bool(name.strip())
        and len(name) <= contract.MAX_USERNAME
        and _readable(name)
    )


def _check_result(result: Any) -> None:
    if isinstance(result, contract.Order):
        assert 0 <= result.product_id <= 100 and 0 <= result.count <= 100
        assert 0 < len(result.username.strip()) and len(result.username) <= contract.MAX_USERNAME
        assert _readable(result.username)
        return
    assert isinstance(result, list) and result, f"neither an Order nor errors: {result!r}"
    for error in result:
        assert isinstance(error, contract.FieldError)
        assert error.field in FIELDS and error.message


@_settings(VALIDATOR_EXAMPLES)
@given(body=order_like | json_values)
def test_validator_accepts_exactly_the_orders_the_spec_allows(body: Any) -> None:
    raw = json.dumps(body).encode()
    result = validation.validate_order(raw, "o-1")
    _check_result(result)
    assert isinstance(result, contract.Order) == _expect_valid(body), (body, result)


@_settings(VALIDATOR_EXAMPLES)
@given(
    raw=st.binary(max_size=300)
    | st.text(max_size=200).map(str.encode)
    | order_like.map(lambda d: json.dumps(d).encode()).flatmap(
        lambda b: st.integers(0, len(b)).map(lambda n: b[:n])
    )
)  # truncated JSON too
def test_validator_never_raises_on_arbitrary_bytes(raw: bytes) -> None:
    _check_result(validation.validate_order(raw, "o-1"))


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 100_000,
        b'{"a":' * 50_000,
        b"1" * 20_000,
        b'{"product_id": 1e999, "count": 1, "username": "m"}',
        b'{"product_id": 123456789012345678901234567890, "count": 1, "username": "m"}',
        b"\xff\xfe{}",
        b"\x00",
        b'{"product_id": "1", "product_id": "2", "count": "3", "username": "m"}',
    ],
    ids=["deep-arrays", "deep-objects", "long-number", "inf", "bigint", "bad-utf8", "nul", "duplicate-key"],
)
def test_validator_survives_pathological_json(raw: bytes) -> None:
    _check_result(validation.validate_order(raw, "o-1"))


# --- 3. HTTP-level nastiness against the real ingest ------------------------------------------
VALID = b'{"product_id": "33", "count": "3", "username": "maksim.konovalov"}'


def raw_request(
    port: int,
    head: bytes,
    body_parts: Sequence[bytes] = (),
    *,
    delay_s: float = 0.0,
    shut_write: bool = False,
    timeout_s: float = 10.0,
) -> bytes:
    """Send a request by hand; return whatever the server answered before closing (b'' = none).
    Raises TimeoutError if the server neither answers nor closes within timeout_s."""
    REQUESTS["raw"] += 1
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(head)
        for part in body_parts:
            if delay_s:
                time.sleep(delay_s)
            try:
                sock.sendall(part)
            except (BrokenPipeError, ConnectionResetError):
                break  # the server already answered (e.g. 413) and closed
        if shut_write:
            sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + timeout_s
        chunks = []
        while time.monotonic() < deadline:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            except TimeoutError:
                raise TimeoutError("the server neither answered nor closed the connection") from None
            if not data:
                break
            chunks.append(data)
            if _complete(b"".join(chunks)):
                break
        return b"".join(chunks)


def _complete(data: bytes) -> bool:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    m = re.search(rb"(?i)content-length:\s*(\d+)", head)
    return m is None or len(body) >= int(m.group(1))


def status_of(answer: bytes) -> int | None:
    m = re.match(rb"HTTP/1\.[01] (\d{3})", answer)
    return int(m.group(1)) if m else None


def post_head(length: int | None, extra: str = "", chunked: bool = False) -> bytes:
    lines = [
        "POST /orders HTTP/1.1",
        "Host: 127.0.0.1",
        "Content-Type: application/json",
        "Connection: close",
    ]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    elif length is not None:
        lines.append(f"Content-Length: {length}")
    if extra:
        lines.append(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


@pytest.mark.procs
def test_oversized_bodies_get_413_without_reading_them(ingest: Service) -> None:
    """1. Content-Length over 16 KiB: 413 before the body is read (a 1 GiB claim is not waited for).
    2. A chunked body that grows past 16 KiB: 413 once the limit is crossed.
    3. Exactly 16 KiB of padding in valid JSON is still accepted."""
    big = b'{"username": "m", "product_id": 1, "count": 1, "pad": "' + b"x" * 17_000 + b'"}'
    assert status_of(raw_request(ingest.port, post_head(len(big)), [big])) == 413
    started = time.monotonic()
    assert status_of(raw_request(ingest.port, post_head(1 << 30), [b"{" * 1000])) == 413
    assert time.monotonic() - started < 5
    parts = [chunk(b"x" * 4096) for _ in range(6)] + [b"0\r\n\r\n"]
    assert status_of(raw_request(ingest.port, post_head(None, chunked=True), parts)) == 413
    pad = contract.MAX_BODY_BYTES - len(VALID[:-1]) - len(b', "p": ""}')
    exact = VALID[:-1] + b', "p": "' + b"x" * pad + b'"}'
    assert len(exact) == contract.MAX_BODY_BYTES
    assert status_of(raw_request(ingest.port, post_head(len(exact)), [exact])) == 200
    assert_healthy(ingest)


@pytest.mark.procs
@pytest.mark.parametrize("shut_write", [True, False], ids=["half-close", "close"])
def test_truncated_bodies_never_hang_or_5xx(ingest: Service, shut_write: bool) -> None:
    """1. Content-Length says 200, the client sends 20 bytes and closes (or half-closes).
    2. The ingest answers nothing or a 4xx, at once; nothing is stored; it stays healthy."""
    before = ingest.metric("orderflow_orders_published_total")
    for cut in (0, 1, 20, len(VALID) - 1):
        started = time.monotonic()
        if shut_write:
            answer = raw_request(ingest.port, post_head(200), [VALID[:cut]], shut_write=True)
            status = status_of(answer)
            assert status is None or 400 <= status < 500, answer
        else:
            with socket.create_connection(("127.0.0.1", ingest.port), timeout=5) as sock:
                sock.sendall(post_head(200) + VALID[:cut])
            REQUESTS["raw"] += 1
        assert time.monotonic() - started < 5
    time.sleep(0.3)
    assert ingest.metric("orderflow_orders_published_total") == before
    assert_healthy(ingest)


@pytest.mark.procs
def test_dribbled_bodies_are_answered_and_do_not_block_others(ingest: Service) -> None:
    """1. Eight clients dribble a valid body a few bytes at a time (~3 s each).
    2. Meanwhile ordinary requests are answered at once (the event loop is not held).
    3. Every dribbled request ends with a 200 within a bounded time."""
    results: list[int | None] = []

    def dribble(i: int) -> None:
        body = VALID
        parts = [body[j : j + 3] for j in range(0, len(body), 3)]
        answer = raw_request(
            ingest.port, post_head(len(body), f"Idempotency-Key: slow-{i}"), parts, delay_s=0.12, timeout_s=20
        )
        results.append(status_of(answer))

    threads = [threading.Thread(target=dribble, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    fast = []
    for _ in range(10):
        started = time.monotonic()
        status, _, _ = http("POST", ingest.url + "/orders", VALID, timeout=5)
        fast.append((status, time.monotonic() - started))
        time.sleep(0.1)
    for t in threads:
        t.join(30)
    assert all(s == 200 for s, _ in fast) and max(d for _, d in fast) < 1.0, fast
    assert results == [200] * 8
    assert_healthy(ingest)


@pytest.mark.procs
@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /orders HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}",
        b"POST /orders HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n{}",
        b"POST /orders HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 9\r\n\r\n{}",
        b"POST /orders HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
        b"POST /orders HTTP/1.1\r\nHost: x\r\nIdempotency-Key: \xff\xfe\r\nContent-Length: 2\r\n\r\n{}",
        b"POST /orders?type=%ff%00 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}",
        b"POST /orders HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\nContent-Length: 2\r\n\r\n{}",
        b"GARBAGE\r\n\r\n",
        b"POST /orders/../orders HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}",
        b"GET /orders/%00%ff HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /orders/X%0A HTTP/1.1\r\nHost: x\r\n\r\n",  # `$` matched before the newline: was a 503
    ],
    ids=[
        "length-not-a-number",
        "negative-length",
        "two-lengths",
        "bad-chunk",
        "latin1-key",
        "bad-query",
        "huge-header",
        "garbage",
        "dot-dot",
        "nul-id",
        "newline-id",
    ],
)
def test_broken_framing_gets_a_4xx_or_a_closed_connection(ingest: Service, request_bytes: bytes) -> None:
    answer = raw_request(ingest.port, request_bytes, shut_write=True)
    status = status_of(answer)
    assert status is None or 400 <= status < 500, answer[:300]
    assert_healthy(ingest)


@pytest.mark.procs
def test_zz_report_the_number_of_requests(ingest: Service) -> None:
    total = REQUESTS["schemathesis"] + REQUESTS["raw"]
    print(f"\nfuzz requests against the real ingest: {REQUESTS} = {total}")
    assert_healthy(ingest)
    if LONG:
        assert REQUESTS["schemathesis"] >= 10_000


@pytest.mark.procs
def test_deeply_nested_json_is_a_400_not_a_500(ingest: Service) -> None:
    """msgspec raises RecursionError (not DecodeError) past ~1000 levels; 5000 '[' fit in 16 KiB."""
    for body in (b"[" * 5000, b'{"a":' * 3000):
        status, _, answer = http("POST", ingest.url + "/orders", body, timeout=5)
        assert status == 400 and b'"body"' in answer, answer
    assert_healthy(ingest)
