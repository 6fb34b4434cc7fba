#!/usr/bin/env bash
# Installs Transfer Studio with its test tools into .venv and runs the whole test suite:
# core tests, every page under Streamlit's AppTest, and the browser flows in headless Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh requirements-dev.txt
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing Debian's chromium for the browser tests..." >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "No /usr/bin/chromium: the browser tests will be skipped (install it: apt-get install chromium)." >&2
  fi
fi
# Two workers by default (TRANSFER_STUDIO_TEST_WORKERS=0 runs in one process): each test file
# stays on one worker and the browser tests share one (see tests/conftest.py).
python -m pytest -n "${TRANSFER_STUDIO_TEST_WORKERS:-2}" --dist loadgroup "$@"
