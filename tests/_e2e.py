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
* ``EmptyHunyuanLatentVideo`` -> 64x64, 5 frames; samplers -> at most ``STEPS`` steps.
"""
import asyncio
import json
import uuid

import aiohttp

from _comfyserver import ComfyServer, PACK_FOLDER, make_base_dir, cleanup  # noqa: F401
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


def tiny_prompt(wf, defs, steps=STEPS):
    """API prompt of a UI workflow with the official model files swapped for the tiny ones."""
    api = to_api(wf, defs)
    for nid, node in list(api.items()):
        t, inp = node["class_type"], node["inputs"]
        if t == "UNETLoader":
            inp.update(unet_name=TINY_UNET, weight_dtype="default")
        elif t == "VAELoader":
            inp["vae_name"] = TINY_VAE
        elif t == "LoraLoaderModelOnly":
            inp["lora_name"] = TINY_LORA
        elif t == "CLIPTextEncode":
            api[nid] = {"class_type": "AtelierE2ETextEncode",
                        "inputs": {"text": inp["text"], "width": 4096, "tokens": 8}}
        elif t == "CLIPLoader":
            del api[nid]
        elif t == "EmptyHunyuanLatentVideo":
            inp.update(width=SIZE, height=SIZE, length=FRAMES)
        elif t in ("KSampler", "AtelierMagCacheCalibrate"):
            inp["steps"] = min(inp["steps"], steps)
        elif t == "AtelierMagCacheWan":
            inp["preview_steps"] = steps
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


__all__ = ["ComfyServer", "PACK_FOLDER", "make_base_dir", "cleanup", "load_defs", "write_tiny_models",
           "tiny_prompt", "run_prompt", "STEPS", "SIZE", "FRAMES"]
