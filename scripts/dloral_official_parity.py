"""DLoRAL parity harness: the official inference script and this pack on the same random weights.

Optional (not part of CI): it needs a copy of the official repository (github.com/yjsunnn/DLoRAL,
checked at 40c1308) and a Python environment pinned as that repository's requirements, as close as
PyPI allows on Python 3.11 (the official pins torch 2.0.1; the measurements below used torch 2.14.1
with torchvision 0.29.1, a matching pair: torchvision fails to load against a torch of another release):

    python3.11 -m venv /work/dloral_official_env
    /work/dloral_official_env/bin/pip install torch==2.14.1 torchvision==0.29.1 diffusers==0.25.0 \\
        peft==0.9.0 transformers==4.28.1 huggingface_hub==0.25.0 accelerate==0.25.0 Pillow==9.5.0 \\
        numpy==1.26.4 mmcv-lite==2.2.0 mmengine==0.10.7 einops==0.7.0 pyyaml \\
        opencv-python-headless==4.9.0.80 safetensors

Nothing of the official code is copied here: its script runs unmodified (``runpy``) from the path given
on the command line, with these run-time substitutions (each needed on a CPU-only machine without
downloads, or for a deterministic reference):

- every ``cuda`` device is mapped to the CPU; xformers is off; ``--mixed_precision fp32``;
- the compiled ``mmcv.ops`` import (base class of an alignment module never built at inference) is a stub;
- SpyNet's download is skipped (its weights come from ``state_dict_bpp`` with ``--load_cfr``);
- RAM/DAPE is replaced by a fixed tag string; the video reader yields the input PNGs;
- the VAE posterior is its mean instead of an unseeded sample (the pack's default too).

Measured (2026-12-01, CPU, fp32, 2 threads; full SD2.1-base UNet, full SD VAE, 5 frames 128 -> 512, AdaIN,
window 4; the official code outputs frames 1-4; README "Parity" and "Speed and memory"):

- ``processing="official"`` (default): decoded frames max |diff| 1.6-2.0e-5 on [0, 1]; PNGs byte-identical
  in 99.96 % of values on each frame, the rest 1-2 levels (truncations flipped by the UNet's float noise; the
  VAE is bit-identical to diffusers');
- seconds per output frame, one sitting (pack first): official 64.9, pack 54.1 (0.83x); both processes
  started with ``THP_MEM_ALLOC_ENABLE=1`` (``dloral/cpu.py``): official 62.5, pack 45.7 (0.73x); peak resident
  memory 8283 vs 7422 MiB. Set the variable for both steps to compare them that way;
- reduced UNet (2 levels of 320 channels, 3 frames), earlier: 1.7e-5 and 99.96 %; ``processing="float"``:
  max 0.042, 36.5 % of PNG values equal.

Steps (``all`` runs them in order, each in its own interpreter):

    make      (official env)  random SD2.1-architecture weights in diffusers layout + model.pkl written
                              with the official code's own LoRA set-up (peft 0.9), input PNGs
    official  (official env)  runs src/test_DLoRAL.py; keeps its PNGs and its decoded frames (fp32)
    pack      (ComfyUI venv)  the same weights through the host's UNet/VAE and this pack's node path
    compare   (either)        max |diff| of the decoded frames on [0, 1] and PNG equality, frames 1..N-1

    python scripts/dloral_official_parity.py all --official /path/to/DLoRAL --work /tmp/parity \\
        --official-python /work/dloral_official_env/bin/python --pack-python .venv-hosts/.../python \\
        --comfyui /path/to/ComfyUI [--unet small|full] [--frames 3] [--size 128]
"""
import argparse
import gc
import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np
import torch

REPO = pathlib.Path(__file__).resolve().parents[1]
# UNet variants (diffusers arguments): the full SD2.1-base UNet, or a reduced one (2 levels, 320 ch)
ARCH = {
    "full": dict(block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, attention_head_dim=(5, 10, 20, 20),
                 down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3),
    "small": dict(block_out_channels=(320, 320), layers_per_block=1, attention_head_dim=(5, 5),
                  down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")),
}
TAGS = "a photo, detailed"


def _init(module, seed):
    """Random weights that keep activations O(1): N(0, 1/fan_in) matrices, unit norms, small biases."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() == 1 and "norm" in name and name.endswith("weight"):
                p.fill_(1.0)
            elif p.dim() == 1:
                p.copy_(torch.randn(p.shape, generator=g) * 0.01)
            else:
                p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)


class Stages:
    """Wall time per named stage (wrapped callables); ``table`` gives seconds per output frame."""

    def __init__(self):
        self.seconds = {}

    def wrap(self, fn, name):
        def timed(*x, **k):
            t = time.perf_counter()
            try:
                return fn(*x, **k)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t
        return timed


class Memory:
    """Resident memory of this process from /proc (no extra package): ``mark()`` notes the level when the
    first frame starts, a thread samples every 20 ms; ``peak_mib`` is the process peak, ``working_mib`` the
    peak above the mark (what the frames themselves hold: latents, activations, windows)."""

    def __init__(self):
        import threading
        self.mark_b, self.peak_b, self.stop = None, 0, False
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def rss(self):
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def _run(self):
        while not self.stop:
            self.peak_b = max(self.peak_b, self.rss())
            time.sleep(0.02)

    def mark(self):
        if self.mark_b is None:
            self.mark_b = self.rss()

    def result(self):
        self.stop = True
        self.t.join()
        import resource
        peak = max(self.peak_b, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
        return {"peak_mib": round(peak / 2**20), "working_mib": round((peak - (self.mark_b or 0)) / 2**20)}


def _official_imports(official):
    os.chdir(official)
    sys.path[:0] = [official, os.path.join(official, "src")]
    import types
    try:
        import mmcv.ops  # noqa: F401
    except ImportError:
        stub = types.ModuleType("mmcv.ops")
        stub.ModulatedDeformConv2d = torch.nn.Module
        stub.modulated_deform_conv2d = None
        sys.modules["mmcv.ops"] = stub


# ---------------------------------------------------------------- make (official env)
def cmd_make(a):
    _official_imports(a.official)
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
    from PIL import Image
    work = pathlib.Path(a.work)
    sd = work / "sd21"
    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=1024, use_linear_projection=True, **ARCH[a.unet])
    _init(unet, 1)
    unet.save_pretrained(sd / "unet")
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        sample_size=512)
    _init(vae, 2)
    vae.save_pretrained(sd / "vae")
    te = CLIPTextModel(CLIPTextConfig(hidden_size=1024, intermediate_size=1024, num_hidden_layers=1,
                                      num_attention_heads=8, max_position_embeddings=77, projection_dim=512))
    _init(te, 3)
    te.save_pretrained(sd / "text_encoder")
    tok = pathlib.Path(a.comfyui) / "comfy" / "sd1_tokenizer"
    CLIPTokenizer(str(tok / "vocab.json"), str(tok / "merges.txt"), model_max_length=77).save_pretrained(sd / "tokenizer")
    DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).save_pretrained(sd / "scheduler")
    # model.pkl as the official Generator.save_model writes it, with the official LoRA set-up
    from src.DLoRAL_model import initialize_unet
    import src.cross_frame_retrieval.cfr_main as cfr_main
    unet, *mods = initialize_unet(4, 4, return_lora_module_names=True, pretrained_model_name_or_path=str(sd))
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for n, p in unet.named_parameters():
            if "lora_A" in n:
                p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)
            elif "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
            elif n.startswith("conv_in.base_layer.weight"):
                p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)
    cfr = cfr_main.CFR_model(mid_channels=64, num_blocks=7, is_low_res_input=False, spynet_pretrained=None)
    _init(cfr, 5)
    with torch.no_grad():   # SpyNet's last conv of each level predicts flow: keep it small (a few pixels)
        for n, p in cfr.named_parameters():
            if "spynet" in n and "basic_module.4" in n:
                p.mul_(0.1)
    names = ("encoder_modules_quality", "decoder_modules_quality", "others_modules_quality",
             "encoder_modules_consistency", "decoder_modules_consistency", "others_modules_consistency")
    ck = {f"unet_lora_{k}": list(v) for k, v in zip(names, mods)}
    ck.update(lora_rank_unet_quality=4, lora_rank_unet_consistency=4, state_dict_unet=unet.state_dict(),
              state_dict_bpp=cfr.state_dict())
    torch.save(ck, work / "model.pkl")
    g = torch.Generator().manual_seed(6)    # a smooth moving pattern: frames that share content
    base = torch.nn.functional.interpolate(torch.rand(1, 3, a.size // 8 + 4, a.size // 8 + 4, generator=g),
                                           scale_factor=8, mode="bicubic", align_corners=False)[0].clamp(0, 1)
    (work / "input").mkdir(parents=True, exist_ok=True)
    for i in range(a.frames):
        f = base[:, 2 * i:2 * i + a.size, i:i + a.size] * 0.9 + 0.1 * torch.rand(3, a.size, a.size, generator=g)
        Image.fromarray((f.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(work / "input" / f"{i:04d}.png")
    (work / "meta.json").write_text(json.dumps({"unet": a.unet, "frames": a.frames, "size": a.size}))
    print("made", work)


# ---------------------------------------------------------------- official (official env)
def _to_cpu(dev):
    return "cpu" if isinstance(dev, (str, torch.device)) and str(dev).startswith("cuda") else dev


def cmd_official(a):
    _official_imports(a.official)
    import types
    import cv2
    work = pathlib.Path(a.work)
    torch.set_num_threads(a.threads)
    # cuda -> cpu
    _tensor, _tto, _mto = torch.tensor, torch.Tensor.to, torch.nn.Module.to
    torch.tensor = lambda *x, device=None, **k: _tensor(*x, device=_to_cpu(device), **k)
    torch.Tensor.cuda = lambda self, *x, **k: self
    torch.nn.Module.cuda = lambda self, *x, **k: self
    torch.Tensor.to = lambda self, *x, **k: _tto(self, *[_to_cpu(v) for v in x],
                                                 **{n: _to_cpu(v) for n, v in k.items()})
    torch.nn.Module.to = lambda self, *x, **k: _mto(self, *[_to_cpu(v) for v in x],
                                                    **{n: _to_cpu(v) for n, v in k.items()})
    from diffusers import UNet2DConditionModel
    UNet2DConditionModel.enable_xformers_memory_efficient_attention = lambda self, *x, **k: None
    from diffusers.models.autoencoders import vae as dvae
    dvae.DiagonalGaussianDistribution.sample = lambda self, generator=None: self.mean.contiguous()
    import src.cross_frame_retrieval.cfr_main as cfr_main
    cfr_main.load_checkpoint = lambda *x, **k: None
    # RAM/DAPE -> fixed tags
    ram_pkg = types.ModuleType("ram")
    ram_pkg.inference_ram = lambda image, model: [TAGS]
    ram_models = types.ModuleType("ram.models")
    ram_lora = types.ModuleType("ram.models.ram_lora")
    ram_lora.ram = lambda **k: torch.nn.Identity()
    sys.modules.update({"ram": ram_pkg, "ram.models": ram_models, "ram.models.ram_lora": ram_lora})
    # the video reader yields the input PNGs (BGR, as OpenCV)
    files = sorted((work / "input").glob("*.png"))

    class Reader:
        def __init__(self, path):
            self.frames = [cv2.imread(str(f), cv2.IMREAD_COLOR) for f in files]

        def read(self):
            return (True, self.frames.pop(0)) if self.frames else (False, None)

        def release(self):
            pass
    cv2.VideoCapture = Reader
    # record the decoded frames, the prompt embedding and the time of each call
    from src.DLoRAL_model import Generator_eval
    rec = {"decoded": [], "context": None, "seconds": []}
    fwd, enc = Generator_eval.forward, Generator_eval.encode_prompt

    def forward(self, *x, **k):
        mem.mark()
        t = time.perf_counter()
        out = fwd(self, *x, **k)
        rec["seconds"].append(time.perf_counter() - t)
        rec["decoded"].append(out[0].detach().float().cpu().clone())
        return out

    def encode_prompt(self, batch):
        e = enc(self, batch)
        rec["context"] = e.detach().float().cpu().clone()
        return e
    Generator_eval.forward, Generator_eval.encode_prompt = forward, encode_prompt
    from diffusers import AutoencoderKL
    st, mem = Stages(), Memory()
    AutoencoderKL.encode = st.wrap(AutoencoderKL.encode, "vae_encode")
    AutoencoderKL.decode = st.wrap(AutoencoderKL.decode, "vae_decode")
    UNet2DConditionModel.forward = st.wrap(UNet2DConditionModel.forward, "unet")
    cfr_main.CFR_model.forward = st.wrap(cfr_main.CFR_model.forward, "cfr")
    Generator_eval.encode_prompt = st.wrap(Generator_eval.encode_prompt, "prompt")
    out = work / "official"
    sys.argv = ["test_DLoRAL.py", "-i", str(work / "official_in" / "clip.mp4"), "-o", str(out),
                "--pretrained_path", str(work / "model.pkl"), "--pretrained_model_path", str(work / "sd21"),
                "--pretrained_model_name_or_path", str(work / "sd21"), "--mixed_precision", "fp32",
                "--stages", "1", "--load_cfr", "--align_method", a.color_fix, "--process_size", "512"]
    import runpy
    t0 = time.perf_counter()
    runpy.run_path(os.path.join(a.official, "src", "test_DLoRAL.py"), run_name="__main__")
    rec["total_s"] = time.perf_counter() - t0
    rec["stages"], rec["memory"] = st.seconds, mem.result()
    torch.save(rec, work / "official.pt")
    print("official:", len(rec["decoded"]), "frames,", [round(s, 1) for s in rec["seconds"]], "s per call")


# ---------------------------------------------------------------- pack (ComfyUI venv)
def _ldm_config(arch):
    n = len(arch["block_out_channels"])
    attn = [t.startswith("CrossAttn") for t in arch["down_block_types"]]
    layers = arch["layers_per_block"]
    return dict(num_res_blocks=[layers] * n, channel_mult=[c // 320 for c in arch["block_out_channels"]],
                transformer_depth=[int(x) for x in attn for _ in range(layers)],
                transformer_depth_output=[int(x) for x in reversed(attn) for _ in range(layers + 1)][::-1],
                transformer_depth_middle=1)


def cmd_pack(a):
    sys.path[:0] = [str(REPO / "scripts")]
    import hostbridge   # the pack as the DLoRAL CLI imports it (CPU only without CUDA)
    pack = hostbridge.import_pack(a.comfyui, name="atelier_pack_cli", cpu="no-cuda", label="--comfyui")
    import comfy.sd
    import comfy.utils
    from PIL import Image
    from safetensors.torch import load_file
    torch.set_num_threads(a.threads)
    work = pathlib.Path(a.work)
    meta = json.loads((work / "meta.json").read_text())
    sd = load_file(str(work / "sd21" / "unet" / "diffusion_pytorch_model.safetensors"))
    keymap = comfy.utils.unet_to_diffusers(_ldm_config(ARCH[meta["unet"]]))
    missing = sorted(set(sd) - set(keymap))
    if missing:
        raise SystemExit(f"unmapped UNet keys: {missing[:5]}")
    model = comfy.sd.load_diffusion_model_state_dict({keymap[k]: v for k, v in sd.items()})
    del sd   # as the host's loaders: the file's tensors are not kept beside the model
    gc.collect()
    vae = comfy.sd.VAE(sd=load_file(str(work / "sd21" / "vae" / "diffusion_pytorch_model.safetensors")))
    # converted once, in its own process, as a user does (README); fp32: the comparison is in fp32
    conv = work / "dloral_fp32.safetensors"
    if not conv.exists():
        subprocess.run([sys.executable, "-m", "dloral", "convert", str(work / "model.pkl"), "--out", str(conv),
                        "--precision", "fp32"],
                       cwd=str(REPO), check=True)
    weights = pack.dloral.load_weights(str(conv))
    rec = torch.load(work / "official.pt", weights_only=True) if (work / "official.pt").exists() else None
    if rec is None or rec["context"] is None:
        raise SystemExit("run the 'official' step first: the prompt embedding comes from it")
    models = pack.nodes.dloral_host.host_models(model, vae, [[rec["context"], {}]], weights, precision="fp32")
    decoded, dec = [], models.decode

    def decode(z):
        img = dec(z)
        decoded.extend(img.float().cpu().clamp(-1, 1).clone())
        return img
    models.decode = decode
    st = Stages()
    models.encode = st.wrap(models.encode, "vae_encode")
    models.decode = st.wrap(models.decode, "vae_decode")
    models.unet = st.wrap(models.unet, "unet")
    pl = sys.modules[pack.dloral.pipeline.__name__]
    pl.cfr_fuse = st.wrap(pl.cfr_fuse, "cfr")
    cfg = pack.dloral.DLoRALConfig(window=a.window, processing=a.processing, color_fix=a.color_fix)
    files = sorted((work / "input").glob("*.png"))
    frames = (torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1).float() / 255 for f in files)
    out = work / f"pack_{a.processing}"
    out.mkdir(parents=True, exist_ok=True)
    mem = Memory()
    mem.mark()
    t0, times = time.perf_counter(), []
    with torch.inference_mode():
        for i, f in enumerate(pack.dloral.upscale_video(frames, models, cfg)):
            times.append(time.perf_counter() - t0)
            arr = (f.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            Image.fromarray(arr).save(out / f"frame_{i:04d}.png")
    torch.save({"decoded": decoded, "total_s": time.perf_counter() - t0, "times": times, "stages": st.seconds,
                "memory": mem.result()},
               work / f"pack_{a.processing}.pt")
    print(f"pack ({a.processing}): {len(files)} frames in {time.perf_counter() - t0:.1f} s")


# ---------------------------------------------------------------- compare
def cmd_compare(a):
    from PIL import Image
    work = pathlib.Path(a.work)
    off = torch.load(work / "official.pt", weights_only=True)
    res = {"meta": json.loads((work / "meta.json").read_text())}
    for mode in ("official", "float"):
        p = work / f"pack_{mode}.pt"
        if not p.exists():
            continue
        pk = torch.load(p, weights_only=True)
        rows = []
        for i, od in enumerate(off["decoded"], 1):     # the official code outputs frames 1..N-1
            a0, b0 = od[0] * 0.5 + 0.5, pk["decoded"][i] * 0.5 + 0.5
            d = (a0 - b0).abs()
            po = np.array(Image.open(work / "official" / "clip" / f"frame_{i:04d}.png").convert("RGB")).astype(int)
            pp = np.array(Image.open(work / f"pack_{mode}" / f"frame_{i:04d}.png").convert("RGB")).astype(int)
            e = np.abs(po - pp) if po.shape == pp.shape else None
            rows.append({"frame": i, "decoded_max_abs": float(d.max()), "decoded_psnr_db": float(-10 * torch.log10((d ** 2).mean())),
                         "saturated": float(((od.abs() >= 1)).float().mean()),
                         "png_equal": None if e is None else float((e == 0).mean()),
                         "png_max_levels": None if e is None else int(e.max())})
        n_off, n_pack = len(off["decoded"]), len(pk["decoded"])
        res[mode] = {"frames": rows, "official_s_per_frame": sum(off["seconds"]) / n_off,
                     "pack_s_per_frame": pk["total_s"] / n_pack}
        if "stages" in off and "stages" in pk:   # seconds per output frame (official N-1 frames, pack N)
            so, sp = off["stages"], pk["stages"]
            so = dict(so, other=sum(off["seconds"]) - sum(so.values()))
            sp = dict(sp, other=pk["total_s"] - sum(sp.values()))
            res[mode]["stages_s_per_frame"] = {k: {"official": round(so.get(k, 0) / n_off, 3),
                                                   "pack": round(sp.get(k, 0) / n_pack, 3)}
                                               for k in ("prompt", "vae_encode", "cfr", "unet", "vae_decode", "other")}
        if "memory" in off and "memory" in pk:
            res[mode]["memory_mib"] = {"official": off["memory"], "pack": pk["memory"]}
    (work / "parity.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


def cmd_all(a):
    me, common = [os.path.abspath(__file__)], ["--work", a.work, "--threads", str(a.threads)]
    off = ["--official", a.official]
    run = lambda py, *x: subprocess.run([py, *me, *x], check=True)
    run(a.official_python, "make", *common, *off, "--comfyui", a.comfyui, "--unet", a.unet,
        "--frames", str(a.frames), "--size", str(a.size))
    run(a.official_python, "official", *common, *off, "--color-fix", a.color_fix)
    for mode in ("official", "float"):
        run(a.pack_python, "pack", *common, "--comfyui", a.comfyui, "--processing", mode, "--color-fix", a.color_fix)
    run(a.pack_python, "compare", *common)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name, fn in (("make", cmd_make), ("official", cmd_official), ("pack", cmd_pack), ("compare", cmd_compare),
                     ("all", cmd_all)):
        s = sub.add_parser(name)
        s.set_defaults(fn=fn)
        s.add_argument("--work", required=True, help="folder for weights, inputs and outputs")
        s.add_argument("--threads", type=int, default=2)
        if name in ("make", "official", "all"):
            s.add_argument("--official", required=True, help="a copy of the official DLoRAL repository")
        if name in ("make", "pack", "all"):
            s.add_argument("--comfyui", default=os.environ.get("COMFYUI_DIR"),
                           help="ComfyUI tree (its CLIP vocabulary for the tokenizer; the host for 'pack')")
        if name in ("make", "all"):
            s.add_argument("--unet", choices=sorted(ARCH), default="small")
            s.add_argument("--frames", type=int, default=3)
            s.add_argument("--size", type=int, default=128)
        if name in ("official", "pack", "all"):
            s.add_argument("--color-fix", choices=("adain", "wavelet"), default="adain")
        if name == "pack":
            s.add_argument("--processing", choices=("official", "float"), default="official")
            s.add_argument("--window", type=int, default=4)
        if name == "all":
            s.add_argument("--official-python", required=True)
            s.add_argument("--pack-python", required=True)
    a = p.parse_args()
    if a.cmd == "official" or a.cmd == "make":
        a.work = os.path.abspath(a.work)
        a.official = os.path.abspath(a.official)
    a.fn(a)


if __name__ == "__main__":
    main()
