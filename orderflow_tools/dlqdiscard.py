"""`orderflow dlq discard ID... --yes`: remove dead letters for good (the console's Discard).

The order's status stays `dead`; only its copy in ORDERS_DLQ goes, so it can no longer be
replayed. Without --yes nothing changes: a discard cannot be undone.
"""

from __future__ import annotations

import sys

from orderflow import contract
from orderflow.config import Settings
from orderflow_tools import dlq
from orderflow_tools.natsconn import Session, session


async def discard_one(s: Session, order_id: str) -> bool:
    """False when the order has no dead letter."""
    dead = await dlq.find(s, order_id)
    if dead is None:
        return False
    await s.js.delete_msg(contract.DLQ_STREAM, dead.seq)
    return True


async def discard(settings: Settings, order_ids: list[str], yes: bool) -> int:
    if not yes:
        print(
            f"orderflow dlq discard: this removes {len(order_ids)} dead letter(s) for good (they can no longer "
            "be replayed); say --yes",
            file=sys.stderr,
        )
        return 2
    async with session(settings) as s:
        missing = 0
        for order_id in order_ids:
            if await discard_one(s, order_id):
                print(f"discarded {order_id}")
            else:
                missing += 1
                print(f"order {order_id}: not in {contract.DLQ_STREAM}", file=sys.stderr)
        return 1 if missing else 0
