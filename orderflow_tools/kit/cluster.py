"""A local JetStream cluster for dev, chaos and tests: N `NatsServer` nodes on loopback, each with
its own store, client, monitoring and route ports, a server name (JetStream clustering needs one),
one cluster name, and routes to the others.

    cluster = NatsCluster(tmp / "nats", size=3).start()  # until a meta leader, every node healthy
    env["ORDERFLOW_NATS_URL"] = cluster.url             # every node's url, comma-separated
    env["ORDERFLOW_STREAM_REPLICAS"] = "3"
    leader = cluster.stream_leader("ORDERS")            # the node serving the stream's writes
    cluster.kill(leader); ...; cluster.restart_node(leader)  # same ports, same store

A node keeps its ports and its store across kill / stop / restart, as a StatefulSet pod keeps its
name and volume. Who leads what is read from the nodes' monitoring port: `/jsz` (the meta group's
leader) and `/jsz?streams=true` (each stream's `cluster.leader`, as the JS API's STREAM.INFO has it).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Self

from orderflow_tools.kit.nats import NatsServer
from orderflow_tools.kit.procs import StartError, free_port, http_get, stop_all


class NatsCluster:
    """`size` nats-server -js nodes named n1..nN forming the cluster `name`, each storing under
    root/<node> and logging to log_dir/nats-<node>.log (log_dir defaults to root). `ports` fixes the
    client ports (dev: --nats-port and the next ones); the other ports are free ones."""

    def __init__(
        self,
        root: Path,
        size: int = 3,
        *,
        name: str = "orderflow",
        ports: Sequence[int] | None = None,
        binary: str | None = None,
        new_session: bool = False,
        log_dir: Path | None = None,
        die_with_parent: bool = False,
    ) -> None:
        if size < 1:
            raise ValueError(f"a cluster needs at least one node, not {size}")
        if ports is not None and len(ports) != size:
            raise ValueError(f"{len(ports)} client ports for {size} nodes")
        self.name = name
        self.root = root
        self.log_dir = log_dir or root
        route_ports = [free_port() for _ in range(size)]
        self.nodes: dict[str, NatsServer] = {}
        for i in range(size):
            node = f"n{i + 1}"
            routes = ",".join(f"nats://127.0.0.1:{p}" for j, p in enumerate(route_ports) if j != i)
            args = ["--server_name", node, "--cluster_name", name]
            args += ["--cluster", f"nats://127.0.0.1:{route_ports[i]}"]
            if routes:
                args += ["--routes", routes]
            root.mkdir(parents=True, exist_ok=True)
            self.log_dir.mkdir(parents=True, exist_ok=True)
            self.nodes[node] = NatsServer(
                root / node,
                self.log_dir / f"nats-{node}.log",
                port=None if ports is None else ports[i],
                binary=binary,
                name=f"nats-{node}",
                extra_args=args,
                new_session=new_session,
                die_with_parent=die_with_parent,
            )

    # --- where it is --------------------------------------------------------------------------
    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes.values()]

    @property
    def url(self) -> str:
        """Every node's url, comma-separated (ORDERFLOW_NATS_URL takes a list)."""
        return ",".join(self.urls)

    def __iter__(self) -> Iterator[NatsServer]:
        return iter(self.nodes.values())

    def __getitem__(self, node: str) -> NatsServer:
        return self.nodes[node]

    def alive(self) -> bool:
        """Every node runs (a killed node not yet restarted makes this False)."""
        return all(n.alive() for n in self.nodes.values())

    # --- who leads ----------------------------------------------------------------------------
    def _jsz(self, node: NatsServer, query: str = "") -> dict[str, Any] | None:
        if not node.alive():
            return None
        answer = http_get(f"{node.monitor_url}/jsz{query}", 2.0)
        if answer is None or answer[0] != 200:
            return None
        try:
            data: dict[str, Any] = json.loads(answer[1])
        except ValueError:
            return None
        return data

    def meta_leader(self) -> str | None:
        """The meta group's leader, when every live node names the same one (None during an election)."""
        seen = set()
        for node in self.nodes.values():
            jsz = self._jsz(node)
            if jsz is None:
                continue
            seen.add((jsz.get("meta_cluster") or {}).get("leader") or None)
        return seen.pop() if len(seen) == 1 else None

    def stream_leader(self, stream: str, account: str = "$G") -> str | None:
        """The node that leads `stream` by its own account (a follower's view may lag behind an
        election): None while there is none, or the stream does not exist yet."""
        for name, node in self.nodes.items():
            jsz = self._jsz(node, "?streams=true")
            for acc in (jsz or {}).get("account_details") or []:
                if acc.get("name") != account:
                    continue
                for detail in acc.get("stream_detail") or []:
                    if detail.get("name") == stream and (detail.get("cluster") or {}).get("leader") == name:
                        return name
        return None

    def wait_stream_leader(self, stream: str, timeout_s: float = 30.0, not_on: str | None = None) -> str:
        """Until `stream` has a leader (other than `not_on`, e.g. the node just killed)."""
        deadline = time.monotonic() + timeout_s
        while True:
            leader = self.stream_leader(stream)
            if leader is not None and leader != not_on:
                return leader
            if time.monotonic() > deadline:
                raise StartError(f"stream {stream} has no leader (other than {not_on}) after {timeout_s:g}s")
            time.sleep(0.1)

    # --- life -----------------------------------------------------------------------------------
    def start(self, timeout_s: float = 45.0) -> Self:
        """Every node at once (each waits for its routes), then until the cluster is healthy."""
        for node in self.nodes.values():
            node.process.start()
        try:
            for node in self.nodes.values():
                node.process.wait_http(f"{node.monitor_url}/healthz?js-enabled-only=true", timeout_s)
            self.wait_healthy(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_healthy(self, timeout_s: float = 45.0) -> str:
        """Until every live node answers /healthz 200 (JetStream current with the meta leader, its
        streams and consumers caught up) and all agree on a meta leader; that leader's name."""
        deadline = time.monotonic() + timeout_s
        while True:
            live = [n for n in self.nodes.values() if n.alive()]
            healthy = all((a := http_get(f"{n.monitor_url}/healthz", 2.0)) and a[0] == 200 for n in live)
            leader = self.meta_leader() if healthy and live else None
            if leader is not None:
                return leader
            if time.monotonic() > deadline:
                logs = "".join(n.process.log_tail(1500) for n in self.nodes.values())
                raise StartError(f"cluster {self.name} not healthy within {timeout_s:g}s{logs}")
            time.sleep(0.1)

    def kill(self, node: str) -> int | None:
        """SIGKILL one node: a crash, its store as it was on disk."""
        return self.nodes[node].kill()

    def stop_node(self, node: str, timeout_s: float = 15.0) -> int | None:
        """SIGTERM one node (it hands its leaderships over and flushes), SIGKILL after timeout_s."""
        return self.nodes[node].stop(timeout_s)

    def start_node(self, node: str, timeout_s: float = 45.0) -> Self:
        """Start a stopped or killed node again, same ports and store; until the cluster is healthy
        (the node has caught up)."""
        server = self.nodes[node]
        server.process.start()
        server.process.wait_http(f"{server.monitor_url}/healthz?js-enabled-only=true", timeout_s)
        self.wait_healthy(timeout_s)
        return self

    def restart_node(self, node: str, timeout_s: float = 45.0) -> Self:
        """Stop (unless already down) and start one node."""
        if self.nodes[node].alive():
            self.stop_node(node)
        return self.start_node(node, timeout_s)

    def restart(self, timeout_s: float = 45.0, first: str | None = None) -> list[str]:
        """A rolling restart: one node after the other, each only once the cluster is healthy again
        (as a StatefulSet rolls with a readiness probe on /healthz); `first` goes first. The order."""
        order = sorted(self.nodes, key=lambda n: n != first)
        for node in order:
            self.restart_node(node, timeout_s)
        return order

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM every node at once, SIGKILL after timeout_s."""
        stop_all([n.process for n in self.nodes.values()], timeout_s)
