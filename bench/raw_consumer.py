"""The raw consumer of bench/worker and of bench/e2e's raw pipeline: a bare nats-py pull loop on an
existing durable. Per message: a plain ack (`msg.ack()`: a publish to the ack subject, not
confirmed), nothing else - no decode, no status, no metrics. Batch: fetch(100), the orderflow
worker's slots.

    python -m bench.raw_consumer NATS_URL DURABLE
"""

from __future__ import annotations

import sys

import nats
import nats.errors

from orderflow import contract

BATCH = 100


async def ensure_durable(nats_url: str) -> None:
    """orderflow's own consumer config (durable `workers`, on the stream orderflow's layout made)
    for this loop to bind, without the priority group: a pull on a consumer with one must name the
    group, and a plain nats-py fetch cannot."""
    from orderflow import consumers
    from orderflow.envsettings import load_settings

    settings = load_settings("cli", {"ORDERFLOW_NATS_URL": nats_url, "ORDERFLOW_PRIORITY": "off"})
    nc = await nats.connect(nats_url)
    try:
        await consumers.ensure_consumer(nc, settings, "default")
    finally:
        await nc.close()


async def main(url: str, durable: str) -> None:
    nc = await nats.connect(url)
    sub = await nc.jetstream().pull_subscribe_bind(durable=durable, stream=contract.STREAM)
    while True:
        try:
            msgs = await sub.fetch(BATCH, timeout=1)
        except (TimeoutError, nats.errors.TimeoutError):
            continue
        for msg in msgs:
            await msg.ack()


if __name__ == "__main__":
    import uvloop

    uvloop.run(main(sys.argv[1], sys.argv[2]))
