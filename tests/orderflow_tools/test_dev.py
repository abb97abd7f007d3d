"""`orderflow dev` (what `make run` starts): NATS, ingest and workers on loopback; "up" once every
part is ready; an order goes from POST to done; Ctrl-C drains and stops everything, whatever its
stdout is (`make run | tee log`), with progress and without tracebacks; no child outlives it."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from harness import REPO, find_binary, free_port, http, wait_until

from orderflow_tools.kit import descendants, free_port_block, parse_metrics, pid_alive, total

pytestmark = pytest.mark.slow
ORDER = b'{"product_id":"33","count":"3","username":"maksim"}'


@dataclass
class Dev:
    proc: subprocess.Popen[bytes]
    out: Path  # its stdout (or the pipeline's, through tee)
    err: Path
    port: int
    worker_port: int
    workers: int

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def text(self) -> str:
        return self.out.read_text(errors="replace") + self.err.read_text(errors="replace")

    def wait_up(self, timeout_s: float = 60) -> None:
        def up() -> bool:
            assert self.proc.poll() is None, f"orderflow dev exited {self.proc.returncode}:\n{self.text()}"
            return "orderflow dev is up" in self.out.read_text(errors="replace")

        wait_until(up, timeout_s, "orderflow dev to say it is up", interval=0.02)

    def in_flight(self) -> float:
        return sum(
            total(
                parse_metrics(http("GET", f"http://127.0.0.1:{p}/metrics")[2].decode()),
                "orderflow_tasks_in_flight",
            )
            for p in range(self.worker_port, self.worker_port + self.workers)
        )


def dev_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERFLOW_")}
    env.update({f"ORDERFLOW_{k}": v for k, v in settings.items()})
    return env


def dev_args(port: int, nats_port: int, worker_port: int, workers: int, data: Path) -> list[str]:
    return ["--port", str(port), "--metrics-port", str(free_port()), "--nats-port", str(nats_port),
            "--worker-port", str(worker_port), "--workers", str(workers), "--data-dir", str(data)]  # fmt: skip


@pytest.fixture
def start_dev(tmp_path: Path) -> Iterator[object]:
    """start_dev(workers=1, shell=None, cwd=REPO, **settings) -> Dev. `shell`: a shell command line
    with {cmd} for the dev command (e.g. "{cmd} | tee log"), run in a session of its own like a
    terminal's foreground job."""
    find_binary("nats-server")
    started: list[Dev] = []

    def factory(
        workers: int = 1,
        shell: str | None = None,
        cwd: Path = REPO,
        data: Path | None = None,
        host: str | None = None,
        **settings: str,
    ) -> Dev:
        port, nats_port, worker_port = free_port(), free_port(), free_port_block(workers)
        n = len(started)
        out, err = tmp_path / f"dev-{n}.out", tmp_path / f"dev-{n}.err"
        args = dev_args(port, nats_port, worker_port, workers, data or tmp_path / "data")
        args += ["--host", host] if host else []
        with out.open("wb") as stdout, err.open("wb") as stderr:
            if shell is None:
                cmd: list[str] | str = [sys.executable, "-m", "orderflow_tools.cli", "dev", *args]
                proc = subprocess.Popen(cmd, cwd=cwd, env=dev_env(**settings), stdout=stdout, stderr=stderr)
            else:
                line = shell.format(make_args=" ".join(args), tee=f"tee {out}")
                proc = subprocess.Popen(
                    ["bash", "-c", line], cwd=cwd, env=dev_env(**settings),
                    stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True,
                )  # fmt: skip
        dev = Dev(proc, out, err, port, worker_port, workers)
        started.append(dev)
        return dev

    yield factory
    for dev in started:
        tree = descendants(dev.proc.pid) if dev.proc.poll() is None else []
        for pid in reversed(tree):  # ours: what this test started, by pid
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        if dev.proc.poll() is None:
            dev.proc.kill()
        dev.proc.wait(10)


def _listening_addresses(port: int) -> set[str]:
    """Local addresses with a socket listening on `port` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hexport = local.split(":")
            if state == "0A" and int(hexport, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


def test_orderflow_dev_is_up_on_loopback_only_runs_the_whole_system_and_stops_cleanly_on_ctrl_c(
    start_dev: object,
) -> None:
    """One stack of two workers (each `orderflow dev` costs a nats-server, an ingest and the
    workers' start-up, so one run proves both):
    1. "up" means every part answers ready, and each listens on loopback only. It used to print
       "up" the moment it had started the processes (before the ingest listened) and bound them to
       0.0.0.0, a dev stack reachable from the network.
    2. An order posted to it is done; Ctrl-C drains and stops every part with exit 0."""
    dev = start_dev(workers=2, WORK_S="0.1")  # type: ignore[operator]
    dev.wait_up()
    for port in (dev.port, dev.worker_port, dev.worker_port + 1):
        assert http("GET", f"http://127.0.0.1:{port}/readyz", timeout=5)[0] == 200
        assert _listening_addresses(port) == {"0100007F"}  # 127.0.0.1, nothing else
    stack = json.loads((Path(dev.err).parent / "data" / "dev.json").read_text())
    assert stack["ingest_url"] == dev.base and len(stack["worker_metrics"]) == 2
    # the ingest's /metrics on its own port, on loopback too; the ingest runs open there, loudly
    metrics_port = int(stack["ingest_metrics"].rsplit(":", 1)[1].split("/")[0])
    assert http("GET", stack["ingest_metrics"])[0] == 200 and http("GET", dev.base + "/metrics")[0] == 404
    assert _listening_addresses(metrics_port) == {"0100007F"}
    assert dev.text().count("AUTH IS OFF") == 1

    status, _, body = http("POST", dev.base + "/orders", ORDER)
    assert status == 200
    order_id = json.loads(body)["order_id"]
    wait_until(lambda: _status(dev, order_id) == "done", 15, "the order to be done")
    dev.proc.send_signal(signal.SIGINT)
    assert dev.proc.wait(30) == 0
    text = dev.text()
    assert "drained in" in text
    assert "stopped (ingest 0, worker-1 0, worker-2 0)" in text


def test_a_dev_stack_beyond_loopback_takes_a_key_it_minted_and_never_printed(start_dev: object) -> None:
    """`--host 0.0.0.0` (the README's flags example): the ingest must not run open there, so dev
    mints an admin key for the run into the data dir (0600) and points the ingest at its hash."""
    dev = start_dev(host="0.0.0.0")  # type: ignore[operator]
    dev.wait_up()
    data = Path(dev.err).parent / "data"
    key = (data / "api-key").read_text().strip()
    assert (data / "api-key").stat().st_mode & 0o077 == 0
    assert http("POST", dev.base + "/orders", ORDER)[0] == 401
    status, _, body = http("POST", dev.base + "/orders", ORDER, {"Authorization": f"Bearer {key}"})
    assert status == 200, body
    assert key not in dev.text() and f"Bearer $(cat {data / 'api-key'})" in dev.text()


@pytest.mark.parametrize("pipe", ["| {tee}", "2>&1 | {tee}"], ids=["stdout", "stdout-and-stderr"])
def test_make_run_piped_into_tee_stops_everything_on_ctrl_c(start_dev: object, pipe: str) -> None:
    """1. `make run ARGS=... | tee log` runs in a session of its own, as in a terminal.
    2. Ctrl-C (SIGINT to the whole foreground group) ends tee at once: dev's next lines hit a
       closed pipe. It used to die of BrokenPipeError ("cannot reach NATS: Broken pipe") and leave
       nats-server, the ingest and the workers running with no parent.
    3. Now everything stops: make exits, no process of the stack is left, no traceback."""
    dev = start_dev(shell=f"make --no-print-directory run ARGS='{{make_args}}' {pipe}")  # type: ignore[operator]
    dev.wait_up(timeout_s=120)
    stack = [p for p in descendants(dev.proc.pid) if p != dev.proc.pid]
    assert len(stack) >= 5, stack  # make, orderflow dev, tee, nats-server, ingest, worker
    os.killpg(dev.proc.pid, signal.SIGINT)
    assert dev.proc.wait(60) is not None
    wait_until(
        lambda: not any(pid_alive(p) for p in stack), 30, f"every process of the stack to end: {stack}"
    )
    text = dev.text()
    assert "Traceback" not in text and "cannot reach NATS" not in text, text


def test_a_long_drain_shows_progress_and_a_second_ctrl_c_hands_the_jobs_back(start_dev: object) -> None:
    """1. Two 30 s jobs run; Ctrl-C: the worker drains (budget 60 s) and dev says, every few
       seconds, how many jobs are left and how long the budget lasts, and that a second Ctrl-C
       hands them back.
    2. A second Ctrl-C: the jobs are handed back, everything stops within seconds, exit 0, and
       nothing prints an asyncio traceback ("_GatheringFuture exception was never retrieved")."""
    dev = start_dev(WORK_S="30", DRAIN_TIMEOUT_S="60")  # type: ignore[operator]
    dev.wait_up()
    for _ in range(2):
        assert http("POST", dev.base + "/orders", ORDER)[0] == 200
    wait_until(lambda: dev.in_flight() == 2, 15, "both jobs to run")
    dev.proc.send_signal(signal.SIGINT)
    wait_until(lambda: "draining — 2 jobs left" in dev.text(), 15, "drain progress")
    assert "Ctrl-C again hands them back" in dev.text()
    stopped_at = time.monotonic()
    dev.proc.send_signal(signal.SIGINT)
    assert dev.proc.wait(30) == 0, dev.text()
    assert time.monotonic() - stopped_at < 20
    text = dev.text()
    assert "handing the running jobs back now" in text
    assert "2 handed back" in text
    assert "Traceback" not in text and "never retrieved" not in text, text


def test_no_child_outlives_a_killed_orderflow_dev(start_dev: object) -> None:
    """SIGKILL leaves dev no chance to stop anything: the kernel ends its children (PDEATHSIG)."""
    dev = start_dev()  # type: ignore[operator]
    dev.wait_up()
    children = [p for p in descendants(dev.proc.pid) if p != dev.proc.pid]
    assert len(children) >= 3  # nats-server, ingest, worker
    dev.proc.kill()
    dev.proc.wait(10)
    wait_until(lambda: not any(pid_alive(p) for p in children), 30, f"dev's children to end: {children}")


def readme_section(title: str) -> str:
    text = (REPO / "README.md").read_text()
    start = text.index(f"### {title}")
    ends = [i for i in (text.find("\n## ", start), text.find("\n### ", start + 4)) if i != -1]
    return text[start : min(ends)]


def code_blocks(section: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", section, re.S)


def test_the_readme_task_type_example_works_as_written_and_dev_migrates_its_store(
    start_dev: object, tmp_path: Path
) -> None:
    """The README's "Adding a task type", as written (the ports aside):
    1. myapp/handlers.py from the README; `orderflow dev` first with one task type on a store,
       an order done (consumer `workers`, every order).
    2. The README's command on the same store: ORDERFLOW_HANDLERS=worker.demo,myapp.handlers
       ORDERFLOW_TASK_TYPES=default,invoice:4:600. It used to fail twice: the demo claimed
       `invoice` before myapp loaded ("already has a handler"), then the old consumer overlapped
       the new ones (a raw "filtered consumer not unique" traceback). Now dev deletes `workers`
       and says so, both workers start, and the README's curl is run by the new handler, whose
       return value is the order's result.
    3. A default order still runs the demo; an invoice of 0 cents is poison (failed); a seed order
       sent as an invoice answers 400 naming the fields of the payload myapp declared."""
    section = readme_section("Adding a task type")
    [handler] = code_blocks(section, "python")
    [commands] = code_blocks(section, "sh")
    run_line, curl_line = commands.strip().splitlines()
    app = tmp_path / "app"
    path = handler.splitlines()[0].removeprefix("# ")
    (app / path).parent.mkdir(parents=True)
    (app / path).write_text(handler)
    data = tmp_path / "store"

    first = start_dev(cwd=app, data=data, WORK_S="0.05")  # type: ignore[operator]
    first.wait_up()
    order = json.loads(http("POST", first.base + "/orders", ORDER)[2])["order_id"]
    wait_until(lambda: _status(first, order) == "done", 20, "the first order to be done")
    first.proc.send_signal(signal.SIGINT)
    assert first.proc.wait(30) == 0

    words = shlex.split(run_line)
    assert words[-2:] == ["make", "run"]
    settings = dict(word.split("=", 1) for word in words[:-2])
    second = start_dev(  # type: ignore[operator]
        cwd=app, data=data, WORK_S="0.05", **{k.removeprefix("ORDERFLOW_"): v for k, v in settings.items()}
    )
    second.wait_up()
    text = second.text()
    assert "deleted consumer workers (filters orders.>)" in text, text
    assert "already has a handler" not in text and "Traceback" not in text

    curl = subprocess.run(
        ["bash", "-c", curl_line.replace("localhost:8080", f"localhost:{second.port}") + " -s"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    invoice = json.loads(curl.stdout)["order_id"]
    wait_until(lambda: _status(second, invoice) == "done", 20, "the invoice to be done")
    record = json.loads(http("GET", f"{second.base}/orders/{invoice}")[2])
    assert record["task_type"] == "invoice"
    assert record["result"] == {"invoice": f"INV-{invoice}"}  # what the README's handler returned
    wait_until(lambda: f"invoice for order {invoice} sent" in second.text(), 10, "myapp's log line")

    default = json.loads(http("POST", second.base + "/orders", ORDER)[2])["order_id"]
    wait_until(lambda: _status(second, default) == "done", 20, "a default order to be done")
    nothing = b'{"customer":"acme","amount_cents":0}'
    poison = json.loads(http("POST", second.base + "/orders?type=invoice", nothing)[2])["order_id"]
    wait_until(lambda: _status(second, poison) == "failed", 20, "the empty invoice to fail")
    # the ingest checks invoices by the payload myapp declared (through KV ORDER_TYPES)
    seed_order = http("POST", second.base + "/orders?type=invoice", ORDER)
    assert seed_order[0] == 400, seed_order
    assert {e["field"] for e in json.loads(seed_order[2])["errors"]} >= {"customer", "amount_cents"}


def _status(dev: Dev, order_id: str) -> str | None:
    status, _, body = http("GET", f"{dev.base}/orders/{order_id}")
    return json.loads(body)["status"] if status == 200 else None


def _worker_pid(dev: Dev) -> int:
    found = re.findall(r"(?:worker-1 |started a new one, pid )(\d+)", dev.text())
    assert found, dev.text()
    return int(found[-1])


def test_a_long_demo_job_survives_repeated_scale_downs_as_the_readme_shows(start_dev: object) -> None:
    """The README's "A long job that survives scale-downs" demo, as written:
    `ORDERFLOW_WORK_S=30 ORDERFLOW_DRAIN_TIMEOUT_S=2 make run`, then SIGTERM the worker every few seconds.
    1. One 12 s demo job (shorter than the README's 30 s, the same mechanism) on one worker.
    2. Three times: SIGTERM the worker a few seconds into its run; it hands the job back at its
       2 s drain deadline and exits 0; dev starts a new worker, which resumes the job.
    3. The order ends done once, with 3 hand-backs and no failed attempt, and its runs used about
       the job's length in all (each hand-back loses at most one checkpoint step: 1.2 s)."""
    dev = start_dev(WORK_S="12", DRAIN_TIMEOUT_S="2")  # type: ignore[operator]
    dev.wait_up()
    status, _, body = http("POST", dev.base + "/orders", ORDER)
    assert status == 200
    order_id = json.loads(body)["order_id"]

    def record() -> dict[str, Any]:
        answer: dict[str, Any] = json.loads(http("GET", f"{dev.base}/orders/{order_id}")[2])
        return answer

    def running() -> bool:
        try:
            return bool(dev.in_flight() == 1)
        except OSError:  # the worker is being replaced
            return False

    def handed_back(n: int) -> Callable[[], bool]:
        return lambda: record().get("handbacks") == n

    def replaced(pid: int) -> Callable[[], bool]:
        return lambda: _worker_pid(dev) != pid

    for n in range(1, 4):
        wait_until(running, 20, "the job to run")
        time.sleep(1.5)
        pid = _worker_pid(dev)
        os.kill(pid, signal.SIGTERM)
        wait_until(handed_back(n), 15, f"hand-back {n}")
        wait_until(replaced(pid), 15, "a new worker")
    wait_until(lambda: record()["status"] == "done", 30, "the order to be done")
    final = record()
    assert (final["attempts"], final["handbacks"], final["crashes"]) == (0, 3, 0), final
    assert 11.5 <= float(final["run_s"]) <= 12 + 3 * 1.2 + 1.0, final
    assert "exited (0); started a new one" in dev.text()


def test_orderflow_dev_nats_cluster_3_runs_on_a_3_node_cluster_with_r3_streams(tmp_path: Path) -> None:
    """`orderflow dev --nats-cluster 3`: three nodes on --nats-port and the next two ports, the
    streams created with 3 replicas, an order done; a SIGKILLed node is started again; Ctrl-C
    stops everything with exit code 0."""
    from harness import connect, run

    find_binary("nats-server")
    port, worker_port, nats_port = free_port(), free_port(), free_port_block(3)
    env = dev_env(WORK_S="0.1")
    log = tmp_path / "dev.log"
    args = [*dev_args(port, nats_port, worker_port, 1, tmp_path / "data"), "--nats-cluster", "3"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "orderflow_tools.cli", "dev", *args],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_until(lambda: "orderflow dev is up" in log.read_text(), 120, "the cluster stack to be up")
        base = f"http://127.0.0.1:{port}"
        status, _, body = http("POST", base + "/orders", ORDER)
        assert status == 200
        order_id = json.loads(body)["order_id"]
        wait_until(
            lambda: json.loads(http("GET", f"{base}/orders/{order_id}")[2])["status"] == "done", 30, "done"
        )

        async def replicas() -> dict[str, int | None]:
            urls = ",".join(f"nats://127.0.0.1:{nats_port + i}" for i in range(3))
            async with connect(urls) as nc:
                js = nc.jetstream()
                return {
                    s: (await js.stream_info(s)).config.num_replicas for s in ("ORDERS", "KV_ORDER_STATUS")
                }

        assert run(replicas()) == {"ORDERS": 3, "KV_ORDER_STATUS": 3}
        text = log.read_text()
        assert "cluster orderflow: 3 nodes, R3 streams" in text
        [n2_pid] = re.findall(r"n2 nats://\S+  pid (\d+)", text)
        os.kill(int(n2_pid), signal.SIGKILL)
        wait_until(lambda: "NATS node n2 started again" in log.read_text(), 30, "n2 to be started again")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0, log.read_text()
        assert "stopped (ingest 0, worker-1 0)" in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_second_dev_on_the_same_data_dir_exits_2_at_once_naming_the_holder(
    start_dev: object, tmp_path: Path
) -> None:
    """Two nats-servers on one JetStream store corrupt it ("Recovering stream state from index
    errored") and lose orders that got 200 (issue #20).
    1. `orderflow dev` runs on a data dir; an order is done.
    2. A second one on the same dir (other ports) exits 2 within seconds, naming the first's pid
       and command, and starts nothing: the first stack keeps serving its orders.
    3. Once the first stops, the dir is free again."""
    data = tmp_path / "shared-data"
    first = start_dev(data=data, WORK_S="0.05")  # type: ignore[operator]
    first.wait_up()
    status, _, body = http("POST", first.base + "/orders", ORDER)
    assert status == 200
    order_id = json.loads(body)["order_id"]

    second = start_dev(data=data)  # type: ignore[operator]
    assert second.proc.wait(10) == 2, second.text()
    err = second.err.read_text()
    assert f"pid {first.proc.pid}" in err and "orderflow_tools.cli dev" in err, err
    assert str(data) in err

    wait_until(lambda: _status(first, order_id) == "done", 15, "the first stack's order to be done")
    first.proc.send_signal(signal.SIGINT)
    assert first.proc.wait(30) == 0
    third = start_dev(data=data)  # type: ignore[operator]
    third.wait_up()
