#!/usr/bin/env bash
# The benchmarks' GPU checks, ready for a session that is lent a GPU machine (the device tool), in one call each.
#
#   Here, once:  bash scripts/gpu_checks.sh --fetch
#       downloads into .whl/ (git-ignored) the wheels the device image lacks for importing the host (PyAV,
#       torchsde, trampoline: found by running the host benches in a venv holding only the image's packages).
#   There:       device run, carry [".whl", ".hosts/ComfyUI-v0.8.0"], timeout_s 560, command
#                    bash scripts/gpu_checks.sh nag magcache
#                then, if device time is left:  bash scripts/gpu_checks.sh dloral
#       (working tree ~9 MB + host tree ~17 MB + wheels ~36 MB: under the 64 MiB a call carries)
#   Here, check: bash scripts/gpu_checks.sh --smoke nag magcache dloral
#       the same commands at tiny dims on the CPU, with the v0.8.0 host venv (what the host tier runs); PY=... picks
#       another python (a venv holding only the device image's packages plus the wheels checks the import set).
#
# Parts (each under its own time cap; results and one log under $OUT, else bench/results/gpu/; --smoke: /tmp):
#   nag       bench_nag_flux_cost.py --device cuda (real-dims Flux block: plain / NAG unfused / NAG fused) and
#             bench_nag_families.py --dims real --device cuda (Flux-dev, Qwen-Image, HunyuanVideo, Wan2.1-1.3B)
#   magcache  bench_magcache_families.py --gpu --real-dims (overhead < 1 %, within 3 % of the ideal)
#   dloral    bench_dloral.py --suite gpu
set -uo pipefail
cd "$(dirname "$0")/.."
smoke=0; fetch=0; parts=()
for a in "$@"; do
  case "$a" in
    --smoke) smoke=1 ;;
    --fetch) fetch=1 ;;
    nag|magcache|dloral) parts+=("$a") ;;
    *) echo "gpu_checks: unknown argument '$a'; allowed: --fetch, --smoke, nag, magcache, dloral" >&2; exit 2 ;;
  esac
done
WHEELS=(av==18.1.0 torchsde==0.2.6 trampoline==0.1.2)
if [ $fetch = 1 ]; then
  mkdir -p .whl
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "${WHEELS[@]}" || exit 1
  ls -la .whl; exit 0
fi
[ ${#parts[@]} -gt 0 ] || parts=(nag magcache)
if [ $smoke = 1 ]; then
  out="${OUT:-/tmp/atelier_gpu_smoke}"; mkdir -p "$out"; log="$out/gpu_checks.log"
  export COMFYUI_DIR="${COMFYUI_DIR:-$PWD/.hosts/ComfyUI-v0.8.0}"
  PY="${PY:-$(ls -d .venv-hosts/ComfyUI-v0.8.0-*/bin/python | head -1)}"
else
  out="${OUT:-bench/results/gpu}"; mkdir -p "$out"; log="$out/gpu_checks.log"
  export COMFYUI_DIR="$PWD/.hosts/ComfyUI-v0.8.0"
  [ -d "$COMFYUI_DIR/comfy" ] || { echo "gpu_checks: carry .hosts/ComfyUI-v0.8.0 (no host tree at $COMFYUI_DIR)" >&2; exit 2; }
  ls .whl/*.whl >/dev/null 2>&1 || { echo "gpu_checks: carry .whl (run 'bash scripts/gpu_checks.sh --fetch' here first)" >&2; exit 2; }
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  PY=python3
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$log"
fi
export PYTHONUNBUFFERED=1
status=0
step() {  # $1 cap in seconds, $2 name; the rest: the command
  local cap=$1 name=$2; shift 2
  echo "=== $name (cap ${cap}s): $*" | tee -a "$log"
  local t0=$SECONDS
  timeout "$cap" "$@" 2>&1 | grep --line-buffered -v "it/s]" | tee -a "$log"
  local rc=${PIPESTATUS[0]}
  echo "=== $name: rc $rc in $((SECONDS - t0)) s" | tee -a "$log"
  [ "$rc" = 0 ] || status=1
}
for p in "${parts[@]}"; do
  case "$p" in
    nag)
      if [ $smoke = 1 ]; then
        step 300 nag_flux_cost "$PY" -c "import sys, torch; sys.path.insert(0, 'bench'); import bench_nag_flux_cost as b; print(b.device_block(64, 2, 48, 8, 8, 1, device='cpu', dtype=torch.float32))"
        step 300 nag_families "$PY" bench/bench_nag_families.py --dims real --smoke --steps 1 --repeats 1 --out "$out/nag_families_real.json"
      else
        step 150 nag_flux_cost "$PY" bench/bench_nag_flux_cost.py --device cuda --repeats 10 --out "$out/nag_flux_cost_cuda.json"
        step 240 nag_families "$PY" bench/bench_nag_families.py --dims real --device cuda --out "$out/nag_families_real.json"
      fi ;;
    magcache)
      if [ $smoke = 1 ]; then
        step 300 magcache_families "$PY" bench/bench_magcache_families.py --real-dims --shrink --steps 4 --repeats 1 --out "$out/magcache_families_real.json"
      else
        step 200 magcache_families "$PY" bench/bench_magcache_families.py --gpu --real-dims --budget-s 150 --out "$out/magcache_families_real.json"
      fi ;;
    dloral)
      if [ $smoke = 1 ]; then
        step 400 dloral_gpu "$PY" bench/bench_dloral.py --suite gpu --smoke --suite-out "$out/dloral_gpu.json"
      else
        step 540 dloral_gpu "$PY" bench/bench_dloral.py --suite gpu --run-cap-s 90 --suite-out "$out/dloral_gpu.json"
      fi ;;
  esac
done
echo "gpu_checks: done, status $status; results in $out" | tee -a "$log"
exit $status
