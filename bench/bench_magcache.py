"""MagCache benchmark on the trained tiny Wan, through the real node in a real host, on CPU.

For each preset and step count, in one process and one run:
* ``full``: the model without MagCache (median wall time of ``--repeats`` runs);
* ``hook0``: MagCache with thresh 0 (hooks on, nothing skipped) -> hook overhead per step;
* ``magcache``: MagCache at the preset's setting -> wall-clock speedup;
* the ideal speedup implied by the skipped block-stack time: the block-stack time per row
  is measured on the full run (forward hooks around the stack), and
  ``ideal = full / (full - skipped_rows * block_time_per_row)``;
* PSNR/SSIM of the decoded MagCache clip against the full run.

Usage (repo root): ``COMFYUI_DIR=~/ComfyUI .venv/bin/python bench/bench_magcache.py``.
Writes ``bench/results/magcache.json``.
"""
import argparse
import json
import os
import pathlib
import statistics
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from _hostpack import host_and_pack  # noqa: E402

SETTINGS = {  # preset -> the official setting for it (README of MagCache: E012K2R02, E024K6R02)
    "wan2.1_t2v_1.3B": dict(thresh=0.12, k=2, retention=0.2),
    "wan2.1_t2v_14B": dict(thresh=0.24, k=6, retention=0.2),
}
PROMPT, NEGATIVE = "red square moving right", ""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, nargs="+", default=[30, 50])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--cfg", type=float, default=5.0)
    ap.add_argument("--size", type=int, default=16, help="latent height/width")
    ap.add_argument("--frames", type=int, default=3, help="latent frames")
    ap.add_argument("--weights", default=None, help="trained tiny Wan (default: the shipped one)")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "magcache.json"))
    a = ap.parse_args()

    host, pack, sub = host_and_pack("bench_magcache")
    import torch
    import comfy.sd
    import comfy.utils  # noqa: F401
    import nodes as host_nodes
    tinywan = sub("tinywan")
    magcache = sub("magcache")
    mc_nodes = pack.nodes.magcache_nodes

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    sd, _ = tinywan.load_trained_state_dict(a.weights)
    model = comfy.sd.load_diffusion_model_state_dict(sd)
    pos = [[tinywan.encode_prompt(PROMPT)[None], {}]]
    neg = [[tinywan.encode_prompt(NEGATIVE)[None], {}]]
    latent = {"samples": torch.zeros(1, 16, a.frames, a.size, a.size)}

    def run(m, steps):
        t = time.perf_counter()
        (out,) = host_nodes.common_ksampler(m, 0, steps, a.cfg, "euler", "simple", pos, neg, latent)
        return time.perf_counter() - t, out["samples"]

    def timed(models, steps):
        """Median wall time of each model, runs interleaved round by round so that drift in
        machine load hits all of them alike."""
        for m in models:
            run(m, steps)  # warm-up
        ts, outs = [[] for _ in models], [None] * len(models)
        for _ in range(a.repeats):
            for i, m in enumerate(models):
                t, outs[i] = run(m, steps)
                ts[i].append(t)
        return [statistics.median(t) for t in ts], outs

    blocks = model.get_model_object("diffusion_model").blocks
    stack = {"t": 0.0, "rows": 0, "t0": 0.0}

    def pre(mod, args, kwargs):
        stack["t0"] = time.perf_counter()

    def post(mod, args, kwargs, out):
        stack["t"] += time.perf_counter() - stack["t0"]
        stack["rows"] += out.shape[0]

    def make(preset, **kw):
        m, _ = mc_nodes.AtelierMagCacheWan().apply(
            model, preset=preset, start_step=-1, end_step=-1, protect_last=0, cache_device="auto", **kw)
        return m

    results = []
    for preset, setting in SETTINGS.items():
        for steps in a.steps:
            # share of the block stack in a full run, measured in the same run (median of repeats)
            shares = []
            h1 = blocks[0].register_forward_pre_hook(pre, with_kwargs=True)
            h2 = blocks[-1].register_forward_hook(post, with_kwargs=True)
            try:
                for _ in range(a.repeats):
                    stack.update(t=0.0, rows=0)
                    t_run, _ = run(model, steps)
                    shares.append(stack["t"] / t_run)
            finally:
                h1.remove()
                h2.remove()
            rows_full = stack["rows"]
            share = statistics.median(shares)
            m0 = make(preset, thresh=0.0, k=setting["k"], retention=setting["retention"], preview_steps=steps)
            m = make(preset, preview_steps=steps, **setting)
            (t_full, t_hook0, t_mc), (ref, out0, out) = timed([model, m0, m], steps)
            assert torch.equal(out0, ref), "thresh 0 must reproduce the full run"
            rep = m.model_options["transformer_options"]["atelier_magcache_run"].last_report
            skipped_rows = rep["skipped_calls"]
            t_ideal = t_full * (1.0 - share * skipped_rows / rows_full)
            fr = torch.from_numpy(tinywan.render.latent_to_frames(tinywan.vae.from_host_latent(ref))[0]).float() / 255
            fo = torch.from_numpy(tinywan.render.latent_to_frames(tinywan.vae.from_host_latent(out))[0]).float() / 255
            p = magcache.psnr(fr, fo)
            s = magcache.ssim(fr, fo)
            r = {
                "preset": preset, **setting, "steps": steps, "cfg": a.cfg,
                "latent": [1, 16, a.frames, a.size, a.size],
                "full_s": t_full, "hook0_s": t_hook0, "magcache_s": t_mc,
                "hook_overhead_frac_of_step": (t_hook0 - t_full) / t_full,
                "computed_calls": rep["computed_calls"], "total_calls": rep["total_calls"],
                "block_stack_share_of_full": share,
                "speedup": t_full / t_mc, "ideal_speedup": t_full / t_ideal,
                "speedup_vs_ideal": (t_full / t_mc) / (t_full / t_ideal),
                "psnr_db_mean": float(p[torch.isfinite(p)].mean()) if torch.isfinite(p).any() else float("inf"),
                "ssim_mean": float(s.mean()),
            }
            results.append(r)
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}))
    out = {"host": str(host), "device": "cpu", "threads": torch.get_num_threads(),
           "torch": torch.__version__, "model": "tinywan trained (dim 128, 2 layers)",
           "note": "ratios measured in one run; not a timed test", "results": results}
    pathlib.Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(a.out).write_text(json.dumps(out, indent=2))
    print("wrote", a.out)


if __name__ == "__main__":
    main()
