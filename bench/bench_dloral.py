"""DLoRAL benchmark: frames per second and peak memory, a 50-step sampler for comparison, and memory
against clip length. Writes bench/results/dloral.json.

    COMFYUI_DIR=/path/to/ComfyUI python bench/bench_dloral.py [--model full|small] [--sizes 128 512]
        [--frames 50] [--lengths 10 50 200] [--sampler-steps 50] [--threads N]

No weights can be downloaded here, so the models are random-weight stand-ins loaded by the host,
with a synthetic DLoRAL checkpoint (rank 4, official layout) converted by the pack:

* ``--model full``: the full SD2.1-base UNet (865 M parameters, 320/640/1280/1280 channels);
* ``--model small``: the reduced-width SD2-architecture UNet of the host tests (320/320 channels,
  1 res block per level, about 25 M parameters), so that larger frames and more frames finish on a CPU.

Both use the full SD VAE (real architecture), which dominates the CPU time of the small model.

GPU suite (one command for a lent GPU, under 8 minutes on an H100/H200-class card; writes
bench/results/dloral_gpu.json, every part saved as soon as it ends):

    COMFYUI_DIR=/path/to/ComfyUI python bench/bench_dloral.py --suite gpu

50 frames 512x512 -> 2048x2048 with the full SD2.1-base UNet (random weights; 16 latent tiles of
96x96 per frame), in this order: fp32 on the first ``--ref-frames`` frames (the reference), fp16 and
bf16 on all frames (frames/s, peak GPU memory, max |difference| to fp32 on the reference frames), and
the low-memory setting (fp16, window 1, VAE tiles of 64 latent px (512 px) with overlap 8, latent
tiles 96/32) on ``--lowmem-frames`` frames. Each speed run stops at ``--run-cap-s`` seconds (120;
the reference and low-memory runs at 60) and reports the frames it finished, so the suite ends
within about 7 minutes whatever the card. UNet and VAE run in the dtype under test (as the official code). On CPU
``--suite gpu --smoke`` runs the same code at tiny sizes (small UNet, 16 -> 64 px).
Speed does not depend on the weight values. The memory-against-length part always uses the small
UNet. Results are merged into the JSON: every entry carries its ``model``; a rerun replaces only the
entries with the same (model, input, frames, mode).
"""
import argparse
import json
import os
import pathlib
import sys
import time

import torch

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "bench"), str(REPO / "scripts")]
from _peak import PeakRSS  # noqa: E402

FULL = dict(ch=(320, 640, 1280, 1280), layers=2, attn=(True, True, True, False), ctx=1024)
SMALL = dict(ch=(320, 320), layers=1, attn=(True, False), ctx=1024)
MODELS = {"full": (FULL, "full SD2.1-base UNet (865 M params) + SD VAE"),
          "small": (SMALL, "small SD2-architecture UNet (320/320 ch, 1 res block, ~25 M params) + full SD VAE")}


def _init_(module, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "norm" in name and p.dim() == 1 and name.endswith("weight"):
                p.fill_(1.0)
            elif p.dim() == 1:
                p.copy_(torch.randn(p.shape, generator=g) * 0.01)
            else:
                p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)


_SD_CACHE = {}


def build_unet(arch, seed=0, dtype=None):
    """The host's model for a random-weight UNet of ``arch``; the weights are drawn once per
    (arch, seed) and copied for each call (the GPU suite loads the same UNet in several dtypes)."""
    import comfy.sd
    key = ("unet", repr(arch), seed)
    if key not in _SD_CACHE:
        _SD_CACHE[key] = _unet_sd(arch, seed)
    sd = {k: v.clone() for k, v in _SD_CACHE[key].items()}
    return comfy.sd.load_diffusion_model_state_dict(sd, model_options={"dtype": dtype} if dtype else {})


def _unet_sd(arch, seed):
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
    n = len(arch["ch"])
    mult = tuple(c // 320 for c in arch["ch"])
    td = [int(a) for a in arch["attn"] for _ in range(arch["layers"])]
    tdo = [int(a) for a in reversed(arch["attn"]) for _ in range(arch["layers"] + 1)][::-1]
    m = UNetModel(image_size=32, in_channels=4, out_channels=4, model_channels=320, num_res_blocks=arch["layers"],
                  channel_mult=mult, num_head_channels=64, transformer_depth=td, transformer_depth_output=tdo,
                  transformer_depth_middle=1, context_dim=1024, use_linear_in_transformer=True,
                  use_spatial_transformer=True, legacy=False, dtype=torch.float32, device="cpu")
    _init_(m, seed)
    assert n == len(mult)
    return m.state_dict()


def build_vae(seed=1, dtype=None):
    import comfy.sd
    from comfy.ldm.modules.diffusionmodules.model import Decoder, Encoder
    dd = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
          "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}
    enc, dec = Encoder(**dd), Decoder(**dd)
    _init_(enc, seed)
    _init_(dec, seed + 1)
    sd = {"encoder." + k: v for k, v in enc.state_dict().items()}
    sd.update({"decoder." + k: v for k, v in dec.state_dict().items()})
    for name, c in (("quant_conv", 8), ("post_quant_conv", 4)):
        sd[name + ".weight"] = torch.eye(c).view(c, c, 1, 1)
        sd[name + ".bias"] = torch.zeros(c)
    return comfy.sd.VAE(sd=sd, dtype=dtype)


def dloral_weights(pack, arch):
    from _dloral_synth import make_official, unet_shapes
    ck, _ = make_official(unet_shapes(**arch), rank_q=4, rank_c=4, seed=2, std=0.02, base_values=False)
    return pack.dloral.convert_official(ck)


def run_dloral(pack, model, vae, w, size, frames, cfg_kw, stream=False):
    """The node path (IMAGE batch in, IMAGE batch out), or with ``stream`` the CLI path: frames made
    one at a time and each output dropped after use, so memory shows only the working set."""
    nodes = pack.nodes.dloral_nodes
    g = torch.Generator().manual_seed(0)
    base = torch.rand(size, size, 3, generator=g)
    cond = [[torch.randn(1, 77, 1024, generator=g), {}]]
    cfg = pack.dloral.DLoRALConfig(**cfg_kw)
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        models = nodes.host_models(model, vae, cond, w)
        t1 = time.perf_counter()
        with torch.inference_mode():
            if stream:
                gen = (base.roll(i, 1).movedim(-1, 0) for i in range(frames))
                n = sum(1 for _ in pack.dloral.upscale_video(gen, models, cfg))
                assert n == frames
            else:
                imgs = torch.stack([base.roll(i, 1) for i in range(frames)])
                out = nodes.run_upscale(models, imgs, cfg)
                assert out.shape == (frames, 4 * size, 4 * size, 3)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t2 = time.perf_counter()
    return {"input": size, "output": 4 * size, "frames": frames, "setup_s": round(t1 - t0, 2),
            "seconds": round(t2 - t1, 2), "fps": round(frames / (t2 - t1), 4),
            "s_per_frame": round((t2 - t1) / frames, 3), "rss_peak_mib": round(mem.rss_peak_mib),
            "rss_growth_mib": round(mem.rss_growth_mib), "cuda_peak_mib": mem.cuda_peak_mib and round(mem.cuda_peak_mib),
            "config": cfg_kw, "mode": "stream (outputs dropped)" if stream else "node (IMAGE batch out)"}


def run_sampler(model, vae, size, steps, target=50):
    """One frame from the same UNet as a plain sampler: `steps` Euler steps (cfg 1, one UNet call per
    step) at the latent size DLoRAL uses for a `size` input, plus the VAE decode. When `steps` is
    below `target` (slow CPUs), the `target`-step time is extrapolated from the measured per-step
    time and reported as such."""
    import nodes as host_nodes
    proc = max(4 * size, 512)
    h = proc // 8
    cond = [[torch.randn(1, 77, 1024), {}]]
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        (lat,) = host_nodes.common_ksampler(model, 0, steps, 1.0, "euler", "simple", cond, cond,
                                            {"samples": torch.zeros(1, 4, h, h)})
        t1 = time.perf_counter()
        img = vae.decode(lat["samples"])
        t2 = time.perf_counter()
    r = {"input": size, "latent": h, "steps_run": steps, "sampling_s": round(t1 - t0, 2),
         "decode_s": round(t2 - t1, 2), "rss_peak_mib": round(mem.rss_peak_mib), "image": list(img.shape)}
    r["seconds"] = round((t1 - t0) * target / steps + (t2 - t1), 2)
    r["seconds_note"] = f"{target}-step time" + ("" if steps == target else f", extrapolated from {steps} steps")
    return r


DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _suite_run(pack, arch, w, name, precision, size, frames, cfg_kw, keep, cap_s):
    """One GPU-suite run: fresh host models in ``precision``, ``frames`` moving frames (size x size),
    stopped after ``cap_s`` seconds. Returns (result row, the first ``keep`` output frames)."""
    import comfy.model_management as mm
    nodes = pack.nodes.dloral_nodes
    cuda = torch.cuda.is_available()
    dtype = DTYPES[precision] if cuda else None          # on CPU the host keeps fp32 and autocasts
    model, vae = build_unet(arch, dtype=dtype), build_vae(dtype=dtype)
    g = torch.Generator().manual_seed(0)
    base = torch.nn.functional.interpolate(torch.rand(1, 3, size // 8 + 2, size // 8 + 2, generator=g),
                                           size=(size + 64, size + 64), mode="bicubic")[0].clamp(0, 1)
    base = base * 0.85 + 0.15 * torch.rand(base.shape, generator=g)
    cond = [[torch.randn(1, 77, 1024, generator=g), {}]]
    models = nodes.host_models(model, vae, cond, w, precision=precision)
    cfg = pack.dloral.DLoRALConfig(**cfg_kw)
    gen = (base[:, i % 64:i % 64 + size, (2 * i) % 64:(2 * i) % 64 + size] for i in range(frames))
    kept, done, first = [], 0, None
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    with torch.inference_mode():
        for f in pack.dloral.upscale_video(gen, models, cfg):
            done += 1
            if done <= keep:
                kept.append(f.clone())
            if first is None:
                first = time.perf_counter() - t0
            if time.perf_counter() - t0 > cap_s and done % cfg.window == 0:
                break
    if cuda:
        torch.cuda.synchronize()
    sec = time.perf_counter() - t0
    r = {"run": name, "precision": precision, "input": size, "output": 4 * size, "frames": done,
         "frames_asked": frames, "seconds": round(sec, 2), "fps": round(done / sec, 3),
         "fps_after_first_window": round((done - cfg.window) / (sec - first), 3) if done > cfg.window else None,
         "cuda_peak_mib": round(torch.cuda.max_memory_allocated() / 2**20) if cuda else None,
         "config": cfg_kw, "finite": bool(all(torch.isfinite(k).all() for k in kept))}
    del models, model, vae
    mm.unload_all_models()
    mm.soft_empty_cache()
    return r, kept


def gpu_suite(pack, a):
    """fp32 reference, fp16, bf16 and the low-memory setting; see the module docstring."""
    arch = SMALL if a.smoke else FULL
    size = 16 if a.smoke else a.suite_size
    frames, ref, low = (2, 1, 1) if a.smoke else (a.suite_frames, a.ref_frames, a.lowmem_frames)
    w = dloral_weights(pack, arch)
    base_cfg = dict(window=a.window, process_size=4 * size) if a.smoke else dict(window=a.window)
    lowmem = dict(base_cfg, window=1, vae_tile=8 if a.smoke else 64, vae_overlap=2 if a.smoke else 8)
    out = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
           "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "model": "small SD2-architecture UNet (smoke)" if a.smoke else MODELS["full"][1],
           "weights": "random", "runs": []}
    path = a.suite_out

    def save():
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            json.dump(out, f, indent=1)

    t_all = time.perf_counter()
    short_cap = min(a.run_cap_s, 60)      # reference and low-memory runs: fewer frames, shorter cap
    r, refs = _suite_run(pack, arch, w, "reference", "fp32", size, ref, base_cfg, ref, short_cap)
    out["runs"].append(r)
    print(json.dumps(r), flush=True)
    save()
    plan = [("speed", "fp16", frames, base_cfg), ("lowmem", "fp16", low, lowmem), ("speed", "bf16", frames, base_cfg)]
    for name, prec, n, kw in plan:
        r, kept = _suite_run(pack, arch, w, name, prec, size, n, kw, len(refs),
                             short_cap if name == "lowmem" else a.run_cap_s)
        k = min(len(kept), len(refs))
        if k:
            d = torch.stack([(kept[i] - refs[i]).abs() for i in range(k)])
            r["vs_fp32"] = {"frames": k, "max_abs": round(float(d.max()), 5), "mean_abs": round(float(d.mean()), 6),
                            "psnr_db": round(float(-10 * torch.log10((d ** 2).mean().clamp_min(1e-12))), 2)}
        out["runs"].append(r)
        print(json.dumps(r), flush=True)
        save()
    out["total_s"] = round(time.perf_counter() - t_all, 1)
    save()
    print("wrote", path, f"({out['total_s']} s)")


def _key(r):
    return (r.get("model"), r.get("input"), r.get("frames"), r.get("mode"))


def _merge(old, new):
    """Entries of ``old`` not replaced by one of ``new`` (same model, input, frames, mode), then ``new``."""
    keys = {_key(r) for r in new}
    return [r for r in old if _key(r) not in keys] + new


def _load_old(path):
    """The existing results, migrated to the per-entry labelled form (older files had one run, the
    full model for the size runs and the sampler, the small one for memory against length)."""
    if not os.path.isfile(path):
        return {"dloral": [], "samplers": [], "memory_vs_length": []}
    with open(path) as f:
        old = json.load(f)
    run = {k: old.get(k) for k in ("device", "cpu", "threads", "torch", "gpu")}
    for r in old.get("dloral", []):
        r.setdefault("model", "full")
        r.setdefault("run", run)
    samplers = old.get("samplers") or ([old["sampler"]] if old.get("sampler") else [])
    for r in samplers:
        r.setdefault("model", "full")
        r.setdefault("run", run)
    for r in old.get("memory_vs_length", []):
        r.setdefault("model", "small")
        r.setdefault("run", run)
    return {"dloral": old.get("dloral", []), "samplers": samplers,
            "memory_vs_length": old.get("memory_vs_length", []), "notes": old.get("notes", [])}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--comfyui", default=None, help="ComfyUI tree (default $COMFYUI_DIR, else ~/ComfyUI)")
    ap.add_argument("--model", choices=sorted(MODELS), default="full",
                    help="UNet of the size runs and the sampler comparison (the VAE is the full SD VAE)")
    ap.add_argument("--sizes", type=int, nargs="*", default=[128, 512])
    ap.add_argument("--frames", type=int, nargs="*", default=[50],
                    help="frames per size run: one value for all sizes, or one per size")
    ap.add_argument("--sampler-steps", type=int, default=50)
    ap.add_argument("--lengths", type=int, nargs="*", default=[10, 50, 200])
    ap.add_argument("--length-size", type=int, default=32, help="input size of the memory-vs-length runs")
    ap.add_argument("--window", type=int, default=4)
    ap.add_argument("--vae-tile", type=int, default=0,
                    help="VAE tile (latent px) of the size runs; 0 = the host VAE decides (no tiling on CPU)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    ap.add_argument("--note", default="", help="free text stored with this run (e.g. why frames were reduced)")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "dloral.json"))
    ap.add_argument("--suite", choices=("cpu", "gpu"), default="cpu",
                    help="gpu: the one-command GPU suite (fp32/fp16/bf16, low-memory setting), see above")
    ap.add_argument("--smoke", action="store_true", help="--suite gpu at tiny sizes (runs on a CPU)")
    ap.add_argument("--suite-size", type=int, default=512, help="GPU suite input size (output x4)")
    ap.add_argument("--suite-frames", type=int, default=50)
    ap.add_argument("--ref-frames", type=int, default=4, help="frames of the fp32 reference run")
    ap.add_argument("--lowmem-frames", type=int, default=8)
    ap.add_argument("--run-cap-s", type=float, default=120,
                    help="each GPU-suite speed run stops after this many seconds (reference/low-memory: 60)")
    ap.add_argument("--suite-out", default=str(REPO / "bench" / "results" / "dloral_gpu.json"))
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    frames = a.frames * len(a.sizes) if len(a.frames) == 1 else a.frames
    if len(frames) != len(a.sizes):
        ap.error(f"--frames needs 1 or {len(a.sizes)} values, got {len(a.frames)}")
    import hostbridge   # scripts/: the pack imported as the DLoRAL CLI imports it (CPU only without CUDA)
    try:
        pack = hostbridge.import_pack(a.comfyui, name="atelier_bench_pack", cpu="no-cuda", label="--comfyui")
    except hostbridge.HostTreeError as exc:
        sys.exit(f"bench_dloral: {exc}")
    if a.suite == "gpu":
        return gpu_suite(pack, a)
    import comfy.model_management as mm
    dev = mm.get_torch_device()
    from bench_dloral_chunks import cpu_name   # the CPU's model name (/proc/cpuinfo): speed-ups are per CPU
    run = {"device": str(dev), "cpu": cpu_name(), "threads": torch.get_num_threads(),
           "torch": torch.__version__, "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "nice": os.nice(0)}
    if a.note:
        run["note"] = a.note
    res = _load_old(a.out)
    new = {"dloral": [], "samplers": [], "memory_vs_length": []}

    def save():
        out = {"weights": "random (real architectures; speed does not depend on values)",
               "models": {k: v[1] for k, v in MODELS.items()},
               "gpu_fps": "not measured: no GPU was lent to this project",
               "notes": res.get("notes", []),
               **{k: _merge(res[k], new[k]) for k in ("dloral", "samplers", "memory_vs_length")}}
        os.makedirs(os.path.dirname(a.out), exist_ok=True)
        with open(a.out, "w") as f:
            json.dump(out, f, indent=1)

    def label(r, model):
        r.update(model=model, run=run)
        print(json.dumps(r), flush=True)
        return r

    if a.note:
        res["notes"] = [n for n in res.get("notes", []) if not n.startswith(f"[{a.model}] ")] + [f"[{a.model}] {a.note}"]
    arch = MODELS[a.model][0]
    if a.sizes:
        t = time.perf_counter()
        model, vae, w = build_unet(arch), build_vae(), dloral_weights(pack, arch)
        run["build_s"] = round(time.perf_counter() - t, 1)
        for s, n in zip(a.sizes, frames):
            kw = dict(window=a.window, vae_tile=a.vae_tile) if a.vae_tile else dict(window=a.window)
            new["dloral"].append(label(run_dloral(pack, model, vae, w, s, n, kw), a.model))
            save()   # partial results survive an interrupted run
        if a.sampler_steps:
            mm.unload_all_models()
            r = run_sampler(model, vae, a.sizes[0], a.sampler_steps)
            d0 = new["dloral"][0]
            r["dloral_s_per_frame"] = d0["s_per_frame"]
            r["ratio"] = round(r["seconds"] / d0["s_per_frame"], 2)
            new["samplers"].append(label(r, a.model))
            save()
        del model, w
        mm.unload_all_models()
    if a.lengths:
        model, vae, w = build_unet(SMALL), build_vae(), dloral_weights(pack, SMALL)
        for n in a.lengths:
            r = run_dloral(pack, model, vae, w, a.length_size, n,
                           dict(window=a.window, process_size=4 * a.length_size), stream=True)
            new["memory_vs_length"].append(label(r, "small"))
            save()
    save()
    print("wrote", a.out)


if __name__ == "__main__":
    main()
