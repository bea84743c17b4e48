"""DLoRAL chunked runs: the cost of the chunk overlap and peak memory against clip length (tiny models).

    python bench/bench_dloral_chunks.py [--lengths 10 100 1000] [--chunk 8] [--overlap-frames 96]

No host and no real weights: the tiny stand-in models of the core tests (``tests/_dloral_models.py``),
16x16 frames -> 64x64 (``--process-size 64``), window 4. Two parts, written to
``bench/results/dloral_chunks.json`` with the CPU's model name (``/proc/cpuinfo``):

* **overlap**: the core alone (``upscale_video`` over the clip against ``upscale_chunk`` per chunk), seconds
  per output frame; the chunked run also prepares and encodes each chunk's carried previous frame once
  more, so it costs about one frame's encode per chunk. Small models make the relative figure an upper
  bound of what the VAE-bound real model pays per chunk (one encode of ~12 s against ~54 s per frame).
* **memory**: ``python -m dloral upscale`` on a small H.264 clip of each length (one pass, and ``--chunk``),
  each in its own process: peak resident memory above the level after the models are built (sampled every
  20 ms from ``/proc/self/statm``; ``CHILD_ENV``). Flat in length means the 1000-frame growth is about the 10-frame growth.

``--previous COMMIT`` measures instead the CLI as it was at COMMIT (its ``dloral`` package, ``atelier_settings.py``
and tiny test models, taken with ``git archive``; default ``a676ba7``, the pack before the video, chunk and Ray
work, which read videos with OpenCV and wrote PNG folders only) against the current CLI, both writing a PNG
frame folder from the same clips, one pass; written to ``bench/results/dloral_cli_memory_previous.json``.
"""
import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "bench"), str(REPO / "scripts")]

#: One thread; glibc maps blocks of 64 KiB and up on their own and returns them when freed, with one arena,
#: so resident memory follows live memory (otherwise freed blocks stay mapped: 10-20 MiB of noise run to run).
CHILD_ENV = {"OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_ARENA_MAX": "1"}

CHILD = r'''
import json, os, sys, threading, time
sys.path[:0] = {paths!r}
import torch
import _dloral_models as dm
from dloral.__main__ import main
PAGE = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE
models = dm.models()
base, peak, stop = rss(), [0], []
def sample():
    while not stop:
        peak[0] = max(peak[0], rss())
        time.sleep(0.02)
th = threading.Thread(target=sample, daemon=True)
th.start()
t = time.time()
rc = main(sys.argv[1:], loader=lambda request: models)
dt = time.time() - t
stop.append(1)
th.join()
peak[0] = max(peak[0], rss())
print(json.dumps({{"rc": rc, "seconds": dt, "rss_base_mib": base / 2**20, "rss_peak_mib": peak[0] / 2**20,
                  "rss_growth_mib": (peak[0] - base) / 2**20}}))
'''


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_clip(path, n, size=16):
    import torch
    import _dloral_models as dm
    from fractions import Fraction
    from dloral.video import VideoWriter
    base = dm.frames(4, size, size)
    with VideoWriter(path, size, size, Fraction(1, 24), Fraction(24), "h264") as w:
        for i in range(n):
            w.write(base[i % 4].roll(i, -1).permute(1, 2, 0), Fraction(i, 24))


def overlap(n, chunk, window, repeats=3):
    import torch
    import _dloral_models as dm
    from dloral.chunks import ChunkPlan, stream_chunks, upscale_chunk
    from dloral.pipeline import upscale_video
    models, frames, cfg = dm.models(), dm.frames(n), dm.cfg(window=window)
    best = {}
    for _ in range(repeats):
        t = time.perf_counter()
        one = list(upscale_video(iter(frames), models, cfg))
        best["one_pass"] = min(best.get("one_pass", 1e9), time.perf_counter() - t)
        t = time.perf_counter()
        ch = [f for c, prev, span in stream_chunks(iter(frames), ChunkPlan(chunk, window))
              for f in upscale_chunk(span, c, models, cfg, previous=prev)]
        best["chunked"] = min(best.get("chunked", 1e9), time.perf_counter() - t)
    same = all(torch.equal(a, b) for a, b in zip(one, ch)) and len(one) == len(ch)
    return {"frames": n, "chunk": chunk, "window": window, "bit_identical": same,
            "one_pass_s_per_frame": best["one_pass"] / n, "chunked_s_per_frame": best["chunked"] / n,
            "chunked_over_one_pass": best["chunked"] / best["one_pass"],
            "encodes_per_frame_chunked": (n + (n - 1) // chunk) / n}


def memory(n, chunk, tmp, weights, size=16):
    """Peak RSS growth of one-pass and chunked CLI runs on an ``n``-frame clip of ``size`` px, each a process."""
    clip = tmp / f"clip_{n}_{size}.mp4"
    if not clip.exists():
        write_clip(clip, n, size)
    rows = []
    for mode, extra in (("one pass", []), (f"chunk {chunk}", ["--chunk", str(chunk)])):
        out = tmp / f"out_{n}_{len(extra)}.mov"
        cmd = [sys.executable, "-c", CHILD.format(paths=[str(REPO), str(REPO / "tests"), str(REPO / "bench")]),
               "upscale", str(clip), "--out", str(out), "--weights", str(weights), "--checkpoint", str(weights),
               "--process-size", "64", "--window", "4", "--quiet", *extra]
        r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, **CHILD_ENV))
        line = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else "{}"
        res = json.loads(line) if line.startswith("{") and line != "{}" else {"error": r.stderr[-500:]}
        rows.append({"frames": n, "size": size, "mode": mode, **res})
        if out.exists():
            out.unlink()
    return rows


def previous_tree(commit, dest):
    """The files the CLI needs at ``commit``, under ``dest`` (no checkout, no worktree)."""
    dest.mkdir(parents=True)
    arch = subprocess.run(["git", "-C", str(REPO), "archive", commit, "dloral", "atelier_settings.py",
                           "tests/_dloral_models.py", "tests/_dloral_synth.py"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=arch.stdout, check=True)
    return dest


def memory_frames(n, tmp, root, label, size=16):
    """Peak RSS growth of a one-pass CLI run of the tree ``root`` on an ``n``-frame clip into a PNG folder.
    The weights are converted by that tree (its own file format)."""
    clip = tmp / f"clip_{n}_{size}.mp4"
    if not clip.exists():
        write_clip(clip, n, size)
    w = tmp / f"w_{label}.safetensors"
    paths = [str(root), str(root / "tests"), str(REPO / "bench")]
    if not w.exists():
        code = (f"import sys; sys.path[:0] = {paths!r}\n"
                "from dloral import convert_official, save_weights\n"
                "from _dloral_synth import make_official, unet_shapes\n"
                f"save_weights(convert_official(make_official(unet_shapes(), seed=4)[0]), {str(w)!r})\n")
        subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ, PYTHONPATH=""))
    out = tmp / f"frames_{label}_{n}"
    cmd = [sys.executable, "-c", CHILD.format(paths=paths), "upscale", str(clip), "--out", str(out),
           "--weights", str(w), "--checkpoint", str(w), "--process-size", "64", "--window", "4", "--quiet"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH="", **CHILD_ENV))
    line = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else "{}"
    res = json.loads(line) if line.startswith("{") and line != "{}" else {"error": r.stderr[-800:]}
    frames = len(list(out.glob("frame_*.png"))) if out.exists() else 0
    import shutil
    shutil.rmtree(out, ignore_errors=True)
    return {"frames": n, "size": size, "code": label, "frames_written": frames, **res}


def main_previous(a):
    import torch
    res = {"cpu": cpu_name(), "threads": 1, "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
           "what": "peak RSS of `upscale CLIP.mp4 --out FOLDER` (one pass, PNG frames), tiny stand-in models, "
                   "16x16 -> 64x64, window 4: the CLI at --previous against the current one", "previous": a.previous,
           "rows": []}
    with tempfile.TemporaryDirectory() as d:
        tmp = pathlib.Path(d)
        prev = previous_tree(a.previous, tmp / "prev")
        for n in a.lengths:
            for label, root in ((a.previous, prev), ("current", REPO)):
                res["rows"].append(memory_frames(n, tmp, root, label))
                print(json.dumps(res["rows"][-1]), flush=True)
    g = {}
    for r in res["rows"]:
        g.setdefault(r["code"], {})[r["frames"]] = r.get("rss_growth_mib")
    res["growth_ratio_longest_over_shortest"] = {
        k: (v[max(v)] / v[min(v)] if v.get(min(v)) else None) for k, v in g.items()}
    out = pathlib.Path(a.out if a.out != DEFAULT_OUT else str(REPO / "bench" / "results" / "dloral_cli_memory_previous.json"))
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res["growth_ratio_longest_over_shortest"], indent=1))


DEFAULT_OUT = str(REPO / "bench" / "results" / "dloral_chunks.json")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", type=int, nargs="*", default=[10, 100, 1000])
    ap.add_argument("--chunk", type=int, default=8)
    ap.add_argument("--overlap-frames", type=int, default=96)
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--previous", default=None, metavar="COMMIT", nargs="?", const="a676ba7",
                    help="compare the CLI's peak memory with the CLI at COMMIT instead (default a676ba7)")
    a = ap.parse_args()
    if a.previous:
        return main_previous(a)
    import torch
    torch.set_num_threads(1)
    from dloral import convert_official, save_weights
    from _dloral_synth import make_official, unet_shapes
    res = {"cpu": cpu_name(), "threads": 1, "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
           "models": "tiny stand-ins (tests/_dloral_models.py), 16x16 -> 64x64, window 4",
           "overlap": [overlap(a.overlap_frames, c, 4) for c in (4, a.chunk, 32)], "memory": []}
    with tempfile.TemporaryDirectory() as d:
        tmp = pathlib.Path(d)
        w = tmp / "w.safetensors"
        save_weights(convert_official(make_official(unet_shapes(), seed=4)[0]), str(w))
        for n in a.lengths:
            res["memory"].extend(memory(n, a.chunk, tmp, w))
            print(json.dumps(res["memory"][-2:]), flush=True)
    g = {r["mode"]: {} for r in res["memory"]}
    for r in res["memory"]:
        g[r["mode"]][r["frames"]] = r.get("rss_growth_mib")
    res["growth_ratio_longest_over_shortest"] = {
        m: (v[max(v)] / v[min(v)] if v.get(min(v)) else None) for m, v in g.items()}
    pathlib.Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps({k: res[k] for k in ("cpu", "overlap", "growth_ratio_longest_over_shortest")}, indent=1))


if __name__ == "__main__":
    main()
