#!/usr/bin/env bash
# Chromium and its driver from Debian, for the console's browser test (tests/orderflow_tools/
# test_console_browser.py: selenium drives /usr/bin/chromium headless). Where apt cannot install
# (no root, not Debian), it says so and the test skips with the reason, or fails under CI=true.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
    exit 0
fi
sudo=""
[[ $(id -u) -eq 0 ]] || sudo="sudo -n"  # CI runners: passwordless sudo
if [[ "${1:-}" == "--if-possible" ]] && { ! command -v apt-get >/dev/null || ! $sudo true 2>/dev/null; }; then
    echo "chromium: not installed (needs apt-get and root or sudo); the console's browser test will skip" >&2
    exit 0
fi
$sudo apt-get update -qq
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver
