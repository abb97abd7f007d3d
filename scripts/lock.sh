#!/usr/bin/env bash
# make lock: the lock files with hashes, from pyproject.toml (uv pip compile, PyPI only):
#   requirements/runtime.txt  [project].dependencies: what the images install (--require-hashes)
#   requirements/run.txt      + the `run` extra and pip: `make run`'s .venv
#   requirements/dev.txt      + the `dev` extra and pip: `make install`/`make test`
#   requirements/sbom.txt     requirements/sbom.in (cyclonedx-bom) alone: the SBOM stage of the
#                             Dockerfiles (`make sbom`), in a venv of its own, so the SBOM tool never
#                             lands in what it lists
# Universal (markers, not this machine's platform) for Python 3.11, every file of each pinned
# version hashed. Run it after changing a dependency in pyproject.toml; tests/test_locks.py fails
# while a requirement of pyproject.toml is not satisfied by its lock.
#
#   UV   the uv binary; default: uv on PATH, else the one `pip install uv` puts in .venv
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
uv="${UV:-$(command -v uv || echo .venv/bin/uv)}"
[[ -x "$uv" ]] || { echo "lock: uv not found (pip install uv, or UV=/path/to/uv)" >&2; exit 1; }

# pip comes from the lock too (scripts/venv.sh upgrades it with the rest, hash-checked). Written to
# a file of a fixed name, so the locks' "via" comments do not change between runs.
{
    echo "# make lock writes this: what the .venv gets besides pyproject.toml's dependencies"
    echo "pip>=24"
} >requirements/build.in

compile() {
    local out="$1"; shift
    # --no-config: no uv.toml / find-links of this machine; PyPI's own files and hashes only.
    "$uv" pip compile --quiet --no-config --index-url https://pypi.org/simple \
        --universal --python-version 3.11 --generate-hashes \
        --custom-compile-command "make lock" -o "$out" "$@"
}
# dev first, then the others constrained to its versions: the tests run (dev) exactly the versions
# the images ship (runtime) and `make run` installs, even where a dev tool holds one back.
compile requirements/dev.txt pyproject.toml --extra dev requirements/build.in
compile requirements/run.txt pyproject.toml --extra run requirements/build.in -c requirements/dev.txt
compile requirements/runtime.txt pyproject.toml -c requirements/dev.txt
compile requirements/sbom.txt requirements/sbom.in
echo "lock: requirements/runtime.txt run.txt dev.txt sbom.txt ($(grep -c '==' requirements/runtime.txt) / $(grep -c '==' requirements/run.txt) / $(grep -c '==' requirements/dev.txt) / $(grep -c '==' requirements/sbom.txt) pins)" >&2
