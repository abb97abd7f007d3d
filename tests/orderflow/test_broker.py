"""The JetStream layout is created idempotently, and a differing server config is named."""

from __future__ import annotations

import logging
import signal
import time
from pathlib import Path

import pytest
from harness import NatsServer, Service, connect, free_port, run, service_env, wait_until
from nats.js import api as jsapi

from orderflow import broker, buckets, consumers, contract, streams
from orderflow.envsettings import load_settings


@pytest.mark.procs
def test_layout_is_created_once_and_a_second_run_changes_nothing(
    nats_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    settings = load_settings("worker", {"ORDERFLOW_NATS_URL": nats_server.url})

    async def main() -> None:
        async with connect(nats_server.url) as nc:
            js = nc.jetstream()
            await streams.ensure_layout(js, settings)
            handle = await consumers.ensure_consumer(nc, settings, "default")
            assert (handle.name, handle.ack_wait_s, handle.priority) == ("workers", 30.0, True)
            caplog.clear()
            with caplog.at_level(logging.INFO, logger="orderflow"):
                await streams.ensure_layout(js, settings)
                await consumers.ensure_consumer(nc, settings, "default")
            assert caplog.records == []
            info = await js.stream_info(contract.STREAM)
            assert info.config.retention == jsapi.RetentionPolicy.WORK_QUEUE
            assert info.config.duplicate_window >= 120
            assert (await js.stream_info(contract.DLQ_STREAM)).config.subjects == ["dlq.orders.>"]
            keys = (await js.stream_info("KV_" + buckets.KEYS_BUCKET)).config
            assert keys.max_age == settings.idempotency_ttl_s == settings.status_ttl_s and keys.allow_direct

    run(main())


@pytest.mark.procs
def test_an_editable_difference_is_updated_and_named(
    nats_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    settings = load_settings("worker", {"ORDERFLOW_NATS_URL": nats_server.url})

    async def main() -> None:
        async with connect(nats_server.url) as nc:
            js = nc.jetstream()
            await streams.ensure_layout(js, settings)
            await consumers.ensure_consumer(nc, settings, "default")
            bigger = load_settings(
                "worker", {"ORDERFLOW_ACK_WAIT_S": "45", "ORDERFLOW_DUPLICATE_WINDOW_S": "300"}
            )
            with caplog.at_level(logging.WARNING, logger="orderflow"):
                await streams.ensure_layout(js, bigger)
                handle = await consumers.ensure_consumer(nc, bigger, "default")
            text = caplog.text
            assert "stream ORDERS: duplicate_window is 120.0 on the server, orderflow wants 300.0" in text
            assert "consumer workers: ack_wait is 30.0 on the server, orderflow wants 45.0" in text
            assert handle.ack_wait_s == 45.0

    run(main())


@pytest.mark.procs
def test_a_memory_workers_bucket_of_an_older_release_is_made_again_on_file(
    nats_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    """ORDER_WORKERS was a memory bucket, gone after every NATS restart. Its storage cannot be
    edited, and it holds only seconds of liveness entries: start-up deletes it, makes it again on
    file and says so; the buckets that hold orders' data are never dropped."""
    settings = load_settings("worker", {"ORDERFLOW_NATS_URL": nats_server.url})

    async def main() -> None:
        async with connect(nats_server.url) as nc:
            js = nc.jetstream()
            await js.create_key_value(
                jsapi.KeyValueConfig(
                    bucket=contract.WORKERS_BUCKET, history=1, ttl=6.0, storage=jsapi.StorageType.MEMORY
                )
            )
            kv = await js.key_value(contract.WORKERS_BUCKET)
            await kv.put("old", b"{}")
            with caplog.at_level(logging.WARNING, logger="orderflow"):
                await streams.ensure_layout(js, settings)
            info = await js.stream_info("KV_" + contract.WORKERS_BUCKET)
            assert info.config.storage == jsapi.StorageType.FILE
            assert info.config.max_age == 6.0
            assert (
                "KV ORDER_WORKERS: storage memory on the server, orderflow wants file — made again"
                in caplog.text
            )
            status = await js.stream_info("KV_" + contract.STATUS_BUCKET)
            assert status.config.storage == jsapi.StorageType.FILE

    run(main())


@pytest.mark.procs
def test_a_difference_jetstream_cannot_edit_stops_start_up_with_a_clear_message(
    nats_server: NatsServer,
) -> None:
    settings = load_settings("worker", {"ORDERFLOW_NATS_URL": nats_server.url})

    async def main() -> None:
        async with connect(nats_server.url) as nc:
            js = nc.jetstream()
            await js.add_stream(name=contract.STREAM, subjects=["orders.>"], retention="limits")
            with pytest.raises(broker.BrokerConfigError) as err:
                await streams.ensure_layout(js, settings)
            assert "retention is 'limits' on the server, orderflow wants 'workqueue'" in str(err.value)
            assert "cannot change" in str(err.value)

    run(main())


@pytest.mark.procs
def test_a_consumer_without_the_priority_group_gets_it_and_off_takes_it_away(
    nats_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    """1. A consumer made by an older orderflow (no priority group) exists with work on it.
    2. The worker's start-up adds the group (JetStream can edit it), says exactly what differed,
       and keeps the consumer's messages.
    3. ORDERFLOW_PRIORITY=off takes it away again, and the handle says pulls carry no priority."""
    settings = load_settings("worker", {"ORDERFLOW_NATS_URL": nats_server.url})
    off = load_settings("worker", {"ORDERFLOW_NATS_URL": nats_server.url, "ORDERFLOW_PRIORITY": "off"})

    async def main() -> None:
        async with connect(nats_server.url) as nc:
            js = nc.jetstream()
            await streams.ensure_layout(js, settings)
            await js.add_consumer(contract.STREAM, consumers.consumer_config(settings, "default"))
            await js.publish("orders.default.o-1", b"{}")
            with caplog.at_level(logging.WARNING, logger="orderflow"):
                handle = await consumers.ensure_consumer(nc, settings, "default")
            assert handle.priority
            assert "priority_policy is 'none' on the server, orderflow wants 'prioritized'" in caplog.text
            info = await js.consumer_info(contract.STREAM, "workers")
            assert info.num_pending == 1
            assert not (await consumers.ensure_consumer(nc, off, "default")).priority

    run(main())


@pytest.mark.parametrize(
    ("a", "b", "overlap"),
    [
        ("orders.>", "orders.invoice", True),
        ("orders.>", "orders.invoice.>", True),
        ("orders.default", "orders.invoice", False),
        ("orders.default.>", "orders.default", False),
        ("orders.*", "orders.default", True),
        ("orders.*.x", "orders.default.>", True),
        (">", "anything.at.all", True),
    ],
)
def test_subject_filters_overlap_as_nats_matches_them(a: str, b: str, overlap: bool) -> None:
    assert consumers.subjects_overlap(a, b) is overlap
    assert consumers.subjects_overlap(b, a) is overlap


@pytest.mark.procs
def test_switching_to_split_task_types_names_the_old_consumer_and_the_command_that_removes_it(
    nats_server: NatsServer,
) -> None:
    """1. One task type ran: consumer `workers` takes every order, and 2 orders wait on it.
    2. Two types now: starting says exactly which consumer overlaps, its work, and the command.
    3. That command refuses while work remains (nothing is deleted), and works once it is done."""
    one = load_settings("worker", {"ORDERFLOW_NATS_URL": nats_server.url})
    two = load_settings(
        "worker", {"ORDERFLOW_NATS_URL": nats_server.url, "ORDERFLOW_TASK_TYPES": "default,invoice"}
    )

    async def main() -> None:
        async with connect(nats_server.url) as nc:
            js = nc.jetstream()
            await streams.ensure_layout(js, one)
            await consumers.ensure_consumer(nc, one, "default")
            for i in range(2):
                await js.publish(f"orders.default.o-{i}", b"{}")
            with pytest.raises(broker.BrokerConfigError) as err:
                await consumers.ensure_consumer(nc, two, "default")
            text = str(err.value)
            assert "consumer workers (filters orders.>) overlaps workers-default" in text
            assert "2 undelivered and 0 un-acked" in text
            assert text.endswith("orderflow consumers delete workers")
            with pytest.raises(broker.BrokerConfigError):
                await consumers.delete_idle_consumer(nc, "workers")
            assert (await js.consumer_info(contract.STREAM, "workers")).num_pending == 2
            await js.purge_stream(contract.STREAM)
            await consumers.delete_idle_consumer(nc, "workers")
            handle = await consumers.ensure_consumer(nc, two, "default")
            assert handle.name == "workers-default"

    run(main())


@pytest.mark.slow
@pytest.mark.parametrize(
    ("module", "sig"),
    [("worker", signal.SIGTERM), ("worker", signal.SIGINT), ("ingest", signal.SIGTERM)],
)
def test_a_service_that_cannot_reach_nats_says_so_is_unready_and_stops_at_once(
    module: str, sig: int, tmp_path: Path
) -> None:
    """Both services share broker.connect_retrying. A worker used to log nothing and hang on every
    signal: nats-py's first connection loops forever inside `nats.connect`, and never sees a signal.
    1. Started against a port where nothing listens, with a user and password in the URL.
    2. It says it cannot reach NATS, with the URL redacted and the reason, once per interval (1 s).
    3. /readyz 503, /healthz 200 (the process is alive: a restart would not bring NATS).
    4. One signal: exit 0 at once (there is nothing to drain)."""
    port = free_port()
    url = f"nats://orders:s3cret@127.0.0.1:{port}"
    svc = Service(module, service_env(url, REFUSAL_LOG_INTERVAL_S=1), tmp_path / f"{module}.log").start()
    try:
        said = f"cannot reach NATS at nats://orders:***@127.0.0.1:{port}: ConnectionRefusedError"
        wait_until(lambda: said in svc.logs(), 20, "the service to say it cannot reach NATS")
        start = time.monotonic()
        wait_until(lambda: svc.get("/readyz")[0] == 503, 10, "/readyz to answer")
        assert svc.get("/healthz")[0] == 200
        time.sleep(max(0.0, 3.0 - (time.monotonic() - start)))
        lines = [line for line in svc.logs().splitlines() if "cannot reach NATS" in line]
        assert 2 <= len(lines) <= 5, lines  # the first at once, then one per interval
        assert "in the last 1s (last: ConnectionRefusedError" in lines[-1]
        assert "s3cret" not in svc.logs()
        svc.signal(sig)
        signalled = time.monotonic()
        assert svc.wait(5) == 0
        # at once: the bug was a hang until SIGKILL; 3 s holds on a loaded 2-core box running the
        # suite in parallel, where 1 s did not (1.6 s measured)
        assert time.monotonic() - signalled < 3.0
    finally:
        svc.stop()
