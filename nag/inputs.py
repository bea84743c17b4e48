"""Checks of what the NAG node is given: the Wan model's modules and the NAG-negative tensor.

Duck-typed on torch modules (no host import); messages start ``input '<name>'`` and say what is
allowed, so the node only prefixes its display name.
"""
from __future__ import annotations

from typing import Callable, Tuple, Union

import torch

__all__ = ["CROSS_ATTN_PARTS", "IMAGE_PARTS", "HOST_CLASSES", "check_wan_model", "check_negative_context",
           "negative_from_conditioning", "real_tokens"]

CROSS_ATTN_PARTS = ("q", "k", "v", "o", "norm_q", "norm_k")
IMAGE_PARTS = ("k_img", "v_img", "norm_k_img")
HOST_CLASSES = ("WanT2VCrossAttention", "WanI2VCrossAttention")


def check_wan_model(diffusion_model: object, cross_attention: Callable[[int], object],
                    patched_type: Union[type, Tuple[type, ...]] = ()) -> int:
    """Check that a Wan diffusion model can take NAG; return its text width (4096 for UMT5-XXL).

    Args:
        diffusion_model: the Wan model (duck-typed: ``blocks``, ``text_embedding``).
        cross_attention: ``i -> `` the cross-attention module of block ``i`` as the host serves it
            (object patches included).
        patched_type: type(s) of an already-applied NAG stand-in: refused (one NAG per model).

    Raises ValueError naming input 'model' when it is not a Wan model NAG can patch.
    """
    blocks = getattr(diffusion_model, "blocks", None)
    te = getattr(diffusion_model, "text_embedding", None)
    if blocks is None or te is None or len(blocks) == 0:
        raise ValueError(f"input 'model' is a {type(diffusion_model).__name__}, not a Wan model (no Wan "
                         "'blocks'/'text_embedding'). Allowed: Wan2.1/Wan2.2 diffusion models loaded by "
                         "the host (T2V, I2V, FLF2V, VACE, camera).")
    for i in range(len(blocks)):
        ca = cross_attention(i)
        if isinstance(ca, patched_type):
            raise ValueError("input 'model' already has Atelier NAG applied; use one NAG node "
                             "per model (change its settings instead of chaining).")
        name = type(ca).__name__
        missing = [p for p in CROSS_ATTN_PARTS + ("num_heads",) if not hasattr(ca, p)]
        if name not in HOST_CLASSES or missing:
            raise ValueError(f"input 'model' block {i} has cross-attention {name}"
                             f"{' missing ' + str(missing) if missing else ''}; allowed: the host's "
                             f"{' / '.join(HOST_CLASSES)} (Wan2.1/2.2 text and image cross-attention).")
        if name == "WanI2VCrossAttention" and not all(hasattr(ca, p) for p in IMAGE_PARTS):
            raise ValueError(f"input 'model' block {i}: I2V cross-attention without {IMAGE_PARTS}.")
    first = te[0] if isinstance(te, torch.nn.Sequential) else te
    width = getattr(first, "in_features", None)
    if width is None:
        raise ValueError(f"input 'model': cannot read the text width of {type(te).__name__}.")
    return int(width)


def check_negative_context(ctx: object, width: int) -> torch.Tensor:
    """The NAG-negative text context ``(N, Ln, width)``, checked and detached.

    Raises ValueError naming input 'nag_negative' when ``ctx`` is not a tensor, not 3-D, not
    ``width`` wide (encode with the model's own text encoder), has no tokens, or is not finite.
    """
    if not torch.is_tensor(ctx):
        raise ValueError("input 'nag_negative' must be a CONDITIONING (from a text encoder such "
                         "as CLIPTextEncode with the Wan UMT5 encoder).")
    if ctx.ndim != 3:
        raise ValueError(f"input 'nag_negative' has a tensor of shape {tuple(ctx.shape)}; "
                         "expected [batch, tokens, width].")
    if ctx.shape[-1] != width:
        raise ValueError(f"input 'nag_negative' is {ctx.shape[-1]} wide but the model's text "
                         f"encoder width is {width}: encode the negative with the model's own text encoder "
                         "(UMT5-XXL for Wan).")
    if ctx.shape[1] == 0:
        raise ValueError("input 'nag_negative' has no tokens.")
    if not bool(torch.isfinite(ctx).all()):
        raise ValueError("input 'nag_negative' contains NaN or infinite values.")
    return ctx.detach()


def negative_from_conditioning(conditioning: object, width: int) -> Tuple[torch.Tensor, int]:
    """The NAG-negative context from a CONDITIONING (a list of ``[tensor (N, Ln, width), options]`` entries):
    the first entry's tensor, checked by :func:`check_negative_context`, and the number of entries (only the
    first is used). ValueError names input 'nag_negative'."""
    if not (isinstance(conditioning, (list, tuple)) and conditioning and isinstance(conditioning[0], (list, tuple))):
        return check_negative_context(None, width), 0      # raises: not a CONDITIONING
    return check_negative_context(conditioning[0][0], width), len(conditioning)


def real_tokens(ctx: torch.Tensor, mask: object) -> torch.Tensor:
    """The NAG negative ``(N, Ln, C)`` less the tokens its encoder's padding mask marks as padding.

    For families whose cross-attention masks the prompt's padding (LTXV's T5 pads to 128 tokens): attention
    over the kept tokens only is attention with that mask, so the negative needs no mask of its own.

    Args:
        ctx: ``(N, Ln, C)`` the negative.
        mask: None, or the encoder's keep-mask ``(N or 1, Ln)`` (nonzero / True = a real token).
    Returns:
        ``ctx`` unchanged when ``mask`` is not such a tensor; otherwise the tokens real in any row (at least
        one: a mask with no real token keeps the first). ValueError naming input 'nag_negative' when the mask
        has another length.
    """
    if not torch.is_tensor(mask):
        return ctx
    if mask.ndim != 2 or mask.shape[-1] != ctx.shape[1] or mask.shape[0] not in (1, ctx.shape[0]):
        raise ValueError(f"input 'nag_negative' has an attention_mask of shape {tuple(mask.shape)} for "
                         f"{ctx.shape[1]} tokens; expected [1 or {ctx.shape[0]}, {ctx.shape[1]}].")
    keep = (mask != 0).any(dim=0).to(ctx.device)
    if not bool(keep.any()):
        keep[0] = True
    return ctx[:, keep]
