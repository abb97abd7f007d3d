"""The lock files (requirements/*.txt, written by `make lock`) as data: each pinned distribution with
its version, marker and hashes; and what pyproject.toml asks of each lock."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
LOCKS = REPO / "requirements"


@dataclass(frozen=True)
class Pin:
    name: str  # canonical
    version: str
    marker: Marker | None
    hashes: tuple[str, ...]

    def applies(self, env: dict[str, str]) -> bool:
        return self.marker is None or self.marker.evaluate(env)


def parse(path: Path) -> dict[str, Pin]:
    """{canonical name: Pin}; a requirement line without `==` or without a hash is an error."""
    text = path.read_text()
    # A requirement and its `\`-continued --hash lines are one logical line; comments stand alone.
    logical = re.sub(r"\\\n\s*", " ", text)
    pins: dict[str, Pin] = {}
    for line in logical.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        spec, *options = re.split(r"\s+(?=--)", line)
        hashes = tuple(o.split("=", 1)[1] for o in options if o.startswith("--hash="))
        req = Requirement(spec)
        pinned = next((s for s in req.specifier if s.operator == "=="), None)
        if pinned is None or not hashes:
            raise ValueError(f"{path.name}: {spec!r} is not pinned with == and hashed")
        name = str(canonicalize_name(req.name))
        pins[name] = Pin(name, pinned.version, req.marker, hashes)
    return pins


def pyproject() -> dict[str, object]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def wanted(lock: str) -> list[Requirement]:
    """What pyproject.toml asks of one lock: `runtime` the dependencies; `run` and `dev` those and
    their extra (a self-reference such as orderflow[run] expanded)."""
    data = pyproject()
    project = data["project"]
    assert isinstance(project, dict)
    reqs = [Requirement(r) for r in project["dependencies"]]
    if lock == "runtime":
        return reqs
    extras = project["optional-dependencies"]
    todo, seen = [lock], set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for text in extras[extra]:
            req = Requirement(text)
            if canonicalize_name(req.name) == canonicalize_name(project["name"]):
                todo += sorted(req.extras)
            else:
                reqs.append(req)
    return reqs
