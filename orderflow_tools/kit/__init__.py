"""The process kit of dev, chaos, bench and tests: free ports; starting a child (optionally in its
own session), waiting until it answers 200 (failing at once, with its log tail, if it exits), and
stopping it by its pid (SIGTERM, wait, SIGKILL); nats-server; Prometheus text; /proc CPU seconds.

    nats = NatsServer(tmp / "jetstream", tmp / "nats.log").start()
    ingest = Process(python_module("ingest"), env, tmp / "ingest.log", cwd=REPO).start()
    ingest.wait_http(f"http://127.0.0.1:{port}/readyz", timeout_s=20)
    ...
    ingest.stop(timeout_s=15); nats.stop()

A JetStream cluster is `NatsCluster(root, size=3).start()`: its `url` lists every node, and each
node can be killed, stopped and restarted on its own ports and store (kit/cluster.py).
"""

from orderflow_tools.kit.cluster import NatsCluster
from orderflow_tools.kit.cpu import cpu_s, descendants, pid_alive, tree_cpu_s
from orderflow_tools.kit.nats import NatsServer, nats_server_command
from orderflow_tools.kit.procs import (
    REPO,
    Process,
    StartError,
    find_tool,
    free_port,
    free_port_block,
    http_get,
    port_free,
    python_module,
    stop_all,
)
from orderflow_tools.kit.promtext import Sample, by_name, parse_metrics, select, total

__all__ = [
    "REPO",
    "NatsCluster",
    "NatsServer",
    "Process",
    "Sample",
    "StartError",
    "by_name",
    "cpu_s",
    "descendants",
    "find_tool",
    "free_port",
    "free_port_block",
    "http_get",
    "nats_server_command",
    "parse_metrics",
    "pid_alive",
    "port_free",
    "python_module",
    "select",
    "stop_all",
    "total",
    "tree_cpu_s",
]
