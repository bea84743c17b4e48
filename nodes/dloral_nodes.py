"""DLoRAL nodes: load/convert the official weights and upscale IMAGE frames (a batch is a video) ×4.

The SD2.1-base UNet, VAE and text encoder are the user's own, loaded by the host. The DLoRAL weights
reach the UNet through sanctioned host APIs only, on a clone: the merged LoRA deltas through the host's
LoRA loader (``comfy.sd.load_lora_for_models``, which clones and ``add_patches``) and the 8-channel
input convolution through ``add_object_patch``. The input model is never modified. The UNet is then
called directly at timestep 1 (DLoRAL's one step, ``z0 = fused - eps``), not through a sampler.

Precision (``dloral.resolve_dtype``): ``auto`` is float32 on CPU and, on a GPU, the dtype the host runs the
UNet in (fp16 or bf16 for SD2.x on current GPUs). ``fp16``/``bf16`` force half precision: when that differs
from the host's UNet dtype the UNet runs under ``torch.autocast``; CFR and the latents run in that dtype;
the VAE keeps the host's dtype.
"""
import contextlib
import logging
import os

import torch
import torch.nn.functional as F

from ..dloral import (CFR, COLOR_FIXES, PRECISIONS, DLoRALConfig, DLoRALModels, convert_file, load_weights,
                      resolve_dtype, upscale_video)
from ._host import progress_bar, throw_if_interrupted

log = logging.getLogger("atelier")

FOLDER = "dloral"
EXTS = {".pkl", ".pth", ".safetensors"}
SD2 = {"context_dim": 1024, "model_channels": 320, "use_linear_in_transformer": True}


def _register_folder():
    import folder_paths
    if FOLDER not in folder_paths.folder_names_and_paths:
        folder_paths.folder_names_and_paths[FOLDER] = (
            [os.path.join(folder_paths.models_dir, FOLDER)], set(EXTS))
    return folder_paths


def _files(exts):
    fp = _register_folder()
    return sorted(f for f in fp.get_filename_list(FOLDER) if os.path.splitext(f)[1].lower() in exts) or [""]


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


def patch_model(model, weights):
    """A clone of ``model`` with DLoRAL's LoRA deltas and 8-channel conv_in; the input is untouched."""
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
    patched, _ = comfy.sd.load_lora_for_models(model, None, weights.lora, 1.0, 0.0)
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


class AtelierDLoRALLoader:
    DESCRIPTION = ("Load DLoRAL weights: a converted .safetensors (small, fast) or the official model.pkl "
                   "(opened safely with weights_only, converted in memory). Files live in models/dloral.")
    CATEGORY = "Atelier/Video"
    RETURN_TYPES = ("DLORAL",)
    RETURN_NAMES = ("dloral",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "weights_name": (_files(EXTS), {"tooltip": "DLoRAL weights in models/dloral: a .safetensors made by "
                                                        "'Atelier DLoRAL Convert' or the official model.pkl."}),
        }}

    def load(self, weights_name):
        fp = _register_folder()
        path = fp.get_full_path(FOLDER, weights_name) if weights_name else None
        if not path:
            raise ValueError(f"weights_name: {weights_name!r} not found in models/{FOLDER}")
        return (load_weights(path),)


class AtelierDLoRALConvert:
    DESCRIPTION = ("Convert the official DLoRAL model.pkl (3.6 GB, opened with weights_only; nothing in it runs) "
                   "to a small .safetensors in models/dloral: merged LoRA deltas in ComfyUI's SD2 UNet naming, "
                   "the 8-channel input conv and the CFR weights.")
    CATEGORY = "Atelier/Video"
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("path",)
    FUNCTION = "convert"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "pkl_name": (_files({".pkl", ".pth"}), {"tooltip": "The official DLoRAL checkpoint in models/dloral."}),
            "output_name": ("STRING", {"default": "dloral.safetensors",
                                       "tooltip": "File name of the converted weights (written to models/dloral)."}),
            "precision": (["fp16", "fp32"], {"default": "fp16",
                                             "tooltip": "Storage precision of the converted tensors (fp16 halves the size)."}),
        }}

    def convert(self, pkl_name, output_name, precision):
        fp = _register_folder()
        src = fp.get_full_path(FOLDER, pkl_name) if pkl_name else None
        if not src:
            raise ValueError(f"pkl_name: {pkl_name!r} not found in models/{FOLDER}")
        name = os.path.basename(output_name.strip())
        if not name.endswith(".safetensors"):
            raise ValueError(f"output_name must end with .safetensors, got {output_name!r}")
        dst = os.path.join(fp.get_folder_paths(FOLDER)[0], name)
        convert_file(src, dst, dtype=torch.float16 if precision == "fp16" else torch.float32)
        log.info("atelier: DLoRAL weights converted to %s", dst)
        return {"ui": {"text": [dst]}, "result": (dst,)}


class AtelierDLoRALUpscale:
    DESCRIPTION = ("DLoRAL one-step video super-resolution ×4 on an SD2.1-base model. Every input frame gets "
                   "an output frame (frame 0 is paired with itself); deterministic; frames are processed in "
                   "windows so memory does not grow with the clip length.")
    CATEGORY = "Atelier/Video"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    FUNCTION = "upscale"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "Stable Diffusion 2.1-base (512, epsilon) UNet, e.g. from Load Checkpoint."}),
            "vae": ("VAE", {"tooltip": "The SD2.1 VAE (from the same checkpoint)."}),
            "positive": ("CONDITIONING", {"tooltip": "Prompt from the SD2.1 text encoder; a fixed quality prompt "
                                                     "such as 'high quality, detailed, clean, natural' works well."}),
            "dloral": ("DLORAL", {"tooltip": "Weights from 'Atelier DLoRAL Load Weights'."}),
            "images": ("IMAGE", {"tooltip": "Video frames (a batch is a video, in order); all the same size."}),
            "tile_size": ("INT", {"default": 768, "min": 0, "max": 4096, "step": 8,
                                  "tooltip": "Tile size in output-side pixels of the ×4 frame (768 = 96 latent px, "
                                             "the official default); frames above tile_size² pixels are tiled. "
                                             "0 = never tile."}),
            "tile_overlap": ("INT", {"default": 256, "min": 0, "max": 2048, "step": 8,
                                     "tooltip": "Overlap of neighbouring tiles in pixels, blended smoothly."}),
            "color_fix": (list(COLOR_FIXES), {"default": "adain",
                                              "tooltip": "Colour correction against the upsampled input: adain "
                                                         "(mean/std, official default), wavelet (keeps low "
                                                         "frequencies of the input) or none."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF,
                             "tooltip": "Seed of VAE posterior sampling; only used when sample_posterior is on "
                                        "(otherwise the posterior mean is used and the output is deterministic)."}),
            "window": ("INT", {"default": 4, "min": 1, "max": 64,
                               "tooltip": "Frames processed as one batch. Larger is faster on a GPU, uses more memory; "
                                          "the result does not depend on it."}),
        }, "optional": {
            "vae_tile": ("INT", {"default": 0, "min": 0, "max": 512, "step": 8,
                                 "tooltip": "VAE decode tile in latent pixels (0 = let the host VAE manage memory)."}),
            "process_size": ("INT", {"default": 512, "min": 64, "max": 2048, "step": 8,
                                     "tooltip": "Frames whose ×4 short side is below this are upscaled to it first "
                                                "and the result resized back to exactly ×4 (512: the size SD2.1-base "
                                                "and DLoRAL were trained at)."}),
            "sample_posterior": ("BOOLEAN", {"default": False,
                                             "tooltip": "Sample the VAE posterior with the seed, like the official "
                                                        "code (which does it unseeded); off = posterior mean."}),
            "precision": (list(PRECISIONS), {"default": "auto",
                                             "tooltip": "Compute precision. auto: fp32 on CPU; on a GPU the dtype "
                                                        "ComfyUI loaded the UNet in (fp16 or bf16). fp16 / bf16 force "
                                                        "half precision (also on CPU, slowly); fp32 needs a UNet "
                                                        "loaded in fp32 on a GPU."}),
        }}

    def upscale(self, model, vae, positive, dloral, images, tile_size, tile_overlap, color_fix, seed, window,
                vae_tile=0, process_size=512, sample_posterior=False, precision="auto"):
        if images.dim() != 4 or images.shape[-1] != 3:
            raise ValueError(f"images: expected an IMAGE batch (N, H, W, 3), got {tuple(images.shape)}")
        if tile_size % 8 or tile_overlap % 8:
            raise ValueError(f"tile_size ({tile_size}) and tile_overlap ({tile_overlap}) must be multiples of 8")
        if tile_size and tile_overlap >= tile_size:
            raise ValueError(f"tile_overlap ({tile_overlap}) must be smaller than tile_size ({tile_size})")
        cfg = DLoRALConfig(tile=tile_size // 8, overlap=tile_overlap // 8, color_fix=color_fix, window=window,
                           seed=seed, sample_posterior=sample_posterior, vae_tile=vae_tile,
                           process_size=process_size,
                           vae_overlap=min(16, max(vae_tile // 4, 0)))
        models = host_models(model, vae, positive, dloral, sample_posterior, precision)
        n = images.shape[0]
        pbar = progress_bar(n)

        def progress(i):
            throw_if_interrupted()
            pbar.update_absolute(i + 1, n)

        with torch.inference_mode():
            return (run_upscale(models, images, cfg, progress),)


NODE_CLASS_MAPPINGS = {
    "AtelierDLoRALLoader": AtelierDLoRALLoader,
    "AtelierDLoRALConvert": AtelierDLoRALConvert,
    "AtelierDLoRALUpscale": AtelierDLoRALUpscale,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "AtelierDLoRALLoader": "Atelier DLoRAL Load Weights",
    "AtelierDLoRALConvert": "Atelier DLoRAL Convert",
    "AtelierDLoRALUpscale": "Atelier DLoRAL Video Upscale ×4",
}
