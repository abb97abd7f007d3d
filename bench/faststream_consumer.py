"""bench/worker's comparison: a FastStream pull subscriber (batch 100) with a no-op handler."""

from __future__ import annotations

import sys

from faststream import FastStream
from faststream.nats import JStream, NatsBroker, PullSub

url, durable = sys.argv[1], sys.argv[2]
broker = NatsBroker(url)


@broker.subscriber(
    "orders.>",
    stream=JStream(name="ORDERS", declare=False),
    pull_sub=PullSub(batch_size=100),
    durable=durable,
)
async def handle(body: bytes) -> None:
    return None


if __name__ == "__main__":
    import uvloop

    uvloop.run(FastStream(broker).run())
