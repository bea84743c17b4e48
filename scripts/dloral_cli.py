"""The DLoRAL command line with its host side: ``python scripts/dloral_cli.py convert|upscale ...``.

The command line itself is the core's (``dloral/__main__.py``: flags, checks, staging, progress); this
entry point gives it the model loader, which imports the pack through ``hostbridge`` (the tree from
``--comfyui``, else ``$COMFYUI_DIR``, else ``~/ComfyUI``; the host's CPU flag set only where torch sees
no CUDA device) and loads the SD2.1 models with the pack's host plumbing, ``nodes/dloral_host.py``
(checkpoint, prompt, LoRA and ``conv_in`` patches on a clone). It runs from any working directory.
``python -m dloral convert`` needs no host; ``python -m dloral upscale`` names this file and stops.
On Linux ``upscale`` starts itself again with ``THP_MEM_ALLOC_ENABLE=1`` unless that variable is set.
"""
import os
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
PACK_NAME = "atelier_pack_cli"
PROG = "python scripts/dloral_cli.py"

for path in (str(HERE), str(REPO)):   # hostbridge; the dloral core, as `python -m dloral` from the repo root
    if path not in sys.path:
        sys.path.insert(1, path)

import hostbridge  # noqa: E402


def worker_path():
    """Ray workers of ``upscale --ray`` (``dloral/batch.py``) import this loader's modules (hostbridge) and the
    pack; they get the driver's PYTHONPATH, so the command puts both folders on it (every machine of the
    cluster holds the pack at the same path). Only this process's environment: in-process callers keep theirs."""
    os.environ["PYTHONPATH"] = os.pathsep.join([str(HERE), str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p])


def load_models(request):
    """``dloral.__main__.LoadRequest`` -> ``DLoRALModels`` on the host's SD2.1 UNet and VAE."""
    pack = hostbridge.import_pack(request.comfyui, name=PACK_NAME, cpu="no-cuda", label="--comfyui")
    return pack.nodes.dloral_host.load_checkpoint_models(
        request.checkpoint, request.prompt, request.weights,
        sample_posterior=request.settings.sample_posterior, precision=request.settings.precision)


def main(argv=None):
    """``dloral.__main__.main`` with the host loader (for callers in this process; no restart)."""
    from dloral.__main__ import main as core_main
    return core_main(argv, loader=load_models, prog=PROG)


if __name__ == "__main__":
    worker_path()
    from dloral.__main__ import run
    sys.exit(run(loader=load_models, restart=[sys.executable, str(pathlib.Path(__file__).resolve())], prog=PROG))
