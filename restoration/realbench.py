"""Damage drawn on real pictures, with ground truth per class, and the scorer of a restoration (issue 11).

The pictures are real photographs that scikit-image ships with its wheel (``skimage.data``: nothing is
downloaded). :func:`damage_image` draws damage modelled on what a conservator meets on a panel painting,
at an assumed 600 dpi (42.3 um/px):

* **losses** that expose the ground, light (gesso, warm white) or dark (red-brown bole or a dark
  imprimatura), with a faint texture of their own. Two kinds: *flakes*, paint islands between cracks
  that fell off along the craquelure (so their edges follow the crack polygons), and *irregular losses*
  whose radius is log-uniform in ``loss_radius_mm`` and whose edge is frayed by multi-frequency noise
  (flaking edges). Edges are anti-aliased over about one pixel, as a scan renders them.
* **craquelure**: a Voronoi network of anisotropic cells (panel cracks run with the grain), present in
  patches of the picture, 1-2 px wide, wavy, each crack darkening the local paint to 35-60 % (so it
  follows the paint's own colour).
* **scratches**: light, slightly curved lines 1-3 px wide (abrasion to a lighter layer).
* **stains**: broad soft discolourations with a darker tide line. They are not damage to fill: a stain
  filled counts as intact paint covered.

Ground truth is one boolean (H, W) map per class (``loss``, ``craquelure``, ``scratch``, ``stain``).
:func:`score` rates a result as a conservator would: which share of the filled area is intact paint,
which share of the losses (by area and by region) was found, how precise the craquelure is, which share
of the scratches was found and how close the fill is to the undamaged picture (CIEDE2000).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from .classes import CLASS_IDS
from .color import ciede2000, rgb_to_lab
from .scale import Scale

if TYPE_CHECKING:
    from .detect import DetectConfig
    from .review import ReviewConfig

# the pictures used, and which ground each gets (light gesso or a dark ground), chosen so that both
# grounds meet bright, dark, smooth and textured content
IMAGES = {"astronaut": "light", "chelsea": "dark", "coffee": "light", "rocket": "light",
          "hubble_deep_field": "light", "motorcycle_left": "dark", "grass": "light", "immunohistochemistry": "dark"}
LIGHT_GROUNDS = ((0.88, 0.84, 0.74), (0.92, 0.90, 0.84), (0.84, 0.78, 0.64))
DARK_GROUNDS = ((0.42, 0.24, 0.16), (0.30, 0.26, 0.22), (0.50, 0.30, 0.18))


def reference_image(name: str) -> np.ndarray:
    """A real picture shipped with scikit-image as (H, W, 3) float32 sRGB in [0, 1] (grey ones repeated)."""
    try:
        import skimage.data as skd
    except ImportError as e:  # pragma: no cover - the dev requirements install it
        raise ImportError("the real-image benchmark needs scikit-image (pip install scikit-image)") from e
    if name not in IMAGES:
        raise ValueError(f"unknown benchmark image {name!r}; allowed {sorted(IMAGES)}")
    a = skd.stereo_motorcycle()[0] if name == "motorcycle_left" else getattr(skd, name)()
    a = np.asarray(a)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, 2)
    return (a[..., :3].astype(np.float32) / 255.0).copy()


@dataclass(frozen=True)
class DamageConfig:
    dpi: float = 600.0
    ground: str = "light"              # "light" (gesso) or "dark" (bole / imprimatura)
    cell_mm: float = 0.9               # mean craquelure cell size
    crack_cover: float = 0.6           # share of the picture with craquelure
    crack_keep: float = 0.7            # share of cell edges that crack there
    n_flakes_per_cm2: float = 6.0      # islands flaked off between cracks
    n_losses_per_cm2: float = 14.0     # irregular losses
    loss_radius_mm: tuple = (0.06, 0.9)
    n_scratches_per_cm2: float = 1.2
    n_stains: int = 2
    noise: float = 0.004

    def validate(self) -> "DamageConfig":
        if self.ground not in ("light", "dark"):
            raise ValueError(f"ground={self.ground!r} must be 'light' or 'dark'")
        Scale(self.dpi)  # the dpi record's range
        return self


def _smooth(rng: np.random.Generator, h: int, w: int, cell_px: float) -> np.ndarray:
    """(H, W) float32 smooth noise in about [0, 1] with features of ``cell_px`` (:mod:`restoration.benchgen`)."""
    from .benchgen import _smooth as smooth
    return smooth(rng, h, w, cell_px)


def _craquelure(rng, h, w, px_mm, cfg):
    """(edges bool (H, W), cell labels int32 (H, W), cracked-area bool): :func:`restoration.benchgen.craquelure`."""
    from .benchgen import craquelure
    return craquelure(rng, h, w, px_mm, cfg.cell_mm, cfg.crack_cover, cfg.crack_keep)


def _blob(rng, r):
    """Irregular loss polygon around 0 with mean radius ``r`` px and a frayed edge: (K, 2) float."""
    k = max(12, int(2 * math.pi * r))
    ang = np.linspace(0, 2 * math.pi, k, endpoint=False)
    rad = np.ones(k)
    for f in (2, 3, 5, 9, 17):
        rad += rng.uniform(0.05, 0.25) / math.sqrt(f) * np.cos(f * ang + rng.uniform(0, 2 * math.pi))
    rad += rng.normal(0, 0.08, k)                        # fraying at the pixel scale
    rad = np.clip(rad, 0.35, None) * r * rng.uniform(0.7, 1.0)
    stretch = rng.uniform(1.0, 1.8)
    rot = rng.uniform(0, math.pi)
    x, y = rad * np.cos(ang) * stretch, rad * np.sin(ang) / stretch ** 0.5
    return np.stack([x * math.cos(rot) - y * math.sin(rot), x * math.sin(rot) + y * math.cos(rot)], -1)


def damage_image(clean: np.ndarray, seed: int = 0, cfg: DamageConfig = DamageConfig()
                 ) -> tuple[np.ndarray, dict, dict]:
    """Draw damage on ``clean`` ((H, W, 3) float32 sRGB in [0, 1]); deterministic in ``seed``.

    Returns ``(damaged (H, W, 3) float32, gt {loss, craquelure, scratch, stain: (H, W) bool}, info)``.
    ``info`` holds the ground colour used and counts. A pixel belongs to at most one class; losses are
    drawn over cracks and stains, scratches over everything but losses.
    """
    import cv2
    cfg.validate()
    rng = np.random.default_rng(seed)
    h, w = clean.shape[:2]
    px_mm = Scale(cfg.dpi).mm_per_px
    cm2 = h * w * (px_mm / 10) ** 2
    img = np.array(clean, np.float32, copy=True)
    gt = {k: np.zeros((h, w), bool) for k in ("loss", "craquelure", "scratch", "stain")}
    # stains: soft discolouration with a darker tide line (not damage to fill)
    for _ in range(cfg.n_stains):
        r = rng.uniform(2.0, 5.0) / px_mm
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        m = np.zeros((h, w), np.uint8)
        cv2.fillPoly(m, [np.round(_blob(rng, r) + [cx, cy]).astype(np.int32)], 1)
        soft = cv2.GaussianBlur(m.astype(np.float32), (0, 0), max(1.0, 0.15 * r))
        tide = np.clip(soft * (1 - soft) * 4, 0, 1) ** 2
        k = (0.10 * soft + 0.12 * tide)[..., None]
        img = img * (1 - k) + img * np.array([0.85, 0.72, 0.45], np.float32) * k
        gt["stain"] |= soft > 0.1
    # craquelure: darken the local paint
    crack, cells, cracked = _craquelure(rng, h, w, px_mm, cfg)
    dark = 0.35 + 0.25 * _smooth(rng, h, w, 40)
    img[crack] *= dark[crack][:, None]
    gt["craquelure"] = crack
    gt["stain"] &= ~crack
    # losses: flakes between cracks and irregular losses, filled with a textured ground
    grounds = LIGHT_GROUNDS if cfg.ground == "light" else DARK_GROUNDS
    g = np.array(grounds[int(rng.integers(len(grounds)))], np.float32)
    gtex = (_smooth(rng, h, w, 25) - 0.5) * 0.04 + rng.normal(0, 0.008, (h, w)).astype(np.float32)
    ground = np.clip(g * (1 + gtex[..., None]) + rng.normal(0, 0.004, (h, w, 3)).astype(np.float32), 0, 1)
    lm = np.zeros((h, w), np.uint8)
    cell_ids = np.unique(cells[cracked & crack])
    n_flakes = int(rng.poisson(cfg.n_flakes_per_cm2 * cm2))
    if len(cell_ids) and n_flakes:
        pick = rng.choice(cell_ids, min(n_flakes, len(cell_ids)), replace=False)
        fl = np.isin(cells, pick) & cracked
        fl = cv2.erode(fl.view(np.uint8), np.ones((2, 2), np.uint8))  # the crack wall stays with the paint
        lm |= fl.astype(np.uint8)
    lo, hi = (r / px_mm for r in cfg.loss_radius_mm)
    for _ in range(int(rng.poisson(cfg.n_losses_per_cm2 * cm2))):
        r = math.exp(rng.uniform(math.log(lo), math.log(hi)))
        c = np.array([rng.uniform(0, w), rng.uniform(0, h)])
        cv2.fillPoly(lm, [np.round(_blob(rng, r) + c).astype(np.int32)], 1)
    loss = lm > 0
    # anti-aliased edge: a scan blurs the step over about a pixel
    a: np.ndarray = cv2.GaussianBlur(loss.astype(np.float32), (0, 0), 0.6)
    a = np.where(loss, np.maximum(a, 0.5), np.minimum(a, 0.49))[..., None]
    img = img * (1 - a) + ground * a
    gt["loss"] = loss
    gt["craquelure"] &= ~loss
    gt["stain"] &= ~loss
    # scratches: light slightly curved lines
    sm = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.poisson(cfg.n_scratches_per_cm2 * cm2))):
        p = np.array([rng.uniform(0, w), rng.uniform(0, h)])
        ang, L = rng.uniform(0, 2 * math.pi), rng.uniform(2.0, 8.0) / px_mm
        bend = rng.normal(0, 0.3)
        t = np.linspace(0, 1, 16)
        pts = p + L * np.stack([np.cos(ang + bend * t), np.sin(ang + bend * t)], -1) * t[:, None]
        width = int(rng.choice([1, 1, 2, 3]))
        cv2.polylines(sm, [np.round(pts).astype(np.int32)], False, 1, width)
    sc = (sm > 0) & ~loss
    lift = (0.55 + 0.3 * _smooth(rng, h, w, 30))[sc][:, None]
    img[sc] = img[sc] + (np.array([0.95, 0.93, 0.88], np.float32) - img[sc]) * lift
    gt["scratch"] = sc
    gt["craquelure"] &= ~sc
    gt["stain"] &= ~sc
    img = img + rng.normal(0, cfg.noise, img.shape).astype(np.float32)
    info = {"seed": seed, "ground": cfg.ground, "ground_rgb": [float(v) for v in g], "dpi": cfg.dpi,
            "mm": [round(w * px_mm, 2), round(h * px_mm, 2)],
            "gt_pixels": {k: int(v.sum()) for k, v in gt.items()}}
    return np.clip(img, 0, 1).astype(np.float32), gt, info


def _near(mask: np.ndarray, tol: int) -> np.ndarray:
    import cv2
    if tol <= 0:
        return np.asarray(mask, bool)
    return cv2.dilate(np.asarray(mask, bool).view(np.uint8), np.ones((2 * tol + 1,) * 2, np.uint8)) > 0


def score(classes: np.ndarray, fill_fp: np.ndarray, gt: dict, dpi: float, filled: np.ndarray | None = None,
          clean: np.ndarray | None = None, tol: int = 1) -> dict:
    """Score a result against :func:`damage_image` ground truth.

    classes: (H, W) uint8 detected class ids; fill_fp: (H, W) bool, what is filled (the print footprint);
    filled/clean: (H, W, 3) float32 for the fill error. A filled pixel counts as intact paint when no
    damage (loss, craquelure, scratch; a stain is not damage) lies within ``tol`` px: the anti-aliased
    edge of a loss is not held against the fill. Returns a flat dict of numbers (see keys).
    """
    from scipy import ndimage
    fp = np.asarray(fill_fp, bool)
    damage = gt["loss"] | gt["craquelure"] | gt["scratch"]
    intact = ~_near(damage, tol)
    scale = Scale.of(dpi)
    px_mm2 = scale.mm_per_px ** 2
    n_fill = int(fp.sum())
    det_loss = classes == CLASS_IDS["loss"]
    out = {"filled_mm2": round(n_fill * px_mm2, 4), "picture_share_filled": round(n_fill / fp.size, 5),
           "intact_share_of_fill": round(float((fp & intact).sum()) / n_fill, 4) if n_fill else 0.0,
           "stain_filled_mm2": round(float((fp & gt["stain"] & intact).sum()) * px_mm2, 4)}
    gl = gt["loss"]
    near_det = _near(det_loss, tol)
    near_fill = _near(fp, tol)
    out["loss_recall_area"] = round(float((gl & near_det).sum()) / max(int(gl.sum()), 1), 4)
    out["loss_filled_area"] = round(float((gl & near_fill).sum()) / max(int(gl.sum()), 1), 4)
    lab, n = ndimage.label(gl, structure=np.ones((3, 3), bool))
    if n:
        tot = np.bincount(lab.ravel(), minlength=n + 1)[1:]
        hit = np.bincount(lab.ravel(), (gl & near_det).ravel(), minlength=n + 1)[1:]
        hitf = np.bincount(lab.ravel(), (gl & near_fill).ravel(), minlength=n + 1)[1:]
        out["loss_recall_regions"] = round(float((hit >= 0.5 * tot).mean()), 4)
        out["loss_filled_regions"] = round(float((hitf >= 0.5 * tot).mean()), 4)
    else:
        out["loss_recall_regions"] = out["loss_filled_regions"] = 1.0
    out["n_loss_regions"] = int(n)
    det_loss_px = int(det_loss.sum())
    out["loss_precision"] = round(float((det_loss & _near(gl, tol)).sum()) / det_loss_px, 4) if det_loss_px else 1.0
    cr = classes == CLASS_IDS["craquelure"]
    ncr = int(cr.sum())
    out["crack_precision"] = round(float((cr & _near(gt["craquelure"], tol)).sum()) / ncr, 4) if ncr else 1.0
    out["crack_recall"] = round(float((gt["craquelure"] & _near(cr, tol)).sum()) / max(int(gt["craquelure"].sum()), 1), 4)
    sd = classes == CLASS_IDS["small_defect"]
    out["scratch_recall"] = round(float((gt["scratch"] & _near(sd, tol)).sum()) / max(int(gt["scratch"].sum()), 1), 4)
    nsd = int(sd.sum())
    out["small_defect_precision"] = round(float((sd & _near(damage, tol)).sum()) / nsd, 4) if nsd else 1.0
    if filled is not None and clean is not None and n_fill:
        de = ciede2000(rgb_to_lab(torch.from_numpy(np.ascontiguousarray(filled[fp]))),
                       rgb_to_lab(torch.from_numpy(np.ascontiguousarray(clean[fp])))).numpy()
        out["fill_dE00_mean"] = round(float(de.mean()), 3)
        out["fill_dE00_p95"] = round(float(np.percentile(de, 95)), 3)
    return out


GOALS = {"intact_share_of_fill": ("<=", 0.05), "loss_recall_area": (">=", 0.90), "loss_recall_regions": (">=", 0.90)}


def summarize(per_image: dict) -> dict:
    """Overall numbers: the worst image for each goal and the mean of every key; ``goals_met`` per goal."""
    keys = sorted({k for s in per_image.values() for k, v in s.items() if isinstance(v, (int, float))})
    out = {"mean": {k: round(float(np.mean([s[k] for s in per_image.values() if k in s])), 4) for k in keys}}
    worst = {}
    for k, (op, _) in GOALS.items():
        vals = [s[k] for s in per_image.values()]
        worst[k] = max(vals) if op == "<=" else min(vals)
    out["worst"] = worst
    out["goals_met"] = {k: (worst[k] <= v if op == "<=" else worst[k] >= v) for k, (op, v) in GOALS.items()}
    return out


def evaluate(name: str, seed: int = 0, detect_cfg: DetectConfig | None = None, review_cfg: ReviewConfig | None = None,
             fill: bool = True, keep: bool = False) -> dict | tuple[dict, dict]:
    """Damage picture ``name`` (with its ground variant from :data:`IMAGES`), run detection, the region
    table and the default review decision, fill what is decided ``fill`` and score it (:func:`score`).

    Returns the score dict (plus ``n_review``, ``n_fill``, ``review_mm2``); with ``keep`` also
    ``(score, arrays)`` where arrays holds damaged, clean, classes, footprint, review map and filled.
    """
    from . import stages
    from .detect import DetectConfig
    from .regions import RegionConfig
    from .review import ReviewConfig
    clean = reference_image(name)
    dmg = DamageConfig(ground=IMAGES[name])
    img, gt, info = damage_image(clean, seed, dmg)
    # the stages the nodes and the CLI run (detection, region table with the review decision, fill)
    dmap = stages.detect(img, dmg.dpi, detect_cfg or DetectConfig())
    table = stages.regions(img, dmap, dmg.dpi, RegionConfig(), review_cfg or ReviewConfig())
    fp, rv = table.footprint("fill"), table.footprint("review")
    filled = stages.fill(img, fp, "harmonic")[0] if fill else None
    dec = [r["fill_decision"] for r in table.rows]
    s = score(dmap.classes, fp, gt, dmg.dpi, filled, clean)
    s["n_fill"] = dec.count("fill")
    s["n_review"] = dec.count("review")
    s["review_mm2"] = round(Scale(dmg.dpi).px_area_to_mm2(rv.sum()), 4)
    s["ground_found"] = [round(v, 3) for v in dmap.ground_rgb] if dmap.ground_rgb else None
    s["ground_true"] = [round(v, 3) for v in info["ground_rgb"]]
    if keep:
        return s, {"damaged": img, "clean": clean, "classes": dmap.classes, "fill": fp, "review": rv,
                   "filled": filled, "gt": gt}
    return s


# ---------------------------------------------------------------------------------------------------------
# Issue 21: the benchmark on pictures from several packages, split into a tune and a held-out half
# ---------------------------------------------------------------------------------------------------------

#: where each picture comes from: (package, what in it). Only images inside installed wheels (nothing
#: downloaded, nothing made by this project).
SOURCES = {**{n: ("scikit-image", f"skimage.data.{n}") for n in (
    "astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina", "camera",
    "brick", "grass", "gravel", "moon", "coins", "clock", "cell", "text", "page")},
    "motorcycle_left": ("scikit-image", "skimage.data.stereo_motorcycle()[0]"),
    "motorcycle_right": ("scikit-image", "skimage.data.stereo_motorcycle()[1]"),
    "china": ("scikit-learn", "sklearn.datasets.load_sample_image('china.jpg')"),
    "flower": ("scikit-learn", "sklearn.datasets.load_sample_image('flower.jpg')"),
    "grace_hopper": ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
    "minduka_present": ("matplotlib", "mpl-data/sample_data/Minduka_Present_Blue_Pack.png")}

#: the committed split (which pictures tune the detector, which are held out)
SPLIT_FILE = "bench/restoration_split.json"
GOALS21 = {"intact_share_of_fill": ("<=", 0.05), "loss_recall_area": (">=", 0.90), "loss_filled_area": (">=", 0.80)}


def load_split() -> dict:
    """The committed split: ``{"tune": [...], "held_out": [...], ...}`` (bench/restoration_split.json)."""
    import json
    import pathlib
    return json.loads((pathlib.Path(__file__).resolve().parents[1] / SPLIT_FILE).read_text())


def picture(name: str, max_side: int = 512) -> np.ndarray:
    """A real picture of :data:`SOURCES` as (H, W, 3) float32 sRGB in [0, 1], shrunk (area) so that its longer
    side is at most ``max_side`` px (grey pictures repeated to 3 channels, alpha dropped)."""
    import cv2
    if name not in SOURCES:
        raise ValueError(f"unknown benchmark picture {name!r}; allowed {sorted(SOURCES)}")
    pkg = SOURCES[name][0]
    try:
        if pkg == "scikit-image":
            import skimage.data as skd
            a = skd.stereo_motorcycle()[0 if name == "motorcycle_left" else 1] if name.startswith("motorcycle") \
                else getattr(skd, name)()
        elif pkg == "scikit-learn":
            from sklearn.datasets import load_sample_image  # type: ignore[import-untyped]
            a = load_sample_image(f"{name}.jpg")
        else:
            import matplotlib.cbook as cbook
            from PIL import Image
            fn = "grace_hopper.jpg" if name == "grace_hopper" else "Minduka_Present_Blue_Pack.png"
            with Image.open(str(cbook.get_sample_data(fn, asfileobj=False))) as im:
                a = np.asarray(im.convert("RGB"))
    except ImportError as e:  # pragma: no cover - the dev requirements install them
        raise ImportError(f"the benchmark picture {name!r} needs {pkg} (requirements-dev.txt)") from e
    a = np.asarray(a)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, 2)
    a = a[..., :3].astype(np.float32) / (65535.0 if a.dtype == np.uint16 else 255.0)
    h, w = a.shape[:2]
    if max(h, w) > max_side:
        k = max_side / max(h, w)
        a = cv2.resize(a, (max(1, round(w * k)), max(1, round(h * k))), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(a, np.float32)


def case_seed(name: str, k: int) -> int:
    """The damage seed of case ``k`` of a picture (stable across runs and platforms)."""
    import zlib
    return (zlib.crc32(name.encode()) * 7 + 1009 * k) % (2 ** 31)


def evaluate_case(name: str, k: int = 0, detect_cfg: DetectConfig | None = None,
                  review_cfg: ReviewConfig | None = None, max_side: int = 512, keep: bool = False
                  ) -> dict | tuple[dict, dict]:
    """Case ``k`` of picture ``name``: damage drawn by :func:`restoration.benchgen.draw_case`, the default
    detector (given the drawn ground's colour when the case has a user-given ground), region table and
    review; scored by :func:`score` on the fill footprint. Returns the score (plus the case's ground,
    noise, given ground and decisions); with ``keep`` also the arrays."""
    from dataclasses import replace
    from . import stages
    from .benchgen import draw_case
    from .detect import DetectConfig
    from .regions import RegionConfig
    from .review import ReviewConfig
    clean = picture(name, max_side)
    img, gt, info = draw_case(clean, case_seed(name, k))
    cfg = detect_cfg or DetectConfig()
    if info["given_ground"] is not None and cfg.ground_rgb is None:
        cfg = replace(cfg, ground_rgb=tuple(info["given_ground"]))
    dmap = stages.detect(img, 600.0, cfg)
    table = stages.regions(img, dmap, 600.0, RegionConfig(), review_cfg or ReviewConfig())
    fp, rv = table.footprint("fill"), table.footprint("review")
    s = score(dmap.classes, fp, gt, 600.0)
    # the printed film: the footprint grown by the fill's default 1 px, only into pixels the regions touched
    from .layers import film_margin
    film = film_margin(fp, img, 1)
    intact = ~_near(gt["loss"] | gt["craquelure"] | gt["scratch"], 1)
    s["intact_share_of_film"] = round(float((film & intact).sum()) / max(int(film.sum()), 1), 4)
    s["highlight_filled_mm2"] = round(Scale(600.0).px_area_to_mm2(float((fp & gt["highlight"]).sum())), 4)
    s["line_filled_mm2"] = round(Scale(600.0).px_area_to_mm2(float((fp & gt["line"]).sum())), 4)
    dec = [r["fill_decision"] for r in table.rows]
    s.update(n_fill=dec.count("fill"), n_review=dec.count("review"),
             review_mm2=round(Scale(600.0).px_area_to_mm2(rv.sum()), 4), seed=case_seed(name, k),
             ground_true=info["ground_rgb"], ground_kind=info["ground_kind"], ground_noise=info["ground_noise"],
             given_ground=info["given_ground"] is not None, noisy_gesso=info["noisy_gesso"],
             ground_found=[round(v, 3) for v in dmap.ground_rgb] if dmap.ground_rgb else None)
    if keep:
        return s, {"damaged": img, "clean": clean, "classes": dmap.classes, "fill": fp, "review": rv, "gt": gt,
                   "info": info, "params": dmap.params, "table": table, "evidence": dmap.evidence}
    return s


def worst_first(per_picture: dict) -> list:
    """Picture names ordered worst first: by the number of goals of :data:`GOALS21` missed, then by the
    intact share of the fill, then by the lower of loss recall and loss filled."""
    def miss(s):
        return sum(not (s[k] <= v if op == "<=" else s[k] >= v) for k, (op, v) in GOALS21.items())
    return sorted(per_picture, key=lambda n: (-miss(per_picture[n]), -per_picture[n]["intact_share_of_fill"],
                                              min(per_picture[n]["loss_recall_area"], per_picture[n]["loss_filled_area"])))


def picture_worst(cases: list) -> dict:
    """One picture's figures from its cases: the worst case per goal (:data:`GOALS21`), the others' mean."""
    out = {k: round(float(np.mean([c[k] for c in cases])), 4) for k in cases[0] if isinstance(cases[0][k], (int, float))
           and not isinstance(cases[0][k], bool)}
    for k, (op, _) in GOALS21.items():
        out[k] = max(c[k] for c in cases) if op == "<=" else min(c[k] for c in cases)
    return out
