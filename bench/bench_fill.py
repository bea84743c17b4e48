"""Fill benchmark (issue 21 item 4): how well each fill continues the picture across a loss.

Pictures: the photographs scikit-image ships in its wheel (``skimage.data``; nothing downloaded, none made
by this project), split once into a tune half and a held-out half (``bench/fill_split.json``, committed;
parameters are chosen on the tune half only). Losses: drawn by :func:`loss_mask`, a generator of its own
that knows nothing of the fills (frayed blobs 2-14 px in radius, thin curved scratches and wandering
cracks 1-4 px wide, about 4 % of the picture), painted with a gesso colour so no method sees the original
inside a loss. Per picture and method:

* ``dE00``: mean CIEDE2000 between the fill and the undamaged original inside the losses;
* ``ssim_band``: mean SSIM (luminance, Gaussian window sigma 1.5) over the losses grown by 3 px, i.e.
  in and around the fill (1 = the original's structure, lines and texture, is reproduced);
* ``s``: fill time.

Timing: a synthetic scan of ``--mp`` megapixels (real pictures tiled, losses of the same density from
the same generator) filled by each method through ``restoration.stages.fill`` (the pipeline's path,
default tile); the result is seconds and seconds per MP.

    nice -n 10 python bench/bench_fill.py [--half held_out|tune|all] [--seeds 0] [--mp 25] [--no-time]

Writes bench/results/fill.json and prints the tables (worst exemplar dE00 first).
"""
from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SPLIT = json.loads((REPO / "bench" / "fill_split.json").read_text())
METHODS = ("exemplar", "harmonic", "telea", "ns")
GROUND = (0.88, 0.84, 0.74)


def exemplar_at(rev: str):
    """``restoration/exemplar.py`` as it was at git revision ``rev``, imported as the module
    ``restoration.exemplar_before`` (for timing the fill against an earlier commit in the same process)."""
    import importlib.util
    import subprocess
    import tempfile
    src = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:restoration/exemplar.py"], check=True,
                         capture_output=True, text=True).stdout
    path = pathlib.Path(tempfile.mkdtemp()) / "exemplar_before.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("restoration.exemplar_before", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def picture(name: str) -> np.ndarray:
    """A photograph shipped with scikit-image as (H, W, 3) float32 sRGB in [0, 1] (grey ones repeated)."""
    import skimage.data as skd
    a = skd.stereo_motorcycle()[0] if name == "motorcycle_left" else getattr(skd, name)()
    a = np.asarray(a)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, 2)
    a = a[..., :3]
    return (a.astype(np.float32) / (65535.0 if a.dtype == np.uint16 else 255.0)).copy()


def _polyline(rng: np.random.Generator, start: np.ndarray, length: float, wander: float) -> np.ndarray:
    """(K, 2) float points of a path from ``start`` with a random heading that turns by ``wander`` rad/step."""
    n = max(2, int(length / 4))
    heading = rng.uniform(0, 2 * math.pi) + np.cumsum(rng.normal(0, wander, n))
    step = np.stack([np.cos(heading), np.sin(heading)], -1) * 4.0
    return start + np.concatenate([[[0.0, 0.0]], np.cumsum(step, 0)[:-1]])


def loss_mask(h: int, w: int, seed: int, cover: float = 0.04) -> np.ndarray:
    """(H, W) bool losses of about ``cover`` of the area, deterministic in ``seed``: frayed blobs
    (radius log-uniform 2-14 px, 60 % of the area), scratches (gently curved, 1-2 px wide, 20-120 px
    long) and cracks (wandering, 2-4 px wide, 20-80 px long)."""
    import cv2
    rng = np.random.default_rng(seed)
    m = np.zeros((h, w), np.uint8)
    area = h * w * cover
    drawn = 0.0
    while drawn < 0.6 * area:
        r = math.exp(rng.uniform(math.log(2.0), math.log(14.0)))
        k = max(10, int(2 * math.pi * r))
        ang = np.linspace(0, 2 * math.pi, k, endpoint=False)
        rad = np.ones(k)
        for f in (2, 3, 5, 8):
            rad += rng.uniform(0.05, 0.3) / math.sqrt(f) * np.cos(f * ang + rng.uniform(0, 2 * math.pi))
        rad = np.clip(rad + rng.normal(0, 0.06, k), 0.4, None) * r
        c = rng.uniform(0, 1, 2) * (w, h)
        pts = np.stack([c[0] + rad * np.cos(ang), c[1] + rad * np.sin(ang)], -1)
        cv2.fillPoly(m, [np.round(pts).astype(np.int32)], 1)
        drawn += math.pi * r * r
    while drawn < area:
        if rng.random() < 0.5:   # scratch
            pts, width = _polyline(rng, rng.uniform(0, 1, 2) * (w, h), rng.uniform(20, 120), 0.03), rng.integers(1, 3)
        else:                    # crack
            pts, width = _polyline(rng, rng.uniform(0, 1, 2) * (w, h), rng.uniform(20, 80), 0.35), rng.integers(2, 5)
        cv2.polylines(m, [np.round(pts).astype(np.int32)], False, 1, int(width))
        drawn += len(pts) * 4 * width
    return m > 0


def damaged(clean: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``clean`` with the losses painted in a flat gesso colour (no method sees the original there)."""
    out = clean.copy()
    out[mask] = GROUND
    return out


def de00_in(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Mean CIEDE2000 between (H, W, 3) sRGB ``a`` and ``b`` over ``mask``."""
    import torch
    from restoration.color import ciede2000, rgb_to_lab
    la, lb = (rgb_to_lab(torch.from_numpy(np.ascontiguousarray(x[mask]))) for x in (a, b))
    return float(ciede2000(la, lb).mean())


def ssim_band(a: np.ndarray, b: np.ndarray, mask: np.ndarray, grow: int = 3) -> float:
    """Mean SSIM of the luminance of ``a`` against ``b`` over ``mask`` grown by ``grow`` px."""
    from skimage.metrics import structural_similarity
    from restoration.fill import grow_mask
    wts = np.array([0.2126, 0.7152, 0.0722], np.float32)
    _, smap = structural_similarity(a @ wts, b @ wts, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False, full=True)
    return float(smap[grow_mask(mask, grow)].mean())


def run_fill(method: str, img: np.ndarray, mask: np.ndarray, **kw) -> np.ndarray:
    """The pipeline's fill (``restoration.stages.fill``: the node's and the CLI's call, default tile), grow 0
    so every method fills exactly the drawn losses."""
    from restoration.stages import fill
    return fill(img, mask, method, grow_px=0, **kw)[0]


def score_picture(name: str, seed: int = 0, methods=METHODS, size: int = 0, **kw) -> dict:
    """{method: {dE00, ssim_band, s}} for one picture (optionally centre-cropped to ``size`` px)."""
    clean = picture(name)
    if size:
        h, w = clean.shape[:2]
        y0, x0 = max(0, (h - size) // 2), max(0, (w - size) // 2)
        clean = np.ascontiguousarray(clean[y0:y0 + size, x0:x0 + size])
    mask = loss_mask(*clean.shape[:2], seed=1000 * seed + sum(map(ord, name)))
    img = damaged(clean, mask)
    out = {}
    for m in methods:
        t = time.perf_counter()
        f = run_fill(m, img, mask, **kw)
        s = time.perf_counter() - t
        out[m] = {"dE00": round(de00_in(f, clean, mask), 3), "ssim_band": round(ssim_band(f, clean, mask), 4),
                  "s": round(s, 3)}
    return out


def synthetic_scan(mp: float, seed: int = 0) -> tuple:
    """(img, mask, clean) of about ``mp`` MP: pictures resampled to 512 px and tiled (mirrored alternately),
    losses drawn by :func:`loss_mask` per 512 px block (same density as the pictures)."""
    import cv2
    bases = [cv2.resize(picture(n), (512, 512), interpolation=cv2.INTER_AREA)
             for n in ("astronaut", "coffee", "chelsea", "rocket")]
    side = int(math.sqrt(mp * 1e6))
    clean = np.empty((side, side, 3), np.float32)
    k = 0
    for y in range(0, side, 512):
        for x in range(0, side, 512):
            b = bases[k % len(bases)]
            hh, ww = min(512, side - y), min(512, side - x)
            clean[y:y + hh, x:x + ww] = (b if k % 2 == 0 else b[:, ::-1])[:hh, :ww]
            k += 1
    mask = np.zeros((side, side), bool)
    for i, y in enumerate(range(0, side, 1024)):
        for j, x in enumerate(range(0, side, 1024)):
            hh, ww = min(1024, side - y), min(1024, side - x)
            mask[y:y + hh, x:x + ww] = loss_mask(hh, ww, seed=seed * 100003 + i * 1009 + j)
    return damaged(clean, mask), mask, clean


def time_methods(mp: float, methods=METHODS) -> dict:
    img, mask, _ = synthetic_scan(mp)
    res = {"mp": round(img.shape[0] * img.shape[1] / 1e6, 2), "mask_share": round(float(mask.mean()), 4),
           "n_regions": int(__import__("scipy.ndimage", fromlist=["label"]).label(mask, np.ones((3, 3)))[1])}
    for m in methods:
        t = time.perf_counter()
        run_fill(m, img, mask)
        s = time.perf_counter() - t
        res[m] = {"s": round(s, 1), "s_per_mp": round(s / res["mp"], 3)}
        print(f"  {m:9s} {s:8.1f} s  {s / res['mp']:.3f} s/MP", flush=True)
    slow = max(res[m]["s"] for m in methods if m != "exemplar")
    res["exemplar_vs_slowest_baseline"] = round(res["exemplar"]["s"] / slow, 2) if "exemplar" in res else None
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--half", default="held_out", choices=("held_out", "tune", "all"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--mp", type=float, default=25.0)
    ap.add_argument("--no-time", action="store_true")
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "fill.json"))
    a = ap.parse_args()
    names = SPLIT["tune"] + SPLIT["held_out"] if a.half == "all" else SPLIT[a.half]
    per = {}
    for name in names:
        for seed in a.seeds:
            per[f"{name}/{seed}"] = r = score_picture(name, seed, a.methods)
            print(f"{name}/{seed}".ljust(26) + "  ".join(f"{m} {r[m]['dE00']:.2f}/{r[m]['ssim_band']:.3f}"
                                                          for m in a.methods), flush=True)
    order = sorted(per, key=lambda k: -per[k][a.methods[0]]["dE00"])
    base = [m for m in a.methods if m != "exemplar"]
    beats = {k: {"dE00": all(per[k]["exemplar"]["dE00"] < per[k][m]["dE00"] for m in base),
                 "ssim_band": all(per[k]["exemplar"]["ssim_band"] > per[k][m]["ssim_band"] for m in base)}
             for k in per} if "exemplar" in a.methods else {}
    print("\n| picture/seed | " + " | ".join(f"{m} dE00 / SSIM" for m in a.methods) + " |")
    print("|---|" + "---|" * len(a.methods))
    for k in order:
        print(f"| {k} | " + " | ".join(f"{per[k][m]['dE00']:.2f} / {per[k][m]['ssim_band']:.3f}" for m in a.methods) + " |")
    doc = {"bench": "fill against the undamaged original", "half": a.half, "split": SPLIT, "seeds": a.seeds,
           "per_picture": {k: per[k] for k in order}, "exemplar_beats_all": beats,
           "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if not a.no_time:
        print(f"\ntiming on a synthetic {a.mp} MP scan:")
        doc["timing"] = time_methods(a.mp, a.methods)
    pathlib.Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(a.out).write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
