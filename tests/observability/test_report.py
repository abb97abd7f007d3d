"""`orderflow report` draws its PNGs and figures from a recorded run directory."""

from __future__ import annotations

import argparse
import json
import math
from datetime import UTC, datetime
from pathlib import Path

import pytest

from orderflow_tools import report
from orderflow_tools.load_series import figures, load_run

START = 1_800_000_000.0
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _point(metric: str, t: float, value: float, **tags: str) -> str:
    time = datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")
    return json.dumps(
        {"type": "Point", "metric": metric, "data": {"time": time, "value": value, "tags": tags}}
    )


def synthetic_run(directory: Path, seconds: int = 40, peak: int = 20, capacity: int = 8) -> None:
    """A queued-mode sine run: arrivals peak above worker capacity, the queue absorbs and drains.

    The ingest is scraped at /i and one worker at /w, once a second, like `orderflow load` does.
    """
    k6_lines = [json.dumps({"type": "Metric", "metric": "orders_answered", "data": {"type": "counter"}})]
    metric_lines = []
    stored = done = 0.0
    for s in range(seconds + 20):
        rate = round(peak * (1 - math.cos(2 * math.pi * s / seconds)) / 2) if s < seconds else 0
        for i in range(rate):
            t = START + s + i / max(rate, 1)
            k6_lines.append(_point("orders_answered", t, 1, status="200"))
            k6_lines.append(_point("http_req_duration", t, 1.0 + i % 5, name="POST /orders", status="200"))
        if s == seconds // 2:
            k6_lines.append(_point("orders_answered", START + s, 1, status="503"))
        stored += rate
        done = min(stored, done + capacity)
        t = START + s + 0.5
        metric_lines.append({
            "t": t, "target": "http://x/i", "ok": True,
            "samples": [["orderflow_orders_published_total", {"result": "stored"}, stored]],
        })  # fmt: skip
        metric_lines.append({
            "t": t, "target": "http://x/w", "ok": True,
            "samples": [
                ["orderflow_work_done_total", {"status": "done"}, done],
                ["orderflow_consumer_pending", {"consumer": "workers"}, stored - done],
                ["orderflow_consumer_ack_pending", {"consumer": "workers"}, 0.0],
            ],
        })  # fmt: skip
    metric_lines.append({"t": START + seconds + 21, "target": "http://x/w", "ok": False, "samples": []})
    (directory / "k6.json").write_text("\n".join(k6_lines) + "\n")
    (directory / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metric_lines))
    meta = {"scenario": "sine", "mode": "queued", "started_at": START, "k6_ended_at": START + seconds}
    (directory / "run.json").write_text(json.dumps(meta))


def test_report_draws_every_png_and_writes_figures(tmp_path: Path) -> None:
    synthetic_run(tmp_path)
    args = argparse.Namespace(dir=tmp_path, title=None)
    assert report.run(args) == 0
    for name in report.PNGS:
        data = (tmp_path / name).read_bytes()
        assert data.startswith(PNG_MAGIC), name
        assert len(data) > 10_000, f"{name} looks empty"
    numbers = json.loads((tmp_path / "figures.json").read_text())
    assert numbers["peak_rps"] == 21  # 20 created plus the one 503 in the peak second
    assert numbers["by_status"]["503"] == 1
    assert numbers["status_500"] == 0


def test_figures_show_the_queue_absorbing_the_peak_and_draining(tmp_path: Path) -> None:
    synthetic_run(tmp_path, seconds=40, peak=20, capacity=8)
    numbers = figures(load_run(tmp_path))
    assert numbers["accepted"] == numbers["done"] == numbers["requests"] - 1  # the 503 was not stored
    assert numbers["backlog_peak"] > 100
    # the backlog peaks after the arrival peak (t=20 s), when arrivals fall below capacity
    assert 20 < numbers["backlog_peak_at_s"] < 40
    assert numbers["drained_at_s"] > numbers["backlog_peak_at_s"]
    assert numbers["drained_after_load_end_s"] > 0


def test_report_of_a_directory_without_a_run_fails_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert report.run(argparse.Namespace(dir=tmp_path, title=None)) == 2
    assert "orderflow load" in capsys.readouterr().err


def test_report_registers_its_subcommand() -> None:
    parser = argparse.ArgumentParser()
    report.add_parser(parser.add_subparsers())
    args = parser.parse_args(["report", "some/dir", "--title", "x"])
    assert args.func is report.run and args.dir == Path("some/dir")
