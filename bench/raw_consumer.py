"""bench/worker's baseline: a raw nats-py pull loop, fetch(100) + ack, nothing else."""

from __future__ import annotations

import sys

import nats
import nats.errors


async def main(url: str, durable: str) -> None:
    nc = await nats.connect(url)
    sub = await nc.jetstream().pull_subscribe_bind(durable=durable, stream="ORDERS")
    while True:
        try:
            msgs = await sub.fetch(100, timeout=1)
        except (TimeoutError, nats.errors.TimeoutError):
            continue
        for msg in msgs:
            await msg.ack()


if __name__ == "__main__":
    import uvloop

    uvloop.run(main(sys.argv[1], sys.argv[2]))
