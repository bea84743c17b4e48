"""Host plumbing of DLoRAL: the user's SD2.1 UNet / VAE / prompt adapted to the core's ``DLoRALModels``.

The DLoRAL weights reach the UNet through sanctioned host APIs only, on a clone: the merged LoRA deltas
through the host's LoRA loader (``comfy.sd.load_lora_for_models``, which clones and ``add_patches``) and
the 8-channel input convolution through ``add_object_patch``. The input model is never modified. The UNet
is then called directly at timestep 1 (DLoRAL's one step, ``z0 = fused - eps``), not through a sampler.
Before patching, a sample of the UNet's base weights is checked against the fingerprint the converter
recorded (``dloral.checkpoint.check_base``): a different base model is named, not silently used.

Precision (``dloral.resolve_dtype``): ``auto`` is float32 on CPU and, on a GPU, the dtype the host runs the
UNet in (fp16 or bf16 for SD2.x on current GPUs). ``fp16``/``bf16`` force half precision: when that differs
from the host's UNet dtype the UNet runs under ``torch.autocast``; CFR and the latents run in that dtype;
the VAE keeps the host's dtype.

Used by the nodes (``dloral_nodes``) and by the CLI's host loader (``scripts/dloral_host.py``).
"""
import contextlib
import logging
import os
from collections.abc import Mapping

import torch
import torch.nn.functional as F

from ..dloral import CFR, DLoRALModels, resolve_dtype, upscale_video
from ..dloral.checkpoint import check_base

log = logging.getLogger("atelier")

FOLDER = "dloral"
EXTS = {".pkl", ".pth", ".safetensors"}
SD2 = {"context_dim": 1024, "model_channels": 320, "use_linear_in_transformer": True}


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


class _Conv8(torch.nn.Module):
    """DLoRAL's 8-channel conv_in ([warped previous latent, fused latent]); follows the input's device/dtype."""

    def __init__(self, weight, bias):
        super().__init__()
        self.register_buffer("weight", weight.detach().clone())
        self.register_buffer("bias", bias.detach().clone())

    def forward(self, x, *args, **kwargs):
        return F.conv2d(x, self.weight.to(x), self.bias.to(x), padding=1)


def check_sd2(model):
    """Raise ValueError unless ``model`` (a ModelPatcher) is an SD2.x UNet."""
    cfg = getattr(model.model.model_config, "unet_config", {})
    bad = {k: cfg.get(k) for k, v in SD2.items() if cfg.get(k) != v}
    if bad or cfg.get("adm_in_channels") is not None:
        raise ValueError(f"DLoRAL needs an SD2.x (SD2.1-base) UNet; this model has {bad or cfg} "
                         f"(expected {SD2} and no adm_in_channels)")


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
    import comfy.sd
    check_sd2(model)
    key_map = comfy.lora.model_lora_keys_unet(model.model, {})
    sd_shapes = {k: v.shape for k, v in model.model.state_dict().items()}
    missing, wrong = [], []
    for mod in weights.modules():
        key = key_map.get(mod)
        if key is None:
            missing.append(mod)
            continue
        up, down = weights.lora[mod + ".lora_up.weight"], weights.lora[mod + ".lora_down.weight"]
        want = (up.shape[0],) + tuple(down.shape[1:])
        if tuple(sd_shapes[key]) != want:
            wrong.append(f"{key}: model {tuple(sd_shapes[key])}, DLoRAL {want}")
    if missing or wrong:
        raise ValueError("the DLoRAL weights do not fit this UNet (it is not the SD2.1-base DLoRAL was "
                         f"trained on): {len(missing)} modules missing, e.g. {missing[:3]}; "
                         f"{len(wrong)} shape mismatches, e.g. {wrong[:3]}")
    conv = weights.conv_in_weight
    have = sd_shapes.get("diffusion_model.input_blocks.0.0.weight")
    if have is None or have[0] != conv.shape[0] or tuple(have[2:]) != tuple(conv.shape[2:]):
        raise ValueError(f"DLoRAL conv_in {tuple(conv.shape)} does not fit this UNet's input conv {have}")
    check_base(_UnpatchedUNet(model), weights)
    patched, _ = comfy.sd.load_lora_for_models(model, None, weights.lora, 1.0, 0.0)
    if weights.base:   # base tensors the DLoRAL checkpoint changed: they replace the user's (on the clone)
        patched.add_patches({k: ("set", (v,)) for k, v in weights.base.items()}, 1.0)
    patched.add_object_patch("diffusion_model.input_blocks.0.0", _Conv8(conv, weights.conv_in_bias))
    return patched


def host_models(model, vae, positive, weights, sample_posterior=False, precision="auto"):
    """Adapt host MODEL / VAE / CONDITIONING + DLoRAL weights to the core's ``DLoRALModels``;
    ``precision`` (auto / fp16 / bf16 / fp32) sets the compute dtype by ``dloral.resolve_dtype``."""
    import comfy.model_management as mm
    if not positive or not torch.is_tensor(positive[0][0]):
        raise ValueError("positive: expected a CONDITIONING from an SD2.x text encoder")
    ctx = positive[0][0]
    if ctx.shape[-1] != 1024:
        raise ValueError(f"positive conditioning has width {ctx.shape[-1]}; DLoRAL needs the SD2.x "
                         "text encoder (width 1024)")
    patched = patch_model(model, weights)
    mm.load_models_gpu([patched])
    device = mm.get_torch_device()
    base = patched.model
    host_dtype = getattr(base, "manual_cast_dtype", None) or base.get_dtype()
    dtype = resolve_dtype(device, precision, host_dtype)
    if dtype == host_dtype or dtype == torch.float32:
        if dtype == torch.float32 and host_dtype != torch.float32 and device.type != "cpu":
            raise ValueError(f"precision fp32: the host runs this UNet in {host_dtype}; load it in float32 "
                             "(ComfyUI --force-fp32 or --fp32-unet) or choose auto, fp16 or bf16")
        run_dtype, amp = dtype, contextlib.nullcontext
    else:   # half precision other than the host's: inputs in the host dtype, matmuls/convs autocast
        run_dtype, amp = host_dtype, lambda: torch.autocast(device.type, dtype=dtype)
    unet_mod = base.diffusion_model

    def unet(x, t, context):
        with amp():
            return unet_mod(x.to(device, run_dtype), t.to(device, torch.float32),
                            context=context.to(device, run_dtype), transformer_options={}).float()

    def encode(x):
        pixels = ((x.float() + 1) / 2).clamp(0, 1).movedim(1, -1)
        if not sample_posterior:
            return vae.encode(pixels).to(device)
        fsm = vae.first_stage_model
        if not (hasattr(fsm, "encoder") and hasattr(fsm, "quant_conv")):
            raise ValueError("sample_posterior: this VAE does not expose its posterior; turn it off")
        mm.load_models_gpu([vae.patcher])
        with torch.no_grad():
            mom = fsm.quant_conv(fsm.encoder(x.to(vae.device, vae.vae_dtype))).float()
        mean, logvar = mom.chunk(2, 1)
        return mean.to(device), logvar.to(device)

    def decode(z):
        img = vae.decode(z.float())
        return img.reshape(-1, *img.shape[-3:]).movedim(-1, 1).to(device).float() * 2 - 1

    cfr = CFR.from_weights(weights).to(device, dtype)
    return DLoRALModels(unet=unet, encode=encode, decode=decode, cfr=cfr, context=ctx,
                        device=device, dtype=dtype)


def run_upscale(models, images, cfg, progress=None):
    """IMAGE (N, H, W, 3) -> IMAGE (N, 4H, 4W, 3); output allocated once, frames streamed per window."""
    n, h, w, _ = images.shape
    out = torch.empty(n, 4 * h, 4 * w, 3)
    frames = (images[i].movedim(-1, 0) for i in range(n))
    for i, f in enumerate(upscale_video(frames, models, cfg, progress)):
        out[i] = f.movedim(0, -1)
    return out


def load_checkpoint_models(checkpoint, prompt, weights, sample_posterior=False, precision="auto"):
    """The CLI's models: UNet, VAE and text encoder of a full SD2.1 checkpoint file loaded by the host,
    the prompt encoded by its text encoder, then :func:`host_models`."""
    import comfy.sd
    model, clip, vae = comfy.sd.load_checkpoint_guess_config(checkpoint, output_vae=True, output_clip=True)[:3]
    if clip is None or vae is None:
        raise ValueError(f"--checkpoint {checkpoint!r} has no text encoder or VAE; use a full SD2.1-base checkpoint")
    cond, pooled = clip.encode_from_tokens(clip.tokenize(prompt), return_pooled=True)
    return host_models(model, vae, [[cond, {"pooled_output": pooled}]], weights, sample_posterior, precision)
