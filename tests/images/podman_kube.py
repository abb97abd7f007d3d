"""The rendered manifests (helm template, kubectl kustomize) as podman 4.3 can play them.

`podman kube play` (4.3, Debian bookworm) runs a Deployment's pod spec (image, command, env,
securityContext, resources, emptyDir) but refuses three things the chart renders; this module
changes those and nothing else:

1. `containers[].ports` are dropped: under `--network host` podman turns every containerPort into a
   host port mapping and refuses it ("PortMappings can only be used with Bridge or slirp4netns
   networking"). With host networking the container's listener is on the host anyway.
2. An env `valueFrom.fieldRef` of `metadata.namespace` becomes that literal namespace: podman's
   downward API knows metadata.name, metadata.uid, labels and annotations only ("fieldPath
   metadata.namespace is either not valid or not supported"). `metadata.name` stays (podman gives
   the pod name).
3. `secretKeyRef` stays as rendered; the Secret it names is stored as a podman secret in the form
   podman 4.3 reads back: JSON {key: base64 value}. (4.3 stores a played Secret as YAML and then
   cannot read it: "secret ... is not valid JSON".)
4. A `secret` volume (the ingest's API key file) becomes a `hostPath` directory that the test fills
   with the rendered Secret's keys as files (`secret_files`): the container sees the same files at
   the same path, read-only, and the test needs no second podman secret format for volumes.

Only Deployments are played; Services, RBAC, PDBs, HPAs, NetworkPolicies have no podman meaning.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

Doc = dict[str, Any]


class ManifestError(AssertionError):
    """The rendered manifest itself is wrong (a chart or overlay bug), not a podman limit."""


def deployments(docs: Iterable[Doc]) -> list[Doc]:
    return [d for d in docs if d.get("kind") == "Deployment"]


def _containers(deployment: Doc) -> Iterator[Doc]:
    spec = deployment["spec"]["template"]["spec"]
    yield from spec.get("initContainers") or []
    yield from spec.get("containers") or []


def namespace_of(doc: Doc, default: str) -> str:
    return str((doc.get("metadata") or {}).get("namespace") or default)


def for_podman(deployment: Doc, namespace: str, secret_dirs: Mapping[str, Path] | None = None) -> Doc:
    """A copy of `deployment` with the pod-spec changes above (1, 2 and 4); `namespace` is the
    one the objects are installed in when the manifest carries none (helm template); `secret_dirs`
    the host directory of each Secret a volume mounts (a placeholder path without it)."""
    out = copy.deepcopy(deployment)
    ns = namespace_of(out, namespace)
    for volume in out["spec"]["template"]["spec"].get("volumes") or []:
        secret = volume.pop("secret", None)
        if secret is not None:
            name = str(secret["secretName"])
            path = (secret_dirs or {}).get(name, Path("/nonexistent") / name)
            volume["hostPath"] = {"path": str(path), "type": "Directory"}
    for container in _containers(out):
        container.pop("ports", None)
        for env in container.get("env") or []:
            field_ref = (env.get("valueFrom") or {}).get("fieldRef") or {}
            if field_ref.get("fieldPath") == "metadata.namespace":
                del env["valueFrom"]
                env["value"] = ns
    return out


def secret_names(deployment: Doc) -> set[str]:
    """Secrets the pod's env takes values from (secretKeyRef, envFrom secretRef)."""
    names: set[str] = set()
    for container in _containers(deployment):
        for env in container.get("env") or []:
            ref = (env.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                names.add(str(ref["name"]))
        for source in container.get("envFrom") or []:
            if source.get("secretRef"):
                names.add(str(source["secretRef"]["name"]))
    return names


def volume_secret_names(deployment: Doc) -> set[str]:
    """Secrets the pod mounts as volumes."""
    volumes = deployment["spec"]["template"]["spec"].get("volumes") or []
    return {str(v["secret"]["secretName"]) for v in volumes if "secret" in v}


def secret_files(
    docs: list[Doc], outside: Mapping[str, dict[str, bytes]] | None = None
) -> dict[str, dict[str, bytes]]:
    """{name: {file: content}} of every Secret the Deployments mount as a volume: rendered, or
    `outside` (created beside the manifests, as the base's orderflow-api-keys is); a reference to
    any other Secret is a manifest bug."""
    rendered = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "Secret"}
    out: dict[str, dict[str, bytes]] = {}
    for deployment in deployments(docs):
        for name in sorted(volume_secret_names(deployment)):
            if outside and name in outside:
                out[name] = dict(outside[name])
                continue
            if name not in rendered:
                raise ManifestError(
                    f"Deployment {deployment['metadata']['name']} mounts Secret {name}, which the "
                    f"render does not contain (it has: {', '.join(sorted(rendered)) or 'none'})"
                )
            secret = rendered[name]
            files = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
            files |= {k: str(v).encode() for k, v in (secret.get("stringData") or {}).items()}
            out[name] = files
    return out


def podman_secret(secret: Doc) -> bytes:
    """A rendered Secret as podman 4.3's secretKeyRef reads a secret: JSON of key -> base64 value
    (Go's map[string][]byte). `data` is base64 already; `stringData` wins, as in the API server."""
    values: dict[str, str] = dict(secret.get("data") or {})
    for key, text in (secret.get("stringData") or {}).items():
        values[key] = base64.b64encode(str(text).encode()).decode()
    return json.dumps(values, sort_keys=True).encode()


def secrets_for(docs: list[Doc]) -> dict[str, bytes]:
    """{name: podman secret payload} of every Secret the Deployments reference; a reference to a
    Secret the render does not contain is a manifest bug."""
    rendered = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "Secret"}
    out: dict[str, bytes] = {}
    for deployment in deployments(docs):
        for name in sorted(secret_names(deployment)):
            if name not in rendered:
                raise ManifestError(
                    f"Deployment {deployment['metadata']['name']} takes env from Secret {name}, "
                    f"which the render does not contain (it has: {', '.join(sorted(rendered)) or 'none'})"
                )
            out[name] = podman_secret(rendered[name])
    return out


def changes(before: Any, after: Any, path: str = "") -> list[str]:
    """Paths where two YAML trees differ ("" is the root), for proving what for_podman touched."""
    if isinstance(before, dict) and isinstance(after, dict):
        out: list[str] = []
        for key in sorted(set(before) | set(after), key=str):
            sub = f"{path}.{key}"
            if key not in after:
                out.append(f"{sub} removed")
            elif key not in before:
                out.append(f"{sub} added")
            else:
                out += changes(before[key], after[key], sub)
        return out
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return [
            c
            for i, (b, a) in enumerate(zip(before, after, strict=True))
            for c in changes(b, a, f"{path}[{i}]")
        ]
    return [] if before == after else [f"{path} changed"]


def env_literal(container: Doc, name: str) -> str | None:
    for env in container.get("env") or []:
        if env.get("name") == name and "value" in env:
            return str(env["value"])
    return None


def probe_endpoints(deployment: Doc) -> list[tuple[str, str, str, int]]:
    """(container, probe, path, port) of every httpGet probe, a named port resolved through the
    container's ports as the kubelet does; an unresolvable name is a manifest bug. podman 4.3 runs
    none of these probes (see docs/kubernetes.md), so the test requests them itself."""
    out = []
    for container in _containers(deployment):
        ports = {
            p.get("name"): int(p["containerPort"]) for p in container.get("ports") or [] if p.get("name")
        }
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            get = (container.get(kind) or {}).get("httpGet")
            if not get:
                continue
            port = get["port"]
            if isinstance(port, str):
                if port not in ports:
                    raise ManifestError(
                        f"{deployment['metadata']['name']}/{container['name']} {kind} names port {port!r}, "
                        f"which the container does not declare (ports: {sorted(ports)})"
                    )
                port = ports[port]
            out.append((str(container["name"]), kind, str(get.get("path") or "/"), int(port)))
    return out


def grace_period_s(deployment: Doc) -> int:
    """The pod's terminationGracePeriodSeconds (Kubernetes' default 30 when absent)."""
    return int(deployment["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30))


def pod_names(deployment: Doc) -> list[str]:
    """The pods podman 4.3 makes of a Deployment: <name>-pod-<i> for each replica."""
    replicas = int(deployment["spec"].get("replicas", 1))
    return [f"{deployment['metadata']['name']}-pod-{i}" for i in range(replicas)]
