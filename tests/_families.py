"""Tiny random-weight models of every diffusion family this pack hooks, built by the host.

One builder shared by the MagCache and NAG host tests. Call its functions only after the
``comfy_dir`` fixture has put the host on ``sys.path``; the registry itself needs no host.

How a tiny model is made (``build``):

1. The host's own config class for the family (``comfy.supported_models.<config>``)
   is instantiated with a tiny ``unet_config`` and asked for its model on the meta
   device: the state-dict keys and shapes therefore come from the host's own module
   classes (``comfy.ldm...``), never from a copy of them.
2. Every tensor is filled with seeded random values (fan-in scaled; see ``_fill``).
3. The state dict goes through ``comfy.sd.load_diffusion_model_state_dict``, the
   path ``UNETLoader`` uses on both trees: the host's detection reads the shapes and
   picks the config class. Detection hard-codes some values that cannot be tiny
   (Flux's 24 heads with a 128-wide rope, Chroma's 5120-wide guidance MLP, all of
   HiDream; in v0.3.64 also Flux/Chroma widths and Lumina2's dim: ``hardcoded_before_080``);
   for those keys, and only those (``Family.hardcoded``), the tiny value is
   written into the detected ``model_config.unet_config`` after the host detected the
   family and before the host builds the model. The host test checks that detection
   found the right class and that every other detected value equals the tiny config.
   Z-Image is the one exception to "detected": the host keys it on ``dim == 3840``
   exactly, so a tiny one is detected as Lumina2 and promoted to the ``ZImage``
   config (``Family.promote_from``), said so in its test. The host's SDXL match needs
   24 transformer blocks, so the tiny SDXL has Segmind-Vega's depths (config ``Segmind_Vega``,
   a subclass of ``SDXL`` with the same model class, conditioning and sampling).
4. Config keys that only newer trees' model classes take (``Family.optional``) are dropped
   where this tree's class rejects them.

``conditioning`` gives a CONDITIONING of the tiny model's text width (pooled output,
guidance, reference latents or I2V extras where the family reads them); ``latent`` an
empty LATENT of the family's channel count and rank; ``sample`` runs the host's
KSampler path (``nodes.common_ksampler``).

Patch points the host offers per family, measured by ``test_families_host.py::test_patch_points``
on both trees (v0.8.0 and v0.3.64 alike unless said). "dit": ``transformer_options["patches_replace"]["dit"]``
block replacement, called as ``fn(args, {"original_block": ...})`` (set with
``ModelPatcher.set_model_patch_replace(fn, "dit", block_type, i)``); "override":
``transformer_options["optimized_attention_override"]`` (``comfy/ldm/modules/attention.py`` ``wrap_attn``)
is called for the family's attention, so it sees q/k/v (not the module); "patches": the non-replace
``transformer_options["patches"][name]`` lists the forward reads (read from the source, not tested).

| family | host diffusion model (comfy.ldm.) | "dit" replace block types | override | "patches" |
|---|---|---|---|---|
| wan21_t2v/i2v/vace, wan22_* | wan.model.WanModel / VaceWanModel | double_block | yes | - |
| flux, flux_kontext, flux2 (0.8.0) | flux.model.Flux | double_block, single_block | yes | post_input |
| chroma, chroma_radiance | chroma(_radiance).model | double_block, single_block | yes | - |
| hidream | hidream.model.HiDreamImageTransformer2DModel | none | yes | - |
| qwen_image | qwen_image.model.QwenImageTransformer2DModel | double_block | yes | double_block |
| hunyuan_video | hunyuan_video.model.HunyuanVideo | double_block, single_block | yes | - |
| hunyuan_video15 (0.8.0) | hunyuan_video.model.HunyuanVideo | double_block (no single blocks) | yes | - |
| sd35 | modules.diffusionmodules.mmdit (OpenAISignatureMMDITWrapper) | double_block | yes | - |
| sd15, sdxl | modules.diffusionmodules.openaimodel.UNetModel | none; attn2 replace per ``Family.attn2_blocks`` | yes | attn1/attn2 patches |
| lumina2, z_image (0.8.0) | lumina.model.NextDiT | none | yes | noise_refiner, double_block (0.8.0 only) |
| ltxv | lightricks.model.LTXVModel | double_block | yes | - |
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import re
import time
from typing import Any, Callable, Optional

import torch

# The registry is plain data; host modules are imported inside the functions, so test
# modules can list the families at collection time without a ComfyUI tree.


@dataclasses.dataclass(frozen=True)
class Family:
    """A tiny model family: which host config must detect it, and how to feed it."""
    name: str
    config: str                      # comfy.supported_models class the host must pick
    unet_config: dict                # the tiny config (what the host builds)
    hardcoded: tuple = ()            # keys host detection hard-codes; tiny values replace them
    hardcoded_before_080: tuple = ()  # more keys that trees older than v0.8.0 hard-code
    text_dim: int = 0                # width of the CONDITIONING tensor
    pooled_dim: Optional[int] = None  # width of pooled_output, if the model reads one
    channels: int = 16               # latent channels
    video: bool = False              # 5-D latent [B, C, T, H, W]
    frames: int = 3                  # latent frames of a video family
    spatial: int = 8                 # latent H = W per unit (pixels for pixel-space models)
    guidance: Optional[float] = None  # Flux-style embedded guidance
    extra: Optional[Callable[["Family", int, int, int], dict]] = None  # more cond keys (batch, tokens, seed)
    promote_from: Optional[str] = None  # config the host detects instead (see module doc)
    optional: tuple = ()             # config keys older trees' model classes do not take
    state_dict: Optional[Callable[..., dict]] = None  # custom state-dict maker (tinywan)
    dit: tuple = ()                  # "dit" replace block types the forward offers
    attn2_blocks: tuple = ()         # UNet (block_name, id) with cross-attention (attn2 replace keys)


def _flux_base(**kw):
    cfg = dict(image_model="flux", in_channels=16, out_channels=16, vec_in_dim=32, context_in_dim=64,
               hidden_size=48, mlp_ratio=2.0, num_heads=2, depth=2, depth_single_blocks=2,
               axes_dim=[4, 10, 10], theta=10000, patch_size=2, qkv_bias=True, guidance_embed=True,
               txt_ids_dims=[], yak_mlp=False, txt_norm=False)
    cfg.update(kw)
    return cfg


FAMILIES: dict[str, Family] = {}


def _register(f: Family) -> Family:
    FAMILIES[f.name] = f
    return f


_register(Family(
    "flux", "Flux", _flux_base(), hardcoded=("num_heads", "axes_dim", "mlp_ratio"),
    text_dim=64, pooled_dim=32, guidance=3.5, dit=("double_block", "single_block"),
    hardcoded_before_080=("hidden_size", "context_in_dim", "out_channels"),
    optional=("txt_ids_dims", "yak_mlp", "txt_norm")))


_WAN = dict(image_model="wan2.1", model_type="t2v", dim=128, out_dim=16, num_heads=1, ffn_dim=256, num_layers=2,
            patch_size=(1, 2, 2), freq_dim=256, window_size=(-1, -1), qk_norm=True, cross_attn_norm=True,
            eps=1e-6, in_dim=16)


def _tinywan(variant: str, seed_offset: int = 0):
    def make(seed: int = 0, **dims) -> dict:
        from tinywan.build import random_state_dict as tinywan_state_dict
        return tinywan_state_dict(variant=variant, seed=seed + seed_offset, **dims)
    return make


def _i2v_extra(f: Family, batch: int, tokens: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed + 123)

    class _ClipVisionOutput:  # the host reads .penultimate_hidden_states
        pass

    clip = _ClipVisionOutput()
    clip.penultimate_hidden_states = torch.randn(1, 257, 1280, generator=g)
    return {"clip_vision_output": clip, "concat_latent_image":
            0.1 * torch.randn(1, 16, f.frames, f.spatial, f.spatial, generator=g)}


# Wan: text width 4096 is fixed (the host does not detect it); dim a multiple of 128.
_register(Family("wan21_t2v", "WAN21_T2V", _WAN, text_dim=4096, video=True, state_dict=_tinywan("t2v"),
                 dit=("double_block",)))
_register(Family("wan21_i2v", "WAN21_I2V", dict(_WAN, model_type="i2v", in_dim=36), text_dim=4096, video=True,
                 state_dict=_tinywan("i2v"), extra=_i2v_extra, dit=("double_block",)))
_register(Family("wan21_vace", "WAN21_Vace", dict(_WAN, model_type="vace", vace_in_dim=96, vace_layers=1),
                 text_dim=4096, video=True, dit=("double_block",)))
_register(Family("wan22_ti2v_5b", "WAN22_T2V", dict(_WAN, in_dim=48, out_dim=48), text_dim=4096, channels=48,
                 video=True, dit=("double_block",)))
# Wan2.2 A14B: two experts with the Wan2.1 14B layout (T2V), told apart by their weights only.
_register(Family("wan22_a14b_high", "WAN21_T2V", _WAN, text_dim=4096, video=True,
                 state_dict=_tinywan("t2v", 1000), dit=("double_block",)))
_register(Family("wan22_a14b_low", "WAN21_T2V", _WAN, text_dim=4096, video=True,
                 state_dict=_tinywan("t2v", 2000), dit=("double_block",)))

def _kontext_extra(f: Family, batch: int, tokens: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed + 7)
    return {"reference_latents": [torch.randn(1, f.channels, f.spatial, f.spatial, generator=g)]}


_register(dataclasses.replace(FAMILIES["flux"], name="flux_kontext", extra=_kontext_extra))

_register(Family(
    "flux2", "Flux2",
    _flux_base(image_model="flux2", in_channels=128, out_channels=128, vec_in_dim=None, mlp_ratio=3.0,
               axes_dim=[6, 6, 6, 6], theta=2000, patch_size=1, qkv_bias=False, global_modulation=True,
               mlp_silu_act=True, ops_bias=False, default_ref_method="index", ref_index_scale=10.0,
               txt_ids_dims=[3]),
    hardcoded=("num_heads", "axes_dim", "mlp_ratio"), text_dim=64, channels=128, guidance=4.0,
    dit=("double_block", "single_block")))

_CHROMA = dict(image_model="chroma", in_channels=64, out_channels=64, context_in_dim=64, hidden_size=48,
               mlp_ratio=2.0, num_heads=2, depth=2, depth_single_blocks=2, axes_dim=[4, 10, 10],
               theta=10000, patch_size=2, qkv_bias=True, in_dim=64, out_dim=48, hidden_dim=64, n_layers=2,
               txt_ids_dims=[], vec_in_dim=None)
_register(Family(
    "chroma", "Chroma", _CHROMA,
    hardcoded=("num_heads", "axes_dim", "mlp_ratio", "out_dim", "hidden_dim", "n_layers"),
    text_dim=64, dit=("double_block", "single_block"), hardcoded_before_080=("hidden_size", "context_in_dim"),
    optional=("txt_ids_dims", "vec_in_dim")))

_register(Family(
    "chroma_radiance", "ChromaRadiance",
    dict(_CHROMA, image_model="chroma_radiance", in_channels=3, out_channels=3, patch_size=16,
         nerf_hidden_size=16, nerf_mlp_ratio=2, nerf_depth=2, nerf_max_freqs=8, nerf_tile_size=512,
         nerf_final_head_type="conv", nerf_embedder_dtype=torch.float32, use_x0=False),
    hardcoded=("num_heads", "axes_dim", "mlp_ratio", "out_dim", "hidden_dim", "n_layers",
               "nerf_hidden_size", "nerf_mlp_ratio", "nerf_depth", "nerf_tile_size"),
    hardcoded_before_080=("hidden_size", "context_in_dim"),
    text_dim=64, channels=3, spatial=32, dit=("double_block", "single_block"),
    optional=("txt_ids_dims", "vec_in_dim", "use_x0")))

_register(Family(
    "qwen_image", "QwenImage",
    dict(image_model="qwen_image", in_channels=64, num_layers=2, patch_size=2, out_channels=16,
         attention_head_dim=16, num_attention_heads=2, joint_attention_dim=64, axes_dims_rope=(4, 6, 6)),
    hardcoded=("patch_size", "out_channels", "attention_head_dim", "num_attention_heads",
               "joint_attention_dim", "axes_dims_rope"),
    text_dim=64, video=True, frames=1, dit=("double_block",)))

_HV = dict(image_model="hunyuan_video", in_channels=16, patch_size=[1, 2, 2], out_channels=16, vec_in_dim=32,
           axes_dim=[8, 8, 8], meanflow=False, context_in_dim=64, hidden_size=48, mlp_ratio=2.0, num_heads=2,
           depth=2, depth_single_blocks=2, theta=256, qkv_bias=True, byt5=False, guidance_embed=True,
           use_cond_type_embedding=False, vision_in_dim=None, meanflow_sum=False)
_register(Family(
    "hunyuan_video", "HunyuanVideo", _HV, hardcoded=("vec_in_dim", "axes_dim", "mlp_ratio", "num_heads"),
    text_dim=64, pooled_dim=32, video=True, guidance=6.0, dit=("double_block", "single_block"),
    optional=("byt5", "meanflow", "use_cond_type_embedding", "vision_in_dim", "meanflow_sum")))

_register(Family(
    "hunyuan_video15", "HunyuanVideo15",
    dict(_HV, in_channels=65, out_channels=32, patch_size=[1, 1, 1], vec_in_dim=None, depth_single_blocks=0,
         guidance_embed=False, use_cond_type_embedding=True, vision_in_dim=1152, meanflow_sum=True),
    hardcoded=("axes_dim", "mlp_ratio", "num_heads"),
    text_dim=64, channels=32, video=True, dit=("double_block",)))


def _hidream_extra(f: Family, batch: int, tokens: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed + 11)
    n_llama = max(f.unet_config["llama_layers"]) + 1
    return {"conditioning_llama3": torch.randn(batch, n_llama, tokens, f.unet_config["caption_channels"][1],
                                               generator=g)}


_HIDREAM = dict(image_model="hidream", attention_head_dim=16, axes_dims_rope=[4, 6, 6], caption_channels=[64, 32],
                max_resolution=[128, 128], in_channels=16, llama_layers=[0, 1, 1, 1], num_attention_heads=2,
                num_routed_experts=2, num_activated_experts=1, num_layers=2, num_single_layers=2,
                out_channels=16, patch_size=2, text_emb_dim=32)
# HiDream detection sets every value by hand (no shape is read): all are "hard-coded".
_register(Family(
    "hidream", "HiDream", _HIDREAM, hardcoded=tuple(k for k in _HIDREAM if k != "image_model"),
    text_dim=64, pooled_dim=32, extra=_hidream_extra))

_register(Family(
    "sd35", "SD3",
    dict(in_channels=16, patch_size=2, out_channels=16, depth=2, input_size=None, adm_in_channels=32,
         context_embedder_config={"target": "torch.nn.Linear", "params": {"in_features": 64, "out_features": 128}},
         num_patches=256, pos_embed_max_size=16, qk_norm="rms", pos_embed_scaling_factor=None,
         x_block_self_attn_layers=[0]),
    text_dim=64, pooled_dim=32, dit=("double_block",)))

_UNET = dict(use_checkpoint=False, image_size=32, use_spatial_transformer=True, legacy=False,
             in_channels=4, out_channels=4, model_channels=320, use_temporal_resblock=False,
             use_temporal_attention=False)
_register(Family(
    "sd15", "SD15",
    dict(_UNET, adm_in_channels=None, num_res_blocks=[1], channel_mult=[1], transformer_depth=[1],
         transformer_depth_output=[1, 1], transformer_depth_middle=1, use_linear_in_transformer=False,
         context_dim=768),
    text_dim=768, channels=4, attn2_blocks=(("input", 1), ("middle", 0), ("output", 0), ("output", 1))))

_register(Family(
    "sdxl", "Segmind_Vega",
    dict(_UNET, num_classes="sequential", adm_in_channels=2816, num_res_blocks=[2, 2, 2], channel_mult=[1, 1, 1],
         transformer_depth=[0, 0, 1, 1, 2, 2], transformer_depth_output=[0, 0, 0, 1, 1, 1, 1, 1, 1],
         transformer_depth_middle=1, use_linear_in_transformer=True, context_dim=2048),
    text_dim=2048, pooled_dim=1280, channels=4,
    attn2_blocks=(("input", 4), ("input", 5), ("input", 7), ("input", 8), ("middle", 0), ("output", 0),
                  ("output", 1), ("output", 2), ("output", 3), ("output", 4), ("output", 5))))

def _mask_extra(f: Family, batch: int, tokens: int, seed: int) -> dict:
    """The text attention mask that LLM/T5-gemma style encoders report (all tokens real)."""
    return {"attention_mask": torch.ones(batch, tokens, dtype=torch.long)}


_LUMINA = dict(image_model="lumina2", patch_size=2, in_channels=16, dim=64, cap_feat_dim=32, n_layers=2,
               qk_norm=True, n_heads=2, n_kv_heads=2, axes_dims=[8, 12, 12], axes_lens=[300, 512, 512],
               rope_theta=10000.0, ffn_dim_multiplier=1.0, multiple_of=16, n_refiner_layers=1)
_register(Family(
    "lumina2", "Lumina2", _LUMINA,
    hardcoded=("n_heads", "n_kv_heads", "axes_dims", "axes_lens", "rope_theta", "ffn_dim_multiplier",
               "multiple_of", "n_refiner_layers"),
    text_dim=32, hardcoded_before_080=("dim",), optional=("rope_theta",), extra=_mask_extra))

_register(Family(
    "z_image", "ZImage",
    dict(_LUMINA, dim=256, axes_dims=[32, 48, 48], rope_theta=256.0, z_image_modulation=True, time_scale=1000.0, pad_tokens_multiple=32),
    hardcoded=("n_heads", "n_kv_heads", "axes_dims", "axes_lens", "rope_theta", "ffn_dim_multiplier",
               "multiple_of", "n_refiner_layers", "z_image_modulation", "time_scale", "pad_tokens_multiple"),
    text_dim=32, promote_from="Lumina2", extra=_mask_extra))

_register(Family(
    "ltxv", "LTXV",
    dict(image_model="ltxv", num_layers=2, attention_head_dim=4, cross_attention_dim=128, in_channels=128,
         caption_channels=64),
    hardcoded=("in_channels", "caption_channels"),
    text_dim=64, channels=128, video=True, spatial=4, dit=("double_block",),
    extra=_mask_extra))


# ---------------------------------------------------------------------------------------
# building

def host_version() -> str:
    """The host tree's version string (``comfyui_version.__version__``), for skip reasons."""
    try:
        import comfyui_version
        return str(comfyui_version.__version__)
    except ImportError:
        return "unknown"


def config_class(family: str):
    """The host's config class for ``family``, or None when this host tree lacks it."""
    import comfy.supported_models
    return getattr(comfy.supported_models, FAMILIES[family].config, None)


def host_version_tuple() -> tuple:
    try:
        return tuple(int(x) for x in host_version().split(".")[:3])
    except ValueError:
        return (0,)


def hardcoded(family: str) -> tuple:
    """The config keys this tree's detection hard-codes for ``family`` (made tiny after detection)."""
    f = FAMILIES[family]
    return f.hardcoded + (f.hardcoded_before_080 if host_version_tuple() < (0, 8, 0) else ())


def present(family: str) -> bool:
    import comfy.supported_models
    f = FAMILIES[family]
    return config_class(family) is not None and (
        f.promote_from is None or getattr(comfy.supported_models, f.promote_from, None) is not None)


def _fill(name: str, shape, g: torch.Generator) -> torch.Tensor:
    """A seeded value for parameter ``name``: fan-in scaled weights, small biases,
    norm scales near 1, modulation-like tensors of order 1/sqrt(width)."""
    if len(shape) == 0 or math.prod(shape) == 0:
        return torch.zeros(shape)
    if "modulation" in name or "scale_shift_table" in name:
        return torch.randn(shape, generator=g) / math.sqrt(shape[-1])
    if len(shape) == 1:
        if name.endswith("bias"):
            return 0.02 * torch.randn(shape, generator=g)
        return 1.0 + 0.1 * torch.randn(shape, generator=g)
    fan_in = math.prod(shape[1:])
    return torch.randn(shape, generator=g) / math.sqrt(fan_in)


def meta_model(family: str, unet_config: Optional[dict] = None):
    """The host's model for ``family`` built from its tiny config on the meta device."""
    f = FAMILIES[family]
    cls = config_class(family)
    mc = cls(dict(unet_config or f.unet_config))
    mc.set_inference_dtype(torch.float32, None)
    with torch.device("meta"):
        return mc.get_model({})


_UNEXPECTED = re.compile(r"unexpected keyword argument '(\w+)'")


def tree_config(family: str, **dims) -> dict:
    """The tiny config this host tree takes: ``unet_config`` with ``dims`` applied, less the
    family's ``optional`` keys that this tree's model class rejects (newer features)."""
    f = FAMILIES[family]
    cfg = dict(f.unet_config, **dims)
    if f.state_dict is not None:
        return cfg
    while True:
        try:
            meta_model(family, cfg)
            return cfg
        except TypeError as e:
            m = _UNEXPECTED.search(str(e))
            if m is None or m.group(1) not in f.optional or m.group(1) not in cfg:
                raise
            del cfg[m.group(1)]


def random_state_dict(family: str, seed: int = 0, **dims) -> dict:
    """A random state dict in the host's key layout for ``family`` (tiny dims, seeded).

    ``dims`` replace entries of the family's tiny ``unet_config``."""
    f = FAMILIES[family]
    if f.state_dict is not None:
        return f.state_dict(seed=seed, **dims)
    cfg = tree_config(family, **dims)
    shapes = {k: tuple(v.shape) for k, v in meta_model(family, cfg).diffusion_model.state_dict().items()}
    g = torch.Generator().manual_seed(int(seed))
    return {k: _fill(k, s, g).contiguous() for k, s in shapes.items()}


@contextlib.contextmanager
def _tiny_detection(family: str, cfg: dict, seen: dict):
    """While the host loads ``family``: run its real detection, record what it found in
    ``seen``, then give the detected config the tiny values of the hard-coded keys."""
    import comfy.model_detection
    import comfy.supported_models
    f = FAMILIES[family]
    real = comfy.model_detection.model_config_from_unet

    def model_config_from_unet(state_dict, unet_key_prefix, *a, **kw):
        mc = real(state_dict, unet_key_prefix, *a, **kw)
        seen["detected"] = type(mc).__name__ if mc is not None else None
        seen["unet_config"] = dict(mc.unet_config) if mc is not None else None
        if mc is None:
            return None
        if f.promote_from is not None and type(mc).__name__ == f.promote_from:
            mc = getattr(comfy.supported_models, f.config)(dict(mc.unet_config))
        for k in hardcoded(family):
            if k in cfg:
                mc.unet_config[k] = cfg[k]
            else:
                mc.unet_config.pop(k, None)
        return mc

    comfy.model_detection.model_config_from_unet = model_config_from_unet
    try:
        yield
    finally:
        comfy.model_detection.model_config_from_unet = real


def build(family: str, seed: int = 0, **dims):
    """A tiny random ``family`` model loaded by the host: a ModelPatcher.

    ``model.model.diffusion_model`` is the host's class and ``model.model.model_config``
    the config the host detected; ``model.atelier_family`` holds the family name,
    ``model.atelier_detection`` what detection reported before the hard-coded keys
    were made tiny, ``model.atelier_build_s`` the seconds building took."""
    import comfy.sd
    t0 = time.perf_counter()
    f = FAMILIES[family]
    if not present(family):
        raise LookupError(f"family {family!r} ({f.config}) is not in ComfyUI {host_version()}")
    sd = random_state_dict(family, seed=seed, **dims)
    cfg = tree_config(family, **dims)
    seen: dict = {}
    with _tiny_detection(family, cfg, seen):
        model = comfy.sd.load_diffusion_model_state_dict(dict(sd))
    if model is None:
        raise AssertionError(f"the host did not detect the tiny {family} state dict ({seen})")
    model.atelier_family = family
    model.atelier_detection = seen
    model.atelier_config = cfg
    model.atelier_build_s = time.perf_counter() - t0
    return model


# ---------------------------------------------------------------------------------------
# feeding

def conditioning(family: str, batch: int = 1, tokens: int = 8, seed: int = 0, **extra) -> list:
    """A CONDITIONING list for the tiny ``family`` model: random text of its width,
    plus pooled output, guidance and family extras where the model reads them."""
    f = FAMILIES[family]
    g = torch.Generator().manual_seed(int(seed))
    opts: dict[str, Any] = {}
    ctx = torch.randn(batch, tokens, f.text_dim, generator=g)
    # text encoders always report a pooled output; None where the family has none
    opts["pooled_output"] = torch.randn(batch, f.pooled_dim, generator=g) if f.pooled_dim else None
    if f.guidance is not None:
        opts["guidance"] = f.guidance
    if f.extra is not None:
        opts.update(f.extra(f, batch, tokens, seed))
    opts.update(extra)
    return [[ctx, opts]]


def latent(family: str, batch: int = 1, size: int = 1, frames: Optional[int] = None) -> dict:
    """An empty LATENT for ``family``: its channel count, ``size`` x the family's unit
    edge, and ``frames`` latent frames for video families."""
    f = FAMILIES[family]
    s = f.spatial * size
    frames = f.frames if frames is None else frames
    shape = (batch, f.channels, frames, s, s) if f.video else (batch, f.channels, s, s)
    return {"samples": torch.zeros(shape)}


def sample(model, family: Optional[str] = None, steps: int = 2, cfg: float = 1.0, seed: int = 0,
           positive=None, negative=None, latent_image=None, sampler: str = "euler",
           scheduler: str = "simple", **kw) -> torch.Tensor:
    """Run the host's KSampler path on a tiny family model; the output latent tensor."""
    import nodes as host_nodes
    family = family or model.atelier_family
    positive = positive if positive is not None else conditioning(family, seed=seed + 1)
    negative = negative if negative is not None else conditioning(family, seed=seed + 2)
    latent_image = latent_image if latent_image is not None else latent(family)
    (out,) = host_nodes.common_ksampler(model, seed, steps, cfg, sampler, scheduler,
                                        positive, negative, latent_image, **kw)
    return out["samples"]


def _norm(v):
    """Config values compared as detection writes them (tuples and lists alike)."""
    if isinstance(v, (tuple, list)):
        return [_norm(x) for x in v]
    return v


def detection_diff(model) -> dict:
    """Keys whose detected value differs from the tiny config: ``{key: (detected, tiny)}``."""
    det = model.atelier_detection["unet_config"]
    return {k: (det.get(k), v) for k, v in model.atelier_config.items() if _norm(det.get(k)) != _norm(v)}
