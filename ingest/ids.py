"""Generated order ids: 128 bits from the kernel's CSPRNG each (32 hex characters), so that with an
unauthenticated GET /orders/{id} nobody can guess or enumerate another client's order. A client's
own Idempotency-Key is the client's choice and used as given.

Cheap by batching: one os.urandom() call and one hex encoding per 256 ids, sliced in one list
comprehension; handing out an id is a generator step. Hex is a valid order id (a KV key, a subject
token), needs no padding, and never starts with a '-' that a CLI would take for an option.
(Measured with timeit in docs/ingest.md; base32 would be shorter but is pure Python and 10x dearer.)
"""

from __future__ import annotations

import os
from collections.abc import Iterator

ID_BYTES = 16  # 128 random bits (>= 96)
BATCH = 256


def _random_ids() -> Iterator[str]:
    chars = 2 * ID_BYTES
    while True:
        batch = os.urandom(ID_BYTES * BATCH).hex()
        yield from [batch[i : i + chars] for i in range(0, len(batch), chars)]


class IdSource:
    """`IdSource()()` -> a new id."""

    def __init__(self) -> None:
        self._ids = _random_ids()
        # A forked child must not hand out the ids its parent has buffered.
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._ids = _random_ids()

    def __call__(self) -> str:
        return next(self._ids)
