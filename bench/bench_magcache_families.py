"""MagCache per family through the real node in a real host: hook overhead and speedup against the ideal.

For each family, in one process, runs of three variants interleaved round by round (load drift hits
them alike), median wall time of ``--repeats`` rounds:

* ``full``: the model without MagCache;
* ``hook0``: the MagCache node with thresh 0 (hooks on, nothing skipped): ``overhead = hook0 / full``;
* ``magcache``: the node at the family preset's official setting (``preset auto``):
  ``speedup = full / magcache``;
* ``ideal``: the speedup if skipped calls cost nothing but their block stack: the stack's share of a full
  run is measured once (hooks on the stack's first and last block modules, synchronised), then
  ``ideal = 1 / (1 - share * skipped / total)``; ``speedup_vs_ideal = speedup / ideal``;
* ``latent_rel_err``: ``|magcache - full| / |full|`` of the sampled latents (random weights: a sanity
  check, not a quality measure).

Modes (repo root):

    COMFYUI_DIR=~/ComfyUI .venv/bin/python bench/bench_magcache_families.py
        # tiny models of every family with a curve (tests/_families.build, through the host's loader), CPU
    COMFYUI_DIR=~/ComfyUI .venv/bin/python bench/bench_magcache_families.py --gpu --real-dims
        # random weights at real dims: Wan2.1-1.3B, FLUX.1-dev, Qwen-Image, HunyuanVideo (bf16), within
        # --budget-s (default 480 s: a family that would start after it is left out and named)
    ... --real-dims --shrink   # the --real-dims code path (models built from the host's config classes on
                               # the device, real-dims conditioning and latents) at tiny dims: the CPU check

Writes ``bench/results/magcache_families.json`` (``--out``); never overwrites: an existing file gets a
numbered sibling.
"""
import argparse
import json
import math
import pathlib
import statistics
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO / "tests"))
import hostbridge  # noqa: E402
from bench_magcache import _free_path  # noqa: E402  (results never overwrite earlier ones: one rule)

TINY = ["wan21_t2v", "flux", "chroma", "qwen_image", "hunyuan_video", "hunyuan_video15"]

#: real dims (the official configs) -> (unet_config changes, text width, pooled width, latent shape [B, C, (T,) H, W],
#: steps, cfg). Latents sized so the four families fit the 8-minute budget of a lent GPU with 2 repeats: Wan
#: 416x240 and HunyuanVideo 480x272 at 17 frames, FLUX and Qwen-Image 1024x1024.
REAL = {
    "wan21_t2v": (dict(dim=1536, ffn_dim=8960, num_layers=30, num_heads=12), 4096, None, (1, 16, 5, 30, 52), 30, 5.0),
    "flux": (dict(hidden_size=3072, num_heads=24, depth=19, depth_single_blocks=38, context_in_dim=4096,
                  vec_in_dim=768, mlp_ratio=4.0, axes_dim=[16, 56, 56]), 4096, 768, (1, 16, 128, 128), 28, 1.0),
    "qwen_image": (dict(num_layers=60, attention_head_dim=128, num_attention_heads=24, joint_attention_dim=3584,
                        axes_dims_rope=(16, 56, 56)), 3584, None, (1, 16, 1, 128, 128), 20, 2.5),
    "hunyuan_video": (dict(hidden_size=3072, num_heads=24, depth=20, depth_single_blocks=40, context_in_dim=4096,
                           vec_in_dim=768, mlp_ratio=4.0, axes_dim=[16, 56, 56]), 4096, 768, (1, 16, 5, 34, 60),
                      30, 1.0),
}
TOKENS = 64   # text tokens of the conditioning


def build_direct(F, name, dims, device, dtype, seed=0):
    """A ModelPatcher of ``name`` built from the host's config class with ``dims``, random weights made on
    ``device`` (fan-in scaled, as tests/_families fills them): no state dict, no detection."""
    import torch
    import comfy.model_patcher
    cfg = F.tree_config(name, **dims) if F.FAMILIES[name].state_dict is None else dict(F.FAMILIES[name].unet_config,
                                                                                         **dims)
    mc = F.config_class(name)(cfg)
    mc.set_inference_dtype(dtype, None)
    model = mc.get_model({}, device=device)   # the host's ops skip weight init: filled below
    g = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for k, p in model.diffusion_model.state_dict().items():
            if not p.is_floating_point() or p.numel() == 0:
                continue
            if "modulation" in k or "scale_shift_table" in k:
                v = torch.randn(p.shape, generator=g, device=device) / math.sqrt(p.shape[-1])
            elif p.dim() == 1:
                v = (0.02 * torch.randn(p.shape, generator=g, device=device) if k.endswith("bias")
                     else 1.0 + 0.1 * torch.randn(p.shape, generator=g, device=device))
            else:
                v = torch.randn(p.shape, generator=g, device=device) / math.sqrt(math.prod(p.shape[1:]))
            p.copy_(v.to(p.dtype))
    m = comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=device)
    m.atelier_family = name
    return m


def conditioning(F, name, text_dim, pooled_dim, seed):
    import torch
    f = F.FAMILIES[name]
    g = torch.Generator().manual_seed(seed)
    opts = {"pooled_output": torch.randn(1, pooled_dim, generator=g) if pooled_dim else None}
    if f.guidance is not None:
        opts["guidance"] = f.guidance
    if f.extra is not None:
        opts.update(f.extra(f, 1, TOKENS, seed))
    return [[torch.randn(1, TOKENS, text_dim, generator=g), opts]]


class StackShare:
    """Seconds spent in the block stack (first block's start to last block's end), synchronised."""

    def __init__(self, model, family, sync):
        dm = model.get_model_object("diffusion_model")
        mods = [getattr(dm, n, None) for n in family.stack.modules]
        mods = [m for m in mods if m is not None and len(m)]
        self.first, self.last, self.sync, self.seconds, self.t0 = mods[0][0], mods[-1][-1], sync, 0.0, 0.0
        self.hooks = []

    def __enter__(self):
        def pre(mod, args, kwargs):
            self.sync()
            self.t0 = time.perf_counter()

        def post(mod, args, kwargs, out):
            self.sync()
            self.seconds += time.perf_counter() - self.t0

        self.hooks = [self.first.register_forward_pre_hook(pre, with_kwargs=True),
                      self.last.register_forward_hook(post, with_kwargs=True)]
        return self

    def __exit__(self, *exc):
        for h in self.hooks:
            h.remove()


def bench_family(pack, F, name, args, device, dtype):
    import torch
    import nodes as host_nodes
    core, mcn = pack.magcache, pack.nodes.magcache_nodes
    t_build = time.perf_counter()
    if args.real_dims:
        dims, text_dim, pooled, shape, steps, cfg = REAL[name]
        if args.shrink:
            f = F.FAMILIES[name]
            dims, text_dim, pooled, shape = {}, f.text_dim, f.pooled_dim, tuple(F.latent(name)["samples"].shape)
        model = build_direct(F, name, dims, device, dtype)
    else:
        model = F.build(name)
        f = F.FAMILIES[name]
        text_dim, pooled, shape = f.text_dim, f.pooled_dim, tuple(F.latent(name)["samples"].shape)
        steps, cfg = 20, (3.0 if name in ("chroma", "qwen_image", "hunyuan_video15", "wan21_t2v") else 1.0)
    steps = args.steps or steps
    build_s = time.perf_counter() - t_build
    family = core.detect_family(mcn.unet_config(model))
    preset = family.preset_for(steps)
    setting = dict(core.get_preset(preset).defaults)
    pos, neg = conditioning(F, name, text_dim, pooled, 1), conditioning(F, name, text_dim, pooled, 2)
    lat = {"samples": torch.zeros(shape)}

    def node(thresh):
        kw = dict(preset="auto", thresh=thresh, k=setting["k"], retention=setting["retention"], start_step=-1,
                  end_step=-1, protect_last=0, cache_device="auto", schedule_steps=0, preview_steps=steps)
        return mcn.AtelierMagCacheWan.execute(model, **kw).result[0]

    variants = {"full": model, "hook0": node(0.0), "magcache": node(setting["thresh"])}

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def run(m):
        sync()
        t = time.perf_counter()
        (out,) = host_nodes.common_ksampler(m, 0, steps, cfg, "euler", "simple", pos, neg, lat)
        sync()
        return time.perf_counter() - t, out["samples"]

    run(variants["full"])   # warm-up (allocator, kernels)
    times = {k: [] for k in variants}
    outs = {}
    for _ in range(args.repeats):
        for k, m in variants.items():
            dt, outs[k] = run(m)
            times[k].append(dt)
    with StackShare(model, family, sync) as share:
        full_once, _ = run(model)
    rep = variants["magcache"].model_options["transformer_options"]["atelier_magcache_run"].last_report
    med = {k: statistics.median(v) for k, v in times.items()}
    frac = min(1.0, share.seconds / full_once)
    skipped, total = rep["skipped_calls"], rep["total_calls"]
    ideal = 1.0 / (1.0 - frac * skipped / total) if total else 1.0
    speedup = med["full"] / med["magcache"]
    ref, got = outs["full"].float(), outs["magcache"].float()
    return {"family": name, "core_family": family.name, "preset": preset, "setting": setting, "steps": steps,
            "cfg": cfg, "latent_shape": list(shape), "build_s": build_s,
            "full_s": med["full"], "hook0_s": med["hook0"], "magcache_s": med["magcache"],
            "runs_s": times, "overhead_ratio": med["hook0"] / med["full"],
            "hook0_identical": bool(torch.equal(outs["hook0"], outs["full"])),
            "speedup": speedup, "stack_share": frac, "ideal_speedup": ideal, "speedup_vs_ideal": speedup / ideal,
            "computed_calls": rep["computed_calls"], "skipped_calls": skipped, "total_calls": total,
            "latent_rel_err": float((got - ref).norm() / ref.norm().clamp_min(1e-12))}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gpu", action="store_true", help="run on CUDA (bf16 with --real-dims)")
    ap.add_argument("--real-dims", action="store_true", help="random weights at real dims (" + ", ".join(REAL) + ")")
    ap.add_argument("--shrink", action="store_true", help="with --real-dims: the same code path at tiny dims")
    ap.add_argument("--families", nargs="*", default=None, help="tiny family names (tests/_families)")
    ap.add_argument("--steps", type=int, default=0, help="sampler steps (default: the family's)")
    ap.add_argument("--repeats", type=int, default=0, help="rounds of the three variants (default 3; 2 with --real-dims)")
    ap.add_argument("--budget-s", type=float, default=480.0, help="start no family after this many seconds")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "magcache_families.json"))
    args = ap.parse_args(argv)
    import os
    comfy = os.environ.get("COMFYUI_DIR")
    if not comfy:
        sys.exit("set COMFYUI_DIR to a ComfyUI tree")
    cpu = None if args.gpu else "force"
    d = hostbridge.enter_host(comfy, cpu=cpu)
    pack = hostbridge.import_pack(d, name="atelier_bench_pack", cpu=cpu)
    import torch
    import _families as F
    if not args.gpu:
        torch.set_num_threads(1)
    device = torch.device("cuda" if args.gpu else "cpu")
    dtype = torch.bfloat16 if args.gpu and args.real_dims and not args.shrink else torch.float32
    names = args.families or (list(REAL) if args.real_dims else TINY)
    args.repeats = args.repeats or (2 if args.real_dims and not args.shrink else 3)
    t0 = time.perf_counter()
    rows, left_out = [], []
    for name in names:
        if time.perf_counter() - t0 > args.budget_s:
            left_out.append(name)
            continue
        if not F.present(name):
            left_out.append(f"{name} (not in this host)")
            continue
        r = bench_family(pack, F, name, args, device, dtype)
        rows.append(r)
        print(f"{name:16s} full {r['full_s']:.3f}s  overhead x{r['overhead_ratio']:.3f}  speedup x{r['speedup']:.2f}"
              f" (ideal x{r['ideal_speedup']:.2f}, {r['speedup_vs_ideal']:.2f} of it)  "
              f"computed {r['computed_calls']}/{r['total_calls']}", flush=True)
        if args.gpu:
            torch.cuda.empty_cache()
    res = {"mode": "real-dims" + ("-shrunk" if args.shrink else "") if args.real_dims else "tiny",
           "device": torch.cuda.get_device_name() if args.gpu else "cpu (1 thread)", "dtype": str(dtype),
           "comfyui": F.host_version(), "repeats": args.repeats, "results": rows, "left_out": left_out,
           "total_s": time.perf_counter() - t0}
    out = _free_path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {out}")
    return res


if __name__ == "__main__":
    main()
