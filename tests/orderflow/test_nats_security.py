"""NATS secured end to end, against one real nats-server with TLS, client certificates (mTLS) and
the per-service users of docs/kubernetes.md's accounts snippet (tests/nats_secure.py): each
service works under its own identity with only its permissions; the ingest's identity cannot
consume, purge or delete; a wrong CA or an unknown user stops a service at start with exit 2 and
the reason, promptly, and no secret shows in what it prints."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from harness import REPO, Service, cli, find_binary, http, service_env, wait_until
from nats_secure import JwtNats, Pki, SecureNats, new_seed

from orderflow import broker, contract, natsauth, streams
from orderflow.auth import ADMIN, entry, new_key
from orderflow.envsettings import load_settings
from orderflow_tools import kit

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureNats]:
    server = SecureNats.start(tmp_path_factory.mktemp("secure-nats"))
    yield server
    server.stop()


def _env(nats: SecureNats, service: str, **settings: str) -> dict[str, str]:
    return {**nats.identity(service), **settings}


def test_each_service_works_under_its_own_identity(nats: SecureNats, tmp_path: Path) -> None:
    """1. The ingest (password file) and a worker (nkey seed), both with a client certificate,
    start and get ready; the ingest created the layout, the worker its consumer.
    2. An order is accepted (200), the worker completes it, the ingest shows it done; a keyed
    order's repeat is answered from its Idempotency-Key record.
    3. A second order is cancelled by the CLI (its own nkey) while it runs: the worker answers
    the CLI's control request.
    4. An undecodable order is dead-lettered by the worker; the CLI lists, shows and replays it.
    5. The CLI discards a dead letter, reads the status, an order's timeline, the recent orders
    and the consumers.
    6. It pauses the task type (status shows the reason) and resumes it.
    7. The server refused nothing: every subject they used is in their documented permissions."""
    ingest = Service("ingest", service_env(nats.url, **_env(nats, "ingest")), tmp_path / "ingest.log")
    # 12 s a job: the CLI's cancel (a process of its own) must reach the second order while it runs,
    # also on a loaded machine running the suite in parallel (at 5 s it once found it done)
    worker = Service("worker", service_env(nats.url, **_env(nats, "worker", WORK_S="12")), tmp_path / "w.log")
    cli_env = _env(nats, "cli")

    def orderflow(*args: str) -> str:
        result = cli(nats.url, *args, **cli_env)  # type: ignore[arg-type]  # settings, not timeout
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result.stdout

    def order(headers: dict[str, str] | None = None) -> str:
        body = b'{"product_id":1,"count":2,"username":"m"}'
        status, _, answer = http("POST", ingest.url + "/orders", body, headers or {})
        assert status == 200, answer
        return str(json.loads(answer)["order_id"])

    def status_of(order_id: str) -> str:
        code, _, shown = ingest.get(f"/orders/{order_id}")
        return str(json.loads(shown)["status"]) if code == 200 else str(code)

    try:
        ingest.start().wait_ready(30)
        worker.start().wait_ready(30)
        done, cancelled = order(), order()
        # An Idempotency-Key: its record written, then read back by the repeat (KV ORDER_KEYS).
        assert order({"Idempotency-Key": "k-1"}) == order({"Idempotency-Key": "k-1"})
        wait_until(lambda: status_of(cancelled) == "processing", 30, "the second order to run")
        orderflow("cancel", cancelled)
        wait_until(lambda: status_of(done) == "done", 30, "the first order to be done")
        assert status_of(cancelled) == "cancelled"

        undecodable, discarded = "0" * 32, "1" * 32
        for dead in (undecodable, discarded):
            asyncio.run(_publish_as_cli(nats, f"{contract.SUBJECT_PREFIX}default.{dead}", b"not json"))
        wait_until(lambda: discarded in orderflow("dlq", "list"), 30, "the dead letters")
        assert undecodable in orderflow("dlq", "show", undecodable)
        orderflow("dlq", "replay", undecodable)
        assert f"discarded {discarded}" in orderflow("dlq", "discard", discarded, "--yes")
        assert json.loads(orderflow("status", done))["status"] == "done"
        assert "run(s)" in orderflow("status", done, "--timeline")  # ORDER_RUNS read
        assert done in orderflow("recent", "--status", "done")
        orderflow("consumers")
        # 6. Pause and resume (the consumer's pause API, the reason in KV ORDER_PAUSES, made by
        # the first pause), and status showing it.
        assert "paused default" in orderflow("pause", "default", "--reason", "audit")
        assert "audit" in orderflow("status")
        assert "resumed default" in orderflow("resume", "default")
    finally:
        worker.stop()
        ingest.stop()
    assert nats.violations() == []


async def _publish_as_cli(nats: SecureNats, subject: str, data: bytes) -> None:
    env = {f"ORDERFLOW_{k}": v for k, v in _env(nats, "cli", NATS_URL=nats.url).items()}
    nc = await broker.connect(load_settings("cli", env), "orderflow-cli-test")
    try:
        await nc.jetstream(timeout=5.0).publish(subject, data)
    finally:
        await nc.close()


def test_the_console_works_under_its_own_identity(nats: SecureNats, tmp_path: Path) -> None:
    """The console under its own nkey (CONSOLE_PUBLIC_NKEY) beside a worker, an admin's key in hand:
    1. every page answers 200 with what NATS holds: the overview (and one live update), an order
    with its runs, recent orders, long jobs, dead letters;
    2. every action works: pause a type (the consumer paused, the bucket of reasons made), cancel
    an order queued meanwhile, resume; replay one dead letter and discard another;
    3. the server refused the console nothing (its own refusals: the next test)."""
    worker = Service(
        "worker", service_env(nats.url, **_env(nats, "worker", WORK_S="0.2")), tmp_path / "w.log"
    )
    admin = new_key()
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"keys": [entry("ops", [ADMIN], admin)]}))
    port = kit.free_port()
    console = kit.Process(
        [*kit.python_module("orderflow_tools.cli"), "console", "--port", str(port)],
        service_env(nats.url, **_env(nats, "console", API_KEYS_FILE=str(keys))),
        tmp_path / "console.log",
        cwd=REPO,
    )
    cli_env = _env(nats, "cli")
    earlier = len(nats.violations("console"))  # another test's, on this module's server

    def status_of(order_id: str) -> str:
        result = cli(nats.url, "status", order_id, **cli_env)  # type: ignore[arg-type]  # settings
        return str(json.loads(result.stdout)["status"]) if result.returncode == 0 else result.stderr

    def publish(order_id: str, data: bytes | None = None) -> None:
        order = contract.Order(order_id, 1, 1, "m", time.time())
        subject = f"{contract.SUBJECT_PREFIX}default.{order_id}"
        asyncio.run(_publish_as_cli(nats, subject, data or contract.encode(order)))

    try:
        worker.start().wait_ready(30)
        done, queued, replayed, discarded = (f"{c}" * 32 for c in "abcd")
        publish(done)
        for dead in (replayed, discarded):
            publish(dead, b"not json")
        base = f"http://127.0.0.1:{port}"
        console.start().wait_http(base + "/signin", 20)
        with httpx.Client(base_url=base, timeout=10, headers={"Authorization": f"Bearer {admin}"}) as h:

            def act(action: str, **form: str) -> str:
                answer = h.post(f"/act/{action}", data=form)
                assert answer.status_code == 303, (action, answer.text)
                return unquote(answer.headers["location"])

            wait_until(lambda: status_of(done) == "done", 30, "the order to be done")
            wait_until(lambda: discarded in h.get("/dead").text, 30, "the dead letters on /dead")
            overview = h.get("/")
            assert overview.status_code == 200 and "workers" in overview.text
            with h.stream("GET", "/events") as live:
                assert next(live.iter_lines()).startswith("data: {")
            order_page = h.get(f"/orders/{done}")
            assert order_page.status_code == 200 and "done" in order_page.text
            assert done in h.get("/recent?status=done").text
            assert h.get("/long").status_code == 200

            assert "paused default" in act("pause", target="default", reason="audit")
            assert "audit" in h.get("/").text
            publish(queued)
            assert "cancel: 1 of 1" in act("cancel", target=queued)
            assert "resumed default" in act("resume", target="default")
            assert "replay: 1 of 1" in act("replay", target=replayed, confirm="yes")
            assert "discard: 1 of 1" in act("discard", target=discarded, confirm="yes")
            assert status_of(queued) == "cancelled"
        assert admin not in (tmp_path / "console.log").read_text()
    finally:
        console.kill()
        worker.stop()
    assert nats.violations("console")[earlier:] == []


def test_the_ingest_identity_cannot_consume_purge_or_delete(
    nats: SecureNats, caplog: pytest.LogCaptureFixture
) -> None:
    """Under the ingest's identity every consuming or destroying JetStream call is refused by
    the server (a permissions violation, no answer), and ORDERS is still there afterwards. The
    service logs each refused subject once, at error (a missing permission is not a timeout)."""
    env = {
        f"ORDERFLOW_{k}": v for k, v in _env(nats, "ingest", NATS_URL=nats.url, HTTP_HOST="127.0.0.1").items()
    }
    settings = load_settings("ingest", env)
    refused = [
        f"$JS.API.CONSUMER.CREATE.{contract.STREAM}.thief",
        f"$JS.API.CONSUMER.MSG.NEXT.{contract.STREAM}.workers",
        f"$JS.API.STREAM.PURGE.{contract.STREAM}",
        f"$JS.API.STREAM.DELETE.{contract.STREAM}",
        f"$JS.API.STREAM.UPDATE.{contract.STREAM}",
        f"$JS.API.STREAM.MSG.DELETE.{contract.STREAM}",
    ]

    async def attempt() -> tuple[list[str], int]:
        nc = await broker.connect(settings, "ingest-test")
        try:
            js = nc.jetstream(timeout=2.0)
            await streams.ensure_layout(js, settings, may_change=False)
            answered = await _answered(nc, refused)
            info = await js.stream_info(contract.STREAM)
            return answered, info.config.num_replicas or 0
        finally:
            await nc.close()

    answered, replicas = asyncio.run(attempt())
    assert answered == []
    assert replicas == 1  # still there, unchanged
    seen = "\n".join(nats.violations())
    for subject in refused:
        assert f'Publish Violation - Subject "{subject}"' in seen
    assert 'Subscription Violation - Subject "orders.>"' in seen
    logged = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    purge = f'NATS refused it: nats: permissions violation for publish to "$JS.API.STREAM.PURGE.{contract.STREAM}"'
    assert sum(m.lower().startswith(purge.lower()) for m in logged) == 1, logged


async def _answered(nc: Any, subjects: list[str]) -> list[str]:
    """Which of these requests got an answer. A refused publish gets none: each request times
    out (all at once). Then a plain subscription on the orders (reading them off the wire)."""
    replies = await asyncio.gather(
        *(nc.request(subject, b"{}", timeout=1.0) for subject in subjects), return_exceptions=True
    )
    await nc.subscribe("orders.>")
    await nc.flush()
    await asyncio.sleep(0.2)
    return [s for s, r in zip(subjects, replies, strict=True) if not isinstance(r, TimeoutError)]


# What the operator's identities may never do: consume or take over the workers' consumers,
# destroy a stream or a message, or write what only a worker or the ingest writes.
NEVER = [
    f"$JS.API.CONSUMER.MSG.NEXT.{contract.STREAM}.workers",
    f"$JS.API.CONSUMER.CREATE.{contract.STREAM}.thief",
    f"$JS.API.STREAM.PURGE.{contract.STREAM}",
    f"$JS.API.STREAM.DELETE.{contract.STREAM}",
    f"$JS.API.STREAM.UPDATE.{contract.STREAM}",
    f"$JS.API.STREAM.MSG.DELETE.{contract.STREAM}",
    f"$JS.API.STREAM.PURGE.{contract.RUNS_STREAM}",
    f"{contract.RUNS_PREFIX}forged",
    f"$KV.{contract.WORKERS_BUCKET}.forged-pod",
    "$KV.ORDER_KEYS.forged",
]


@pytest.mark.parametrize(
    ("service", "refused"),
    [
        ("cli", NEVER),
        # The console also may not delete a consumer or touch the layout (the CLI may).
        (
            "console",
            [
                *NEVER,
                f"$JS.API.CONSUMER.DELETE.{contract.STREAM}.workers",
                f"$JS.API.STREAM.CREATE.{contract.STREAM}",
                "$JS.API.STREAM.CREATE.KV_ORDER_STATUS",
            ],
        ),
    ],
)
def test_the_operator_identities_cannot_consume_destroy_or_forge(
    nats: SecureNats, service: str, refused: list[str]
) -> None:
    """Under the CLI's and the console's identities every request above is refused by the server
    (a permissions violation, no answer) and so is reading the orders off the wire."""
    env = {f"ORDERFLOW_{k}": v for k, v in _env(nats, service, NATS_URL=nats.url).items()}

    async def attempt() -> list[str]:
        nc = await broker.connect(load_settings("cli", env), f"{service}-test")
        try:
            return await _answered(nc, refused)
        finally:
            await nc.close()

    assert asyncio.run(attempt()) == []
    seen = "\n".join(nats.violations(service))
    for subject in refused:
        assert f'Publish Violation - Subject "{subject}"' in seen
    assert 'Subscription Violation - Subject "orders.>"' in seen


def test_a_refused_connection_stops_a_worker_at_start_with_exit_2_and_the_reason(
    nats: SecureNats, tmp_path: Path
) -> None:
    """Three workers at once, each refused for another reason: a CA that did not sign the
    server's certificate, a user the server does not know (a removed one), no client
    certificate. Each exits 2 within seconds, naming the server and the reason."""
    new_seed(tmp_path / "unknown.nk")  # a valid seed the server does not know
    cases = {
        "certificate is not trusted": {"NATS_CA_FILE": nats.pki.path("other-ca.crt")},
        "refused our credentials": {"NATS_NKEY_SEED_FILE": str(tmp_path / "unknown.nk")},
        "TLS handshake refused": {"NATS_CERT_FILE": "", "NATS_KEY_FILE": ""},
    }
    workers = {
        reason: Service(
            "worker", service_env(nats.url, **_env(nats, "worker", **over)), tmp_path / f"{i}.log"
        )
        for i, (reason, over) in enumerate(cases.items())
    }
    started = time.monotonic()
    try:
        for w in workers.values():
            w.start()
        codes = {reason: w.wait(20) for reason, w in workers.items()}
    finally:
        for w in workers.values():
            w.stop()
    took_s = time.monotonic() - started
    for reason, w in workers.items():
        assert codes[reason] == 2, w.logs()[-2000:]
        assert reason in w.logs() and f"NATS at {nats.url} refused the connection" in w.logs()
    assert took_s < 15, f"exit 2 after {took_s:.1f}s"


def test_the_ingest_and_the_cli_exit_2_on_bad_credentials_and_print_no_secret(
    nats: SecureNats, tmp_path: Path
) -> None:
    """A password in the URL (discouraged) that the server refuses: the ingest and the CLI exit 2
    naming the server, the user and the reason, never the password."""
    secret = "hunter2-not-the-password"
    url = nats.url.replace("tls://", f"tls://orderflow-ingest:{secret}@")
    env = {**nats.tls(), "SHUTDOWN_DELAY_S": "5"}
    ingest = Service("ingest", service_env(url, **env), tmp_path / "ingest.log")
    ingest.start()
    try:
        assert ingest.wait(20) == 2, ingest.logs()[-2000:]
    finally:
        ingest.stop()
    result = cli(url, "status", **nats.tls())  # type: ignore[arg-type]  # settings, not timeout
    assert result.returncode == 2, result.stderr
    for text in (ingest.logs(), result.stderr):
        assert "refused our credentials" in text and "orderflow-ingest:***@127.0.0.1" in text
        assert secret not in text


def test_with_a_ca_set_a_server_without_tls_is_refused_before_a_secret_is_sent(tmp_path: Path) -> None:
    """nats-py upgrades to TLS only when the server asks for it, whatever the URL's scheme: with
    ORDERFLOW_NATS_CA_FILE set, a server that does not (misconfigured, or a downgrade on the way)
    is refused at once. 1. With a password: it is never sent (the password is a wrong one, and the
    server logs no authorization violation). 2. Without a secret: refused once connected."""
    pki = Pki.make(tmp_path / "pki")
    (tmp_path / "pw").write_text("a-wrong-password\n")
    tls = {"ORDERFLOW_NATS_CA_FILE": pki.path("ca.crt")}
    for auth, identity in (
        (
            ["--user", "orderflow", "--pass", "right"],
            {"ORDERFLOW_NATS_USER": "orderflow", "ORDERFLOW_NATS_PASSWORD_FILE": str(tmp_path / "pw")},
        ),
        ([], {}),
    ):
        log = tmp_path / f"plain-{len(auth)}.log"
        plain = kit.NatsServer(
            tmp_path / "js", log, binary=find_binary("nats-server"), extra_args=auth
        ).start()
        try:
            env = {"ORDERFLOW_NATS_URL": f"tls://127.0.0.1:{plain.port}", **tls, **identity}
            with pytest.raises(natsauth.NatsAccessError, match="does not offer TLS"):
                asyncio.run(broker.connect(load_settings("worker", env), "worker-test"))
        finally:
            plain.stop()
        assert "Authorization Violation" not in log.read_text()


def test_a_creds_file_connects_and_a_revoked_users_stops_the_worker_with_exit_2(tmp_path: Path) -> None:
    """JWT auth (operator mode): a worker with a user's creds file gets ready; one with the creds
    of a user the account revoked (issued the same way) exits 2 with the reason, promptly."""
    nats = JwtNats.start(tmp_path / "jwt")
    workers = {
        name: Service(
            "worker", service_env(nats.server.url, NATS_CREDS_FILE=str(path)), tmp_path / f"{name}.log"
        )
        for name, path in nats.creds.items()
    }
    try:
        for w in workers.values():
            w.start()
        started = time.monotonic()
        assert workers["revoked"].wait(20) == 2, workers["revoked"].logs()[-2000:]
        took_s = time.monotonic() - started
        workers["user"].wait_ready(30)
    finally:
        for w in workers.values():
            w.stop()
        nats.server.stop()
    assert "refused our credentials" in workers["revoked"].logs()
    assert took_s < 15, f"exit 2 after {took_s:.1f}s"
