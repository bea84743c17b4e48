"""What caching or batching the exemplar fill's seam membranes could save (issue 21 item 4, the time goal): an
experiment, not a second fill. One fill of bench_fill.synthetic_scan (one thread) is run with process-time timers
around its functions and with every exact membrane box (``_membrane_solve``: residual, known pixels) recorded; then

- ``cache``: how many of the solves a factor cache keyed by (box shape, known-pixel pattern) would serve (the
  banded Cholesky factor depends only on those; a hit saves the band matrix's construction and ``dpbtrf``);
- ``batch``: the recorded boxes solved again, in fill order, one by one (``_membrane_exact``, what the fill does)
  and in batches of M boxes as one block-diagonal banded system (one ``dpbsv``): ``batch_band`` builds each
  box's right-hand side as the fill does and only the band matrix for the batch (bit for bit the one-by-one solve
  where LAPACK's sums skip the zero band entries of narrower boxes: ``differ`` counts the boxes that are not),
  ``batch_all`` builds everything for the batch at once (boxes laid on one zero-padded canvas: one ``filter2D``,
  one band construction); CPU microseconds per box, and the largest difference to the one-by-one solve. Only the
  boxes of a piece and its band are batched (a whole-hole membrane, up to 98 px wide, would widen every box's band).

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
ap.add_argument("--sizes", default="16,64,256")
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
        if name == "_membrane_solve":
            boxes.append((args[0].copy(), args[1].copy()))
        t = time.process_time()
        try:
            return f(*args, **kw)
        finally:
            T[name] += time.process_time() - t
            N[name] += 1
    setattr(EX, name, g)


names = ["_fill_hole", "_fill_piece", "_search_raw", "_best_places", "_membrane_solve", "_put", "_scan_maps"]
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


# -- batched solves -----------------------------------------------------------------------------------------
def batch_band(reqs):
    """The boxes' own right-hand sides (as the fill builds them), one band matrix and one dpbsv for all."""
    c = reqs[0][0].shape[2]
    bs, us, degs, hr, dn, wd = [], [], [], [], [], []
    for r, k in reqs:
        h, w = k.shape
        unk = ~k
        rk = r * k[..., None]
        n = h * w - int(np.count_nonzero(k))
        e = EX._EPS * (rk.reshape(-1, c).sum(0) / max(h * w - n, 1))
        bs.append(np.add(cv2.filter2D(rk, -1, EX._CROSS, borderType=cv2.BORDER_CONSTANT).reshape(r.shape)[unk], e,
                         dtype=np.float64))
        us.append(unk.ravel())
        s = _shape(h, w)
        degs.append(s[0]); hr.append(s[1]); dn.append(s[2]); wd.append(s[3])
    U = np.concatenate(us)
    x = _solve(U, np.concatenate(degs), np.concatenate(hr), np.concatenate(dn), np.concatenate(wd), np.concatenate(bs))
    outs, s = [], 0
    for (r, k), u in zip(reqs, us):
        o = r.copy()
        m = int(np.count_nonzero(u))
        if m:
            o[~k] = x[s:s + m]
        s += m
        outs.append(o)
    return outs


_SHAPES: dict = {}


def _shape(h, w):
    if (h, w) not in _SHAPES:
        hr = np.ones((h, w), bool); hr[:, -1] = False
        dn = np.ones((h, w), bool); dn[-1] = False
        _SHAPES[h, w] = (EX._degree(h, w, EX._EPS).ravel(), hr.ravel(), dn.ravel(), np.full(h * w, w, np.int64))
    return _SHAPES[h, w]


def _solve(U, deg, hr, dn, wd, b):
    """Unknowns U (P,) bool over concatenated boxes; per pixel its degree + eps, whether it has a right / lower
    neighbour in its box and its box's width; b (n, C) float64 -> x (n, C)."""
    idx = np.cumsum(U)
    n = int(idx[-1]) if len(idx) else 0
    if n == 0:
        return np.zeros((0, b.shape[1]))
    pv = np.flatnonzero(dn & U)
    below = pv + wd[pv]
    ok = U[below]
    pv, below = pv[ok], below[ok]
    jv = idx[below]
    dv = jv - idx[pv]
    kd = int(dv.max()) if dv.size else min(1, n - 1)
    ab = np.zeros((kd + 1, n), order="F")
    ab[kd] = deg[U]
    if kd:
        ph = np.flatnonzero(hr & U)
        ph = ph[U[ph + 1]]
        ab[kd - 1, idx[ph + 1] - 1] = -1.0
    ab[kd - dv, jv - 1] = -1.0
    _, x, info = EX._dpbsv()(ab, b, overwrite_ab=1, overwrite_b=1)
    assert info == 0
    return x


def batch_all(reqs):
    """Everything for the batch at once: the boxes on one canvas (m, Hc, Wc) with a zero row and column after
    each, so one filter2D gives every box's known-neighbour sums and a vertical neighbour is always Wc on."""
    m, c = len(reqs), reqs[0][0].shape[2]
    hc = max(k.shape[0] for _, k in reqs) + 1
    wc = max(k.shape[1] for _, k in reqs) + 1
    R = np.zeros((m, hc, wc, c), np.float32)
    K = np.zeros((m, hc, wc), bool)
    V = np.zeros((m, hc, wc), bool)
    for q, (r, k) in enumerate(reqs):
        h, w = k.shape
        R[q, :h, :w] = r
        K[q, :h, :w] = k
        V[q, :h, :w] = True
    U = V & ~K
    rk = R * K[..., None]
    S = cv2.filter2D(rk.reshape(m * hc, wc, c), -1, EX._CROSS, borderType=cv2.BORDER_CONSTANT).reshape(m, hc, wc, c)
    nk = K.reshape(m, -1).sum(1)
    e = EX._EPS * (rk.reshape(m, -1, c).sum(1) / np.maximum(nk, 1)[:, None].astype(np.float32))
    b = np.add(S, e[:, None, None, :], dtype=np.float64)[U]
    Vf = V.ravel()
    deg = np.zeros(Vf.shape, np.float64)
    deg[1:] += Vf[:-1]; deg[:-1] += Vf[1:]; deg[wc:] += Vf[:-wc]; deg[:-wc] += Vf[wc:]
    deg += EX._EPS
    Uf = U.ravel()
    hr = np.zeros_like(Uf); hr[:-1] = Vf[1:]
    dn = np.zeros_like(Uf); dn[:-wc] = Vf[wc:]
    x = _solve(Uf, deg, hr, dn, np.full(Uf.shape, wc, np.int64), b)
    out = R.copy()
    out[U] = x
    return [out[q, :k.shape[0], :k.shape[1]] for q, (_, k) in enumerate(reqs)]


from threadpoolctl import threadpool_limits  # noqa: E402
side = EX.ExemplarConfig().piece + 2 * EX.ExemplarConfig().band
doc["boxes_larger_than_a_piece"] = sum(max(k.shape) > side for _, k in boxes)   # whole-hole membranes: solved alone
boxes = [(r, k) for r, k in boxes if max(k.shape) <= side]
with threadpool_limits(limits=1, user_api="blas"):
    ref = [EX._membrane_exact(r, k) for r, k in boxes]
    t = time.process_time()
    for r, k in boxes:
        EX._membrane_exact(r, k)
    solo = time.process_time() - t
    doc["batch"] = {"solo_us_per_box": round(1e6 * solo / len(boxes), 1)}
    for M in [int(v) for v in a.sizes.split(",")]:
        for name, f in (("batch_band", batch_band), ("batch_all", batch_all)):
            t = time.process_time()
            res = [o for i in range(0, len(boxes), M) for o in f(boxes[i:i + M])]
            s = time.process_time() - t
            differ = sum(not np.array_equal(x, y) for x, y in zip(res, ref))
            md = max(float(np.abs(x - y).max()) for x, y in zip(res, ref))
            doc["batch"][f"{name} M={M}"] = {"us_per_box": round(1e6 * s / len(boxes), 1), "differ": differ, "max_abs": md}
            print(name, M, doc["batch"][f"{name} M={M}"], flush=True)
print("solo us per box", doc["batch"]["solo_us_per_box"], flush=True)
doc["load_1min"].append(round(os.getloadavg()[0], 2))
if a.out:
    pathlib.Path(a.out).write_text(json.dumps(doc, indent=1))
