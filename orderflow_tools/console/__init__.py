"""`orderflow console`: the operator's pages in a browser (docs/console.md)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from orderflow.config import Settings

DEFAULT_PORT = 8090


def add_parser(sub: Any, settings: Callable[[argparse.Namespace], Settings]) -> None:
    p = sub.add_parser(
        "console",
        help="the operator console in a browser (needs ORDERFLOW_API_KEYS_FILE: orders:read looks, admin acts)",
    )
    p.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--nats-url", help="overrides ORDERFLOW_NATS_URL")
    p.set_defaults(func=lambda a: serve(settings(a), a.host, a.port))


def serve(settings: Settings, host: str, port: int) -> int:
    import uvicorn

    from orderflow.auth import KeyFile, KeyFileError, is_loopback
    from orderflow_tools.console.app import Console, build

    if not settings.api_keys_file:
        print(
            "orderflow console: ORDERFLOW_API_KEYS_FILE is not set; the console admits API keys of that file "
            "(orders:read to look, admin to act) and nobody without one",
            file=sys.stderr,
        )
        return 2
    try:
        keys = KeyFile(settings.api_keys_file, settings.api_keys_reload_s)
    except KeyFileError as exc:
        print(f"orderflow console: {exc}", file=sys.stderr)
        return 2
    # Plain HTTP off loopback is behind a TLS-terminating proxy (the chart's Ingress): the cookie
    # then goes only over HTTPS.
    app = build(Console(settings, keys, secure_cookie=not is_loopback(host)))
    print(f"orderflow console on http://{host}:{port}/", file=sys.stderr, flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    return 0
