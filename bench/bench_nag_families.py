"""NAG cost per family, through the real node and the host's KSampler: tiny models on the CPU, or real
widths and token counts on one GPU.

Per family, four variants run interleaved round by round (median of ``--repeats``):

* ``unguided``: cfg 1, no NAG (one forward per step): the 1.0 of the ratios;
* ``nag``: cfg 1 with Atelier NAG;
* ``cfg``: cfg ``--cfg`` (> 1), no NAG (cond and uncond rows: the ~2x baseline);
* ``nag_cfg``: cfg ``--cfg`` with NAG (only the positive rows guided).

``--dims tiny`` (default): the tiny models of ``tests/_families.py`` (the host's own classes), CPU, process
CPU time (``--threads 1``: robust on a shared machine). ``--dims real``: each family at its real width,
heads, text width and token count (Flux-dev 1024 px / 512 T5 tokens, Qwen-Image 1328 px / 256 tokens,
HunyuanVideo 544x960x33 frames / 256 tokens, Wan2.1-1.3B 480x832x81 frames / 512 tokens) with
``--blocks`` blocks of each kind instead of the full depth (random weights; NAG's cost and a block's cost
are both per block, so the ratio of a step is that of its blocks, up to the embedders and the final layer,
which NAG does not touch), on CUDA in the host's dtype, CUDA-synchronised wall time. The same code runs
both: the host tier runs ``--dims tiny`` (tests/host/test_bench_host.py).

``--breakdown`` (tiny Wan, cross-attention path): where NAG's extra time goes, by timing the core's
pieces inside the sampled run (the negative's K/V projection, the extra attention, the combine rule).

Usage (repo root): ``COMFYUI_DIR=<tree> <venv python> bench/bench_nag_families.py [--families flux,wan21_t2v]``;
on a GPU: ``... --dims real --device cuda`` (about 3-5 minutes for the four families on one H100). Writes
``bench/results/nag_families.json`` (``nag_families_real.json`` with ``--dims real``).
"""
import argparse
import json
import pathlib
import statistics
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO / "tests"))
import hostbridge  # noqa: E402

TINY = ["wan21_t2v", "wan21_vace", "sd15", "flux", "flux2", "chroma", "qwen_image", "hunyuan_video", "sd35"]
REAL_FAMILIES = ["flux", "qwen_image", "hunyuan_video", "wan21_t2v"]


def real_dims(blocks, smoke=False):
    """Per family: (unet_config overrides, text tokens, NAG-negative tokens, text width, pooled width, latent
    shape). Token counts as the host's text encoders give them: Flux's T5 pads to 256 (a long prompt: 512; a
    short negative is 256 tokens), HunyuanVideo's Llama and Qwen-Image's Qwen2.5-VL do not pad (a short negative: ~16 tokens),
    Wan's UMT5 pads to 512. ``smoke``: the same structure at tiny widths and token counts (the host tier runs
    this path on the CPU)."""
    if smoke:
        flux_like = dict(hidden_size=64, num_heads=2, context_in_dim=32, vec_in_dim=16, mlp_ratio=2.0,
                         axes_dim=[8, 12, 12], depth=blocks, depth_single_blocks=blocks)
        return {
            "flux": (flux_like, 12, 12, 32, 16, (1, 16, 8, 8)),
            "qwen_image": (dict(num_attention_heads=2, attention_head_dim=16, joint_attention_dim=32,
                                num_layers=blocks, axes_dims_rope=(4, 6, 6)), 10, 4, 32, None, (1, 16, 1, 8, 8)),
            "hunyuan_video": (dict(flux_like, theta=256), 10, 4, 32, 16, (1, 16, 2, 8, 8)),
            "wan21_t2v": (dict(dim=128, ffn_dim=256, num_layers=blocks), 16, 16, 4096, None, (1, 16, 2, 8, 8)),
        }
    flux_like = dict(hidden_size=3072, num_heads=24, context_in_dim=4096, vec_in_dim=768, mlp_ratio=4.0,
                     axes_dim=[16, 56, 56], depth=blocks, depth_single_blocks=blocks)
    return {
        "flux": (flux_like, 512, 256, 4096, 768, (1, 16, 128, 128)),
        "qwen_image": (dict(num_attention_heads=24, attention_head_dim=128, joint_attention_dim=3584,
                            num_layers=blocks, axes_dims_rope=(16, 56, 56)), 128, 16, 3584, None,
                       (1, 16, 1, 166, 166)),
        "hunyuan_video": (dict(flux_like, theta=256), 128, 16, 4096, 768, (1, 16, 9, 68, 120)),
        "wan21_t2v": (dict(dim=1536, ffn_dim=8960, num_layers=blocks), 512, 512, 4096, None, (1, 16, 21, 60, 104)),
    }


def estimate(name, dims):
    """Analytic cost of NAG per step at the full depth, as a fraction of an unguided step (matmul FLOPs only:
    linear layers and attention; an estimate, not a measurement). Joint families: the negative's tokens go
    through every block's linear layers, the image queries attend the negative's keys, the negative's
    queries attend ``[negative, image]``. Wan: the negative's K/V projections and one extra attention per
    cross-attention. ``ratio``: matmul FLOPs only. Joint families also get ``ratio_with_elementwise``: plus
    the element-wise passes of NAG's merge and combine rule over the image queries' outputs, counted in bytes
    (``bench_nag_flux_cost.byte_count``) and set against the matmuls at an H100's 600 TFLOP/s and 3 TB/s."""
    cfg, lp, ln, _, _, shape = dims
    if name == "wan21_t2v":
        d, f = cfg["dim"], cfg["ffn_dim"]
        li = shape[2] * (shape[3] // 2) * (shape[4] // 2)
        base = 2 * li * (4 * d * d) + 4 * li * li * d + 2 * li * 2 * d * d + 2 * lp * 2 * d * d + 4 * li * lp * d \
            + 2 * li * 2 * d * f
        extra = 2 * ln * 2 * d * d + 4 * li * ln * d
        return {"ratio": 1 + extra / base, "image_tokens": li, "text_tokens": lp, "negative_tokens": ln}
    d = cfg.get("hidden_size") or cfg["num_attention_heads"] * cfg["attention_head_dim"]
    li = shape[-1] // 2 * (shape[-2] // 2) * (shape[2] if len(shape) == 5 else 1)
    t = lp + li
    per_token = 24 * d * d                 # qkv + out + 4x MLP, per token per block (double or single)
    base = per_token * t + 4 * d * t * t
    extra = per_token * ln + 4 * d * (li * ln + ln * (ln + li))
    from bench_nag_flux_cost import elementwise_ratio
    return {"ratio": 1 + extra / base, "ratio_with_elementwise": 1 + extra / base + elementwise_ratio(d, li, lp, ln),
            "image_tokens": li, "text_tokens": lp, "negative_tokens": ln}


class Clock:
    """CPU: process time; CUDA: synchronised wall time."""

    def __init__(self, device):
        self.cuda = device.startswith("cuda")

    def now(self):
        if self.cuda:
            import torch
            torch.cuda.synchronize()
            return time.perf_counter()
        return time.process_time()


def family_inputs(fam, name, dims, seed=1):
    """(model, positive, cfg negative, NAG negative, latent) of one family."""
    import torch
    if dims is None:
        model = fam.build(name, seed=0)
        return (model, fam.conditioning(name, seed=seed), fam.conditioning(name, seed=seed + 1),
                fam.conditioning(name, seed=seed + 4, tokens=6), fam.latent(name))
    cfg, tokens, neg_tokens, width, pooled, shape = dims
    model = fam.build(name, seed=0, **cfg)
    g = torch.Generator().manual_seed(seed)

    def cond(n):
        c = fam.conditioning(name, seed=seed)
        c[0][0] = torch.randn(1, n, width, generator=g)
        if pooled:
            c[0][1]["pooled_output"] = torch.randn(1, pooled, generator=g)
        return c
    return model, cond(tokens), cond(tokens), cond(neg_tokens), {"samples": torch.zeros(shape)}


def bench_family(fam, nag_node, name, a, dims, clock):
    model, pos, neg, nag_neg, latent = family_inputs(fam, name, dims)
    nag = nag_node.execute(model=model, nag_negative=nag_neg, scale=5.0, tau=2.5, alpha=0.25, sigma_end=0.0)[0]
    variants = {"unguided": (model, 1.0), "nag": (nag, 1.0), "cfg": (model, a.cfg), "nag_cfg": (nag, a.cfg)}

    def run(m, cfg):
        t = clock.now()
        fam.sample(m, name, steps=a.steps, cfg=cfg, seed=0, positive=pos, negative=neg, latent_image=latent)
        return clock.now() - t

    for m, cfg in variants.values():
        run(m, cfg)                      # warm-up (and the host's load of each model)
    times = {k: [] for k in variants}
    for _ in range(a.repeats):
        for k, (m, cfg) in variants.items():
            times[k].append(run(m, cfg))
    med = {k: statistics.median(v) for k, v in times.items()}
    res = {k: {"s_per_step": med[k] / a.steps, "ratio_vs_unguided": med[k] / med["unguided"],
               "runs_s": [round(t, 5) for t in times[k]]} for k in variants}
    res["nag_cfg"]["ratio_vs_cfg"] = med["nag_cfg"] / med["cfg"]
    res["nag"]["ratio_vs_cfg"] = med["nag"] / med["cfg"]
    return {"config": type(model.model.model_config).__name__, "latent": list(latent["samples"].shape),
            "text_tokens": int(pos[0][0].shape[1]), "nag_tokens": int(nag_neg[0][0].shape[1]), "results": res}


def breakdown(pack, nag_node, a, clock):
    """Where NAG's extra time goes on the trained tiny Wan of ``bench/bench_nag.py`` (same prompts, latent
    16x16x3, 20 steps, cfg 1): the core's pieces timed inside the sampled run, medians over ``--repeats``
    interleaved runs. The pieces: the negative's K/V projection (``negative_kv``, every block and call),
    the extra attention (the positive rows' queries on the negative), the combine rule; the rest is the
    hooks' Python and the stand-in's plain path."""
    import torch
    import comfy.sd
    import nodes as host_nodes
    tinywan = hostbridge.submodule(pack, "tinywan")
    mod = sys.modules[pack.__name__ + ".nag.cross_attention"]   # the pack's core, as the node calls it
    sd, _ = tinywan.load_trained_state_dict(None)
    model = comfy.sd.load_diffusion_model_state_dict(sd)
    pos = [[tinywan.encode_prompt("square moving right")[None], {}]]
    empty = [[tinywan.encode_prompt("")[None], {}]]
    nag = nag_node.execute(model=model, nag_negative=[[tinywan.encode_prompt("red")[None], {}]], scale=11.0,
                           tau=2.5, alpha=0.25, sigma_end=0.0)[0]
    latent = {"samples": torch.zeros(1, 16, 3, 16, 16)}
    acc = {"negative_kv": 0.0, "extra_attention+combine": 0.0, "combine": 0.0}

    def timed(key, fn):
        def wrapper(*args, **kw):
            t = clock.now()
            try:
                return fn(*args, **kw)
            finally:
                acc[key] += clock.now() - t
        return wrapper

    def run(m):
        for key in acc:
            acc[key] = 0.0
        t = clock.now()
        host_nodes.common_ksampler(m, 0, 20, 1.0, "euler", "simple", pos, empty, latent)
        return clock.now() - t, dict(acc)

    originals = {n: getattr(mod, n) for n in ("negative_kv", "guide_rows", "nag_combine")}
    mod.negative_kv = timed("negative_kv", originals["negative_kv"])
    mod.guide_rows = timed("extra_attention+combine", originals["guide_rows"])
    mod.nag_combine = timed("combine", originals["nag_combine"])
    rows = []
    try:
        run(model), run(nag)
        for _ in range(a.repeats):
            rows.append((run(model)[0], *run(nag)))
    finally:
        for n, fn in originals.items():
            setattr(mod, n, fn)
    med = statistics.median
    plain, guided = med(r[0] for r in rows), med(r[1] for r in rows)
    kv, att_comb, comb = (med(r[2][k] for r in rows) for k in ("negative_kv", "extra_attention+combine", "combine"))
    extra = guided - plain
    parts = {"negative_kv": kv, "extra_attention": att_comb - comb, "combine": comb,
             "rest": extra - kv - att_comb}
    return {"model": "trained tiny Wan (bench_nag.py), latent 16x16x3, 20 steps, cfg 1",
            "unguided_s": plain, "nag_s": guided, "ratio": guided / plain, "extra_s": extra,
            "parts_s": parts, "parts_of_unguided": {k: v / plain for k, v in parts.items()}}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dims", choices=("tiny", "real"), default="tiny")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--families", default=None, help="comma-separated (default: all for tiny, four for real)")
    ap.add_argument("--steps", type=int, default=None, help="default 4 (tiny) / 2 (real)")
    ap.add_argument("--repeats", type=int, default=None, help="default 5 (tiny) / 3 (real)")
    ap.add_argument("--cfg", type=float, default=3.0)
    ap.add_argument("--blocks", type=int, default=2, help="--dims real: blocks of each kind")
    ap.add_argument("--smoke", action="store_true", help="--dims real at tiny widths (the host tier's check)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--breakdown", action="store_true", help="tiny Wan: where NAG's extra time goes")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    real = a.dims == "real"
    a.steps = a.steps or (2 if real else 4)
    a.repeats = a.repeats or (3 if real else 5)
    names = a.families.split(",") if a.families else (REAL_FAMILIES if real else TINY)
    out_path = pathlib.Path(a.out or REPO / "bench" / "results" / f"nag_families{'_real' if real else ''}.json")
    cpu = "force" if a.device == "cpu" else None
    try:
        pack = hostbridge.import_pack(name="atelier_bench_pack", cpu=cpu, progress_bars=False)
    except hostbridge.HostTreeError as exc:
        sys.exit(f"bench_nag_families: {exc}")
    import torch
    import _families as fam
    sys.modules.setdefault("tinywan", hostbridge.submodule(pack, "tinywan"))
    torch.set_num_threads(max(1, a.threads))
    clock = Clock(a.device)
    nag_node = pack.nodes.nag_nodes.AtelierNAGWan
    table = real_dims(a.blocks, a.smoke) if real else {}
    t0 = time.perf_counter()
    out = {"host": str(hostbridge.host_tree()), "device": a.device, "torch": torch.__version__,
           "threads": torch.get_num_threads(), "dims": a.dims, "steps": a.steps, "repeats": a.repeats,
           "cfg": a.cfg, "nag": {"scale": 5.0, "tau": 2.5, "alpha": 0.25},
           "timing": ("CUDA-synchronised wall time" if clock.cuda else "process CPU time") +
                     " per sampling run, median over repeats, variants interleaved round by round",
           "families": {}}
    if real:
        out["blocks"] = a.blocks
        out["smoke"] = a.smoke
        out["gpu"] = torch.cuda.get_device_name() if clock.cuda else None
    out["estimate_full_depth"] = {n: estimate(n, d) for n, d in real_dims(a.blocks).items()}
    for name in names:
        if not fam.present(name):
            out["families"][name] = {"skipped": f"not in ComfyUI {fam.host_version()}"}
            continue
        if real and name not in table:
            sys.exit(f"bench_nag_families: no real dims for {name}; choose from {sorted(table)}")
        r = bench_family(fam, nag_node, name, a, table.get(name) if real else None, clock)
        out["families"][name] = r
        rr = r["results"]
        print(f"{name:>16}: nag x{rr['nag']['ratio_vs_unguided']:.3f}  cfg x{rr['cfg']['ratio_vs_unguided']:.3f}  "
              f"nag_cfg x{rr['nag_cfg']['ratio_vs_unguided']:.3f} (vs cfg x{rr['nag_cfg']['ratio_vs_cfg']:.3f})",
              flush=True)
        if real and clock.cuda:
            torch.cuda.empty_cache()
    if a.breakdown:
        out["breakdown_tiny_wan"] = breakdown(pack, nag_node, a, clock)
        print(json.dumps(out["breakdown_tiny_wan"]))
    out["total_s"] = time.perf_counter() - t0
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(out, indent=2))
    print("wrote", out_path)


if __name__ == "__main__":
    main()
