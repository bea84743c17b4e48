#!/usr/bin/env bash
# Set up the pack's environments on a fresh machine; safe to run again (stamps skip finished steps).
#   scripts/setup.sh core    the core venv .venv: torch, the pack's requirements, pytest, the Ray extra
#                            (requirements-ray.txt; demo + core tests)
#   scripts/setup.sh hosts   also every ComfyUI tree of the host tier (scripts/hosts.sh), each with a venv of
#                            its own (.venv-hosts/NAME) holding that tree's requirements and frontend
# torch: CPU-only machines get the CPU build where the package index serves one (TORCH_INDEX_URL, if set, is
# used for the torch/torchvision pair); the host venvs share one torch + torchvision pair (.venv-hosts/_torch).
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-core}
PY=${PYTHON:-python3}
pipq() {  # quiet pip; the machine's index prints a warning per missing local folder: drop those lines
  local v=$1; shift
  "$v" -m pip install -q --disable-pip-version-check "$@" 2>&1 | { grep -v '^WARNING: Location ' || true; }
  return "${PIPESTATUS[0]}"
}
has_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }
torch_pair() {  # $1 venv python, $2 "1" when torchvision is needed
  local idx=(); [ -n "${TORCH_INDEX_URL:-}" ] && idx=(--index-url "$TORCH_INDEX_URL")
  if [ "$2" = 1 ]; then
    pipq "$1" "${idx[@]}" "torch==2.14.1" "torchvision==0.29.1"
  elif has_gpu || [ -n "${TORCH_INDEX_URL:-}" ]; then
    pipq "$1" "${idx[@]}" "torch==2.14.1"
  else  # CPU build: a local +cpu wheel where the machine has one, else what the index gives
    pipq "$1" "torch==2.13.0+cpu" 2>/dev/null || pipq "$1" "torch==2.14.1"
  fi
}
# --- core venv -------------------------------------------------------------------------------------------
[ -x .venv/bin/python ] || "$PY" -m venv .venv
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  echo "[setup] core: installing torch (CPU build on a CPU-only machine)"
  torch_pair .venv/bin/python 0
fi
stamp=.venv/.atelier-req-$(cat requirements.txt requirements-dev.txt | sha1sum | cut -c1-12)
if [ ! -f "$stamp" ]; then
  echo "[setup] core: installing the pack's requirements"
  pipq .venv/bin/python -r requirements.txt -r requirements-dev.txt && touch "$stamp"
fi
# the optional Ray extra (--ray of the batch CLIs): the core tier's Ray tests need it and fail without it in CI
rstamp=.venv/.atelier-ray-$(sha1sum requirements-ray.txt | cut -c1-12)
if [ ! -f "$rstamp" ]; then
  echo "[setup] core: installing the Ray extra (requirements-ray.txt)"
  pipq .venv/bin/python -r requirements-ray.txt && touch "$rstamp"
fi
# the two-host Ray test (tests/core/test_ray_two_hosts.py: network namespaces, as root) needs ip, unshare,
# nsenter and mount; it fails without them in CI
if ! command -v ip >/dev/null 2>&1 || ! command -v unshare >/dev/null 2>&1 || ! command -v nsenter >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] core: installing iproute2 and util-linux (the two-host Ray test)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 util-linux mount >/dev/null
  else
    echo "[setup] missing ip/unshare/nsenter: install them (apt-get install -y iproute2 util-linux); the two-host Ray test fails without them in CI" >&2
  fi
fi
echo "[setup] core ready: $(.venv/bin/python -c 'import torch; print("torch", torch.__version__)')"
[ "$what" = hosts ] || exit 0
# --- system tools of the tests: headless chromium (browser test), poppler (PDF check), node (web JS check),
# a C++ compiler (torch.compile's CPU code: the NAG fused-kernel tests) ---
need=()
command -v g++ >/dev/null 2>&1 || need+=(g++)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v pdftoppm >/dev/null 2>&1 || need+=(poppler-utils)
command -v node >/dev/null 2>&1 || need+=(nodejs)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing ${need[*]} (Debian packages)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "[setup] missing ${need[*]}: install them (apt-get install -y ${need[*]}); their tests fail without them" >&2
  fi
fi
# --- host venvs ------------------------------------------------------------------------------------------
base=.venv-hosts/_torch
[ -x $base/bin/python ] || { mkdir -p .venv-hosts; "$PY" -m venv $base; }
if ! $base/bin/python -c "import torch, torchvision" 2>/dev/null; then
  echo "[setup] hosts: installing torch + torchvision (shared by the host venvs; a few minutes)"
  torch_pair $base/bin/python 1
fi
base_sp=$(cd "$($base/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" && pwd)
while IFS= read -r tree; do
  v=$(bash scripts/hosts.sh --venv "$tree")
  [ -x "$v/bin/python" ] || "$PY" -m venv "$v"
  sp=$("$v/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "$base_sp" > "$sp/atelier-shared-torch.pth"   # appended after the venv's own packages
  hstamp="$v/.atelier-req-$(cat "$tree/requirements.txt" requirements.txt requirements-dev.txt | sha1sum | cut -c1-12)"
  if [ ! -f "$hstamp" ]; then
    echo "[setup] hosts: installing the requirements of $tree into $v"
    grep -v -E '^(torch|torchvision|torchaudio)([<>=~ ].*)?$' "$tree/requirements.txt" > "$v/host-req.txt"
    pipq "$v/bin/python" -r "$v/host-req.txt" -r requirements.txt -r requirements-dev.txt requests && touch "$hstamp"
  fi
  echo "[setup] host ready: $tree -> $v ($("$v/bin/python" -c 'import torch, importlib.metadata as m; print("torch", torch.__version__, "| frontend", m.version("comfyui-frontend-package"))'))"
done < <(bash scripts/hosts.sh)
