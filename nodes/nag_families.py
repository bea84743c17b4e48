"""Which families NAG serves and how: read from the host model at node time.

| family (host config) | diffusion model (comfy.ldm.) | where NAG acts | hook |
|---|---|---|---|
| Wan2.1 T2V/I2V/FLF2V/VACE, Wan2.2 A14B (both experts), TI2V-5B | wan.model.WanModel / VaceWanModel | every ``cross_attn`` (VACE: ``vace_blocks`` too) | ``nag_hook`` |
| SD1.5, SDXL (and other UNets with ``attn2``) | modules.diffusionmodules.openaimodel.UNetModel | every ``attn2`` | ``nag_hook`` |
| Flux, Flux-Kontext, Flux2, Chroma, Chroma Radiance, Qwen-Image, SD3.5 | flux / chroma / chroma_radiance / qwen_image / mmdit | joint attention, text first | ``nag_joint_hook`` |
| HunyuanVideo, HunyuanVideo-1.5 | hunyuan_video.model.HunyuanVideo | joint attention, image first; ``txt_in`` split | ``nag_joint_hook`` |
| Lumina2, Z-Image (ComfyUI v0.8.0 and later) | lumina.model.NextDiT | joint attention, text first; the negative caption its own stream (embedder pads, refiner, RoPE) | ``nag_joint_hook`` |
| HiDream | hidream.model.HiDreamImageTransformer2DModel | joint attention, image first; T5 and Llama text in three ``[+, -]`` segments | ``nag_joint_hook`` |
| LTX-Video (LTXV) | lightricks.model.LTXVModel | every ``attn2`` (cross-attention, masked text) | ``nag_hook`` |

Refused with one error naming the family: Lumina2 on ComfyUI before v0.8.0 (its NextDiT gives each row its own
caption length from the text mask and rebuilds the joint sequence per row), LTX-2 (``LTXAVModel``: audio and
video streams), and anything else.
"""
from dataclasses import dataclass
from typing import Callable, Optional

JOINT_TEXT_FIRST = {
    ("comfy.ldm.flux.model", "Flux"): "txt_in",
    ("comfy.ldm.chroma.model", "Chroma"): "txt_in",
    ("comfy.ldm.chroma_radiance.model", "ChromaRadiance"): "txt_in",
    ("comfy.ldm.qwen_image.model", "QwenImageTransformer2DModel"): "txt_in",
    ("comfy.ldm.modules.diffusionmodules.mmdit", "OpenAISignatureMMDITWrapper"): "context_embedder",
}
NEXTDIT = ("comfy.ldm.lumina.model", "NextDiT")
JOINT_IMAGE_FIRST = {
    ("comfy.ldm.hunyuan_video.model", "HunyuanVideo"): "txt_in.input_embedder",
}
HIDREAM = ("comfy.ldm.hidream.model", "HiDreamImageTransformer2DModel")
UNET = ("comfy.ldm.modules.diffusionmodules.openaimodel", "UNetModel")
LTXV = ("comfy.ldm.lightricks.model", "LTXVModel")
WAN_MODULE = "comfy.ldm.wan.model"

WHY_NOT = {
    "LTXAVModel": "LTX-2 runs audio and video streams with their own cross-attentions; not supported yet",
    "NextDiT": "this ComfyUI's NextDiT (before v0.8.0) gives each row its own caption length from the text "
               "mask and rebuilds the joint sequence row by row; Atelier NAG guides Lumina2 / Z-Image on "
               "ComfyUI v0.8.0 and later",
}


@dataclass(frozen=True)
class NAGFamily:
    """How NAG hooks one family.

    Attributes:
        name: the host's model config class (e.g. ``Flux``, ``QwenImage``, ``WAN21_T2V``).
        kind: ``wan`` / ``unet`` / ``ltxv`` (cross-attention) or ``joint``.
        trim_padding: the NAG negative keeps only the tokens its encoder's mask marks real (the family's
            cross-attention masks the prompt's padding).
        text_first: joint families: text before image in the joint sequence.
        split_text_in: joint families whose text embedder is not token-wise (HunyuanVideo's refiner).
        caption_stream: joint families that refine the caption alone and place the image after it (NextDiT:
            Lumina2, Z-Image): the negative caption runs as its own stream (``nag.CaptionStreams``).
        llama_stream: HiDream: the NAG negative's per-layer Llama states (``conditioning_llama3``) ride with the
            positive's, and the joint text part is three ``[+, -]`` segments (``nag.TextSegments``).
        width: ``model -> `` the text width a NAG negative must have.
    """
    name: str
    kind: str
    text_first: bool = True
    split_text_in: bool = False
    trim_padding: bool = False
    caption_stream: bool = False
    llama_stream: bool = False
    width: Optional[Callable] = None


def _linear_in(dm, path):
    mod = dm
    for part in path.split("."):
        mod = getattr(mod, part, None)
    w = getattr(mod, "in_features", None)
    if w is None:   # SD3 without a context embedder (Identity): the blocks' context projections
        raise ValueError(f"input 'model': cannot read the text width of {type(dm).__name__} ({path}).")
    return int(w)


def detect(model) -> NAGFamily:
    """The NAG family of a host ModelPatcher; ValueError naming the family when NAG cannot guide it."""
    dm = model.get_model_object("diffusion_model")
    cls = type(dm)
    key = (cls.__module__, cls.__name__)
    config = getattr(getattr(model, "model", None), "model_config", None)
    name = type(config).__name__ if config is not None else cls.__name__
    if cls.__module__ == WAN_MODULE:
        return NAGFamily(name, "wan")
    if key == UNET:
        return NAGFamily(name, "unet", width=lambda d: _unet_width(d))
    if key == LTXV:
        return NAGFamily(name, "ltxv", trim_padding=True,
                         width=lambda d: _linear_in(d, "caption_projection.linear_1"))
    if key == NEXTDIT and hasattr(dm, "pad_tokens_multiple"):    # v0.8.0's one caption length for all rows
        return NAGFamily(name, "joint", caption_stream=True, width=lambda d: _linear_in(d, "cap_embedder.1"))
    if key == HIDREAM:      # the T5 text's width (the last caption projection)
        return NAGFamily(name, "joint", text_first=False, llama_stream=True,
                         width=lambda d: int(d.caption_projection[-1].linear.in_features))
    for table, first in ((JOINT_TEXT_FIRST, True), (JOINT_IMAGE_FIRST, False)):
        if key in table:
            path = table[key]
            return NAGFamily(name, "joint", text_first=first, split_text_in=not first,
                             width=lambda d, p=path: _linear_in(d, p))
    why = WHY_NOT.get(cls.__name__, "NAG has no hook for this architecture")
    raise ValueError(f"input 'model' is {name} ({cls.__name__}); NAG cannot guide this family: {why}. "
                     "Supported: Wan2.1/2.2 (incl. VACE), SD1.5, SDXL, Flux, Flux-Kontext, Flux2, Chroma, "
                     "Chroma Radiance, Qwen-Image, HunyuanVideo (1.0, 1.5), SD3.5, HiDream, LTX-Video, Lumina2 / "
                     "Z-Image (ComfyUI v0.8.0+).")


def _unet_width(dm):
    for n, mod in dm.named_modules():
        if n.endswith(".attn2") and hasattr(mod, "to_k"):
            return int(mod.to_k.in_features)
    raise ValueError(f"input 'model' ({type(dm).__name__}) has no cross-attention (attn2) to guide.")
