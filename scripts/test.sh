#!/usr/bin/env bash
# Install everything the test suite needs (Python extras; Debian chromium for the browser test,
# postgresql for the store tests, dcmtk + libgdcm-tools to write DICOM in every transfer syntax)
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
# DCMTK and GDCM, the reference DICOM toolkits: tests/test_dicom_syntaxes.py re-encodes DX and CR files with them.
command -v dcmcjpls >/dev/null 2>&1 || missing+=(dcmtk)
command -v gdcmconv >/dev/null 2>&1 || missing+=(libgdcm-tools)
# Orthanc with its DICOMweb plugin: the real PACS of tests/test_pacs.py (round trip, outage) and benchmarks/pacs_roundtrip.py.
if ! command -v Orthanc >/dev/null 2>&1 && [ ! -x /usr/sbin/Orthanc ]; then
  missing+=(orthanc)
fi
[ -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || missing+=(orthanc-dicomweb)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
  else
    echo "not installed and no root apt-get: ${missing[*]}; the browser / PostgreSQL / DICOM-syntax / PACS tests will be skipped" >&2
  fi
fi
python3 -m pip install --quiet -e ".[serve,dev]"
installs_s=$SECONDS

# Static checks (configured in pyproject.toml): lint, formatting, import layers, types, the docs site.
# Each one that fails is named at the end; the tests run either way. mypy (about 40 s from a cold cache)
# and the MkDocs build run beside pytest at a lower CPU priority, in the moments its workers wait;
# their output is printed after the tests.
failed=()
python3 -m ruff check src tests benchmarks scripts || failed+=("ruff check")
python3 -m ruff format --check src tests benchmarks scripts || failed+=("ruff format --check")
lint-imports || failed+=("lint-imports")
checks_dir="$(mktemp -d)"
nice -n 10 python3 -m mypy > "$checks_dir/mypy.log" 2>&1 &
mypy_pid=$!
# The docs site (MkDocs + mkdocstrings, API reference from the NumPy docstrings): any warning fails it.
NO_MKDOCS_2_WARNING=1 nice -n 10 python3 -m mkdocs build --strict --quiet --site-dir "$checks_dir/site" \
  > "$checks_dir/mkdocs.log" 2>&1 &
mkdocs_pid=$!

# pytest-xdist: one worker per core (PYTEST_WORKERS overrides; 0 = in this process), tests handed out
# as workers free up (worksteal: the long end-to-end tests do not queue behind each other).
status=0
python3 -m pytest -q -p no:cacheprovider -n "${PYTEST_WORKERS:-auto}" --dist worksteal "$@" || status=$?
wait "$mypy_pid" || failed+=("mypy")
echo "--- mypy"; cat "$checks_dir/mypy.log"
wait "$mkdocs_pid" || failed+=("mkdocs build --strict")
echo "--- mkdocs build --strict"; cat "$checks_dir/mkdocs.log"
echo "wall time: installs ${installs_s} s, static checks and tests $((SECONDS - installs_s)) s"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "static checks failed: ${failed[*]}" >&2
  [ "$status" -ne 0 ] || status=1
fi
exit "$status"
