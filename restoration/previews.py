"""Preview renderings a person can judge (damage classes over the scan, labels, layers, heatmaps)."""

from __future__ import annotations

from typing import Any, List, Mapping, Sequence
import numpy as np

from .classes import CLASS_COLORS


PREVIEW_SIDE = 1024  # longer side of every preview (files, node previews, record thumbnails)


def preview_stride(h: int, w: int, side: int = PREVIEW_SIDE) -> int:
    """Whole-pixel step ``s = ceil(max(h, w) / side)`` (>= 1) that brings the longer side to ``side`` or less.
    The one preview subsampling rule (nearest-neighbour previews, the preview-scale simulation, the print
    canvas preview)."""
    return max(1, -(-max(int(h), int(w)) // int(side)))


def nearest(a: np.ndarray, side: int = PREVIEW_SIDE) -> np.ndarray:
    """Every ``preview_stride``-th pixel of an (H, W[, C]) array (for class and label maps: no new values)."""
    s = preview_stride(a.shape[0], a.shape[1], side)
    return a[::s, ::s]


def downscale(img: np.ndarray, max_side: int = PREVIEW_SIDE) -> np.ndarray:
    """Area-downscale an (H, W[, C]) array so its longer side is at most ``max_side``."""
    import cv2
    h, w = img.shape[:2]
    s = max_side / max(h, w)
    if s >= 1:
        return img
    return cv2.resize(img, (max(1, int(w * s)), max(1, int(h * s))), interpolation=cv2.INTER_AREA)


def class_overlay(img: np.ndarray, classes: np.ndarray, alpha: float = 0.75) -> np.ndarray:
    """Classes painted over a dimmed scan (paper colours). (H, W, 3) float32."""
    out = img * 0.6 + 0.2
    for cid, col in CLASS_COLORS.items():
        m = classes == cid
        if m.any():
            out[m] = (1 - alpha) * out[m] + alpha * np.array(col, np.float32)
    return out.astype(np.float32)


def label_colors(labels: np.ndarray) -> np.ndarray:
    """Each region id in a pseudo-random colour (0 = black). (H, W, 3) float32."""
    n = int(labels.max())
    rng = np.random.default_rng(12345)
    lut = rng.uniform(0.25, 1.0, (n + 1, 3)).astype(np.float32)
    lut[0] = 0
    return lut[labels]


def heat(values: np.ndarray, vmax: float) -> np.ndarray:
    """Scalar map -> (H, W, 3) float32 colour ramp (black-blue-red-yellow), clipped at vmax."""
    t = np.clip(values / max(vmax, 1e-9), 0, 1)[..., None]
    a = np.array([0, 0, 0], np.float32); b = np.array([0.1, 0.2, 0.9], np.float32)
    c = np.array([0.9, 0.1, 0.1], np.float32); d = np.array([1.0, 0.95, 0.2], np.float32)
    return np.where(t < 1 / 3, a + (b - a) * t * 3, np.where(t < 2 / 3, b + (c - b) * (t * 3 - 1),
                                                             c + (d - c) * (t * 3 - 2))).astype(np.float32)


def response_previews(responses: Mapping[str, np.ndarray]) -> np.ndarray:
    """The response maps ({name: (H, W) uint8}) as a (K, H, W, 3) float32 stack of heat maps (yellow = 32+)."""
    return np.stack([heat(v.astype(np.float32), 128) for v in responses.values()])


def layers_preview(rgba: np.ndarray, white: np.ndarray) -> np.ndarray:
    """Colour layer ``rgba`` (H, W, 4) over a checkerboard next to the white plate ``white`` (H, W)
    (dark = white ink). (H, 2W + gap, 3) float32."""
    h, w = white.shape
    yy, xx = np.mgrid[0:h, 0:w]
    board = np.where(((yy // 16 + xx // 16) % 2)[..., None] == 0, 0.8, 0.6).astype(np.float32)
    col = rgba[..., :3] * rgba[..., 3:] + board * (1 - rgba[..., 3:])
    wp = np.repeat((1 - 0.85 * white)[..., None], 3, 2) * np.array([0.55, 0.7, 1.0], np.float32) + 0.0
    wp = np.where(white[..., None] > 0, wp, 1.0)
    gap = np.ones((h, max(4, w // 100), 3), np.float32)
    return np.concatenate([col, gap, wp], 1).astype(np.float32)


REVIEW_COLOR = (1.0, 0.55, 0.0)   # orange: regions listed for review (not filled unless accepted)
REVIEW_OUTLINE = (0.85, 0.0, 0.85)  # magenta outline around them


def review_overlay(img: np.ndarray, fill: np.ndarray, review: np.ndarray, alpha: float = 0.75) -> np.ndarray:
    """The review before print over a dimmed scan: regions to fill in blue (the loss colour), regions
    waiting for review in orange with a magenta 1 px outline (so that a small one is seen). ``fill``,
    ``review``: (H, W) bool. (H, W, 3) float32."""
    from scipy import ndimage
    out = class_overlay(img, np.where(fill, 3, 0).astype(np.uint8), alpha)
    rv = np.asarray(review, bool)
    out[rv] = (1 - alpha) * out[rv] + alpha * np.array(REVIEW_COLOR, np.float32)
    ring = ndimage.binary_dilation(rv, np.ones((3, 3), bool), iterations=2) & ~rv
    out[ring] = REVIEW_OUTLINE
    return out.astype(np.float32)


def save_previews(folder: Any, arrays: Sequence[np.ndarray], prefix: str, stamp: int) -> List[str]:
    """Write ``(H, W, 3)`` float previews as 8-bit PNGs ``atelier_<prefix>_<stamp>_<i>.png`` into ``folder``
    (each subsampled by :func:`nearest`, fast compression); returns the file names in order."""
    import os
    from PIL import Image
    from .fileio import to_uint
    names = []
    for i, a in enumerate(arrays):
        name = f"atelier_{prefix}_{stamp}_{i}.png"
        Image.fromarray(to_uint(nearest(a), 8)).save(os.path.join(folder, name), compress_level=1)
        names.append(name)
    return names
