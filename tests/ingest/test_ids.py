"""Generated order ids (ingest/ids.py): >= 96 random bits each, valid ids, cheap, fork-safe."""

from __future__ import annotations

import os
import warnings

import pytest

from ingest.ids import ID_BYTES, IdSource
from orderflow import contract


def test_ids_carry_at_least_96_random_bits_and_are_valid_order_ids() -> None:
    source = IdSource()
    ids = [source() for _ in range(10_000)]  # spans many batches
    assert len(set(ids)) == len(ids)
    assert ID_BYTES * 8 >= 96
    assert all(len(i) == 2 * ID_BYTES and contract.valid_order_id(i) for i in ids)
    # Every hex digit position varies (no fixed prefix, no counter): a crude randomness check.
    for position in range(2 * ID_BYTES):
        assert len({i[position] for i in ids[:2000]}) == 16


@pytest.mark.procs
def test_a_forked_child_does_not_repeat_its_parents_buffered_ids() -> None:
    source = IdSource()
    source()  # a batch is buffered
    read, write = os.pipe()
    with warnings.catch_warnings():  # Python 3.12+ warns about fork() in a threaded process
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: report its next id and leave at once
        os.write(write, source().encode())
        os._exit(0)
    os.close(write)
    child_id = os.read(read, 64).decode()
    os.waitpid(pid, 0)
    os.close(read)
    assert child_id != source()
