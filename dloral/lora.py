"""LoRA in the forward pass, unmerged, as PEFT runs it in the official DLoRAL code.

Merging a LoRA into a weight (``W + up @ down``) needs a second copy of every weight it touches while the
original is kept for undoing it: on a CPU that doubles the UNet's memory (3.3 GB more for the fp32 SD2.1 UNet
with DLoRAL's 257 modules). Computing ``base(x) + up(down(x))`` instead uses the base weights as they are;
the extra work is a rank-r product per module (DLoRAL: r = 8 against 320-1280 channels, about 1 % of the
UNet's multiply-adds).
"""
import itertools
from typing import Any, Dict, Optional, Sequence

import torch
import torch.nn.functional as F

from .modcopy import copied_from, forward_copy

MARK = "_dloral_lora_base"


def lora_module(base: torch.nn.Module, down: torch.Tensor, up: torch.Tensor, scale: float = 1.0,
                split: Optional[Sequence[int]] = None) -> torch.nn.Module:
    """A module that computes ``base(x) + up(down(x)) * scale`` and is otherwise ``base``.

    split: ranks of the adapters stacked in ``down`` / ``up`` (``down = [A_1; A_2]``, ``up = [B_1 | B_2]``,
    summing to r). Each adapter's term is then added on its own, in order, as PEFT adds its active adapters
    (``y = y + B_1(A_1 x); y = y + B_2(A_2 x)``): the same sum as one rank-r product, in PEFT's float
    rounding, so a checkpoint run this way gives the official code's numbers to the bit (fp32, scales that
    are powers of two, as PEFT's default ``alpha / r`` for r = 1, 2, 4, 8, 16 ...).

    base: a Linear-like module (weight ``[o, i]``; x ``(..., i)`` -> ``(..., o)``) or a Conv2d-like one
    (weight ``[o, i, k, k]``; x ``(B, i, H, W)`` -> ``(B, o, H', W')``). down: ``[r, i]`` or ``[r, i, k, k]``
    (run with the conv's stride, padding and dilation); up: ``[o, r]`` or ``[o, r, 1, 1]``.

    The result is a shallow copy of ``base``: the same class, attributes and parameter dict (the same
    tensors, nothing copied), so its state-dict keys, weight patches, device moves and casting are those of
    ``base``; only its ``forward`` adds the low-rank term. The factors are neither parameters nor buffers:
    they follow the input's device and dtype (one cached copy per device and dtype). A module made by this
    function is unwrapped first (``lora_base``), so wrapping never stacks.
    """
    if down.dim() not in (2, 4) or up.dim() != down.dim() or up.shape[1] != down.shape[0]:
        raise ValueError(f"LoRA factors do not chain: down {tuple(down.shape)}, up {tuple(up.shape)}")
    r = down.shape[0]
    split = [r] if not split else [int(v) for v in split]
    if sum(split) != r or min(split) < 1:
        raise ValueError(f"LoRA split {split} does not add up to the rank {r}")
    base = lora_base(base)
    conv = down.dim() == 4
    conv_args: Dict[str, Any] = dict(stride=base.stride, padding=base.padding, dilation=base.dilation) if conv else {}
    factors = (down.detach(), up.detach() * scale)
    starts = [0, *itertools.accumulate(split)][:-1]
    cache: Dict[tuple, list] = {}
    base_forward = base.forward

    def make_forward(mod):
        def forward(x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
            if "forward" in base.__dict__:   # a forward set on the instance itself
                y = base_forward(x, *args, **kwargs)
            else:                            # the class's forward on the copy (its own attributes, e.g. casting)
                y = type(base).forward(mod, x, *args, **kwargs)
            key = (x.device, x.dtype)
            if key not in cache:
                d, u = (f.to(x.device, x.dtype) for f in factors)
                cache[key] = [(d[i:i + n].contiguous(), u[:, i:i + n].contiguous()) for i, n in zip(starts, split)]
            for d, u in cache[key]:
                y = y + (F.conv2d(F.conv2d(x, d, None, **conv_args), u) if conv else F.linear(F.linear(x, d), u))
            return y
        return forward

    return forward_copy(base, make_forward, MARK)


def lora_base(module: torch.nn.Module) -> torch.nn.Module:
    """The module :func:`lora_module` wrapped (``module`` itself when it is not such a wrapper)."""
    return copied_from(module, MARK)


def lora_scale(lora: Dict[str, torch.Tensor], module: str) -> float:
    """The host-format scale of ``module``: ``alpha / rank`` (1 when no alpha is stored)."""
    alpha = lora.get(module + ".alpha")
    rank = lora[module + ".lora_down.weight"].shape[0]
    return 1.0 if alpha is None else float(alpha) / rank
