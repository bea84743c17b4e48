"""NAG node: negative prompts at CFG 1 (and with CFG) inside one forward pass, for every family
``nag_families`` serves (Wan, SD1.5/SDXL, LTX-Video, Flux family, Chroma, Qwen-Image, HunyuanVideo, SD3.5,
HiDream, Lumina2 / Z-Image)."""
import logging

import torch

from comfy_api.latest import io

from ..nag import SETTINGS, check_wan_model, config_from_inputs
from ..nag.inputs import negative_from_conditioning, real_tokens
from ._settings_io import validator, widgets
from .nag_families import detect
from .nag_hook import RUN_KEY, NAGCrossAttention, apply_nag
from .nag_joint_hook import apply_joint_nag

log = logging.getLogger("atelier")

CATEGORY = "Atelier/Guidance"
NODE = "Atelier NAG"


def wan_text_width(model):
    """Check that ``model`` is a Wan diffusion model NAG can patch; return its text width
    (4096 for UMT5-XXL). Raises ValueError naming the input otherwise (``nag.check_wan_model``)."""
    return _named(check_wan_model, model.get_model_object("diffusion_model"),
                  lambda i: model.get_model_object(f"diffusion_model.blocks.{i}.cross_attn"), NAGCrossAttention)


def model_family(model):
    """The model's :class:`~.nag_families.NAGFamily` and the text width its NAG negative must have; ValueError
    naming the node and the family when NAG cannot guide it or the model already has NAG."""
    to = getattr(model, "model_options", {}).get("transformer_options", {})
    if RUN_KEY in to:
        raise ValueError(f"{NODE}: input 'model' already has Atelier NAG applied; use one NAG node per model.")
    family = _named(detect, model)
    width = wan_text_width(model) if family.kind == "wan" else _named(family.width,
                                                                      model.get_model_object("diffusion_model"))
    return family, width


def negative_context(conditioning, width):
    """The NAG-negative text tensor [N, L, width] from a CONDITIONING, checked by the core."""
    ctx, entries = _named(negative_from_conditioning, conditioning, width)
    if entries > 1:
        log.warning("[Atelier] NAG: 'nag_negative' has %d entries; only the first is used.", entries)
    return ctx


def nag_config(scale=None, tau=None, alpha=None, sigma_end=None):
    """The node's settings as a validated NAGConfig (``nag.config_from_inputs``); ``None`` = linked."""
    return _named(config_from_inputs, scale, tau, alpha, sigma_end)


def _named(check, *args):
    """A core check, its ValueError prefixed with the node's name."""
    try:
        return check(*args)
    except ValueError as exc:
        raise ValueError(f"{NODE}: {exc}") from None


class AtelierNAGWan(io.ComfyNode):
    """Normalized Attention Guidance on a clone of a native Wan model (see ``nag_hook``)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AtelierNAGWan",
            display_name=NODE,
            category=CATEGORY,
            description=(
                "Normalized Attention Guidance: makes a negative prompt work at CFG 1 (distilled / few-step "
                "models) inside the single forward pass, at a fraction of a CFG pass. Wan2.1/2.2 (VACE too), "
                "SD1.5, SDXL, LTX-Video: cross-attention; Flux, Flux-Kontext, Flux2, Chroma, Chroma Radiance, Qwen-Image, "
                "HunyuanVideo, SD3.5, HiDream, Lumina2 / Z-Image (ComfyUI v0.8.0+): the text part of the joint "
                "attention. Works with CFG > 1 too (only the "
                "positive branch is guided) and with Atelier MagCache in either order. Connect its MODEL to "
                "your sampler."),
            inputs=[
                io.Model.Input("model", tooltip=(
                    "Wan2.1/2.2, SD1.5, SDXL, LTX-Video, Flux/Kontext/Flux2, Chroma (Radiance), Qwen-Image, "
                    "HunyuanVideo (1.5), SD3.5, HiDream or Lumina2 / Z-Image (ComfyUI v0.8.0+); other families are "
                    "refused by name.")),
                io.Conditioning.Input("nag_negative", tooltip=(
                    "What to steer away from, encoded with the model's own text encoder (the same CLIP "
                    "Text Encode path as its prompts). "
                    "Independent of the sampler's negative, which only acts when cfg > 1.")),
                *widgets(SETTINGS, ("scale", "tau", "alpha", "sigma_end")),
            ],
            outputs=[io.Model.Output(display_name="model", tooltip=(
                "The model with NAG (a clone; the input model is untouched). Connect it to the sampler."))],
        )

    validate_inputs = validator(SETTINGS, ("scale", "tau", "alpha", "sigma_end"))

    @classmethod
    def execute(cls, model, nag_negative, scale, tau, alpha, sigma_end) -> io.NodeOutput:
        config = nag_config(scale, tau, alpha, sigma_end)
        family, width = model_family(model)
        negative = negative_context(nag_negative, width)
        if family.trim_padding and isinstance(nag_negative[0][1], dict):
            negative = _named(real_tokens, negative, nag_negative[0][1].get("attention_mask"))
        if not config.enabled:
            log.info("[Atelier] NAG: scale 1 or alpha 0 turns NAG off; the model passes through unchanged.")
            return io.NodeOutput(model.clone())
        if family.kind == "joint":
            options = nag_negative[0][1] if isinstance(nag_negative[0][1], dict) else {}
            if family.llama_stream and not isinstance(options.get("conditioning_llama3"), torch.Tensor):
                raise ValueError(f"{NODE}: input 'nag_negative' has no Llama states (conditioning_llama3); "
                                 f"encode it with the HiDream text encoder, the same path as the prompts.")
            return io.NodeOutput(apply_joint_nag(model, config, negative, family.text_first, family.split_text_in,
                                                 options, caption_stream=family.caption_stream,
                                                 llama_stream=family.llama_stream))
        return io.NodeOutput(apply_nag(model, config, negative, kind=family.kind))


NODES = [AtelierNAGWan]
NODE_CLASS_MAPPINGS = {c.GET_SCHEMA().node_id: c for c in NODES}
NODE_DISPLAY_NAME_MAPPINGS = {c.GET_SCHEMA().node_id: c.GET_SCHEMA().display_name for c in NODES}
