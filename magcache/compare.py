"""Per-frame image quality between a full run and a cached run: PSNR, SSIM, difference image.

Images are ComfyUI IMAGE batches ``[N, H, W, C]`` with values in ``[0, 1]`` (a batch is a
video: one value per frame).
"""
from __future__ import annotations

import math
from typing import Tuple

import torch
import torch.nn.functional as F

__all__ = ["psnr", "ssim", "difference_image", "gaussian_window", "compare_frames"]


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    for name, t in (("a", a), ("b", b)):
        if not torch.is_tensor(t) or t.dim() != 4:
            raise ValueError(f"{name}: expected an image batch [N, H, W, C], got "
                             f"{tuple(t.shape) if torch.is_tensor(t) else type(t).__name__}")
    if a.shape != b.shape:
        raise ValueError(f"a {tuple(a.shape)} and b {tuple(b.shape)} must have the same shape")


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio per frame, in dB.

    Args:
        a, b: ``[N, H, W, C]`` images, values in ``[0, data_range]``.
    Returns:
        float64 tensor ``[N]``: ``10 log10(data_range^2 / MSE)`` over all pixels and channels of
        the frame; ``inf`` where the frames are identical.
    """
    _check_pair(a, b)
    if not data_range > 0:
        raise ValueError(f"data_range: {data_range!r} must be > 0")
    mse = (a.double() - b.double()).pow(2).flatten(1).mean(1)
    out = torch.full_like(mse, math.inf)
    nz = mse > 0
    out[nz] = 10.0 * torch.log10(data_range ** 2 / mse[nz])
    return out


def gaussian_window(size: int = 11, sigma: float = 1.5, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Normalised 1-D Gaussian window ``[size]``."""
    x = torch.arange(size, dtype=dtype) - (size - 1) / 2
    w = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    return w / w.sum()


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0, win_size: int = 11, sigma: float = 1.5,
         k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Structural similarity per frame (Wang et al. 2004).

    Gaussian window ``win_size`` x ``win_size`` with ``sigma`` (11, 1.5), ``C1 = (k1 L)^2``,
    ``C2 = (k2 L)^2`` with ``L = data_range``; local statistics are Gaussian-weighted
    population moments; the SSIM map is computed on every colour channel separately over the
    *valid* region (no padding: pixels whose window fits in the frame) and averaged over
    pixels and channels. This equals scikit-image's
    ``structural_similarity(a, b, channel_axis=-1, gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=1)``, which crops the same border.

    Args:
        a, b: ``[N, H, W, C]`` with ``H, W >= win_size``.
    Returns:
        float64 tensor ``[N]`` (1.0 for identical frames).
    """
    _check_pair(a, b)
    n, h, w, c = a.shape
    if h < win_size or w < win_size:
        raise ValueError(f"a: frames of {h}x{w} are smaller than the {win_size}x{win_size} SSIM window")
    g = gaussian_window(win_size, sigma)
    kh = g.view(1, 1, win_size, 1).repeat(c, 1, 1, 1)
    kw = g.view(1, 1, 1, win_size).repeat(c, 1, 1, 1)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, kh, groups=c), kw, groups=c)

    x = a.double().permute(0, 3, 1, 2)
    y = b.double().permute(0, 3, 1, 2)
    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    m = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return m.flatten(1).mean(1)


def difference_image(a: torch.Tensor, b: torch.Tensor, gain: float = 4.0) -> torch.Tensor:
    """``clamp(|a - b| * gain, 0, 1)``, ``[N, H, W, C]`` float32, for looking at where runs differ."""
    _check_pair(a, b)
    if not gain > 0:
        raise ValueError(f"gain: {gain!r} must be > 0")
    return ((a.float() - b.float()).abs() * gain).clamp(0, 1)


def _frames(images: torch.Tensor, name: str) -> torch.Tensor:
    if not torch.is_tensor(images) or images.dim() != 4:
        raise ValueError(f"{name}: must be an IMAGE batch [N, H, W, C], got "
                         f"{tuple(images.shape) if torch.is_tensor(images) else type(images).__name__}")
    return images.float()


def compare_frames(reference: torch.Tensor, test: torch.Tensor,
                   gain: float = 4.0) -> Tuple[torch.Tensor, str, float, float]:
    """A full run's frames against a cached run's, both ``[N, H, W, C]`` in [0, 1]:
    ``(difference, table, mean_psnr, mean_ssim)``.

    difference: :func:`difference_image` ``[N, H, W, C]``. table: a header line, one line per frame
    (index, PSNR in dB to 2 decimals, SSIM to 4), then the means. mean_psnr: over the frames with a finite
    PSNR (identical frames excluded; ``inf`` when every frame is identical). ValueError names the input."""
    a, b = _frames(reference, "reference"), _frames(test, "test")
    if a.shape != b.shape:
        raise ValueError(f"test: {tuple(b.shape)} differs from reference {tuple(a.shape)}; both need the same "
                         "frame count and size")
    p, s = psnr(a, b), ssim(a, b)
    finite = p[torch.isfinite(p)]
    mp = float(finite.mean()) if finite.numel() else float("inf")
    ms = float(s.mean())
    rows = ["frame  psnr_db  ssim"] + [f"{i:5d}  {float(pi):7.2f}  {float(si):.4f}" for i, (pi, si) in enumerate(zip(p, s))]
    rows.append(f" mean  {mp:7.2f}  {ms:.4f}")
    return difference_image(a, b, gain), "\n".join(rows), mp, ms
