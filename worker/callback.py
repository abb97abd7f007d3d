"""Signed callbacks (issue #22, item 3): when an order becomes final (done, dead, cancelled, or
failed as poison; not a failed attempt that will be retried), its view is POSTed to the order's
`callback_url`, signed per the Standard Webhooks spec.

The delivery is a job of its own on the same machinery: the settler publishes it (confirmed, as
the order `<id>.callback` of the order's task type, Nats-Msg-Id the same) *before* it writes the
order's final status, so no crash can leave a final order without its callback job, and a settle
step repeated after a crash publishes it once within the duplicate window. The job is delivered
by this module's built-in handler in whichever worker pulls it: a SIGKILL or a scale-down of one
worker leaves it to another, a receiver's error is a failed attempt retried with backoff, and
ORDERFLOW_MAX_DELIVER failed attempts dead-letter it like any order. A URL or an address the
rules refuse, or no secret, is poison: dead-lettered at once, replayable once fixed.

Each attempt is signed afresh (`webhook-timestamp` is the attempt's time; receivers refuse stale
ones): `webhook-signature: v1,<base64 HMAC-SHA256 of "<webhook-id>.<timestamp>.<body>">` with the
secret's bytes (`whsec_<base64>`, ORDERFLOW_CALLBACK_SECRET_FILE). The worker resolves the host,
checks every address (orderflow/callbackurl.py), and connects to the checked address itself
(TLS still verifies the host name), so DNS rebinding cannot swap it. Redirects are not followed."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from orderflow import callbackurl, contract
from orderflow.config import Settings
from orderflow.envvalues import read_webhook_secret
from worker.handlers import Job, PoisonError
from worker.payload import PayloadCodec

_MAX_ANSWER_LINE = 1024


class CallbackPayload(msgspec.Struct, frozen=True, omit_defaults=True):
    url: str
    body: msgspec.Raw
    secret: str | None = None  # the name of the API key's webhook secret; none: the default one


class _Codec(PayloadCodec):
    _decoder = msgspec.json.Decoder(CallbackPayload)

    def decode(self, data: bytes) -> tuple[contract.Order | contract.TypedOrder, Any]:
        order = contract.decode_typed_order(data)
        return order, self._decoder.decode(order.payload)


CODEC = _Codec()


def view(record: contract.StatusRecord) -> bytes:
    """The body: the order's final client view, small and bounded (a result is at most 64 KiB, an
    error 500 characters)."""
    data: dict[str, Any] = {
        "id": record.order_id,
        "status": record.status,
        "task_type": record.task_type,
        "runs": record.runs,
        "failed_attempts": record.attempts,
        "first_started_at": record.first_started_at,
        "finished_at": record.finished_at,
        "run_s": record.run_s,
    }
    if len(record.result):
        data["result"] = record.result
    if record.error is not None:
        data["error"] = record.error
    return contract.encode(
        {"type": f"order.{record.status}", "timestamp": record.finished_at or time.time(), "data": data}
    )


def job_message(
    task_type: str,
    url: str,
    record: contract.StatusRecord,
    secret: str | None = None,
    client: str | None = None,
) -> tuple[str, bytes, dict[str, str]]:
    """(subject, data, headers) of the job that delivers `record`'s callback; it belongs to the
    order's API key (`client`), so that key may read `GET /orders/<id>.callback`."""
    job_id = contract.callback_id(record.order_id)
    payload = msgspec.Raw(contract.encode(CallbackPayload(url, msgspec.Raw(view(record)), secret)))
    data = contract.encode(contract.TypedOrder(job_id, payload, time.time()))
    headers = {contract.H_MSG_ID: job_id, contract.H_CALLBACK_FOR: record.order_id}
    if client is not None:
        headers[contract.H_CLIENT] = client
    return contract.order_subject(task_type, job_id), data, headers


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


# (host, port) -> the addresses it resolves to; (target, address, headers, body, timeout_s) -> status
Resolve = Callable[[str, int], Awaitable[list[str]]]
Send = Callable[[callbackurl.Target, str, dict[str, str], bytes, float], Awaitable[int]]


async def resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def send(
    target: callbackurl.Target, address: str, headers: dict[str, str], body: bytes, timeout_s: float
) -> int:
    """One HTTP/1.1 POST to `address` (the checked one), Host and TLS name the host; the status."""
    tls = ssl.create_default_context() if target.scheme == "https" else None
    host_header = target.host if ":" not in target.host else f"[{target.host}]"
    head = [f"POST {target.path} HTTP/1.1", f"Host: {host_header}:{target.port}", "Connection: close"]
    head += [f"{k}: {v}" for k, v in headers.items()] + [f"Content-Length: {len(body)}", "", ""]

    async def exchange() -> int:
        reader, writer = await asyncio.open_connection(
            address, target.port, ssl=tls, server_hostname=target.host if tls else None
        )
        try:
            writer.write("\r\n".join(head).encode("ascii") + body)
            await writer.drain()
            line = await reader.readuntil(b"\n")
        finally:
            writer.close()
        parts = line[:_MAX_ANSWER_LINE].split()
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
            raise ConnectionError("the receiver's answer is not HTTP")
        return int(parts[1])

    return await asyncio.wait_for(exchange(), timeout_s)


class CallbackError(Exception):
    """A failed attempt: retried with backoff (a receiver error, no answer, DNS not answering)."""


class Deliverer:
    """The built-in handler of callback jobs."""

    def __init__(self, settings: Settings, resolver: Resolve = resolve, sender: Send = send) -> None:
        self._hosts = settings.callback_hosts
        self._http = settings.callback_allow_http
        self._private = settings.callback_allow_private
        self._timeout_s = settings.callback_timeout_s
        self._secret = settings.callback_secret
        self._secrets_dir = settings.callback_secrets_dir
        self._resolve = resolver
        self._send = sender

    async def __call__(self, job: Job) -> Any:
        payload: CallbackPayload = job.payload
        try:
            target = callbackurl.parse(payload.url, self._http, self._hosts)
        except callbackurl.Refused as exc:
            raise PoisonError(f"callback_url {exc}") from None
        secret = self._secret_of(payload.secret)
        try:
            addresses = await asyncio.wait_for(self._resolve(target.host, target.port), self._timeout_s)
        except (OSError, TimeoutError) as exc:
            raise CallbackError(f"{target.host} did not resolve ({type(exc).__name__})") from None
        problems = [p for a in addresses if (p := callbackurl.address_problem(a, self._private))]
        if problems or not addresses:
            raise PoisonError(f"callback host {target.host} refused: {'; '.join(problems) or 'no address'}")
        body = bytes(payload.body)
        msg_id = job.order_id
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "orderflow-callbacks",
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(secret, msg_id, timestamp, body),
        }
        last: Exception | None = None
        for address in addresses:
            try:
                status = await self._send(target, address, headers, body, self._timeout_s)
            except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
                last = exc
                continue
            if 200 <= status < 300:
                return {"http_status": status}
            raise CallbackError(f"{target.host} answered {status}")
        raise CallbackError(f"{target.host} not reached ({type(last).__name__})")

    def _secret_of(self, name: str | None) -> str:
        """The default secret, or an API key's own: the file `name` in the secrets directory, read
        at each delivery (a rotated Secret takes effect without a restart)."""
        if name is None:
            if self._secret is None:
                raise PoisonError("no callback secret: ORDERFLOW_CALLBACK_SECRET_FILE is not set")
            return self._secret
        if self._secrets_dir is None or "/" in name or name.startswith("."):
            raise PoisonError(f"no webhook secret {name!r}: ORDERFLOW_CALLBACK_SECRETS_DIR is not set")
        try:
            return read_webhook_secret(os.path.join(self._secrets_dir, name))
        except ValueError as exc:
            raise PoisonError(f"webhook secret {name!r} {exc}") from None
