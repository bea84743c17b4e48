"""Image batches as the nodes get them, ``(B, H, W, C)`` float tensors, and the core's numpy arrays.

The stages work on numpy (:mod:`restoration.artefacts`): images (H, W, 3) float32 sRGB in [0, 1], masks
(H, W) bool. These conversions are the one place where a batch becomes an array and back, so every node
reads its IMAGE and MASK inputs alike (first frame, first three channels, masks thresholded at 0.5) and
names the input that does not fit.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple
import logging

import numpy as np
import torch

__all__ = ["image_array", "mask_array", "image_batch", "mask_batch"]

log = logging.getLogger("atelier")


def image_array(image: Any, name: str = "image") -> np.ndarray:
    """First frame of an image batch ``(B, H, W, C)``, C >= 3, as ``(H, W, 3)`` float32 numpy (alpha and
    further frames dropped, a warning for the frames). ValueError names the input otherwise."""
    if image is None or image.ndim != 4 or image.shape[-1] < 3:
        raise ValueError(f"{name} must be an IMAGE [B,H,W,C] with C >= 3, got "
                         f"{None if image is None else tuple(image.shape)}")
    if image.shape[0] > 1:
        log.warning("atelier restoration: %s has a batch of %d; using the first image", name, image.shape[0])
    return np.ascontiguousarray(image[0, ..., :3].detach().cpu().float().numpy())


def mask_array(mask: Any, shape: Tuple[int, ...], name: str) -> Optional[np.ndarray]:
    """A mask ``((B,) H, W)`` as ``(H, W)`` bool (> 0.5; of a batch, the first), checked against ``shape``
    (H, W); None stays None. ValueError names the input when the size differs."""
    if mask is None:
        return None
    m = mask[0] if mask.ndim == 3 else mask
    if tuple(m.shape) != tuple(shape):
        raise ValueError(f"{name} has size {tuple(m.shape)}; the scan is {tuple(shape)} (H, W)")
    return m.detach().cpu().float().numpy() > 0.5


def image_batch(arr: np.ndarray) -> torch.Tensor:
    """An ``(H, W, C)`` (or ``(N, H, W, C)`` batch without its batch dim) array as a float32 batch of one,
    ``(1, H, W, C)``."""
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))[None]


def mask_batch(m: np.ndarray) -> torch.Tensor:
    """An ``(H, W)`` mask (bool or float) as a float32 batch of one, ``(1, H, W)``, 1.0 where set."""
    return torch.from_numpy(np.asarray(m, np.float32))[None]
