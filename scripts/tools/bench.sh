#!/usr/bin/env bash
# Load generators for bench/: wrk (max throughput) and hey (a fixed, evenly paced arrival rate),
# from Debian's packages. Not needed by the tests. Idempotent.
set -euo pipefail
missing=()
for tool in wrk hey; do command -v "$tool" >/dev/null || missing+=("$tool"); done
[[ ${#missing[@]} -eq 0 ]] && exit 0
sudo=""; [[ $(id -u) -ne 0 ]] && sudo="sudo"
$sudo apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q "${missing[@]}" >/dev/null; }
