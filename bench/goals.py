"""bench/goals: issue #11's goals in one table, from one bench/worker and one bench/e2e run (their
--json files, taken in the same session on the same machine, both with --baseline-tree):

    python -m bench.goals WORKER.json E2E.json [--split "P1 W1 c100 noop"] [--markdown]

Rows: worker no-op jobs/s (baseline, now, raw loop, FastStream) and now's ratios to the raw loop
(goal >= 0.5x) and FastStream (>= 2x); stored JetStream writes per order (<= 2); system CPU per
order in µs (nats + ingest + workers) for baseline, now and raw, and now's ratios to the baseline
(<= 0.5x) and the raw pipeline (<= 2x). `--markdown` also prints docs/e2e.md's before/after rows
(one per tree: baseline, the --tree steps, now). It only reads figures; it measures nothing and passes or fails nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bench.e2e_report import GOAL_CPU_VS_BASELINE, GOAL_CPU_VS_RAW, GOAL_WRITES_PER_ORDER
from bench.worker import GOAL_FASTSTREAM, GOAL_RAW

COLUMNS = ("baseline", "now", "raw", "faststream")


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _f(x: float | None, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def goals(worker: dict[str, Any], e2e: dict[str, Any], split: str | None) -> tuple[list[str], dict[str, Any]]:
    ab: dict[str, dict[str, Any]] = e2e.get("ab") or {}
    if not ab:
        raise SystemExit("bench/goals: the e2e JSON has no A/B summary (run bench.e2e with --json)")
    split = split or next(iter(ab))
    if split not in ab:
        raise SystemExit(f"bench/goals: no split {split!r} in the e2e JSON (has: {', '.join(ab)})")
    pipes = ab[split]
    cont = worker.get("contenders") or {}
    jobs = {k: cont[k]["jobs_per_s"] for k in COLUMNS if k in cont}
    writes = {k: pipes[k]["writes_per_order"] for k in COLUMNS if k in pipes}
    cpu = {k: pipes[k]["system_us_per_order"] for k in COLUMNS if k in pipes}
    ratios = {
        "jobs_now_over_raw": _ratio(jobs.get("now"), jobs.get("raw")),
        "jobs_now_over_faststream": _ratio(jobs.get("now"), jobs.get("faststream")),
        "cpu_now_over_baseline": _ratio(cpu.get("now"), cpu.get("baseline")),
        "cpu_now_over_raw": _ratio(cpu.get("now"), cpu.get("raw")),
    }
    head = f"{'':<38}" + "".join(f"{c:>12}" for c in COLUMNS) + f"{'now':>10}  goal"
    lines = [
        f"issue #11 goals: bench/worker ({worker.get('args', {}).get('orders', '?')} orders) and bench/e2e "
        f"split {split} (rate {pipes.get('now', {}).get('rate', '?')}/s); baseline "
        f"{(e2e.get('machine') or {}).get('baseline', {}).get('commit', '-')}, now "
        f"{(e2e.get('machine') or {}).get('commit', '?')}",
        head,
        "-" * len(head),
    ]

    def row(name: str, values: dict[str, float], fmt: str) -> str:
        return f"{name:<38}" + "".join(f"{_f(values.get(c), fmt):>12}" for c in COLUMNS)

    def goal(name: str, value: float | None, text: str) -> str:
        return f"{name:<38}{'':>48}{_f(value, '.2f') + 'x':>10}  {text}"

    lines += [
        row("worker no-op jobs/s (bench/worker)", jobs, ".0f"),
        goal("  now / raw fetch+ack loop", ratios["jobs_now_over_raw"], f">= {GOAL_RAW:g}x"),
        goal("  now / FastStream (fair)", ratios["jobs_now_over_faststream"], f">= {GOAL_FASTSTREAM:g}x"),
        row("stored JetStream writes/order (e2e)", writes, ".2f")
        + f"{_f(writes.get('now'), '.2f'):>10}  <= {GOAL_WRITES_PER_ORDER:g}",
        row("system CPU/order, us (e2e)", cpu, ".0f"),
        goal("  now / baseline", ratios["cpu_now_over_baseline"], f"<= {GOAL_CPU_VS_BASELINE:g}x"),
        goal("  now / raw pipeline", ratios["cpu_now_over_raw"], f"<= {GOAL_CPU_VS_RAW:g}x"),
    ]
    return lines, {"split": split, "jobs_per_s": jobs, "writes_per_order": writes, "cpu_us": cpu, **ratios}


def markdown(worker: dict[str, Any], e2e: dict[str, Any], split: str) -> list[str]:
    """docs/e2e.md's before/after rows, one per orderflow tree in run order (baseline, the steps
    given with --tree, now): label | commit | jobs/s | writes/order | µs/order. The "what changed"
    text is the reader's to write."""
    pipes = e2e["ab"][split]
    cont = worker.get("contenders") or {}
    trees = (e2e.get("machine") or {}).get("trees") or {}
    rows = []
    for label, m in pipes.items():
        if label == "raw":
            continue
        jobs = cont.get(label, {}).get("jobs_per_s")
        commit = trees.get(label, {}).get("commit", "?")
        rows.append(
            f"| {label} | {commit} | {_f(jobs, '.0f')} | {m['writes_per_order']:.2f} | "
            f"{m['system_us_per_order']:.0f} |"
        )
    return ["| what changed | commit | jobs/s | writes/order | µs/order |", "|---|---|---|---|---|", *rows]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("worker_json", type=Path, help="bench.worker --json OUT")
    ap.add_argument("e2e_json", type=Path, help="bench.e2e --json OUT")
    ap.add_argument("--split", default=None, help="which e2e split (default: the first)")
    ap.add_argument("--markdown", action="store_true", help="also print docs/e2e.md's before/after rows")
    args = ap.parse_args(argv)
    try:
        worker = json.loads(args.worker_json.read_text())
        e2e = json.loads(args.e2e_json.read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"bench/goals: {exc}") from None
    lines, figures = goals(worker, e2e, args.split)
    print("\n".join(lines))
    if args.markdown:
        print()
        print("\n".join(markdown(worker, e2e, figures["split"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
