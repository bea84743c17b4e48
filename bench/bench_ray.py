"""Ray throughput: the same inputs with 1 and with 2 Ray workers on this machine, rounds interleaved
(1, 2, 1, 2, ...). Two workloads (``--work``):

* ``scans``: a collection of scans (``python -m restoration SCANS --ray``), a scan per unit of work;
  writes ``bench/results/ray_throughput.json``;
* ``dloral``: one clip cut into chunks spread over the workers (``upscale CLIP --chunk N --ray``,
  ``dloral/batch.py``) with the tiny random-weight models of the core tests (``tests/_dloral_tiny_cli.py``),
  a chunk per unit of work; writes ``bench/results/ray_throughput_dloral_chunks.json``.

    python bench/bench_ray.py [--work scans|dloral] [--rounds 2]
        scans:  [--scans 8] [--size 256x384]      dloral: [--frames 48] [--size 64x64] [--chunk 4]

**One thread per worker, the baseline too**: each actor sets ``torch.set_num_threads(1)`` (and OpenCV's
threads to 1: restoration's ``--threads 1``; the tiny DLoRAL loader sets torch's), so that 1 worker uses one
core and 2 workers two: the ratio measures the distribution, not two thread pools fighting over 2 cores.
One Ray instance on this machine (``num_cpus`` = 2, every address 127.0.0.1) serves every run; each run
starts its own actors (their start-up is part of its time, as in a real job). Reported per run: wall
seconds of the job, the steady rate (units per second between the first and the last unit finished,
start-up excluded) and the ratio 2 workers / 1 worker of both. The machine's load average and CPU count are
recorded before and after each run: on a machine whose cores other jobs already use, a second worker has
no free core to run on and the ratio says so.
"""
import argparse
import contextlib
import io
import json
import os
import pathlib
import platform
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "scripts")]
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


def make_clip(d, n, h, w):
    """A folder of ``n`` frames of ``h``x``w`` and the converted synthetic DLoRAL weights beside it."""
    import _dloral_models as dm
    from dloral import convert_official, save_weights
    from dloral.__main__ import _save
    from _dloral_synth import make_official, unet_shapes
    clip = d / "clip"
    clip.mkdir(parents=True)
    for i, f in enumerate(dm.frames(n, h, w)):
        _save(f, clip / f"f{i:04d}.png")
    save_weights(convert_official(make_official(unet_shapes(), seed=0)[0]), str(d / "w.safetensors"))
    return clip


class Stamps:
    """A JobProgress stand-in that records when each unit of work finishes."""

    def __init__(self):
        self.t = []

    def update(self, *, done=0, failed=0, **_):
        if done or failed:
            self.t.append(time.monotonic())

    def close(self):
        pass


def _timed(module, job):
    """Run ``job()`` with ``module.JobProgress`` replaced by a :class:`Stamps`; ``(result, stamps, wall, load0)``."""
    stamps = Stamps()
    real = module.JobProgress
    module.JobProgress = lambda *a, **k: stamps   # the job's progress object: record finish times, print nothing
    load0 = os.getloadavg()
    t0 = time.monotonic()
    try:
        res = job()
    finally:
        module.JobProgress = real
    return res, stamps, time.monotonic() - t0, t0, load0


def _row(workers, stamps, wall, t0, load0, unit):
    n = len(stamps.t)
    steady = (n - 1) / (stamps.t[-1] - stamps.t[0]) if n > 1 and stamps.t[-1] > stamps.t[0] else None
    return {"workers": workers, unit: n, "wall_s": round(wall, 2), f"{unit}_per_s_wall": round(n / wall, 4),
            f"{unit}_per_s_steady": round(steady, 4) if steady else None, "first_done_s": round(stamps.t[0] - t0, 2),
            "load_before": [round(x, 2) for x in load0], "load_after": [round(x, 2) for x in os.getloadavg()]}


def run_scans(inp, out, workers, a):
    import restoration.batch as rb
    from restoration.__main__ import _one_record, build_parser, config_from_args
    args = build_parser().parse_args([str(inp), "--out", str(out), "--dpi", "600", "--ray",
                                      "--workers", str(workers), "--threads", "1"])
    (summary, rc), stamps, wall, t0, load0 = _timed(rb, lambda: rb.run_collection(args, config_from_args, _one_record))
    assert rc == 0 and summary["done"] == len(stamps.t), summary
    return _row(workers, stamps, wall, t0, load0, "scans")


def run_dloral(inp, out, workers, a):
    import dloral.batch as db
    from dloral.__main__ import main
    from _dloral_tiny_cli import tiny_loader
    w = inp.parent / "w.safetensors"
    argv = ["upscale", str(inp), "--out", str(out), "--weights", str(w), "--checkpoint", str(w), "--process-size",
            str(min(a.h, a.w)), "--window", "2", "--chunk", str(a.chunk), "--batch-ext", "frames", "--quiet",
            "--ray", "--workers", str(workers)]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc, stamps, wall, t0, load0 = _timed(db, lambda: main(argv, loader=tiny_loader))
    summary = json.loads(buf.getvalue()[buf.getvalue().index("{"):])
    assert rc == 0 and summary["chunks_run"] == len(stamps.t), summary
    row = _row(workers, stamps, wall, t0, load0, "chunks")
    row["frames_per_s_steady"] = round(row["chunks_per_s_steady"] * a.chunk, 4) if row["chunks_per_s_steady"] else None
    row["frames_per_s_wall"] = round(a.frames / wall, 4)
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", choices=("scans", "dloral"), default="scans")
    ap.add_argument("--scans", type=int, default=8)
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--chunk", type=int, default=4)
    ap.add_argument("--size", default=None, help="HxW of each scan (256x384) or frame (64x64)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    a.size = a.size or ("256x384" if a.work == "scans" else "64x64")
    a.h, a.w = (int(v) for v in a.size.split("x"))
    name = "ray_throughput.json" if a.work == "scans" else "ray_throughput_dloral_chunks.json"
    a.out = a.out or str(REPO / "bench" / "results" / name)
    import ray
    from atelier_ray import LOCAL, connect
    with tempfile.TemporaryDirectory(prefix="bench_ray") as tmp:
        if a.work == "scans":
            inp, run, unit = make_scans(pathlib.Path(tmp) / "scans", a.scans, a.h, a.w), run_scans, "scans"
        else:
            inp, run, unit = make_clip(pathlib.Path(tmp), a.frames, a.h, a.w), run_dloral, "chunks"
        where = connect(LOCAL, [str(REPO), str(REPO / "tests"), str(REPO / "scripts")], num_cpus=2)
        runs = []
        try:
            for r in range(a.rounds):
                for k in (1, 2):
                    res = run(inp, pathlib.Path(tmp) / f"out_{r}_{k}", k, a)
                    res["round"] = r
                    print(json.dumps(res), file=sys.stderr)
                    runs.append(res)
        finally:
            ray.shutdown()

    def mean(k, key):
        v = [x[key] for x in runs if x["workers"] == k and x[key]]
        return sum(v) / len(v) if v else None
    ratio = {key: round(mean(2, key) / mean(1, key), 3) for key in (f"{unit}_per_s_wall", f"{unit}_per_s_steady")
             if mean(1, key) and mean(2, key)}
    what = ("python -m restoration SCANS --ray --threads 1" if a.work == "scans" else
            f"dloral upscale CLIP --chunk {a.chunk} --ray (tiny random-weight models, 1 torch thread per worker)")
    result = {"what": what + " on a local Ray (num_cpus=2), 1 vs 2 workers, same inputs", "work": a.work,
              "inputs": a.scans if a.work == "scans" else a.frames, "size": a.size, "threads_per_worker": 1,
              "where": where, "cpu_count": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
              "date": time.strftime("%Y-%m-%d %H:%M"), "runs": runs, "ratio_2_vs_1": ratio}
    if a.work == "dloral":
        result["chunk"] = a.chunk
    pathlib.Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({"ratio_2_vs_1": ratio, "load": [x["load_before"][0] for x in runs]}, indent=1))


if __name__ == "__main__":
    main()
