#!/usr/bin/env bash
# Set up the pack's virtual environment (.venv) on a fresh machine; safe to run again.
#  - torch + torchvision (the pair ComfyUI needs), the pack's requirements, pytest;
#  - when a ComfyUI tree is found (COMFYUI_DIR, ~/ComfyUI, ~/ComfyUI-*), its requirements too,
#    so the host test tier can import it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
VPY=.venv/bin/python
pipq() { "$VPY" -m pip install -q --disable-pip-version-check "$@"; }
if ! "$VPY" -c "import torch, torchvision" 2>/dev/null; then
  echo "[setup] installing torch 2.14.1 + torchvision 0.29.1 (a few minutes)"
  pipq "torch==2.14.1" "torchvision==0.29.1"
fi
stamp=.venv/.atelier-req-$(cat requirements.txt requirements-dev.txt | sha1sum | cut -c1-12)
if [ ! -f "$stamp" ]; then
  echo "[setup] installing the pack's requirements"
  pipq -r requirements.txt -r requirements-dev.txt && touch "$stamp"
fi
for d in ${COMFYUI_DIR:-} "$HOME"/ComfyUI "$HOME"/ComfyUI-*; do
  [ -f "$d/requirements.txt" ] && [ -f "$d/comfy/model_patcher.py" ] || continue
  hstamp=.venv/.atelier-host-$(sha1sum "$d/requirements.txt" | cut -c1-12)
  [ -f "$hstamp" ] && continue
  echo "[setup] installing the requirements of the ComfyUI tree $d"
  grep -v -E '^(torch|torchvision|torchaudio)([<>=~ ].*)?$' "$d/requirements.txt" > .venv/host-req.txt
  pipq -r .venv/host-req.txt requests && touch "$hstamp"
done
echo "[setup] ready: $("$VPY" -c 'import torch; print("torch", torch.__version__)')"
