#!/usr/bin/env bash
# Install everything the test suite needs (Python extras, Debian chromium for the browser test)
# and run it. Tests that need ../shared/data skip themselves when it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core
  else
    echo "chromium not installed and no root apt-get: the browser test will be skipped" >&2
  fi
fi
python3 -m pip install --quiet -e ".[serve,dev]"
python3 -m pytest -q -p no:cacheprovider "$@"
