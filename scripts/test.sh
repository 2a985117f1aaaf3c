#!/usr/bin/env bash
# Install everything the test suite needs (Python extras; Debian chromium for the browser test and
# postgresql for the store tests)
# and run it. Tests that need ../shared/data skip themselves when it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
# Debian packages still missing: chromium (browser test), postgresql (store tests on a real
# PostgreSQL; Debian keeps initdb/pg_ctl in /usr/lib/postgresql/<version>/bin, which the tests search).
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium fonts-dejavu-core)
if ! command -v pg_ctl >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
  missing+=(postgresql)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
  else
    echo "not installed and no root apt-get: ${missing[*]}; the browser / PostgreSQL tests will be skipped" >&2
  fi
fi
python3 -m pip install --quiet -e ".[serve,dev]"
python3 -m pytest -q -p no:cacheprovider "$@"
