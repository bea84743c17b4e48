"""Host side of ``python -m dloral upscale``: the default model loader (``dloral.__main__.host_loader``).

Run as a plain file (not a package module) by the core CLI: it puts the ComfyUI tree given by
``--comfyui`` on sys.path, sets the host's CPU flag when no GPU is present (the host reads its flags
at import time), imports the pack as a package the way ComfyUI does, and hands the request to the
pack's host plumbing, ``nodes/dloral_host.py`` (checkpoint loading, prompt encoding, ``host_models``).
"""
import importlib.util
import os
import pathlib
import sys

PACK_NAME = "atelier_pack_cli"


def import_pack(comfyui):
    """The pack imported as a package with the ComfyUI tree ``comfyui`` on sys.path (as ComfyUI does)."""
    if not comfyui:
        raise ValueError("--comfyui is not set (nor $COMFYUI_DIR): the SD2.1 models are loaded by ComfyUI")
    comfyui = os.path.abspath(comfyui)
    if not os.path.isfile(os.path.join(comfyui, "comfy", "model_patcher.py")):
        raise ValueError(f"--comfyui {comfyui!r} is not a ComfyUI tree (no comfy/model_patcher.py)")
    if PACK_NAME in sys.modules:
        return sys.modules[PACK_NAME]
    if comfyui not in sys.path:
        sys.path.insert(0, comfyui)
    import torch
    from comfy.cli_args import args as host_args   # read by the host at import time
    if not torch.cuda.is_available():
        host_args.cpu = True
    repo = pathlib.Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location(PACK_NAME, repo / "__init__.py",
                                                  submodule_search_locations=[str(repo)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[PACK_NAME] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        del sys.modules[PACK_NAME]
        raise
    return mod


def load_models(request):
    """``dloral.__main__.LoadRequest`` -> ``DLoRALModels`` on the host's SD2.1 UNet and VAE."""
    pack = import_pack(request.comfyui)
    return pack.nodes.dloral_host.load_checkpoint_models(
        request.checkpoint, request.prompt, request.weights,
        sample_posterior=request.settings.sample_posterior, precision=request.settings.precision)
