"""Latents to viewable frames: uint8 RGB arrays and PNG strips."""
from __future__ import annotations

import pathlib

import numpy as np
import torch

from . import vae


def latent_to_frames(latent: torch.Tensor) -> np.ndarray:
    """latent [B, 16, F, H, W] or [16, F, H, W] -> uint8 [B, F, 2H, 2W, 3] (or [F, 2H, 2W, 3])."""
    single = latent.ndim == 4
    z = latent[None] if single else latent
    rgb = vae.to_unit(vae.decode(z.detach().float().cpu()))
    arr = (rgb.permute(0, 2, 3, 4, 1).numpy() * 255.0 + 0.5).astype(np.uint8)
    return arr[0] if single else arr


def strip(frames: np.ndarray, scale: int = 4, gap: int = 2) -> np.ndarray:
    """uint8 [F, H, W, 3] -> one row image [H*scale, F*(W*scale+gap)-gap, 3] (nearest upscaling)."""
    f, h, w, _ = frames.shape
    big = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    out = np.full((h * scale, f * (w * scale + gap) - gap, 3), 255, dtype=np.uint8)
    for i in range(f):
        x = i * (w * scale + gap)
        out[:, x: x + w * scale] = big[i]
    return out


def grid(rows, gap: int = 4) -> np.ndarray:
    """Stack strips (uint8 [h, w_i, 3]) vertically, padding widths with white."""
    width = max(r.shape[1] for r in rows)
    parts = []
    for r in rows:
        pad = np.full((r.shape[0], width - r.shape[1], 3), 255, dtype=np.uint8)
        parts += [np.concatenate([r, pad], axis=1), np.full((gap, width, 3), 255, dtype=np.uint8)]
    return np.concatenate(parts[:-1], axis=0)


def save_png(image: np.ndarray, path) -> pathlib.Path:
    """Write uint8 [H, W, 3] to ``path`` (parents created)."""
    from PIL import Image
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


def save_latent_strips(latents, path, scale: int = 4) -> pathlib.Path:
    """Save one row per latent clip ([16, F, H, W] each, or a [B, ...] batch) as a PNG."""
    if isinstance(latents, torch.Tensor) and latents.ndim == 5:
        latents = list(latents)
    return save_png(grid([strip(latent_to_frames(z), scale) for z in latents]), path)
