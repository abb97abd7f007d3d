"""How the JetStream store is shared: every stream and bucket gets a cap (max_bytes) from one store
size, so that no stream can take another's room (issue #20).

Why every one, measured on nats-server 2.15: a stream's max_bytes is *reserved* only when streams
are created (a cap beyond what is left is refused, "insufficient storage resources available");
when the store fills, an uncapped stream goes on writing into the others' reservations, and then
every write fails, "resource limits exceeded for account". That stopped the workers: a `done` must
be stored before the ack that frees an order's space, so with ORDERS full they completed 0 of
7 821 queued orders in 60 s, and handlers ran again with their results unrecorded. With every
stream capped and the caps summing to less than the store, ORDERS refuses new orders (the ingest
answers 503, discard new) while ORDER_STATUS, which discards its oldest records when full, always
takes the `done` records of the orders ORDERS holds: its share is 2x ORDERS', and a `done`
record is stored in at most 1.8x the bytes of its order (tests/orderflow/test_capacity.py).

The store size: the account's JetStream file storage limit as the server reports it in account
info (an operator's account limits; with R3 every byte is counted three times), else
ORDERFLOW_STORE_MAX_BYTES (the server's `max_file_store`, for a server whose account has no
limit). Neither: no caps, as before, said once at start-up."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from nats.js import JetStreamContext

from orderflow import contract
from orderflow.config import Settings

log = logging.getLogger(__name__)

# Shares of the store. The rest (5 %) is headroom: the server's own files, and rounding.
SHARES: dict[str, float] = {
    contract.STREAM: 0.22,  # the backlog: what the ingest may accept before it answers 503
    "KV_" + contract.STATUS_BUCKET: 0.45,  # a `done` for everything ORDERS holds, and history
    "KV_" + contract.KEYS_BUCKET: 0.10,  # Idempotency-Key records (full: keyed requests answer 503)
    contract.RUNS_STREAM: 0.06,  # run history for tests and the chaos ledger (oldest go first)
    contract.DLQ_STREAM: 0.06,  # dead letters (full: the order stays queued, never dropped)
    contract.RETRIES_STREAM: 0.04,  # long retries waiting as scheduled messages
    "KV_" + contract.CANCELS_BUCKET: 0.01,
    "KV_" + contract.WORKERS_BUCKET: 0.01,
}
# Streams that drop their oldest messages when full, rather than refuse a write: a worker's `done`
# must never be refused (ORDER_STATUS), liveness and run history are only worth their newest
# entries, and scheduling requires it (ORDER_RETRIES).
DISCARD_OLD = frozenset(
    {
        "KV_" + contract.STATUS_BUCKET,
        "KV_" + contract.WORKERS_BUCKET,
        contract.RUNS_STREAM,
        contract.RETRIES_STREAM,
    }
)
# What the dashboards and the alert read as "the store is nearly full" (rules/).
ALERT_SHARE = 0.8


@dataclass(frozen=True)
class Caps:
    """max_bytes per stream (KV buckets as their streams, KV_<bucket>); -1: no cap."""

    store_bytes: int  # the store the caps share; -1: unknown
    source: str  # where store_bytes came from, for the start-up line
    by_stream: dict[str, int]

    def of(self, stream: str) -> int:
        return self.by_stream.get(stream, -1)


def store_bytes(account_max_storage: int, setting: int, replicas: int) -> tuple[int, str]:
    """The bytes one replica of every stream may use together, and where that came from."""
    if account_max_storage > 0:
        # An account's limit counts every replica's bytes.
        return account_max_storage // max(1, replicas), "the account's JetStream storage limit"
    if setting > 0:
        return setting, "ORDERFLOW_STORE_MAX_BYTES"
    return -1, "unknown"


def derive(store: int, source: str, orders_max_bytes: int = -1) -> Caps:
    """Each stream's cap from the store; ORDERS' is at most `orders_max_bytes` when that is set
    (ORDERFLOW_STREAM_MAX_BYTES), and is exactly that when the store is unknown."""
    if store <= 0:
        return Caps(-1, source, {contract.STREAM: orders_max_bytes} if orders_max_bytes > 0 else {})
    caps = {name: int(store * share) for name, share in SHARES.items()}
    if orders_max_bytes > 0:
        caps[contract.STREAM] = min(caps[contract.STREAM], orders_max_bytes)
    return Caps(store, source, caps)


_said: list[tuple[int, str] | None] = [None]


async def learn(js: JetStreamContext, settings: Settings) -> Caps:
    """Every stream's share of the store, from the account's limit (account info) or
    ORDERFLOW_STORE_MAX_BYTES; said once per process (a reconnect ensures the layout again)."""
    account = await js.account_info()
    limit = account.limits.max_storage if account.limits and account.limits.max_storage else -1
    store, source = store_bytes(limit, settings.store_max_bytes, settings.stream_replicas)
    caps = derive(store, source, settings.stream_max_bytes)
    if _said[0] == (store, source):
        return caps
    _said[0] = (store, source)
    if store > 0:
        log.info(
            "JetStream store %d bytes (%s): ORDERS may hold %d, ORDER_STATUS %d",
            store,
            source,
            caps.of(contract.STREAM),
            caps.of("KV_" + contract.STATUS_BUCKET),
        )
    else:
        log.warning(
            "JetStream store size unknown (the account has no storage limit and "
            "ORDERFLOW_STORE_MAX_BYTES is not set): streams are not capped, and a full store stops "
            "the workers too (their `done` records cannot be stored); set ORDERFLOW_STORE_MAX_BYTES "
            "to the server's max_file_store"
        )
    return caps
