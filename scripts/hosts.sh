#!/usr/bin/env bash
# The ComfyUI trees of the host tier, one absolute path a line.
#   COMFYUI_DIRS (colon-separated) or COMFYUI_DIR name them; with neither set, the unmodified trees in
#   ../shared/hosts (or $ATELIER_HOSTS_SRC) are copied to .hosts/ once (a server run writes into its tree)
#   and those copies are used.
#   scripts/hosts.sh --venv TREE   prints the venv path of TREE instead (.venv-hosts/NAME).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
if [ "${1:-}" = --venv ]; then
  t=$(cd "$2" && pwd)
  echo "$REPO/.venv-hosts/$(basename "$t")-$(printf %s "$t" | sha1sum | cut -c1-6)"; exit 0
fi
list=${COMFYUI_DIRS:-${COMFYUI_DIR:-}}
if [ -n "$list" ]; then
  IFS=: read -r -a trees <<< "$list"
  for t in "${trees[@]}"; do
    [ -f "$t/comfy/model_patcher.py" ] || { echo "[hosts] $t is not a ComfyUI tree (no comfy/model_patcher.py)" >&2; exit 1; }
    (cd "$t" && pwd)
  done
  exit 0
fi
src=${ATELIER_HOSTS_SRC:-$REPO/../shared/hosts}
[ -d "$src" ] || { echo "[hosts] no ComfyUI tree: set COMFYUI_DIR or provide $src" >&2; exit 1; }
for s in "$src"/ComfyUI-*/; do
  s=${s%/}; [ -f "$s/comfy/model_patcher.py" ] || continue
  d="$REPO/.hosts/$(basename "$s")"
  sig=$(cd "$s" && find . -type f -not -path './user/*' -not -path './output/*' -not -path './temp/*' -printf '%P %s\n' 2>/dev/null | sort | sha1sum | cut -c1-12)
  if [ ! -f "$d/.atelier-copy-$sig" ]; then
    rm -rf "$d.tmp" && mkdir -p "$REPO/.hosts"
    cp -r --no-preserve=mode,ownership "$s" "$d.tmp"
    touch "$d.tmp/.atelier-copy-$sig"
    rm -rf "$d" && mv "$d.tmp" "$d"
    echo "[hosts] copied $s -> $d" >&2
  fi
  echo "$d"
done
