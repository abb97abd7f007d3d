"""Keep this pod's `controller.kubernetes.io/pod-deletion-cost` in step with the work a kill would
lose.

When a ReplicaSet scales down it deletes the pods with the lowest deletion cost first (among pods
in the same phase/readiness rank; the annotation is a tie-breaker the controller honours since
Kubernetes 1.22). The cost is the work at stake (worker/hooks.py `PodLoad`): 0 when idle, the
same as a pod without the annotation; else the seconds of job time since each running job's last
checkpoint, summed and rounded down to a power of two. So an autoscaler's scale-down takes idle
pods first, then the ones with the least work to lose. Together with pull priorities (the oldest
workers take the work, worker/ranks.py) the newest pods run dry when load falls.

The Kubernetes docs warn against updating the annotation often: the power-of-two steps change it a
few times an hour per job, the keeper patches only when the value changed, at most once per
`pod_deletion_cost_min_interval_s`, and the latest value wins when the load moves faster.

API calls run in a thread (the `kubernetes` client is synchronous, `PodClient`) with a request
timeout; errors are logged and retried on the next change or after a back-off, never raised into
the worker. The same client reads the pod's deletion at SIGTERM (worker/deadline.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orderflow.config import Settings
from orderflow.lifecycle import wait_any

log = logging.getLogger(__name__)

ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"
IDLE_COST = 0
TOKEN_PATH = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
REQUEST_TIMEOUT_S = 5.0
# After a failed API call, wait at least this long before trying again (even with a 0 interval).
ERROR_BACKOFF_S = 1.0


def in_cluster(settings: Settings, token_path: Path = TOKEN_PATH) -> bool:
    """True inside a pod that has an API server address and a mounted service account token."""
    return bool(settings.kubernetes_service_host) and token_path.is_file()


class PodClient:
    """This pod through the `kubernetes` client: the one client the worker has, for its own pod
    only (the pod-deletion-cost keeper patches it, the drain reads its deletion). Built on first
    use: inside a cluster from the service account, outside one from the kubeconfig (a proxied
    API server, or the tests' and the chaos rehearsal's stand-in). Calls run in a thread (the
    client is synchronous), each with a request timeout."""

    def __init__(
        self, name: str, namespace: str, api: Any | None = None, kubeconfig: str | None = None
    ) -> None:
        # `api` is a kubernetes.client.CoreV1Api (tests pass one pointed at the stand-in).
        self.name = name
        self.namespace = namespace
        self.kubeconfig = kubeconfig
        self._api = api

    @classmethod
    def from_settings(cls, settings: Settings, token_path: Path = TOKEN_PATH) -> PodClient | None:
        if not settings.pod_name or not settings.pod_namespace:
            return None
        kubeconfig = None if in_cluster(settings, token_path) else settings.kubeconfig
        return cls(settings.pod_name, settings.pod_namespace, kubeconfig=kubeconfig)

    def core(self) -> Any:
        if self._api is None:
            from kubernetes import client, config

            if self.kubeconfig is None:
                config.load_incluster_config()  # type: ignore[no-untyped-call]
                self._api = client.CoreV1Api()
            else:
                self._api = client.CoreV1Api(
                    config.new_client_from_config(config_file=self.kubeconfig)  # type: ignore[no-untyped-call]
                )
        return self._api

    async def read(self, timeout_s: float = REQUEST_TIMEOUT_S) -> Any:
        """The pod (a V1Pod), or an exception; gives up after `timeout_s` even if the thread lingers."""
        call = asyncio.to_thread(
            lambda: self.core().read_namespaced_pod(self.name, self.namespace, _request_timeout=timeout_s)
        )
        return await asyncio.wait_for(call, timeout_s)

    async def patch(self, body: dict[str, Any]) -> None:
        await asyncio.to_thread(
            lambda: self.core().patch_namespaced_pod(
                self.name,
                self.namespace,
                body,
                _request_timeout=REQUEST_TIMEOUT_S,
                _content_type="application/merge-patch+json",
            )
        )


class PodDeletionCostKeeper:
    """Patches this pod's deletion cost when it changes, rate-limited, in the background.

    `update()` is called (from the event loop's thread) whenever the work at stake may have
    changed and only records the desired cost; `run()` is the background task that talks to the
    API server.
    """

    def __init__(self, pod: PodClient, min_interval_s: float) -> None:
        self.pod = pod
        self.min_interval_s = min_interval_s
        self._desired = IDLE_COST
        self._applied: int | None = None  # None: unknown (not read yet, or a patch failed)
        self._last_attempt = float("-inf")
        self._changed = asyncio.Event()
        self.patches = 0  # successful patches, for logs and tests
        self.errors = 0

    @classmethod
    def from_settings(cls, settings: Settings, token_path: Path = TOKEN_PATH) -> PodDeletionCostKeeper | None:
        """The keeper for this pod, or None when the feature is off or cannot work here.

        `auto` turns it on only inside a cluster; `on` also outside one (with an explicit
        pod name/namespace and a kubeconfig, e.g. against a proxied API server); `off` never.
        """
        mode = settings.pod_deletion_cost
        if mode == "off":
            return None
        if mode == "auto" and not in_cluster(settings, token_path):
            log.info("pod-deletion-cost: off (not running inside a Kubernetes pod)")
            return None
        pod = PodClient.from_settings(settings, token_path)
        if pod is None:
            log.warning(
                "pod-deletion-cost: off (ORDERFLOW_POD_NAME / ORDERFLOW_POD_NAMESPACE not set; "
                "pass them with the downward API)"
            )
            return None
        return cls(pod, settings.pod_deletion_cost_min_interval_s)

    # --- called by the worker ------------------------------------------------------------------
    @property
    def applied(self) -> int | None:
        """The cost this pod carries as far as this worker knows (None: unknown)."""
        return self._applied

    def update(self, cost: int) -> None:
        """Record the desired cost; cheap and synchronous. Only a change wakes `run()`."""
        if cost != self._desired:
            self._desired = cost
            self._changed.set()

    # --- background tasks -----------------------------------------------------------------------
    async def refresh(self, cost: Callable[[], int]) -> None:
        """The work at stake grows while jobs run: look again every interval."""
        while True:
            self.update(cost())
            await asyncio.sleep(max(0.5, self.min_interval_s))

    async def run(self, stop: asyncio.Event) -> None:
        """Patch on transitions until `stop`; then mark the pod idle once more if needed."""
        try:
            self._applied = await self._read_current()
            if self._applied != self._desired:
                self._changed.set()
            while not stop.is_set():
                await wait_any(self._changed.wait(), stop.wait())
                if stop.is_set():
                    break
                self._changed.clear()
                # Rate limit: no patch before last attempt + interval. Changes in the meantime
                # only move _desired, so the value at the end of the wait is what we patch.
                wait_s = self._last_attempt + self._interval() - time.monotonic()
                if wait_s > 0 and await wait_any(stop.wait(), timeout_s=wait_s):
                    break  # stop during the wait
                if self._desired != self._applied:
                    if not await self._patch(self._desired):
                        self._changed.set()  # retry after the (back-off) interval
        finally:
            # A terminating pod is no longer a scale-down candidate, so this is housekeeping: the
            # annotation should say what the pod does, and a restarted container starts idle.
            if self._applied != IDLE_COST:
                with contextlib.suppress(Exception):
                    await self._patch(IDLE_COST)
            log.info("pod-deletion-cost: stopped after %d patches, %d errors", self.patches, self.errors)

    def _interval(self) -> float:
        return max(self.min_interval_s, ERROR_BACKOFF_S) if self._applied is None else self.min_interval_s

    async def _read_current(self) -> int | None:
        """What the annotation says now (a container restart keeps the pod and its annotation)."""
        try:
            pod = await self.pod.read()
        except Exception as exc:
            self.errors += 1
            log.warning(
                "pod-deletion-cost: cannot read pod %s/%s: %s", self.pod.namespace, self.pod.name, short(exc)
            )
            return None
        annotations = (pod.metadata.annotations if pod.metadata else None) or {}
        raw = annotations.get(ANNOTATION)
        try:
            return int(raw or IDLE_COST)
        except ValueError:
            return None  # somebody wrote garbage: overwrite it

    async def _patch(self, cost: int) -> bool:
        body = {"metadata": {"annotations": {ANNOTATION: str(cost)}}}
        self._last_attempt = time.monotonic()
        try:
            await self.pod.patch(body)
        except Exception as exc:
            self.errors += 1
            self._applied = None
            log.warning("pod-deletion-cost: patch to %d failed: %s", cost, short(exc))
            return False
        self._applied = cost
        self.patches += 1
        log.debug("pod-deletion-cost: %s/%s -> %d", self.pod.namespace, self.pod.name, cost)
        return True


def short(exc: BaseException) -> str:
    status = getattr(exc, "status", None)
    reason = getattr(exc, "reason", None)
    if status:
        return f"HTTP {status} {reason}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
