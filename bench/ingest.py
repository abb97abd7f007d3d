"""bench/ingest: the queued POST /orders against a bare Starlette endpoint that only validates and
answers. Same run, same machine, one uvicorn process each (uvloop + httptools).

    python -m bench.ingest [--rounds 3] [--seconds 6] [--connections 64] [--keys 10]

1. max throughput: wrk, interleaved rounds (bare, queued, auth, bare, queued, auth, ...), medians;
   `auth` is a second queued ingest with API keys on (a key file of --keys entries, every request
   with its Bearer key): what identity costs at the intake (issue #20's goal: at most 5 %);
2. latency at half the queued maximum: a fixed arrival rate from `hey` (few workers, each paced,
   so arrivals are spread evenly; k6 constant-arrival-rate when hey is missing), p50/p99;
3. honesty check: 200s answered == orders stored in the stream (never a 200 without a PubAck).
With --tracing, two more queued ingests in the same rounds: traced at 10 % and 100 % (OTLP/HTTP to
bench/otlp_sink.py), each printed beside the untraced one, with the CPU each ingest process spent
per request answered (steadier than max RPS on a shared machine; docs/observability.md "Traces").

Prints figures; it does not pass or fail on timing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import nats

from orderflow import auth
from orderflow_tools.kit import REPO, NatsServer, Process, StartError, free_port, python_module, tree_cpu_s

BIN = Path(sys.executable).parent
BODY = '{"product_id":"33","count":"3","username":"maksim.konovalov"}'


def bench_env() -> dict[str, str]:
    """This process's environment without its ORDERFLOW_ settings: a bench's processes run with
    the defaults and what the bench names, never with what the shell happened to export."""
    return {k: v for k, v in os.environ.items() if not k.startswith("ORDERFLOW_")}


def ingest_process(nats_url: str, port: int, log: Path, name: str, **extra: str) -> Process:
    """A queued ingest on 127.0.0.1:`port` (loopback: open without API keys), its metrics on a port
    of their own, logging warnings only: the bench measures requests, not log lines."""
    env = {
        **bench_env(),
        "ORDERFLOW_NATS_URL": nats_url,
        "ORDERFLOW_HTTP_PORT": str(port),
        "ORDERFLOW_METRICS_PORT": str(free_port()),
        "ORDERFLOW_HTTP_HOST": "127.0.0.1",
        "ORDERFLOW_LOG_LEVEL": "warning",
        **extra,
    }
    return Process(python_module("ingest"), env, log, cwd=REPO, name=name)


def wrk_bench_parser(doc: str | None, seconds: float, connections: int) -> argparse.ArgumentParser:
    """The options every wrk bench takes: --rounds of its contenders interleaved, --seconds of
    each wrk run, --connections wrk keeps open."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=seconds)
    ap.add_argument("--connections", type=int, default=connections)
    return ap


def need_wrk() -> None:
    if not shutil.which("wrk"):
        raise SystemExit("bench: wrk not found (Debian: apt-get install wrk)")


def report(command: list[str]) -> str:
    """Run a load tool to its end and return what it printed; a failed run raises."""
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


def requests_per_s(out: str) -> float:
    # wrk and hey print the same line.
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]


def wrk(url: str, seconds: float, connections: int, lua: Path) -> dict[str, float]:
    out = report(
        ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", "-s", str(lua), url]
    )

    def ms(label: str) -> float:
        m = re.search(rf"{label}\s+([\d.]+)(us|ms|s)", out)
        if not m:
            return float("nan")
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rps = requests_per_s(out)
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = int(non2xx.group(1)) if non2xx else 0
    return {"rps": rps, "p50": ms("50%"), "p99": ms("99%"), "ok": total - errors, "errors": errors}


def hey_constant(url: str, rate: int, seconds: int) -> dict[str, float]:
    # hey paces each worker with its own ticker; many workers tick together and arrive in bursts,
    # so keep ~350 requests/s per worker (a worker is closed-loop: it needs latency < 1/q).
    workers = max(4, round(rate / 350))
    out = report(
        [
            "hey",
            "-z",
            f"{seconds}s",
            "-c",
            str(workers),
            "-q",
            str(max(1, rate // workers)),
            "-m",
            "POST",
            "-T",
            "application/json",
            "-d",
            BODY,
            url,
        ]
    )

    def pct(label: str) -> float:
        m = re.search(rf"{label}% in ([\d.]+) secs", out)
        return float(m.group(1)) * 1000 if m else float("nan")

    rps = requests_per_s(out)
    ok = re.search(r"\[200\]\s+(\d+) responses", out)
    total = re.search(r"Total:\s+[\d.]+ secs", out)
    return {"rps": rps, "p50": pct("50"), "p99": pct("99"), "failed": 0.0 if ok and total else 1.0}


def k6_constant(url: str, rate: int, seconds: int, workdir: Path) -> dict[str, float]:
    script = workdir / "constant.js"
    script.write_text(
        textwrap.dedent(f"""
        import http from 'k6/http';
        export const options = {{
          discardResponseBodies: true,
          scenarios: {{ c: {{ executor: 'constant-arrival-rate', rate: {rate}, timeUnit: '1s',
                             duration: '{seconds}s', preAllocatedVUs: 200, maxVUs: 2000 }} }},
          summaryTrendStats: ['p(50)', 'p(99)', 'max'],
        }};
        const body = '{BODY}';
        export default function () {{
          http.post('{url}', body, {{ headers: {{ 'Content-Type': 'application/json' }} }});
        }}
    """)
    )
    summary = workdir / "summary.json"
    k6 = shutil.which("k6", path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}") or "k6"
    subprocess.run(
        [k6, "run", "-q", "--summary-export", str(summary), str(script)], check=True, capture_output=True
    )
    data = json.loads(summary.read_text())["metrics"]
    dur = data["http_req_duration"]
    reqs = data["http_reqs"]
    failed = data.get("http_req_failed", {}).get("value", 0.0)
    return {"rps": reqs["rate"], "p50": dur["p(50)"], "p99": dur["p(99)"], "failed": failed}


async def stored_orders(nats_url: str) -> int:
    nc = await nats.connect(nats_url)
    try:
        return int((await nc.jetstream().stream_info("ORDERS")).state.messages)
    finally:
        await nc.close()


def _check_us(keys_file: Path, key: str) -> float:
    """What the ingest's identity check costs per request in process (best of 7 x 100 000), the
    figure wrk's noisy end-to-end difference should agree with."""
    import timeit
    from dataclasses import replace

    from ingest.access import Access
    from orderflow.config import Settings

    access = Access(replace(Settings(), api_keys_file=str(keys_file)))
    header = b"Bearer " + key.encode()
    runs = timeit.repeat(lambda: access.check(header, auth.WRITE), number=100_000, repeat=7)
    return min(runs) / 100_000 * 1e6


def main() -> int:
    ap = wrk_bench_parser(__doc__, seconds=6, connections=64)
    ap.add_argument("--latency-seconds", type=int, default=10)
    ap.add_argument("--keys", type=int, default=10, help="entries in the auth ingest's key file")
    ap.add_argument(
        "--tracing",
        action="store_true",
        help="add two queued ingests traced at 10 %% and 100 %% (OTLP/HTTP to a local sink)",
    )
    args = ap.parse_args()
    need_wrk()

    work = Path(tempfile.mkdtemp(prefix="orderflow-bench-"))
    lua = work / "post.lua"
    lua.write_text(f"wrk.method='POST'\nwrk.body='{BODY}'\nwrk.headers['Content-Type']='application/json'\n")
    # The key the auth contender sends is the key file's last entry: every entry is compared anyway.
    keys = [auth.new_key() for _ in range(max(1, args.keys))]
    (work / "api-keys.json").write_text(
        json.dumps({"keys": [auth.entry(f"client-{i}", [auth.WRITE], k) for i, k in enumerate(keys)]})
    )
    auth_lua = work / "post-auth.lua"
    auth_lua.write_text(lua.read_text() + f"wrk.headers['Authorization']='Bearer {keys[-1]}'\n")
    ingest_port, auth_port, bare_port = free_port(), free_port(), free_port()
    env = bench_env()
    quiet = Path(os.devnull)
    nats = NatsServer(work / "js", quiet)

    def contender(port: int, name: str, **extra: str) -> Process:
        return ingest_process(nats.url, port, work / f"{name.replace(' ', '-')}.log", name, **extra)

    ingest = contender(ingest_port, "ingest")
    sink_port = free_port()
    sink = Process(
        [*python_module("bench.otlp_sink"), str(sink_port)], env, quiet, cwd=REPO, name="otlp sink"
    )
    traced_ports = {f"otel{pct}": free_port() for pct in ((10, 100) if args.tracing else ())}
    traced = {
        f"otel{pct}": contender(
            traced_ports[f"otel{pct}"],
            f"ingest traced at {pct} %",
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{sink_port}",
            OTEL_TRACES_SAMPLER="parentbased_traceidratio",
            OTEL_TRACES_SAMPLER_ARG=str(pct / 100),
        )
        for pct in ((10, 100) if args.tracing else ())
    }
    keyed = contender(auth_port, "ingest with keys", ORDERFLOW_API_KEYS_FILE=str(work / "api-keys.json"))
    bare = Process(
        [
            str(BIN / "uvicorn"),
            "bench.bare_app:app",
            "--port",
            str(bare_port),
            "--log-level",
            "warning",
            "--no-access-log",
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-proxy-headers",
            "--no-server-header",
            "--no-date-header",
        ],
        env,
        quiet,
        cwd=REPO,
        name="bare app",
    )
    try:
        try:
            nats.start()
            ingest.start()
            keyed.start()
            bare.start()
            ingest.wait_http(f"http://127.0.0.1:{ingest_port}/readyz")
            keyed.wait_http(f"http://127.0.0.1:{auth_port}/readyz")
            if traced:
                sink.start()
            for name, p in traced.items():
                p.start()
                p.wait_http(f"http://127.0.0.1:{traced_ports[name]}/readyz")
        except StartError as exc:
            raise SystemExit(f"bench: {exc}") from None
        time.sleep(1)
        urls = {
            "bare": f"http://127.0.0.1:{bare_port}/orders",
            "queued": f"http://127.0.0.1:{ingest_port}/orders",
            "auth": f"http://127.0.0.1:{auth_port}/orders",
            **{n: f"http://127.0.0.1:{port}/orders" for n, port in traced_ports.items()},
        }
        scripts = {"bare": lua, "queued": lua, "auth": auth_lua, **dict.fromkeys(traced, lua)}
        for name, url in urls.items():  # warm up
            wrk(url, 2, args.connections, scripts[name])
        results: dict[str, list[dict[str, float]]] = {name: [] for name in urls}
        measured = {"queued": ingest, **traced}  # their CPU per request, for the tracing figures
        pids = {n: p.pid for n, p in measured.items() if p.pid is not None}
        for r in range(args.rounds):
            for name, url in urls.items():
                cpu0 = tree_cpu_s(pids[name]) if name in pids else 0.0
                res = wrk(url, args.seconds, args.connections, scripts[name])
                if name in pids:
                    res["cpu_us"] = (tree_cpu_s(pids[name]) - cpu0) / max(1, res["ok"]) * 1e6
                results[name].append(res)
                print(
                    f"round {r + 1}/{args.rounds} {name:>6}: {res['rps']:8.0f} RPS  p50 {res['p50']:.2f} ms"
                    f"  p99 {res['p99']:.2f} ms",
                    flush=True,
                )
        med = {
            n: {k: statistics.median(x[k] for x in v) for k in ("rps", "p50", "p99")}
            for n, v in results.items()
        }
        ratio = med["queued"]["rps"] / med["bare"]["rps"]
        half = int(med["queued"]["rps"] / 2)
        tool = "hey" if shutil.which("hey") else "k6"
        print(f"latency run: {tool} at a fixed {half} RPS for {args.latency_seconds}s ...", flush=True)
        if tool == "hey":
            lat = hey_constant(urls["queued"], half, args.latency_seconds)
        else:
            lat = k6_constant(urls["queued"], half, args.latency_seconds, work)
        ok_200 = sum(x["ok"] for x in (*results["queued"], *results["auth"]))
        refused = sum(x["errors"] for x in results["auth"])
        stored = asyncio.run(stored_orders(nats.url))
        print()
        print(f"{'':24}{'bare Starlette':>16}{'queued ingest':>16}{'+ API keys':>16}")
        for label, key, form in (("max RPS (median)", "rps", ".0f"), ("p50 at max (ms)", "p50", ".2f"), ("p99 at max (ms)", "p99", ".2f")):  # fmt: skip
            print(f"{label:24}" + "".join(f"{med[n][key]:16{form}}" for n in ("bare", "queued", "auth")))
        print(f"ratio queued/bare: {ratio:.2f}   (goal >= 0.6)")
        cost = 1 - med["auth"]["rps"] / med["queued"]["rps"]
        check_us = _check_us(work / "api-keys.json", keys[-1])
        print(
            f"auth off vs on: {med['queued']['rps']:.0f} vs {med['auth']['rps']:.0f} RPS, auth costs {cost:.1%} "
            f"of max RPS (goal <= 5 %; {len(keys)} keys in the file; {refused} non-200 with keys)"
        )
        print(
            f"auth check in process: {check_us:.2f} us per request ({len(keys)} keys), "
            f"{check_us * med['queued']['rps'] / 1e6:.1%} of one core at the queued max"
        )
        print(
            f"at half max ({lat['rps']:.0f} RPS achieved): p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms"
            f"  (goal p99 <= 5 ms), failed {lat['failed']:.2%}"
        )
        print(
            f"honesty: wrk counted {ok_200} 200s in the max runs; stream holds {stored} orders "
            f"(incl. the warm-up and latency runs) -> {'OK' if stored >= ok_200 else 'MISMATCH'}"
        )
        for name in traced:
            cpu = {n: statistics.median(x["cpu_us"] for x in results[n]) for n in ("queued", name)}
            print(
                f"tracing off vs {name}: {med['queued']['rps']:.0f} vs {med[name]['rps']:.0f} RPS "
                f"(costs {1 - med[name]['rps'] / med['queued']['rps']:.1%}), p99 {med['queued']['p99']:.2f}"
                f" vs {med[name]['p99']:.2f} ms, CPU {cpu['queued']:.1f} vs {cpu[name]:.1f} us/request"
            )
        print(f"cores: {os.cpu_count()}, load average at end: {os.getloadavg()[0]:.2f}")
        return 0
    finally:
        bare.stop()
        ingest.stop()
        keyed.stop()
        for p in traced.values():
            p.stop()
        sink.stop()
        nats.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
