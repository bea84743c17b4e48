"""Restoration benchmark: megapixels per second and peak memory of the whole pipeline (detect, regions,
fill, QA, colour count, layers, layout, print export with PDF, previews, record) at 10 and 100 MP on CPU
(and on a GPU where one is lent: the harmonic fill runs there via --device), and how both grow with size.
Writes bench/results/restoration.json.

    nice -n 10 python bench/bench_restoration.py [--sizes 10 100] [--tile 1024] [--threads 1]
    nice -n 10 python bench/bench_restoration.py --real [--seeds 0 1]

``--real`` runs the real-image benchmark instead (restoration/realbench.py): damage drawn on the real
photographs that scikit-image ships (light and dark grounds, flakes, frayed losses, craquelure,
scratches, stains), the default detector, region table and review decision, the harmonic fill of what
is decided ``fill``, and per picture and overall: the share of the filled area that is intact paint
(goal <= 5 % on every picture), loss recall by area and by region (goal >= 90 %), craquelure precision,
scratch recall, fill dE00. Writes bench/results/restoration_real.json and prints a table.

The scans are the bundled procedural sample: a 10 MP painting is generated once and tiled to the
larger sizes (throughput does not depend on the content repeating; the damage density stays the same).
"""
import argparse
import json
import os
import pathlib
import platform
import shutil
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]
from _peak import PeakRSS  # noqa: E402


BUFFER_BYTES_PER_PX = 12 + 12 + 1 + 4 + 2 + 4


def make_scan(mp, base):
    """A (H, W, 3) float32 scan of about ``mp`` megapixels tiled from ``base``."""
    bh, bw = base.shape[:2]
    side = (mp * 1e6 * bw / bh) ** 0.5
    w, h = int(side), int(mp * 1e6 / side)
    ry, rx = -(-h // bh), -(-w // bw)
    out = np.empty((h, w, 3), np.float32)
    for i in range(ry):
        for j in range(rx):
            y0, x0 = i * bh, j * bw
            hh, ww = min(bh, h - y0), min(bw, w - x0)
            out[y0:y0 + hh, x0:x0 + ww] = base[:hh, :ww] if (i + j) % 2 == 0 else base[:hh, ::-1][:, :ww]
    return out


def real_images(seeds, out):
    """The real-image benchmark table (see the module docstring); returns the document written."""
    from restoration.realbench import GOALS, IMAGES, evaluate, summarize
    keys = ("intact_share_of_fill", "loss_recall_area", "loss_recall_regions", "loss_filled_area",
            "crack_precision", "scratch_recall", "fill_dE00_mean", "n_fill", "n_review", "review_mm2")
    per, t0 = {}, time.perf_counter()
    print("picture/seed".ljust(26) + "ground ".ljust(7) + " ".join(k[:14].rjust(14) for k in keys), flush=True)
    for seed in seeds:
        for name, ground in IMAGES.items():
            t = time.perf_counter()
            s = evaluate(name, seed)
            s["s"] = round(time.perf_counter() - t, 2)
            per[f"{name}/{seed}"] = s
            print(f"{name}/{seed}".ljust(26) + ground.ljust(7) + " ".join(f"{s.get(k, float('nan')):14.4g}" for k in keys),
                  flush=True)
    summ = summarize(per)
    print("worst:", json.dumps(summ["worst"]), "goals met:", json.dumps(summ["goals_met"]))
    doc = {"bench": "restoration on real pictures with drawn damage", "seeds": list(seeds), "goals": GOALS,
           "per_image": per, "summary": summ, "wall_s": round(time.perf_counter() - t0, 1),
           "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    pathlib.Path(out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(out).write_text(json.dumps(doc, indent=1))
    return doc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--real", action="store_true", help="run the real-image benchmark table instead")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="damage seeds for --real")
    ap.add_argument("--sizes", type=float, nargs="+", default=[10, 100])
    ap.add_argument("--tile", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "restoration.json"))
    args = ap.parse_args()
    import torch
    if args.threads > 0:  # torch and OpenCV alike, so that a shared machine gives comparable stage times
        import cv2
        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    if args.real:
        out = args.out if args.out != ap.get_default("out") else str(REPO / "bench" / "results" / "restoration_real.json")
        real_images(args.seeds, out)
        return
    from restoration.detect import DetectConfig
    from restoration.pipeline import PipelineConfig, run
    from restoration.synth import SynthConfig, make_sample
    t0 = time.perf_counter()
    base, _, _, info = make_sample(SynthConfig(height=2560, width=3840), 0)  # 9.8 MP
    gen_s = time.perf_counter() - t0
    results = []
    for mp in args.sizes:
        img = make_scan(mp, base)
        h, w = img.shape[:2]
        cfg = PipelineConfig(detect=DetectConfig(ground_rgb=tuple(info["ground_rgb"])), tile=args.tile)
        tmp = pathlib.Path(tempfile.mkdtemp(prefix="bench_resto_"))
        try:
            with PeakRSS() as mem:
                t = time.perf_counter()
                man = run(img, 600, tmp, cfg)
                wall = time.perf_counter() - t
            out_bytes = sum(f.stat().st_size for f in tmp.iterdir())
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        img_bytes = img.nbytes
        # the per-pixel buffers the job must hold for the whole scan: the scan and the filled image (float32
        # RGB, 12 B/px each), class map (1), label map (int32, 4), fill footprint and used mask (1 + 1) and the
        # four uint8 detector response maps (4): 35 B/px. Everything else is produced in tiles or row strips.
        buffers = h * w * BUFFER_BYTES_PER_PX
        over = mem.peak - mem.base - (buffers - img_bytes)  # the scan is already resident before the run
        r = {"megapixels": round(h * w / 1e6, 3), "px": [w, h], "wall_s": round(wall, 2),
             "mp_per_s": round(h * w / 1e6 / wall, 4), "peak_rss_gb": round(mem.peak / 2 ** 30, 3),
             "rss_before_gb": round(mem.base / 2 ** 30, 3),
             "peak_minus_before_gb": round((mem.peak - mem.base) / 2 ** 30, 3),
             "peak_over_input_buffer": round((mem.peak - mem.base) / img_bytes, 2),
             "input_buffer_gb": round(img_bytes / 2 ** 30, 3), "image_buffers_gb": round(buffers / 2 ** 30, 3),
             "peak_beyond_image_buffers_gb": round(over / 2 ** 30, 3), "stage_s": man["stats"]["wallclock_s"],
             "n_regions": man["stats"]["n_regions"], "load_avg_1min_after": round(os.getloadavg()[0], 2), "output_gb": round(out_bytes / 2 ** 30, 3)}
        print(json.dumps(r), flush=True)
        results.append(r)
        del img
    growth = {}
    if len(results) >= 2:
        a, b = results[0], results[-1]
        k = b["megapixels"] / a["megapixels"]
        growth = {"size_ratio": round(k, 2), "time_ratio": round(b["wall_s"] / a["wall_s"], 2),
                  "peak_mem_ratio": round(b["peak_minus_before_gb"] / max(a["peak_minus_before_gb"], 1e-9), 2),
                  "beyond_buffers_gb": [r["peak_beyond_image_buffers_gb"] for r in results],
                  "note": "time_ratio ~ size_ratio means linear time; peak_beyond_image_buffers_gb flat across sizes "
                          "means memory grows only with the image buffers (35 B/px: scan and fill float32, class, "
                          "label, mask and response maps); the rest is tiles and print strips"}
    doc = {"bench": "restoration full pipeline", "device": "cpu", "torch_threads": torch.get_num_threads(),
           "opencv_threads": __import__("cv2").getNumThreads(),
           "cpu_count": os.cpu_count(), "machine": platform.platform(), "tile": args.tile,
           "sample_generation_s": round(gen_s, 2), "results": results, "growth": growth,
           "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.out).write_text(json.dumps(doc, indent=1))
    print(json.dumps(growth))


if __name__ == "__main__":
    main()
