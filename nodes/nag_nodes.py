"""NAG node: negative prompts for native Wan at CFG 1 (and with CFG), inside one forward pass."""
import logging
import math

import torch
from comfy_api.latest import io

from ..nag import NAGConfig
from .nag_hook import NAGCrossAttention, apply_nag

log = logging.getLogger("atelier")

CATEGORY = "Atelier/Guidance"
NODE = "Atelier NAG (Wan)"
CROSS_ATTN_PARTS = ("q", "k", "v", "o", "norm_q", "norm_k")
IMAGE_PARTS = ("k_img", "v_img", "norm_k_img")
HOST_CLASSES = ("WanT2VCrossAttention", "WanI2VCrossAttention")


def wan_text_width(model):
    """Check that ``model`` is a Wan diffusion model NAG can patch; return its text width
    (4096 for UMT5-XXL). Raises ValueError naming the input otherwise."""
    dm = model.get_model_object("diffusion_model")
    blocks = getattr(dm, "blocks", None)
    te = getattr(dm, "text_embedding", None)
    if blocks is None or te is None or len(blocks) == 0:
        raise ValueError(f"{NODE}: input 'model' is a {type(dm).__name__}, not a Wan model (no Wan "
                         "'blocks'/'text_embedding'). Allowed: Wan2.1/Wan2.2 diffusion models loaded by "
                         "the host (T2V, I2V, FLF2V, VACE, camera).")
    for i in range(len(blocks)):
        ca = model.get_model_object(f"diffusion_model.blocks.{i}.cross_attn")
        if isinstance(ca, NAGCrossAttention):
            raise ValueError(f"{NODE}: input 'model' already has Atelier NAG applied; use one NAG node "
                             "per model (change its settings instead of chaining).")
        name = type(ca).__name__
        missing = [p for p in CROSS_ATTN_PARTS + ("num_heads",) if not hasattr(ca, p)]
        if name not in HOST_CLASSES or missing:
            raise ValueError(f"{NODE}: input 'model' block {i} has cross-attention {name}"
                             f"{' missing ' + str(missing) if missing else ''}; allowed: the host's "
                             f"{' / '.join(HOST_CLASSES)} (Wan2.1/2.2 text and image cross-attention).")
        if name == "WanI2VCrossAttention" and not all(hasattr(ca, p) for p in IMAGE_PARTS):
            raise ValueError(f"{NODE}: input 'model' block {i}: I2V cross-attention without {IMAGE_PARTS}.")
    first = te[0] if isinstance(te, torch.nn.Sequential) else te
    width = getattr(first, "in_features", None)
    if width is None:
        raise ValueError(f"{NODE}: input 'model': cannot read the text width of {type(te).__name__}.")
    return int(width)


def negative_context(conditioning, width):
    """The NAG-negative text tensor [N, L, width] from a CONDITIONING, checked."""
    if not isinstance(conditioning, (list, tuple)) or not conditioning \
            or not isinstance(conditioning[0], (list, tuple)) or not torch.is_tensor(conditioning[0][0]):
        raise ValueError(f"{NODE}: input 'nag_negative' must be a CONDITIONING (from a text encoder such "
                         "as CLIPTextEncode with the Wan UMT5 encoder).")
    if len(conditioning) > 1:
        log.warning("[Atelier] NAG: 'nag_negative' has %d entries; only the first is used.", len(conditioning))
    ctx = conditioning[0][0]
    if ctx.ndim != 3:
        raise ValueError(f"{NODE}: input 'nag_negative' has a tensor of shape {tuple(ctx.shape)}; "
                         "expected [batch, tokens, width].")
    if ctx.shape[-1] != width:
        raise ValueError(f"{NODE}: input 'nag_negative' is {ctx.shape[-1]} wide but the model's text "
                         f"encoder width is {width}: encode the negative with the model's own text encoder "
                         "(UMT5-XXL for Wan).")
    if ctx.shape[1] == 0:
        raise ValueError(f"{NODE}: input 'nag_negative' has no tokens.")
    if not bool(torch.isfinite(ctx).all()):
        raise ValueError(f"{NODE}: input 'nag_negative' contains NaN or infinite values.")
    return ctx.detach()


# Widget bounds (min, max, step, default): the schema and validate_inputs read them from here.
BOUNDS = {"scale": (1.0, 100.0, 0.1, 11.0), "tau": (1.0, 10.0, 0.05, 2.5),
          "alpha": (0.0, 1.0, 0.01, 0.25), "sigma_end": (0.0, 100.0, 0.01, 0.0)}
TOOLTIPS = {
    "scale": "Guidance strength s (extrapolation s*Z+ - (s-1)*Z-; the paper's phi is s-1). "
             "1 turns NAG off; Wan at cfg 1: 9-11; with cfg > 1 lower (e.g. 5-9).",
    "tau": "Largest allowed L1 norm ratio of the guided to the positive attention output per "
           "token; larger = stronger, riskier. Few-step models: up to 3.5.",
    "alpha": "Blend of the guided output into the positive one (0 = off). Few-step: up to 0.5.",
    "sigma_end": "Guidance stops below this sigma (Wan sigmas run from 1 to 0); 0 = every step. "
                 "E.g. 0.75 skips the cost on late detail steps.",
}


def nag_config(scale=None, tau=None, alpha=None, sigma_end=None):
    """The node's settings as a validated :class:`NAGConfig`.

    ``None`` stands for an input not known yet (linked to another node at validation time) and
    takes the default. Raises ValueError naming the input, its value and what is allowed: the
    widget bounds (the host skips its own range check for inputs that ``validate_inputs`` takes)
    and then the core's rules (``NAGConfig.validate``)."""
    given = {"scale": scale, "tau": tau, "alpha": alpha, "sigma_end": sigma_end}
    values = {}
    for name, v in given.items():
        lo, hi, _, default = BOUNDS[name]
        if v is None:
            values[name] = default
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
            raise ValueError(f"{NODE}: input '{name}' is {v!r}; must be a finite number in [{lo}, {hi}].")
        if not lo <= float(v) <= hi:
            raise ValueError(f"{NODE}: input '{name}' is {v}; allowed: {lo} .. {hi}.")
        values[name] = float(v)
    try:
        return NAGConfig(**values).validate()
    except ValueError as exc:
        raise ValueError(f"{NODE}: input {exc}") from None


def _float_input(name):
    lo, hi, step, default = BOUNDS[name]
    return io.Float.Input(name, default=default, min=lo, max=hi, step=step, tooltip=TOOLTIPS[name])


class AtelierNAGWan(io.ComfyNode):
    """Normalized Attention Guidance on a clone of a native Wan model (see ``nag_hook``)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AtelierNAGWan",
            display_name=NODE,
            category=CATEGORY,
            description=(
                "Normalized Attention Guidance for native Wan2.1/Wan2.2: makes a negative prompt work "
                "at CFG 1 (distilled / few-step models) inside the single forward pass, at a fraction "
                "of a CFG pass. Works with CFG > 1 too (only the positive branch is guided) and with "
                "Atelier MagCache in either order. Connect its MODEL to your sampler."),
            inputs=[
                io.Model.Input("model", tooltip="A Wan2.1 or Wan2.2 diffusion model (T2V or I2V)."),
                io.Conditioning.Input("nag_negative", tooltip=(
                    "What to steer away from, encoded with the model's text encoder (UMT5). "
                    "Independent of the sampler's negative, which only acts when cfg > 1.")),
                _float_input("scale"), _float_input("tau"), _float_input("alpha"), _float_input("sigma_end"),
            ],
            outputs=[io.Model.Output(display_name="model", tooltip=(
                "The model with NAG (a clone; the input model is untouched). Connect it to the sampler."))],
        )

    @classmethod
    def validate_inputs(cls, scale=None, tau=None, alpha=None, sigma_end=None):
        try:
            nag_config(scale, tau, alpha, sigma_end)
        except ValueError as exc:
            return str(exc)
        return True

    @classmethod
    def execute(cls, model, nag_negative, scale, tau, alpha, sigma_end) -> io.NodeOutput:
        config = nag_config(scale, tau, alpha, sigma_end)
        width = wan_text_width(model)
        negative = negative_context(nag_negative, width)
        if not config.enabled:
            log.info("[Atelier] NAG: scale 1 or alpha 0 turns NAG off; the model passes through unchanged.")
            return io.NodeOutput(model.clone())
        return io.NodeOutput(apply_nag(model, config, negative))


NODES = [AtelierNAGWan]
NODE_CLASS_MAPPINGS = {c.GET_SCHEMA().node_id: c for c in NODES}
NODE_DISPLAY_NAME_MAPPINGS = {c.GET_SCHEMA().node_id: c.GET_SCHEMA().display_name for c in NODES}
