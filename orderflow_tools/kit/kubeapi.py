"""A stand-in for the Kubernetes API server, as far as a worker talks to it: its own pod.

The Kubernetes API cannot run here, so the tests and the chaos rehearsal use this instead, named as
such: a real HTTP server on a free local port, in a thread, that the real `kubernetes` client talks
to (through a kubeconfig it writes). It keeps pods and answers, as the API server does:

- `GET  /api/v1/namespaces/NS/pods/NAME`: the pod, with `metadata.annotations`, and once deleted
  `metadata.deletionTimestamp` (RFC 3339, whole seconds: the API truncates) and
  `metadata.deletionGracePeriodSeconds`, and `status.conditions` (a `DisruptionTarget` when the
  deletion was a disruption: an eviction, a node's shutdown);
- `PATCH` of the same path (a JSON merge patch of the annotations), every one recorded;
- `DELETE` with `gracePeriodSeconds` (query or DeleteOptions body), and
  `POST .../NAME/eviction` (an Eviction with its deleteOptions): the pod is marked for deletion.

The harness that deletes a pod calls `delete()` before it sends the SIGTERM, as the kubelet reacts
to the deletion the API recorded. `fail()` answers every request with an error status and
`stall()` holds every answer for a while (an API server that does not answer in time).
"""

from __future__ import annotations

import datetime
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

_POD_PATH = "/api/v1/namespaces/"


@dataclass
class Patch:
    at: float  # monotonic
    pod: str
    content_type: str
    annotations: dict[str, str]


@dataclass
class PodState:
    annotations: dict[str, str] = field(default_factory=dict)
    deletion_at: float | None = None  # epoch s, as the API server recorded it
    grace_s: int | None = None
    conditions: list[dict[str, str]] = field(default_factory=list)
    reads: int = 0


class KubeApiStandIn:
    """A stand-in Kubernetes API server for pods (GET, PATCH, DELETE, eviction). Use as a context
    manager, or `start()` and `stop()`."""

    def __init__(self, namespace: str = "orderflow") -> None:
        self.namespace = namespace
        self.pods: dict[str, PodState] = {}
        self.patches: list[Patch] = []
        self.fail_with: int | None = None
        self.stall_s = 0.0
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(
            target=self.server.serve_forever, args=(0.05,), daemon=True, name="kube-api-stand-in"
        )

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- what a harness does ------------------------------------------------------------------
    def add_pod(self, name: str) -> PodState:
        with self.lock:
            return self.pods.setdefault(name, PodState())

    def delete(self, name: str, grace_s: int, disruption: str | None = None) -> None:
        """Mark the pod for deletion with `grace_s` (the first deletion's time stands, as in the
        API; a shorter grace on a second one shortens it); `disruption`: a DisruptionTarget reason."""
        with self.lock:
            pod = self.pods.setdefault(name, PodState())
            at = time.time() + grace_s
            if pod.deletion_at is None or at < pod.deletion_at:
                pod.deletion_at, pod.grace_s = at, grace_s
            if disruption is not None and not any(c["type"] == "DisruptionTarget" for c in pod.conditions):
                pod.conditions.append({"type": "DisruptionTarget", "status": "True", "reason": disruption})

    def fail(self, status: int | None) -> None:
        with self.lock:
            self.fail_with = status

    def stall(self, seconds: float) -> None:
        with self.lock:
            self.stall_s = seconds

    def write_kubeconfig(self, path: Path) -> Path:
        """A kubeconfig pointing at this stand-in (no credentials: it checks none)."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "stand-in", "cluster": {"server": self.url}}],
            "users": [{"name": "stand-in", "user": {}}],
            "contexts": [{"name": "stand-in", "context": {"cluster": "stand-in", "user": "stand-in"}}],
            "current-context": "stand-in",
        }
        path.write_text(json.dumps(config) + "\n")
        return path

    def reads(self, name: str) -> int:
        with self.lock:
            return self.pods[name].reads if name in self.pods else 0

    # --- what the API answers ----------------------------------------------------------------
    def pod_body(self, name: str, pod: PodState) -> dict[str, Any]:
        metadata: dict[str, Any] = {
            "name": name,
            "namespace": self.namespace,
            "annotations": dict(pod.annotations),
        }
        if pod.deletion_at is not None:
            stamp = datetime.datetime.fromtimestamp(int(pod.deletion_at), datetime.UTC)
            metadata["deletionTimestamp"] = stamp.strftime("%Y-%m-%dT%H:%M:%SZ")
            metadata["deletionGracePeriodSeconds"] = pod.grace_s
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": metadata,
            "status": {"phase": "Running", "conditions": list(pod.conditions)},
        }


def _status(status: str, code: int) -> dict[str, Any]:
    """A Kubernetes Status object, as the API answers a failure or an eviction."""
    return {"kind": "Status", "status": status, "code": code}


def _handler(api: KubeApiStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def _fail(self, code: int) -> None:
            self._answer(code, _status("Failure", code))

        def _route(self) -> tuple[str | None, str]:
            """(pod name, sub-resource) for this namespace's pod paths, else (None, "")."""
            path = urlsplit(self.path).path
            prefix = f"{_POD_PATH}{api.namespace}/pods/"
            if not path.startswith(prefix):
                return None, ""
            name, _, sub = path[len(prefix) :].partition("/")
            return name, sub

        def _body(self) -> dict[str, Any]:
            length = int(self.headers.get("Content-Length", "0") or 0)
            raw = self.rfile.read(length) if length else b""
            loaded = json.loads(raw) if raw else {}
            return loaded if isinstance(loaded, dict) else {}

        def _begin(self) -> str | None:
            """Stall and fail as told; the pod's name when the request may go on."""
            with api.lock:
                stall, failing = api.stall_s, api.fail_with
            if stall:
                time.sleep(stall)
            if failing is not None:
                self._fail(failing)
                return None
            name, _ = self._route()
            with api.lock:
                known = name is not None and name in api.pods
            if not known:
                self._fail(404)
                return None
            return name

        def _serve(self, act: Callable[[str, dict[str, Any]], tuple[int, dict[str, Any]]]) -> None:
            """Read the body, stall or fail as told, find the pod; then answer what `act` returns
            for the pod's name and the body."""
            payload = self._body()
            name = self._begin()
            if name is not None:
                self._answer(*act(name, payload))

        def do_GET(self) -> None:
            self._serve(self._read)

        def do_PATCH(self) -> None:
            self._serve(self._patch)

        def do_DELETE(self) -> None:
            self._serve(self._delete)

        def do_POST(self) -> None:
            self._serve(self._evict)

        def _read(self, name: str, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
            with api.lock:
                pod = api.pods[name]
                pod.reads += 1
                return 200, api.pod_body(name, pod)

        def _patch(self, name: str, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
            annotations = {
                str(k): str(v) for k, v in payload.get("metadata", {}).get("annotations", {}).items()
            }
            with api.lock:
                pod = api.pods[name]
                pod.annotations.update(annotations)
                api.patches.append(
                    Patch(time.monotonic(), name, self.headers.get("Content-Type", ""), annotations)
                )
                return 200, api.pod_body(name, pod)

        def _delete(self, name: str, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
            query = parse_qs(urlsplit(self.path).query)
            grace = payload.get("gracePeriodSeconds", (query.get("gracePeriodSeconds") or ["30"])[0])
            api.delete(name, int(grace))
            with api.lock:
                return 200, api.pod_body(name, api.pods[name])

        def _evict(self, name: str, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
            if self._route()[1] != "eviction":
                return 405, _status("Failure", 405)
            grace = (payload.get("deleteOptions") or {}).get("gracePeriodSeconds", 30)
            api.delete(name, int(grace), disruption="EvictionByEvictionAPI")
            return 201, _status("Success", 201)

    return Handler
