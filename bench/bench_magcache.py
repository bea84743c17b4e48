"""MagCache benchmark through the real node in a real host: hook cost and speedup.

For each preset and step count, in one process and one run:
* ``full``: the model without MagCache (median wall and CPU time of ``--repeats`` runs, runs of
  all variants interleaved round by round so load drift hits them alike);
* ``hook0``: MagCache with thresh 0 (hooks on, nothing skipped): the hook's cost, stated in
  absolute terms (ms per step, µs per block call) and as a share of a step;
* ``magcache``: MagCache at the preset's setting -> wall-clock speedup;
* the ideal speedup implied by the skipped block-stack time (block-stack time per row measured
  on the full run with forward hooks): ``ideal = full / (full - skipped_rows * block_time_per_row)``;
* ``hook_cpu_us_per_call``: the node's hooks alone (APPLY_MODEL wrapper, block patches, the
  core engine) driven with identity blocks at the run's shapes: the absolute Python cost per
  model call and per block call, free of the model's own time;
* tiny trained model: PSNR/SSIM of the decoded clip against the full run.

``--quality`` (tiny trained Wan only): for each target speedup (default 1.5, 2, 2.5) the node with
``target_speedup`` (thresh/K chosen at run start by :func:`magcache.target.plan_for_target`, the node's
planner) against the full run over several prompts and seeds: PSNR/SSIM of the decoded clips (worst and
median over the samples), the planned (ideal-call) speedup, and the measured speedup against the ideal
implied by the skipped block-stack time. One torch thread; times are the main thread's CPU time (what a
shared machine's load does not inflate), wall times beside them. Writes ``bench/results/magcache_quality.json``
(``--out``).

Usage (repo root):
    COMFYUI_DIR=~/ComfyUI .venv/bin/python bench/bench_magcache.py            # tiny trained Wan, CPU
    COMFYUI_DIR=~/ComfyUI .venv/bin/python bench/bench_magcache.py --quality   # targets 1.5/2/2.5x, 8 prompts x 2 seeds
    COMFYUI_DIR=~/ComfyUI .venv/bin/python bench/bench_magcache.py --random-1.3B --gpu
        # Wan2.1-1.3B dims (dim 1536, 30 blocks, ffn 8960) on random weights, 480x832, 33 frames
Writes ``bench/results/magcache.json`` (``--out``); never overwrites: an existing file gets a
numbered sibling.
"""
import argparse
import json
import os
import pathlib
import statistics
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import hostbridge  # noqa: E402

SETTINGS = {  # preset -> the official setting for it (README of MagCache: E012K2R02, E024K6R02)
    "wan2.1_t2v_1.3B": dict(thresh=0.12, k=2, retention=0.2),
    "wan2.1_t2v_14B": dict(thresh=0.24, k=6, retention=0.2),
}
WAN13B = dict(dim=1536, ffn_dim=8960, num_layers=30)  # Wan2.1 T2V 1.3B (12 heads of 128)
PROMPT, NEGATIVE = "red square moving right", ""
#: --quality: prompts (every colour, shape and motion of the training data at least once) x seeds
QUALITY_PROMPTS = ("red square moving right", "blue circle moving up", "green bar moving left",
                   "yellow triangle still", "cyan square moving down", "magenta circle moving right",
                   "white bar moving up", "orange triangle moving left")


def _free_path(path):
    p = pathlib.Path(path)
    n = 1
    while p.exists():
        p = p.with_name(f"{pathlib.Path(path).stem}_{n}{p.suffix}")
        n += 1
    return p


def hook_cost(hook, session_for, x_shape, ctx_len, n_blocks, steps, torch, repeats=5):
    """CPU seconds per model call of the node's hooks driven with identity blocks (thresh 0)."""
    b = x_shape[0]
    x = torch.randn(*x_shape)
    ctx, e0 = torch.randn(b, ctx_len, x_shape[-1]), torch.randn(b, 6, x_shape[-1])
    sig = torch.linspace(1, 0, steps + 1)
    cu = [1, 0] if b == 2 else [0] * b
    patches = [hook.make_block_patch(i, n_blocks) for i in range(n_blocks)]

    def executor(xx, t, transformer_options):
        h = x
        for p in patches:
            h = p({"img": h, "txt": ctx, "vec": e0, "pe": None, "transformer_options": transformer_options},
                  {"original_block": lambda a: {"img": a["img"]}})["img"]
        return h

    def one_run():
        to = {"sample_sigmas": sig, "cond_or_uncond": cu, "uuids": [f"u{i}" for i in range(len(cu))],
              hook.RUN_KEY: session_for().fresh()}
        for i in range(steps):
            hook.apply_model_wrapper(executor, x, sig[i:i + 1], transformer_options=to)

    one_run()
    best = []
    for _ in range(repeats):
        t = time.thread_time()
        one_run()
        best.append((time.thread_time() - t) / steps)
    return min(best)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, nargs="+", default=None, help="default 30 50 (tiny), 30 (1.3B)")
    ap.add_argument("--repeats", type=int, default=None, help="default 5 (tiny), 2 (1.3B)")
    ap.add_argument("--cfg", type=float, default=5.0)
    ap.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"),
                    help="latent height/width (default 16 16 tiny, 60 104 = 480x832 for 1.3B)")
    ap.add_argument("--frames", type=int, default=None, help="latent frames (default 3 tiny, 9 = 33 frames 1.3B)")
    ap.add_argument("--weights", default=None, help="trained tiny Wan (default: the shipped one)")
    ap.add_argument("--random-1.3B", dest="random13", action="store_true",
                    help="Wan2.1-1.3B dims on random weights (no quality numbers); use with --gpu")
    ap.add_argument("--dims", type=int, nargs=3, default=None, metavar=("DIM", "FFN", "LAYERS"),
                    help="random weights at these dims instead (e.g. a CPU smoke test: 256 512 4)")
    ap.add_argument("--gpu", action="store_true", help="run on the host's GPU (default: CPU)")
    ap.add_argument("--quality", action="store_true",
                    help="tiny trained Wan: PSNR/SSIM and speedup at target speedups (--targets) over prompts x seeds")
    ap.add_argument("--targets", type=float, nargs="+", default=[1.5, 2.0, 2.5], help="--quality: target speedups")
    ap.add_argument("--prompts", type=int, default=8, help="--quality: how many of QUALITY_PROMPTS (1-8)")
    ap.add_argument("--seeds", type=int, default=2, help="--quality: seeds per prompt")
    ap.add_argument("--out", default=None, help="default bench/results/magcache.json (magcache_quality.json with "
                                                "--quality)")
    a = ap.parse_args()
    a.out = a.out or str(REPO / "bench" / "results" / ("magcache_quality.json" if a.quality else "magcache.json"))
    if a.quality and (a.random13 or a.dims):
        ap.error("--quality needs the trained tiny Wan (no --random-1.3B / --dims)")
    random_dims = WAN13B if a.random13 else (dict(zip(("dim", "ffn_dim", "num_layers"), a.dims)) if a.dims else None)
    big = random_dims is not None
    steps_list = a.steps or ([30] if big else [30, 50])
    repeats = a.repeats or (2 if big else 5)
    size = a.size or ([60, 104] if a.random13 else [16, 16])
    frames = a.frames or (9 if a.random13 else 3)

    try:   # the CPU unless --gpu (then the CPU only where torch sees no CUDA device)
        pack = hostbridge.import_pack(name="atelier_bench_pack", cpu="no-cuda" if a.gpu else "force",
                                      progress_bars=False)
    except hostbridge.HostTreeError as exc:
        sys.exit(f"bench_magcache: {exc}")
    host = hostbridge.host_tree()
    import torch
    import comfy.sd
    import comfy.model_management as mm
    import nodes as host_nodes
    tinywan = hostbridge.submodule(pack, "tinywan")
    magcache = hostbridge.submodule(pack, "magcache")
    hook = pack.nodes.magcache_hook
    mc_nodes = pack.nodes.magcache_nodes

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    t_load = time.perf_counter()
    if big:
        sd = tinywan.random_state_dict(seed=0, **random_dims)
        g = torch.Generator().manual_seed(1)
        pos = [[torch.randn(1, 64, 4096, generator=g), {}]]
        neg = [[torch.randn(1, 64, 4096, generator=g), {}]]
        model_name = f"random Wan2.1 dims {random_dims}"
    else:
        sd, _ = tinywan.load_trained_state_dict(a.weights)
        pos = [[tinywan.encode_prompt(PROMPT)[None], {}]]
        neg = [[tinywan.encode_prompt(NEGATIVE)[None], {}]]
        model_name = "tinywan trained (dim 128, 3 layers)"
    model = comfy.sd.load_diffusion_model_state_dict(sd)
    del sd
    print(f"model loaded in {time.perf_counter() - t_load:.1f}s: {model_name}", flush=True)
    latent = {"samples": torch.zeros(1, 16, frames, size[0], size[1])}
    dev = mm.get_torch_device()

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def run(m, steps):
        sync()
        t, c = time.perf_counter(), time.process_time()
        (out,) = host_nodes.common_ksampler(m, 0, steps, a.cfg, "euler", "simple", pos, neg, latent)
        sync()
        return time.perf_counter() - t, time.process_time() - c, out["samples"]

    def timed(models, steps):
        for m in models:
            run(m, steps)  # warm-up
        ws, cs, outs = [[] for _ in models], [[] for _ in models], [None] * len(models)
        for _ in range(repeats):
            for i, m in enumerate(models):
                w, c, outs[i] = run(m, steps)
                ws[i].append(w)
                cs[i].append(c)
        return [statistics.median(w) for w in ws], [statistics.median(c) for c in cs], outs

    blocks = model.get_model_object("diffusion_model").blocks
    stack = {"t": 0.0, "rows": 0, "calls": 0, "t0": 0.0}

    def pre(mod, args, kwargs):
        sync()
        stack["calls"] += 1
        stack["t0"] = time.perf_counter()

    def post(mod, args, kwargs, out):
        sync()
        stack["t"] += time.perf_counter() - stack["t0"]
        stack["rows"] += out.shape[0]

    def make(preset, **kw):
        return mc_nodes.AtelierMagCacheWan.execute(
            model, preset=preset, start_step=-1, end_step=-1, protect_last=0, cache_device="auto",
            schedule_steps=0, **kw).result[0]

    if a.quality:
        return quality(a, model, model_name, pack, host, run, blocks, sync, torch)

    results = []
    for preset, setting in (list(SETTINGS.items())[:1] if big else SETTINGS.items()):
        for steps in steps_list:
            shares = []
            h1 = blocks[0].register_forward_pre_hook(pre, with_kwargs=True)
            h2 = blocks[-1].register_forward_hook(post, with_kwargs=True)
            try:
                for _ in range(1 if big else repeats):
                    stack.update(t=0.0, rows=0, calls=0)
                    t_run, _, _ = run(model, steps)
                    shares.append(stack["t"] / t_run)
            finally:
                h1.remove()
                h2.remove()
            rows_full, model_calls = stack["rows"], stack["calls"]
            share = statistics.median(shares)
            m0 = make(preset, thresh=0.0, k=setting["k"], retention=setting["retention"], preview_steps=steps)
            m = make(preset, preview_steps=steps, **setting)
            (t_full, t_hook0, t_mc), (c_full, c_hook0, c_mc), (ref, out0, out) = timed([model, m0, m], steps)
            assert torch.equal(out0, ref), "thresh 0 must reproduce the full run"
            rep = m.model_options["transformer_options"]["atelier_magcache_run"].last_report
            calls, n_blocks = model_calls, len(blocks)
            skipped_rows = rep["skipped_calls"]
            t_ideal = t_full * (1.0 - share * skipped_rows / rows_full)
            tokens = frames * (size[0] // 2) * (size[1] // 2)
            rows_per_call = rows_full // calls if calls else 1
            dim = int(model.model.model_config.unet_config.get("dim", 128))
            r = {
                "preset": preset, **setting, "steps": steps, "cfg": a.cfg,
                "latent": [1, 16, frames, size[0], size[1]], "tokens": tokens, "blocks": n_blocks,
                "model_calls": calls, "rows_per_call": rows_per_call,
                "branch_evaluations": rep["total_calls"],
                "full_s": t_full, "hook0_s": t_hook0, "magcache_s": t_mc,
                "full_cpu_s": c_full, "hook0_cpu_s": c_hook0,
                "step_ms": t_full / steps * 1e3,
                "hook_overhead_ms_per_step": (t_hook0 - t_full) / steps * 1e3,
                "hook_overhead_us_per_block_call": (t_hook0 - t_full) / (calls * n_blocks) * 1e6,
                "hook_overhead_frac_of_step": (t_hook0 - t_full) / t_full,
                "hook_overhead_cpu_ms_per_step": (c_hook0 - c_full) / steps * 1e3,
                "computed_calls": rep["computed_calls"], "total_calls": rep["total_calls"],
                "block_stack_share_of_full": share,
                "speedup": t_full / t_mc, "ideal_speedup": t_full / t_ideal,
                "speedup_vs_ideal": (t_full / t_mc) / (t_full / t_ideal),
            }
            per_call = hook_cost(hook, lambda: magcache.MagCacheSession(magcache.resolve(
                preset, steps=steps, thresh=0.0)), (rows_per_call, min(tokens, 4096), dim), 64, n_blocks,
                steps, torch)
            r["hook_cpu_us_per_call"] = per_call * 1e6
            r["hook_cpu_us_per_block_call"] = per_call / n_blocks * 1e6
            if big:
                r["latent_rel_err"] = float((out - ref).norm() / ref.norm())
            else:
                fr = torch.from_numpy(tinywan.render.latent_to_frames(tinywan.vae.from_host_latent(ref))[0]).float() / 255
                fo = torch.from_numpy(tinywan.render.latent_to_frames(tinywan.vae.from_host_latent(out))[0]).float() / 255
                p, s = magcache.psnr(fr, fo), magcache.ssim(fr, fo)
                r["psnr_db_mean"] = float(p[torch.isfinite(p)].mean()) if torch.isfinite(p).any() else float("inf")
                r["ssim_mean"] = float(s.mean())
            results.append(r)
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}), flush=True)
    out = {"host": str(host), "device": str(dev), "threads": torch.get_num_threads(),
           "torch": torch.__version__, "model": model_name,
           "gpu": torch.cuda.get_device_name(0) if dev.type == "cuda" else None,
           "note": "ratios and absolute costs measured in one run; not a timed test", "results": results}
    path = _free_path(a.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print("wrote", path)


def _frames01(tinywan, torch, latent):
    """[T, H, W, 3] floats in [0, 1] of a host latent decoded by the tiny Wan's fixed VAE."""
    return torch.from_numpy(tinywan.render.latent_to_frames(tinywan.vae.from_host_latent(latent))[0]).float() / 255


def quality(a, model, model_name, pack, host, run, blocks, sync, torch):
    """``--quality``: the node at each target speedup against the full run, over prompts x seeds."""
    import nodes as host_nodes
    tinywan = hostbridge.submodule(pack, "tinywan")
    magcache = hostbridge.submodule(pack, "magcache")
    mc_nodes = pack.nodes.magcache_nodes
    steps = (a.steps or [30])[0]
    size, frames = a.size or [16, 16], a.frames or 3
    latent = {"samples": torch.zeros(1, 16, frames, size[0], size[1])}
    prompts = QUALITY_PROMPTS[:max(1, min(a.prompts, len(QUALITY_PROMPTS)))]
    samples = [(p, seed) for p in prompts for seed in range(a.seeds)]
    neg = [[tinywan.encode_prompt(NEGATIVE)[None], {}]]
    conds = {p: [[tinywan.encode_prompt(p)[None], {}]] for p in prompts}
    torch.set_num_threads(1)   # all compute on the main thread: its CPU time is the run's cost
    nodes_at = {}
    for t in a.targets:   # the node as a user sets it: auto curve, preset defaults, target_speedup > 0
        out = mc_nodes.AtelierMagCacheWan.execute(
            model, preset="auto", thresh=0.12, k=2, retention=0.2, start_step=-1, end_step=-1, protect_last=0,
            cache_device="auto", schedule_steps=0, preview_steps=steps, target_speedup=t)
        nodes_at[t] = (out.result[0], out.result[1])

    def sample(m, prompt, seed):
        t0, c0 = time.perf_counter(), time.thread_time()
        (o,) = host_nodes.common_ksampler(m, seed, steps, a.cfg, "euler", "simple", conds[prompt], neg, latent)
        return time.perf_counter() - t0, time.thread_time() - c0, o["samples"]

    # block-stack share of a full run's CPU time (hooks on the first block's start and the last block's end)
    stack = {"t": 0.0, "t0": 0.0}

    def pre(mod, args, kwargs):
        stack["t0"] = time.thread_time()

    def post(mod, args, kwargs, out):
        stack["t"] += time.thread_time() - stack["t0"]

    sample(model, prompts[0], 0)   # warm-up
    h1, h2 = blocks[0].register_forward_pre_hook(pre, with_kwargs=True), blocks[-1].register_forward_hook(post,
                                                                                                          with_kwargs=True)
    try:
        shares = []
        for _ in range(3):
            stack["t"] = 0.0
            _, c, _ = sample(model, prompts[0], 0)
            shares.append(stack["t"] / c)
    finally:
        h1.remove()
        h2.remove()
    share = statistics.median(shares)
    times = {"full": []}
    times.update({t: [] for t in a.targets})
    walls = {k: [] for k in times}
    per = {t: [] for t in a.targets}
    reports = {}
    for prompt, seed in samples:   # variants interleaved per sample: load drift hits them alike
        w, c, ref = sample(model, prompt, seed)
        times["full"].append(c)
        walls["full"].append(w)
        fr = _frames01(tinywan, torch, ref)
        for t in a.targets:
            m = nodes_at[t][0]
            w, c, out = sample(m, prompt, seed)
            times[t].append(c)
            walls[t].append(w)
            rep = m.model_options["transformer_options"]["atelier_magcache_run"].last_report
            reports[t] = rep
            fo = _frames01(tinywan, torch, out)
            p, s = magcache.psnr(fr, fo), magcache.ssim(fr, fo)
            p = p.clamp(max=100.0)   # identical frames: inf, counted as 100 dB
            per[t].append({"prompt": prompt, "seed": seed, "psnr_db": float(p.mean()), "ssim": float(s.mean()),
                           "computed_calls": rep["computed_calls"], "total_calls": rep["total_calls"]})
    full_s = statistics.median(times["full"])
    results = []
    for t in a.targets:
        rows, rep = per[t], reports[t]
        plan = rep.get("target") or {}
        psnrs, ssims = [r["psnr_db"] for r in rows], [r["ssim"] for r in rows]
        skipped, total = rep["skipped_calls"], rep["total_calls"]
        ideal = 1.0 / (1.0 - share * skipped / total)
        speed = full_s / statistics.median(times[t])
        r = {"target_speedup": t, "steps": steps, "cfg": a.cfg, "thresh": plan.get("thresh"), "k": plan.get("k"),
             "planned_speedup": total / rep["computed_calls"], "computed_calls": rep["computed_calls"],
             "total_calls": total, "accumulated_error": plan.get("error"),
             "psnr_db_worst": min(psnrs), "psnr_db_median": statistics.median(psnrs),
             "ssim_worst": min(ssims), "ssim_median": statistics.median(ssims),
             "full_cpu_s": full_s, "magcache_cpu_s": statistics.median(times[t]), "speedup": speed,
             "full_wall_s": statistics.median(walls["full"]), "magcache_wall_s": statistics.median(walls[t]),
             "wall_speedup": statistics.median(walls["full"]) / statistics.median(walls[t]),
             "block_stack_share": share, "ideal_speedup": ideal, "speedup_vs_ideal": speed / ideal,
             "preview": nodes_at[t][1], "samples": rows}
        results.append(r)
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()
                          if k not in ("samples", "preview")}), flush=True)
    out = {"host": str(host), "threads": torch.get_num_threads(), "torch": torch.__version__, "model": model_name,
           "latent": list(latent["samples"].shape), "samples": [list(x) for x in samples], "sampler": "euler/simple",
           "note": ("node with target_speedup (thresh/K by magcache.target.plan_for_target at run start) against "
                    "the full run; PSNR/SSIM of the decoded clips; speedup = ratio of median main-thread CPU "
                    "times (1 torch thread), variants interleaved per sample in one run"),
           "results": results}
    path = _free_path(a.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print("wrote", path)
    return out


if __name__ == "__main__":
    main()
