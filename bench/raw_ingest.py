"""bench/e2e's raw pipeline, the ingest half: a bare Starlette endpoint that validates the body as the
ingest does (bench/bare_app.py's validation), publishes the order to JetStream on its per-order
subject and awaits the PubAck (200 only once stored, 503 if not), nothing else: no Nats-Msg-Id, no
metrics, no receipt deadline, no connection cap, no Idempotency-Key. Served the way the ingest is
(uvicorn, uvloop, httptools, no access log); P of these share one port through SO_REUSEPORT, as
the ingest's P processes do. GET /readyz answers 200 once connected to NATS.

    python -m bench.raw_ingest PORT NATS_URL
"""

from __future__ import annotations

import secrets
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import nats
import uvicorn
from nats.aio.client import Client
from nats.js import JetStreamContext
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench.bare_app import invalid, validate
from orderflow import contract

_prefix = secrets.token_hex(6)  # P processes: ids must not collide across them
_counter = iter(range(1 << 62))
_js: JetStreamContext | None = None
_READY = Response(b"ok", 200)


async def post_order(request: Request) -> Response:
    order = validate(await request.body(), f"raw-{_prefix}-{next(_counter)}")
    if isinstance(order, list):
        return invalid(order)
    assert _js is not None
    try:
        await _js.publish(
            contract.order_subject("default", order.order_id), contract.encode(order), timeout=5
        )
    except Exception:  # not stored: the client is told to retry, as the ingest does
        return Response(b'{"result":"unavailable"}', 503, media_type="application/json")
    return Response(
        contract.encode({"result": "created", "order_id": order.order_id}), 200, media_type="application/json"
    )


async def readyz(request: Request) -> Response:
    return _READY if _js is not None else Response(b"connecting", 503)


def app_for(nats_url: str) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        global _js
        nc: Client = await nats.connect(nats_url)
        _js = nc.jetstream()
        try:
            yield
        finally:
            _js = None
            await nc.drain()

    return Starlette(
        routes=[Route("/orders", post_order, methods=["POST"]), Route("/readyz", readyz)], lifespan=lifespan
    )


def main(port: int, nats_url: str) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    config = uvicorn.Config(
        app_for(nats_url),
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        proxy_headers=False,
        server_header=False,
        date_header=False,
    )
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
