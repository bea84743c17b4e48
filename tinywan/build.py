"""Random-weight tiny Wan2.1 state dicts that ComfyUI auto-detects (T2V or I2V)."""
from __future__ import annotations

import math

import torch

from .model import TinyWan, TinyWanConfig


def _init_tensor(name: str, shape, g: torch.Generator) -> torch.Tensor:
    """A non-degenerate random value for parameter ``name`` (fan-in scaled, seeded)."""
    if name.endswith("modulation"):
        # like trained Wan: modulation of order 1/sqrt(dim), so gates and shifts are nonzero
        return torch.randn(shape, generator=g) / math.sqrt(shape[-1])
    if len(shape) == 1:
        if name.endswith("bias"):
            return 0.02 * torch.randn(shape, generator=g)
        return 1.0 + 0.1 * torch.randn(shape, generator=g)  # norm weights
    fan_in = math.prod(shape[1:])
    return torch.randn(shape, generator=g) / math.sqrt(fan_in)


def random_state_dict(variant: str = "t2v", dim: int = 128, ffn_dim: int = 256, num_layers: int = 2,
                      seed: int = 0, text_dim: int = 4096) -> dict:
    """A random Wan2.1 state dict in the host's key layout, deterministic per ``seed``.

    ``variant`` "t2v" (in_dim 16) or "i2v" (in_dim 36, with ``img_emb.*`` and the
    k_img/v_img cross-attention branch). ``dim`` must be a multiple of 128 and
    ``text_dim`` 4096 for ComfyUI to detect and run it. Values are float32 CPU tensors:
    fan-in scaled normal weights, small nonzero biases, norm weights near 1 and
    modulations of order 1/sqrt(dim), so the output depends on input, time and context.
    """
    cfg = TinyWanConfig(variant=variant, dim=dim, ffn_dim=ffn_dim, num_layers=num_layers, text_dim=text_dim)
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in TinyWan(cfg).state_dict().items()}
    g = torch.Generator().manual_seed(int(seed))
    return {k: _init_tensor(k, s, g).contiguous() for k, s in shapes.items()}


def random_model(variant: str = "t2v", seed: int = 0, **kw) -> TinyWan:
    """``TinyWan`` loaded with ``random_state_dict(variant, seed=seed, **kw)``, in eval mode."""
    return TinyWan.from_state_dict(random_state_dict(variant=variant, seed=seed, **kw)).eval()
