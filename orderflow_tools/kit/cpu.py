"""CPU seconds a process has used, read from /proc/<pid>/stat (utime + stime, in clock ticks), alone
or with every process below it (the multi-process ingest's children). Linux only."""

from __future__ import annotations

import os

_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name, or None once the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            # the command name may hold spaces and parentheses: split after the last ')'
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def pid_alive(pid: int) -> bool:
    """Whether /proc still lists `pid` (a zombie counts until it is reaped)."""
    return _stat(pid) is not None


def cpu_s(pid: int) -> float:
    """utime + stime of one live process, in seconds (0 once it is gone)."""
    fields = _stat(pid)
    return 0.0 if fields is None else (int(fields[11]) + int(fields[12])) / _TICK


def descendants(pid: int) -> list[int]:
    """pid and every live process below it, parents before their children."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields is not None:
                parent[int(entry)] = int(fields[1])
    out, frontier = [pid], [pid]
    while frontier:
        frontier = [c for c, p in parent.items() if p in frontier]
        out += frontier
    return out


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of pid and its live descendants (a child that has exited no longer counts)."""
    return sum(cpu_s(p) for p in descendants(pid))
