"""The chart's and the dev overlay's own Deployments run: rendered (helm template, kubectl
kustomize) with values that point at the local images and at a real nats-server on the host,
changed only where podman 4.3 cannot follow (podman_kube), and played with
`podman kube play --network host`. An order flows through the played pods, and stopping the pods
with their own terminationGracePeriodSeconds drains them like a kubelet would."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness import REPO, NatsServer, count_events, find_binary, free_port, http, run, run_records, wait_until
from podman_engine import SUMMARY, TEST_TAG, Images, Podman, StepFailed, top
from podman_kube import (
    Doc,
    deployments,
    env_literal,
    for_podman,
    grace_period_s,
    namespace_of,
    pod_names,
    probe_endpoints,
    secret_files,
    secrets_for,
)

from orderflow import auth

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

# The key the played ingests take: its entry goes into the chart's Secret (ingest.auth.keys), and
# into the Secret the dev overlay expects beside it.
API_KEY = auth.new_key()
KEY_FILE = json.dumps({"keys": [auth.entry("kube-play", [auth.WRITE, auth.READ], API_KEY)]})
AUTH = {"Authorization": f"Bearer {API_KEY}"}

# The demo job of the drained order: long enough to be running when the pod is stopped, shorter
# than the drain budget, so it finishes during the drain.
JOB_S = 8


@dataclass
class Workload:
    deployment: Doc
    pod: str
    container: str
    port: int
    probes: list[tuple[str, str, str, int]]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def workload(deployment: Doc) -> Workload:
    """One played pod of a rendered Deployment, its probe wiring checked on the render itself:
    every probe's port resolves to the port the service is told to listen on."""
    spec = deployment["spec"]["template"]["spec"]
    [container] = spec["containers"]
    [pod] = pod_names(deployment)  # one replica: under host networking two would share a port
    port = env_literal(container, "ORDERFLOW_HTTP_PORT")
    probes = probe_endpoints(deployment)
    assert port is not None, f"{deployment['metadata']['name']}: ORDERFLOW_HTTP_PORT is not a literal"
    assert probes and {p[3] for p in probes} == {int(port)}, (probes, port)
    return Workload(deployment, pod, f"{pod}-{container['name']}", int(port), probes)


def probes_pass(podman: Podman, w: Workload) -> bool:
    """The kubelet's probes, requested by the test (podman 4.3 runs none of them here)."""
    state = podman.inspect("container", w.container)["State"]
    if state["Status"] != "running":
        raise AssertionError(
            f"{w.container} is {state['Status']} (exit {state['ExitCode']}):\n{podman.logs(w.container)[-3000:]}"
        )
    try:
        return all(
            http("GET", f"http://127.0.0.1:{port}{path}", timeout=2)[0] == 200
            for _, _, path, port in w.probes
        )
    except OSError:
        return False


def assert_pod_spec_applied(podman: Podman, w: Workload) -> None:
    """runAsUser/runAsGroup, readOnlyRootFilesystem, capabilities drop ALL,
    allowPrivilegeEscalation false and the memory limit, as podman applied them to the played
    container; the image's command is PID 1."""
    inspected = podman.inspect("container", w.container)
    assert inspected["Config"]["User"] == "10001:10001"
    assert inspected["HostConfig"]["ReadonlyRootfs"] is True
    assert "no-new-privileges" in inspected["HostConfig"]["SecurityOpt"]
    [container] = w.deployment["spec"]["template"]["spec"]["containers"]
    limit = container["resources"]["limits"]["memory"]
    assert inspected["HostConfig"]["Memory"] == memory_bytes(limit), (
        limit,
        inspected["HostConfig"]["Memory"],
    )
    [pid1] = [r for r in top(podman, w.container, "pid", "huser", "capeff", "args") if r[0] == "1"]
    assert pid1[1:3] == ["10001", "none"], pid1
    assert pid1[3].startswith("python -m "), pid1


def memory_bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return int(quantity[: -len(suffix)]) * factor
    return int(quantity)


def invoice_done_by_the_handler_package(podman: Podman, ingest: Workload, worker: Workload) -> str:
    """The `invoice` type of tests/support/acme_invoices, in the worker image built with HANDLERS=,
    with its own payload (customer, amount_cents >= 1, nothing else): the played ingest, whose image
    has no such package, checks invoices by the schema the played worker published; a good one is
    done by that package's handler (its log line: the order, the played pod, the decoded payload)."""

    def post(body: bytes) -> tuple[int, Any]:
        status, _, got = http("POST", ingest.url + "/orders?type=invoice", body, AUTH)
        return status, json.loads(got)

    good = b'{"customer": "acme", "amount_cents": 1200}'
    accepted: list[Any] = []

    def taken() -> bool:
        status, answer = post(good)
        accepted.extend([answer] if status == 200 else [])
        return status == 200

    # Until the worker's declaration reaches the ingest, an invoice is checked as the seed's order.
    wait_until(taken, 60, "the ingest to take an invoice by its own payload", interval=0.2)
    order_id = str(accepted[0]["order_id"])
    status, answer = post(b'{"customer": "acme", "amount_cents": 0, "product_id": 1}')
    assert status == 400, answer
    fields = {e["field"] for e in answer["errors"]}
    assert {"amount_cents", "product_id"} <= fields, answer

    def done() -> bool:
        code, _, got = http("GET", f"{ingest.url}/orders/{order_id}", headers=AUTH)
        return code == 200 and json.loads(got)["status"] == "done"

    wait_until(done, 60, f"invoice {order_id} done on the played worker", interval=0.1)
    line = f"acme_invoices: invoice for order {order_id} sent by {worker.pod}: acme 1200 cents"
    assert line in podman.logs(worker.container), podman.logs(worker.container)[-3000:]
    return order_id


def play_and_drain(
    podman: Podman,
    docs: list[Doc],
    default_ns: str,
    nats: NatsServer,
    tmp_path: Path,
    what: str,
    invoice: bool = False,
    outside: dict[str, dict[str, bytes]] | None = None,
) -> None:
    """1. The rendered Deployments are checked (probe ports, referenced Secrets) and changed for
       podman; the Secrets they reference become podman secrets; `podman kube play --network host`.
    2. Both pods pass their probes (requested by the test) with the securityContext applied.
    3. An order POSTed to the played ingest runs on the played worker (worker id = pod name,
       from the downward API); while it runs, `podman pod stop -t <its grace period>` stops the
       worker pod: SIGTERM, the job finishes in the drain, exit 0 within the grace period.
    4. The order is done once; the ingest pod stops within its grace period with exit 0 too.
    5. `podman kube down` removes both pods.
    With `invoice`, before 3: an order of the handler package's own type is done by it."""
    found = {d["metadata"]["name"].rsplit("-", 1)[1]: d for d in deployments(docs)}
    ingest, worker = workload(found["ingest"]), workload(found["worker"])
    secrets = secrets_for(docs)
    # The ingest's API key file, where the kubelet would mount it (podman_kube, change 4).
    secret_dirs: dict[str, Path] = {}
    for name, files in secret_files(docs, outside).items():
        directory = secret_dirs[name] = tmp_path / "secrets" / name
        directory.mkdir(parents=True)
        directory.chmod(0o755)
        for file, content in files.items():
            (directory / file).write_bytes(content)
            (directory / file).chmod(0o644)  # the pod's user reads it (defaultMode 0440 + fsGroup)
    assert secret_dirs, "the ingest mounts its API key file from a rendered Secret"
    play = tmp_path / "play.yaml"
    play.write_text(
        yaml.safe_dump_all([for_podman(d, default_ns, secret_dirs) for d in found.values()], sort_keys=False)
    )
    try:
        for name, payload in secrets.items():
            (tmp_path / f"{name}.json").write_bytes(payload)
            podman.run(f"store Secret {name}", "secret", "rm", name, check=False)
            podman.run(f"store Secret {name}", "secret", "create", name, str(tmp_path / f"{name}.json"))
        podman.run(f"podman kube play ({what})", "kube", "play", "--network", "host", str(play), timeout=300)
        for w in (ingest, worker):
            wait_until(functools.partial(probes_pass, podman, w), 90, f"{w.pod} probes", interval=0.3)
            assert_pod_spec_applied(podman, w)
        env = podman.inspect("container", worker.container)["Config"]["Env"]
        assert f"ORDERFLOW_POD_NAMESPACE={namespace_of(found['worker'], default_ns)}" in env
        assert f"ORDERFLOW_NATS_URL={nats.url}" in env, "the URL reached the pod (value or secretKeyRef)"
        invoice_id = invoice_done_by_the_handler_package(podman, ingest, worker) if invoice else None

        order = b'{"product_id": 1, "count": 2, "username": "kube"}'
        assert http("POST", ingest.url + "/orders", order)[0] == 401  # the played ingest takes keys
        status, _, body = http("POST", ingest.url + "/orders", order, AUTH)
        assert status == 200, body
        order_id = json.loads(body)["order_id"]

        def order_status() -> str:
            code, _, got = http("GET", f"{ingest.url}/orders/{order_id}", headers=AUTH)
            return str(json.loads(got)["status"]) if code == 200 else ""

        wait_until(
            lambda: order_status() == "processing", 60, "the order running on the played worker", interval=0.1
        )
        stop_sent_at: dict[str, float] = {}
        for w in (worker, ingest):  # the worker first: the ingest still answers GET /orders meanwhile
            grace_s = grace_period_s(w.deployment)
            stop_sent_at[w.pod] = time.time()
            started = time.monotonic()
            podman.run(
                f"podman pod stop -t {grace_s} {w.pod}",
                "pod",
                "stop",
                "-t",
                str(grace_s),
                w.pod,
                timeout=grace_s + 60,
            )
            took_s = time.monotonic() - started
            state = podman.inspect("container", w.container)["State"]
            SUMMARY.append(
                f"images: {what}: {w.pod} stopped in {took_s:.1f} s (grace {grace_s} s), exit {state['ExitCode']}"
            )
            logs = podman.logs(w.container)
            assert state["ExitCode"] == 0, logs[-3000:]
            assert took_s < grace_s, f"{w.pod}: {took_s:.1f} s, killed at the grace period"
            assert "received SIGTERM" in logs, logs[-3000:]
            if w is worker:
                assert order_status() == "done"
        records = run(run_records(nats.url))
        assert count_events(records, "done") == {order_id: 1} | ({invoice_id: 1} if invoice_id else {})
        assert [(r.event, r.worker_id) for r in records[order_id]] == [
            ("start", worker.pod),
            ("done", worker.pod),
        ]
        # The job was running when the stop began and finished after it: during the drain.
        start, done = records[order_id]
        assert start.at < stop_sent_at[worker.pod] < done.at, (start.at, stop_sent_at, done.at)
    finally:
        down = podman.run("podman kube down", "kube", "down", str(play), check=False, timeout=120)
        for name in secrets:
            podman.run(f"remove secret {name}", "secret", "rm", name, check=False)
    assert down.returncode == 0, down.stderr
    for w in (ingest, worker):
        assert not podman.exists("pod", w.pod), f"{w.pod} left behind by podman kube down"


def test_the_charts_deployments_play_in_podman_serve_an_order_and_drain(
    podman: Podman, images: Images, nats_server: NatsServer, tmp_path: Path
) -> None:
    """The worker is the image `make images HANDLERS=tests/support/acme_invoices` builds (the stock
    worker plus a handler package from outside orderflow's packages), configured as docs/kubernetes.md
    says: its module in worker.config.handlers, its type in config.taskTypes."""
    release = f"t{uuid.uuid4().hex[:8]}"
    repository, tag = images.handlers.rsplit(":", 1)
    values = {
        "config": {"taskTypes": "default,invoice"},
        "nats": {"url": nats_server.url},
        "ingest": {
            "replicaCount": 1,
            "port": free_port(),
            "metricsPort": free_port(),  # host networking: never the default 9180 another run holds
            "image": {"repository": "orderflow/ingest", "tag": TEST_TAG},
            "auth": {"keys": json.loads(KEY_FILE)["keys"]},
        },
        "worker": {
            "replicaCount": 1,
            "port": free_port(),
            "image": {"repository": repository, "tag": tag},
            "config": {
                "workS": str(JOB_S),
                "drainTimeoutS": 30,
                "handlers": "worker.demo,acme_invoices.handlers",
            },
        },
    }
    (tmp_path / "values.yaml").write_text(yaml.safe_dump(values))
    out = render(
        [
            find_binary("helm"),
            "template",
            release,
            str(REPO / "charts" / "orderflow"),
            "--namespace",
            "shop",
            "-f",
            str(tmp_path / "values.yaml"),
        ]
    )
    play_and_drain(podman, out, "shop", nats_server, tmp_path, "chart", invoice=True)


def test_the_dev_overlays_deployments_play_in_podman_serve_an_order_and_drain(
    podman: Podman, images: Images, nats_server: NatsServer, tmp_path: Path
) -> None:
    """The overlay as a user would point it elsewhere: an overlay of their own on top of it with
    the NATS URL (the Secret generator, merged), the image tag, free ports and a longer demo job."""
    ports = {"ingest": free_port(), "worker": free_port()}
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    patches: list[dict[str, Any]] = []
    for component, port in ports.items():
        json6902 = [
            {"op": "test", "path": "/spec/template/spec/containers/0/ports/0/name", "value": "http"},
            {
                "op": "replace",
                "path": "/spec/template/spec/containers/0/ports/0/containerPort",
                "value": port,
            },
        ]
        env = [{"name": "ORDERFLOW_HTTP_PORT", "value": str(port)}]
        if component == "worker":
            env.append({"name": "ORDERFLOW_WORK_S", "value": str(JOB_S)})
        else:  # host networking: never the default 9180 another run holds
            env.append({"name": "ORDERFLOW_METRICS_PORT", "value": str(free_port())})
        merge = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": f"orderflow-{component}"},
            "spec": {"template": {"spec": {"containers": [{"name": component, "env": env}]}}},
        }
        patches += [
            {
                "target": {"kind": "Deployment", "name": f"orderflow-{component}"},
                "patch": yaml.safe_dump(json6902),
            },
            {"patch": yaml.safe_dump(merge)},
        ]
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        # kustomize takes a relative path only
        "resources": [os.path.relpath(REPO / "kustomize" / "overlays" / "dev", overlay)],
        "namePrefix": f"t{uuid.uuid4().hex[:8]}-",
        "images": [{"name": f"orderflow/{c}", "newTag": TEST_TAG} for c in ports],
        "secretGenerator": [
            {"name": "orderflow-nats", "behavior": "merge", "literals": [f"url={nats_server.url}"]}
        ],
        "patches": patches,
    }
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))
    out = render([find_binary("kubectl"), "kustomize", str(overlay)])
    # The API key Secret, as the operator creates it beside the overlay (kubectl create secret).
    keys = {"orderflow-api-keys": {"api-keys.json": KEY_FILE.encode()}}
    play_and_drain(podman, out, "default", nats_server, tmp_path, "dev overlay", outside=keys)


def render(cmd: list[str]) -> list[Doc]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise StepFailed(f"render: `{' '.join(cmd)}` exited {proc.returncode}:\n{proc.stderr}")
    return [d for d in yaml.safe_load_all(proc.stdout) if d]
