"""`orderflow report` draws its PNGs and figures from a recorded run directory."""

from __future__ import annotations

import argparse
import itertools
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


def test_a_backlog_worked_off_before_the_load_ended_drained_0s_after_it(tmp_path: Path) -> None:
    """Issue #27: capacity just under the peak: the backlog empties on the falling half, while k6
    still runs; figures.json said `drained_after_load_end_s: -3.3` for such a run."""
    synthetic_run(tmp_path, seconds=40, peak=20, capacity=15)
    run = load_run(tmp_path)
    numbers = figures(run)
    assert run.k6_end is not None and numbers["drained_at_s"] < run.k6_end
    assert numbers["drained_after_load_end_s"] == 0


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


def nats_only_run(directory: Path, seconds: int = 30) -> None:
    """k6 and JetStream's own samples (nats.jsonl), no service metrics: a run against an ingest
    and workers whose /metrics nobody gave."""
    synthetic_run(directory, seconds=seconds)
    (directory / "metrics.jsonl").write_text("")
    lines, stored, done = [], 0.0, 0.0
    for s in range(seconds + 20):
        rate = round(20 * (1 - math.cos(2 * math.pi * s / seconds)) / 2) if s < seconds else 0
        stored += rate
        done = min(stored, done + 8)
        samples = [
            ["nats_consumer_pending", {"consumer": "workers"}, stored - done],
            ["nats_consumer_ack_pending", {"consumer": "workers"}, min(8.0, stored - done)],
            ["nats_stream_messages", {"stream": "ORDERS"}, stored - done],
            ["nats_stream_last_seq", {"stream": "ORDERS"}, 1000 + stored],
            ["nats_live_workers", {}, 2.0],
        ]
        lines.append({"t": START + s + 0.3, "target": "nats", "ok": True, "samples": samples})
    (directory / "nats.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    meta = json.loads((directory / "run.json").read_text())
    meta.update(
        setup={"workers": 2, "slots_per_worker": 4, "work_s": "0.5"},
        sources={"nats": {"url": "nats://127.0.0.1:4222", "error": None}},
        nats_interval_s=1.0,
    )
    (directory / "run.json").write_text(json.dumps(meta))


def test_jetstream_alone_is_enough_for_every_picture(tmp_path: Path) -> None:
    """Without any service metrics the backlog, the orders accepted (stored in ORDERS) and done
    (leaving ORDERS) come from JetStream itself: nothing is drawn as an empty frame."""
    nats_only_run(tmp_path)
    assert report.run(argparse.Namespace(dir=tmp_path, title=None)) == 0
    numbers = json.loads((tmp_path / "figures.json").read_text())
    assert numbers["not_drawn"] == {}
    assert numbers["accepted"] == numbers["done"] == numbers["by_status"]["200"]
    assert numbers["backlog_peak"] > 50 and numbers["drained_at_s"] is not None
    assert numbers["sources"]["queue"] == "consumer state read from NATS every 1 s"
    assert numbers["sources"]["done"] == "messages leaving ORDERS (acked or termed)"
    for name in report.PNGS:
        assert (tmp_path / name).stat().st_size > 10_000, name


def test_report_says_which_pictures_it_could_not_draw_and_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    synthetic_run(tmp_path)
    (tmp_path / "metrics.jsonl").write_text("")  # no service answered
    (tmp_path / "queue_depth.png").write_bytes(PNG_MAGIC)  # a stale picture of an earlier report
    meta = json.loads((tmp_path / "run.json").read_text())
    meta["sources"] = {
        "nats": {"url": "nats://127.0.0.1:4999", "error": "nats: no servers available for connection"},
        "ingest_metrics": {"url": "http://127.0.0.1:8080/metrics", "error": "Connection refused"},
    }
    (tmp_path / "run.json").write_text(json.dumps(meta))
    assert report.run(argparse.Namespace(dir=tmp_path, title=None)) == 0
    err = capsys.readouterr().err
    skipped = json.loads((tmp_path / "figures.json").read_text())["not_drawn"]
    assert set(skipped) == {"accepted_vs_done.png", "queue_depth.png", "overview.png"}
    assert "NATS at nats://127.0.0.1:4999 did not answer (nats: no servers" in skipped["queue_depth.png"]
    assert (
        "the ingest's metrics at http://127.0.0.1:8080/metrics did not answer"
        in skipped["accepted_vs_done.png"]
    )
    for png in skipped:
        assert f"not drawn: {tmp_path / png}: " in err
        assert not (tmp_path / png).exists()
    assert (tmp_path / "requests_by_status.png").stat().st_size > 10_000


def test_titles_state_the_setup_and_the_queue_its_source_and_refresh(tmp_path: Path) -> None:
    nats_only_run(tmp_path)
    run = load_run(tmp_path)
    assert report.setup_title(run) == "sine · queued mode · peak 21 RPS · 2 workers x 4 slots · work 0.5 s"
    run.meta["mode"] = "direct"  # the work is done in the request: no workers in the title
    assert report.setup_title(run) == "sine · direct mode · peak 21 RPS · work 0.5 s inline"
    synthetic_run(tmp_path)  # the workers' gauge only
    meta = json.loads((tmp_path / "run.json").read_text())
    meta["consumer_info_interval_s"] = 5.0
    (tmp_path / "run.json").write_text(json.dumps(meta))
    (tmp_path / "nats.jsonl").unlink()
    assert report.queue_source_text(load_run(tmp_path)).startswith(
        "the workers' orderflow_consumer_pending, refreshed only every 5 s"
    )


@pytest.mark.parametrize("plot", ["plot_requests", "plot_accepted_vs_done", "plot_latency", "plot_queue"])
def test_no_legend_covers_the_data(tmp_path: Path, plot: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    synthetic_run(tmp_path)
    fig, ax = plt.subplots(figsize=(11, 4))
    getattr(report, plot)(ax, load_run(tmp_path))
    fig.tight_layout()
    fig.canvas.draw()
    legend = ax.get_legend()
    assert legend is not None
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    box, plot_area = legend.get_window_extent(renderer), ax.get_window_extent(renderer)
    assert box.x0 >= plot_area.x1, "the legend overlaps the plot area"
    plt.close(fig)


def direct_run(directory: Path, seconds: int = 40, late: tuple[int, ...] = (10, 25)) -> None:
    """A direct-mode run as `orderflow load` records one against `orderflow dev`: the ingest (/i)
    does the work inline and counts it; a worker (/w) is scraped too and does nothing; JetStream's
    consumer stays empty. Two of the ingest's scrapes come late into the previous second, so the
    seconds in `late` hold no ingest sample at all (the scrape jitter a loaded machine has)."""
    synthetic_run(directory, seconds=seconds)
    answered = [0] * (seconds + 20)
    for line in (directory / "k6.json").read_text().splitlines()[1:]:
        point = json.loads(line)
        if point["metric"] == "orders_answered" and point["data"]["tags"]["status"] == "200":
            stamp = datetime.fromisoformat(point["data"]["time"].replace("Z", "+00:00")).timestamp()
            answered[int(stamp - START)] += 1
    metric_lines, done = [], 0.0
    for s in range(seconds + 20):
        # a late scrape (just before second s) has counted the orders done up to then
        t = START + s + (-0.02 if s in late else 0.98)
        done += 0 if s in late else answered[s] + (answered[s - 1] if s - 1 in late else 0)
        metric_lines.append({"t": t, "target": "http://x/i", "ok": True,
                             "samples": [["orderflow_work_done_total", {"status": "done"}, done]]})  # fmt: skip
        metric_lines.append({"t": START + s + 0.5, "target": "http://x/w", "ok": True,
                             "samples": [["orderflow_work_done_total", {"status": "done"}, 0.0]]})  # fmt: skip
    (directory / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metric_lines))
    nats = [
        {"t": START + s + 0.3, "target": "nats", "ok": True,
         "samples": [["nats_consumer_pending", {"consumer": "workers"}, 0.0],
                     ["nats_consumer_ack_pending", {"consumer": "workers"}, 0.0]]}
        for s in range(seconds + 20)
    ]  # fmt: skip
    (directory / "nats.jsonl").write_text("".join(json.dumps(n) + "\n" for n in nats))
    meta = json.loads((directory / "run.json").read_text())
    meta.update(
        mode="direct",
        setup={"workers": 1, "slots_per_worker": 4, "work_s": "0.05", "from": "orderflow dev"},
        sources={
            "nats": {"url": "nats://127.0.0.1:4222", "error": None},
            "ingest_metrics": {"url": "http://x/i", "error": None},
        },
    )
    (directory / "run.json").write_text(json.dumps(meta))


def test_a_missing_sample_is_no_drop_and_done_is_the_ingests_in_direct_mode(tmp_path: Path) -> None:
    """Issue #27: the cumulative "done" dropped to 0 in each second the ingest's sample missed
    (only the idle worker's 0 was in it), was labelled the workers', and figures.json said 0."""
    direct_run(tmp_path)
    run = load_run(tmp_path)
    xs, total = run.done_total
    assert 10.0 in xs and 25.0 in xs  # the seconds without an ingest sample are still there ...
    assert all(b >= a for a, b in itertools.pairwise(total)), "the cumulative done line drops"
    assert total[xs.index(10.0)] > 0 and total[xs.index(25.0)] > 0  # ... carrying the count
    rate = dict(zip(*run.done_rate, strict=True))
    assert rate[10] > 0 and rate[25] > 0  # the rate there is the covering interval's, not 0
    assert run.done_source == "the ingest's /metrics"
    numbers = figures(run)
    assert numbers["done"] == numbers["by_status"]["200"] > 0
    assert numbers["accepted"] is None and numbers["accepted_missing"].startswith(
        "direct mode stores no orders"
    )
    assert numbers["capacity_slots"] is None  # direct mode: the workers' slots do none of it


def test_a_direct_run_skips_the_empty_queue_chart_and_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    direct_run(tmp_path)
    assert report.run(argparse.Namespace(dir=tmp_path, title=None)) == 0
    numbers = json.loads((tmp_path / "figures.json").read_text())
    why = numbers["not_drawn"]["queue_depth.png"]
    assert why.startswith("the queue stayed empty the whole run (60 samples, all 0)")
    assert "direct mode" in why
    assert f"not drawn: {tmp_path / 'queue_depth.png'}: the queue stayed empty" in capsys.readouterr().err
    assert not (tmp_path / "queue_depth.png").exists()
    assert set(numbers["not_drawn"]) == {"queue_depth.png"}
    assert numbers["sources"]["done"] == "the ingest's /metrics"
    fig = report.overview(plt, load_run(tmp_path))
    labels = [line.get_label() for ax in fig.axes for line in ax.get_lines()]
    assert len(fig.axes) == 2, "an empty queue panel in the overview"
    assert "done (the ingest's /metrics)" in labels
    plt.close(fig)


def test_the_queued_overview_shows_the_queue_running_on_its_own_axis_and_capacity(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nats_only_run(tmp_path)  # run.json: 2 workers x 4 slots
    run = load_run(tmp_path)
    assert run.capacity == 8 and figures(run)["capacity_slots"] == 8
    fig = report.overview(plt, run)
    lines = {str(line.get_label()): line for ax in fig.axes for line in ax.get_lines()}
    waiting = lines["waiting (not yet delivered)"]
    running = lines["running (delivered, not acked; right axis)"]
    capacity = next(
        line for label, line in lines.items() if label.startswith("capacity: 2 workers x 4 slots")
    )
    assert list(waiting.get_ydata()) == run.pending[1] and max(run.pending[1]) > 50
    assert list(running.get_ydata()) == run.ack_pending[1]
    assert list(capacity.get_ydata()) == [8, 8]
    assert running.axes is capacity.axes is not waiting.axes  # a scale of its own, not the backlog's
    assert running.axes is not None and running.axes.get_ylim()[1] < 20
    plt.close(fig)


def test_each_counter_is_labelled_with_the_service_that_counted_it(tmp_path: Path) -> None:
    synthetic_run(tmp_path)
    run = load_run(tmp_path)
    assert (run.accepted_source, run.done_source) == ("the ingest's /metrics", "the workers' /metrics")


def test_samples_further_apart_than_the_gap_leave_a_gap_in_the_rate(tmp_path: Path) -> None:
    direct_run(tmp_path)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    kept = [m for m in lines if not (m["target"] == "http://x/i" and START + 12 < m["t"] < START + 18)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in kept))
    rate = dict(zip(*load_run(tmp_path).done_rate, strict=True))
    assert all(math.isnan(rate[s]) for s in range(12, 19))  # samples at 11.98 s and 18.98 s
    assert not math.isnan(rate[11]) and not math.isnan(rate[19])
