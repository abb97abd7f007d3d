"""The uvicorn internals the edge builds on are still there, each named: orderflow/edgeprotocol.py
subclasses uvicorn's httptools protocol and reads its per-connection state, and the ingest's
Server (orderflow/httpserver.py) runs uvicorn's startup/shutdown phases itself. uvicorn keeps none of these as API, so a
release may move one; this fails with the name of what moved, before the edge's behaviour tests
fail in a puzzling way. pyproject.toml bounds uvicorn to the versions this passes on (its upper
bound moves only after this and tests/ingest's edge tests pass on the newer uvicorn)."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from orderflow.edgeprotocol import Edge, EdgeProtocol
from orderflow.httpserver import edge_protocol, make_server

# The protocol hooks EdgeProtocol overrides and calls through super().
HOOKS = (
    "connection_made",
    "connection_lost",
    "data_received",
    "on_message_begin",
    "on_url",
    "on_header",
    "on_headers_complete",
    "on_body",
    "on_message_complete",
    "on_response_complete",
    "timeout_keep_alive_handler",
)
# Per-connection state the edge reads: the server's open connections (the cap), the loop (its
# timers), the pipelined requests, uvicorn's keep-alive timer and timeout, the current cycle.
STATE = (
    "connections",
    "loop",
    "pipeline",
    "timeout_keep_alive_task",
    "timeout_keep_alive",
    "cycle",
    "transport",
)


class _Events:
    def receipt_timeout(self, phase: str) -> None: ...

    def connection_refused(self) -> None: ...

    def head_refused(self, reason: str) -> None: ...


def _edge() -> Edge:
    return Edge(header_timeout_s=1, body_timeout_s=1, max_connections=1, refusal=b"", events=_Events())


def test_the_httptools_protocol_has_the_hooks_the_edge_overrides() -> None:
    missing = [hook for hook in HOOKS if not callable(getattr(HttpToolsProtocol, hook, None))]
    assert missing == [], f"uvicorn {uvicorn.__version__}: HttpToolsProtocol lacks {missing}"
    assert issubclass(edge_protocol(_edge()), HttpToolsProtocol)


def test_a_protocol_instance_has_the_state_the_edge_reads() -> None:
    async def build() -> EdgeProtocol:
        server = make_server(lambda *_: None, "warning", edge=_edge())
        config = server.config
        config.load()
        protocol_class: Any = config.http_protocol_class  # typed as asyncio.Protocol by uvicorn
        protocol = protocol_class(config=config, server_state=ServerState(), app_state={})
        assert isinstance(protocol, EdgeProtocol)
        return protocol

    protocol = asyncio.run(build())
    missing = [name for name in STATE if not hasattr(protocol, name)]
    assert missing == [], f"uvicorn {uvicorn.__version__}: HttpToolsProtocol instances lack {missing}"
    assert protocol.timeout_keep_alive_task is None and not protocol.pipeline
    # The cycle's flag the edge checks before answering 408 on a keep-alive connection, and the
    # request's URL so far, which the edge bounds in on_url (uvicorn starts it per request).
    assert "self.response_complete" in inspect.getsource(RequestResponseCycle.__init__)
    assert "self.url = " in inspect.getsource(HttpToolsProtocol.on_message_begin)
    assert "self.url += " in inspect.getsource(HttpToolsProtocol.on_url)


def test_the_server_and_config_have_what_the_ingest_server_uses() -> None:
    server = make_server(lambda *_: None, "warning", graceful_timeout_s=3.2, edge=_edge())
    assert isinstance(server, uvicorn.Server)
    # Server.start()/stop() run these phases themselves; capture_signals is replaced by a no-op.
    assert "sockets" in inspect.signature(uvicorn.Server.startup).parameters
    assert inspect.iscoroutinefunction(uvicorn.Server.shutdown)
    assert callable(getattr(uvicorn.Server, "capture_signals", None))
    with server.capture_signals():
        pass
    assert hasattr(server, "force_exit") and server.force_exit is False
    config = server.config
    assert config.loaded is False and config.timeout_graceful_shutdown == 3
    assert config.server_header is False and config.date_header is False and config.proxy_headers is False
    config.load()  # loop="none" and a protocol class for `http` are accepted
    assert config.lifespan_class is not None and config.loaded is True
    assert config.loop == "none"
