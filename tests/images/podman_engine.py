"""podman for the image tests: the project's containers.conf (CONTAINERS_CONF, nothing global
changed), one place that runs a podman command and says which step failed and why, and the build
of the images under test (scripts/images/build.sh, cached).

Where podman cannot run, the tests skip with the step and the reason; with CI set they fail."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

CI = bool(os.environ.get("CI"))
REPO = Path(__file__).resolve().parents[2]
CONTAINERS_CONF = REPO / "scripts" / "tools" / "containers.conf"
BUILD = REPO / "scripts" / "images" / "build.sh"
# Images under test get a tag of their own per checkout, so two worktrees testing at once on one
# machine never run each other's code; `make images` tags the version (the chart's appVersion).
TEST_TAG = "test-" + hashlib.sha256(str(REPO).encode()).hexdigest()[:10]
# Lines for the terminal summary at the end of the run: build steps, image sizes, drain timings.
SUMMARY: list[str] = []


class StepFailed(AssertionError):
    """A podman step failed: the message names the step, the command and podman's own words."""


def unavailable(step: str, why: str) -> None:
    """podman cannot do `step` on this machine: skip (the reason shown), or fail under CI."""
    message = f"image tests: cannot {step}: {why}"
    if CI:
        pytest.fail(message + " (CI=true: this is an error, not a skip)")
    pytest.skip(message)


def engine_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("CONTAINERS_CONF", str(CONTAINERS_CONF))
    return env


@dataclass(frozen=True)
class Podman:
    binary: str

    def run(
        self,
        step: str,
        *args: str,
        timeout: float = 120,
        check: bool = True,
        stdin: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        cmd = [self.binary, *args]
        try:
            proc = subprocess.run(
                cmd,
                input=stdin,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=engine_env(),
                cwd=REPO,
            )
        except subprocess.TimeoutExpired as exc:
            raise StepFailed(f"{step}: `{' '.join(cmd)}` did not finish in {timeout:g} s") from exc
        if check and proc.returncode != 0:
            raise StepFailed(
                f"{step}: `{' '.join(cmd)}` exited {proc.returncode}:\n{proc.stderr[-3000:]}{proc.stdout[-2000:]}"
            )
        return proc

    def inspect(self, what: str, name: str) -> dict[str, Any]:
        out = self.run(f"inspect {what} {name}", what, "inspect", name).stdout
        data = json.loads(out)
        return dict(data[0] if isinstance(data, list) else data)

    def exists(self, what: str, name: str) -> bool:
        return self.run(f"look for {what} {name}", what, "exists", name, check=False).returncode == 0

    def logs(self, name: str) -> str:
        proc = self.run(f"logs of {name}", "logs", name, check=False)
        return proc.stdout + proc.stderr

    def rm_container(self, name: str) -> None:
        self.run(f"remove container {name}", "rm", "-f", "-t", "0", name, check=False)

    def image_size_mb(self, image: str) -> float:
        return float(self.inspect("image", image)["Size"]) / 1e6


def find_podman() -> Podman:
    """podman present and answering, or skip/fail naming the step."""
    binary = shutil.which("podman")
    if binary is None:
        unavailable("find podman", "not on PATH (make tools installs it: scripts/tools/podman.sh)")
        raise AssertionError("unreachable")
    proc = subprocess.run(
        [binary, "info", "--format", "json"], capture_output=True, text=True, timeout=60, env=engine_env()
    )
    if proc.returncode != 0:
        unavailable("run `podman info`", proc.stderr.strip()[-1500:])
    return Podman(binary)


# The handler package from outside orderflow's packages that the tests build a worker image with
# (`make images HANDLERS=...`), and the SBOMs' directory (`make sbom`), per checkout.
HANDLERS = REPO / "tests" / "support" / "acme_invoices"
SBOM_DIR = REPO / ".orderflow" / "sbom-test"


@dataclass(frozen=True)
class Images:
    ingest: str
    worker: str
    tools: str
    handlers: str  # orderflow/worker with tests/support/acme_invoices
    base: str
    sboms: Path  # <component>.cdx.json of ingest, worker, tools


def build_images(podman: Podman) -> Images:
    """scripts/images/build.sh with podman and this checkout's test tag, the SBOMs and the handler
    image included, once per session: seconds when nothing changed, a few minutes on a fresh
    machine (debootstrap of the local base, pip install)."""
    env = engine_env() | {
        "CONTAINER_ENGINE": "podman",
        "IMAGE_TAG": TEST_TAG,
        "IMAGE_PREFIX": "orderflow",
        "SBOM_DIR": str(SBOM_DIR),
        "HANDLERS": str(HANDLERS),
    }
    started = time.monotonic()
    proc = subprocess.run(
        ["bash", str(BUILD)], capture_output=True, text=True, timeout=1500, env=env, cwd=REPO
    )
    lines = [line for line in proc.stderr.splitlines() if line.startswith("images:")]
    SUMMARY.extend(lines)
    SUMMARY.append(f"images: the tests' build step took {time.monotonic() - started:.0f} s")
    if proc.returncode != 0:
        failed = next((line for line in lines if "FAILED at" in line), "images: FAILED")
        # A build failure is the product failing, not the machine: it fails everywhere.
        raise StepFailed(f"{failed}\n{proc.stderr[-4000:]}")
    base = next(
        (m.group(1) for line in lines if (m := re.match(r"images: base (\S+)", line))), "python:3.11-slim"
    )
    return Images(
        f"orderflow/ingest:{TEST_TAG}",
        f"orderflow/worker:{TEST_TAG}",
        f"orderflow/tools:{TEST_TAG}",
        f"orderflow/worker-acme-invoices:{TEST_TAG}",
        base,
        SBOM_DIR,
    )


def container_flags(read_only: bool = True) -> list[str]:
    """What the chart's securityContext asks of a container, as `podman run` flags: read-only root,
    no capabilities, no privilege escalation, /tmp a small writable tmpfs (the emptyDir), host
    network (podman's own networks do not work on every machine). No --user: the image's USER
    must make it non-root by itself."""
    flags = [
        "--network",
        "host",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--tmpfs",
        "/tmp:rw,size=64m,mode=1777",
    ]
    return (["--read-only"] if read_only else []) + flags


def env_flags(env: dict[str, str]) -> list[str]:
    out: list[str] = []
    for key, value in env.items():
        out += ["-e", f"{key}={value}"]
    return out


def top(podman: Podman, container: str, *fields: str) -> list[list[str]]:
    """`podman top` rows (without the header) of the descriptors in `fields`."""
    out = podman.run(f"podman top {container}", "top", container, *fields).stdout
    return [line.split(None, len(fields) - 1) for line in out.splitlines()[1:] if line.strip()]


def wait_exited(podman: Podman, container: str, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = podman.inspect("container", container)["State"]
        if state["Status"] in ("exited", "stopped"):
            return int(state["ExitCode"])
        time.sleep(0.2)
    raise StepFailed(f"container {container} still running after {timeout_s:g} s")


def names(seq: Sequence[str]) -> str:
    return ", ".join(seq)
