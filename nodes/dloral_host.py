"""Host plumbing of DLoRAL: the user's SD2.1 UNet / VAE / prompt adapted to the core's ``DLoRALModels``.

The DLoRAL weights reach the UNet through sanctioned host APIs only, on a clone: each LoRA module as an
``add_object_patch`` of ``dloral.lora.lora_module`` of the host's own module (unmerged, as the official
code runs it: the host's merged patching keeps a second copy of every patched weight, 3.3 GB more on a CPU), the
8-channel input convolution through ``add_object_patch``, base tensors the checkpoint changed through
``add_patches`` (the copies share the host modules' parameters, so weight patches still reach them). The input
model is never modified. The UNet
is then called directly at timestep 1 (DLoRAL's one step, ``z0 = fused - eps``), not through a sampler.
Before patching, a sample of the UNet's base weights is checked against the fingerprint the converter
recorded (``dloral.checkpoint.check_base``): a different base model is named, not silently used.

Precision (``dloral.precision.run_precision``): ``auto`` is float32 on CPU and, on a GPU, the dtype the host runs the
UNet in (fp16 or bf16 for SD2.x on current GPUs). ``fp16``/``bf16`` force half precision: when that differs
from the host's UNet dtype the UNet runs under ``torch.autocast``; CFR and the latents run in that dtype;
the VAE keeps the host's dtype.

Used by the nodes (``dloral_nodes``) and by the CLI's host loader (``scripts/dloral_cli.py``).
"""
import copy
import gc
import logging
import os
from collections.abc import Mapping

import torch

from ..dloral import CFR, DLoRALModels
from ..dloral.checkpoint import check_base, conv_in_module, check_fit, check_sd2_config
from ..dloral.pipeline import check_context, from_vae_pixels, to_vae_pixels, upscale_images
from ..dloral.cpu import THP_VAR, thp_env
from ..dloral.lora import lora_module, lora_scale
from ..dloral.vae_attention import sdpa_attention_block, vae_attention_paths
from ..dloral.precision import run_precision, unet_caller

log = logging.getLogger("atelier")

FOLDER = "dloral"
_HINTED = []   # the large-pages hint is logged once per process
EXTS = {".pkl", ".pth", ".safetensors"}


def register_folder():
    """Register ``models/dloral`` with the host (``folder_paths.add_model_folder_path``) and create it."""
    import folder_paths
    path = os.path.join(folder_paths.models_dir, FOLDER)
    folder_paths.add_model_folder_path(FOLDER, path)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:   # a read-only models folder: the loaders then list nothing, and say so
        log.warning("atelier: cannot create %s: %s", path, exc)
    return folder_paths


def model_files(exts=EXTS):
    """Files in the registered dloral folders with one of ``exts`` (sorted; [""] when there are none)."""
    fp = register_folder()
    return sorted(f for f in fp.get_filename_list(FOLDER) if os.path.splitext(f)[1].lower() in exts) or [""]


def full_path(input_name, name):
    """Full path of ``name`` in the dloral folders; ValueError naming the input when it is not there."""
    fp = register_folder()
    path = fp.get_full_path(FOLDER, name) if name else None
    if not path:
        raise ValueError(f"{input_name}: {name!r} not found in models/{FOLDER} "
                         f"(folders: {', '.join(fp.get_folder_paths(FOLDER))})")
    return path


def check_sd2(model):
    """Raise ValueError unless ``model`` (a ModelPatcher) is an SD2.x UNet (``dloral.checkpoint.check_sd2_config``)."""
    check_sd2_config(getattr(model.model.model_config, "unet_config", {}))


class _UnpatchedUNet(Mapping):
    """The UNet's own weights, ``diffusion_model.*``, read one at a time: not ``model.model.state_dict()``,
    which holds the patched values while a clone (an earlier DLoRAL run) is loaded; the host's
    ``get_key_patches`` gives each key's original weight first (converted as the host's ops would for a
    quantised weight, one tensor at a time)."""

    def __init__(self, model):
        self._entries = model.get_key_patches("diffusion_model.")

    def __getitem__(self, key):
        weight, convert = self._entries[key][0]
        return convert(weight, inplace=False)

    def __iter__(self):
        return iter(self._entries)

    def __len__(self):
        return len(self._entries)


def patch_model(model, weights):
    """A clone of ``model`` with DLoRAL's LoRA deltas, 8-channel conv_in and kept base tensors; the input is
    untouched. Raises ValueError when the model is not SD2.x, the weights do not fit it, or its base weights
    differ from the fingerprint the converter recorded (``dloral.checkpoint.check_base``, naming them)."""
    import comfy.lora
    check_sd2(model)
    key_map = comfy.lora.model_lora_keys_unet(model.model, {})
    check_fit(weights, key_map, {k: v.shape for k, v in model.model.state_dict().items()})
    check_base(_UnpatchedUNet(model), weights)
    patched = model.clone()   # LoRA unmerged (no second copy of the weights); host weight patches still apply
    for m in weights.modules():
        path = key_map[m][:-len(".weight")]
        down = weights.lora[m + ".lora_down.weight"]
        patched.add_object_patch(path, lora_module(model.get_model_object(path), down, weights.lora[m + ".lora_up.weight"],
                                                   lora_scale(weights.lora, m), split=weights.split(down.shape[0])))
    if weights.base:   # base tensors the DLoRAL checkpoint changed: they replace the user's (on the clone)
        patched.add_patches({k: ("set", (v,)) for k, v in weights.base.items()}, 1.0)
    patched.add_object_patch("diffusion_model.input_blocks.0.0", conv_in_module(weights))
    return patched


def patch_vae(vae):
    """A copy of the host VAE whose patcher is a clone with each attention block (``encoder.mid.attn_1``,
    ``decoder.mid.attn_1``) object-patched to ``dloral.vae_attention.sdpa_attention_block``: diffusers'
    arithmetic, so the decode is the official code's to the bit, and no (H*W)^2 score matrix. The input VAE
    and its patcher are untouched (the shared model carries the patches only while the clone is loaded).

    Only for a VAE that runs on a CPU, where it was measured (fp32). On a GPU the host's own path stays: it
    already uses PyTorch's attention there and falls back to slices when that runs out of memory, which
    matters for single-head attention of head size 512 on a 2048x2048 decode; bit parity in fp16/bf16 is
    not on offer anyway."""
    if torch.device(vae.device).type != "cpu":
        return vae
    fsm = vae.first_stage_model
    paths = vae_attention_paths(fsm)
    if not paths:
        return vae
    out = copy.copy(vae)
    out.patcher = vae.patcher.clone()
    for path in paths:
        out.patcher.add_object_patch(path, sdpa_attention_block(out.patcher.get_model_object(path)))
    return out


def attention_options(device):
    """``transformer_options`` for the UNet call. On a CPU the host falls back to its sub-quadratic attention
    only because PyTorch attention is off there by default: unless the user chose an attention flag, PyTorch's
    fused attention (the host's own ``attention_pytorch``) is used through the host's
    ``optimized_attention_override`` hook (full SD2.1 UNet, fp32, 2 threads: about 2x faster, the same eps
    to 1e-7). Elsewhere the host's choice stands."""
    import comfy.ldm.modules.attention as attention
    import comfy.model_management as mm
    from comfy.cli_args import args
    chosen = args.use_split_cross_attention or args.use_quad_cross_attention or mm.pytorch_attention_enabled()
    if torch.device(device).type != "cpu" or chosen:
        return {}
    return {"optimized_attention_override": lambda func, *a, **k: attention.attention_pytorch(*a, **k)}


def host_models(model, vae, positive, weights, sample_posterior=False, precision="auto"):
    """Adapt host MODEL / VAE / CONDITIONING + DLoRAL weights to the core's ``DLoRALModels``;
    ``precision`` (auto / fp16 / bf16 / fp32) sets the compute dtype by ``dloral.precision.run_precision``."""
    import comfy.model_management as mm
    ctx = check_context(positive[0][0] if positive else None)
    patched = patch_model(model, weights)
    vae = patch_vae(vae)
    mm.load_models_gpu([patched])
    device = mm.get_torch_device()
    if torch.device(device).type == "cpu" and thp_env() is not None and not _HINTED:
        _HINTED.append(True)
        log.info("atelier: DLoRAL on a CPU may run faster when ComfyUI is started with %s=1 (15 %% on one AMD "
                 "EPYC VM, 1-4 %% on an Intel CPU; PyTorch reads it at start; see dloral/cpu.py)", THP_VAR)
    base = patched.model
    host_dtype = getattr(base, "manual_cast_dtype", None) or base.get_dtype()
    dtype, run_dtype, cast = run_precision(device, precision, host_dtype)
    dm = base.diffusion_model
    opts = attention_options(device)
    unet = unet_caller(lambda x, t, c: dm(x, t, context=c, transformer_options=dict(opts)), device, run_dtype, cast)

    def encode(x):
        if not sample_posterior:
            return vae.encode(to_vae_pixels(x)).to(device)
        fsm = vae.first_stage_model
        if not (hasattr(fsm, "encoder") and hasattr(fsm, "quant_conv")):
            raise ValueError("sample_posterior: this VAE does not expose its posterior; turn it off")
        mm.load_models_gpu([vae.patcher])
        with torch.no_grad():
            mom = fsm.quant_conv(fsm.encoder(x.to(vae.device, vae.vae_dtype))).float()
        mean, logvar = mom.chunk(2, 1)
        return mean.to(device), logvar.to(device)

    def decode(z):
        return from_vae_pixels(vae.decode(z.float())).to(device)

    cfr = CFR.from_weights(weights).to(device, dtype)
    return DLoRALModels(unet=unet, encode=encode, decode=decode, cfr=cfr, context=ctx,
                        device=device, dtype=dtype)


def run_upscale(models, images, cfg, progress=None):
    """IMAGE (N, H, W, 3) -> IMAGE (N, 4H, 4W, 3) (``dloral.pipeline.upscale_images``)."""
    return upscale_images(images, models, cfg, progress)


#: State-dict prefixes of an SD checkpoint's text encoder (dropped before the UNet and VAE are built).
TEXT_ENCODER_PREFIXES = ("cond_stage_model.", "conditioner.")


def encode_prompt(sd, metadata, prompt, checkpoint="checkpoint"):
    """CONDITIONING of ``prompt`` from the text encoder in the checkpoint state dict ``sd``: only the text
    encoder is built (no UNet, no VAE), and it is released before this returns (the host's model list keeps
    only weak references to it)."""
    import comfy.sd
    out = comfy.sd.load_state_dict_guess_config(dict(sd), output_vae=False, output_clip=True, output_model=False,
                                                metadata=metadata)
    clip = out[1] if out else None
    if clip is None:
        raise ValueError(f"--checkpoint {checkpoint!r} has no text encoder; use a full SD2.1-base checkpoint")
    cond, pooled = clip.encode_from_tokens(clip.tokenize(prompt), return_pooled=True)
    del clip, out
    gc.collect()
    return [[cond, {"pooled_output": pooled}]]


def load_checkpoint_models(checkpoint, prompt, weights, sample_posterior=False, precision="auto"):
    """The CLI's models from a full SD2.1 checkpoint file loaded by the host: the file is read once; the
    prompt is encoded by its text encoder, built alone and released (:func:`encode_prompt`); the text
    encoder's tensors are dropped from the state dict; then the UNet and VAE are built and adapted
    (:func:`host_models`). The text encoder is never in memory beside the UNet (before: 10.15 GB peak for
    SD2.1-base on a CPU, the full-size text encoder held through the whole run)."""
    import comfy.sd
    import comfy.utils
    sd, metadata = comfy.utils.load_torch_file(checkpoint, return_metadata=True)
    positive = encode_prompt(sd, metadata, prompt, checkpoint)
    sd = {k: v for k, v in sd.items() if not k.startswith(TEXT_ENCODER_PREFIXES)}
    gc.collect()
    out = comfy.sd.load_state_dict_guess_config(sd, output_vae=True, output_clip=False, metadata=metadata)
    if out is None:
        raise ValueError(f"--checkpoint {checkpoint!r}: the host cannot tell its model type; use a full SD2.1-base "
                         "checkpoint")
    model, vae = out[0], out[2]
    del sd, out
    if vae is None:
        raise ValueError(f"--checkpoint {checkpoint!r} has no VAE; use a full SD2.1-base checkpoint")
    return host_models(model, vae, positive, weights, sample_posterior, precision)
