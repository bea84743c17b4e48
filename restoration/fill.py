"""Fill the damage footprint (spec 4.2 N5).

Methods: ``exemplar`` (the default: blended best-matching pieces from the undamaged picture nearby, rim
first, seam-corrected; see :mod:`restoration.exemplar`; what it cannot serve gets the harmonic fill),
``harmonic`` (pure torch push-pull + Jacobi, runs on any device), ``telea`` and
``ns`` (OpenCV, 8-bit), ``patch`` (exemplar copy from the best-matching place nearby, for patterned
areas; see :func:`patch_fill`), ``external`` (composite a supplied fill, e.g. from a ComfyUI inpainting model,
strictly inside the mask; flagged generative). Invariant: pixels outside the mask are bit-identical
to the input.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Tuple
import numpy as np
import torch
import torch.nn.functional as F

from .settings import FILL_METHODS as METHODS  # the record's choices
from .tiles import tile_boxes


def grow_mask(mask: np.ndarray, px: int) -> np.ndarray:
    """Dilate a boolean (H, W) mask by ``px`` pixels (3x3 steps, 8-connected)."""
    import cv2
    if px <= 0:
        return np.asarray(mask, bool)
    k = np.ones((2 * px + 1, 2 * px + 1), np.uint8)
    return cv2.dilate(np.asarray(mask, bool).view(np.uint8), k) > 0


_K4 = ((0.0, 0.25, 0.0), (0.25, 0.0, 0.25), (0.0, 0.25, 0.0))


def _jacobi(x, known, vals, iters):
    """``iters`` Jacobi sweeps of the discrete Laplace equation (4-neighbour mean, replicate border)
    on the unknown pixels; known pixels are held at ``vals``. x, vals: (C, H, W); known: (1, H, W).

    torch conv2d on any device; on CPU the same stencil runs through OpenCV's filter2D, which is
    several times faster there (same float32 arithmetic up to summation order).
    """
    x = torch.where(known, vals, x)
    if iters <= 0:
        return x
    if x.device.type == "cpu" and x.dtype == torch.float32:
        import cv2
        kn4 = np.array(_K4, np.float32)
        xn = np.ascontiguousarray(x.permute(1, 2, 0).numpy())
        vn = np.ascontiguousarray(vals.permute(1, 2, 0).numpy())
        kn = np.repeat(known[0].numpy()[..., None], xn.shape[2], 2)
        for _ in range(iters):
            xn = cv2.filter2D(xn, -1, kn4, borderType=cv2.BORDER_REPLICATE).reshape(vn.shape)
            np.copyto(xn, vn, where=kn)
        return torch.from_numpy(xn).permute(2, 0, 1)
    k = torch.tensor(_K4, dtype=x.dtype, device=x.device).view(1, 1, 3, 3)
    for _ in range(iters):
        y = F.conv2d(F.pad(x[:, None], (1, 1, 1, 1), mode="replicate"), k)[:, 0]
        x = torch.where(known, vals, y)
    return x


def harmonic_fill(img: torch.Tensor, mask: torch.Tensor, iters: int = 30, min_size: int = 4) -> torch.Tensor:
    """Push-pull + Jacobi harmonic fill.

    Args:
        img: (C, H, W) float tensor; mask: (H, W) bool tensor, True = unknown (to fill).
    Returns (C, H, W): ``img`` outside the mask exactly, a smooth membrane inside.
    """
    valid = (~mask).to(img.dtype)[None]
    if valid.sum() == 0:
        return img.clone()
    levels = [(img * valid, valid)]
    while min(levels[-1][1].shape[-2:]) >= 2 * min_size:
        s, v = levels[-1]
        levels.append((F.avg_pool2d(s[None], 2, ceil_mode=True)[0], F.avg_pool2d(v[None], 2, ceil_mode=True)[0]))
    s, v = levels[-1]
    mean = (s.sum((-1, -2)) / v.sum((-1, -2)).clamp(min=1e-12))[:, None, None]
    x = torch.where(v > 0, s / v.clamp(min=1e-12), mean.expand_as(s))
    for s, v in reversed(levels[:-1] if len(levels) > 1 else levels):
        if x.shape[-2:] != s.shape[-2:]:
            x = F.interpolate(x[None], size=s.shape[-2:], mode="bilinear", align_corners=False)[0]
        known = v >= 1 - 1e-6
        vals = s / v.clamp(min=1e-12)
        x = _jacobi(x, known, vals, iters)
    return torch.where(mask[None], x, img)


def patch_fill(img: np.ndarray, mask: np.ndarray, source: Optional[np.ndarray] = None, band: int = 4,
               search_px: Optional[int] = None, max_side: int = 256,
               progress: Optional[Callable[[int, int], None]] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Exemplar fill: each 8-connected hole is copied from the place nearby whose surroundings match best.

    For a hole, the template is its bounding box grown by ``band`` px; the sum of squared differences
    over the template's known pixels (OpenCV ``matchTemplate`` with a mask) is searched in a window of
    ``search_px`` px around it (default 3x the template side, at least 32), over source boxes that
    contain no hole pixel (and lie inside ``source`` where given). The best box is copied into the hole,
    plus a harmonic membrane of the mismatch on the known pixels of the template, so the copy joins its
    border without a seam. Holes wider than ``max_side`` px, or with no valid source, are left for the
    caller (returned as ``rest``).

    Args:
        img: (H, W, 3) float32 numpy in [0, 1]; mask: (H, W) bool, True = fill;
        source: optional (H, W) bool, where copies may come from.
    Returns ``(out, rest)``: ``out`` equals ``img`` outside ``mask`` bit for bit; ``rest`` (H, W) bool is
    the part of the mask that was not filled here.
    """
    import cv2
    from scipy import ndimage
    h, w = mask.shape
    out = img.copy()
    rest = np.zeros((h, w), bool)
    lab, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    blocked = mask if source is None else (mask | ~np.asarray(source, bool))
    for i, sl in enumerate(ndimage.find_objects(lab), 1):
        y0, y1, x0, x1 = sl[0].start, sl[0].stop, sl[1].start, sl[1].stop
        ty0, ty1, tx0, tx1 = max(0, y0 - band), min(h, y1 + band), max(0, x0 - band), min(w, x1 + band)
        th, tw = ty1 - ty0, tx1 - tx0
        region = lab[ty0:ty1, tx0:tx1] == i
        hole = mask[ty0:ty1, tx0:tx1]
        r = search_px if search_px is not None else max(32, 3 * max(th, tw))
        wy0, wy1, wx0, wx1 = max(0, ty0 - r), min(h, ty1 + r), max(0, tx0 - r), min(w, tx1 + r)
        known = (~hole).astype(np.float32)
        ok = max(y1 - y0, x1 - x0) <= max_side and known.any() and wy1 - wy0 > th and wx1 - wx0 > tw
        if ok:
            win = np.ascontiguousarray(img[wy0:wy1, wx0:wx1])
            tpl = np.ascontiguousarray(img[ty0:ty1, tx0:tx1])
            ssd = cv2.matchTemplate(win, tpl, cv2.TM_SQDIFF, mask=known)
            bad = cv2.matchTemplate(blocked[wy0:wy1, wx0:wx1].astype(np.float32), np.ones((th, tw), np.float32),
                                    cv2.TM_CCORR)
            ssd[(bad > 0.5) | ~np.isfinite(ssd)] = np.inf
            ok = bool(np.isfinite(ssd).any())
        if not ok:
            rest[ty0:ty1, tx0:tx1] |= region
        else:
            py, px = np.unravel_index(int(np.argmin(ssd)), ssd.shape)
            src = win[py:py + th, px:px + tw]
            resid = torch.from_numpy(np.ascontiguousarray((tpl - src).transpose(2, 0, 1)))
            corr = harmonic_fill(resid, torch.from_numpy(hole)).numpy().transpose(1, 2, 0)
            out[ty0:ty1, tx0:tx1][region] = np.clip(src + corr, 0, 1)[region]
        if progress:
            progress(i, n)
    return out, rest


def fill_image(img: np.ndarray, mask: np.ndarray, method: str = "harmonic", external: Optional[np.ndarray] = None,
               grow_px: int = 1, tile: int = 2048, overlap: int = 128, device: Any = "cpu",
               progress: Optional[Callable[[int, int], None]] = None, source: Optional[np.ndarray] = None,
               workers: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Fill ``mask`` in ``img``.

    Args:
        img: (H, W, 3) float32 numpy sRGB in [0, 1]; mask: (H, W) bool.
        external: (H, W, 3) float32 fill for ``method="external"``.
        source: optional (H, W) bool for ``method="patch"``: where copies may come from. Holes the patch
            method cannot serve (wider than 256 px, no clean source nearby) get the harmonic fill, as do the
            pieces the ``exemplar`` method finds no clean place for.
        grow_px: the mask is grown by this many px first (absorbs anti-aliased edges).
        workers: the ``exemplar`` method's workers (the ``fill_workers`` record: 0 = one per CPU, see
            :func:`restoration.exemplar.auto_workers`); the result does not depend on it.
    Returns ``(filled (H, W, 3) float32, used_mask (H, W) bool)``; outside ``used_mask`` the output
    is bit-identical to ``img``. Harmonic fill runs per tile with ``overlap`` px of context (tiles
    see only their context, so a tiled fill equals the untiled one when the holes and their
    influence fit in the overlap; documented tolerance in tests).
    """
    if method not in METHODS:
        raise ValueError(f"fill method {method!r} is not one of {METHODS}")
    if mask.shape != img.shape[:2]:
        raise ValueError(f"fill mask has size {mask.shape}; the image is {img.shape[:2]}")
    m = grow_mask(mask, grow_px)
    if not m.any():
        return img.copy(), m
    if method == "external":
        if external is None or external.shape != img.shape:
            raise ValueError(f"external fill must be an image of the scan's size {img.shape}, got "
                             f"{None if external is None else external.shape}")
        out = img.copy()
        out[m] = external[m].astype(np.float32)
        return out, m
    if method in ("telea", "ns"):
        import cv2
        out = img.copy()
        flag = cv2.INPAINT_TELEA if method == "telea" else cv2.INPAINT_NS
        h, w = m.shape
        boxes = list(tile_boxes(h, w, tile, overlap))
        for i, (y0, y1, x0, x1, py0, py1, px0, px1) in enumerate(boxes):
            mm = m[py0:py1, px0:px1]
            if mm[y0 - py0:y1 - py0, x0 - px0:x1 - px0].any():
                src = np.floor(img[py0:py1, px0:px1] * 255 + 0.5).astype(np.uint8)
                res = cv2.inpaint(src, mm.view(np.uint8), 5, flag).astype(np.float32) / 255
                core = (slice(y0 - py0, y1 - py0), slice(x0 - px0, x1 - px0))
                sub = m[y0:y1, x0:x1]
                out[y0:y1, x0:x1][sub] = res[core][sub]
            if progress:
                progress(i + 1, len(boxes))
        return out, m
    if method in ("patch", "exemplar"):
        if source is not None and np.asarray(source).shape != m.shape:
            raise ValueError(f"patch source mask has size {np.asarray(source).shape}; the image is {m.shape}")
        half = (lambda i, k: progress(i, 2 * k)) if progress else None  # type: ignore[misc]
        if method == "patch":
            out, m_rest = patch_fill(img, m, source, progress=half)
        else:
            from .exemplar import auto_workers, exemplar_fill
            out, m_rest = exemplar_fill(img, m, progress=half, workers=auto_workers(workers))
        if not m_rest.any():
            return out, m
        img = out  # the rest gets the harmonic fill, with the copied pixels as known context
        used, m = m, m_rest
        done = progress
        progress = (lambda i, k: done(k + i, 2 * k)) if done else None
    else:
        used = m
        out = img.copy()
    h, w = m.shape
    boxes = list(tile_boxes(h, w, tile, overlap))
    for i, (y0, y1, x0, x1, py0, py1, px0, px1) in enumerate(boxes):
        sub = m[y0:y1, x0:x1]
        if sub.any():
            t = torch.from_numpy(np.ascontiguousarray(img[py0:py1, px0:px1].transpose(2, 0, 1))).to(device)
            mt = torch.from_numpy(m[py0:py1, px0:px1]).to(device)
            res = harmonic_fill(t, mt).permute(1, 2, 0).cpu().numpy()
            out[y0:y1, x0:x1][sub] = res[y0 - py0:y1 - py0, x0 - px0:x1 - px0][sub]
        if progress:
            progress(i + 1, len(boxes))
    return out, used


def fill_qa(original: np.ndarray, filled: np.ndarray, labels: np.ndarray, rows: Sequence[dict], ring_px: int = 2,
            edge_de: float = 3.0, tile: int = 2048, heat: bool = True) -> Tuple[list, np.ndarray]:
    """Per-region fill QA columns added to copies of ``rows``: ``dE00_edge`` (mean fill vs mean of a
    ``ring_px`` ring of the original), ``mean_fill_Lab``, ``edge_mismatch``, ``needs_review``.

    Returns ``(rows, heat (H, W) float32)`` where heat is each filled region's dE00_edge; with
    ``heat=False`` the second item is the per-label value (N + 1,) instead (``heat = per[labels]``).
    """
    from .color import ciede2000
    from .detect import label_ring_means
    fin, _, _, _ = label_ring_means(filled, labels, ring_px, tile)
    _, ring, _, nr = label_ring_means(original, labels, ring_px, tile)
    de = ciede2000(torch.from_numpy(fin), torch.from_numpy(ring)).numpy()
    de[nr == 0] = 0
    out = []
    per = np.zeros(len(de), np.float32)
    for r in rows:
        r = dict(r)
        i = r["id"]
        r["mean_fill_Lab"] = [round(float(v), 3) for v in fin[i]]
        r["dE00_edge"] = round(float(de[i]), 3)
        r["edge_mismatch"] = bool(de[i] > edge_de) and r["fill_decision"] == "fill"
        r["needs_review"] = r["edge_mismatch"] or bool(r.get("generative"))
        if r["fill_decision"] == "fill":
            per[i] = de[i]
        out.append(r)
    return out, (per[labels] if heat else per)
