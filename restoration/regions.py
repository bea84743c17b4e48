"""Region labelling and the per-region table in millimetres (spec 4.2 N4, 4.3, 4.5).

Every 8-connected component of the footprint is a region; every region is in the table, with a
``fill_decision`` and ``skip_reason`` instead of being dropped.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple
import math
from dataclasses import dataclass

import numpy as np
import torch

from .classes import CLASS_IDS, CLASS_NAMES
from .color import ciede2000
from .detect import label_ring_means
from .scale import Scale
from .settings import SETTINGS

STRUCT8 = np.ones((3, 3), bool)


@dataclass(frozen=True)
class RegionConfig:
    """How regions are measured and which are too small to fill. ``viewing_distance_mm`` and
    ``registration_tol_um`` are settings (:data:`restoration.settings.SETTINGS`), checked when the config is
    made; ``invisible_de`` (ΔE00), ``ring_px`` and ``tile`` (px) are the method's constants."""
    viewing_distance_mm: float = SETTINGS["viewing_distance_mm"].default
    registration_tol_um: float = SETTINGS["registration_tol_um"].default
    invisible_de: float = 2.0
    ring_px: int = 3
    tile: int = SETTINGS["tile"].default

    def __post_init__(self) -> None:
        for k in ("viewing_distance_mm", "registration_tol_um"):
            SETTINGS[k].check(getattr(self, k))
        if not self.invisible_de >= 0 or int(self.ring_px) < 1:
            raise ValueError(f"invisible_de={self.invisible_de!r} must be >= 0 and ring_px={self.ring_px!r} >= 1")


def area_mm2(n_px: float, dpi: float) -> float:
    """Area of ``n_px`` pixels at ``dpi`` in mm^2 (:meth:`restoration.scale.Scale.px_area_to_mm2`)."""
    return Scale(dpi).px_area_to_mm2(n_px)


def label_regions(footprint: np.ndarray) -> Tuple[np.ndarray, int]:
    """8-connected labels of a boolean (H, W) map, raster-order ids (int32), and the count N."""
    from scipy import ndimage
    lab, n = ndimage.label(np.asarray(footprint, bool), structure=STRUCT8)
    return lab.astype(np.int32, copy=False), int(n)


def label_by_fill(classes: np.ndarray, fill_classes: Sequence[str]) -> Tuple[np.ndarray, int]:
    """Label the fill-class footprint and the remaining damage separately.

    Regions 1..Nf are the 8-connected components of each filled class (a loss and a light defect it
    touches are two regions, issue 21); Nf+1..N the components of the other damage (they go
    in the table as ``class_not_filled``). A loss touching a crack is therefore not merged with it.
    Returns (labels int32, N).
    """
    from .detect import fill_mask_from_classes
    fm = fill_mask_from_classes(classes, fill_classes)
    # each filled class on its own: a loss touching a thin light line found as a small defect is not merged
    la = np.zeros(classes.shape, np.int32)
    na = 0
    for c in fill_classes:
        lc, nc = label_regions(classes == CLASS_IDS[c])
        la[lc > 0] = lc[lc > 0] + na
        na += nc
    lb, nb = label_regions((classes > 0) & ~fm)
    la[lb > 0] = lb[lb > 0] + na
    return la, na + nb


def region_table(labels: np.ndarray, classes: np.ndarray, img: np.ndarray, dpi: "float | Scale",
                 fill_classes: Sequence[str], cfg: RegionConfig = RegionConfig()) -> List[dict]:
    """Per-region rows (dicts), ordered by id. Coordinates: origin top-left, x right, y down, mm.

    labels: (H, W) int32 from :func:`label_regions`; classes: (H, W) uint8 class ids;
    img: (H, W, 3) float32 sRGB scan; fill_classes: names of classes that get filled.
    """
    import cv2
    from scipy import ndimage
    n = int(labels.max())
    if n == 0:
        return []
    scale = Scale.of(dpi)
    mm = scale.mm_per_px
    objs = ndimage.find_objects(labels)
    inside, ring, n_in, n_ring = label_ring_means(img, labels, cfg.ring_px, cfg.tile)
    contrast = ciede2000(torch.from_numpy(inside), torch.from_numpy(ring)).numpy()
    arcmin_mm = cfg.viewing_distance_mm * math.tan(math.radians(1 / 60))
    rows = []
    for i, sl in enumerate(objs, 1):
        if sl is None:
            continue
        sub = labels[sl] == i
        cls_counts = np.bincount(classes[sl][sub], minlength=8)
        cls_counts[0] = 0
        cid = int(cls_counts.argmax())
        pad = np.pad(sub, 1).astype(np.uint8)
        edt = cv2.distanceTransform(pad, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        r_in = float(edt.max()) * mm  # max inscribed radius (distance to the nearest outside px centre)
        contours, _ = cv2.findContours(pad, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        perim = sum(cv2.arcLength(c, True) for c in contours) * mm
        ys, xs = np.nonzero(sub)
        cy, cx = ys.mean() + sl[0].start, xs.mean() + sl[1].start
        name = CLASS_NAMES.get(cid, "unknown")
        width = 2 * r_in
        if name not in fill_classes:
            decision, reason = "skip", "class_not_filled"
        elif name == "user":  # painted by the user: an explicit decision, not gated
            decision, reason = "fill", ""
        elif width < 2 * cfg.registration_tol_um / 1000:
            decision, reason = "skip", "below_registration"
        elif contrast[i] < cfg.invisible_de or width < arcmin_mm:
            decision, reason = "skip", "invisible"
        else:
            decision, reason = "fill", ""
        rows.append({
            "id": i, "class": name, "fill_decision": decision, "skip_reason": reason,
            "area_px": int(n_in[i]), "area_mm2": round(scale.px_area_to_mm2(n_in[i]), 6),
            "bbox_px": [sl[1].start, sl[0].start, sl[1].stop, sl[0].stop],
            "bbox_mm": [round(v * mm, 4) for v in (sl[1].start, sl[0].start, sl[1].stop, sl[0].stop)],
            "centroid_mm": [round((cx + 0.5) * mm, 4), round((cy + 0.5) * mm, 4)],
            "max_inscribed_radius_mm": round(r_in, 4), "max_width_mm": round(width, 4),
            "perimeter_mm": round(perim, 4),
            "mean_Lab_inside": [round(float(v), 3) for v in inside[i]],
            "mean_Lab_ring": [round(float(v), 3) for v in ring[i]] if n_ring[i] else None,
            "dE00_contrast": round(float(contrast[i]), 3) if n_ring[i] else None,
        })
    return rows


def decision_mask(labels: np.ndarray, rows: Sequence[dict], decision: str = "fill") -> np.ndarray:
    """Boolean (H, W) map of the regions whose ``fill_decision`` equals ``decision``."""
    keep = np.zeros(int(labels.max()) + 1, bool)
    for r in rows:
        keep[r["id"]] = r["fill_decision"] == decision
    return keep[labels]


def table_csv(rows: Sequence[dict]) -> str:
    """The table as CSV text (lists joined by spaces)."""
    if not rows:
        return "id\n"
    keys = list(rows[0].keys())
    for r in rows:
        for k in r:
            if k not in keys:
                keys.append(k)
    out = [",".join(keys)]
    for r in rows:
        vals = []
        for k in keys:
            v = r.get(k)
            if isinstance(v, (list, tuple)):  # numbers by spaces; phrases (reasons) by "; "
                v = ("; " if any(isinstance(x, str) for x in v) else " ").join(str(x) for x in v)
            vals.append("" if v is None else str(v).replace(",", ";"))
        out.append(",".join(vals))
    return "\n".join(out) + "\n"
