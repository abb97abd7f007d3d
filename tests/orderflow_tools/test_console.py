"""The console's identity and its refusals, against a real console process and nats-server (no
browser: tests/orderflow_tools/test_console_browser.py is the browser's). And the session cookie's
signature and the CSRF token in process."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import REPO, NatsServer, cli, consumer_info, publish_orders, run, service_env, wait_until

from orderflow import auth
from orderflow_tools import kit
from orderflow_tools.console.identity import COOKIE, SESSION_S, Signer
from orderflow_tools.kit import free_port, python_module

pytestmark = pytest.mark.slow
TYPES = "default,invoice"


def test_the_session_cookie_and_csrf_token_are_signed() -> None:
    s = Signer(b"k" * 32)
    who = auth.Identity("ann", frozenset({auth.READ}))
    cookie = s.session(who, now=1000.0)
    assert s.identity(cookie, now=1001.0) == who
    assert s.identity(cookie, now=1000.0 + SESSION_S + 1) is None  # expired
    data, mac = cookie.rsplit(".", 1)
    assert s.identity(data.replace(data[3], "A" if data[3] != "A" else "B") + "." + mac, now=1001.0) is None
    assert Signer(b"x" * 32).identity(cookie, now=1001.0) is None  # another console's secret
    assert s.csrf_ok(cookie, s.csrf(cookie)) and not s.csrf_ok(cookie, "") and not s.csrf_ok(cookie, None)
    assert not s.csrf_ok(s.session(who, now=1002.0), s.csrf(cookie))  # bound to its session


def test_the_console_admits_keys_by_scope_and_refuses_the_rest(
    nats_server: NatsServer, spawn: Any, tmp_path: Path
) -> None:
    url = nats_server.url
    spawn("worker", TASK_TYPES=TYPES, WORK_S="30").wait_ready()  # one long job, below
    admin, reader, writer = auth.new_key(), auth.new_key(), auth.new_key()
    keys = tmp_path / "keys.json"
    entries = [auth.entry("ops", [auth.ADMIN], admin), auth.entry("viewer", [auth.READ], reader)]
    keys.write_text(json.dumps({"keys": [*entries, auth.entry("shop", [auth.WRITE], writer)]}))

    no_keys = cli(url, "console", "--port", str(free_port()))
    assert no_keys.returncode == 2 and "ORDERFLOW_API_KEYS_FILE is not set" in no_keys.stderr

    port = free_port()
    proc = kit.Process(
        [*python_module("orderflow_tools.cli"), "console", "--port", str(port)],
        service_env(url, API_KEYS_FILE=str(keys), TASK_TYPES=TYPES), tmp_path / "console.log", cwd=REPO,
    ).start()  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        proc.wait_http(base + "/signin", 20)
        with httpx.Client(base_url=base, timeout=10) as h:
            assert h.get("/").status_code == 303  # to /signin
            assert h.get("/", headers={"Authorization": "Bearer of_nosuchkey"}).status_code == 303
            assert (
                h.get("/", headers={"Authorization": f"Bearer {writer}"}).status_code == 403
            )  # no read scope
            bad = h.post("/signin", data={"key": writer})
            assert bad.status_code == 401 and "not known, or has no orders:read" in bad.text

            # A reader signs in, looks, and may not act.
            signed = h.post("/signin", data={"key": reader})
            assert signed.status_code == 303
            cookie = signed.cookies[COOKIE]
            h.cookies.clear()  # each request below names its session
            assert "httponly" in signed.headers["set-cookie"].lower()
            assert "samesite=strict" in signed.headers["set-cookie"].lower()
            page = h.get("/", headers={"Cookie": f"{COOKIE}={cookie}"})
            assert page.status_code == 200 and "workers-invoice" in page.text and "Pause" not in page.text
            assert 'name="csrf"' not in page.text  # a reader's page has no action forms
            refused = h.post(
                "/act/pause",
                data={"target": "invoice", "reason": "x"},
                headers={"Cookie": f"{COOKIE}={cookie}"},
            )
            assert refused.status_code == 403

            # An admin's cookie session: no CSRF token, no action; with it, the pause happens.
            cookie = h.post("/signin", data={"key": admin}).cookies[COOKIE]
            h.cookies.clear()
            admin_page = h.get("/", headers={"Cookie": f"{COOKIE}={cookie}"}).text
            token = admin_page.split('name="csrf" value="')[1].split('"')[0]
            form = {"target": "invoice", "reason": "audit"}
            assert (
                h.post("/act/pause", data=form, headers={"Cookie": f"{COOKIE}={cookie}"}).status_code == 403
            )
            assert (
                h.post(
                    "/act/pause", data={**form, "csrf": "forged"}, headers={"Cookie": f"{COOKIE}={cookie}"}
                ).status_code
                == 403
            )
            assert run(consumer_info(url, "workers-invoice")).paused in (None, False)
            ok = h.post("/act/pause", data={**form, "csrf": token}, headers={"Cookie": f"{COOKIE}={cookie}"})
            assert ok.status_code == 303 and run(consumer_info(url, "workers-invoice")).paused is True

            # Bearer: no cookie, so no CSRF token needed (nothing ambient for another site to use).
            bearer = {"Authorization": f"Bearer {admin}"}
            assert h.post("/act/resume", data={"target": "invoice"}, headers=bearer).status_code == 303
            assert not run(consumer_info(url, "workers-invoice")).paused
            assert (
                h.post("/act/pause", data={"target": "NO SUCH", "reason": "x"}, headers=bearer).status_code
                == 400
            )
            assert h.post("/act/replay", data={"target": "bad id!"}, headers=bearer).status_code == 400
            assert h.post("/act/nosuch", data={"target": "x"}, headers=bearer).status_code == 404
            big = h.post("/act/pause", content=b"a=" + b"x" * 20_000, headers=bearer)
            assert big.status_code == 413
            assert h.get("/orders/not-there-1", headers=bearer).status_code == 404
            assert h.get("/dead", headers=bearer).status_code == 200

            # Long jobs: a 30 s demo job shows, its time running and at risk moving.
            run(publish_orders(url, 1, prefix="long"))

            def long_row() -> str:
                page = h.get("/long", headers=bearer).text
                return (
                    page.split('data-order="long-0"')[1].split("</tr>")[0]
                    if 'data-order="long-0"' in page
                    else ""
                )

            first = wait_until(long_row, 15, "the long job on /long")
            time.sleep(1.2)
            second = long_row()

            def secs(row: str, cls: str) -> float:
                return float(row.split(f'class="{cls}">')[1].split(" s<")[0])

            assert secs(second, "running") > secs(first, "running") + 1.0
            assert secs(second, "risk") > 0

            # Recent orders (the last run events): the long job is running, named with the type
            # the real worker wrote into its run record; bad filters are 400s.
            listed = h.get("/recent?status=running", headers=bearer)
            assert listed.status_code == 200
            recent_row = listed.text.split("/orders/long-0")[1].split("</tr>")[0]
            assert '<td class="status">running</td>' in recent_row and "<td>?</td>" not in recent_row
            assert "long-0" not in h.get("/recent?status=done", headers=bearer).text
            for query in ("status=lost", "page=-1", "page=999", "type=no%20such"):
                assert h.get(f"/recent?{query}", headers=bearer).status_code == 400, query
            assert '<table id="rates">' in h.get("/", headers=bearer).text

            # NATS away for longer than the CLI's one reconnect attempt: the console reconnects
            # (endlessly, as the services do) and answers again.
            nats_server.stop()
            time.sleep(6)
            nats_server.start()
            wait_until(
                lambda: h.get("/dead", headers=bearer).status_code == 200,
                20,
                "the console after a NATS restart",
            )
        assert admin not in (tmp_path / "console.log").read_text()
    finally:
        proc.kill()
