#!/usr/bin/env bash
# Install Debian's `prometheus` package binaries (prometheus, promtool) into <repo>/.tools/bin,
# without installing the package or starting its service. Idempotent: does nothing when both
# binaries are already there and run.
#
#   scripts/tools/prometheus.sh          # installs if missing, prints the bin dir
#   PROMETHEUS_TOOLS_DIR=/x scripts/...  # other target (default: <repo>/.tools)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
tools="${PROMETHEUS_TOOLS_DIR:-$repo/.tools}"
bin="$tools/bin"

if "$bin/promtool" --version >/dev/null 2>&1 && "$bin/prometheus" --version >/dev/null 2>&1; then
    echo "$bin"
    exit 0
fi

for cmd in apt-get dpkg-deb; do
    command -v "$cmd" >/dev/null || { echo "prometheus.sh: needs $cmd (Debian/Ubuntu)" >&2; exit 1; }
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
# `apt-get download` fetches the .deb into the current directory as any user; the package lists
# may be missing or stale on a fresh machine, so refresh them once and retry.
if ! apt-get download prometheus >/dev/null 2>&1; then
    echo "prometheus.sh: apt-get download failed, running apt-get update and retrying" >&2
    apt-get update -qq >/dev/null
    apt-get download prometheus >/dev/null
fi
deb="$(ls prometheus_*.deb | head -n1)"
dpkg-deb -x "$deb" root

mkdir -p "$bin"
# The Debian package ships statically linked Go binaries: copying them out is enough.
install -m 0755 root/usr/bin/prometheus root/usr/bin/promtool "$bin/"
"$bin/promtool" --version >/dev/null
echo "$bin"
