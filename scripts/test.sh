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
# A test that runs past 10 minutes has every thread's stack printed (it is not stopped): a hang shows where it is.
export PYTEST_ADDOPTS="${PYTEST_ADDOPTS:-} -o faulthandler_timeout=600"
echo "=== core tier ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)')) ==="
.venv/bin/python -m pytest tests/core -q -p no:cacheprovider "$@" || rc=1
mapfile -t trees < <(bash scripts/hosts.sh) || true
if [ ${#trees[@]} -eq 0 ]; then echo "=== host tier: NO ComfyUI tree (set COMFYUI_DIR) ===" >&2; exit 1; fi
# The host trees run side by side (2 cores: about 40 % less wall time than one after the other); each run's
# output is kept in a log and printed whole when it ends. ATELIER_SERIAL_HOSTS=1 runs them one after the other.
logs=$(mktemp -d); pids=()
for i in "${!trees[@]}"; do
  d=${trees[$i]}
  v=$(bash scripts/hosts.sh --venv "$d")
  ver=$(sed -n 's/^__version__ *= *"\(.*\)"/\1/p' "$d/comfyui_version.py" 2>/dev/null)
  fe=$("$v/bin/python" -c 'import importlib.metadata as m; print(m.version("comfyui-frontend-package"))' 2>/dev/null)
  tv=$("$v/bin/python" -c 'import torch; print(torch.__version__)' 2>/dev/null)
  echo "=== host tier: ComfyUI ${ver:-?} (frontend ${fe:-?}, torch ${tv:-?}) at $d ===" > "$logs/$i.log"
  run() { COMFYUI_DIR="$d" "$v/bin/python" -m pytest tests/host -q -p no:cacheprovider "$@" >> "$logs/$i.log" 2>&1; }
  if [ "${ATELIER_SERIAL_HOSTS:-0}" = 1 ]; then
    run "$@"; echo $? > "$logs/$i.rc"; cat "$logs/$i.log"
  else
    (run "$@"; echo $? > "$logs/$i.rc") & pids+=($!)
    echo "=== host tier: ComfyUI ${ver:-?} started (output follows when it ends) ==="
  fi
done
for p in "${pids[@]}"; do wait "$p"; done
for i in "${!trees[@]}"; do
  [ "${ATELIER_SERIAL_HOSTS:-0}" = 1 ] || cat "$logs/$i.log"
  [ "$(cat "$logs/$i.rc" 2>/dev/null)" = 0 ] || rc=1
done
rm -rf "$logs"
exit $rc
