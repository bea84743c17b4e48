#!/usr/bin/env bash
# Set up (.venv) and run the offline demo on bundled defaults; results go to demo_out/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python scripts/demo.py --out "${1:-demo_out}"
