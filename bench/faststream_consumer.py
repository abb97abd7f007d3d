"""bench/worker's FastStream contender, set up as FastStream's docs recommend for throughput (see
docs/bench.md for the links): a JetStream pull subscriber (the NATS team's recommended consumer)
with batch_size=100 (the raw loop's fetch and the orderflow worker's slots), no logging on the
broker or the app (`logger=None`: no access log line per message), msgspec instead of pydantic for
the body (`serializer=MsgSpecSerializer()`), decoding into the same `Order` struct the orderflow
worker decodes. Per message: decode + validate the order, then a plain ack (AckPolicy
REJECT_ON_ERROR, the default: ack after the handler returns, `msg.ack()`, not confirmed) - the
orderflow worker's ack is plain too.

    python -m bench.faststream_consumer NATS_URL DURABLE
"""

from __future__ import annotations

import sys

from fast_depends.msgspec import MsgSpecSerializer
from faststream import FastStream
from faststream.nats import JStream, NatsBroker, PullSub

from orderflow import contract

BATCH = 100

url, durable = sys.argv[1], sys.argv[2]
broker = NatsBroker(url, logger=None, serializer=MsgSpecSerializer())


@broker.subscriber(
    "orders.>",
    stream=JStream(name=contract.STREAM, declare=False),
    pull_sub=PullSub(batch_size=BATCH),
    durable=durable,
)
async def handle(order: contract.Order) -> None:
    return None


if __name__ == "__main__":
    import uvloop

    uvloop.run(FastStream(broker, logger=None).run())
