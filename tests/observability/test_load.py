"""`orderflow load` runs the bundled k6 scenarios, records the run, and k6's thresholds know the mode.

The ingest is stood in for by a tiny HTTP server that answers like a direct-mode ingest over its
capacity: every third POST /orders gets 500 server-kaput.
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from orderflow_tools import loadrun
from orderflow_tools.kit import free_port

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = REPO / "k6" / "scenarios"


class _Kaput(BaseHTTPRequestHandler):
    counter = itertools.count()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        n = next(self.counter)
        status, body = (
            (500, {"result": "server-kaput"})
            if n % 3 == 2
            else (200, {"result": "created", "order_id": f"o{n}"})
        )
        self._answer(status, json.dumps(body).encode(), "application/json")

    def do_GET(self) -> None:
        text = (
            'orderflow_consumer_pending{consumer="workers"} 0\norderflow_work_done_total{status="done"} 1\n'
        )
        self._answer(200, text.encode(), "text/plain; version=0.0.4")

    def _answer(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def kaput_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Kaput)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def _args(url: str, out: Path, mode: str, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    loadrun.add_parser(parser.add_subparsers())
    nowhere = f"nats://127.0.0.1:{free_port()}"  # never assume 4222 is ours (or free)
    return parser.parse_args(
        ["load", "sine", "--url", url, "--ingest-metrics", f"{url}/metrics", "--duration", "4s", "--peak-rps", "20", "--out", str(out),
         "--mode", mode, "--settle", "0", "--nats-url", nowhere, "--dev-dir", str(out / "no-dev"), *extra]
    )  # fmt: skip


@pytest.mark.procs
def test_direct_mode_run_passes_although_the_ingest_answers_500(
    kaput_server: str, k6: Path, tmp_path: Path
) -> None:
    args = _args(kaput_server, tmp_path, "direct")
    assert args.func(args) == 0, (tmp_path / "k6-summary.txt").read_text()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["metrics"]["orders_answered{status:500}"]["count"] > 0
    assert (tmp_path / "k6.json").stat().st_size > 0
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines and all(line["ok"] for line in lines)
    assert {line["target"] for line in lines} == {f"{kaput_server}/metrics"}  # --ingest-metrics
    assert ["orderflow_consumer_pending", {"consumer": "workers"}, 0.0] in lines[0]["samples"]
    meta = json.loads((tmp_path / "run.json").read_text())
    assert meta["k6_exit_code"] == 0 and meta["mode"] == "direct"


@pytest.mark.procs
def test_a_missing_source_is_named_with_what_the_report_will_lack(
    kaput_server: str, k6: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _args(kaput_server, tmp_path, "direct")
    assert args.func(args) == 0
    err = capsys.readouterr().err
    assert f"warning: no NATS at {args.nats_url} (" in err and "--nats-url sets it" in err
    assert "warning: no worker /metrics to sample" in err
    sources = json.loads((tmp_path / "run.json").read_text())["sources"]
    assert sources["nats"]["error"] and sources["ingest_metrics"]["error"] is None


@pytest.mark.procs
def test_queued_mode_run_fails_its_thresholds_on_any_500(kaput_server: str, k6: Path, tmp_path: Path) -> None:
    args = _args(kaput_server, tmp_path, "queued")
    assert args.func(args) == 99  # k6: thresholds crossed


@pytest.mark.procs
@pytest.mark.parametrize("scenario", ["sine", "spike", "soak", "smoke"])
@pytest.mark.parametrize("mode", ["queued", "direct"])
def test_every_scenario_parses_with_thresholds_for_its_mode(k6: Path, scenario: str, mode: str) -> None:
    result = subprocess.run(
        [k6, "inspect", "-e", f"MODE={mode}", "-e", "DURATION=90s", SCENARIOS / f"{scenario}.js"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    options = json.loads(result.stdout)
    thresholds = options["thresholds"]
    assert "checks" in thresholds
    if mode == "queued" or scenario == "smoke":
        assert thresholds["orders_answered{status:500}"] == ["count==0"]
    else:
        assert thresholds["orders_answered{status:500}"] != ["count==0"]


@pytest.mark.procs
def test_sine_stages_rise_to_the_peak_and_fall_back_to_zero(k6: Path) -> None:
    result = subprocess.run(
        [k6, "inspect", "-e", "PEAK_RPS=100", "-e", "PERIOD=60s", "-e", "DURATION=120s",
         SCENARIOS / "sine.js"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    stages = json.loads(result.stdout)["scenarios"]["sine"]["stages"]
    targets = [s["target"] for s in stages]
    assert len(stages) == 60  # two periods of 30 steps
    assert max(targets) == 100 and targets[14] == 100 and targets[29] == 0 and targets[-1] == 0


def test_duration_parsing_matches_the_scenarios() -> None:
    assert loadrun.parse_duration("90") == 90
    assert loadrun.parse_duration("2m") == 120
    assert loadrun.parse_duration("1h30m") == 5400
    with pytest.raises(argparse.ArgumentTypeError):
        loadrun.parse_duration("soon")


def test_k6_is_found_beside_the_interpreter() -> None:
    found = loadrun.find_k6()
    assert found is not None and found.name == "k6"


def test_the_settling_line_counts_from_the_load_s_end_against_the_settle_budget(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue #27: after a 120 s load the line said "settling 120s/120s" (the load's clock); it says
    how long the settling has run, out of --settle."""
    progress = loadrun.Progress(tmp_path, 120.0)
    progress.tty = False
    progress.update(time.time() - 3.2, None, "settling ", total_s=60.0)
    line = capsys.readouterr().err.strip()
    assert line.startswith("settling     3s/60s"), line
