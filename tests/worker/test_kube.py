"""The pod-deletion-cost keeper against the Kubernetes API stand-in (orderflow_tools/kit/kubeapi.py).

The stand-in is a real HTTP server on a free local port, in a thread: it answers GET and PATCH on
the pod and records every PATCH, so the tests see exactly what the real client sends.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from loops import running

from orderflow.envsettings import load_settings
from orderflow_tools.kit.kubeapi import KubeApiStandIn
from worker.kube import ANNOTATION, IDLE_COST, PodClient, PodDeletionCostKeeper

BUSY_COST = 64  # some work at stake (seconds, rounded down to a power of two)

POD, NAMESPACE = "worker-abc", "orderflow"


class StubApiServer(KubeApiStandIn):
    """The stand-in with this module's one pod, and the costs it was patched to."""

    def __init__(self) -> None:
        super().__init__(NAMESPACE)
        self.pod = self.add_pod(POD)

    @property
    def costs(self) -> list[int]:
        with self.lock:
            return [int(p.annotations[ANNOTATION]) for p in self.patches]


@pytest.fixture
def stub_api() -> Iterator[StubApiServer]:
    with StubApiServer() as stub:
        yield stub


@pytest.fixture
def core_api(stub_api: StubApiServer) -> Iterator[client.CoreV1Api]:
    api_client = client.ApiClient(client.Configuration(host=stub_api.url))
    yield client.CoreV1Api(api_client)
    api_client.close()  # type: ignore[no-untyped-call]  # kubernetes ships py.typed, not these hints


async def until(predicate: Any, within_s: float = 5.0) -> None:
    deadline = time.monotonic() + within_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.01)


def keeper(core_api: client.CoreV1Api, min_interval_s: float) -> PodDeletionCostKeeper:
    return PodDeletionCostKeeper(PodClient(POD, NAMESPACE, api=core_api), min_interval_s)


def test_idle_busy_busy_idle_patches_once_per_transition(
    stub_api: StubApiServer, core_api: client.CoreV1Api
) -> None:
    """
    1. The pod has no annotation (cost 0 = idle): starting the keeper patches nothing.
    2. A job starts (idle -> busy): one patch to BUSY_COST, as a JSON merge patch.
    3. A second job starts (busy -> busy): no patch.
    4. Both end (busy -> idle): one patch to IDLE_COST, no sooner than the minimum interval.
    5. Stop while idle: no final patch is needed.
    """
    k = keeper(core_api, min_interval_s=0.2)

    async def scenario() -> None:
        async with running(k.run):
            await asyncio.sleep(0.1)
            assert stub_api.costs == []
            k.update(BUSY_COST)
            await until(lambda: len(stub_api.costs) == 1)
            k.update(BUSY_COST)
            k.update(BUSY_COST)
            await asyncio.sleep(0.3)
            assert stub_api.costs == [BUSY_COST]
            k.update(IDLE_COST)
            await until(lambda: len(stub_api.costs) == 2)

    asyncio.run(scenario())
    assert stub_api.costs == [BUSY_COST, IDLE_COST]
    first, second = stub_api.patches
    assert first.content_type == "application/merge-patch+json"
    assert second.at - first.at >= 0.2 - 0.01
    assert stub_api.pod.annotations == {ANNOTATION: str(IDLE_COST)}


def test_a_growing_cost_is_patched_again_no_sooner_than_the_interval(
    stub_api: StubApiServer, core_api: client.CoreV1Api
) -> None:
    """
    1. A job starts with little at stake (1): patched at once.
    2. Its work at stake grows (2, 4, 8 within the interval): one more patch, with the latest value,
       after the interval; nothing in between.
    """
    k = keeper(core_api, min_interval_s=0.3)

    async def scenario() -> None:
        async with running(k.run):
            k.update(1)
            await until(lambda: len(stub_api.costs) == 1)
            for cost in (2, 4, 8):
                k.update(cost)
                await asyncio.sleep(0.02)
            await until(lambda: len(stub_api.costs) == 2)
            await asyncio.sleep(0.4)

    asyncio.run(scenario())
    assert stub_api.costs == [1, 8, IDLE_COST]
    first, second, _ = stub_api.patches
    assert second.at - first.at >= 0.3 - 0.01


def test_rapid_flapping_is_coalesced_and_the_last_state_wins(
    stub_api: StubApiServer, core_api: client.CoreV1Api
) -> None:
    """
    1. idle -> busy: patched at once (nothing was patched before).
    2. 50 busy/idle flips inside the interval, ending busy: no patch (already busy).
    3. 50 more flips ending idle: exactly one idle patch, after the interval.
    """
    k = keeper(core_api, min_interval_s=0.5)

    async def scenario() -> None:
        async with running(k.run):
            k.update(BUSY_COST)
            await until(lambda: len(stub_api.costs) == 1)
            for i in range(50):  # flips much faster than the interval: the keeper wakes on each
                k.update(BUSY_COST if i % 2 else IDLE_COST)
                await asyncio.sleep(0)
            k.update(BUSY_COST)
            await asyncio.sleep(0.6)
            assert stub_api.costs == [BUSY_COST]
            for i in range(50):
                k.update(BUSY_COST if (i + 1) % 2 else IDLE_COST)
                await asyncio.sleep(0)
            k.update(IDLE_COST)
            await until(lambda: len(stub_api.costs) == 2)
            await asyncio.sleep(0.6)

    asyncio.run(scenario())
    assert stub_api.costs == [BUSY_COST, IDLE_COST]
    first, second = stub_api.patches
    assert second.at - first.at >= 0.5 - 0.01


def test_stop_while_busy_marks_the_pod_idle(stub_api: StubApiServer, core_api: client.CoreV1Api) -> None:
    k = keeper(core_api, min_interval_s=10)

    async def scenario() -> None:
        # the block ends (the keeper stops) well inside the 10 s interval: the final patch is not
        # rate-limited
        async with running(k.run):
            k.update(BUSY_COST)
            await until(lambda: len(stub_api.costs) == 1)

    asyncio.run(scenario())
    assert stub_api.costs == [BUSY_COST, IDLE_COST]


def test_a_restarted_container_resets_a_busy_annotation_left_behind(
    stub_api: StubApiServer, core_api: client.CoreV1Api
) -> None:
    """The pod (and its annotation) outlives a container restart: the new process starts idle."""
    stub_api.pod.annotations[ANNOTATION] = str(BUSY_COST)
    k = keeper(core_api, min_interval_s=0.1)

    async def scenario() -> None:
        async with running(k.run):
            await until(lambda: len(stub_api.costs) == 1)

    asyncio.run(scenario())
    assert stub_api.costs == [IDLE_COST]


def test_api_errors_are_logged_and_retried_without_crashing(
    stub_api: StubApiServer, core_api: client.CoreV1Api, caplog: pytest.LogCaptureFixture
) -> None:
    """
    1. The API server answers 403 (e.g. RBAC missing): reads and patches fail, run() keeps going.
    2. It recovers: the pending busy state is patched by the retry, without a new update().
    """
    stub_api.fail(403)
    k = keeper(core_api, min_interval_s=0.05)

    async def scenario() -> None:
        async with running(k.run) as task:
            k.update(BUSY_COST)
            await until(lambda: k.errors >= 2)
            assert not task.done()
            stub_api.fail(None)
            await until(lambda: BUSY_COST in stub_api.costs, within_s=5)

    asyncio.run(scenario())
    assert stub_api.costs[-1] == IDLE_COST  # the final patch on stop
    assert "HTTP 403" in caplog.text


def test_an_unreachable_api_server_does_not_block_stop() -> None:
    api_client = client.ApiClient(client.Configuration(host="http://127.0.0.1:9"))  # nothing listens
    k = PodDeletionCostKeeper(PodClient(POD, NAMESPACE, api=client.CoreV1Api(api_client)), 0.05)

    async def scenario() -> None:
        async with running(k.run, stop_within_s=10):
            k.update(BUSY_COST)
            await until(lambda: k.errors >= 2)

    try:
        asyncio.run(scenario())
    finally:
        api_client.close()  # type: ignore[no-untyped-call]  # kubernetes ships py.typed, not these hints
    assert k.patches == 0


# --- when is it on ------------------------------------------------------------------------------
def settings(environ: dict[str, str] | None = None, **env: str) -> Any:
    return load_settings(
        "worker", {**(environ or {}), **{f"ORDERFLOW_{k.upper()}": v for k, v in env.items()}}
    )


def test_off_outside_a_cluster(tmp_path: Path) -> None:
    token = tmp_path / "token"
    s = settings(pod_name=POD, pod_namespace=NAMESPACE)
    assert PodDeletionCostKeeper.from_settings(s, token_path=token) is None
    # An API server address alone is not enough: no service account token is mounted.
    s = settings({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, pod_name=POD, pod_namespace=NAMESPACE)
    assert PodDeletionCostKeeper.from_settings(s, token_path=token) is None


def test_on_inside_a_cluster_with_pod_identity(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("stub-token")
    env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}
    k = PodDeletionCostKeeper.from_settings(
        settings(env, pod_name=POD, pod_namespace=NAMESPACE, pod_deletion_cost_min_interval_s="7"),
        token_path=token,
    )
    assert k is not None
    assert (k.pod.name, k.pod.namespace, k.min_interval_s) == (POD, NAMESPACE, 7.0)
    # Without the downward-API pod name/namespace it cannot know which pod to patch.
    assert PodDeletionCostKeeper.from_settings(settings(env), token_path=token) is None


def test_off_when_configured_off_even_in_a_cluster(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("stub-token")
    s = settings(
        {"KUBERNETES_SERVICE_HOST": "x"}, pod_name=POD, pod_namespace=NAMESPACE, pod_deletion_cost="off"
    )
    assert PodDeletionCostKeeper.from_settings(s, token_path=token) is None


def test_on_forces_it_outside_a_cluster(tmp_path: Path) -> None:
    s = settings(pod_name=POD, pod_namespace=NAMESPACE, pod_deletion_cost="on")
    assert PodDeletionCostKeeper.from_settings(s, token_path=tmp_path / "none") is not None
