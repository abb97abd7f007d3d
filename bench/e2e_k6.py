"""bench/e2e's load generator: k6 at a constant arrival rate (bench/k6/e2e.js), its summary, and
the CPU it used (the bench's RUSAGE_CHILDREN before and after: k6 is the only child reaped then)."""

from __future__ import annotations

import json
import math
import resource
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.e2e_procs import tool
from orderflow_tools.kit import REPO

SCRIPT = REPO / "bench" / "k6" / "e2e.js"


@dataclass(frozen=True)
class K6Result:
    requests: int
    accepted: int  # 200s
    refused: int  # other HTTP answers (503 = told to retry)
    no_answer: int  # timeouts, resets
    dropped: int  # arrivals k6 could not start (no free VU): the target rate was not offered
    rate: float  # requests per second, as k6 measured
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    cpu_s: float
    exit_code: int

    @property
    def failed_share(self) -> float:
        return (self.refused + self.no_answer) / self.requests if self.requests else 0.0


def _children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


class K6Run:
    """One k6 run in the background; `finish()` waits for it and reads its summary."""

    def __init__(self, base_url: str, rate: int, duration_s: float, workdir: Path, tag: str) -> None:
        self.summary = workdir / f"k6-{tag}.json"
        self.log = workdir / f"k6-{tag}.log"
        # VUs hold the requests in flight: rate x latency. Enough for 500 ms of latency at the
        # target rate; beyond that k6 drops arrivals (counted), which is itself a finding.
        max_vus = max(200, math.ceil(rate * 0.5))
        env = {
            "BASE_URL": base_url,
            "RATE": str(rate),
            "DURATION": f"{max(1, round(duration_s))}s",
            "PRE_VUS": str(max(20, math.ceil(rate * 0.005))),
            "MAX_VUS": str(max_vus),
        }
        args = [tool("k6"), "run", "-q", "--no-usage-report", "--summary-export", str(self.summary)]
        for k, v in env.items():
            args += ["-e", f"{k}={v}"]
        self._cpu0 = _children_cpu_s()
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen([*args, str(SCRIPT)], cwd=REPO, stdout=out, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    def finish(self) -> K6Result:
        code = self.proc.wait()
        cpu = _children_cpu_s() - self._cpu0
        try:
            m = json.loads(self.summary.read_text())["metrics"]
        except (OSError, ValueError, KeyError):
            raise SystemExit(f"bench: k6 exited with {code} and no summary; see {self.log}") from None

        def count(name: str) -> int:
            return int(m.get(name, {}).get("count", 0))

        dur = m.get("http_req_duration", {})
        return K6Result(
            requests=count("http_reqs"),
            accepted=count("orders_accepted"),
            refused=count("orders_refused"),
            no_answer=count("orders_no_answer"),
            dropped=count("dropped_iterations"),
            rate=float(m.get("http_reqs", {}).get("rate", 0.0)),
            p50_ms=float(dur.get("p(50)", math.nan)),
            p90_ms=float(dur.get("p(90)", math.nan)),
            p99_ms=float(dur.get("p(99)", math.nan)),
            max_ms=float(dur.get("max", math.nan)),
            cpu_s=cpu,
            exit_code=code,
        )
