"""The CycloneDX SBOM of each image (`make sbom`, the Dockerfiles' `sbom` stage) lists every runtime
package at the version of requirements/runtime.txt and nothing else: nothing of the dev or run
extras, not the SBOM tool itself. The images' installed distributions are the lock's pins too."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from lockfile import LOCKS, Pin, parse
from packaging.utils import canonicalize_name
from podman_engine import SUMMARY, Images, Podman

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

COMPONENTS = ("ingest", "worker", "tools")
# The marker environment of an image's python, for the lock's markers (uvloop's, for one).
MARKER_ENV = r"""
import json, os, platform, sys
print(json.dumps({
    "implementation_name": sys.implementation.name,
    "implementation_version": "%d.%d.%d" % sys.implementation.version[:3],
    "os_name": os.name, "platform_machine": platform.machine(), "platform_release": platform.release(),
    "platform_system": platform.system(), "platform_version": platform.version(),
    "python_full_version": platform.python_version(),
    "platform_python_implementation": platform.python_implementation(),
    "python_version": ".".join(platform.python_version_tuple()[:2]), "sys_platform": sys.platform,
    "dists": {d.metadata["Name"]: d.version for d in __import__("importlib.metadata").metadata.distributions()},
}))
"""


def listed(sbom: dict[str, Any]) -> dict[str, str]:
    """{canonical name: version} of the SBOM's components (pkg:pypi purls)."""
    out = {}
    for component in sbom.get("components") or []:
        purl = str(component.get("purl") or "")
        assert purl.startswith("pkg:pypi/"), component
        out[str(canonicalize_name(component["name"]))] = str(component["version"])
    return out


def problems(
    sbom: dict[str, Any], runtime: dict[str, Pin], dev: dict[str, Pin], env: dict[str, str]
) -> list[str]:
    """What an SBOM gets wrong against the locks, for an image whose python has `env`."""
    expected = {name: pin.version for name, pin in runtime.items() if pin.applies(env)}
    got = listed(sbom)
    out = [f"missing {name}=={version}" for name, version in sorted(expected.items()) if name not in got]
    for name, version in sorted(got.items()):
        if name not in expected:
            kind = "a dev/run package" if name in dev else "not in the runtime lock"
            out.append(f"lists {name}=={version}: {kind}")
        elif version != expected[name]:
            out.append(f"lists {name}=={version}, the lock pins {expected[name]}")
    return out


def image_env(podman: Podman, image: str) -> dict[str, Any]:
    out = podman.run(
        f"read the python environment of {image}",
        "run", "--rm", "--network", "none", "--entrypoint", "python", image, "-c", MARKER_ENV,
    ).stdout  # fmt: skip
    return dict(json.loads(out))


@pytest.mark.parametrize("component", COMPONENTS)
def test_each_images_sbom_lists_every_runtime_package_and_nothing_from_dev(
    podman: Podman, images: Images, component: str
) -> None:
    runtime, dev = parse(LOCKS / "runtime.txt"), parse(LOCKS / "dev.txt")
    path: Path = images.sboms / f"{component}.cdx.json"
    sbom = json.loads(path.read_text())
    assert sbom["bomFormat"] == "CycloneDX" and sbom["specVersion"].startswith("1.")
    assert sbom["metadata"]["component"]["name"] == "orderflow"
    image = {"ingest": images.ingest, "worker": images.worker, "tools": images.tools}[component]
    env = image_env(podman, image)
    assert problems(sbom, runtime, dev, env) == []
    # The image's installed distributions are the same pins: the SBOM is the image, and the image
    # is the lock (pip checked each file's hash against it while building).
    installed = {str(canonicalize_name(n)): v for n, v in env["dists"].items()}
    assert installed == listed(sbom), component
    SUMMARY.append(
        f"images: sbom {path.name}: {len(listed(sbom))} components, all from requirements/runtime.txt"
    )


def test_the_sbom_check_finds_a_dev_package_a_missing_one_and_a_wrong_version() -> None:
    runtime, dev = parse(LOCKS / "runtime.txt"), parse(LOCKS / "dev.txt")
    env = {
        "implementation_name": "cpython",
        "os_name": "posix",
        "platform_machine": "x86_64",
        "platform_python_implementation": "CPython",
        "platform_system": "Linux",
        "python_version": "3.11",
        "python_full_version": "3.11.2",
        "sys_platform": "linux",
    }
    good = {"components": [
        {"name": name, "version": pin.version, "purl": f"pkg:pypi/{name}@{pin.version}"}
        for name, pin in runtime.items() if pin.applies(env)
    ]}  # fmt: skip
    assert problems(good, runtime, dev, env) == []
    bad = {"components": [c for c in good["components"] if c["name"] != "nats-py"]}
    bad["components"].append({"name": "pytest", "version": dev["pytest"].version, "purl": "pkg:pypi/pytest"})
    bad["components"] = [
        {**c, "version": "0.0.1"} if c["name"] == "uvicorn" else c for c in bad["components"]
    ]
    found = problems(bad, runtime, dev, env)
    assert f"missing nats-py=={runtime['nats-py'].version}" in found
    assert f"lists pytest=={dev['pytest'].version}: a dev/run package" in found
    assert f"lists uvicorn==0.0.1, the lock pins {runtime['uvicorn'].version}" in found
