"""bench/console_cost: what an open console overview costs NATS (issue #24, item 4). The stack of
`make bench-e2e` (nats-server, the ingest, the workers, k6 at a constant rate; bench/e2e_procs.py)
with `orderflow console` running in every run; in the `open` runs, --clients clients hold the
overview open as a browser does (GET / once, then the Server-Sent Events of /events). The runs
alternate (idle, open, idle, open, ...), each on a fresh stack, same rate and length, so that other
load on a shared machine spreads over both.

    python -m bench.console_cost [--rate 1000] [--duration 30] [--rounds 2] [--clients 1]
                                 [--ingest-procs P] [--workers W] [--job noop|tiny]

Prints, per run and as means: nats-server's CPU seconds while k6 ran (/proc/PID/stat utime+stime),
per 1000 accepted orders, the console's own CPU and the live updates the clients got; then the open
overview's extra NATS CPU per order over the idle runs, in %. Figures only: it does not pass or fail
on timing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.e2e_procs import Stack, StackConfig
from bench.e2e_run import Progress, run_load
from orderflow import auth
from orderflow_tools.kit import REPO, Process, cpu_s, free_port, python_module


@dataclass(frozen=True)
class Run:
    variant: str  # idle | open
    accepted: int
    nats_cpu_s: float
    console_cpu_s: float
    updates: int  # Server-Sent Events the clients received
    load_avg: float
    quiet_cpu_per_s: float  # nats-server's CPU per second before the load, with no orders

    @property
    def nats_ms_per_1000(self) -> float:
        return self.nats_cpu_s * 1e3 / max(1, self.accepted) * 1000


class Viewer(threading.Thread):
    """One browser's worth of overview: the page once, then the live updates until stopped."""

    def __init__(self, base: str, key: str) -> None:
        super().__init__(daemon=True)
        self.base, self.key = base, key
        self.updates = 0
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            self._view()
        except httpx.HTTPError:
            if not self.stop.is_set():  # the console went away while the load ran
                raise

    def _view(self) -> None:
        with httpx.Client(
            base_url=self.base, headers={"Authorization": f"Bearer {self.key}"}, timeout=30
        ) as h:
            h.get("/").raise_for_status()
            with h.stream("GET", "/events") as live:
                for line in live.iter_lines():
                    self.updates += line.startswith("data: ")
                    if self.stop.is_set():
                        return


def start_console(stack: Stack, workdir: Path) -> tuple[Process, str, str]:
    """The console against the stack's NATS; its process, URL and an orders:read key."""
    assert stack.nats is not None
    key = auth.new_key()
    keys = workdir / "console-keys.json"
    keys.write_text(json.dumps({"keys": [auth.entry("bench", [auth.READ], key)]}))
    port = free_port()
    env = {"ORDERFLOW_NATS_URL": stack.nats.url, "ORDERFLOW_API_KEYS_FILE": str(keys)}
    proc = Process(
        [*python_module("orderflow_tools.cli"), "console", "--port", str(port)],
        {**{k: v for k, v in os.environ.items() if not k.startswith("ORDERFLOW_")}, **env},
        workdir / "console.log",
        cwd=REPO,
        new_session=True,
        name="console",
    ).start()
    base = f"http://127.0.0.1:{port}"
    proc.wait_http(base + "/signin", 30)
    return proc, base, key


def one(args: argparse.Namespace, variant: str, n: int) -> Run:
    cfg = StackConfig(args.ingest_procs, args.workers, args.concurrency, args.job)
    stack = Stack(cfg)
    stack.start()
    viewers: list[Viewer] = []
    console: Process | None = None
    try:
        console, base, key = start_console(stack, stack.workdir)
        if variant == "open":
            viewers = [Viewer(base, key) for _ in range(args.clients)]
            for v in viewers:
                v.start()
        assert console.pid is not None
        quiet = _quiet_cpu_s(stack, args.quiet) / args.quiet if args.quiet else 0.0
        cpu0 = cpu_s(console.pid)
        r = run_load(
            stack,
            variant,
            "console",
            args.rate,
            args.duration,
            60.0,
            stack.workdir,
            f"{variant}-{n}",
            Progress(),
        )
        console_cpu = cpu_s(console.pid) - cpu0
    finally:
        for v in viewers:
            v.stop.set()
        if console is not None:
            console.kill()
        stack.stop()
    return Run(
        variant,
        r.k6.accepted,
        r.cpu_load_s["nats"],
        console_cpu,
        sum(v.updates for v in viewers),
        r.load_avg[0],
        quiet,
    )


def _quiet_cpu_s(stack: Stack, seconds: float) -> float:
    """nats-server's CPU seconds over `seconds` with no orders coming: the console's own share,
    free of the load's noise."""
    time.sleep(2.0)  # the viewers' first page read and the stack's start-up are done
    pids = stack.pids()["nats"]
    cpu0 = sum(cpu_s(p) for p in pids)
    time.sleep(seconds)
    return sum(cpu_s(p) for p in pids) - cpu0


def report(args: argparse.Namespace, runs: list[Run]) -> None:
    print(
        f"\nconsole cost: {args.rate}/s for {args.duration:g}s a run, {args.clients} overview(s) open in `open`"
    )
    print(f"{'run':<6}{'accepted':>9}{'nats CPU s':>11}{'ms/1000 orders':>15}{'console CPU s':>14}"
          f"{'updates':>8}{'load':>6}{'quiet nats ms/s':>16}")  # fmt: skip
    for r in runs:
        print(
            f"{r.variant:<6}{r.accepted:>9}{r.nats_cpu_s:>11.2f}{r.nats_ms_per_1000:>15.1f}"
            f"{r.console_cpu_s:>14.2f}{r.updates:>8}{r.load_avg:>6.1f}{r.quiet_cpu_per_s * 1e3:>16.2f}"
        )
    idle = [r for r in runs if r.variant == "idle"]
    opened = [r for r in runs if r.variant == "open"]
    mean = {
        v: statistics.mean(r.nats_ms_per_1000 for r in rs) for v, rs in (("idle", idle), ("open", opened))
    }
    pairs = " ".join(
        f"{(o.nats_ms_per_1000 / i.nats_ms_per_1000 - 1) * 100:+.1f}%"
        for i, o in zip(idle, opened, strict=True)
    )
    print(
        f"under load, nats CPU per 1000 orders: idle {mean['idle']:.1f} ms, open {mean['open']:.1f} ms:"
        f" {(mean['open'] / mean['idle'] - 1) * 100:+.1f} % (each pair: {pairs})"
    )
    if args.quiet:
        own = statistics.mean(r.quiet_cpu_per_s for r in opened) - statistics.mean(
            r.quiet_cpu_per_s for r in idle
        )
        loaded = statistics.mean(r.nats_cpu_s for r in idle) / args.duration
        print(
            f"with no load, the open overview's own nats CPU: {own * 1e3:+.2f} ms/s;"
            f" of nats' {loaded * 1e3:.0f} ms/s under this load: {own / loaded * 100:+.1f} % (the goal: at most 5 %)"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=int, default=1000, help="arrivals per second (default 1000, as bench-e2e)")
    ap.add_argument("--duration", type=float, default=30, help="seconds of load per run (default 30)")
    ap.add_argument("--rounds", type=int, default=2, help="idle/open pairs (default 2)")
    ap.add_argument("--clients", type=int, default=1, help="overviews held open in the open runs")
    ap.add_argument("--ingest-procs", type=int, default=1)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--concurrency", type=int, default=100)
    ap.add_argument("--job", choices=("noop", "tiny"), default="noop")
    ap.add_argument(
        "--quiet", type=float, default=10, help="seconds of no load measured before each run's load (0: none)"
    )
    args = ap.parse_args(argv)
    if args.rounds < 1 or args.clients < 1 or args.duration <= 0:
        ap.error("--rounds and --clients at least 1, --duration above 0")
    runs = [one(args, variant, n) for n in range(args.rounds) for variant in ("idle", "open")]
    report(args, runs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
