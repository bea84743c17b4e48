"""Image resizing with Pillow's separable filters, in torch: exactly Pillow's 8-bit result, or the
same kernels in float.

The official DLoRAL script resizes its frames with ``PIL.Image.resize`` on 8-bit RGB images
(bicubic ×4, LANCZOS to a multiple of 8, bicubic back to ×4 of the input). This module reproduces
that arithmetic from Pillow's published algorithm (``libImaging/Resample.c``), so that the pack's
frames are the official ones, value for value, without handing tensors to PIL:

- coefficients: for output pixel ``i`` the source centre is ``(i + 0.5) * in / out``; the kernel is
  stretched by ``max(in / out, 1)`` (antialiasing when shrinking); taps ``xmin .. xmax`` are the
  rounded ``centre ± support``, clipped to the image; weights are normalised to sum 1 (float64);
- 8-bit (:func:`resize_u8`): each weight becomes a 22-bit fixed-point integer (rounded away from 0);
  each pass sums ``pixel * weight`` in integers from ``2**21`` (rounding), shifts right by 22 and
  clips to 0..255. The horizontal pass runs first and its 8-bit result feeds the vertical pass; a
  pass whose size does not change is skipped;
- float (:func:`resize_float`): the same normalised weights in the tensor's dtype, no rounding; the
  result of each pass is clamped to [0, 1] (the range the 8-bit path clips to).

Shapes: images are (B, C, H, W); sizes are (height, width). Works on any device (integer gathers).
"""
import math
from functools import lru_cache
from typing import Tuple

import torch

__all__ = ["FILTERS", "pil_weights", "resize_u8", "resize_float", "to_u8", "from_u8"]

PRECISION_BITS = 32 - 8 - 2


def _bicubic(x: float) -> float:
    a = -0.5
    if x < 0.0:
        x = -x
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    if x < 2.0:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


def _sinc(x: float) -> float:
    if x == 0.0:
        return 1.0
    x = x * math.pi
    return math.sin(x) / x


def _lanczos(x: float) -> float:
    if -3.0 <= x < 3.0:
        return _sinc(x) * _sinc(x / 3)
    return 0.0


def _bilinear(x: float) -> float:
    if x < 0.0:
        x = -x
    return 1.0 - x if x < 1.0 else 0.0


# name -> (kernel, support)
FILTERS = {"bicubic": (_bicubic, 2.0), "lanczos": (_lanczos, 3.0), "bilinear": (_bilinear, 1.0)}


@lru_cache(maxsize=64)
def _coefficients(in_size: int, out_size: int, name: str):
    fn, support = FILTERS[name]
    scale = float(in_size) / out_size
    filterscale = max(scale, 1.0)
    support = support * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    index = [[0] * ksize for _ in range(out_size)]
    weight = [[0.0] * ksize for _ in range(out_size)]
    fixed = [[0] * ksize for _ in range(out_size)]
    ss = 1.0 / filterscale
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size) - xmin
        k = [fn((x + xmin - center + 0.5) * ss) for x in range(xmax)]
        ww = 0.0
        for w in k:
            ww += w
        if ww != 0.0:
            k = [w / ww for w in k]
        for x, w in enumerate(k):
            index[xx][x] = xmin + x
            weight[xx][x] = w
            fixed[xx][x] = int(-0.5 + w * (1 << PRECISION_BITS)) if w < 0 else int(0.5 + w * (1 << PRECISION_BITS))
        for x in range(xmax, ksize):       # unused taps: weight 0 on a valid index
            index[xx][x] = xmin
    return (torch.tensor(index, dtype=torch.long), torch.tensor(weight, dtype=torch.float64),
            torch.tensor(fixed, dtype=torch.int32))


def pil_weights(in_size: int, out_size: int, name: str = "bicubic") -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pillow's resampling taps along one axis: ``(index (out, K) long, weight (out, K) float64,
    fixed (out, K) int32)``; output pixel ``i`` is ``sum_k src[index[i, k]] * weight[i, k]``."""
    if name not in FILTERS:
        raise ValueError(f"filter must be one of {tuple(FILTERS)}, got {name!r}")
    if in_size < 1 or out_size < 1:
        raise ValueError(f"sizes must be >= 1, got {in_size} -> {out_size}")
    return _coefficients(int(in_size), int(out_size), name)


def _pass(x, dim, out_size, name, fixed):
    index, weight, fixed_w = pil_weights(x.shape[dim], out_size, name)
    index = index.to(x.device)
    w = (fixed_w if fixed else weight).to(x.device, torch.int32 if fixed else x.dtype)
    shape = [1] * x.dim()
    shape[dim] = out_size
    src = x.to(torch.int32) if fixed else x
    acc = src.index_select(dim, index[:, 0]).mul_(w[:, 0].view(shape))
    for k in range(1, index.shape[1]):
        acc.add_(src.index_select(dim, index[:, k]).mul_(w[:, k].view(shape)))
    if fixed:      # PIL: start at 2**21 (rounding), shift right by 22, clip to 0..255
        acc.add_(1 << (PRECISION_BITS - 1)).bitwise_right_shift_(PRECISION_BITS)
        return acc.clamp_(0, 255).to(torch.uint8)
    return acc.clamp_(0, 1)


def _resize(x, size, name, fixed):
    if x.dim() != 4:
        raise ValueError(f"images must be (B, C, H, W), got {tuple(x.shape)}")
    h, w = int(size[0]), int(size[1])
    if h < 1 or w < 1:
        raise ValueError(f"size must be positive, got {size}")
    if (h, w) == tuple(x.shape[-2:]):
        return x.clone()
    if w != x.shape[-1]:
        x = _pass(x, 3, w, name, fixed)
    if h != x.shape[-2]:
        x = _pass(x, 2, h, name, fixed)
    return x


def resize_u8(x: torch.Tensor, size: Tuple[int, int], name: str = "bicubic") -> torch.Tensor:
    """(B, C, H, W) uint8 -> (B, C, size[0], size[1]) uint8, equal to ``PIL.Image.resize`` of each
    8-bit image with that filter (``(width, height)`` order in PIL)."""
    if x.dtype != torch.uint8:
        raise ValueError(f"resize_u8 needs a uint8 tensor, got {x.dtype}")
    return _resize(x, size, name, True)


def resize_float(x: torch.Tensor, size: Tuple[int, int], name: str = "bicubic") -> torch.Tensor:
    """(B, C, H, W) float in [0, 1] -> (B, C, size[0], size[1]): Pillow's kernels without 8-bit
    rounding (each pass clamped to [0, 1])."""
    if not x.is_floating_point():
        raise ValueError(f"resize_float needs a float tensor, got {x.dtype}")
    return _resize(x, size, name, False)


def to_u8(x: torch.Tensor, rounding: str = "round") -> torch.Tensor:
    """[0, 1] float -> uint8: ``"round"`` to the nearest level (how an 8-bit frame read as k/255
    comes back exactly) or ``"trunc"`` (``x * 255`` cut toward 0, as torchvision's ``ToPILImage``)."""
    v = x.clamp(0, 1) * 255
    if rounding == "round":
        v = v.round()
    elif rounding != "trunc":
        raise ValueError(f"rounding must be 'round' or 'trunc', got {rounding!r}")
    return v.to(torch.uint8)


def from_u8(x: torch.Tensor) -> torch.Tensor:
    """uint8 -> float32 in [0, 1] (``k / 255``, as torchvision's ``to_tensor``)."""
    return x.to(torch.float32).div(255)
