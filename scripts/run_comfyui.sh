#!/usr/bin/env bash
# Start a local ComfyUI with this pack linked into its custom_nodes, on 127.0.0.1.
#   COMFYUI_DIR  the ComfyUI tree (default: the last tree of scripts/hosts.sh, the copy of v0.8.0 made for the
#                host tier); the server runs in that tree's own venv (made by scripts/setup.sh hosts when missing)
#   COMFYUI_PYTHON  the Python to run the server with instead (one that has the tree's requirements)
#   PORT         the port (default 8188; COMFYUI_PORT is read too)
#   extra arguments go to ComfyUI's main.py (e.g. --highvram); --cpu is added when torch sees no GPU.
# The pack is linked as $COMFYUI_DIR/custom_nodes/ComfyUI-Atelier (a symlink to this checkout) unless a
# folder of that name, or another link to this checkout, is already there; a link this script made is
# removed again when the server stops (Ctrl-C, kill, or the server exiting). Stop the server with Ctrl-C.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
COMFY="${COMFYUI_DIR:-}"
if [ -z "$COMFY" ]; then COMFY=$(bash "$REPO/scripts/hosts.sh" | tail -n 1); fi
PORT="${PORT:-${COMFYUI_PORT:-8188}}"
[ -f "$COMFY/main.py" ] || { echo "no ComfyUI at $COMFY (set COMFYUI_DIR)" >&2; exit 1; }
if [ -n "${COMFYUI_PYTHON:-}" ]; then PY=$COMFYUI_PYTHON; else
  VENV=$(bash "$REPO/scripts/hosts.sh" --venv "$COMFY")
  if [ ! -x "$VENV/bin/python" ]; then COMFYUI_DIR="$COMFY" bash "$REPO/scripts/setup.sh" hosts; fi
  PY="$VENV/bin/python"
fi
CN="$COMFY/custom_nodes"
mkdir -p "$CN"
linked=""
created=""
cleanup() {
  if [ -n "$created" ] && [ -L "$created" ]; then
    rm -f "$created" && echo "[atelier] removed the link $created"
  fi
}
trap cleanup EXIT
for d in "$CN"/*; do
  [ -e "$d" ] || continue
  if [ "$(cd "$d" 2>/dev/null && pwd -P)" = "$(cd "$REPO" && pwd -P)" ]; then linked="$d"; break; fi
done
if [ -z "$linked" ]; then
  if [ -e "$CN/ComfyUI-Atelier" ]; then
    echo "$CN/ComfyUI-Atelier exists and is not this checkout; remove it or set COMFYUI_DIR" >&2; exit 1
  fi
  ln -s "$REPO" "$CN/ComfyUI-Atelier"
  linked="$CN/ComfyUI-Atelier"
  created="$linked"
  echo "[atelier] linked $linked -> $REPO"
fi
extra=()
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  case " $* " in *" --cpu "*) ;; *) extra+=(--cpu) ;; esac
fi
echo "[atelier] ComfyUI $COMFY with $PY on http://127.0.0.1:$PORT (pack: $linked)"
cd "$COMFY"
# Not exec: this shell stays to remove the link. The server runs in the background (so a signal to
# this shell is handled at once) and gets a TERM when this shell is interrupted or terminated.
"$PY" main.py --listen 127.0.0.1 --port "$PORT" ${extra[@]+"${extra[@]}"} "$@" &
server=$!
trap 'kill -TERM "$server" 2>/dev/null || true' INT TERM HUP
rc=0
wait "$server" || rc=$?
while kill -0 "$server" 2>/dev/null; do wait "$server" || rc=$?; done
exit "$rc"
