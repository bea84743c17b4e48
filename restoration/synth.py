"""Procedural "painting" with synthetic damage of every class and its ground truth (spec section 4.6).

Deterministic in ``seed``. Everything is numpy + OpenCV; a 1536 x 1024 sample takes about a second.
"""

from __future__ import annotations

from typing import Tuple
import math
from dataclasses import dataclass

import numpy as np

from .classes import CLASS_IDS
from .scale import Scale
from .settings import SETTINGS

GROUND_RGB = (0.86, 0.80, 0.68)  # gesso-like ground exposed by losses


@dataclass(frozen=True)
class SynthConfig:
    """The synthetic painting's size and scale (``height``, ``width``, ``dpi``: records of
    :data:`restoration.settings.SETTINGS`, checked when the config is made) and its damage densities."""
    height: int = SETTINGS["height"].default
    width: int = SETTINGS["width"].default
    dpi: float = SETTINGS["dpi"].default
    n_forms: int = 12
    n_painted_lines: int = 25
    crack_seeds: int = 900          # per 1024^2 px, scaled by area
    crack_keep: float = 0.55        # fraction of the Voronoi network kept
    n_losses: int = 300             # per 1024^2 px, scaled by area
    loss_radius_mm: tuple = (0.05, 1.2)
    n_scratches: int = 15
    n_splits: int = 1
    noise: float = 0.01

    def __post_init__(self) -> None:
        for k in ("height", "width", "dpi"):
            SETTINGS[k].check(getattr(self, k))


def _smooth_field(rng, h, w, cells, ch):
    import cv2
    small = rng.random((cells, max(2, int(cells * w / h)), ch)).astype(np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC).reshape(h, w, ch)


def clean_painting(cfg: "SynthConfig", rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) float32 clean image: colour fields, brushwork, hard-edged forms, painted lines."""
    import cv2
    h, w = cfg.height, cfg.width
    from .color import rgb_to_lab
    import torch
    # muted palette kept away from the ground colour (so a loss is distinguishable from paint)
    colours: list = []
    ground_lab = rgb_to_lab(torch.tensor(GROUND_RGB, dtype=torch.float64))
    while len(colours) < 24:
        c = rng.uniform(0.05, 0.85, 3) * rng.uniform(0.5, 1.0)
        lab = rgb_to_lab(torch.tensor(c, dtype=torch.float64))
        if float(torch.linalg.norm(lab - ground_lab)) > 30:
            colours.append(c)
    palette = np.array(colours, np.float32)
    wts = _smooth_field(rng, h, w, 4, 3)
    base = (wts[..., :1] * palette[0] + wts[..., 1:2] * palette[1] + wts[..., 2:3] * palette[2]) / (
        wts.sum(-1, keepdims=True) + 1e-6)
    # anisotropic brushwork: noise blurred along a direction
    noise = rng.standard_normal((h, w)).astype(np.float32)
    k = np.zeros((1, 15), np.float32) + 1 / 15
    brush = cv2.filter2D(cv2.GaussianBlur(noise, (0, 0), 1.0), -1, k)
    img = base * (1 + 0.12 * brush[..., None])
    for _ in range(cfg.n_forms):
        col = palette[rng.integers(3, len(palette))]
        cx, cy = rng.integers(0, w), rng.integers(0, h)
        r = rng.uniform(0.05, 0.18) * min(h, w)
        n = rng.integers(3, 8)
        ang = np.sort(rng.uniform(0, 2 * math.pi, n))
        pts = np.stack([cx + r * np.cos(ang) * rng.uniform(0.6, 1.0, n),
                        cy + r * np.sin(ang) * rng.uniform(0.6, 1.0, n)], -1).astype(np.int32)
        bx0, by0 = np.clip(pts.min(0), 0, [w, h]); bx1, by1 = np.clip(pts.max(0) + 1, 0, [w, h])
        if bx1 <= bx0 or by1 <= by0:
            continue
        m = np.zeros((by1 - by0, bx1 - bx0), np.uint8)
        cv2.fillPoly(m, [pts - [bx0, by0]], 1)
        crop = img[by0:by1, bx0:bx1]
        crop[m > 0] = (col * (1 + 0.08 * brush[by0:by1, bx0:bx1, None]))[m > 0]
    for _ in range(cfg.n_painted_lines):  # true image detail (wide, dark): must not be flagged
        p0 = np.array([rng.integers(0, w), rng.integers(0, h)])
        p1 = p0 + rng.integers(-300, 300, 2)
        col = palette[rng.integers(0, len(palette))] * 0.45
        th = int(rng.integers(12, 20))
        bx0, by0 = np.clip(np.minimum(p0, p1) - th, 0, [w, h]); bx1, by1 = np.clip(np.maximum(p0, p1) + th, 0, [w, h])
        if bx1 <= bx0 or by1 <= by0:
            continue
        m = np.zeros((by1 - by0, bx1 - bx0), np.uint8)
        cv2.line(m, tuple(int(v) for v in p0 - [bx0, by0]), tuple(int(v) for v in p1 - [bx0, by0]), 255, th, cv2.LINE_AA)
        a = (m.astype(np.float32) / 255)[..., None]
        img[by0:by1, bx0:bx1] = img[by0:by1, bx0:bx1] * (1 - a) + col.astype(np.float32) * a
    return np.clip(img, 0, 1).astype(np.float32)


def _voronoi_edges(rng, h, w, n_seeds):
    import cv2
    seeds = np.ones((h, w), np.uint8)
    ys, xs = rng.integers(0, h, n_seeds), rng.integers(0, w, n_seeds)
    seeds[ys, xs] = 0
    _, lab = cv2.distanceTransformWithLabels(seeds, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
    e = np.zeros((h, w), bool)
    e[:, 1:] |= lab[:, 1:] != lab[:, :-1]
    e[1:, :] |= lab[1:, :] != lab[:-1, :]
    return e, lab


def make_sample(cfg: "SynthConfig" = SynthConfig(), seed: int = 0) -> Tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Return ``(damaged, clean, gt_classes, info)``.

    damaged/clean: (H, W, 3) float32 in [0, 1]; gt_classes: (H, W) uint8 with the ids of
    ``classes.CLASS_IDS`` (0 = undamaged); info: dict with the ground colour and counts.
    """
    import cv2
    rng = np.random.default_rng(SETTINGS["seed"].check(seed))
    h, w = cfg.height, cfg.width
    clean = clean_painting(cfg, rng)
    img = clean.copy()
    gt = np.zeros((h, w), np.uint8)
    area_scale = h * w / 1024 ** 2
    mm = Scale(cfg.dpi).mm_per_px
    # craquelure: part of a Voronoi network, 1-2 px wide, darkened to 35-60 %
    edges, lab = _voronoi_edges(rng, h, w, int(cfg.crack_seeds * area_scale))
    keep_cell = rng.random(lab.max() + 1) < cfg.crack_keep
    crack = edges & keep_cell[lab]
    thick = cv2.dilate(crack.astype(np.uint8), np.ones((2, 2), np.uint8)) > 0
    crack = np.where(_smooth_field(rng, h, w, 12, 1)[..., 0] > 0.5, thick, crack)
    dark = _smooth_field(rng, h, w, 16, 1)[..., 0] * 0.25 + 0.35
    img[crack] *= dark[crack][:, None]
    gt[crack] = CLASS_IDS["craquelure"]
    # losses: polygons down to the ground, radius log-uniform
    gnoise = rng.standard_normal((h, w, 3)).astype(np.float32) * 0.015
    ground = np.array(GROUND_RGB, np.float32) + gnoise
    lo, hi = (r / mm for r in cfg.loss_radius_mm)
    lm = np.zeros((h, w), np.uint8)
    for _ in range(int(cfg.n_losses * area_scale)):
        r = math.exp(rng.uniform(math.log(lo), math.log(hi)))
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        n = int(rng.integers(5, 10))
        ang = np.sort(rng.uniform(0, 2 * math.pi, n))
        pts = np.stack([cx + r * np.cos(ang) * rng.uniform(0.5, 1.0, n),
                        cy + r * np.sin(ang) * rng.uniform(0.5, 1.0, n)], -1)
        cv2.fillPoly(lm, [np.round(pts).astype(np.int32)], 1)
    img[lm > 0] = ground[lm > 0]
    gt[lm > 0] = CLASS_IDS["loss"]
    # support split: one long near-straight dark crack, 0.25-0.35 mm wide, > 50 mm long if it fits
    for _ in range(cfg.n_splits):
        y0 = rng.uniform(0.3, 0.7) * h
        pts = np.stack([np.linspace(-5, w + 5, 40), y0 + np.cumsum(rng.normal(0, 2.0, 40))], -1)
        m = np.zeros((h, w), np.uint8)
        cv2.polylines(m, [pts.astype(np.int32)], False, 1, max(2, int(round(0.3 / mm))))
        img[m > 0] = np.minimum(img[m > 0] * 0.25, (0.06, 0.045, 0.035))  # dark gap in the support
        gt[m > 0] = CLASS_IDS["support_split"]
    # scratches: light 1 px lines
    sm = np.zeros((h, w), np.uint8)
    for _ in range(cfg.n_scratches):
        p0 = np.array([rng.uniform(0, w), rng.uniform(0, h)])
        d = rng.uniform(2, 8) / mm
        a = rng.uniform(0, 2 * math.pi)
        p1 = p0 + d * np.array([math.cos(a), math.sin(a)])
        cv2.line(sm, tuple(int(v) for v in p0), tuple(int(v) for v in p1), 1, 1)
    img[sm > 0] = 1 - (1 - img[sm > 0]) * 0.25
    gt[sm > 0] = CLASS_IDS["small_defect"]
    img = img + rng.standard_normal(img.shape).astype(np.float32) * cfg.noise
    return np.clip(img, 0, 1).astype(np.float32), clean, gt, {
        "seed": seed, "ground_rgb": list(GROUND_RGB), "dpi": cfg.dpi,
        "gt_pixels": {k: int((gt == v).sum()) for k, v in CLASS_IDS.items() if v <= 4}}
