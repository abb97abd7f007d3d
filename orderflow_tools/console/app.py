"""The console's Starlette app: server-rendered pages (Jinja2), every one readable without
JavaScript; the overview refreshes itself over Server-Sent Events where JavaScript runs.

Every page needs `orders:read`, every action (POST) `admin` and, from a cookie session, the CSRF
token (identity.py). Bodies are bounded (MAX_FORM_BYTES), order ids checked against the contract.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from orderflow import contract
from orderflow.auth import Identity, KeyFile
from orderflow.config import Settings
from orderflow_tools import natsconn, orders, pauses
from orderflow_tools.console import data, identity, recent
from orderflow_tools.console.live import Live
from orderflow_tools.natsconn import Session

MAX_FORM_BYTES = 16 * 1024
MAX_STREAMS = 16  # open Server-Sent Events streams at once

_env = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"), autoescape=select_autoescape()
)


class Console:
    def __init__(self, settings: Settings, keys: KeyFile, secure_cookie: bool) -> None:
        self.settings = settings
        self.keys = keys
        self.signer = identity.Signer()
        self.secure_cookie = secure_cookie
        self.s: Session | None = None
        # One poller for every open overview (live.py): NATS read once a second, however many watch.
        self.live = Live(lambda: data.overview(self.nats, settings, self.workers))
        self.workers = data.WorkersCache()

    # --- identity ---------------------------------------------------------------------------
    def who(self, request: Request) -> tuple[Identity | None, str | None]:
        """The identity and, for a cookie session, the cookie (the CSRF token's subject)."""
        bearer = request.headers.get("authorization")
        if bearer:
            return self.keys.keys.identify(bearer.encode()[:600]), None
        cookie = request.cookies.get(identity.COOKIE)
        return self.signer.identity(cookie), cookie

    def page(self, request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        who, cookie = self.who(request)
        html = _env.get_template(name).render(
            who=who, can_act=identity.can_act(who), csrf=self.signer.csrf(cookie) if cookie else "", **ctx
        )
        return HTMLResponse(html, status)

    async def form(self, request: Request) -> dict[str, str] | Response:
        """The POST's fields once it passed the checks, else the refusal."""
        size = int(request.headers.get("content-length") or 0)
        if size > MAX_FORM_BYTES:
            return Response("form too large\n", 413)
        body = await request.body()
        if len(body) > MAX_FORM_BYTES:
            return Response("form too large\n", 413)
        fields = {k: v[0] for k, v in parse_qs(body.decode(errors="replace")).items()}
        who, cookie = self.who(request)
        if who is None:
            return Response("sign in first\n", 401)
        if cookie is not None and not self.signer.csrf_ok(cookie, fields.get("csrf")):
            return Response("missing or wrong CSRF token: reload the page and try again\n", 403)
        if not identity.can_act(who):
            return Response(f"{who.name} may look, not act: acting needs the admin scope\n", 403)
        return fields

    def look(self, request: Request) -> Response | None:
        who, _ = self.who(request)
        if who is None:
            return RedirectResponse("/signin", 303)
        if not identity.can_look(who):
            return Response(f"{who.name} has no orders:read scope\n", 403)
        return None

    @property
    def nats(self) -> Session:
        assert self.s is not None
        return self.s


def build(console: Console) -> Starlette:
    c = console

    async def signin(request: Request) -> Response:
        if request.method == "GET":
            return c.page(request, "signin.html")
        body = await request.body()
        if len(body) > MAX_FORM_BYTES:
            return Response("form too large\n", 413)
        key = (parse_qs(body.decode(errors="replace")).get("key") or [""])[0]
        who = identity.from_key(c.keys, key)
        if who is None or not identity.can_look(who):
            return c.page(
                request, "signin.html", 401, error="That key is not known, or has no orders:read scope."
            )
        resp = RedirectResponse("/", 303)
        resp.set_cookie(
            identity.COOKIE,
            c.signer.session(who),
            max_age=identity.SESSION_S,
            httponly=True,
            samesite="strict",
            secure=c.secure_cookie,
        )
        return resp

    async def signout(request: Request) -> Response:
        resp = RedirectResponse("/signin", 303)
        resp.delete_cookie(identity.COOKIE)
        return resp

    async def overview(request: Request) -> Response:
        if (refused := c.look(request)) is not None:
            return refused
        # The rates read up to RECENT_RUNS run events: on the page, not on every live update.
        runs = await recent.recent_runs(c.nats)
        return c.page(
            request,
            "overview.html",
            o=await data.overview(c.nats, c.settings),
            rates=recent.rates(runs),
            window=recent.RECENT_RUNS,
            msg=request.query_params.get("msg", ""),
        )

    async def recent_orders(request: Request) -> Response:
        if (refused := c.look(request)) is not None:
            return refused
        try:
            q = recent.parse_query(request.query_params)
        except recent.QueryError as exc:
            return Response(f"{exc}\n", 400)
        view = await recent.runs_between(c.nats, q.range)
        rows, more = recent.orders(view.records, q.status, q.task_type, q.page)
        return c.page(
            request,
            "recent.html",
            rows=rows,
            more=more,
            q=q,
            links=urlencode(q.filters),
            before=q.range.before or "",
            older=view.older,
            statuses=recent.STATUSES,
            window=recent.RECENT_RUNS,
        )

    async def events(request: Request) -> Response:
        if (refused := c.look(request)) is not None:
            return refused
        if c.live.watchers >= MAX_STREAMS:
            return Response("too many live views open\n", 503, {"Retry-After": "5"})
        return StreamingResponse(
            c.live.events(request.is_disconnected),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store"},
        )

    async def order(request: Request) -> Response:
        if (refused := c.look(request)) is not None:
            return refused
        order_id = request.query_params.get("id") or request.path_params.get("order_id", "")
        if not order_id:
            return c.page(request, "order.html", record=None, runs=[], order_id="")
        if not contract.valid_order_id(order_id):
            return c.page(
                request, "order.html", 400, record=None, runs=[], order_id=order_id, error="not an order id"
            )
        record, runs = await data.order(c.nats, order_id)
        return c.page(
            request, "order.html", 200 if record else 404, record=record, runs=runs, order_id=order_id
        )

    async def dead(request: Request) -> Response:
        if (refused := c.look(request)) is not None:
            return refused
        task_type = request.query_params.get("type") or None
        if task_type and not pauses.TYPE_RE.match(task_type):
            return Response("bad type\n", 400)
        rows = await data.dead_letters(c.nats, task_type)
        return c.page(
            request,
            "dead.html",
            rows=rows,
            task_type=task_type or "",
            limit=data.MAX_DEAD,
            msg=request.query_params.get("msg", ""),
        )

    async def long(request: Request) -> Response:
        if (refused := c.look(request)) is not None:
            return refused
        jobs = await data.long_jobs(c.nats)
        return c.page(request, "long.html", jobs=jobs, window=data.RECENT_RUNS)

    async def act(request: Request) -> Response:
        fields = await c.form(request)
        if isinstance(fields, Response):
            return fields
        action = request.path_params["action"]
        who, _ = c.who(request)
        assert who is not None
        target = fields.get("target", "")
        back = "/"
        if action in ("pause", "resume"):
            if not pauses.TYPE_RE.match(target):
                return Response("bad task type\n", 400)
            try:
                if action == "pause":
                    await pauses.pause(
                        c.nats, c.settings, target, fields.get("reason", ""), who.name or "console"
                    )
                    msg = f"paused {target}"
                else:
                    await pauses.resume(c.nats, c.settings, target)
                    msg = f"resumed {target}"
            except pauses.PauseError as exc:
                return Response(f"{exc}\n", 400)
        elif action in ("replay", "discard", "cancel"):
            ids = [i for i in target.split(",") if i][: data.MAX_DEAD]
            if not ids or not all(contract.valid_order_id(i) for i in ids):
                return Response("bad order id\n", 400)
            if action != "cancel" and fields.get("confirm") != "yes":
                return Response("confirm it: tick the confirmation box\n", 400)
            done = 0
            for order_id in ids:
                if action == "replay":
                    done += await data.replay(c.nats, order_id)
                elif action == "discard":
                    done += await data.discard(c.nats, order_id)
                else:
                    done += await orders.cancel(c.settings, order_id, 2.0, False) == 0
            msg = f"{action}: {done} of {len(ids)}"
            back = f"/orders/{ids[0]}" if action == "cancel" else "/dead"
        else:
            return Response("no such action\n", 404)
        return RedirectResponse(f"{back}?msg={quote(msg)}", 303)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Not the CLI's fail-fast connection: a long-lived console reconnects forever, like the
        # services (a NATS restart must not need a console restart); only the first connection
        # is bounded, so a wrong URL fails the start within seconds.
        from orderflow import broker
        from orderflow.natsmux import Requester

        nc = await asyncio.wait_for(
            broker.connect(c.settings, "orderflow-console"), natsconn.CONNECT_BUDGET_S
        )
        requests = await Requester(nc, natsconn.REQUEST_TIMEOUT_S).start()
        c.s = Session(
            nc, nc.jetstream(timeout=natsconn.REQUEST_TIMEOUT_S), requests, natsconn.url_of(c.settings)
        )
        watch = asyncio.create_task(c.keys.watch())
        try:
            yield
        finally:
            watch.cancel()
            await requests.stop()
            with contextlib.suppress(Exception):
                await nc.close()

    return Starlette(
        routes=[
            Route("/", overview),
            Route("/events", events),
            Route("/signin", signin, methods=["GET", "POST"]),
            Route("/signout", signout, methods=["POST"]),
            Route("/orders", order),
            Route("/orders/{order_id}", order),
            Route("/dead", dead),
            Route("/long", long),
            Route("/recent", recent_orders),
            Route("/act/{action}", act, methods=["POST"]),
        ],
        lifespan=lifespan,
    )
