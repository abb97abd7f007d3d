"""`orderflow dev`: the whole system on one machine — an embedded nats-server (JetStream, data kept
in the data dir), the ingest and N workers as child processes, bound to 127.0.0.1 unless told
otherwise. It says "up" once every part answers its readiness probe. Ctrl-C stops them gracefully:
workers drain their jobs (progress every few seconds), the ingest finishes its requests, then NATS
stops; a second Ctrl-C hands the workers' jobs back at once.

No child outlives it: each dies with it (Linux PR_SET_PDEATHSIG), and its own output survives a
closed pipe (`make run | tee log`, then Ctrl-C, ends tee first). A worker that drained or was
killed is started again, as a ReplicaSet would.

`--nats-cluster 3` runs a local 3-node JetStream cluster instead (client ports --nats-port and the
next ones, a store per node), R3 streams (ORDERFLOW_STREAM_REPLICAS=3) and every node's url for
the services: the production recipe of docs/kubernetes.md. A node that exits (`kill -9` its pid
to watch a failover) is started again a second later on its port and store, as its StatefulSet
would."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from orderflow import natsauth
from orderflow.config import Settings
from orderflow.envsettings import ConfigError, load_settings
from orderflow_tools.datalock import DataDirBusy, lock_data_dir
from orderflow_tools.kit import (
    NatsCluster,
    NatsServer,
    Process,
    StartError,
    http_get,
    parse_metrics,
    port_free,
    python_module,
)
from orderflow_tools.kit import total as metric_total

READY_TIMEOUT_S = 60.0
PROGRESS_EVERY_S = 5.0
STACK_FILE = "dev.json"  # what runs where, for `orderflow load` (removed on the way out)
# A killed cluster node is started again after this (the kubelet's restart of its container).
NODE_RESTART_DELAY_S = 1.0
Nats = NatsServer | NatsCluster


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("dev", help="run NATS, the ingest and workers locally (Ctrl-C drains and stops)")
    p.add_argument("--host", default=None, help="HTTP address of ingest and workers (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="ingest HTTP port (default 8080)")
    p.add_argument("--metrics-port", type=int, default=9180, help="ingest /metrics port (default 9180)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--worker-port", type=int, default=9090, help="first worker's HTTP port (default 9090)")
    p.add_argument("--nats-port", type=int, default=4222, help="embedded nats-server port (default 4222)")
    p.add_argument(
        "--nats-cluster",
        type=int,
        default=0,
        metavar="N",
        help="a local N-node JetStream cluster (N >= 3) with R3 streams, on --nats-port and the next N-1 ports",
    )
    p.add_argument("--data-dir", default=".orderflow", help="JetStream store and logs (default .orderflow)")
    p.add_argument("--mode", choices=("queued", "direct"), default=None, help="ingest mode (default queued)")
    p.add_argument("--ingest-processes", type=int, default=None, help="ingest processes sharing the port")
    p.set_defaults(func=run_dev)


class Console:
    """Prints that survive a closed pipe: once a stream's reader is gone (`| tee` ended by the same
    Ctrl-C), that stream goes to /dev/null and the shutdown carries on."""

    def say(self, text: str, stream: TextIO | None = None) -> None:
        stream = stream or sys.stdout
        try:
            print(text, file=stream, flush=True)
        except BrokenPipeError:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, stream.fileno())  # later writes, and the flush at exit, go nowhere
            os.close(devnull)

    def err(self, text: str) -> None:
        self.say(text, sys.stderr)


class MigrationRefused(Exception):
    """A consumer in the way that this process must not delete (a worker elsewhere uses it)."""


def _probe_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


async def _migrate(settings: Settings, console: Console) -> None:
    """Delete the consumers this configuration's would overlap (one task type -> several, or back).
    No worker runs yet, so nothing holds their messages; those stay in ORDERS for the new ones."""
    from orderflow import broker, consumers

    nc = await broker.connect(settings, "orderflow-dev", max_reconnect_attempts=1)
    try:
        for c in await consumers.conflicting_consumers(nc, settings):
            if c.waiting:
                raise MigrationRefused(
                    f"consumer {c.name} overlaps this ORDERFLOW_TASK_TYPES and a worker outside this "
                    f"`orderflow dev` is pulling from it; stop that worker, then start again"
                )
            await consumers.delete_consumer(nc, c.name)
            carried = f"; its {c.pending + c.ack_pending} messages stay queued" if not c.idle else ""
            console.err(
                f"orderflow dev: deleted consumer {c.name} (filters {', '.join(c.filters)}): it overlaps "
                f"the consumers of ORDERFLOW_TASK_TYPES={','.join(t.name for t in settings.task_types)}{carried}"
            )
    finally:
        await nc.close()


def _in_flight(port: int, host: str) -> int | None:
    answer = http_get(f"http://{host}:{port}/metrics", 1.0)
    if answer is None or answer[0] != 200:
        return None
    try:
        return int(metric_total(parse_metrics(answer[1].decode()), "orderflow_tasks_in_flight"))
    except ValueError:
        return None


def run_dev(args: argparse.Namespace) -> int:
    console = Console()
    try:
        settings = load_settings("cli")  # validate the user's ORDERFLOW_* once, up front
    except ConfigError as exc:
        console.err(f"orderflow dev: {exc}")
        return 2
    host = args.host or os.environ.get("ORDERFLOW_HTTP_HOST") or "127.0.0.1"
    probe = _probe_host(host)
    worker_ports = [args.worker_port + i for i in range(args.workers)]
    if args.nats_cluster and args.nats_cluster < 3:
        console.err(
            "orderflow dev: --nats-cluster needs at least 3 nodes (a JetStream cluster keeps a majority "
            "through the loss of one node only from 3 on)"
        )
        return 2
    data = Path(args.data_dir).resolve()
    try:
        lock_data_dir(data)  # held until this process exits, however it exits
    except DataDirBusy as exc:
        console.err(f"orderflow dev: {exc}")
        return 2
    nats_ports = [args.nats_port + i for i in range(max(1, args.nats_cluster))]
    taken = [p for p in (args.port, args.metrics_port, *worker_ports) if not port_free(p, probe)]
    taken += [p for p in nats_ports if not port_free(p)]
    if taken:
        console.err(
            f"orderflow dev: port(s) {', '.join(map(str, taken))} already in use; "
            "choose others with --port / --metrics-port / --nats-port / --worker-port"
        )
        return 2

    # Signals only count from here on: the first Ctrl-C stops gracefully, a second forces; nothing
    # below raises KeyboardInterrupt into a half-started stack.
    signals = {"n": 0}

    def on_signal(_sig: int, _frame: object) -> None:
        signals["n"] += 1

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    (data / "jetstream").mkdir(parents=True, exist_ok=True)
    nats: Nats
    try:
        # Own session: the terminal's Ctrl-C reaches only this process, which signals each child once.
        if args.nats_cluster:
            nats = NatsCluster(
                data / "nats-cluster",
                args.nats_cluster,
                ports=nats_ports,
                new_session=True,
                die_with_parent=True,
            )
        else:
            nats = NatsServer(
                data / "jetstream",
                data / "nats-server.log",
                port=args.nats_port,
                new_session=True,
                die_with_parent=True,
            )
    except StartError as exc:  # no nats-server binary
        console.err(f"orderflow dev: {exc}")
        return 1
    try:
        nats.start(timeout_s=60 if args.nats_cluster else 15)
    except StartError as exc:
        nats.stop()
        console.err(f"orderflow dev: {exc}")
        return 1
    if args.nats_cluster:
        # R3: every stream and bucket survives the loss of any one node (ORDERFLOW_STREAM_REPLICAS).
        os.environ["ORDERFLOW_STREAM_REPLICAS"] = str(min(3, args.nats_cluster))
        settings = replace(settings, stream_replicas=min(3, args.nats_cluster))
    try:
        asyncio.run(_migrate(replace(settings, nats_urls=tuple(nats.url.split(","))), console))
    except Exception as exc:  # refused, or NATS trouble: say it, start nothing
        nats.stop()
        console.err(f"orderflow dev: {natsauth.redact(str(exc))}")
        return 2 if isinstance(exc, MigrationRefused) else 1
    key = _local_key(settings, host, data, console)
    children = _children(args, host, nats.url, key)
    for child in children.values():
        child.start()

    ready = _wait_ready(children, nats, args, probe, signals, console)
    if ready:
        stack = _stack(args, settings, host, probe, nats)
        (data / STACK_FILE).write_text(json.dumps(stack, indent=2) + "\n")
        console.say(_banner(args, settings, probe, nats, data))
        pids = ", ".join(f"{n} {c.pid}" for n, c in children.items() if n.startswith("worker-"))
        console.say(f"  worker pids: {pids}  (kill -TERM one: it drains and a new one starts)\n")
    exit_code = 0 if ready or signals["n"] else 1  # Ctrl-C while it started is no failure
    down_since: dict[str, float] = {}
    while ready and not signals["n"]:
        dead = [name for name, p in children.items() if not p.alive()]
        for name in [n for n in dead if _replaceable(n, children[n].returncode())]:
            # A worker that drained (SIGTERM: exit 0) or was killed is started again, as a
            # ReplicaSet and the kubelet would: `kill -TERM <pid>` is a scale-down you can try.
            code = children[name].returncode()
            children[name].start()
            console.say(f"orderflow dev: {name} exited ({code}); started a new one, pid {children[name].pid}")
            dead.remove(name)
        if dead or (isinstance(nats, NatsServer) and not nats.alive()):
            console.err(f"orderflow dev: {', '.join(dead) or 'nats-server'} exited; stopping")
            exit_code = 1
            break
        if isinstance(nats, NatsCluster):
            _restart_nodes(nats, down_since, console)
        time.sleep(0.2)

    codes = _stop(children, nats, settings, args, probe, signals, console)
    (data / STACK_FILE).unlink(missing_ok=True)
    console.err(f"orderflow dev: stopped ({', '.join(f'{k} {v}' for k, v in codes.items())})")
    return exit_code or max((c for c in codes.values() if c is not None and c > 0), default=0)


def _restart_nodes(cluster: NatsCluster, down_since: dict[str, float], console: Console) -> None:
    """Start again, on its port and store, a node that exited NODE_RESTART_DELAY_S ago."""
    now = time.monotonic()
    for name, node in cluster.nodes.items():
        if node.alive():
            down_since.pop(name, None)
        elif name not in down_since:
            down_since[name] = now
            console.err(
                f"orderflow dev: NATS node {name} exited ({node.process.returncode()}); "
                f"starting it again in {NODE_RESTART_DELAY_S:g}s"
            )
        elif now - down_since[name] >= NODE_RESTART_DELAY_S:
            node.process.start()
            down_since.pop(name)
            console.err(f"orderflow dev: NATS node {name} started again (pid {node.process.pid})")


def _replaceable(name: str, code: int | None) -> bool:
    """A worker gone by a signal's doing (exit 0 after its drain, or killed): not a failure of its
    own. One that exits 1 or 2 (it cannot start, its config is bad) stops dev instead."""
    return name.startswith("worker-") and code is not None and code <= 0


def _local_key(settings: Settings, host: str, data: Path, console: Console) -> Path | None:
    """The ingest's key file on a non-loopback address: the user's (ORDERFLOW_API_KEYS_FILE), else
    an admin key minted for this run (unless ORDERFLOW_AUTH_OPEN) into the data dir (`api-key`, 0600; its hash in
    `api-keys.json`), never printed. On loopback the ingest runs open (and says so in one loud
    line), so the README's curl needs no key."""
    from orderflow import auth

    if settings.api_keys_file or settings.auth_open or auth.is_loopback(host):
        return None
    key = auth.new_key()
    for name, text in (
        ("api-key", key + "\n"),
        ("api-keys.json", json.dumps({"keys": [auth.entry("local", auth.SCOPES, key)]})),
    ):
        fd = os.open(data / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
    console.say(
        f"orderflow dev: the ingest listens on {host}, so it takes API keys only; this run's admin key "
        f'is in {data / "api-key"}:\n  curl -H "Authorization: Bearer $(cat {data / "api-key"})" ...'
    )
    return data / "api-keys.json"


def _children(args: argparse.Namespace, host: str, nats_url: str, keys: Path | None) -> dict[str, Process]:
    base_env = {**os.environ, "ORDERFLOW_NATS_URL": nats_url, "ORDERFLOW_HTTP_HOST": host}
    base_env.pop("ORDERFLOW_HTTP_PORT", None)
    ingest_env = {
        **base_env,
        "ORDERFLOW_HTTP_PORT": str(args.port),
        "ORDERFLOW_METRICS_PORT": str(args.metrics_port),
    }
    if keys is not None:
        ingest_env["ORDERFLOW_API_KEYS_FILE"] = str(keys)
    # No load balancer to take the ingest out of rotation here: stop at once unless told otherwise.
    ingest_env.setdefault("ORDERFLOW_SHUTDOWN_DELAY_S", "0")
    if args.mode:
        ingest_env["ORDERFLOW_MODE"] = args.mode
    if args.ingest_processes:
        ingest_env["ORDERFLOW_INGEST_PROCESSES"] = str(args.ingest_processes)

    def service(module: str, env: dict[str, str], name: str) -> Process:
        # Its own session (one signal from us, not the terminal's), dies with us, holds a SIGTERM
        # that comes while it still imports, and writes nothing to a pipe that may close.
        return Process(
            python_module(module),
            env,
            new_session=True,
            name=name,
            die_with_parent=True,
            hold_stop_signals=True,
            stdout_to_stderr=True,
        )

    children = {"ingest": service("ingest", ingest_env, "ingest")}
    for i in range(args.workers):
        env = {
            **base_env,
            "ORDERFLOW_HTTP_PORT": str(args.worker_port + i),
            "ORDERFLOW_WORKER_ID": f"dev-worker-{i + 1}",
        }
        children[f"worker-{i + 1}"] = service("worker", env, f"worker-{i + 1}")
    return children


def _ports(args: argparse.Namespace) -> dict[str, int]:
    return {"ingest": args.port, **{f"worker-{i + 1}": args.worker_port + i for i in range(args.workers)}}


def _wait_ready(
    children: dict[str, Process],
    nats: Nats,
    args: argparse.Namespace,
    probe: str,
    signals: dict[str, int],
    console: Console,
) -> bool:
    """Until every part answers /readyz 200. False (said why) if one exits, time runs out or a
    signal comes first."""
    waiting = dict(_ports(args))
    deadline = time.monotonic() + READY_TIMEOUT_S
    while waiting:
        if signals["n"]:
            return False
        for name, port in list(waiting.items()):
            child = children[name]
            if not child.alive():
                console.err(f"orderflow dev: {name} exited with {child.returncode()} before it was ready")
                return False
            answer = http_get(f"http://{probe}:{port}/readyz", 1.0)
            if answer is not None and answer[0] == 200:
                del waiting[name]
        if isinstance(nats, NatsServer) and not nats.alive():
            console.err("orderflow dev: nats-server exited")
            return False
        if waiting and time.monotonic() > deadline:
            console.err(
                f"orderflow dev: not ready after {READY_TIMEOUT_S:.0f}s: {', '.join(waiting)} "
                "(its /readyz does not answer 200; see its log lines above)"
            )
            return False
        time.sleep(0.1)
    return True


def _stop(
    children: dict[str, Process],
    nats: Nats,
    settings: Settings,
    args: argparse.Namespace,
    probe: str,
    signals: dict[str, int],
    console: Console,
) -> dict[str, int | None]:
    drain_s = settings.drain_timeout_s
    console.err(
        f"\norderflow dev: stopping — workers drain their jobs (at most {drain_s:g} s), the ingest "
        "finishes its requests; Ctrl-C again hands the jobs back now"
    )
    for p in children.values():
        p.send(signal.SIGTERM)
    seen_signals = signals["n"]
    started = time.monotonic()
    budget = started + drain_s + settings.shutdown_delay_s + 15
    next_progress = started + 1.0
    workers = {name: port for name, port in _ports(args).items() if name != "ingest"}
    while any(p.alive() for p in children.values()):
        now = time.monotonic()
        if signals["n"] > seen_signals:  # another Ctrl-C: hand everything back now
            seen_signals = signals["n"]
            console.err("orderflow dev: handing the running jobs back now")
            for p in children.values():
                p.send(signal.SIGTERM)
        if now > budget:
            for p in children.values():
                p.send(signal.SIGKILL)
        if now >= next_progress:
            next_progress = now + PROGRESS_EVERY_S
            _progress(children, workers, probe, drain_s - (now - started), console)
        time.sleep(0.1)
    nats.stop()
    return {name: p.returncode() for name, p in children.items()}


def _progress(
    children: dict[str, Process], workers: dict[str, int], probe: str, left_s: float, console: Console
) -> None:
    jobs = {name: _in_flight(port, probe) for name, port in workers.items() if children[name].alive()}
    if not jobs:
        return
    counts = ", ".join(f"{name} {'stopping' if n is None else n}" for name, n in jobs.items())
    left = sum(n or 0 for n in jobs.values())
    console.err(
        f"orderflow dev: draining — {left} job{'s' if left != 1 else ''} left ({counts}), "
        f"{max(0.0, left_s):.0f} s of the drain budget left; Ctrl-C again hands them back"
    )


def _stack(args: argparse.Namespace, settings: Settings, host: str, probe: str, nats: Nats) -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "nats_url": nats.url,
        "ingest_url": f"http://{probe}:{args.port}",
        "ingest_metrics": f"http://{probe}:{args.metrics_port}/metrics",
        "worker_metrics": [f"http://{probe}:{p}/metrics" for n, p in _ports(args).items() if n != "ingest"],
        "workers": args.workers,
        "task_types": {t.name: t.concurrency for t in settings.task_types},
        "work_s": str(settings.work_s),
        "mode": args.mode or settings.mode,
        "consumer_info_interval_s": settings.consumer_info_interval_s,
        "host": host,
    }


def _where(nats: Nats, data: Path) -> str:
    if isinstance(nats, NatsCluster):
        nodes = "\n            ".join(
            f"{name} {node.url}  pid {node.process.pid}  monitoring {node.monitor_url}"
            for name, node in nats.nodes.items()
        )
        return f"""  NATS      cluster {nats.name}: {len(nats.nodes)} nodes, R{min(3, len(nats.nodes))} streams, logs in {nats.log_dir}
            {nodes}
            a node that exits is started again (kill -9 one to watch a failover)"""
    return f"""  NATS      {nats.url}   (JetStream store {data / "jetstream"}, log {data / "nats-server.log"})
            monitoring {nats.monitor_url}   /healthz  /jsz"""


def _banner(args: argparse.Namespace, settings: Settings, probe: str, nats: Nats, data: Path) -> str:
    slots = ", ".join(f"{t.name} {t.concurrency}" for t in settings.task_types)
    workers = ", ".join(f"http://{probe}:{args.worker_port + i}/metrics" for i in range(args.workers))
    return f"""
orderflow dev is up  (data in {data}; Ctrl-C drains and stops)
{_where(nats, data)}
  ingest    http://{probe}:{args.port}   POST /orders  GET /orders/{{id}}  /openapi.json
            http://{probe}:{args.metrics_port}/metrics
  workers   {workers}
  work      {settings.work_s} s per order; slots per worker: {slots}

  try:  curl -s -XPOST localhost:{args.port}/orders -d '{{"product_id":"33","count":"3","username":"maksim"}}'
        .venv/bin/orderflow status
"""
