"""How many hole groups the exemplar fill should run side by side in one thread (``restoration.exemplar.LOCKSTEP``):
the fill of an earlier commit (``--before REV``, one after another) and the fill now at several LOCKSTEP values,
alternating for ``--rounds`` rounds on one bench_fill.synthetic_scan, one thread, process user and system CPU
seconds of ``exemplar_fill`` itself (optionally the old methods first, through the pipeline's fill, as
bench_fill_time.py). The fill does not depend on LOCKSTEP (each run is checked bit for bit against the first).

    python bench/bench_fill_lockstep.py 100 4,8,16 --before 72db27d --rounds 2 --methods harmonic,telea,ns \
        --out bench/results/fill_timing_lockstep_size_100mp.json
"""
import argparse, json, os, pathlib, resource, sys, time
import numpy as np
REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]
import cv2, torch
import bench_fill as BF
import restoration.exemplar as NOW

ap = argparse.ArgumentParser()
ap.add_argument("mp", type=float); ap.add_argument("sizes")
ap.add_argument("--before", required=True); ap.add_argument("--rounds", type=int, default=2)
ap.add_argument("--methods", default=""); ap.add_argument("--out", default="")
a = ap.parse_args()
cv2.setNumThreads(1); torch.set_num_threads(1)   # one thread, as bench_fill_time.py (the harmonic fill is torch's)
OLD = BF.exemplar_at(a.before)
img, mask, _ = BF.synthetic_scan(a.mp)


def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


def timed(name, f, **extra):
    (u, s), t = cpu(), time.perf_counter()
    out = f()
    u2, s2 = cpu()
    r = dict(name=name, **extra, user=round(u2 - u, 2), sys=round(s2 - s, 2), wall=round(time.perf_counter() - t, 1),
             load=round(os.getloadavg()[0], 2))
    runs.append(r)
    return out, r


runs: list = []
for m in [m for m in a.methods.split(",") if m]:
    timed(m, lambda: BF.run_fill(m, img, mask))
    print(runs[-1], flush=True)
ref = None
for rnd in range(a.rounds):
    for name in [f"exemplar@{a.before}"] + [f"exemplar LOCKSTEP {k}" for k in a.sizes.split(",")]:
        if "LOCKSTEP" in name:
            NOW.LOCKSTEP = int(name.split()[-1])
        mod = OLD if "@" in name else NOW
        out, r = timed(name, lambda: mod.exemplar_fill(img, mask)[0], round=rnd + 1)
        if ref is None:
            ref = out.copy()
        else:
            r["bit_identical_to_first"] = bool(np.array_equal(out.view(np.uint32), ref.view(np.uint32)))
        print(r, flush=True)
        del out
if a.out:
    pathlib.Path(a.out).write_text(json.dumps({"date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                               "mp": round(mask.size / 1e6, 2), "runs": runs}, indent=1))
