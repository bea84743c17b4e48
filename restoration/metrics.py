"""Evaluation against synthetic ground truth (spec 4.6, N14)."""

from __future__ import annotations

from typing import Dict, Optional, Tuple
import numpy as np
import torch

from .classes import CLASS_IDS
from .color import ciede2000, rgb_to_lab


def f1_tol(pred: np.ndarray, gt: np.ndarray, tol: int = 1) -> Tuple[float, float, float]:
    """Pixel precision/recall/F1 with a ``tol`` px boundary tolerance: a predicted pixel is correct if
    a GT pixel lies within tol (Chebyshev), a GT pixel is found if a prediction lies within tol."""
    import cv2
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    k = np.ones((2 * tol + 1,) * 2, np.uint8)
    gd = cv2.dilate(gt.view(np.uint8), k) > 0 if tol else gt
    pd = cv2.dilate(pred.view(np.uint8), k) > 0 if tol else pred
    p = (pred & gd).sum() / max(int(pred.sum()), 1)
    r = (gt & pd).sum() / max(int(gt.sum()), 1)
    if pred.sum() == 0 and gt.sum() == 0:
        return 1.0, 1.0, 1.0
    return float(p), float(r), float(2 * p * r / max(p + r, 1e-12))


def detection_scores(pred_classes: np.ndarray, gt_classes: np.ndarray, tol: int = 1) -> Dict[str, dict]:
    """Per-class and all-class F1 (1 px tolerance) plus strict IoU of the union."""
    out = {}
    for name, cid in CLASS_IDS.items():
        if name == "user":
            continue
        p, r, f = f1_tol(pred_classes == cid, gt_classes == cid, tol)
        out[name] = {"precision": round(p, 4), "recall": round(r, 4), "f1": round(f, 4)}
    p, r, f = f1_tol(pred_classes > 0, gt_classes > 0, tol)
    a, b = pred_classes > 0, gt_classes > 0
    out["all"] = {"precision": round(p, 4), "recall": round(r, 4), "f1": round(f, 4),
                  "iou_strict": round(float((a & b).sum() / max((a | b).sum(), 1)), 4)}
    return out


def fill_scores(filled: np.ndarray, clean: np.ndarray, mask: np.ndarray, damaged: Optional[np.ndarray] = None
                ) -> dict:
    """ΔE00 of the fill against the clean image inside ``mask``: mean, p95, and by distance from
    the mask edge (px buckets); with ``damaged`` also the no-fill baseline."""
    import cv2
    m = np.asarray(mask, bool)
    if not m.any():
        return {"n_px": 0}
    de = ciede2000(rgb_to_lab(torch.from_numpy(filled[m])), rgb_to_lab(torch.from_numpy(clean[m]))).numpy()
    dist = cv2.distanceTransform(m.view(np.uint8), cv2.DIST_L2, 5)[m]
    buckets = {}
    for lo, hi in ((0, 1.5), (1.5, 3), (3, 6), (6, 12), (12, 1e9)):
        sel = (dist > lo) & (dist <= hi)
        if sel.any():
            buckets[f"{lo}-{hi if hi < 1e9 else 'inf'}"] = round(float(de[sel].mean()), 3)
    out = {"n_px": int(m.sum()), "dE00_mean": round(float(de.mean()), 4),
           "dE00_p95": round(float(np.percentile(de, 95)), 4), "dE00_by_depth_px": buckets}
    if damaged is not None:
        de0 = ciede2000(rgb_to_lab(torch.from_numpy(damaged[m])), rgb_to_lab(torch.from_numpy(clean[m]))).numpy()
        out["no_fill_dE00_mean"] = round(float(de0.mean()), 4)
    return out
