"""Waits on one order on its way through real workers (published, started on a given worker, at
a given status) and what it left behind (its dead letter, nothing on the consumer). Each wait polls
the order's records in JetStream (harness) until its deadline."""

from __future__ import annotations

from harness import consumer_info, publish_orders, read_stream, records_of, run, status_of, wait_until

from orderflow import contract


def publish_one(url: str, prefix: str) -> str:
    """One valid order straight to ORDERS, id `<prefix>-0`."""
    [order_id] = run(publish_orders(url, 1, prefix=prefix))
    return str(order_id)


def wait_started_on(url: str, order_id: str, worker_id: str, timeout: float = 30) -> contract.RunRecord:
    """The `start` run record `worker_id` wrote for the order (it is running there now)."""

    def started() -> contract.RunRecord | None:
        found = (r for r in records_of(url, order_id) if r.event == "start" and r.worker_id == worker_id)
        return next(found, None)

    found = wait_until(started, timeout, f"{order_id} to start on {worker_id}", 0.1)
    assert found is not None
    return found


def wait_status(
    url: str, order_id: str, status: str, timeout: float, what: str, interval: float = 0.2
) -> contract.StatusRecord:
    """The order's status record once it says `status`; `what` names the wait in its failure."""

    def reached() -> contract.StatusRecord | None:
        st = status_of(url, order_id)
        return st if st is not None and st.status == status else None

    found = wait_until(reached, timeout, what, interval)
    assert found is not None
    return found


def assert_consumer_idle(url: str) -> None:
    """Nothing pending and nothing ack-pending on the workers' consumer: no message is left to
    deliver or to settle."""
    info = run(consumer_info(url))
    assert (info.num_pending, info.num_ack_pending) == (0, 0), (info.num_pending, info.num_ack_pending)


def the_dead_letter(url: str, order_id: str) -> dict[str, str]:
    """The one message in ORDERS_DLQ, which is the order's payload under its DLQ subject; its
    headers (the counts and the error)."""
    [dead] = run(read_stream(url, contract.DLQ_STREAM))
    assert dead.subject == f"{contract.DLQ_PREFIX}default.{order_id}"
    assert contract.decode_order(dead.data).order_id == order_id
    headers: dict[str, str] = dead.headers
    return headers
