"""Signed callbacks' rules in the unit layer (issue #22, item 3): the SSRF guard for each address
class and each URL rule, the settle step that publishes the callback job before the final status
(and only for a final one), and the built-in handler's signature (verified with the Standard
Webhooks reference package), retries and refusals, with a stand-in resolver and sender (named
so: no socket here; tests/worker/test_signed_callbacks.py has the real receiver)."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import msgspec
import pytest
import standardwebhooks
from standin import FakeMsg
from test_pipeline import Rig, noop

from ingest import callbacks as intake
from orderflow import auth, callbackurl, contract
from orderflow.envsettings import ConfigError, load_settings
from worker.callback import Deliverer, job_message, resolve
from worker.handlers import Job, PoisonError

SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
HOSTS = ("hooks.example.com", "*.example.org")


# --- the guard: addresses -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped: judged as the IPv4 address
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd12:3456::1", "private"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("169.254.169.254", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("100.100.100.200", "metadata"),
        ("100.64.0.1", "shared"),
        ("0.0.0.0", "not a unicast"),
        ("::", "not a unicast"),
        ("224.0.0.1", "not a unicast"),
        ("240.0.0.1", "private or reserved"),
        ("192.0.2.1", "private or reserved"),  # TEST-NET-1, documentation only
        ("not-an-ip", "not an IP"),
    ],
)
def test_the_guard_refuses_every_non_public_address_class(address: str, why: str) -> None:
    problem = callbackurl.address_problem(address, allow_private=False)
    assert problem is not None and why in problem


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_the_guard_passes_a_public_address(address: str) -> None:
    assert callbackurl.address_problem(address, allow_private=False) is None


def test_allowing_private_addresses_never_allows_metadata() -> None:
    for address in ("127.0.0.1", "::1", "10.0.0.1", "169.254.1.1"):
        assert callbackurl.address_problem(address, allow_private=True) is None
    for address in ("169.254.169.254", "::ffff:169.254.169.254", "fd00:ec2::254"):
        problem = callbackurl.address_problem(address, allow_private=True)
        assert problem is not None and "metadata" in problem


# --- the guard: URLs --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://hooks.example.com/x", "must be an https URL"),
        ("ftp://hooks.example.com/x", "must be an https URL"),
        ("https://evil.example.net/x", "host evil.example.net is not in the callback allow-list"),
        ("https://example.org/x", "not in the callback allow-list"),  # *.example.org: names below it
        ("https://hooks.example.com.evil.net/", "not in the callback allow-list"),
        ("https://user:pw@hooks.example.com/", "must not carry credentials"),
        ("https://hooks.example.com/#frag", "must not carry a fragment"),
        ("https://hooks.example.com/" + "a" * 2048, "at most 2048 characters"),
        ("https://hooks.example.com/a b", "without spaces or control characters"),
        ("https://hooks.example.com:99999/", "not a valid URL"),
        ("https:///nohost", "must name a host"),
        ("", "non-empty string"),
        (42, "non-empty string"),
    ],
)
def test_a_url_the_rules_refuse_says_why(url: Any, why: str) -> None:
    with pytest.raises(callbackurl.Refused, match=why):
        callbackurl.parse(url, allow_http=False, hosts=HOSTS)


def test_allowed_urls_are_taken_apart_and_an_empty_allow_list_refuses_all() -> None:
    t = callbackurl.parse("https://A.B.Example.ORG:8443/hook?x=1", False, HOSTS)
    assert (t.scheme, t.host, t.port, t.path) == ("https", "a.b.example.org", 8443, "/hook?x=1")
    t = callbackurl.parse("http://hooks.example.com", True, HOSTS)
    assert (t.port, t.path) == (80, "/")
    with pytest.raises(callbackurl.Refused, match="callbacks are not enabled"):
        callbackurl.parse("https://hooks.example.com/", False, ())


def test_the_intake_takes_the_field_out_and_names_it_when_refused() -> None:
    s = load_settings(
        "ingest", {"ORDERFLOW_CALLBACK_HOSTS": "hooks.example.com", "ORDERFLOW_HTTP_HOST": "127.0.0.1"}
    )
    body = b'{"product_id":1,"count":2,"username":"m","callback_url":"https://hooks.example.com/h"}'
    taken = intake.take(body, s)
    assert not isinstance(taken, contract.FieldError)
    rest, url = taken
    assert url == "https://hooks.example.com/h" and b"callback_url" not in rest
    assert intake.take(b'{"product_id":1}', s) == (b'{"product_id":1}', None)  # not decoded twice
    refused = intake.take(b'{"callback_url":"http://hooks.example.com/h"}', s)
    assert refused == contract.FieldError("callback_url", "must be an https URL")


def test_the_secret_comes_from_a_file_and_a_bad_one_is_named_without_its_content(tmp_path: Any) -> None:
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.write_text(SECRET + "\n")
    bad.write_text("whsec_c2VjcmV0LXRvby1zaG9ydA==")
    s = load_settings("worker", {"ORDERFLOW_CALLBACK_SECRET_FILE": str(good)})
    assert s.callback_secret == SECRET and SECRET not in repr(s)
    with pytest.raises(ConfigError) as err:
        load_settings("worker", {"ORDERFLOW_CALLBACK_SECRET_FILE": str(bad)})
    assert "CALLBACK_SECRET_FILE" in str(err.value) and "c2VjcmV0" not in str(err.value)


# --- the settle step ----------------------------------------------------------------------------
def order_data(order_id: str, url: str | None) -> bytes:
    return contract.encode(contract.Order(order_id, 1, 2, "m", 1.0, callback_url=url))


def settle_with(handler: Any, url: str | None, headers: dict[str, str] | None = None, **env: Any) -> Rig:
    async def main() -> Rig:
        rig = Rig(handler, **env)
        rig.pool.start(FakeMsg("o-1", data=order_data("o-1", url), headers=headers))
        await rig.until_idle()
        return rig

    return asyncio.run(main())


def test_a_done_order_publishes_its_callback_job_before_its_final_status() -> None:
    async def handler(job: Job) -> dict[str, int]:
        return {"total": 7}

    rig = settle_with(handler, "https://hooks.example.com/h")
    assert rig.t.ops() == ["publish", "put:done", "ack"]
    [(subject, data, headers)] = rig.t.published
    assert subject == "orders.default.o-1.callback"
    assert headers == {contract.H_MSG_ID: "o-1.callback", contract.H_CALLBACK_FOR: "o-1"}
    job = contract.decode_typed_order(data)
    assert job.order_id == "o-1.callback" and job.callback_url is None  # no callback of a callback
    payload = msgspec.json.decode(job.payload)
    assert payload["url"] == "https://hooks.example.com/h"
    body = payload["body"]
    assert body["type"] == "order.done"
    assert body["data"]["id"] == "o-1" and body["data"]["result"] == {"total": 7}
    assert (body["data"]["runs"], body["data"]["failed_attempts"]) == (1, 0)


def test_a_failed_attempt_that_will_be_retried_is_not_final_and_publishes_nothing() -> None:
    async def handler(job: Job) -> None:
        raise RuntimeError("boom")

    rig = settle_with(handler, "https://hooks.example.com/h")
    assert rig.t.published == [] and rig.t.records["o-1"].status == "queued"


@pytest.mark.parametrize(
    ("error", "status", "max_deliver"),
    [(PoisonError("never"), "failed", 5), (RuntimeError("boom"), "dead", 1)],
)
def test_a_dead_or_poison_order_publishes_its_callback_after_the_dlq_copy(
    error: Exception, status: str, max_deliver: int
) -> None:
    async def handler(job: Job) -> None:
        raise error

    rig = settle_with(handler, "https://hooks.example.com/h", max_deliver=max_deliver)
    dlq, cb = rig.t.published
    assert dlq[0].startswith(contract.DLQ_PREFIX) and cb[0] == "orders.default.o-1.callback"
    body = msgspec.json.decode(contract.decode_typed_order(cb[1]).payload)["body"]
    assert body["type"] == f"order.{status}" and "error" in body["data"]
    assert rig.t.ops("o-1")[-2:] == [f"put:{status}", "term"]


def test_a_cancelled_order_publishes_its_callback_and_an_order_without_url_none() -> None:
    async def main() -> tuple[Rig, Rig]:
        cancelled = Rig(noop, cancelled=frozenset({"o-1"}))
        cancelled.pool.start(FakeMsg("o-1", data=order_data("o-1", "https://hooks.example.com/h")))
        await cancelled.until_idle()
        plain = Rig(noop)
        plain.pool.start(FakeMsg("o-1", data=order_data("o-1", None)))
        await plain.until_idle()
        return cancelled, plain

    cancelled, plain = asyncio.run(main())
    assert cancelled.t.ops()[:3] == ["publish", "put:cancelled", "term"]
    assert plain.t.published == [] and plain.t.records["o-1"].status == "done"


# --- the built-in handler ------------------------------------------------------------------------
class StandInNet:
    """A stand-in resolver and sender: the answers given, the requests recorded. With
    `real_resolver` it asks the worker's own resolver (getaddrinfo) instead."""

    def __init__(self, addresses: list[str], answers: list[int], real_resolver: bool = False) -> None:
        self.addresses = addresses
        self.answers = answers
        self.real_resolver = real_resolver
        self.sent: list[tuple[str, dict[str, str], bytes]] = []

    async def resolve(self, host: str, port: int) -> list[str]:
        return await resolve(host, port) if self.real_resolver else self.addresses

    async def send(self, target: Any, address: str, headers: dict[str, str], body: bytes, t: float) -> int:
        self.sent.append((address, headers, body))
        return self.answers.pop(0)


def callback_job(url: str = "https://hooks.example.com/h") -> FakeMsg:
    record = contract.StatusRecord("o-1", "done", finished_at=5.0, task_type="default")
    _, data, headers = job_message("default", url, record)
    return FakeMsg("o-1.callback", data=data, headers=headers)


def deliver_with(net: StandInNet, msg: FakeMsg, **env: str) -> Rig:
    base = {"ORDERFLOW_CALLBACK_HOSTS": "hooks.example.com", **env}
    s = load_settings("worker", base)
    deliverer = Deliverer(s, net.resolve, net.send)

    async def main() -> Rig:
        rig = Rig(noop, deliver=deliverer)
        rig.pool.start(msg)
        await rig.until_idle()
        return rig

    return asyncio.run(main())


@pytest.fixture
def secret_file(tmp_path: Any) -> str:
    path = tmp_path / "secret"
    path.write_text(SECRET)
    return str(path)


def test_the_callback_job_belongs_to_the_orders_api_key() -> None:
    headers = {contract.H_CLIENT: "shop"}
    rig = settle_with(noop, "https://hooks.example.com/h", headers=headers)
    [(_, data, job_headers)] = rig.t.published
    assert job_headers[contract.H_CLIENT] == "shop"
    msg = FakeMsg("o-1.callback", data=data, headers=job_headers)
    net = StandInNet(["93.184.216.34"], [200])
    assert deliver_with(net, msg).t.records["o-1.callback"].client == "shop"


def test_a_delivery_is_signed_per_standard_webhooks_and_sent_to_the_checked_address(secret_file: str) -> None:
    net = StandInNet(["93.184.216.34"], [204])
    rig = deliver_with(net, callback_job(), ORDERFLOW_CALLBACK_SECRET_FILE=secret_file)
    [(address, headers, body)] = net.sent
    assert address == "93.184.216.34"
    verified = standardwebhooks.Webhook(SECRET).verify(body, headers)
    assert verified["type"] == "order.done" and verified["data"]["id"] == "o-1"
    assert headers["webhook-id"] == "o-1.callback"
    record = rig.t.records["o-1.callback"]
    assert record.status == "done" and msgspec.json.decode(record.result) == {"http_status": 204}
    assert rig.t.published == []  # a callback job has no callback of its own
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook("whsec_" + base64.b64encode(b"x" * 32).decode()).verify(body, headers)


def test_a_receiver_error_is_a_failed_attempt_retried_with_backoff(secret_file: str) -> None:
    net = StandInNet(["93.184.216.34"], [500])
    rig = deliver_with(net, callback_job(), ORDERFLOW_CALLBACK_SECRET_FILE=secret_file)
    record = rig.t.records["o-1.callback"]
    assert record.status == "queued" and record.attempts == 1
    assert record.error == "CallbackError: hooks.example.com answered 500"
    assert rig.t.ops("o-1.callback")[-1] == "nak"


@pytest.mark.parametrize(
    ("addresses", "env", "why"),
    [
        (["93.184.216.34", "10.0.0.7"], {}, "10.0.0.7 is a private"),  # one bad answer refuses all
        (["127.0.0.1"], {}, "loopback"),
        (["169.254.169.254"], {"ORDERFLOW_CALLBACK_ALLOW_PRIVATE": "1"}, "metadata"),
    ],
)
def test_a_host_resolving_to_a_refused_address_is_never_called(
    secret_file: str, addresses: list[str], env: dict[str, str], why: str
) -> None:
    net = StandInNet(addresses, [200])
    rig = deliver_with(net, callback_job(), ORDERFLOW_CALLBACK_SECRET_FILE=secret_file, **env)
    assert net.sent == []
    record = rig.t.records["o-1.callback"]
    assert record.status == "failed" and record.error is not None and why in record.error
    assert rig.t.published[0][0].startswith(contract.DLQ_PREFIX)  # replayable


def test_the_worker_s_own_resolver_s_answer_is_checked_too(secret_file: str) -> None:
    """`localhost`, on the allow-list, through the worker's real resolver (getaddrinfo, not the
    stand-in): it resolves to loopback, so nothing is sent, and the job is poison (replayable)."""
    net = StandInNet([], [200], real_resolver=True)
    msg = callback_job("https://localhost:8443/hook")
    rig = deliver_with(
        net, msg, ORDERFLOW_CALLBACK_HOSTS="localhost", ORDERFLOW_CALLBACK_SECRET_FILE=secret_file
    )
    assert net.sent == []
    record = rig.t.records["o-1.callback"]
    assert record.status == "failed" and record.error is not None and "loopback" in record.error
    assert rig.t.published[0][0].startswith(contract.DLQ_PREFIX)


def test_a_url_no_longer_allowed_or_no_secret_is_poison_and_the_error_holds_no_secret(
    secret_file: str,
) -> None:
    net = StandInNet(["93.184.216.34"], [200])
    rig = deliver_with(
        net, callback_job("https://other.example.com/h?token=abc"), ORDERFLOW_CALLBACK_SECRET_FILE=secret_file
    )
    error = rig.t.records["o-1.callback"].error
    assert net.sent == [] and error is not None and "not in the callback allow-list" in error
    assert "token=abc" not in error
    rig = deliver_with(net, callback_job())
    error = rig.t.records["o-1.callback"].error
    assert error is not None and "no callback secret" in error and SECRET not in error


# --- an API key's own callback and secret ------------------------------------------------------
def test_a_key_entry_may_carry_a_default_callback_url_and_its_secret_name() -> None:
    key = auth.new_key()
    entry = {**auth.entry("shop", [auth.WRITE], key), "callback_url": "https://hooks.example.com/h"}
    keys = auth.parse_keys(json.dumps({"keys": [{**entry, "webhook_secret": "shop-hooks"}]}).encode(), "f")
    identity = keys.identify(f"Bearer {key}".encode())
    assert identity is not None
    assert (identity.callback_url, identity.webhook_secret) == ("https://hooks.example.com/h", "shop-hooks")
    bad = json.dumps({"keys": [{**entry, "webhook_secret": "../etc/passwd"}]}).encode()
    with pytest.raises(auth.KeyFileError, match="webhook_secret must name a file"):
        auth.parse_keys(bad, "f")


def test_a_named_secret_signs_with_that_file_and_a_missing_one_is_poison_naming_it(tmp_path: Any) -> None:
    own = "whsec_" + base64.b64encode(b"k" * 32).decode()
    (tmp_path / "shop-hooks").write_text(own)
    record = contract.StatusRecord("o-1", "done", finished_at=5.0, task_type="default")
    _, data, headers = job_message("default", "https://hooks.example.com/h", record, "shop-hooks")
    net = StandInNet(["93.184.216.34"], [200])
    deliver_with(
        net, FakeMsg("o-1.callback", data=data, headers=headers), ORDERFLOW_CALLBACK_SECRETS_DIR=str(tmp_path)
    )
    [(_, sent_headers, body)] = net.sent
    assert standardwebhooks.Webhook(own).verify(body, sent_headers)["data"]["id"] == "o-1"
    _, data, headers = job_message("default", "https://hooks.example.com/h", record, "gone")
    rig = deliver_with(
        net, FakeMsg("o-1.callback", data=data, headers=headers), ORDERFLOW_CALLBACK_SECRETS_DIR=str(tmp_path)
    )
    error = rig.t.records["o-1.callback"].error
    assert error is not None and "webhook secret 'gone' cannot be read" in error and len(net.sent) == 1
