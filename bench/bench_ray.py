"""Ray throughput: the same collection of scans (``python -m restoration SCANS --ray``) with 1 and with 2 Ray
workers on this machine, rounds interleaved (1, 2, 1, 2, ...). Writes bench/results/ray_throughput.json.

    python bench/bench_ray.py [--scans 8] [--size 256x384] [--rounds 2] [--threads 1]

One Ray instance on this machine (``num_cpus`` = 2, every address 127.0.0.1) serves every run; each run
starts its own actors (their start-up is part of its time, as in a real job) and writes a new collection.
Reported per run: wall seconds of the job, the steady rate (scans per second between the first and the last
scan finished, start-up excluded) and the ratio 2 workers / 1 worker of both. The machine's load average and
CPU count are recorded before and after each run: on a machine whose cores other jobs already use, a second
worker has no free core to run on and the ratio says so.
"""
import argparse
import json
import os
import pathlib
import platform
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")   # a local instance on 127.0.0.1 only
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def make_scans(d, n, h, w):
    from restoration.fileio import to_uint, write_tiff
    from restoration.synth import SynthConfig, make_sample
    d.mkdir(parents=True)
    for i in range(n):
        img = make_sample(SynthConfig(height=h, width=w), seed=100 + i)[0]
        write_tiff(d, f"scan{i:02d}.tif", to_uint(img, 16), 600)
    return d


class Stamps:
    """A JobProgress stand-in that records when each scan finishes."""

    def __init__(self):
        self.t = []

    def update(self, *, done=0, failed=0, **_):
        if done or failed:
            self.t.append(time.monotonic())

    def close(self):
        pass


def run(scans, out, workers, threads):
    import restoration.batch as rb
    from restoration.__main__ import _one_record, build_parser, config_from_args
    args = build_parser().parse_args([str(scans), "--out", str(out), "--dpi", "600", "--ray",
                                      "--workers", str(workers), "--threads", str(threads)])
    stamps = Stamps()
    real = rb.JobProgress
    rb.JobProgress = lambda *a, **k: stamps   # the job's progress object: record finish times, print nothing
    load0 = os.getloadavg()
    t0 = time.monotonic()
    try:
        summary, rc = rb.run_collection(args, config_from_args, _one_record)
    finally:
        rb.JobProgress = real
    wall = time.monotonic() - t0
    assert rc == 0 and summary["done"] == len(stamps.t), summary
    n = len(stamps.t)
    steady = (n - 1) / (stamps.t[-1] - stamps.t[0]) if n > 1 and stamps.t[-1] > stamps.t[0] else None
    return {"workers": workers, "scans": n, "wall_s": round(wall, 2), "scans_per_s_wall": round(n / wall, 4),
            "scans_per_s_steady": round(steady, 4) if steady else None, "first_done_s": round(stamps.t[0] - t0, 2),
            "load_before": [round(x, 2) for x in load0], "load_after": [round(x, 2) for x in os.getloadavg()]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scans", type=int, default=8)
    ap.add_argument("--size", default="256x384", help="HxW of each scan")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "ray_throughput.json"))
    a = ap.parse_args()
    h, w = (int(v) for v in a.size.split("x"))
    import ray
    from atelier_ray import LOCAL, connect
    with tempfile.TemporaryDirectory(prefix="bench_ray") as tmp:
        scans = make_scans(pathlib.Path(tmp) / "scans", a.scans, h, w)
        where = connect(LOCAL, [str(REPO)], num_cpus=2)
        runs = []
        try:
            for r in range(a.rounds):
                for k in (1, 2):
                    res = run(scans, pathlib.Path(tmp) / f"out_{r}_{k}", k, a.threads)
                    res["round"] = r
                    print(json.dumps(res), file=sys.stderr)
                    runs.append(res)
        finally:
            ray.shutdown()

    def mean(k, key):
        v = [x[key] for x in runs if x["workers"] == k and x[key]]
        return sum(v) / len(v) if v else None
    ratio = {key: round(mean(2, key) / mean(1, key), 3) for key in ("scans_per_s_wall", "scans_per_s_steady")
             if mean(1, key) and mean(2, key)}
    result = {"what": "python -m restoration SCANS --ray (local Ray, num_cpus=2), 1 vs 2 workers, same scans",
              "scans": a.scans, "size": a.size, "threads_per_worker": a.threads, "where": where,
              "cpu_count": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
              "date": time.strftime("%Y-%m-%d %H:%M"), "runs": runs, "ratio_2_vs_1": ratio}
    pathlib.Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({"ratio_2_vs_1": ratio, "load": [x["load_before"][0] for x in runs]}, indent=1))


if __name__ == "__main__":
    main()
