"""What caching or batching the exemplar fill's seam membranes saves (issue 21 item 4, the time goal). One fill of
bench_fill.synthetic_scan (one thread) is run with process-time timers around its functions and with every exact
membrane box (residual, known pixels) recorded; then

- ``cache``: how many of the solves a factor cache keyed by (box shape, known-pixel pattern) would serve (the
  banded Cholesky factor depends only on those; a hit would save the band matrix's construction and ``dpbtrf``);
- ``batch``: the recorded boxes of a piece solved again, in fill order, in batches of M boxes as one
  block-diagonal banded system (``restoration.exemplar._membrane_batch``; M = 1: one by one), CPU microseconds
  per box and how many boxes differ from their one-by-one solution (0: bit for bit). The whole-hole membranes
  (up to 98 px wide) are left out: the fill solves them alone (one would widen every box's band).

    python bench/bench_fill_batch.py 4 --out bench/results/fill_batch_4mp.json
"""
import argparse, collections, json, os, pathlib, sys, time
import numpy as np
REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]
import cv2
import bench_fill as BF
import restoration.exemplar as EX

ap = argparse.ArgumentParser()
ap.add_argument("mp", type=float)
ap.add_argument("--sizes", default="1,4,16,64,256")
ap.add_argument("--out", default="")
a = ap.parse_args()
cv2.setNumThreads(1)
img, mask, _ = BF.synthetic_scan(a.mp)
doc = {"date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "mp": round(mask.size / 1e6, 2),
       "load_1min": [round(os.getloadavg()[0], 2)]}

# -- one fill, timed per function, boxes recorded ------------------------------------------------------------
T, N = collections.Counter(), collections.Counter()
boxes = []
real = {}


def timer(name):
    f = real[name] = getattr(EX, name)

    def g(*args, **kw):
        if name == "_membrane_batch":
            boxes.extend((r.copy(), k.copy()) for r, k in args[0])
        t = time.process_time()
        try:
            return f(*args, **kw)
        finally:
            T[name] += time.process_time() - t
            N[name] += 1
    setattr(EX, name, g)


names = ["_search_raw", "_best_places", "_membrane_batch", "_put", "_scan_maps"]
for n in names:
    timer(n)
t0 = time.process_time()
EX.exemplar_fill(img, mask)
total = time.process_time() - t0
for n in names:
    setattr(EX, n, real[n])
doc["fill_cpu_s"] = round(total, 2)
doc["share"] = {n: {"pct": round(100 * T[n] / total, 1), "calls": N[n], "us_per_call": round(1e6 * T[n] / max(N[n], 1))}
                for n in names}
print("fill", doc["fill_cpu_s"], "s CPU;", {n: doc["share"][n]["pct"] for n in names}, flush=True)

# -- the cache: solves whose (shape, known pattern) came before ---------------------------------------------
keys = collections.Counter((k.shape, k.tobytes()) for _, k in boxes)
doc["cache"] = {"solves": len(boxes), "distinct_keys": len(keys), "hits": len(boxes) - len(keys),
                "hit_pct": round(100 * (len(boxes) - len(keys)) / max(len(boxes), 1), 1),
                "most_repeated": [c for _, c in keys.most_common(5)]}
print("cache", doc["cache"], flush=True)


from threadpoolctl import threadpool_limits  # noqa: E402
side = EX.ExemplarConfig().piece + 2 * EX.ExemplarConfig().band
doc["boxes_larger_than_a_piece"] = sum(max(k.shape) > side for _, k in boxes)   # whole-hole membranes: solved alone
boxes = [(r, k) for r, k in boxes if max(k.shape) <= side]
with threadpool_limits(limits=1, user_api="blas"):
    ref = [EX._membrane_exact(r, k) for r, k in boxes]
    doc["batch"] = {}
    for M in [int(v) for v in a.sizes.split(",")]:
        t = time.process_time()
        res = [o for i in range(0, len(boxes), M) for o in EX._membrane_batch(boxes[i:i + M])]
        s = time.process_time() - t
        differ = sum(not np.array_equal(x.view(np.uint32), y.view(np.uint32)) for x, y in zip(res, ref))
        doc["batch"][f"M={M}"] = {"us_per_box": round(1e6 * s / len(boxes), 1), "differ": differ}
        print("batch", M, doc["batch"][f"M={M}"], flush=True)
doc["load_1min"].append(round(os.getloadavg()[0], 2))
if a.out:
    pathlib.Path(a.out).write_text(json.dumps(doc, indent=1))
