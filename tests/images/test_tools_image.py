"""The operator CLI from orderflow/tools (docs/kubernetes.md, "The CLI in the cluster"): `orderflow
status`, `cancel`, `consumers` and `dlq` run from the image, read-only, as uid 10001, with no
capabilities, against a real nats-server, as `kubectl run` would run them; a NATS it cannot reach
is a fast, clear failure. The image holds the tools and the runtime, not the run/dev extras."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness import REPO, NatsServer, free_port, http, run, statuses, wait_until
from podman_engine import Images, Podman, container_flags, env_flags

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def orderflow(podman: Podman, images: Images, nats_url: str, *args: str) -> Any:
    """`orderflow ARGS` in a throwaway container of the tools image (its CMD replaced by the args,
    as `kubectl run ... -- orderflow ...` does)."""
    return podman.run(
        f"orderflow {' '.join(args)} in {images.tools}",
        "run", "--rm", "--no-healthcheck", *container_flags(),
        *env_flags({"ORDERFLOW_NATS_URL": nats_url}), images.tools, "orderflow", *args,
        check=False, timeout=120,
    )  # fmt: skip


def play_the_docs_cli_pod(podman: Podman, images: Images, nats_url: str, tmp_path: Path) -> str:
    """docs/kubernetes.md's CLI Pod (tests/k8s/test_cli_pod.py checks it as written) played with
    `podman kube play --network host`, changed only where this test's NATS differs: the test's
    image tag, `orderflow consumers` for the sleep, the host's nats-server URL, and no NATS identity
    (that server has none: the *_FILE settings and their two Secret volumes go). Its output."""
    text = (REPO / "docs" / "kubernetes.md").read_text().split("### The CLI in the cluster", 1)[1]
    pod = yaml.safe_load(text.split("```yaml\n", 1)[1].split("```", 1)[0])
    spec = pod["spec"]
    [container] = spec["containers"]
    container["image"] = images.tools
    container["command"] = ["orderflow", "consumers"]
    container["env"] = [{"name": "ORDERFLOW_NATS_URL", "value": nats_url}]
    spec["volumes"] = [v for v in spec["volumes"] if "secret" not in v]
    kept = {v["name"] for v in spec["volumes"]}
    container["volumeMounts"] = [m for m in container["volumeMounts"] if m["name"] in kept]
    pod["metadata"]["name"] = name = f"orderflow-cli-{time.monotonic_ns() % 10**8}"
    play = tmp_path / "cli-pod.yaml"
    play.write_text(yaml.safe_dump(pod, sort_keys=False))
    ctr = f"{name}-{container['name']}"
    try:
        podman.run(
            "podman kube play (the CLI pod)", "kube", "play", "--network", "host", str(play), timeout=120
        )
        state: dict[str, Any] = {}

        def exited() -> bool:
            state.update(podman.inspect("container", ctr)["State"])
            return state["Status"] in ("exited", "stopped")

        wait_until(exited, 60, "the CLI pod's command to finish", interval=0.2)
        logs = podman.logs(ctr)
        assert state["ExitCode"] == 0, logs
        inspected = podman.inspect("container", ctr)
        assert (
            inspected["HostConfig"]["ReadonlyRootfs"] is True and inspected["Config"]["User"] == "10001:10001"
        )
        return logs
    finally:
        podman.run("podman kube down (the CLI pod)", "kube", "down", str(play), check=False, timeout=60)


def test_the_tools_image_runs_status_cancel_consumers_and_dlq_against_nats(
    podman: Podman, images: Images, nats_server: NatsServer, spawn: Any, tmp_path: Path
) -> None:
    """1. An ingest (the layout: stream, buckets, consumers are made by the services) takes an
       order; no worker runs, so it waits queued.
    2. From the image: `consumers` lists the workers' durable consumer; `status` shows the queue
       with the order pending; `status ID` shows it queued; `cancel ID` marks it cancelled (no
       worker runs it); `dlq list` answers, empty; docs/kubernetes.md's CLI Pod, played, lists
       the consumers.
    3. Against a port where nothing listens: exit 1 with the reason, in seconds."""
    config = podman.inspect("image", images.tools)["Config"]
    assert config["User"] == "10001:10001" and config["Cmd"] == ["orderflow", "--help"]

    ingest = spawn("ingest").wait_ready()
    status, _, body = http(
        "POST", ingest.url + "/orders", b'{"product_id": 1, "count": 2, "username": "cli"}'
    )
    assert status == 200, body
    order_id = json.loads(body)["order_id"]
    # Consumers for two other types (one type alone would take every order on `workers`).
    spawn("worker", WORK_S="0.1", TASK_TYPES="other,more").wait_ready()

    consumers = orderflow(podman, images, nats_server.url, "consumers")
    assert consumers.returncode == 0, consumers.stderr
    assert "workers-other" in consumers.stdout and "workers-more" in consumers.stdout, consumers.stdout

    overview = orderflow(podman, images, nats_server.url, "status")
    assert overview.returncode == 0, overview.stderr
    assert overview.stdout.strip(), "the queue overview printed nothing"

    shown = orderflow(podman, images, nats_server.url, "status", order_id)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["status"] == "queued", shown.stdout

    cancelled = orderflow(podman, images, nats_server.url, "cancel", order_id, "--timeout-s", "0.5")
    assert cancelled.returncode == 0, cancelled.stderr
    assert "marked cancelled" in cancelled.stdout, cancelled.stdout
    assert run(statuses(nats_server.url))[order_id].status == "cancelled"

    dead = orderflow(podman, images, nats_server.url, "dlq", "list")
    assert dead.returncode == 0, dead.stderr

    played = play_the_docs_cli_pod(podman, images, nats_server.url, tmp_path)
    assert "workers-other" in played and "workers-more" in played, played

    started = time.monotonic()
    nowhere = orderflow(podman, images, f"nats://127.0.0.1:{free_port()}", "status", order_id)
    took_s = time.monotonic() - started
    assert nowhere.returncode == 1, (nowhere.stdout, nowhere.stderr)
    assert "orderflow:" in nowhere.stderr and "Traceback" not in nowhere.stderr, nowhere.stderr
    assert took_s < 30, f"an unreachable NATS took {took_s:.1f} s to fail"
