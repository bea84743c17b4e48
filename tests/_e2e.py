"""Shared setup of the end-to-end tests: tiny model files, workflow swaps, a running server.

The example workflows name the official model files. For a run on CPU in seconds the tests
swap, in the API prompt converted from each workflow (``tiny_prompt``):

* ``UNETLoader`` -> ``tiny_wan_t2v.safetensors``: a random tiny Wan2.1 T2V (``tinywan.build``),
  auto-detected by the host as Wan2.1;
* ``VAELoader`` -> ``tiny_wan_vae.safetensors``: the host's Wan2.1 VAE class at its real width
  (v0.3.64 fixes it) with random weights, stored in fp16;
* ``LoraLoaderModelOnly`` -> ``tiny_lora.safetensors``: a LoRA file with no matching keys;
* ``CLIPLoader`` + ``CLIPTextEncode`` -> the test-only ``AtelierE2ETextEncode`` (a hash of the
  text, 4096 wide), since the host's UMT5-XXL has a fixed full-size config;
* ``EmptyHunyuanLatentVideo`` -> 64x64, 5 frames; samplers -> at most ``STEPS`` steps;
* FLUX, Qwen-Image and HunyuanVideo (a text loader of type ``flux`` / ``qwen_image`` / ``hunyuan_video``):
  ``UNETLoader`` -> the tiny model of ``tests/_families.py`` (the host detects the family, the stub pack gives it
  its tiny heads and widths, see ``_comfyserver``), ``VAELoader`` -> ``tiny_flux_ae.safetensors`` (the FLUX VAE
  layout at its fixed real width, random, fp16) / the tiny Wan VAE (Qwen-Image's VAE is Wan2.1's) /
  ``tiny_hunyuan_video_vae.safetensors`` (the HunyuanVideo VAE layout, causal 3-D convolutions, at the width the
  host fixes, random, fp16), text -> the stub at the tiny model's widths (with a pooled output for FLUX and
  HunyuanVideo: CLIP-L's, in place of the clip_l + llava_llama3 pair), ``EmptySD3LatentImage`` -> 64x64;
* DLoRAL: ``CheckpointLoaderSimple`` (SD2.1-base) -> ``UNETLoader`` with a small SD2-architecture
  UNet + ``VAELoader`` with a random SD VAE; the text encoder stub at width 1024; synthetic DLoRAL
  weights in the official layout; ``LoadVideo`` -> a 3-frame 16x16 clip; process_size 64;
* restoration: ``Load Scan`` reads a 256x256 16-bit TIFF (600 dpi tag) of the bundled synthetic
  damaged painting; ``Synthetic Damaged Painting`` -> 256x256.
"""
import asyncio
import json
import uuid

import aiohttp

from _comfyserver import ComfyServer, PACK_FOLDER, make_base_dir, cleanup, running_server  # noqa: F401
from _workflows import load_defs, to_api

STEPS = 8
SIZE = 64
FRAMES = 5
TINY_UNET = "tiny_wan_t2v.safetensors"
TINY_VAE = "tiny_wan_vae.safetensors"
TINY_LORA = "tiny_lora.safetensors"


def write_tiny_models(base):
    """Write the tiny model files into BASE/models (needs the host importable for the VAE class)."""
    import torch
    from safetensors.torch import save_file
    from tinywan.build import random_state_dict
    import comfy.ldm.wan.vae as wan_vae

    save_file(random_state_dict("t2v", seed=0), str(base / "models" / "diffusion_models" / TINY_UNET))
    torch.manual_seed(0)
    vae = wan_vae.WanVAE(dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                         temperal_downsample=[False, True, True], dropout=0.0)
    g = torch.Generator().manual_seed(0)
    sd = {}
    for k, v in vae.state_dict().items():   # the host's ops skip weight init: set every tensor here
        if v.dim() >= 2:
            w = torch.randn(v.shape, generator=g) / (v[0].numel() ** 0.5)
        elif k.endswith("gamma"):
            w = torch.ones(v.shape)
        else:
            w = torch.zeros(v.shape)
        sd[k] = w.to(torch.float16).contiguous()
    save_file(sd, str(base / "models" / "vae" / TINY_VAE))
    (base / "models" / "loras").mkdir(parents=True, exist_ok=True)
    save_file({"atelier_dummy": torch.zeros(1)}, str(base / "models" / "loras" / TINY_LORA))


TINY_SD2 = "tiny_sd2_unet.safetensors"
TINY_SD_VAE = "tiny_sd_vae.safetensors"
TINY_DLORAL = "tiny_dloral.safetensors"
TINY_VIDEO = "tiny_clip.mp4"
VIDEO_FRAMES, VIDEO_SIZE = 3, 16
SD2_SMALL = dict(ch=(320, 320), layers=1, attn=(True, False), ctx=1024)


def _filled(sd, seed):
    """Host modules are built without weight init: norms 1, biases small, weights ~ N(0, 1/fan_in)."""
    import torch
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in sd.items():
        if "norm" in k and k.endswith(".weight") and v.dim() == 1:
            out[k] = torch.ones(v.shape)
        elif v.dim() == 1:
            out[k] = torch.randn(v.shape, generator=g) * 0.01
        else:
            out[k] = torch.randn(v.shape, generator=g) / (v[0].numel() ** 0.5)
    return {k: v.contiguous() for k, v in out.items()}


def tiny_sd2_unet_sd(seed=0):
    """State dict of a small SD2-architecture UNet (320 base channels, 2 levels, ~25 M params, context
    1024, linear transformer projections): the host detects it as SD2. Needs the host importable."""
    import torch
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
    torch.manual_seed(seed)
    unet = UNetModel(image_size=32, in_channels=4, out_channels=4, model_channels=320, num_res_blocks=1,
                     channel_mult=(1, 1), num_head_channels=64, transformer_depth=[1, 0],
                     transformer_depth_output=[1, 1, 0, 0], transformer_depth_middle=1, context_dim=1024,
                     use_linear_in_transformer=True, use_spatial_transformer=True, legacy=False,
                     dtype=torch.float32, device="cpu")
    return _filled(unet.state_dict(), seed)


def tiny_sd_vae_sd(seed=1, z_channels=4, quant=True, conv3d=False):
    """State dict of the SD VAE (real architecture) with random weights; ``z_channels=16, quant=False``: the
    FLUX VAE (ae.safetensors) layout; ``z_channels=16, conv3d=True``: the HunyuanVideo VAE layout (the same
    blocks with causal 3-D convolutions, 4x time compression; the host fixes its widths too: 246 M params).
    Needs the host importable."""
    import torch
    from comfy.ldm.modules.diffusionmodules.model import Encoder, Decoder
    dd = {"double_z": True, "z_channels": z_channels, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
          "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}
    if conv3d:
        dd.update(conv3d=True, time_compress=4)
    with torch.device("meta"):   # shapes only: every tensor is filled below
        sd = {("encoder." + k): v for k, v in Encoder(**dd).state_dict().items()}
        sd.update({("decoder." + k): v for k, v in Decoder(**dd).state_dict().items()})
    kernel = (1, 1, 1) if conv3d else (1, 1)
    for name, c in ((("quant_conv", 2 * z_channels), ("post_quant_conv", z_channels)) if quant else ()):
        sd[name + ".weight"], sd[name + ".bias"] = torch.zeros(c, c, *kernel), torch.zeros(c)
    return _filled(sd, seed)


TINY_FLUX = "tiny_flux.safetensors"
TINY_FLUX_VAE = "tiny_flux_ae.safetensors"
TINY_QWEN = "tiny_qwen_image.safetensors"
TINY_HV = "tiny_hunyuan_video.safetensors"
TINY_HV_VAE = "tiny_hunyuan_video_vae.safetensors"
#: text loader type in a workflow -> (tests/_families family, diffusion-model file, VAE file)
TINY_FAMILIES = {"flux": ("flux", TINY_FLUX, TINY_FLUX_VAE), "qwen_image": ("qwen_image", TINY_QWEN, TINY_VAE),
                 "hunyuan_video": ("hunyuan_video", TINY_HV, TINY_HV_VAE)}


def write_tiny_families(base, only=None, vaes=True):
    """The tiny FLUX, Qwen-Image and HunyuanVideo of tests/_families.py as diffusion-model files, the stub pack's
    detection specs for them (``custom_nodes/atelier_e2e_stubs/tiny_models.json``: written before the server
    starts), a random FLUX VAE and a random HunyuanVideo VAE (Qwen-Image uses the Wan VAE of
    ``write_tiny_models``). ``only``: those text-loader types of :data:`TINY_FAMILIES`; ``vaes=False``: no VAE
    (a plan needs the diffusion model's header only). Needs the host importable."""
    import torch
    from safetensors.torch import save_file
    import _families as F
    specs = []
    for family, unet, _ in (TINY_FAMILIES[t] for t in (only or TINY_FAMILIES)):
        sd = F.random_state_dict(family, seed=0)
        save_file(sd, str(base / "models" / "diffusion_models" / unet))
        cfg, keys = F.tree_config(family), F.hardcoded(family)
        marker = "img_in.weight" if "img_in.weight" in sd else "img_in.proj.weight"   # HunyuanVideo: a Conv3d
        specs.append({"image_model": cfg["image_model"], "marker": marker,
                      "shape": list(sd[marker].shape), "unet_config": {k: cfg[k] for k in keys if k in cfg},
                      "drop": [k for k in keys if k not in cfg]})
    (base / "custom_nodes" / "atelier_e2e_stubs" / "tiny_models.json").write_text(json.dumps(specs))
    for name, seed, kw in ((TINY_FLUX_VAE, 4, {"quant": False}), (TINY_HV_VAE, 5, {"conv3d": True})) if vaes else ():
        vae = {k: v.to(torch.float16) for k, v in tiny_sd_vae_sd(seed, z_channels=16, **kw).items()}
        save_file(vae, str(base / "models" / "vae" / name))


def write_tiny_sd2_checkpoint(path, seed=0):
    """A single-file SD2 checkpoint the host loads with ``load_checkpoint_guess_config`` (detected as SD2,
    eps): the small SD2 UNet, the random SD VAE and the host's SD2 (OpenCLIP-H) text encoder at its real,
    fixed size (354 M params, stored fp16, ~0.7 GB; weights ~ N(0, 0.02²), LayerNorms 1/0) in the
    checkpoint's own key layout (the host's conversion for saving). Needs the host importable."""
    import torch
    from safetensors.torch import save_file
    import comfy.supported_models
    from comfy.text_encoders import sd2_clip
    shapes = sd2_clip.SD2ClipModel(device="meta", dtype=torch.float16).state_dict()
    g = torch.Generator().manual_seed(seed + 3)
    te = {}
    for k, v in shapes.items():
        if v.dim() >= 2:
            te[k] = (torch.randn(v.shape, generator=g) * 0.02).half()
        elif k.endswith("weight") and ("norm" in k or "ln" in k):
            te[k] = torch.ones(v.shape, dtype=torch.float16)
        else:
            te[k] = torch.zeros(v.shape, dtype=torch.float16)
    sd = comfy.supported_models.SD20({"in_channels": 4}).process_clip_state_dict_for_saving(te)
    sd.update({"model.diffusion_model." + k: v for k, v in tiny_sd2_unet_sd(seed).items()})
    sd.update({"first_stage_model." + k: v for k, v in tiny_sd_vae_sd(seed + 1).items()})
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))


def write_tiny_dloral(base):
    """A small SD2-architecture UNet (320 base channels, 2 levels, ~25 M params: the host detects SD2),
    the SD VAE with random weights, synthetic DLoRAL weights in the official layout for that UNet,
    and a 3-frame 16x16 clip with a stereo tone in BASE/input. Needs the host importable."""
    import numpy as np
    import av
    from safetensors.torch import save_file
    from _dloral_synth import make_official, unet_shapes, with_base
    from dloral import convert_official
    from dloral.checkpoint import save_weights

    save_file(tiny_sd2_unet_sd(0), str(base / "models" / "diffusion_models" / TINY_SD2))
    save_file(tiny_sd_vae_sd(1), str(base / "models" / "vae" / TINY_SD_VAE))
    # made for that UNet: its base tensors pass the base-model check
    ck = with_base(make_official(unet_shapes(**SD2_SMALL), rank_q=4, rank_c=4, seed=2, std=0.02)[0],
                   tiny_sd2_unet_sd(0))
    (base / "models" / "dloral").mkdir(parents=True, exist_ok=True)
    save_weights(convert_official(ck), str(base / "models" / "dloral" / TINY_DLORAL))
    with av.open(str(base / "input" / TINY_VIDEO), "w") as out:
        st = out.add_stream("mpeg4", rate=8)
        st.width = st.height = VIDEO_SIZE
        st.pix_fmt = "yuv420p"
        au = out.add_stream("aac", rate=48000, layout="stereo")
        g = np.random.default_rng(0)
        for _ in range(VIDEO_FRAMES):
            img = (g.random((VIDEO_SIZE, VIDEO_SIZE, 3)) * 255).astype(np.uint8)
            for pkt in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)
        # with sound (a 440 Hz stereo tone as long as the clip): the workflow must save it too
        t = np.arange(48000 * VIDEO_FRAMES // 8) / 48000
        s = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        fr = av.AudioFrame.from_ndarray(np.stack([s, s]), format="fltp", layout="stereo")
        fr.sample_rate, fr.pts = 48000, 0
        for pkt in [*au.encode(fr), *au.encode()]:
            out.mux(pkt)


SCAN_NAME, SCAN_PX = "scan.tif", 256


def write_tiny_scan(base):
    """A 256x256 16-bit TIFF with 600 dpi in its tags: the bundled synthetic damaged painting."""
    import numpy as np
    import tifffile
    from restoration.synth import SynthConfig, make_sample
    damaged, _, _, _ = make_sample(SynthConfig(height=SCAN_PX, width=SCAN_PX), seed=3)
    img = np.round(np.clip(damaged, 0, 1) * 65535).astype(np.uint16)
    tifffile.imwrite(str(base / "input" / SCAN_NAME), img, photometric="rgb",
                     resolution=(600, 600), resolutionunit="INCH")


def tiny_prompt(wf, defs, steps=STEPS):
    """API prompt of a UI workflow with the official model files swapped for the tiny ones."""
    api = to_api(wf, defs)
    width = 1024 if any(v["class_type"] == "CheckpointLoaderSimple" for v in api.values()) else 4096
    tiny = next((TINY_FAMILIES[v["inputs"].get("type")] for v in api.values()
                 if v["class_type"] in ("CLIPLoader", "DualCLIPLoader") and v["inputs"].get("type") in TINY_FAMILIES),
                None)
    for nid, node in list(api.items()):
        t, inp = node["class_type"], node["inputs"]
        if t == "UNETLoader":
            inp.update(unet_name=tiny[1] if tiny else TINY_UNET, weight_dtype="default")
        elif t == "VAELoader":
            inp["vae_name"] = tiny[2] if tiny else TINY_VAE
        elif t == "CLIPTextEncode" and tiny:   # the tiny family's text (and pooled) widths
            from _families import FAMILIES
            f = FAMILIES[tiny[0]]
            api[nid] = {"class_type": "AtelierE2ETextEncode",
                        "inputs": {"text": inp["text"], "width": f.text_dim, "tokens": 8,
                                   "pooled": f.pooled_dim or 0}}
        elif t == "DualCLIPLoader":
            del api[nid]
        elif t == "EmptySD3LatentImage":
            inp.update(width=SIZE, height=SIZE)
        elif t == "LoraLoaderModelOnly":
            inp["lora_name"] = TINY_LORA
        elif t == "CLIPTextEncode":
            api[nid] = {"class_type": "AtelierE2ETextEncode",
                        "inputs": {"text": inp["text"], "width": width, "tokens": 8}}
        elif t == "CLIPLoader":
            del api[nid]
        elif t == "EmptyHunyuanLatentVideo":
            inp.update(width=SIZE, height=SIZE, length=FRAMES)
        elif t in ("KSampler", "AtelierMagCacheCalibrate"):
            inp["steps"] = min(inp["steps"], steps)
        elif t == "AtelierMagCacheWan":
            inp["preview_steps"] = steps
        elif t == "AtelierDLoRALLoader":
            inp["weights_name"] = TINY_DLORAL
        elif t == "LoadVideo":
            inp["file"] = TINY_VIDEO
        elif t == "AtelierSyntheticDamage":
            inp.update(width=SCAN_PX, height=SCAN_PX)
        elif t == "AtelierRestorationLoadScan":
            inp["path"] = SCAN_NAME
        elif t in ("AtelierDLoRALUpscale", "AtelierDLoRALUpscaleVideo"):
            # the smallest tiles the settings allow (the 8x8 latent of a 16 px frame fits in one; tiling
            # through the host is tested in test_dloral_host / test_dloral_cli_host)
            inp.update(process_size=64, tile_size=64, tile_overlap=32, vae_tile=8, window=2)
    for nid, node in list(api.items()):
        if node["class_type"] == "CheckpointLoaderSimple":   # SD2.1 (DLoRAL): split into UNet + VAE
            api[nid] = {"class_type": "UNETLoader", "inputs": {"unet_name": TINY_SD2, "weight_dtype": "default"}}
            vae_id = nid + "000"
            api[vae_id] = {"class_type": "VAELoader", "inputs": {"vae_name": TINY_SD_VAE}}
            for other in api.values():
                for k, v in other["inputs"].items():
                    if v == [nid, 2]:
                        other["inputs"][k] = [vae_id, 0]
    return api


async def _run(url, prompt, timeout):
    client_id = uuid.uuid4().hex
    events = []
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(f"{url}/ws?clientId={client_id}") as ws:
            async with s.post(f"{url}/prompt", json={"prompt": prompt, "client_id": client_id}) as r:
                body = await r.json()
                if r.status != 200:
                    return r.status, body, events, None
            pid = body["prompt_id"]
            loop = asyncio.get_running_loop()
            end = loop.time() + timeout
            while True:
                left = end - loop.time()
                if left <= 0:
                    raise TimeoutError(f"prompt {pid} did not finish in {timeout}s; events {events[-5:]}")
                msg = await ws.receive(timeout=left)
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                ev = json.loads(msg.data)
                events.append(ev)
                d = ev.get("data") or {}
                if ev.get("type") in ("execution_error", "execution_interrupted") and d.get("prompt_id") == pid:
                    break
                if ev.get("type") == "execution_success" and d.get("prompt_id") == pid:
                    break
                if ev.get("type") == "executing" and d.get("node") is None and d.get("prompt_id") == pid:
                    break
            hist = None
            for _ in range(120):   # the history entry is stored just after the last event
                async with s.get(f"{url}/history/{pid}") as r:
                    hist = (await r.json()).get(pid)
                if hist is not None and hist.get("status", {}).get("completed") is not None:
                    break
                await asyncio.sleep(0.25)
            return 200, body, events, hist


def run_prompt(server, prompt, timeout=300):
    """Queue PROMPT over HTTP with a websocket listening; (status, body, events, history entry)."""
    return asyncio.run(_run(server.url, prompt, timeout))


__all__ = ["ComfyServer", "PACK_FOLDER", "make_base_dir", "cleanup", "running_server", "load_defs", "write_tiny_models",
           "write_tiny_dloral", "write_tiny_families", "write_tiny_sd2_checkpoint", "tiny_sd2_unet_sd", "tiny_sd_vae_sd",
           "VIDEO_FRAMES", "VIDEO_SIZE", "write_tiny_scan", "SCAN_PX",
           "tiny_prompt", "run_prompt", "STEPS", "SIZE", "FRAMES"]
