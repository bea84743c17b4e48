"""A fixed linear "VAE" between RGB clips and 16-channel Wan-shaped latents.

Decode: a fixed 12x16 matrix with orthonormal rows (seeded) maps each latent vector to
the 2x2 RGB patch it stands for (12 values), then a 2x pixel shuffle:
latent [B, 16, F, H, W] -> RGB [B, 3, F, 2H, 2W] in [-1, 1] (unclipped).
Encode is the exact pseudo-inverse: pixel unshuffle, then the transpose matrix.
So ``decode(encode(rgb)) == rgb`` and ``encode(decode(z))`` projects z onto the
12-dimensional subspace that carries an image.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

LATENT_CHANNELS = 16
SCALE = 2
VAE_SEED = 1234


def decode_matrix(seed: int = VAE_SEED) -> torch.Tensor:
    """[12, 16] float64 matrix with orthonormal rows; row ``c*4 + i*2 + j`` is RGB channel c
    of sub-pixel (i, j) (the order of ``F.pixel_shuffle``)."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(LATENT_CHANNELS, LATENT_CHANNELS, generator=g, dtype=torch.float64))
    return q[: 3 * SCALE * SCALE].contiguous()


_D = decode_matrix()


def _frames_first(x):
    b, c, f, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w), (b, f)


def _frames_back(x, bf):
    b, f = bf
    return x.reshape(b, f, *x.shape[1:]).permute(0, 2, 1, 3, 4)


def decode(latent: torch.Tensor) -> torch.Tensor:
    """latent [B, 16, F, H, W] -> RGB [B, 3, F, 2H, 2W] in about [-1, 1] (same dtype)."""
    if latent.ndim != 5 or latent.shape[1] != LATENT_CHANNELS:
        raise ValueError(f"latent: expected [B, 16, F, H, W], got shape {tuple(latent.shape)}")
    d = _D.to(latent.device, latent.dtype)
    z, bf = _frames_first(latent)
    p = torch.einsum("oc,nchw->nohw", d, z)
    return _frames_back(F.pixel_shuffle(p, SCALE), bf)


def encode(rgb: torch.Tensor) -> torch.Tensor:
    """RGB [B, 3, F, H, W] in [-1, 1] (H, W even) -> latent [B, 16, F, H/2, W/2]."""
    if rgb.ndim != 5 or rgb.shape[1] != 3 or rgb.shape[-1] % SCALE or rgb.shape[-2] % SCALE:
        raise ValueError(f"rgb: expected [B, 3, F, H, W] with even H, W, got shape {tuple(rgb.shape)}")
    d = _D.to(rgb.device, rgb.dtype)
    p, bf = _frames_first(rgb)
    z = torch.einsum("oc,nohw->nchw", d, F.pixel_unshuffle(p, SCALE))
    return _frames_back(z, bf)


def to_unit(rgb: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1], clipped."""
    return ((rgb + 1) * 0.5).clamp(0, 1)


def from_unit(rgb01: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> [-1, 1]."""
    return rgb01 * 2 - 1


# ComfyUI's Wan21 latent format (comfy/latent_formats.py): the host samples in
# ``(latent - mean) / std`` space (the model's space) and hands out ``z * std + mean``.
WAN21_LATENTS_MEAN = (-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                      0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921)
WAN21_LATENTS_STD = (2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
                     3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160)


def _stats(x):
    mean = torch.tensor(WAN21_LATENTS_MEAN, dtype=x.dtype, device=x.device).view(1, 16, 1, 1, 1)
    std = torch.tensor(WAN21_LATENTS_STD, dtype=x.dtype, device=x.device).view(1, 16, 1, 1, 1)
    return mean, std


def from_host_latent(latent: torch.Tensor) -> torch.Tensor:
    """A LATENT from a ComfyUI Wan2.1 KSampler [B, 16, F, H, W] -> the model's space (what
    ``decode`` and ``tinywan.sample`` use): ``(latent - mean) / std``."""
    mean, std = _stats(latent)
    return (latent - mean) / std


def to_host_latent(z: torch.Tensor) -> torch.Tensor:
    """Model space -> a ComfyUI Wan2.1 LATENT: ``z * std + mean`` (inverse of ``from_host_latent``)."""
    mean, std = _stats(z)
    return z * std + mean
