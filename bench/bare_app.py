"""The baseline for bench/ingest: a bare Starlette endpoint that only validates and answers, run
the same way as the ingest (one uvicorn process, uvloop, httptools). bench/raw_ingest.py validates
with the same two functions and publishes too."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from orderflow import contract, validation

_counter = iter(range(1 << 62))


def validate(body: bytes, order_id: str) -> contract.Order | list[contract.FieldError]:
    """The order, or the problems with it (the ingest's own validation)."""
    return validation.validate_order(body, order_id)


def invalid(errors: list[contract.FieldError]) -> Response:
    return Response(
        contract.encode({"result": "invalid", "errors": errors}), 400, media_type="application/json"
    )


async def post_order(request: Request) -> Response:
    order = validate(await request.body(), f"bare-{next(_counter)}")
    if isinstance(order, list):
        return invalid(order)
    return Response(
        contract.encode({"result": "created", "order_id": order.order_id}), 200, media_type="application/json"
    )


app = Starlette(routes=[Route("/orders", post_order, methods=["POST"])])
