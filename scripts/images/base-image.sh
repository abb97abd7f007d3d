#!/usr/bin/env bash
# The local stand-in for python:3.11-slim, for machines that cannot pull from Docker Hub:
# a Debian bookworm minbase with python3 (3.11), venv and ca-certificates, imported as
# localhost/debian-python:bookworm. About a minute and 130 MB; cached in the engine's image store
# and rebuilt only when this recipe changes.
#
#   scripts/images/base-image.sh [podman|docker]      prints the image name on stdout
set -euo pipefail

engine="${1:-podman}"
name="localhost/debian-python:bookworm"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
packages="python3,python3-venv,python-is-python3,ca-certificates"
recipe="$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)"

# The recipe's hash is a tag of its own (docker import cannot set labels), so a changed recipe
# builds a new image.
if "$engine" image inspect "$name-r$recipe" >/dev/null 2>&1; then
    "$engine" tag "$name-r$recipe" "$name"
    echo "$name"
    exit 0
fi

if ! command -v debootstrap >/dev/null; then
    bash "$(dirname "${BASH_SOURCE[0]}")/../tools/podman.sh" >&2
fi
sudo=""; [[ $(id -u) -ne 0 ]] && sudo="sudo"

rootfs="$(mktemp -d "${TMPDIR:-/var/tmp}/orderflow-rootfs.XXXXXX")"
trap '$sudo rm -rf "$rootfs"' EXIT
echo "base image: debootstrap bookworm minbase + $packages from $mirror (about a minute)" >&2
started=$SECONDS
if ! $sudo debootstrap --variant=minbase --include="$packages" bookworm "$rootfs" "$mirror" \
    >"$rootfs.log" 2>&1; then
    tail -20 "$rootfs.log" >&2
    echo "base image: debootstrap failed (log above); is $mirror reachable?" >&2
    exit 1
fi
rm -f "$rootfs.log"

# Slim it the way Debian's slim images are: no package caches or lists, docs (but the copyright
# files), man pages or locales; and none of the build host's identity (the engine mounts its own
# resolv.conf, hosts and hostname).
$sudo sh -c "cd '$rootfs' && rm -rf var/cache/apt/* var/lib/apt/lists/* usr/share/man/* \
    usr/share/info/* usr/share/locale/* var/log/* etc/resolv.conf etc/hostname dev/* proc/* \
    sys/* tmp/* && find usr/share/doc -mindepth 1 ! -type d ! -name copyright -delete && : > etc/hosts"

$sudo tar -C "$rootfs" --numeric-owner -c . | "$engine" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    - "$name-r$recipe" >/dev/null
"$engine" tag "$name-r$recipe" "$name"
echo "base image: $name built in $((SECONDS - started)) s" >&2
echo "$name"
