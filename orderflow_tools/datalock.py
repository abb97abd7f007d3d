"""One `orderflow dev` per data dir. Two nats-servers on one JetStream store corrupt it ("Recovering
stream state from index errored") and lose orders that were answered 200, so the data dir is locked
for the stack's whole life: flock(2) on `<data>/dev.lock`, which the kernel releases on any exit of
the holder, SIGKILL included (no stale lock to clean up). The file names the holder (pid, command)
so that a second start can say who is in the way."""

from __future__ import annotations

import fcntl
import os
import sys
from pathlib import Path

LOCK_FILE = "dev.lock"


class DataDirBusy(Exception):
    """str() names the dir and the process that holds it."""


def _command_of(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return " ".join(part.decode(errors="replace") for part in raw.split(b"\0") if part) or None


def lock_data_dir(data: Path) -> int:
    """Take the data dir's lock, or raise DataDirBusy at once. Returns the open descriptor, which
    holds the lock until this process exits (it is not inherited by children: O_CLOEXEC)."""
    data.mkdir(parents=True, exist_ok=True)
    path = data / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 4096).decode(errors="replace").strip()
        os.close(fd)
        pid = int(holder.split()[0]) if holder[:1].isdigit() else None
        who = "another process"
        if pid is not None:
            command = _command_of(pid)
            who = f"pid {pid}" + (f" ({command})" if command else "")
        raise DataDirBusy(
            f"data dir {data} is in use by {who}: two stacks on one JetStream store corrupt it; "
            "stop that one, or give this one its own --data-dir"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()} {' '.join(sys.argv)}\n".encode())
    return fd
