"""Signed callbacks end to end (issue #22, item 3): a real nats-server, ingest and worker processes,
and a real HTTP receiver in the test (a thread on a free loopback port) that verifies every
request with the Standard Webhooks reference package (`standardwebhooks`) and refuses the first
attempts. Loopback is allowed explicitly (ORDERFLOW_CALLBACK_ALLOW_PRIVATE): the receiver must be
reached. The rules (each address class, the settle step, retries, a host the worker's own resolver
finds on loopback refused before any request) are in tests/worker/unit/test_callbacks.py, the
intake's refusals in tests/ingest/test_callback_intake.py."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import standardwebhooks
from harness import NatsServer, Service, http, status_of, wait_until

from orderflow import auth
from orderflow_tools.kit import free_port

pytestmark = pytest.mark.slow

SECRET = "whsec_" + base64.b64encode(b"orderflow-callbacks-test-key-32b").decode()


class Receiver:
    """Answers each request with the next of `answers` ("hang": hold it until released, then 500;
    then 200 for good); records every request and whether its signature verified."""

    def __init__(self, answers: list[int | str], secret: str = SECRET) -> None:
        self.answers = list(answers)
        self.requests: list[dict[str, Any]] = []
        self.release = threading.Event()
        self.hanging = threading.Event()
        self.lock = threading.Lock()
        self.port = free_port()
        receiver = self

        class Handle(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    payload = standardwebhooks.Webhook(secret).verify(body, headers)
                except standardwebhooks.WebhookVerificationError:
                    payload = None
                with receiver.lock:
                    answer = receiver.answers.pop(0) if receiver.answers else 200
                    receiver.requests.append({"headers": headers, "payload": payload, "answer": answer})
                if answer == "hang":
                    receiver.hanging.set()
                    receiver.release.wait(30)
                    answer = 500
                self.send_response(int(answer))
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handle)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook?src=orderflow"

    def delivered(self) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.requests if r["answer"] == 200]


@pytest.fixture
def receiver_of() -> Iterator[Any]:
    made: list[Receiver] = []

    def make(answers: list[int | str], secret: str = SECRET) -> Receiver:
        r = Receiver(answers, secret)
        r.thread.start()
        made.append(r)
        return r

    yield make
    for r in made:
        r.release.set()
        r.server.shutdown()
        r.server.server_close()


def settings(tmp_path: Path) -> dict[str, Any]:
    secret = tmp_path / "webhook-secret"
    secret.write_text(SECRET)
    return {
        "CALLBACK_HOSTS": "127.0.0.1,localhost",
        "CALLBACK_ALLOW_HTTP": "1",
        "CALLBACK_ALLOW_PRIVATE": "1",
        "CALLBACK_SECRET_FILE": str(secret),
        "CALLBACK_TIMEOUT_S": 5,
        "RETRY_BASE_S": 0.2,
        "RETRY_MAX_S": 0.5,
        "WORK_S": 0.05,
    }


def post_order(ingest: Service, callback_url: str) -> tuple[int, dict[str, Any]]:
    body = {"product_id": 1, "count": 2, "username": "cb", "callback_url": callback_url}
    status, _, answer = http("POST", ingest.url + "/orders", json.dumps(body).encode())
    return status, json.loads(answer)


@pytest.mark.timeout(120)
def test_a_final_order_is_delivered_signed_through_refusals_and_a_sigkill_of_its_worker(
    nats_server: NatsServer, spawn: Any, receiver_of: Any, tmp_path: Path
) -> None:
    """1. An order with a callback_url to the receiver, which holds the first request (worker A
       is sending it) and answers 500 to the next.
    2. A is SIGKILLed while its delivery hangs; worker B starts and gets the callback job after
       ack_wait, its first attempt is refused (500), the next retry is answered 200.
    3. Every request carried a valid Standard Webhooks signature, the same webhook-id, and the
       order's final view (done); the callback job itself ends done."""
    s = settings(tmp_path)
    ingest = spawn("ingest", **s).wait_ready()
    worker_a = spawn("worker", ACK_WAIT_S=2, **s).wait_ready()
    receiver = receiver_of(["hang", 500])
    status, answer = post_order(ingest, receiver.url)
    assert status == 200, answer
    order_id = answer["order_id"]
    assert receiver.hanging.wait(30), "worker A never sent the callback"
    worker_a.process.kill(10)
    receiver.release.set()
    spawn("worker", ACK_WAIT_S=2, **s).wait_ready()

    wait_until(receiver.delivered, 60, "the callback answered 200")
    requests = receiver.requests
    assert [r["answer"] for r in requests] == ["hang", 500, 200]
    assert all(r["payload"] is not None for r in requests), "a signature did not verify"
    assert {r["headers"]["webhook-id"] for r in requests} == {f"{order_id}.callback"}
    view = requests[-1]["payload"]
    assert view["type"] == "order.done"
    assert view["data"]["id"] == order_id and view["data"]["status"] == "done"
    order = status_of(nats_server.url, order_id)
    assert order is not None and order.status == "done"

    def job_done() -> Any:
        st = status_of(nats_server.url, f"{order_id}.callback")
        return st if st is not None and st.status == "done" else None

    job = wait_until(job_done, 10, "the callback job's done")
    assert job.attempts == 1 and job.crashes == 1  # the 500; the SIGKILL is a crash, not an attempt


@pytest.mark.timeout(90)
def test_an_api_keys_default_callback_is_signed_with_that_keys_own_secret(
    nats_server: NatsServer, spawn: Any, receiver_of: Any, tmp_path: Path
) -> None:
    """The key file gives the key `shop` a default callback_url and the webhook secret
    `shop-hooks`; the workers hold that file in ORDERFLOW_CALLBACK_SECRETS_DIR (no default
    secret at all). An order sent with the key and no callback_url of its own is delivered there,
    signed with the key's secret: the receiver verifies it with that secret."""
    own = "whsec_" + base64.b64encode(b"the-shop-keys-own-webhook-secret").decode()
    secrets_dir = tmp_path / "webhook-secrets"
    secrets_dir.mkdir()
    (secrets_dir / "shop-hooks").write_text(own)
    receiver = receiver_of([], own)
    key = auth.new_key()
    entry = {
        **auth.entry("shop", [auth.WRITE], key),
        "callback_url": receiver.url,
        "webhook_secret": "shop-hooks",
    }
    keys_file = tmp_path / "api-keys.json"
    keys_file.write_text(json.dumps({"keys": [entry]}))
    s = {k: v for k, v in settings(tmp_path).items() if k != "CALLBACK_SECRET_FILE"}
    ingest = spawn("ingest", API_KEYS_FILE=keys_file, **s).wait_ready()
    spawn("worker", CALLBACK_SECRETS_DIR=secrets_dir, **s).wait_ready()
    body = json.dumps({"product_id": 1, "count": 2, "username": "cb"}).encode()
    status, _, answer = http("POST", ingest.url + "/orders", body, {"Authorization": f"Bearer {key}"})
    assert status == 200, answer
    order_id = json.loads(answer)["order_id"]
    [delivered] = wait_until(receiver.delivered, 30, "the key's default callback")
    assert delivered["payload"] is not None, "not signed with the key's own secret"
    assert delivered["payload"]["data"]["id"] == order_id
