"""Fill timing on a synthetic scan (issue 21 item 4): the old methods and the exemplar fill, optionally with
other exemplar settings (e.g. ``{"flat_var": 0}``) and the exemplar of an earlier commit (``--before REV``: its
restoration/exemplar.py, loaded from git, run through the same pipeline call) in the same sitting, one thread.
The scan is bench_fill.synthetic_scan (real pictures tiled, losses from bench_fill.loss_mask, ~4.7 %).

    nice -n 10 python bench/bench_fill_time.py 25 '[{}]' harmonic,telea,ns --before 3dfb39e --out bench/results/x.json

Prints wall seconds, seconds per MP and CPU seconds per method (and the exemplar's dE00 to the undamaged scan and
its largest difference to the ``--before`` fill); ``--out`` writes them as JSON with the load average.
``--workers 1,0`` runs each exemplar variant with each ``fill_workers`` value (0 = one per CPU) and checks that
every run gives the first one's fill bit for bit; CPU seconds then include the worker processes' (``cpu_s`` is
the process and its children), and ``max_rss_mb`` gives the peak resident memory of the process and of its
largest child (the scan's maps and the fill are shared with the children, so the two overlap).
``--lib-threads`` leaves OpenCV and torch at their own thread counts (what a user gets; default: one thread).
``--rounds N`` runs the ``--before`` exemplar and the variants N times, alternating (before, now, before, now, ...),
so that a change of a few per cent is not read off one pair of runs on a shared machine; ``sys_s`` is the system
part of ``cpu_s``.
"""
import argparse, json, os, pathlib, resource, sys, time
import numpy as np
REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]
import bench_fill as BF
import restoration.exemplar as EX
from dataclasses import replace
import cv2, torch
ap = argparse.ArgumentParser()
ap.add_argument("mp", type=float); ap.add_argument("variants"); ap.add_argument("methods", nargs="?", default="")
ap.add_argument("--before", default=""); ap.add_argument("--out", default="")
ap.add_argument("--workers", default="1"); ap.add_argument("--lib-threads", action="store_true")
ap.add_argument("--rounds", type=int, default=1)
a = ap.parse_args()
if not a.lib_threads:
    cv2.setNumThreads(1); torch.set_num_threads(1)
mp, variants, methods = a.mp, json.loads(a.variants), [m for m in a.methods.split(",") if m]
img, mask, clean = BF.synthetic_scan(mp)
mpx = img.shape[0] * img.shape[1] / 1e6
doc = {"date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "mp": round(mpx, 2),
       "mask_share": round(float(mask.mean()), 4), "load_1min": [round(os.getloadavg()[0], 2)], "runs": [],
       "threads": {"cv2": cv2.getNumThreads(), "torch": torch.get_num_threads(), "cpus": len(os.sched_getaffinity(0))}}
print("mp", round(mpx, 2), "mask", doc["mask_share"], flush=True)


def _cpu(keys=("ru_utime", "ru_stime")):
    return sum(getattr(resource.getrusage(w), k) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
               for k in keys)


def timed(name, f, **extra):
    t, c, cs0 = time.perf_counter(), _cpu(), _cpu(("ru_stime",))
    out = f()
    s, cs, ss = time.perf_counter() - t, _cpu() - c, _cpu(("ru_stime",)) - cs0
    r = {"name": name, "s": round(s, 1), "s_per_mp": round(s / mpx, 3), "cpu_s": round(cs, 2), "sys_s": round(ss, 2),
         **extra, "load_1min_after": round(os.getloadavg()[0], 2)}
    doc["runs"].append(r)
    print(name, r["s"], "s", r["s_per_mp"], "s/MP", "cpu", r["cpu_s"], "s", extra or "", flush=True)
    return out, r


for m in methods:
    timed(m, lambda: BF.run_fill(m, img, mask))
ref = None
old = None
if a.before:
    old = BF.exemplar_at(a.before)
defaults = EX.exemplar_fill.__defaults__
new_fn = EX.exemplar_fill
first = None
for rnd in range(a.rounds):
    tag = f" round {rnd + 1}" if a.rounds > 1 else ""
    if old is not None:
        # the pipeline imports it at call time; an exemplar before fill_workers takes no workers
        EX.exemplar_fill = lambda img, mask, progress=None, workers=1: old.exemplar_fill(img, mask, progress=progress)
        try:
            f, r = timed(f"exemplar@{a.before}{tag}", lambda: BF.run_fill("exemplar", img, mask))
        finally:
            EX.exemplar_fill = new_fn
        r["dE00"] = round(BF.de00_in(f, clean, mask), 3)
        if ref is None:
            ref = f
        else:
            r["bit_identical_to_first_before"] = bool(np.array_equal(f.view(np.uint32), ref.view(np.uint32)))
        del f
    for v in variants:
        for nw in [int(x) for x in a.workers.split(",")]:
            EX.exemplar_fill.__defaults__ = (replace(EX.ExemplarConfig(), **v), None, 1)
            f, r = timed(f"exemplar {json.dumps(v)} workers {nw}{tag}", lambda: BF.run_fill("exemplar", img, mask, workers=nw),
                         workers=EX.auto_workers(nw))
            r["max_rss_mb"] = [round(resource.getrusage(w).ru_maxrss / 1024) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
            if first is None:
                first = f
            else:
                r["bit_identical_to_first"] = bool(np.array_equal(f.view(np.uint32), first.view(np.uint32)))
            r["dE00"] = round(BF.de00_in(f, clean, mask), 3)
            if ref is not None:
                d = np.abs(f - ref)[mask]
                r["vs_before"] = {"max_abs": float(d.max()), "mean_abs": float(d.mean()), "px_over_1e-3": int((d.max(1) > 1e-3).sum()),
                                  "bit_identical": bool(np.array_equal(f.view(np.uint32), ref.view(np.uint32)))}
            print("  ", {k: r[k] for k in r if k in ("dE00", "vs_before", "bit_identical_to_first", "max_rss_mb")}, flush=True)
            del f
EX.exemplar_fill.__defaults__ = defaults
doc["load_1min"].append(round(os.getloadavg()[0], 2))
old_s = [r["s"] for r in doc["runs"] if r["name"] in methods]
if old_s:
    for r in doc["runs"]:
        if r["name"].startswith("exemplar"):
            r["vs_slowest_old"] = round(r["s"] / max(old_s), 2)
base = {r["name"]: r for r in doc["runs"] if r["name"] in methods}
for r in doc["runs"]:
    if r["name"].startswith("exemplar") and base:   # each exemplar run against each old method: wall and CPU
        r["vs_old"] = {m: {"wall": round(r["s"] / b["s"], 2), "cpu": round(r["cpu_s"] / b["cpu_s"], 2)} for m, b in base.items()}
print(json.dumps({r["name"]: r.get("vs_slowest_old") for r in doc["runs"]}), flush=True)
print(json.dumps({r["name"]: r["vs_old"] for r in doc["runs"] if "vs_old" in r}), flush=True)
if a.out:
    pathlib.Path(a.out).write_text(json.dumps(doc, indent=1))
