#!/usr/bin/env bash
# Set up and run every test tier:
#   1. core tier (no host): tests/core
#   2. host tier, once per ComfyUI tree found: $COMFYUI_DIR (or ~/ComfyUI), then any ~/ComfyUI-* trees.
#      With no tree the host tier is skipped with a loud message (it still runs, to say so).
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
VPY=.venv/bin/python
rc=0
echo "=== core tier ==="
"$VPY" -m pytest tests/core -q -p no:cacheprovider "$@" || rc=1
trees=()
first=${COMFYUI_DIR:-$HOME/ComfyUI}
[ -f "$first/comfy/model_patcher.py" ] && trees+=("$(cd "$first" && pwd)")
for d in "$HOME"/ComfyUI-*; do
  [ -f "$d/comfy/model_patcher.py" ] || continue
  d=$(cd "$d" && pwd); [[ " ${trees[*]:-} " == *" $d "* ]] || trees+=("$d")
done
if [ ${#trees[@]} -eq 0 ]; then
  echo "=== host tier: NO ComfyUI tree found (set COMFYUI_DIR) ==="
  "$VPY" -m pytest tests/host -q -p no:cacheprovider "$@"; r=$?
  [ $r -eq 0 ] || [ $r -eq 5 ] || rc=1
fi
for d in "${trees[@]}"; do
  echo "=== host tier: $d ==="
  COMFYUI_DIR="$d" "$VPY" -m pytest tests/host -q -p no:cacheprovider "$@"; r=$?
  [ $r -eq 0 ] || [ $r -eq 5 ] || rc=1
done
exit $rc
