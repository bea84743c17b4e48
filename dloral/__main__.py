"""Command line: ``python -m dloral convert|upscale ...`` (run from the repo root).

convert  model.pkl --out dloral.safetensors [--precision fp16|fp32]
    Open the official checkpoint safely (weights_only) and write the small converted file.

upscale  INPUT --out DIR --weights W --checkpoint SD21 --comfyui COMFYUI_DIR [options]
    INPUT is a folder of frames (sorted by name) or a video file (OpenCV). Frames are read, upscaled
    ×4 and written as DIR/frame_00000.png ... one window at a time, so long videos run in bounded
    memory. The SD2.1-base UNet, VAE and text encoder are loaded from the checkpoint by a ComfyUI
    tree (``--comfyui``): this package never imports the host itself; the CLI loads the pack's
    node module (the one place that talks to the host) from the repo, with that tree on sys.path.
"""
import argparse
import importlib.util
import os
import pathlib
import sys
import time

import numpy as np
import torch

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
QUALITY_PROMPT = "high quality, detailed, clean, natural, sharp"


def _frames(path):
    """Yield (3, H, W) float frames in [0, 1] from a folder of images or a video file."""
    import cv2
    p = pathlib.Path(path)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTS)
        if not files:
            raise ValueError(f"INPUT folder {path!r} has no image files ({', '.join(IMAGE_EXTS)})")
        for f in files:
            img = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if img is None:
                raise ValueError(f"cannot read frame {f}")
            yield torch.from_numpy(img[..., ::-1].copy()).permute(2, 0, 1).float() / 255
        return
    if not p.is_file():
        raise ValueError(f"INPUT {path!r} is neither a folder of frames nor a video file")
    cap = cv2.VideoCapture(str(p))
    if not cap.isOpened():
        raise ValueError(f"OpenCV cannot open video {path!r}")
    try:
        while True:
            ok, img = cap.read()
            if not ok:
                break
            yield torch.from_numpy(img[..., ::-1].copy()).permute(2, 0, 1).float() / 255
    finally:
        cap.release()


def _save(frame, path):
    import cv2
    arr = (frame.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    cv2.imwrite(str(path), arr[..., ::-1])


def _load_pack(comfyui):
    """The pack imported as a package with a ComfyUI tree on sys.path (as ComfyUI itself does)."""
    comfyui = os.path.abspath(comfyui)
    if not os.path.isfile(os.path.join(comfyui, "comfy", "model_patcher.py")):
        raise ValueError(f"--comfyui {comfyui!r} is not a ComfyUI tree (no comfy/model_patcher.py)")
    sys.path.insert(0, comfyui)
    from comfy.cli_args import args as host_args  # the host reads its flags at import time
    if not torch.cuda.is_available():
        host_args.cpu = True
    repo = pathlib.Path(__file__).resolve().parents[1]
    name = "atelier_pack_cli"
    spec = importlib.util.spec_from_file_location(name, repo / "__init__.py", submodule_search_locations=[str(repo)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def cmd_convert(a):
    from .checkpoint import convert_file
    t = time.time()
    w = convert_file(a.pkl, a.out, dtype=torch.float16 if a.precision == "fp16" else torch.float32)
    print(f"wrote {a.out}: {len(w.modules())} LoRA modules + conv_in + CFR "
          f"({os.path.getsize(a.out) / 2**20:.1f} MiB) in {time.time() - t:.1f} s")


def cmd_upscale(a):
    from .checkpoint import load_weights
    from .pipeline import DLoRALConfig, upscale_video
    pack = _load_pack(a.comfyui)
    import comfy.sd
    nodes = pack.nodes.dloral_nodes
    model, clip, vae = comfy.sd.load_checkpoint_guess_config(a.checkpoint, output_vae=True, output_clip=True)[:3]
    if clip is None or vae is None:
        raise ValueError(f"--checkpoint {a.checkpoint!r} has no text encoder or VAE; use a full SD2.1-base checkpoint")
    tokens = clip.tokenize(a.prompt)
    cond, pooled = clip.encode_from_tokens(tokens, return_pooled=True)
    positive = [[cond, {"pooled_output": pooled}]]
    models = nodes.host_models(model, vae, positive, load_weights(a.weights), a.sample_posterior)
    cfg = DLoRALConfig(tile=a.tile // 8, overlap=a.overlap // 8, color_fix=a.color_fix, window=a.window,
                       seed=a.seed, sample_posterior=a.sample_posterior, process_size=a.process_size,
                       vae_tile=a.vae_tile)
    os.makedirs(a.out, exist_ok=True)
    t0, n = time.time(), 0
    with torch.inference_mode():
        for i, f in enumerate(upscale_video(_frames(a.input), models, cfg)):
            _save(f, pathlib.Path(a.out) / f"frame_{i:05d}.png")
            n += 1
            print(f"\rframe {i + 1} ({(time.time() - t0) / n:.2f} s/frame)", end="", flush=True)
    print(f"\nwrote {n} frames to {a.out}")


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m dloral", description="DLoRAL one-step video super-resolution ×4")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("convert", help="convert the official model.pkl to a small safetensors file")
    c.add_argument("pkl")
    c.add_argument("--out", required=True)
    c.add_argument("--precision", choices=("fp16", "fp32"), default="fp16")
    c.set_defaults(fn=cmd_convert)
    u = sub.add_parser("upscale", help="upscale a folder of frames or a video file ×4")
    u.add_argument("input")
    u.add_argument("--out", required=True, help="output folder for frame_00000.png ...")
    u.add_argument("--weights", required=True, help="converted .safetensors or the official model.pkl")
    u.add_argument("--checkpoint", required=True, help="SD2.1-base checkpoint (UNet + VAE + text encoder)")
    u.add_argument("--comfyui", default=os.environ.get("COMFYUI_DIR"), help="ComfyUI tree (default $COMFYUI_DIR)")
    u.add_argument("--prompt", default=QUALITY_PROMPT)
    u.add_argument("--tile", type=int, default=768, help="latent tile in output pixels (0: never tile)")
    u.add_argument("--overlap", type=int, default=256)
    u.add_argument("--color-fix", choices=("adain", "wavelet", "none"), default="adain")
    u.add_argument("--window", type=int, default=4)
    u.add_argument("--seed", type=int, default=0)
    u.add_argument("--sample-posterior", action="store_true")
    u.add_argument("--process-size", type=int, default=512)
    u.add_argument("--vae-tile", type=int, default=0, help="VAE decode tile in latent px (0: host decides)")
    u.set_defaults(fn=cmd_upscale)
    a = p.parse_args(argv)
    if a.cmd == "upscale" and not a.comfyui:
        p.error("upscale needs --comfyui (or $COMFYUI_DIR): the SD2.1 models are loaded by ComfyUI")
    try:
        a.fn(a)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
