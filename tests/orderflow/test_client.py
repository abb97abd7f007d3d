"""orderflow.client: its retry policy as a rule; its retries, Idempotency-Key and Bearer against a
tiny real HTTP server that answers what the test scripts (503 + Retry-After, a timeout, 400); and
submit / get / wait, sync and async, against a real ingest, worker and nats-server."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from harness import REPO, Service

from orderflow.client import AsyncClient, Client, InvalidOrder, OrderflowError, RetryPolicy

ORDER = {"product_id": "33", "count": "3", "username": "ada"}
FAST = RetryPolicy(attempts=4, base_delay_s=0.01, max_delay_s=2.0)


def test_the_pause_is_retry_after_when_given_capped_else_full_jitter_growing() -> None:
    policy = RetryPolicy(attempts=5, base_delay_s=0.2, max_delay_s=10.0)
    assert policy.delay_s(0, "3") == 3.0
    assert policy.delay_s(0, "600") == 10.0  # a server cannot park the client past its cap
    assert policy.delay_s(0, "-1") == 0.0
    rng = random.Random(1)
    pauses = [policy.delay_s(4, None, rng) for _ in range(200)]
    assert 0 <= min(pauses) and max(pauses) <= 3.2 and max(pauses) > 2.0  # 0.2 * 2^4
    assert max(policy.delay_s(20, "Wed, 21 Oct 2015 07:28:00 GMT", rng) for _ in range(50)) <= 10.0
    assert [s for s in (400, 401, 404, 413, 422, 408, 409, 429, 503) if policy.retried(s)] == [
        408,
        409,
        429,
        503,
    ]


class Scripted(ThreadingHTTPServer):
    """Answers each request with the next (status, headers, body, delay_s) of `script`."""

    def __init__(self, script: list[tuple[int, dict[str, str], Any, float]]) -> None:
        self.script = script
        self.seen: list[tuple[str, str, dict[str, str], Any]] = []
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: Scripted

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        self.server.seen.append((self.command, self.path, dict(self.headers), body))
        status, headers, answer, delay_s = self.server.script.pop(0)
        time.sleep(delay_s)
        data = json.dumps(answer).encode()
        try:
            self.send_response(status)
            for name, value in {**headers, "content-length": str(len(data))}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            pass  # the client gave up on this one (its timeout)

    do_GET = do_POST = _answer

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def scripted() -> Iterator[Scripted]:
    server = Scripted([])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_submit_retries_503_and_a_timeout_with_one_key_and_honours_retry_after(scripted: Scripted) -> None:
    created = {"result": "created", "order_id": "key-x"}
    scripted.script[:] = [
        (503, {"Retry-After": "1"}, {"result": "server-kaput"}, 0),
        (200, {}, created, 1.0),  # stored, but the answer comes after the client's timeout
        (200, {}, created, 0),
    ]
    with Client(scripted.url, api_key="s3cret", timeout_s=0.5, retry=FAST) as client:
        start = time.monotonic()
        assert client.submit(ORDER) == "key-x"
        assert time.monotonic() - start >= 1.0  # Retry-After: 1 was honoured
    keys = {headers["Idempotency-Key"] for _, _, headers, _ in scripted.seen}
    assert len(scripted.seen) == 3 and len(keys) == 1 and len(keys.pop()) >= 16
    assert all(h["Authorization"] == "Bearer s3cret" for _, _, h, _ in scripted.seen)
    assert all(body == ORDER for _, _, _, body in scripted.seen)


def test_a_400_is_raised_at_once_with_its_fields_and_a_caller_key_is_sent_as_given(
    scripted: Scripted,
) -> None:
    errors = [{"field": "count", "message": "must be an integer"}]
    scripted.script[:] = [(400, {}, {"result": "invalid", "errors": errors}, 0)]
    with Client(scripted.url, retry=FAST) as client, pytest.raises(InvalidOrder) as caught:
        client.submit({**ORDER, "count": "x"}, task_type="invoice", idempotency_key="mine-1")
    assert caught.value.errors == errors and len(scripted.seen) == 1
    method, path, headers, _ = scripted.seen[0]
    assert (method, path, headers["Idempotency-Key"]) == ("POST", "/orders?type=invoice", "mine-1")
    assert "Authorization" not in headers


def test_the_last_retryable_answer_is_raised_after_the_attempts(scripted: Scripted) -> None:
    scripted.script[:] = [(503, {"Retry-After": "0"}, {"result": "server-kaput"}, 0)] * 4
    with Client(scripted.url, retry=FAST) as client, pytest.raises(OrderflowError) as caught:
        client.get("abc")
    assert caught.value.status == 503 and len(scripted.seen) == 4


def test_wait_asks_the_server_to_wait_and_polls_when_it_answers_at_once(scripted: Scripted) -> None:
    scripted.script[:] = [(200, {}, {"status": "queued"}, 0), (200, {}, {"status": "done", "result": 7}, 0)]
    with Client(scripted.url, retry=FAST) as client:
        assert client.wait("abc", timeout_s=5, poll_s=0.01)["result"] == 7
    assert scripted.seen[0][1].startswith("/orders/abc?wait=")


@pytest.fixture
def stack(spawn: Any) -> Service:
    spawn("worker", WORK_S="0.1").wait_ready()
    svc: Service = spawn("ingest")
    return svc.wait_ready()


@pytest.mark.procs
def test_submit_get_and_wait_against_a_real_ingest_sync_and_async(stack: Service) -> None:
    with Client(stack.url) as client:
        order_id = client.submit(ORDER)
        assert order_id.startswith("key-")  # its Idempotency-Key named it
        assert client.get(order_id)["order_id"] == order_id
        assert client.wait(order_id, timeout_s=30)["status"] == "done"
        assert client.submit(ORDER, idempotency_key="k-1") == client.submit(ORDER, idempotency_key="k-1")
        with pytest.raises(InvalidOrder) as caught:
            client.submit({**ORDER, "count": "lots"})
        assert [e["field"] for e in caught.value.errors] == ["count"]
        with pytest.raises(OrderflowError) as missing:
            client.get("0" * 32)
        assert missing.value.status == 404

    async def use_async() -> dict[str, Any]:
        async with AsyncClient(stack.url) as client:
            ids = await asyncio.gather(*(client.submit(ORDER) for _ in range(5)))
            views = await asyncio.gather(*(client.wait(i, timeout_s=30) for i in ids))
            assert len(set(ids)) == 5 and {v["status"] for v in views} == {"done"}
            return await client.get(ids[0])

    assert asyncio.run(use_async())["status"] == "done"


@pytest.mark.procs
def test_the_readme_python_example_runs_as_written(
    stack: Service, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = (REPO / "README.md").read_text().split("### Calling it from Python", 1)[1]
    example = readme.split("```python\n", 1)[1].split("```", 1)[0]
    exec(compile(example.replace("http://localhost:8080", stack.url), "README.md", "exec"), {})
    order_id, status = capsys.readouterr().out.split()
    assert order_id.startswith("key-") and status == "done"
