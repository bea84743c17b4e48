"""The SD VAE's single-head attention block computed as diffusers computes it.

The SD VAE has one self-attention block in the middle of its encoder and one in its decoder. The LDM
layout (the host's) projects q, k, v and the output with 1x1 convolutions; diffusers (the official DLoRAL
code) with ``Linear`` layers on ``(B, H*W, C)`` tokens and PyTorch's fused attention. The weights are the
same, the float sums are not: on the full SD VAE (fp32, 512x512 decode) the two differ by up to 7e-6 on
[0, 1] (mean 7e-7); everything else in the two VAEs is bit-identical. Computed the diffusers way, the host's VAE gives diffusers' numbers exactly,
and the fused attention needs no ``(H*W)^2`` score matrix (at a 2048x2048 decode the latent has 65 536
positions: a 17 GB matrix in fp32 that the host's CPU path computes in slices). The pack uses it for a VAE
on a CPU (``nodes/dloral_host.patch_vae``).
"""
from typing import Any, List, Optional, Tuple

import torch
import torch.nn.functional as F

from .modcopy import copied_from, forward_copy

MARK = "_dloral_sdpa_base"


def _as_linear(conv: torch.nn.Conv2d, like: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """A 1x1 conv's weight ``[o, i, 1, 1]`` as a Linear weight ``[o, i]`` (and its bias), on ``like``'s device
    and dtype (the host may keep weights elsewhere and cast per call)."""
    w = conv.weight.to(like.device, like.dtype)
    b = None if conv.bias is None else conv.bias.to(like.device, like.dtype)
    return w.reshape(w.shape[0], -1), b


def sdpa_attention_block(block: torch.nn.Module) -> torch.nn.Module:
    """A shallow copy of an LDM VAE attention block whose forward is diffusers' order of operations.

    block: has ``norm`` (GroupNorm) and 1x1 convolutions ``q``, ``k``, ``v``, ``proj_out`` (C -> C);
    x ``(B, C, H, W)`` -> ``x + proj_out(attention(q, k, v))`` ``(B, C, H, W)``, one head, scale
    ``C ** -0.5``. The copy shares the block's modules and parameters (nothing copied); a copy made by
    this function is unwrapped first (``sdpa_base``), so wrapping never stacks.
    """
    for name in ("norm", "q", "k", "v", "proj_out"):
        if not hasattr(block, name):
            raise ValueError(f"not an LDM VAE attention block: {type(block).__name__} has no {name!r}")
    base: Any = sdpa_base(block)      # duck-typed: norm, q, k, v, proj_out

    def forward(x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        t = base.norm(x).reshape(b, c, h * w).transpose(1, 2)          # (B, HW, C)
        q, k, v = (F.linear(t, *_as_linear(getattr(base, n), t)) for n in ("q", "k", "v"))
        o = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]   # (B, HW, C)
        o = F.linear(o, *_as_linear(base.proj_out, o))
        return o.transpose(1, 2).reshape(b, c, h, w) + x

    return forward_copy(base, lambda mod: forward, MARK)


def sdpa_base(module: torch.nn.Module) -> torch.nn.Module:
    """The block :func:`sdpa_attention_block` wrapped (``module`` itself when it is not such a copy)."""
    return copied_from(module, MARK)


def vae_attention_paths(vae_model: torch.nn.Module) -> List[str]:
    """Dotted paths of the LDM VAE attention blocks in ``vae_model`` (``encoder.mid.attn_1``, ...): modules
    with ``norm``, ``q``, ``k``, ``v`` and ``proj_out`` children, 1x1 convolutions."""
    out: List[str] = []
    for name, m in vae_model.named_modules():
        kids = dict(m.named_children())
        if all(n in kids for n in ("norm", "q", "k", "v", "proj_out")) and \
                all(getattr(kids[n], "kernel_size", None) in ((1, 1), 1) for n in ("q", "k", "v", "proj_out")):
            out.append(name)
    return out
