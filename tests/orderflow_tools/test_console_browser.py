"""`orderflow console` in a real headless Chromium (Debian's, driven by selenium) against the real
stack: nats-server, a worker process and the console process. One browser session: sign in, watch
a long job's progress move, replay a dead order and see it done (and listed since the test
began), pause a type and see its backlog hold (live, over Server-Sent Events)
while the other type flows, resume and see it drain. With ORDERFLOW_SCREENSHOTS=1 the same run
writes docs/img/console-laptop.png and console-phone.png (docs/console.md shows them).

Without chromium and chromedriver it skips with the reason; under CI=true it fails instead."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from harness import REPO, NatsServer, publish_orders, run, service_env, statuses, wait_until

from orderflow import auth
from orderflow_tools import kit
from orderflow_tools.kit import free_port, python_module

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
TYPES = "default,invoice"


def _missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    if not os.path.exists(CHROMIUM):
        return f"{CHROMIUM} not found (make tools: scripts/tools/chromium.sh)"
    if shutil.which("chromedriver") is None:
        return "chromedriver not found (Debian's chromium-driver; make tools)"
    return None


@pytest.fixture
def browser() -> Iterator[Any]:
    missing = _missing()
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the console's browser test needs Chromium in CI: {missing}")
        pytest.skip(missing)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    profile = tempfile.mkdtemp(prefix="orderflow-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=DriverService(shutil.which("chromedriver")))
    driver.set_window_size(1366, 900)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _status(url: str, order_id: str) -> str | None:
    record = run(statuses(url)).get(order_id)
    return None if record is None else str(record.status)


def test_the_console_in_chromium(
    nats_server: NatsServer, spawn: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    url = nats_server.url
    began = datetime.now(UTC).isoformat(timespec="seconds")
    broken = tmp_path / "billing-broken"
    broken.touch()
    monkeypatch.setenv("BILLING_BROKEN_FILE", str(broken))
    spawn(
        "worker", HANDLERS="billing", TASK_TYPES=TYPES, MAX_DELIVER=2, RETRY_BASE_S="0.05", RETRY_MAX_S="0.1",
        CONSUMER_INFO_INTERVAL_S="0.2",
    ).wait_ready()  # fmt: skip
    run(publish_orders(url, 2, prefix="dead"))
    wait_until(lambda: _status(url, "dead-0") == _status(url, "dead-1") == "dead", 30, "two dead orders")
    broken.unlink()  # billing fixed: a replay now succeeds

    admin_key = auth.new_key()
    keys = tmp_path / "api-keys.json"
    keys.write_text(json.dumps({"keys": [auth.entry("ops-ann", [auth.ADMIN], admin_key)]}))
    port = free_port()
    env = service_env(url, API_KEYS_FILE=str(keys), TASK_TYPES=TYPES)
    console = kit.Process(
        [*python_module("orderflow_tools.cli"), "console", "--port", str(port)],
        env, tmp_path / "console.log", cwd=REPO, name="console",
    ).start()  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        console.wait_http(base + "/signin", 20)
        b = browser

        def text(css: str) -> str:
            return str(b.find_element(By.CSS_SELECTOR, css).text)

        # Sign in: the overview sends a stranger to the sign-in page.
        b.get(base + "/")
        assert "/signin" in b.current_url
        b.find_element(By.ID, "key").send_keys(admin_key)
        b.find_element(By.ID, "signin").click()
        wait_until(lambda: "Task types" in b.page_source, 10, "the overview after sign-in")
        assert "ops-ann" in text("header")

        # A long job: its progress (the state it stored at its last checkpoint) moves on /long.
        run(publish_orders(url, 1, prefix="long", username="long"))
        row_of_long = 'tr[data-order="long-0"]'

        def progress() -> float | None:
            b.get(base + "/long")
            if "long-0" not in b.page_source or not text(f"{row_of_long} .progress"):
                return None
            return float(json.loads(text(f"{row_of_long} .progress"))["done_s"])

        first = wait_until(progress, 15, "the long job's first checkpoint on /long")
        assert first is not None
        wait_until(lambda: (progress() or 0) > first, 10, "the long job's progress to move")

        # Dead letters: discard one (confirmed), replay the other, then see it done.
        b.get(base + "/dead")
        assert "dead-0" in text("#dead") and "dead-1" in text("#dead")
        target = b.find_element(By.ID, "target")
        target.clear()
        target.send_keys("dead-1")
        b.find_element(By.ID, "confirm").click()
        b.find_element(By.ID, "discard").click()
        wait_until(lambda: "discard: 1 of 1" in b.page_source, 10, "the discard's message")
        assert "dead-1" not in text("#dead") and "dead-0" in text("#dead")
        assert _status(url, "dead-1") == "dead"  # only the dead letter went
        b.find_element(By.ID, "replay").click()
        wait_until(lambda: "confirm it" in b.page_source, 10, "the refusal: no confirmation ticked")
        b.get(base + "/dead")
        b.find_element(By.ID, "confirm").click()
        b.find_element(By.ID, "replay").click()
        wait_until(lambda: "replay: 1 of 1" in b.page_source, 10, "the replay's message")

        def shown_status() -> str:
            b.get(base + "/orders/dead-0")
            return text("#order-status")

        wait_until(lambda: shown_status() == "done", 30, "the replayed order done in the console")

        # Recent orders since the test began (the time range's form): the replayed order, done.
        b.get(base + "/recent")
        b.find_element(By.NAME, "since").send_keys(began)
        b.find_element(By.CSS_SELECTOR, "form[action='/recent'] button").click()
        wait_until(lambda: "since=" in b.current_url, 10, "the filtered list")
        assert any(line.startswith("dead-0 ") and " done " in line for line in text("#recent").splitlines())

        # Pause invoice with a reason: its backlog holds (the overview follows it live) while
        # default flows.
        b.get(base + "/")
        row = 'tr[data-consumer="workers-invoice"]'
        b.find_element(By.CSS_SELECTOR, f"{row} input[name=reason]").send_keys("ledger migration")
        b.find_element(By.CSS_SELECTOR, f"{row} button[name=pause]").click()
        wait_until(lambda: "paused invoice" in b.page_source, 10, "the pause's message")
        assert "ledger migration" in text(row) and "ops-ann" in text(row)
        run(publish_orders(url, 3, prefix="inv", task_type="invoice"))
        run(publish_orders(url, 3, prefix="def"))
        wait_until(lambda: all(_status(url, f"def-{i}") == "done" for i in range(3)), 30, "default flows")
        wait_until(lambda: text(f"{row} .backlog") == "3", 15, "the held backlog, live over SSE")
        assert "Live: updated" in text("#live")
        assert all(_status(url, f"inv-{i}") is None for i in range(3)), "an order of a paused type ran"
        if os.environ.get("ORDERFLOW_SCREENSHOTS") == "1":
            out = REPO / "docs" / "img"
            out.mkdir(parents=True, exist_ok=True)
            b.save_screenshot(str(out / "console-laptop.png"))
            b.set_window_size(390, 844)
            b.get(base + "/")
            b.save_screenshot(str(out / "console-phone.png"))
            b.set_window_size(1366, 900)
            b.get(base + "/")

        # Resume: the held orders run, none lost.
        b.find_element(By.CSS_SELECTOR, f"{row} button[name=resume]").click()
        wait_until(lambda: "resumed invoice" in b.page_source, 10, "the resume's message")
        wait_until(lambda: all(_status(url, f"inv-{i}") == "done" for i in range(3)), 30, "invoice drained")
        wait_until(lambda: text(f"{row} .backlog") == "0", 15, "the backlog at 0, live")
    finally:
        console.kill()
