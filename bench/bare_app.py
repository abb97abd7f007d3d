"""The baseline for bench/ingest: a bare Starlette endpoint that only validates and answers, run
the same way as the ingest (one uvicorn process, uvloop, httptools)."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from orderflow import contract

_counter = iter(range(1 << 62))


async def post_order(request: Request) -> Response:
    body = await request.body()
    order = contract.validate_order(body, f"bare-{next(_counter)}")
    if isinstance(order, list):
        return Response(
            contract.encode({"result": "invalid", "errors": order}), 400, media_type="application/json"
        )
    return Response(
        contract.encode({"result": "created", "order_id": order.order_id}), 200, media_type="application/json"
    )


app = Starlette(routes=[Route("/orders", post_order, methods=["POST"])])
