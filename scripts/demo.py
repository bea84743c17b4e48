"""The pack's offline demo on bundled defaults: no host, no downloads.

Writes viewable results (PNG) to ``--out`` and prints a summary:
1. MagCache on the trained tiny Wan: the full 50-step CFG run against cached runs at the
   official and a conservative setting (frames side by side, PSNR/SSIM, skipped calls, time).
   The speedup is computed from the call counts and the block stack's time per call measured in
   the full run (what skipping saves); the wall-clock ratio of the runs is printed beside it,
   marked as one sequential measurement (it varies with the machine's load).
2. NAG on the trained tiny Wan at cfg 1: a colour named in the negative prompt fades.
3. Film-mask restoration of the bundled synthetic painting (``python -m restoration --sample``).
4. DLoRAL one-step x4 upscaling of a short synthetic clip with tiny random stand-in models
   (the real weights are the user's; this shows the frame pipeline end to end).
Each part reports and continues if another fails.
"""
import argparse
import json
import pathlib
import subprocess
import sys
import time
import traceback

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402


class BlockTimer:
    """Wraps the block stack: counts the calls that run the blocks and the seconds they take."""

    def __init__(self, run_blocks):
        self.run_blocks, self.calls, self.seconds = run_blocks, 0, 0.0

    def __call__(self, tokens, aux):
        t = time.perf_counter()
        out = self.run_blocks(tokens, aux)
        self.seconds += time.perf_counter() - t
        self.calls += 1
        return out


def expected_speedup(full_seconds, block_seconds_per_call, skipped_calls):
    """Speedup of a run that skips ``skipped_calls`` block-stack calls of a full run taking
    ``full_seconds``: everything else (embedding, head, sampler, the cache's own work) is
    counted at its full-run cost. Bounded by total/computed calls."""
    return full_seconds / (full_seconds - skipped_calls * block_seconds_per_call)


def magcache_demo(out):
    import magcache
    import tinywan
    from tinywan import render

    model = tinywan.load_trained()
    prompt = "red square moving right"
    ctx = tinywan.encode_prompt(prompt)
    steps, cfg = 50, 5.0

    def cached(run, blocks):
        def fn(tokens, aux, branch, step):
            b = 0 if branch == "cond" else 1
            if run.decide(b, step):
                return tokens + run.get_residual(b, like=tokens)
            new = blocks(tokens, aux)
            run.store_residual(b, new - tokens)
            return new
        return fn

    tinywan.sample.sample(model, ctx, steps=3, cfg=cfg, seed=1)  # warm-up, not timed
    full_blocks = BlockTimer(model.run_blocks)
    t = time.perf_counter()
    ref = tinywan.sample.sample(model, ctx, steps=steps, cfg=cfg, seed=1,
                                block_stack_fn=lambda tok, aux, branch, step: full_blocks(tok, aux))
    t_full = time.perf_counter() - t
    per_call = full_blocks.seconds / full_blocks.calls
    ref_frames = render.latent_to_frames(ref)[0]
    rows, lines = [render.strip(ref_frames)], []
    curve = magcache.get_preset("wan2.1_t2v_1.3B").ratios
    settings = {"official 0.12/K2/r0.2": magcache.MagCacheConfig(thresh=0.12, k=2, retention=0.2),
                "conservative 0.02/K6/start5": magcache.MagCacheConfig(thresh=0.02, k=6, start_step=5)}
    results = {"prompt": prompt, "steps": steps, "cfg": cfg, "full_s": t_full,
               "block_s_per_call": per_call, "block_share_of_full": full_blocks.seconds / t_full, "runs": []}
    lines.append(f"  full run: {full_blocks.calls} block-stack calls of {1e3 * per_call:.1f} ms "
                 f"({100 * full_blocks.seconds / t_full:.0f}% of {t_full:.2f} s)")
    for name, config in settings.items():
        run = magcache.MagCacheRun(curve, steps, config)
        blocks = BlockTimer(model.run_blocks)
        t = time.perf_counter()
        lat = tinywan.sample.sample(model, ctx, steps=steps, cfg=cfg, seed=1, block_stack_fn=cached(run, blocks))
        dt = time.perf_counter() - t
        frames = render.latent_to_frames(lat)[0]
        a = torch.from_numpy(ref_frames).float() / 255
        b = torch.from_numpy(frames).float() / 255
        p, s = magcache.psnr(a, b), magcache.ssim(a, b)
        rep = run.report()
        rows.append(render.strip(frames))
        rows.append(render.strip(magcache.difference_image(a, b, 4.0).mul(255).byte().numpy()))
        assert blocks.calls == rep["computed_calls"], (blocks.calls, rep["computed_calls"])
        skipped = rep["total_calls"] - rep["computed_calls"]
        r = {"setting": name, "computed_calls": rep["computed_calls"], "total_calls": rep["total_calls"],
             "speedup": expected_speedup(t_full, per_call, skipped),
             "speedup_bound": rep["total_calls"] / rep["computed_calls"],
             "seconds": dt, "wall_clock_ratio": t_full / dt,
             "psnr_db": float(p[torch.isfinite(p)].mean()) if torch.isfinite(p).any() else float("inf"),
             "ssim": float(s.mean()), "cond": "".join(rep["branches"]["cond"])}
        results["runs"].append(r)
        lines.append(f"  MagCache {name}: {r['computed_calls']}/{r['total_calls']} calls computed -> "
                     f"{r['speedup']:.2f}x from the call counts and block time (at most "
                     f"{r['speedup_bound']:.2f}x), PSNR {r['psnr_db']:.1f} dB, SSIM {r['ssim']:.3f}")
        lines.append(f"    wall clock of this run against the full one: {r['wall_clock_ratio']:.2f}x "
                     "(one sequential measurement each; varies with the machine's load)")
        lines.append(f"    cond steps: {r['cond']}")
    path = render.save_png(render.grid(rows), out / "magcache_full_vs_cached.png")
    (out / "magcache.json").write_text(json.dumps(results, indent=2))
    return [f"MagCache (rows: full | official | diff x4 | conservative | diff x4) -> {path}"] + lines


def nag_demo(out):
    """cfg 1, prompt without a colour word; NAG negative "red" against no NAG, 4 seeds."""
    import nag
    import tinywan
    from tinywan import render
    from tinywan.model import attention
    from tinywan.sample import sample

    model = tinywan.load_trained()
    prompt, negative = "circle moving right", "red"
    ctx = tinywan.encode_prompt(prompt)
    config = nag.NAGConfig().validate()  # Wan defaults: scale 11, tau 2.5, alpha 0.25
    with torch.no_grad():
        neg = model.text_embedding(tinywan.encode_prompt(negative)[None])  # projected once per run

    def guided(tokens, aux, branch, step):
        heads = model.config.num_heads if hasattr(model, "config") else 1

        def cross(i, mod, x, context, cil):
            return nag.nag_cross_attention(mod, x, context, neg, lambda q, k, v: attention(q, k, v, heads),
                                           [slice(0, x.shape[0])], config, cil)
        return model.run_blocks(tokens, aux, cross_attn_fn=cross)

    rows, plain_red, nag_red = [], [], []
    for seed in range(4):
        a = sample(model, ctx, steps=20, cfg=1.0, seed=seed)
        b = sample(model, ctx, steps=20, cfg=1.0, seed=seed, block_stack_fn=guided)
        fa, fb = render.latent_to_frames(a)[0], render.latent_to_frames(b)[0]
        rows.append(np.concatenate([render.strip(fa), np.full((fa.shape[1] * 4, 8, 3), 255, np.uint8),
                                    render.strip(fb)], axis=1))
        plain_red.append(tinywan.colour_shares(torch.from_numpy(fa).float().permute(3, 0, 1, 2) / 255).get("red", 0.0))
        nag_red.append(tinywan.colour_shares(torch.from_numpy(fb).float().permute(3, 0, 1, 2) / 255).get("red", 0.0))
    path = render.save_png(render.grid(rows), out / "nag_negative_red.png")
    res = {"prompt": prompt, "nag_negative": negative, "cfg": 1.0, "red_share_plain": plain_red,
           "red_share_nag": nag_red}
    (out / "nag.json").write_text(json.dumps(res, indent=2))
    return [f"NAG at cfg 1 (left: no NAG, right: NAG negative '{negative}') -> {path}",
            f"  red share of the shape, mean over 4 seeds: {np.mean(plain_red):.2f} -> {np.mean(nag_red):.2f}"]


def restoration_demo(out):
    dest = out / "restoration"
    r = subprocess.run([sys.executable, "-m", "restoration", "--sample", "--out", str(dest)], cwd=REPO,
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit {r.returncode}")
    tail = [ln for ln in r.stdout.strip().splitlines() if ln.strip()][-6:]
    return [f"Restoration sample -> {dest}"] + ["  " + ln for ln in tail]


def dloral_demo(out):
    """The DLoRAL frame pipeline end to end (pairing, CFR, one-step update, colour fix, streaming)
    with tiny random stand-ins for SD2.1 and the converted checkpoint (the test tier's stand-ins):
    it shows that every frame comes out, in order, deterministically; not the official quality."""
    sys.path.insert(0, str(REPO / "tests"))
    import _dloral_models as stand_in
    from dloral import upscale_frames
    from tinywan import render

    frames = stand_in.frames(8, 32, 32, seed=3)
    cfg = stand_in.cfg(process_size=64, window=4)
    a = upscale_frames(frames, stand_in.models(), cfg)
    b = upscale_frames(frames, stand_in.models(), cfg)
    up_in = torch.nn.functional.interpolate(frames, scale_factor=4, mode="nearest")
    pic = torch.cat([torch.cat(list(up_in[:4]), 2), torch.cat(list(a[:4]), 2)], 1)
    path = render.save_png((pic.permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy(),
                           out / "dloral_stand_in.png")
    return [f"DLoRAL pipeline with random stand-in models (top: input x4 nearest, bottom: output) -> {path}",
            f"  {frames.shape[0]} frames in -> {a.shape[0]} frames out at {tuple(a.shape[-2:])}, "
            f"rerun identical: {bool(torch.equal(a, b))}"]


PARTS = [("magcache", magcache_demo), ("nag", nag_demo), ("restoration", restoration_demo),
         ("dloral", dloral_demo)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(REPO / "demo_out"), help="folder for the results")
    ap.add_argument("--only", nargs="*", choices=[p for p, _ in PARTS], help="run only these parts")
    a = ap.parse_args()
    out = pathlib.Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    summary, failed = [], []
    for name, fn in PARTS:
        if a.only and name not in a.only:
            continue
        print(f"[demo] {name} ...", flush=True)
        t = time.perf_counter()
        try:
            lines = fn(out)
            summary += lines + [f"  ({time.perf_counter() - t:.1f} s)"]
        except Exception as exc:  # report, go on with the other parts
            traceback.print_exc()
            failed.append(name)
            summary.append(f"{name}: FAILED ({type(exc).__name__}: {exc})")
    print("\n=== Atelier demo summary ===")
    print("\n".join(summary))
    print(f"results in {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
