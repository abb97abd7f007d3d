"""The README's first steps, run as written against `make run`'s stack (`orderflow dev` with its
defaults, but on free ports and a shorter load: the only substitutions).

1. `orderflow dev` in a fresh directory (data in ./.orderflow, as `make run` keeps it).
2. Every command of the "Then, in another terminal" block, in order: the curl, `status`,
   `status ID --watch` with the id the curl returned, `load ... && report ...`, `dlq list`.
3. The load run found every source itself (no warning), and the report drew every picture, its
   title stating the setup: it used to draw 3 of 5 as empty frames without --metrics."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from harness import REPO, find_binary, free_port, wait_until

from orderflow_tools import report
from orderflow_tools.kit import free_port_block

pytestmark = pytest.mark.slow
EXAMPLE_ID = "9f2c4e71a08b3d56c1e0f7a29b4d8e63"
LOAD_S = "10s"  # the README says 2m; a short load still feeds every picture of the report


def first_steps() -> list[str]:
    text = (REPO / "README.md").read_text()
    block = text.split("Then, in another terminal:", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_the_readme_first_steps_work_as_written(tmp_path: Path, k6: Path) -> None:
    find_binary("nats-server")
    find_binary("curl", "the README uses curl")
    # `orderflow dev` runs 2 workers, on --worker-port and the port after it
    port, nats_port, worker_port = free_port(), free_port(), free_port_block(2)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERFLOW_")}
    out = (tmp_path / "dev.log").open("wb")
    dev = subprocess.Popen(
        [sys.executable, "-m", "orderflow_tools.cli", "dev", "--port", str(port), "--metrics-port",
         str(free_port()), "--nats-port", str(nats_port), "--worker-port", str(worker_port)],
        cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_until(
            lambda: (
                "orderflow dev is up" in (text := (tmp_path / "dev.log").read_text())
                or (dev.poll() is not None and pytest.fail(f"orderflow dev exited {dev.returncode}: {text}"))
            ),
            90,
            "dev to be up",
        )
        order_id = None
        outputs = []
        for line in first_steps():
            command = line.split("  #", 1)[0].strip()
            command = command.replace("localhost:8080", f"localhost:{port}")
            command = command.replace(".venv/bin/orderflow", f"{sys.executable} -m orderflow_tools.cli")
            command = command.replace("--duration 2m", f"--duration {LOAD_S} --url http://127.0.0.1:{port}")
            if order_id is not None:
                command = command.replace(EXAMPLE_ID, order_id)
            # The CLI reaches NATS at its default URL, which is make run's; here the port differs.
            # The load run finds its NATS itself (in .orderflow/dev.json).
            nats_env = {**env, "ORDERFLOW_NATS_URL": f"nats://127.0.0.1:{nats_port}"}
            run_env = env if " load " in command else nats_env
            result = subprocess.run(
                ["bash", "-c", command],
                cwd=tmp_path,
                env=run_env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert result.returncode == 0, f"{line}\n{result.stdout}\n{result.stderr}"
            outputs.append((line, result))
            if line.startswith("curl"):
                answer = json.loads(result.stdout)
                assert answer["result"] == "created"
                order_id = answer["order_id"]
        by_command = {line.split()[1] if line.startswith(".venv") else "curl": r for line, r in outputs}
        assert "consumer workers" in outputs[1][1].stdout
        assert '"status": "done"' in outputs[2][1].stdout  # --watch followed it to the end
        load = next(r for line, r in outputs if " load " in line)
        assert "warning:" not in load.stderr, load.stderr
        run_dir = tmp_path / "runs" / "sine"
        figures = json.loads((run_dir / "figures.json").read_text())
        assert figures["not_drawn"] == {}
        assert re.fullmatch(
            r"sine · queued mode · peak \d+ RPS · 2 workers x 16 slots · work 0.5 s", figures["setup"]
        )
        assert figures["sources"]["queue"] == "consumer state read from NATS every 1 s"
        assert figures["accepted"] == figures["done"] == figures["by_status"]["200"]
        for png in report.PNGS:
            assert (run_dir / png).stat().st_size > 10_000, png
        assert "dlq" in by_command
    finally:
        dev.send_signal(signal.SIGINT)
        try:
            dev.wait(60)
        except subprocess.TimeoutExpired:
            dev.kill()
            dev.wait()
        out.close()
