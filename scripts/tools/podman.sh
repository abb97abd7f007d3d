#!/usr/bin/env bash
# podman, runc, uidmap and debootstrap (for the local base image) from Debian's packages, for
# make images and tests/images. Idempotent: nothing is installed when every tool is present.
# The runtime flags these machines need live in scripts/tools/containers.conf (CONTAINERS_CONF).
#
#   scripts/tools/podman.sh                 install or fail
#   scripts/tools/podman.sh --if-possible   (make tools) where nothing can be installed (no apt-get,
#                                           no root or password-less sudo), say so and go on:
#                                           tests/images then skip. With CI set it fails instead.
set -euo pipefail
optional=0; [[ "${1:-}" == "--if-possible" ]] && optional=1

give_up() {
    echo "container tools: $1" >&2
    if [[ $optional -eq 1 && -z "${CI:-}" ]]; then
        echo "container tools: tests/images will skip (CI=true makes this an error)" >&2
        exit 0
    fi
    exit 1
}

missing=()
for pkg_tool in podman:podman runc:runc uidmap:newuidmap debootstrap:debootstrap; do
    command -v "${pkg_tool#*:}" >/dev/null || missing+=("${pkg_tool%%:*}")
done
if [[ ${#missing[@]} -gt 0 ]]; then
    command -v apt-get >/dev/null || give_up "${missing[*]} missing and no apt-get to install them"
    sudo=""
    if [[ $(id -u) -ne 0 ]]; then
        sudo -n true 2>/dev/null || give_up "${missing[*]} missing; installing needs root: sudo apt-get install ${missing[*]}"
        sudo="sudo -n"
    fi
    echo "container tools: apt-get install ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 \
        || { $sudo apt-get update -q >/dev/null 2>&1 && $sudo apt-get install -y -q "${missing[@]}" >/dev/null 2>&1; } \
        || give_up "apt-get install ${missing[*]} failed"
fi
echo "container tools: $(podman --version), $(runc --version | head -1)"
