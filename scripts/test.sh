#!/usr/bin/env bash
# Set up and run every test tier (the README's test command; .ci/run calls exactly this):
#   1. core tier (no host): tests/core, in .venv
#   2. host tier: tests/host once per ComfyUI tree of scripts/hosts.sh (COMFYUI_DIRS / COMFYUI_DIR, else copies
#      of the unmodified trees in ../shared/hosts), each in its own venv with its own requirements and frontend.
# Extra arguments go to every pytest run.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh hosts || { echo "[test] set-up failed" >&2; exit 1; }
rc=0
echo "=== core tier ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)')) ==="
.venv/bin/python -m pytest tests/core -q -p no:cacheprovider "$@" || rc=1
mapfile -t trees < <(bash scripts/hosts.sh) || true
if [ ${#trees[@]} -eq 0 ]; then echo "=== host tier: NO ComfyUI tree (set COMFYUI_DIR) ===" >&2; exit 1; fi
for d in "${trees[@]}"; do
  v=$(bash scripts/hosts.sh --venv "$d")
  ver=$(sed -n 's/^__version__ *= *"\(.*\)"/\1/p' "$d/comfyui_version.py" 2>/dev/null)
  fe=$("$v/bin/python" -c 'import importlib.metadata as m; print(m.version("comfyui-frontend-package"))' 2>/dev/null)
  tv=$("$v/bin/python" -c 'import torch; print(torch.__version__)' 2>/dev/null)
  echo "=== host tier: ComfyUI ${ver:-?} (frontend ${fe:-?}, torch ${tv:-?}) at $d ==="
  COMFYUI_DIR="$d" "$v/bin/python" -m pytest tests/host -q -p no:cacheprovider "$@" || rc=1
done
exit $rc
