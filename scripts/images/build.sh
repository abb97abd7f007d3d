#!/usr/bin/env bash
# make images: build orderflow/ingest and orderflow/worker from Dockerfile.ingest / Dockerfile.worker.
# Idempotent and cached (the engine's layer cache): a second run takes seconds.
#
#   CONTAINER_ENGINE  podman | docker; default: docker when its daemon answers, else podman
#   BASE_IMAGE        the Dockerfiles' base (build ARG); default the Dockerfiles' own default,
#                     python:3.11-slim pinned by digest, and when that can neither be found locally
#                     nor pulled, the local stand-in localhost/debian-python:bookworm
#                     (scripts/images/base-image.sh)
#   IMAGE_PREFIX      repository prefix, default orderflow (-> orderflow/ingest, orderflow/worker)
#   IMAGE_TAG         default: the version in pyproject.toml (the chart's appVersion)
#   BUILD_CA_BUNDLE   a CA bundle the build's pip must trust (a TLS-intercepting proxy); default
#                     $PIP_CERT when set. podman mounts it over the image's bundle during the build
#                     only; it is not in the images.
#   SBOM_DIR          also write the CycloneDX SBOM of each image there, <component>.cdx.json (the
#                     Dockerfiles' `sbom` stage; `make sbom` sets build/sbom); default: none
#   HANDLERS          a handler package directory (anywhere): also build a worker image with it,
#                     from scripts/images/Dockerfile.handlers, in a build context of that package
#                     alone; tagged HANDLERS_IMAGE, default <prefix>/worker-<package>:<tag>
#
# Builds orderflow/ingest, orderflow/worker and orderflow/tools (the operator CLI); prints the
# images built, their sizes and the time each step took.
set -euo pipefail

# HANDLERS is a path from where the command was given: absolute before the cd.
if [[ -n "${HANDLERS:-}" && -d "$HANDLERS" ]]; then
    HANDLERS="$(cd "$HANDLERS" && pwd)"
fi
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
# One source for the pinned base: the ARG default of the Dockerfiles (tests/images/test_locks.py
# checks that all of them name the same digest).
default_base="$(sed -n 's/^ARG BASE_IMAGE=//p' Dockerfile.worker)"
base="${BASE_IMAGE:-$default_base}"
prefix="${IMAGE_PREFIX:-orderflow}"
tag="${IMAGE_TAG:-$(python3 -c "import tomllib; print(tomllib.load(open('pyproject.toml', 'rb'))['project']['version'])")}"
ca="${BUILD_CA_BUNDLE:-${PIP_CERT:-}}"

say() { echo "images: $*" >&2; }
fail() { echo "images: FAILED at $1: $2" >&2; exit 1; }

# The handler package is checked before anything is built: a wrong path fails at once.
if [[ -n "${HANDLERS:-}" ]]; then
    [[ -d "$HANDLERS" && -f "$HANDLERS/__init__.py" ]] \
        || fail "find the handler package" "HANDLERS=$HANDLERS is not a package directory (with __init__.py)"
    package="$(basename "$(cd "$HANDLERS" && pwd)")"
    [[ "$package" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] \
        || fail "find the handler package" "$package is not an importable package name"
    [[ " orderflow ingest worker orderflow_tools " != *" $package "* ]] \
        || fail "find the handler package" "$package would shadow orderflow's own package"
fi

engine="${CONTAINER_ENGINE:-}"
if [[ -z "$engine" ]]; then
    if command -v docker >/dev/null && timeout 10 docker info >/dev/null 2>&1; then
        engine=docker
    else
        engine=podman
    fi
fi
case "$engine" in
    podman)
        command -v podman >/dev/null || bash scripts/tools/podman.sh >&2 \
            || fail "install podman" "scripts/tools/podman.sh could not install it"
        # The runtime flags these machines need, without touching the global configuration.
        export CONTAINERS_CONF="${CONTAINERS_CONF:-$repo/scripts/tools/containers.conf}"
        # docker format keeps HEALTHCHECK (OCI images have no such field); host network because
        # podman's default network setup does not work on every machine (slirp4netns, CNI).
        build_flags=(--format docker --network host)
        if [[ -n "$ca" && -f "$ca" ]]; then
            build_flags+=(-v "$ca:/etc/ssl/certs/ca-certificates.crt:ro" --build-arg "PIP_CERT=/etc/ssl/certs/ca-certificates.crt")
        fi
        ;;
    docker)
        build_flags=()
        ;;
    *) fail "choose an engine" "CONTAINER_ENGINE=$engine: podman or docker" ;;
esac

started=$SECONDS
step=$SECONDS
# The base: present locally, or pulled; the default falls back to the local stand-in.
if ! "$engine" image inspect "$base" >/dev/null 2>&1; then
    if timeout 180 "$engine" pull -q "$base" >/dev/null 2>&1; then
        say "pulled $base"
    elif [[ -z "${BASE_IMAGE:-}" ]]; then
        say "$default_base cannot be pulled here: using the local stand-in"
        base="$(bash scripts/images/base-image.sh "$engine")" \
            || fail "make the base image" "scripts/images/base-image.sh (debootstrap + $engine import) failed"
    else
        fail "get the base image" "BASE_IMAGE=$base is neither local nor pullable with $engine"
    fi
fi
say "base $base ($((SECONDS - step)) s)"

# Everything a build reads (a superset of the context .dockerignore lets through), the base image's
# id and the flags: an image labelled with the same digest is up to date and is not rebuilt, which
# saves the engine's few seconds of cache checks per image.
base_id="$("$engine" image inspect --format '{{.Id}}' "$base")"
# Everything a build reads (a superset of the context .dockerignore lets through), the base image's
# id and the flags: an image labelled with the same digest is up to date and is not rebuilt, which
# saves the engine's few seconds of cache checks per image.
inputs() {
    local extra=()
    [[ "$1" == tools ]] && extra=(orderflow_tools)
    echo "$1 $base_id ${build_flags[*]}"
    find "Dockerfile.$1" .dockerignore pyproject.toml requirements/runtime.txt requirements/sbom.txt \
        orderflow ingest worker "${extra[@]}" -type f \
        ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
}

# build IMAGE DIGEST CONTEXT [build args...]: unless IMAGE carries DIGEST already.
build() {
    local image="$1" digest="$2" context="$3" step=$SECONDS
    shift 3
    local have previous log size
    have="$("$engine" image inspect --format '{{ index .Config.Labels "org.orderflow.inputs" }}' "$image" 2>/dev/null || true)"
    if [[ "$have" == "$digest" ]]; then
        size="$("$engine" image inspect --format '{{.Size}}' "$image")"
        say "up to date $image: $((size / 1000000)) MB"
        return
    fi
    previous="$("$engine" image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)"
    log="$(mktemp)"
    if ! "$engine" build "${build_flags[@]}" --label "org.orderflow.inputs=$digest" \
        --label "org.orderflow.base=$base" -t "$image" "$@" "$context" >"$log" 2>&1; then
        tail -30 "$log" >&2
        rm -f "$log"
        fail "build $image" "$engine build $* (log above)"
    fi
    rm -f "$log"
    # The image this tag named before, now untagged: remove it (only it; refused while in use).
    if [[ -n "$previous" && "$previous" != "$("$engine" image inspect --format '{{.Id}}' "$image")" ]] \
        && [[ -z "$("$engine" image inspect --format '{{join .RepoTags ","}}' "$previous" 2>/dev/null)" ]]; then
        "$engine" rmi "$previous" >/dev/null 2>&1 || true
    fi
    size="$("$engine" image inspect --format '{{.Size}}' "$image")"
    say "built $image on $base: $((size / 1000000)) MB ($((SECONDS - step)) s)"
}

for component in ingest worker tools; do
    digest="$(inputs "$component" | sha256sum | cut -c1-32)"
    build "$prefix/$component:$tag" "$digest" . --build-arg "BASE_IMAGE=$base" -f "Dockerfile.$component"
    if [[ -n "${SBOM_DIR:-}" ]]; then
        # The `sbom` stage: FROM the runtime stage just built (cached), plus cyclonedx-py in a venv
        # of its own; the file is copied out and the stage's image stays as the cache.
        build "$prefix/$component-sbom:$tag" "$digest" . --build-arg "BASE_IMAGE=$base" \
            -f "Dockerfile.$component" --target sbom
        mkdir -p "$SBOM_DIR"
        "$engine" run --rm --network none --no-healthcheck --entrypoint cat "$prefix/$component-sbom:$tag" /sbom/sbom.cdx.json \
            >"$SBOM_DIR/$component.cdx.json" || fail "write the SBOM of $component" "$engine run ... cat"
        say "sbom $SBOM_DIR/$component.cdx.json"
    fi
done

if [[ -n "${HANDLERS:-}" ]]; then
    # A context of the package alone (whatever lies beside it stays out), as in the user's own
    # repository with Dockerfile.handlers beside the package.
    context="$(mktemp -d)"
    trap 'rm -rf "$context"' EXIT
    mkdir "$context/$package"
    tar -C "$HANDLERS" --exclude=__pycache__ --exclude='*.pyc' -cf - . | tar -C "$context/$package" -xf -
    cp scripts/images/Dockerfile.handlers "$context/Dockerfile.handlers"
    worker_id="$("$engine" image inspect --format '{{.Id}}' "$prefix/worker:$tag")"
    digest="$( (echo "$worker_id $package"; cd "$context" && find . -type f -print0 | LC_ALL=C sort -z \
        | xargs -0 sha256sum) | sha256sum | cut -c1-32)"
    build "${HANDLERS_IMAGE:-$prefix/worker-$(echo "${package//_/-}" | tr A-Z a-z):$tag}" "$digest" "$context" \
        --build-arg "WORKER_IMAGE=$prefix/worker:$tag" --build-arg "PACKAGE=$package" \
        -f "$context/Dockerfile.handlers"
fi
say "done in $((SECONDS - started)) s with $engine"
