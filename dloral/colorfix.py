"""Colour correction of the upscaled frame against the ×4-upsampled LR frame.

All functions take (B, 3, H, W) images in [0, 1] and return the same, clamped to [0, 1]. The
arithmetic follows the official ``wavelet_color_fix.py`` operation for operation (AdaIN: unbiased
variance + 1e-5; wavelet: high frequencies accumulated per level), so that on the same 8-bit inputs
the results agree to float rounding. The 8-bit truncations around them are the pipeline's
(``pipeline.finish_frames``).
"""
from typing import Tuple

import torch
import torch.nn.functional as F

__all__ = ["adain_color_fix", "wavelet_color_fix", "wavelet_split", "color_fix", "COLOR_FIXES"]

COLOR_FIXES = ("adain", "wavelet", "none")


def _mean_std(x, eps=1e-5):
    flat = x.flatten(2)
    return flat.mean(-1)[..., None, None], (flat.var(-1, unbiased=True) + eps).sqrt()[..., None, None]


def adain_color_fix(img: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Give ``img`` the per-channel mean and std of ``ref`` (std from the unbiased variance + 1e-5)."""
    m, s = _mean_std(img)
    rm, rs = _mean_std(ref)
    return ((img - m) / s * rs + rm).clamp(0, 1)


def _blur(x, dilation):
    k = torch.tensor([1.0, 2.0, 1.0], dtype=x.dtype, device=x.device) / 4
    k2 = (k[:, None] * k[None, :]).expand(x.shape[1], 1, 3, 3)
    x = F.pad(x, (dilation,) * 4, mode="replicate")
    return F.conv2d(x, k2, groups=x.shape[1], dilation=dilation)


def wavelet_split(x: torch.Tensor, levels: int = 5) -> Tuple[torch.Tensor, torch.Tensor]:
    """À-trous decomposition with the [1,2,1]/16 kernel at dilations 1, 2, …, 2^(levels-1):
    returns (high, low) with ``high + low == x`` up to float rounding. ``high`` is accumulated level
    by level (sum of ``low_i - low_(i+1)``), the official order of operations."""
    high = torch.zeros_like(x)
    low = x
    for i in range(levels):
        nxt = _blur(low, 2 ** i)
        high += low - nxt
        low = nxt
    return high, low


def wavelet_color_fix(img: torch.Tensor, ref: torch.Tensor, levels: int = 5) -> torch.Tensor:
    """High frequencies of ``img`` + low frequencies of ``ref``."""
    return (wavelet_split(img, levels)[0] + wavelet_split(ref, levels)[1]).clamp(0, 1)


def color_fix(img: torch.Tensor, ref: torch.Tensor, method: str) -> torch.Tensor:
    """``img`` (B, 3, H, W) in [0, 1] with the colours of ``ref`` by ``method`` (:data:`COLOR_FIXES`)."""
    if method == "adain":
        return adain_color_fix(img, ref)
    if method == "wavelet":
        return wavelet_color_fix(img, ref)
    if method == "none":
        return img
    raise ValueError(f"color_fix must be one of {COLOR_FIXES}, got {method!r}")
