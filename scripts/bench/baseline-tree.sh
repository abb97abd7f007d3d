#!/usr/bin/env bash
# A tree of an older commit, with a venv of its own, for the benches' A/B runs (`--baseline-tree`):
#   bash scripts/bench/baseline-tree.sh d4b8240 /tmp/orderflow-base
# Exports REF's files with `git archive` (no worktree is registered, nothing is committed) into DIR,
# writes DIR/.orderflow-baseline-ref (the commit), and installs DIR's own package and its runtime
# dependencies into DIR/.venv (the benches start DIR/.venv/bin/python -m ingest / -m worker with
# cwd DIR; nats-server, k6 and the bench itself come from this tree). Re-running with the same REF
# reuses the venv.
set -euo pipefail
ref=${1:?usage: baseline-tree.sh REF DIR}
dir=${2:?usage: baseline-tree.sh REF DIR}
repo=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
commit=$(git -C "$repo" rev-parse --verify "$ref^{commit}")
python=${PYTHON:-python3}
if [[ -f "$dir/.orderflow-baseline-ref" && "$(cat "$dir/.orderflow-baseline-ref")" == "$commit" && -x "$dir/.venv/bin/python" ]]; then
  echo "baseline tree $dir is at $commit already"
  exit 0
fi
if [[ -e "$dir" && -n "$(ls -A "$dir" 2>/dev/null)" ]]; then
  echo "baseline-tree.sh: $dir exists and is not a tree of $commit; remove it or pick another DIR" >&2
  exit 1
fi
mkdir -p "$dir"
git -C "$repo" archive "$commit" | tar -x -C "$dir"
"$python" -m venv "$dir/.venv"
"$dir/.venv/bin/python" -m pip install -q --upgrade pip
"$dir/.venv/bin/python" -m pip install -q -e "$dir"
echo "$commit" > "$dir/.orderflow-baseline-ref"
echo "baseline tree: $dir at $(git -C "$repo" log -1 --format='%h %s' "$commit")"
