"""`orderflow dev`: the whole system on one machine — an embedded nats-server (JetStream, data kept
in the data dir), the ingest and N workers as child processes. Ctrl-C stops them gracefully:
workers drain their jobs, the ingest finishes its requests, then NATS stops.

`--nats-cluster 3` runs a local 3-node JetStream cluster instead (client ports --nats-port and the
next ones, a store per node), R3 streams (ORDERFLOW_STREAM_REPLICAS=3) and every node's url for
the services: the production recipe of docs/kubernetes.md. A node that exits (`kill -9` its pid
to watch a failover) is started again a second later on its port and store, as its StatefulSet
would."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from orderflow.config import ConfigError, load_settings
from orderflow_tools.kit import NatsCluster, NatsServer, Process, StartError, port_free, python_module

# A killed cluster node is started again after this (the kubelet's restart of its container).
NODE_RESTART_DELAY_S = 1.0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("dev", help="run NATS, the ingest and workers locally (Ctrl-C drains and stops)")
    p.add_argument("--port", type=int, default=8080, help="ingest HTTP port (default 8080)")
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


def run_dev(args: argparse.Namespace) -> int:
    try:
        settings = load_settings("cli")  # validate the user's ORDERFLOW_* once, up front
    except ConfigError as exc:
        print(f"orderflow dev: {exc}", file=sys.stderr)
        return 2
    if args.nats_cluster and args.nats_cluster < 3:
        print(
            "orderflow dev: --nats-cluster needs at least 3 nodes (a JetStream cluster keeps a majority "
            "through the loss of one node only from 3 on)",
            file=sys.stderr,
        )
        return 2
    nats_ports = [args.nats_port + i for i in range(max(1, args.nats_cluster))]
    ports = [args.port, *nats_ports, *(args.worker_port + i for i in range(args.workers))]
    taken = [p for p in ports if not port_free(p)]
    if taken:
        print(
            f"orderflow dev: port(s) {', '.join(map(str, taken))} already in use; "
            "choose others with --port / --nats-port / --worker-port",
            file=sys.stderr,
        )
        return 2
    data = Path(args.data_dir).resolve()
    (data / "jetstream").mkdir(parents=True, exist_ok=True)
    # Children get their own session: the terminal's Ctrl-C reaches only this process, which then
    # sends each child exactly one SIGTERM (a second signal would force them).
    nats: NatsServer | NatsCluster
    try:
        if args.nats_cluster:
            nats = NatsCluster(data / "nats-cluster", args.nats_cluster, ports=nats_ports, new_session=True)
        else:
            nats = NatsServer(
                data / "jetstream", data / "nats-server.log", port=args.nats_port, new_session=True
            )
    except StartError as exc:  # no nats-server binary
        print(f"orderflow dev: {exc}", file=sys.stderr)
        return 1
    try:
        nats.start(timeout_s=60 if args.nats_cluster else 15)
    except (StartError, KeyboardInterrupt) as exc:  # its own session: Ctrl-C does not reach it
        nats.stop()
        if isinstance(exc, KeyboardInterrupt):
            return 130
        print(f"orderflow dev: {exc}", file=sys.stderr)
        return 1
    base_env = {**os.environ, "ORDERFLOW_NATS_URL": nats.url}
    base_env.pop("ORDERFLOW_HTTP_PORT", None)
    if args.nats_cluster:
        # R3: every stream and bucket survives the loss of any one node (ORDERFLOW_STREAM_REPLICAS).
        base_env["ORDERFLOW_STREAM_REPLICAS"] = str(min(3, args.nats_cluster))

    ingest_env = {**base_env, "ORDERFLOW_HTTP_PORT": str(args.port)}
    # No load balancer to take the ingest out of rotation here: stop at once unless told otherwise.
    ingest_env.setdefault("ORDERFLOW_SHUTDOWN_DELAY_S", "0")
    if args.mode:
        ingest_env["ORDERFLOW_MODE"] = args.mode
    if args.ingest_processes:
        ingest_env["ORDERFLOW_INGEST_PROCESSES"] = str(args.ingest_processes)
    children = {"ingest": Process(python_module("ingest"), ingest_env, new_session=True, name="ingest")}
    for i in range(args.workers):
        env = {
            **base_env,
            "ORDERFLOW_HTTP_PORT": str(args.worker_port + i),
            "ORDERFLOW_WORKER_ID": f"dev-worker-{i + 1}",
        }
        children[f"worker-{i + 1}"] = Process(
            python_module("worker"), env, new_session=True, name=f"worker-{i + 1}"
        )
    for child in children.values():
        child.start()

    if isinstance(nats, NatsCluster):
        nodes = "\n            ".join(
            f"{name} {node.url}  pid {node.process.pid}  monitoring {node.monitor_url}  (store {node.store_dir})"
            for name, node in nats.nodes.items()
        )
        where = f"""  NATS      cluster {nats.name}: {len(nats.nodes)} nodes, R{base_env["ORDERFLOW_STREAM_REPLICAS"]} streams, logs in {nats.log_dir}
            {nodes}
            a node that exits is started again (kill -9 one to watch a failover)"""
    else:
        where = f"""  NATS      {nats.url}   (JetStream store {data / "jetstream"}, log {data / "nats-server.log"})
            monitoring {nats.monitor_url}   /healthz  /jsz"""
    print(
        f"""
orderflow dev is up  (data in {data}; Ctrl-C drains and stops)
{where}
  ingest    http://127.0.0.1:{args.port}   POST /orders  GET /orders/{{id}}  /metrics  /openapi.json
  workers   {", ".join(f"http://127.0.0.1:{args.worker_port + i}/metrics" for i in range(args.workers))}
  work      {settings.work_s} s per order, {settings.concurrency} slots per worker

  try:  curl -s -XPOST localhost:{args.port}/orders -d '{{"product_id":"33","count":"3","username":"maksim"}}'
        orderflow status
""",
        flush=True,
    )

    stop = {"signals": 0}

    def on_signal(sig: int, _frame: object) -> None:
        stop["signals"] += 1

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    exit_code = 0
    down_since: dict[str, float] = {}
    while not stop["signals"]:
        dead = [name for name, p in children.items() if not p.alive()]
        if dead or (isinstance(nats, NatsServer) and not nats.alive()):
            print(f"orderflow dev: {', '.join(dead) or 'nats-server'} exited; stopping", file=sys.stderr)
            exit_code = 1
            break
        if isinstance(nats, NatsCluster):
            restart_nodes(nats, down_since)
        time.sleep(0.2)

    print("\norderflow dev: stopping — workers drain, ingest finishes its requests", flush=True)
    for p in children.values():
        p.send(signal.SIGTERM)
    forced = False
    budget = time.monotonic() + settings.drain_timeout_s + settings.shutdown_delay_s + 15
    while any(p.alive() for p in children.values()):
        if stop["signals"] > 1 and not forced:  # a second Ctrl-C: hand everything back now
            forced = True
            for p in children.values():
                p.send(signal.SIGTERM)
        if time.monotonic() > budget:
            for p in children.values():
                p.send(signal.SIGKILL)
        time.sleep(0.1)
    nats.stop()
    codes = {name: p.returncode() for name, p in children.items()}
    print(f"orderflow dev: stopped ({', '.join(f'{k} {v}' for k, v in codes.items())})")
    return exit_code or max((c for c in codes.values() if c is not None), default=0)


def restart_nodes(cluster: NatsCluster, down_since: dict[str, float]) -> None:
    """Start again, on its port and store, a node that exited NODE_RESTART_DELAY_S ago."""
    now = time.monotonic()
    for name, node in cluster.nodes.items():
        if node.alive():
            down_since.pop(name, None)
            continue
        if name not in down_since:
            down_since[name] = now
            print(
                f"orderflow dev: NATS node {name} exited ({node.process.returncode()}); "
                f"starting it again in {NODE_RESTART_DELAY_S:g}s",
                file=sys.stderr,
                flush=True,
            )
        elif now - down_since[name] >= NODE_RESTART_DELAY_S:
            node.process.start()
            down_since.pop(name)
            print(
                f"orderflow dev: NATS node {name} started again (pid {node.process.pid})",
                file=sys.stderr,
                flush=True,
            )
