"""The benchmark's damage generator (issue 21): damage drawn on real pictures, separate from the detector.

Nothing here imports the detector (:mod:`restoration.detect`, :mod:`restoration.losses`): the damage is
drawn from a description of panel-painting damage, and every case draws its own variant of it from its
seed (:func:`draw_case`):

* **the paint around** the losses: the picture itself, toned (grey pictures get a duotone of a dark and a
  light paint colour), and in about a third of the cases darkened to 45-75 % (dark paint around a light
  gesso, the shape of the issue's noisy-gesso failure);
* **the ground** a loss exposes: a colour drawn from six families (cream and white gessos, chalk grounds,
  ochre, red-brown bole, grey or umber imprimatura) with a jitter of its own, a low-frequency texture and a
  per-pixel noise whose size is drawn log-uniform in 0.003-0.035 (noisy cream gesso: 0.02-0.035);
* **loss shapes**: frayed blobs (radius log-uniform 0.07-1.0 mm), flakes between craquelure cells, thin
  elongated tears, clusters of specks; anti-aliased edges (0.45-0.9 px);
* **intact paint that looks like ground**: flat light highlights whose colour is close to the
  ground's (3-12 % lighter or darker, strokes 0.15-0.6 mm wide with an edge softened over 0.8-2 px and a brush
  streak of 2-8 %, and round star points), and thin
  light lines 1-4 px wide of the same kind; about half of the lines have a loss drawn touching them
  (a window-frame highlight beside a loss);
* craquelure darkening the local paint, light scratches and stains (intact paint, not to fill);
* **a user-given ground** on some cases: ``info["given_ground"]`` is the drawn ground's mean colour (what a
  conservator would measure on an exposed loss), else None.

Ground truth is one boolean (H, W) map per class: ``loss``, ``craquelure``, ``scratch`` (damage), ``stain``,
``highlight`` and ``line`` (intact paint). Deterministic in ``(picture, seed)``.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from .scale import Scale

#: ground families: (base sRGB, jitter, kind)
GROUND_FAMILIES = (((0.88, 0.83, 0.72), 0.05, "cream gesso"), ((0.93, 0.91, 0.86), 0.03, "white gesso"),
                   ((0.84, 0.80, 0.70), 0.05, "chalk ground"), ((0.72, 0.58, 0.36), 0.06, "ochre"),
                   ((0.44, 0.25, 0.16), 0.05, "red-brown bole"), ((0.42, 0.38, 0.32), 0.06, "grey imprimatura"))


def _smooth(rng: np.random.Generator, h: int, w: int, cell_px: float) -> np.ndarray:
    """(H, W) float32 smooth noise in about [0, 1] with features of ``cell_px``."""
    import cv2
    sh, sw = max(2, int(h / cell_px) + 2), max(2, int(w / cell_px) + 2)
    return cv2.resize(rng.random((sh, sw)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)


def craquelure(rng: np.random.Generator, h: int, w: int, px_mm: float, cell_mm: float, crack_cover: float,
               crack_keep: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(edges bool (H, W), cell labels int32 (H, W), cracked-area bool) of an anisotropic wavy network."""
    import cv2
    cell = cell_mm / px_mm
    aspect = rng.uniform(1.2, 2.0)                       # cells elongated along the grain
    n = max(4, int(h * w / cell ** 2))
    seeds = np.ones((h, int(w / aspect) + 1), np.uint8)
    seeds[rng.integers(0, h, n), rng.integers(0, seeds.shape[1], n)] = 0
    _, lab = cv2.distanceTransformWithLabels(seeds, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
    # stretch along x and make the cell walls wavy by a smooth displacement
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    amp = 0.25 * cell
    dx = (_smooth(rng, h, w, cell * 0.7) - 0.5) * 2 * amp
    dy = (_smooth(rng, h, w, cell * 0.7) - 0.5) * 2 * amp
    mx = np.clip((xx + dx) / aspect, 0, seeds.shape[1] - 1)
    my = np.clip(yy + dy, 0, h - 1)
    lab = cv2.remap(lab.astype(np.float32), mx, my, cv2.INTER_NEAREST).astype(np.int32)
    e = np.zeros((h, w), bool)
    e[:, 1:] |= lab[:, 1:] != lab[:, :-1]
    e[1:, :] |= lab[1:, :] != lab[:-1, :]
    # keep a share of the walls (per pair of cells) where the picture is cracked
    area = _smooth(rng, h, w, 6 * cell) < np.quantile(_smooth(rng, 64, 64, 12), crack_cover)
    wall_keep = rng.random(lab.max() + 2) < crack_keep ** 0.5
    e &= wall_keep[lab] & area
    wide = _smooth(rng, h, w, 3 * cell) > 0.55
    thick = cv2.dilate(e.view(np.uint8), np.ones((2, 2), np.uint8)) > 0
    return np.where(wide, thick, e), lab, area


def _blob(rng: np.random.Generator, r: float) -> np.ndarray:
    """A frayed polygon around 0 of mean radius ``r`` px: (K, 2) float (x, y)."""
    k = max(12, int(2 * math.pi * r))
    ang = np.linspace(0, 2 * math.pi, k, endpoint=False)
    rad = np.ones(k)
    for f in (2, 3, 4, 7, 13, 21):
        rad += rng.uniform(0.03, 0.3) / math.sqrt(f) * np.cos(f * ang + rng.uniform(0, 2 * math.pi))
    rad += rng.normal(0, 0.07, k)
    rad = np.clip(rad, 0.3, None) * r
    stretch, rot = rng.uniform(1.0, 2.2), rng.uniform(0, math.pi)
    x, y = rad * np.cos(ang) * stretch, rad * np.sin(ang) / stretch ** 0.5
    return np.stack([x * math.cos(rot) - y * math.sin(rot), x * math.sin(rot) + y * math.cos(rot)], -1)


def _stroke(rng: np.random.Generator, p: np.ndarray, length: float) -> np.ndarray:
    """A gently curved polyline of ``length`` px from ``p``: (16, 2) float."""
    ang, bend = rng.uniform(0, 2 * math.pi), rng.normal(0, 0.4)
    t = np.linspace(0, 1, 16)
    return p + length * np.stack([np.cos(ang + bend * t), np.sin(ang + bend * t)], -1) * t[:, None]


def _soft(mask: np.ndarray, sigma: float) -> np.ndarray:
    """Anti-aliased coverage (H, W) float32 of a boolean mask (>= 0.5 inside, < 0.5 outside)."""
    import cv2
    a = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), sigma)
    return np.where(mask, np.maximum(a, 0.5), np.minimum(a, 0.49)).astype(np.float32)


def paint_variant(clean: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """The picture as the paint around the losses: (H, W, 3) float32 and what was done.

    A grey picture is toned as a duotone (a dark and a light paint colour); in about a third of the cases
    the paint is darkened to 45-75 % (dark paint around a light gesso)."""
    img = np.asarray(clean, np.float32)
    info: dict[str, Any] = {}
    if float(np.abs(img - img.mean(2, keepdims=True)).max()) < 0.02:   # a grey picture
        dark = rng.uniform([0.05, 0.04, 0.02], [0.35, 0.30, 0.30])
        light = rng.uniform([0.60, 0.55, 0.45], [1.0, 0.97, 0.95])
        g = img.mean(2, keepdims=True)
        img = dark + (light - dark) * g
        info["duotone"] = [[round(float(v), 3) for v in dark], [round(float(v), 3) for v in light]]
    if rng.random() < 0.35:
        k = float(rng.uniform(0.45, 0.75))
        img = img * k
        info["darkened"] = round(k, 3)
    return np.clip(img, 0, 1).astype(np.float32), info


def draw_ground(rng: np.random.Generator, h: int, w: int, noisy_gesso: bool) -> tuple[np.ndarray, dict]:
    """The exposed ground: (H, W, 3) float32 with its texture and noise, and its description."""
    if noisy_gesso:
        base, jit, kind = GROUND_FAMILIES[0]
        noise = float(rng.uniform(0.02, 0.035))
    else:
        base, jit, kind = GROUND_FAMILIES[int(rng.integers(len(GROUND_FAMILIES)))]
        noise = float(math.exp(rng.uniform(math.log(0.003), math.log(0.02))))
    g = np.clip(np.array(base) + rng.uniform(-jit, jit, 3), 0.05, 0.97).astype(np.float32)
    tex_amp = float(rng.uniform(0.0, 0.04))
    tex = (_smooth(rng, h, w, rng.uniform(12, 40)) - 0.5) * 2 * tex_amp
    lum = rng.normal(0, noise, (h, w)).astype(np.float32)
    chroma = rng.normal(0, noise / 3, (h, w, 3)).astype(np.float32)
    ground = np.clip(g * (1 + tex[..., None]) + lum[..., None] + chroma, 0, 1)
    return ground.astype(np.float32), {"ground_rgb": [round(float(v), 4) for v in g], "ground_kind": kind,
                                       "ground_noise": round(noise, 4), "ground_texture": round(tex_amp, 4)}


def _near_ground_colour(rng: np.random.Generator, g: np.ndarray) -> np.ndarray:
    """A paint colour close to the ground's (lighter or darker by 3-12 % with a slight hue shift)."""
    d = rng.uniform(0.03, 0.12) * rng.choice([-1.0, 1.0])
    return np.clip(g * (1 + d) + rng.normal(0, 0.015, 3), 0, 1).astype(np.float32)


def draw_case(clean: np.ndarray, seed: int, dpi: float = 600.0) -> tuple[np.ndarray, dict, dict]:
    """Draw one benchmark case on ``clean`` ((H, W, 3) float32 sRGB in [0, 1]); deterministic in ``seed``.

    Returns ``(damaged (H, W, 3) float32, gt {loss, craquelure, scratch, stain, highlight, line: (H, W)
    bool}, info)``; ``info`` holds the ground (colour, kind, noise, texture), the paint variant, the
    ``given_ground`` (sRGB or None) and counts. Classes are disjoint.
    """
    import cv2
    rng = np.random.default_rng(seed)
    h, w = clean.shape[:2]
    px_mm = Scale(dpi).mm_per_px
    cm2 = h * w * (px_mm / 10) ** 2
    img, paint = paint_variant(clean, rng)
    noisy_gesso = "darkened" in paint and rng.random() < 0.7
    ground, ginfo = draw_ground(rng, h, w, noisy_gesso)
    g = np.array(ginfo["ground_rgb"], np.float32)
    gt = {k: np.zeros((h, w), bool) for k in ("loss", "craquelure", "scratch", "stain", "highlight", "line")}
    # stains (intact paint)
    for _ in range(int(rng.integers(0, 3))):
        r = rng.uniform(2.0, 5.0) / px_mm
        m = np.zeros((h, w), np.uint8)
        cv2.fillPoly(m, [np.round(_blob(rng, r) + [rng.uniform(0, w), rng.uniform(0, h)]).astype(np.int32)], 1)
        soft = cv2.GaussianBlur(m.astype(np.float32), (0, 0), max(1.0, 0.15 * r))
        k = (0.10 * soft + 0.12 * np.clip(soft * (1 - soft) * 4, 0, 1) ** 2)[..., None]
        img = img * (1 - k) + img * np.array([0.85, 0.72, 0.45], np.float32) * k
        gt["stain"] |= soft > 0.1
    # light flat highlights near the ground colour (intact paint): strokes and star points
    for _ in range(int(rng.poisson(rng.uniform(0.8, 3.0) * cm2))):
        m = np.zeros((h, w), np.uint8)
        p = np.array([rng.uniform(0, w), rng.uniform(0, h)])
        if rng.random() < 0.3:
            cv2.circle(m, (int(p[0]), int(p[1])), max(2, int(rng.uniform(0.08, 0.3) / px_mm)), 1, -1)
        else:
            wd = max(2, int(rng.uniform(0.15, 0.6) / px_mm))
            cv2.polylines(m, [np.round(_stroke(rng, p, rng.uniform(1.0, 6.0) / px_mm)).astype(np.int32)], False, 1, wd)
        hm = m > 0
        col = _near_ground_colour(rng, g)
        streak = 1 + (_smooth(rng, h, w, rng.uniform(3, 10)) - 0.5) * rng.uniform(0.02, 0.08)
        a = _soft(hm, rng.uniform(0.8, 2.0))[..., None]  # paint blends: a softer edge than a break
        img = img * (1 - a) + np.clip(col * streak[..., None], 0, 1) * a
        gt["highlight"] |= hm
    # thin light lines near the ground colour (intact paint); some get a loss touching them below
    lines = []
    for _ in range(int(rng.poisson(rng.uniform(0.8, 2.5) * cm2))):
        m = np.zeros((h, w), np.uint8)
        pts = _stroke(rng, np.array([rng.uniform(0, w), rng.uniform(0, h)]), rng.uniform(2.0, 10.0) / px_mm)
        cv2.polylines(m, [np.round(pts).astype(np.int32)], False, 1, int(rng.choice([1, 2, 2, 3, 4])))
        lmask = m > 0
        a = _soft(lmask, 0.5)[..., None]
        img = img * (1 - a) + _near_ground_colour(rng, g) * a
        gt["line"] |= lmask
        lines.append(pts)
    gt["highlight"] &= ~gt["line"]
    # craquelure darkening the local paint
    crack, cells, cracked = craquelure(rng, h, w, px_mm, float(rng.uniform(0.6, 1.3)), float(rng.uniform(0.2, 0.7)), 0.7)
    img[crack] *= (0.35 + 0.25 * _smooth(rng, h, w, 40))[crack][:, None]
    gt["craquelure"] = crack
    # losses: frayed blobs, flakes, tears, speck clusters, and losses touching the lines
    lm = np.zeros((h, w), np.uint8)
    lo, hi = math.log(0.07 / px_mm), math.log(1.0 / px_mm)
    for _ in range(int(rng.poisson(rng.uniform(6, 16) * cm2))):
        c = np.array([rng.uniform(0, w), rng.uniform(0, h)])
        kind = rng.random()
        if kind < 0.12:   # a tear: thin and elongated
            cv2.polylines(lm, [np.round(_stroke(rng, c, rng.uniform(1.0, 4.0) / px_mm)).astype(np.int32)], False, 1,
                          max(3, int(rng.uniform(0.12, 0.35) / px_mm)))
        elif kind < 0.22:  # a cluster of specks around a small loss
            r = math.exp(rng.uniform(lo, lo + 0.5 * (hi - lo)))
            cv2.fillPoly(lm, [np.round(_blob(rng, r) + c).astype(np.int32)], 1)
            for _ in range(int(rng.integers(2, 7))):
                cv2.fillPoly(lm, [np.round(_blob(rng, rng.uniform(1.5, 4)) + c + rng.normal(0, 3 * r, 2)).astype(np.int32)], 1)
        else:
            cv2.fillPoly(lm, [np.round(_blob(rng, math.exp(rng.uniform(lo, hi))) + c).astype(np.int32)], 1)
    ids = np.unique(cells[cracked & crack])
    nf = int(rng.poisson(rng.uniform(2, 8) * cm2))
    if len(ids) and nf:
        fl = np.isin(cells, rng.choice(ids, min(nf, len(ids)), replace=False)) & cracked
        lm |= (cv2.erode(fl.view(np.uint8), np.ones((2, 2), np.uint8)) > 0).astype(np.uint8)
    n_touch = 0
    for pts in lines:
        if rng.random() < 0.5:
            q = pts[int(rng.integers(2, 14))]
            r = math.exp(rng.uniform(math.log(0.2 / px_mm), math.log(0.8 / px_mm)))
            off = rng.normal(0, 1, 2)
            c = q + off / (np.linalg.norm(off) + 1e-9) * r * rng.uniform(0.6, 1.0)
            cv2.fillPoly(lm, [np.round(_blob(rng, r) + c).astype(np.int32)], 1)
            n_touch += 1
    loss = lm > 0
    a = _soft(loss, rng.uniform(0.45, 0.9))[..., None]
    img = img * (1 - a) + ground * a
    gt["loss"] = loss
    for k in ("craquelure", "stain", "highlight", "line"):
        gt[k] &= ~loss
    # light scratches
    sm = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.poisson(rng.uniform(0.3, 1.5) * cm2))):
        pts = _stroke(rng, np.array([rng.uniform(0, w), rng.uniform(0, h)]), rng.uniform(2.0, 8.0) / px_mm)
        cv2.polylines(sm, [np.round(pts).astype(np.int32)], False, 1, int(rng.choice([1, 1, 2, 3])))
    sc = (sm > 0) & ~loss
    img[sc] = img[sc] + (np.array([0.95, 0.93, 0.88], np.float32) - img[sc]) * rng.uniform(0.5, 0.85)
    gt["scratch"] = sc
    for k in ("craquelure", "stain", "highlight", "line"):
        gt[k] &= ~sc
    gt["stain"] &= ~gt["craquelure"]
    img = img + rng.normal(0, rng.uniform(0.002, 0.006), img.shape).astype(np.float32)
    given = [float(v) for v in ground[loss].mean(0)] if loss.any() and rng.random() < 0.3 else None
    info = {"seed": seed, "dpi": dpi, **ginfo, "paint": paint, "noisy_gesso": bool(noisy_gesso),
            "given_ground": given, "losses_touching_lines": n_touch,
            "gt_pixels": {k: int(v.sum()) for k, v in gt.items()}}
    return np.clip(img, 0, 1).astype(np.float32), gt, info
