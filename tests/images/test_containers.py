"""The images run for real with podman: read-only, non-root, no capabilities, against a real
nats-server on the host; an order goes through both containers; `podman stop` drains the worker
the way a kubelet stops a pod; and the images hold the runtime and nothing else."""

from __future__ import annotations

import json
import math
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from harness import (
    REPO,
    NatsServer,
    count_events,
    free_port,
    http,
    publish_orders,
    run,
    run_records,
    statuses,
    wait_until,
)
from image_contents import COLLECTOR, analyse, collect, runtime_requirements
from podman_engine import SUMMARY, Images, Podman, StepFailed, container_flags, env_flags, top, wait_exited

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

UID = "10001"


def start(
    podman: Podman, containers: list[str], image: str, nats_url: str, **settings: Any
) -> tuple[str, str]:
    """`podman run -d` of an image with ORDERFLOW_* settings on a free port: (name, base URL)."""
    name = f"orderflow-test-{uuid.uuid4().hex[:10]}"
    port = free_port()
    env = {
        "ORDERFLOW_NATS_URL": nats_url,
        "ORDERFLOW_HTTP_HOST": "127.0.0.1",
        "ORDERFLOW_HTTP_PORT": str(port),
        # host networking: the ingest's own /metrics port must be free too (the worker ignores it)
        "ORDERFLOW_METRICS_PORT": str(free_port()),
    }
    env |= {f"ORDERFLOW_{k.upper()}": str(v) for k, v in settings.items()}
    containers.append(name)
    podman.run(f"start {image}", "run", "-d", "--name", name, *container_flags(), *env_flags(env), image)
    return name, f"http://127.0.0.1:{port}"


def wait_ready(podman: Podman, name: str, url: str, timeout_s: float = 60) -> None:
    def ready() -> bool:
        if podman.inspect("container", name)["State"]["Status"] != "running":
            raise AssertionError(f"{name} is not running:\n{podman.logs(name)[-3000:]}")
        try:
            return http("GET", url + "/readyz", timeout=2)[0] == 200
        except OSError:
            return False

    wait_until(ready, timeout_s, f"{name} /readyz", interval=0.2)


def assert_locked_down(podman: Podman, name: str) -> None:
    """PID 1 is the service as uid 10001 with no effective capabilities; / is read-only."""
    rows = top(podman, name, "pid", "huser", "capeff", "args")
    pid1 = [r for r in rows if r[0] == "1"]
    assert pid1, rows
    assert pid1[0][1] == UID, f"PID 1 runs as {pid1[0][1]}, not {UID}"
    assert pid1[0][2] == "none", f"PID 1 has capabilities {pid1[0][2]}"
    assert pid1[0][3].startswith("python -m "), pid1[0][3]
    probe = podman.run(
        "write outside /tmp", "exec", name, "sh", "-c", "id -u; touch /opt/x; echo rc=$?", check=False
    )
    assert probe.stdout.splitlines()[0] == UID
    assert "rc=1" in probe.stdout and "Read-only file system" in probe.stderr, probe
    assert podman.inspect("container", name)["HostConfig"]["ReadonlyRootfs"] is True


def test_images_run_as_a_numeric_non_root_user_with_the_services_as_pid_1(
    podman: Podman, images: Images
) -> None:
    """The image config alone (no --user, no runAsUser) makes the containers non-root, with a
    numeric user a kubelet can check for runAsNonRoot, exec-form commands (python is PID 1 and
    gets SIGTERM itself) and no stop signal other than SIGTERM."""
    for image, module, port in ((images.ingest, "ingest", "8080"), (images.worker, "worker", "9090")):
        inspected = podman.inspect("image", image)
        config = inspected["Config"]
        user, _, group = config["User"].partition(":")
        assert user.isdigit() and int(user) != 0 and group.isdigit(), config["User"]
        assert config["Cmd"] == ["python", "-m", module]
        assert not config.get("Entrypoint")
        assert config.get("StopSignal") in (None, "", "SIGTERM", "15")
        assert f"ORDERFLOW_HTTP_PORT={port}" in config["Env"]
        assert f"{port}/tcp" in config["ExposedPorts"]
        # podman reports it beside Config, docker inside
        healthcheck = inspected.get("Healthcheck") or config.get("Healthcheck")
        assert healthcheck and healthcheck["Test"][0] == "CMD", healthcheck


def test_an_order_posted_to_the_ingest_container_is_done_by_the_worker_container(
    podman: Podman, images: Images, nats_server: NatsServer, containers: list[str]
) -> None:
    """1. The ingest and the worker containers start read-only, as uid 10001, with no
       capabilities, /tmp a tmpfs, against nats-server on the host, and become ready.
    2. An order POSTed to the ingest container is created, and ends `done` by the worker
       container, run once.
    3. The images' HEALTHCHECK (what plain docker uses) passes in both.
    4. Both stop on SIGTERM with exit 0."""
    ingest, ingest_url = start(podman, containers, images.ingest, nats_server.url, SHUTDOWN_DELAY_S=0)
    worker, worker_url = start(
        podman, containers, images.worker, nats_server.url, WORK_S=0.2, WORKER_ID="w-ctr"
    )
    wait_ready(podman, ingest, ingest_url)
    wait_ready(podman, worker, worker_url)
    assert_locked_down(podman, ingest)
    assert_locked_down(podman, worker)

    status, _, body = http(
        "POST", ingest_url + "/orders", b'{"product_id": "33", "count": "3", "username": "m"}'
    )
    assert status == 200, body
    order_id = json.loads(body)["order_id"]

    def done() -> bool:
        code, _, got = http("GET", f"{ingest_url}/orders/{order_id}")
        return code == 200 and json.loads(got)["status"] == "done"

    wait_until(done, 60, f"order {order_id} done", interval=0.2)
    records = run(run_records(nats_server.url))[order_id]
    assert [(r.event, r.worker_id) for r in records] == [("start", "w-ctr"), ("done", "w-ctr")]

    for name in (ingest, worker):
        podman.run(f"healthcheck of {name}", "healthcheck", "run", name)
        podman.run(f"stop {name}", "stop", "-t", "30", name, timeout=60)
        assert wait_exited(podman, name, 10) == 0, podman.logs(name)[-3000:]


def test_podman_stop_drains_the_worker_container_like_a_kubelet(
    podman: Podman, images: Images, nats_server: NatsServer, containers: list[str]
) -> None:
    """1. Worker A (a 24 s job, a 4 s drain budget, ack_wait 120 s) runs one order.
    2. `podman stop -t GRACE` (GRACE = ceil(drain) + 5 + 5, the chart's formula): SIGTERM to
       PID 1; A hands the job back (the demo checkpoints and hands back at SIGTERM a job whose rest
       does not fit the drain deadline, issue #25) and exits 0 before GRACE (no SIGKILL).
    3. Worker B gets the handed-back order at once (not after ack_wait) and finishes it from A's
       last checkpoint (the demo job resumes: B does the rest of the 24 s, not all of it).
    4. Nothing lost, nothing done twice: one `done` in ORDER_RUNS, two starts (A's, B's)."""
    drain_s = 4
    grace_s = math.ceil(drain_s) + 5 + 5
    common = {"ACK_WAIT_S": 120, "DRAIN_TIMEOUT_S": drain_s}
    worker_a, url_a = start(
        podman, containers, images.worker, nats_server.url, WORK_S=24, WORKER_ID="a", **common
    )
    wait_ready(podman, worker_a, url_a)
    [order_id] = run(publish_orders(nats_server.url, 1, prefix="drain"))

    def running_on_a() -> bool:
        st = run(statuses(nats_server.url)).get(order_id)
        return st is not None and st.status == "processing" and st.worker_id == "a"

    wait_until(running_on_a, 60, "the order to run on worker A", interval=0.2)
    started = time.monotonic()
    podman.run("podman stop the worker", "stop", "-t", str(grace_s), worker_a, timeout=grace_s + 30)
    stop_s = time.monotonic() - started
    exit_code = wait_exited(podman, worker_a, 10)
    logs = podman.logs(worker_a)
    SUMMARY.append(
        f"images: podman stop -t {grace_s} of a worker with a 24 s job: exit {exit_code} in {stop_s:.1f} s"
    )
    assert exit_code == 0, logs[-3000:]
    assert stop_s < grace_s, f"stop took {stop_s:.1f} s: the worker was killed at the grace period"
    # Exit 0 long before the 24 s job could end: A stopped the job (no SIGKILL: that is 137).
    assert stop_s < 24 and "received SIGTERM" in logs, logs[-3000:]

    worker_b, url_b = start(
        podman, containers, images.worker, nats_server.url, WORK_S=0.2, WORKER_ID="b", **common
    )
    wait_ready(podman, worker_b, url_b)

    def done() -> bool:
        st = run(statuses(nats_server.url)).get(order_id)
        return st is not None and st.status == "done"

    # Well inside ack_wait (120 s): the hand-back was a nak, not a redelivery on timeout.
    wait_until(done, 60, "the handed-back order done by worker B", interval=0.2)
    records = run(run_records(nats_server.url))
    assert count_events(records, "done") == {order_id: 1}
    assert [(r.event, r.worker_id) for r in records[order_id]] == [
        ("start", "a"),
        ("interrupted", "a"),
        ("start", "b"),
        ("done", "b"),
    ]
    interrupted, resumed = records[order_id][1], records[order_id][2]
    assert resumed.progress_s is not None and interrupted.progress_s is not None
    # A ran from the start until SIGTERM (a second or two here) and checkpointed that: B did not
    # start over. (It asserted >= 2 s while A ran on to the drain deadline, before issue #25.)
    assert resumed.progress_s > 0
    assert abs(resumed.progress_s - interrupted.progress_s) < 0.01


def in_image(podman: Podman, image: str) -> Any:
    """A function running the contents collector in `image` (as root, to read every file)."""

    def runner(payload: str) -> str:
        return podman.run(
            f"inspect the contents of {image}",
            "run",
            "--rm",
            "-i",
            "--network",
            "host",
            "--user",
            "0",
            "--entrypoint",
            "python",
            image,
            "-c",
            COLLECTOR,
            stdin=payload,
            timeout=300,
        ).stdout

    return runner


def test_the_images_hold_the_runtime_core_the_services_and_their_dependencies_only(
    podman: Podman, images: Images
) -> None:
    """No tests, bench, k6, charts, dashboards or tools (orderflow_tools, orderflow/cli.py, ...),
    no dev distributions (matplotlib, pytest, k6, ...): every installed distribution is in the
    closure of pyproject.toml's runtime dependencies, and every one of them is there."""
    requirements = runtime_requirements(REPO / "pyproject.toml")
    listed: set[str] = set()
    for image in (images.ingest, images.worker):
        report = analyse(collect(in_image(podman, image), REPO), requirements)
        SUMMARY.append(
            f"images: {image}: {podman.image_size_mb(image):.0f} MB on {images.base}, "
            f"python {report.python.split()[0]}, {len(report.distributions)} distributions"
        )
        if ", ".join(report.distributions) not in listed:
            listed.add(", ".join(report.distributions))
            SUMMARY.append(f"images:   {', '.join(report.distributions)}")
        assert report.problems == [], "\n".join(report.problems)


def test_the_contents_check_finds_tools_tests_and_dev_packages_in_an_image(
    podman: Podman, images: Images, tmp_path: Path
) -> None:
    """The check above against an image that has them: the tools package, a tools module in
    orderflow/, a copy of tests/harness.py and a matplotlib distribution, layered on the worker."""
    ctx = tmp_path / "ctx"
    site = "/opt/venv/lib/python3.11/site-packages"
    (ctx / "orderflow_tools").mkdir(parents=True)
    (ctx / "orderflow_tools" / "__init__.py").write_text("x = 1\n")
    (ctx / "cli.py").write_text("def main() -> None: ...\n")
    (ctx / "tests").mkdir()
    (ctx / "tests" / "harness.py").write_bytes((REPO / "tests" / "harness.py").read_bytes())
    info = ctx / "mpl" / "matplotlib-3.8.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: matplotlib\nVersion: 3.8.0\n")
    (info / "RECORD").write_text("matplotlib/__init__.py,,\nmatplotlib-3.8.0.dist-info/METADATA,,\n")
    (ctx / "mpl" / "matplotlib").mkdir()
    (ctx / "mpl" / "matplotlib" / "__init__.py").write_text("")
    (ctx / "Containerfile").write_text(
        f"FROM {images.worker}\nUSER 0\n"
        f"COPY orderflow_tools {site}/orderflow_tools\n"
        "COPY cli.py /opt/orderflow/orderflow/cli.py\n"
        "COPY tests /srv/app/tests\n"
        f"COPY mpl {site}\n"
    )
    tag = f"localhost/orderflow-contents-canary:{uuid.uuid4().hex[:10]}"
    podman.run("build the canary image", "build", "-q", "--network", "host", "-t", tag, str(ctx), timeout=300)
    try:
        report = analyse(collect(in_image(podman, tag), REPO), runtime_requirements(REPO / "pyproject.toml"))
    finally:
        podman.run("remove the canary image", "rmi", "-f", tag, check=False)
    text = "\n".join(report.problems)
    assert f"{site}/orderflow_tools: the tools package" in text
    assert "/opt/orderflow/orderflow/cli: a tools module of orderflow/" in text
    assert "/srv/app/tests/harness.py: the repository's tests/harness.py" in text
    assert "distribution matplotlib 3.8.0: a dev/tools distribution" in text


def test_a_step_that_fails_says_which_and_why(podman: Podman) -> None:
    with pytest.raises(StepFailed, match=r"inspect image no-such/image:x: `.*podman image inspect"):
        podman.inspect("image", "no-such/image:x")
