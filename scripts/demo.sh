#!/usr/bin/env bash
# Install cxrtriage (Python 3.11, CPU) and run the demo: the shipped pneumonia model on the shipped
# example chest X-rays. Prints the predictions and writes demo_out/index.html.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet -e .
cxr demo --out demo_out
