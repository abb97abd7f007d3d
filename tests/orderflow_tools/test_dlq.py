"""`orderflow dlq list | show | replay` against a real nats-server and a real worker whose handler
fails until "billing" is fixed (tests/support/billing.py), so three orders end in ORDERS_DLQ."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import pytest
from harness import (
    NatsServer,
    cli,
    connect,
    events_per_order,
    publish_orders,
    run,
    statuses,
    wait_until,
)

from orderflow import contract

pytestmark = pytest.mark.slow


async def dlq_size(url: str) -> int:
    async with connect(url) as nc:
        try:
            return int((await nc.jetstream().stream_info(contract.DLQ_STREAM)).state.messages)
        except Exception:
            return 0


@pytest.fixture
def dead(nats_server: NatsServer, spawn: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """d-0, d-1 (type default) and i-0 (type invoice) dead after 2 failed attempts each; returns
    the file whose existence keeps billing broken."""
    broken = tmp_path / "billing-broken"
    broken.touch()
    monkeypatch.setenv("BILLING_BROKEN_FILE", str(broken))
    spawn(
        "worker", HANDLERS="billing", TASK_TYPES="default,invoice", MAX_DELIVER=2,
        RETRY_BASE_S="0.05", RETRY_MAX_S="0.1", ACK_WAIT_S=5,
    ).wait_ready()  # fmt: skip
    run(publish_orders(nats_server.url, 2, prefix="d"))
    run(publish_orders(nats_server.url, 1, prefix="i", task_type="invoice"))
    wait_until(lambda: run(dlq_size(nats_server.url)) == 3, 30, "three dead orders")
    return broken


def test_list_shows_the_dead_orders_and_filters_them(nats_server: NatsServer, dead: Path) -> None:
    url = nats_server.url
    out = cli(url, "dlq", "list")
    assert out.returncode == 0, out.stderr
    rows = [line for line in out.stdout.splitlines() if " attempts " in line]
    assert len(rows) == 3 and "3 dead orders in ORDERS_DLQ" in out.stdout
    assert all("billing BROKEN for" in r and "attempts  2" in r for r in rows)
    assert sorted(r.split()[3] for r in rows) == ["d-0", "d-1", "i-0"]
    assert all(r.split()[4] == "attempts" for r in rows)  # the reason

    def listed(*filters: str) -> int:
        result = cli(url, "dlq", "list", *filters)
        assert result.returncode == 0, result.stderr
        return sum(1 for line in result.stdout.splitlines() if " attempts " in line)

    assert listed("--type", "invoice") == 1
    assert listed("--type", "default") == 2
    assert listed("--error-contains", "broken for d-1") == 1
    assert listed("--error-contains", "timeout") == 0
    assert listed("--since", "1h") == 3
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    assert listed("--since", future) == 0


def test_show_prints_payload_headers_error_and_counts(nats_server: NatsServer, dead: Path) -> None:
    out = cli(nats_server.url, "dlq", "show", "d-1")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    error = next(line for line in text.splitlines() if line.startswith("error "))
    assert "failed 2 attempts" in error and "billing BROKEN for d-1" in error
    assert "failed attempts 2" in text and "crashes 0" in text
    assert "Orderflow-Subject: orders.default.d-1" in text
    payload = json.loads(text.split("payload\n", 1)[1])
    assert payload["order_id"] == "d-1" and payload["username"] == "m"
    missing = cli(nats_server.url, "dlq", "show", "nope")
    assert missing.returncode == 1 and "not in ORDERS_DLQ" in missing.stderr


def test_replay_runs_the_orders_again_with_fresh_counts_and_empties_the_dlq(
    nats_server: NatsServer, dead: Path
) -> None:
    """1. Without ids, filters or --all: refused (exit 2), nothing changes.
    2. --dry-run says what it would do and changes nothing.
    3. Billing fixed, `replay --type default`: d-0 and d-1 run again and end done with fresh
       counts (0 failed attempts, not the dead record's 2); they leave the DLQ, i-0 stays.
    4. `replay --all`: i-0 too; the DLQ is empty.
    5. A second dead copy of a done order, replayed: acked without running (the done-dedupe)."""
    url = nats_server.url
    refused = cli(url, "dlq", "replay")
    assert refused.returncode == 2 and "--all" in refused.stderr
    dry = cli(url, "dlq", "replay", "--all", "--dry-run")
    assert dry.returncode == 0 and "3 to replay (dry run" in dry.stdout
    assert run(dlq_size(url)) == 3

    dead.unlink()  # billing works again
    out = cli(url, "dlq", "replay", "--type", "default")
    assert out.returncode == 0, out.stderr
    assert "replayed 2 orders" in out.stdout

    def done(ids: list[str]) -> bool:
        st = run(statuses(url))
        return all(i in st and st[i].status == "done" for i in ids)

    wait_until(lambda: done(["d-0", "d-1"]), 30, "the replayed orders to be done")
    st = run(statuses(url))
    assert st["d-0"].attempts == 0 and st["d-1"].attempts == 0  # fresh counts
    assert st["i-0"].status == "dead"
    assert run(dlq_size(url)) == 1

    assert "replayed 1 order " in cli(url, "dlq", "replay", "--all").stdout
    wait_until(lambda: done(["i-0"]), 30, "i-0 to be done")
    assert run(dlq_size(url)) == 0
    assert events_per_order(url, "done") == {"d-0": 1, "d-1": 1, "i-0": 1}

    # 5. A stale dead copy of d-0 (it died twice, say), replayed after d-0 is done.
    async def dead_copy() -> None:
        async with connect(url) as nc:
            order = contract.Order("d-0", 1, 1, "m", 0.0)
            await nc.jetstream().publish(
                f"{contract.DLQ_PREFIX}default.d-0", contract.encode(order), headers={contract.H_ERROR: "old"}
            )

    run(dead_copy())
    assert "replayed 1 order " in cli(url, "dlq", "replay", "d-0").stdout
    wait_until(lambda: run(dlq_size(url)) == 0, 10, "the copy to leave the DLQ")

    def settled() -> bool:
        async def pending() -> int:
            async with connect(url) as nc:
                info = await nc.jetstream().stream_info(contract.STREAM)
                return int(info.state.messages)

        return run(pending()) == 0

    wait_until(settled, 15, "the replayed copy to be acked")
    assert events_per_order(url, "done")["d-0"] == 1  # not run again
    assert run(statuses(url))["d-0"].status == "done"


def test_a_long_replay_reports_progress_and_republishes_what_makes_a_fresh_run(
    nats_server: NatsServer,
) -> None:
    """2 500 dead orders, no worker: `replay --all` says how far it got as it goes, empties the
    DLQ, and each order is back in ORDERS under its own subject with Orderflow-Replay and
    Orderflow-Status-Check, a Nats-Msg-Id of its own, and none of the dead-letter bookkeeping."""
    url = nats_server.url

    async def bury(n: int) -> None:
        from orderflow import streams
        from orderflow.envsettings import load_settings

        async with connect(url) as nc:
            js = nc.jetstream()
            for cfg in streams.stream_configs(load_settings("cli")):
                await js.add_stream(cfg)
            acks = [
                await js.publish_async(
                    f"{contract.DLQ_PREFIX}default.z-{i}",
                    contract.encode(contract.Order(f"z-{i}", 1, 1, "m", 0.0)),
                    headers={
                        contract.H_ERROR: "boom",
                        contract.H_ATTEMPTS: "5",
                        contract.H_CRASHES: "1",
                        contract.H_HANDBACKS: "2",
                        contract.H_DELIVERIES: "9",
                        "Traceparent": "00-abc",
                    },
                )
                for i in range(n)
            ]
            await asyncio.gather(*acks)

    run(bury(2500))
    out = cli(url, "dlq", "replay", "--all", timeout=300)
    assert out.returncode == 0, out.stderr
    assert "replayed 1000/2500" in out.stderr and "replayed 2000/2500" in out.stderr
    assert "replayed 2500 orders" in out.stdout
    assert run(dlq_size(url)) == 0

    async def replayed(order_id: str) -> dict[str, str]:
        async with connect(url) as nc:
            msg = await nc.jetstream().get_last_msg(
                contract.STREAM, contract.order_subject("default", order_id)
            )
            return dict(msg.headers or {})

    headers = run(replayed("z-7"))
    assert headers[contract.H_REPLAY] == "1" and headers[contract.H_STATUS_CHECK] == "1"
    assert headers[contract.H_MSG_ID].startswith("z-7.replay.")
    assert headers["Traceparent"] == "00-abc"  # the order's own headers travel on
    for name in (
        contract.H_ERROR,
        contract.H_ATTEMPTS,
        contract.H_CRASHES,
        contract.H_HANDBACKS,
        contract.H_DELIVERIES,
    ):
        assert name not in headers


def test_a_replay_that_fails_again_backs_off_and_is_dead_after_max_deliver(
    nats_server: NatsServer, dead: Path
) -> None:
    """1. d-0 is dead after 2 failed attempts (MAX_DELIVER 2); billing is still broken.
    2. `replay d-0`: it runs with fresh counts once, fails, backs off, fails again and is back in
       the DLQ after 2 more failed attempts: 4 runs in all, not the delivery cap's 101."""
    url = nats_server.url
    assert "replayed 1 order " in cli(url, "dlq", "replay", "d-0").stdout
    wait_until(lambda: run(dlq_size(url)) == 3, 30, "d-0 back in the DLQ")
    time.sleep(1.0)  # a loop would go on running it meanwhile
    out = cli(url, "dlq", "show", "d-0")
    error = next(line for line in out.stdout.splitlines() if line.startswith("error "))
    assert "failed 2 attempts" in error and "reason      attempts" in out.stdout
    assert events_per_order(url, "start")["d-0"] == 4
    st = run(statuses(url))["d-0"]
    assert (st.status, st.attempts) == ("dead", 2)


def test_poison_and_undecodable_orders_are_listed_with_their_reason_and_replayable(
    nats_server: NatsServer, spawn: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1. While billing is broken, p-0 (user "poison") is poison and junk-1 is not an order: both
       are copied to the DLQ at once (no retry), reasons poison and undecodable; p-0 is `failed`.
    2. Billing fixed, `replay --all`: p-0 runs and is done; junk-1, still not an order, is
       dead-lettered again."""
    url = nats_server.url
    broken = tmp_path / "billing-broken"
    broken.touch()
    monkeypatch.setenv("BILLING_BROKEN_FILE", str(broken))
    spawn("worker", HANDLERS="billing", MAX_DELIVER=3, RETRY_BASE_S="0.05", RETRY_MAX_S="0.1").wait_ready()
    run(publish_orders(url, 1, prefix="p", username="poison"))

    async def publish_junk() -> None:
        async with connect(url) as nc:
            await nc.jetstream().publish(
                "orders.default.junk-1", b"\x00not an order", headers={contract.H_MSG_ID: "junk-1"}
            )

    run(publish_junk())
    wait_until(lambda: run(dlq_size(url)) == 2, 30, "both in the DLQ")
    rows = {
        r.split()[3]: r.split()[4] for r in cli(url, "dlq", "list").stdout.splitlines() if " attempts " in r
    }
    assert rows == {"p-0": "poison", "junk-1": "undecodable"}
    st = run(statuses(url))
    assert (st["p-0"].status, st["p-0"].attempts) == ("failed", 1)
    assert events_per_order(url, "start") == {"p-0": 1}  # never retried

    broken.unlink()
    assert "replayed 2 orders" in cli(url, "dlq", "replay", "--all").stdout
    wait_until(lambda: run(statuses(url))["p-0"].status == "done", 30, "p-0 to be done")
    wait_until(lambda: run(dlq_size(url)) == 1, 30, "junk-1 back in the DLQ")
    rows = {
        r.split()[3]: r.split()[4] for r in cli(url, "dlq", "list").stdout.splitlines() if " attempts " in r
    }
    assert rows == {"junk-1": "undecodable"}


def test_discard_needs_yes_and_removes_only_the_named(nats_server: NatsServer, dead: Path) -> None:
    url = nats_server.url
    refused = cli(url, "dlq", "discard", "d-0")
    assert refused.returncode == 2 and "say --yes" in refused.stderr
    assert run(dlq_size(url)) == 3
    gone = cli(url, "dlq", "discard", "d-0", "--yes")
    assert gone.returncode == 0 and "discarded d-0" in gone.stdout, gone.stderr
    assert run(dlq_size(url)) == 2
    again = cli(url, "dlq", "discard", "d-0", "--yes")
    assert again.returncode == 1 and "order d-0: not in ORDERS_DLQ" in again.stderr
    assert run(statuses(url))["d-0"].status == "dead"  # the status stays
