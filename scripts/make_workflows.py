"""Generate example_workflows/*.json (ComfyUI UI format) and their thumbnails from the node snapshot.

    .venv/bin/python scripts/make_workflows.py          # writes every workflow whose nodes exist

Each template is written as ``<title>.json`` plus ``<title>.jpg`` (``TEMPLATE_TITLES`` in
tests/_workflows.py): ComfyUI's frontends (1.27 and 1.35) list a custom node's templates by file
name and load the thumbnail ``<name>.jpg`` from the same folder. The thumbnail is a drawing of the
graph (Atelier nodes highlighted). Each workflow opens (``extra.ds``) with its first row of nodes
below the top bars; nodes, notes included, do not overlap (sizes at least what the frontends give
the nodes; tests/host/test_e2e_browser.py checks that in both frontends).

Reads ``tests/data/node_defs.json`` (``scripts/dump_node_defs.py``), so widget order, defaults
and link types always follow the real node definitions. A workflow whose nodes are not in the
snapshot yet is skipped and named. ``tests/core/test_workflows.py`` checks the result.
Model file names are those of the official releases (Comfy-Org repackaged files on Hugging Face).
"""
import dataclasses
import json
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from _workflows import Builder, TEMPLATE_TITLES, load_defs, node_rect, template_path  # noqa: E402

OUT = REPO / "example_workflows"

WAN_T2V = "wan2.1_t2v_1.3B_fp16.safetensors"
UMT5 = "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
WAN_VAE = "wan_2.1_vae.safetensors"
CAUSVID = "Wan21_CausVid_bidirect2_T2V_1_3B_lora_rank32.safetensors"
SD21 = "v2-1_512-ema-pruned.safetensors"
POS = "a red fox running through fresh snow, golden hour, cinematic, detailed fur"
NEG = ("blurry, low quality, static, overexposed, worst quality, jpeg artifacts, deformed, "
       "extra limbs, watermark, text")

WAN_FILES = f"""Model files (Wan2.1, Comfy-Org repackaged release, huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged):
- {WAN_T2V} -> ComfyUI/models/diffusion_models/
- {UMT5} -> ComfyUI/models/text_encoders/
- {WAN_VAE} -> ComfyUI/models/vae/
14B: use wan2.1_t2v_14B_fp16.safetensors (or _fp8_e4m3fn) and MagCache thresh 0.24."""


def wan_base(b, x0=0, with_neg=True, shift=8.0):
    """Loaders + prompts + latent for Wan2.1 T2V. Returns dict of node ids."""
    ids = {}
    ids["unet"] = b.node("UNETLoader", (x0, 0), {"unet_name": WAN_T2V}, size=[340, 90])
    ids["clip"] = b.node("CLIPLoader", (x0, 140), {"clip_name": UMT5, "type": "wan"}, size=[340, 110])
    ids["vae"] = b.node("VAELoader", (x0, 300), {"vae_name": WAN_VAE}, size=[340, 60])
    ids["shift"] = b.node("ModelSamplingSD3", (x0 + 380, 0), {"shift": shift}, size=[300, 60])
    b.link(ids["unet"], 0, ids["shift"], "model")
    ids["pos"] = b.node("CLIPTextEncode", (x0 + 380, 120), {"text": POS}, title="Positive prompt",
                        size=[380, 140])
    b.link(ids["clip"], 0, ids["pos"], "clip")
    if with_neg:
        ids["neg"] = b.node("CLIPTextEncode", (x0 + 380, 330), {"text": NEG}, title="Negative prompt",
                            size=[380, 140])
        b.link(ids["clip"], 0, ids["neg"], "clip")
    ids["latent"] = b.node("EmptyHunyuanLatentVideo", (x0 + 380, 540),
                           {"width": 832, "height": 480, "length": 33, "batch_size": 1}, size=[300, 130])
    return ids


def sampler(b, pos, model, ids, steps, cfg, seed=42, neg_node=None, title=None):
    k = b.node("KSampler", pos, {"seed": seed, "steps": steps, "cfg": cfg, "sampler_name": "uni_pc",
                                 "scheduler": "simple", "denoise": 1.0}, title=title, size=[320, 270])
    b.link(model, 0, k, "model")
    b.link(ids["pos"], 0, k, "positive")
    b.link(neg_node or ids["neg"], 0, k, "negative")
    b.link(ids["latent"], 0, k, "latent_image")
    return k


def decode_save(b, pos, samples, vae, prefix, fps=16.0):
    d = b.node("VAEDecode", pos, size=[220, 50])
    b.link(samples, 0, d, "samples")
    b.link(vae, 0, d, "vae")
    s = b.node("SaveAnimatedWEBP", (pos[0] + 260, pos[1]), {"filename_prefix": prefix, "fps": fps,
                                                          "lossless": False, "quality": 85},
               size=[420, 420])
    b.link(d, 0, s, "images")
    return d, s


def magcache_node(b, pos, steps, thresh=0.12, k=2):
    return b.node("AtelierMagCacheWan", pos, {"preset": "auto", "thresh": thresh, "k": k, "retention": 0.2,
                                              "preview_steps": steps}, size=[360, 400])


def wf_magcache_t2v(defs):
    b = Builder(defs)
    ids = wan_base(b)
    mc = magcache_node(b, (800, 0), 30)
    b.link(ids["shift"], 0, mc, "model")
    k = sampler(b, (1200, 0), mc, ids, steps=30, cfg=6.0)
    decode_save(b, (1560, 0), k, ids["vae"], "atelier/magcache_t2v")
    b.node("Note", (0, 740), {"text": (
        "Atelier MagCache on Wan2.1 T2V 1.3B\n\nMagCache reuses the cached residual of the whole "
        "transformer block stack on steps where the calibrated magnitude-ratio curve says little changes "
        "(cond and uncond decided separately). Before queueing, the node shows its plan for preview_steps "
        "(set it to the sampler's steps): the strip on the node marks skipped steps. After the run the strip "
        "shows what really ran and the time saved.\n\nOfficial settings: thresh 0.12, K 2, retention 0.2 "
        "(1.3B); thresh 0.24 for 14B. Conservative: thresh 0.02, K 6, start_step 5.\n\n" + WAN_FILES)},
        size=[740, 360])
    return b


def wf_magcache_compare(defs):
    b = Builder(defs)
    ids = wan_base(b)
    k_full = sampler(b, (800, -400), ids["shift"], ids, steps=30, cfg=6.0, title="KSampler (full)")
    mc = magcache_node(b, (800, 0), 30)
    b.link(ids["shift"], 0, mc, "model")
    k_mc = sampler(b, (1200, 0), mc, ids, steps=30, cfg=6.0, title="KSampler (MagCache)")
    d_full = b.node("VAEDecode", (1200, -400), size=[220, 50])
    b.link(k_full, 0, d_full, "samples")
    b.link(ids["vae"], 0, d_full, "vae")
    d_mc = b.node("VAEDecode", (1560, 0), size=[220, 50])
    b.link(k_mc, 0, d_mc, "samples")
    b.link(ids["vae"], 0, d_mc, "vae")
    cmp_ = b.node("AtelierMagCacheCompare", (1560, 120), {"gain": 4.0}, size=[320, 130])
    b.link(d_full, 0, cmp_, "reference")
    b.link(d_mc, 0, cmp_, "test")
    s = b.node("SaveAnimatedWEBP", (1920, 0), {"filename_prefix": "atelier/magcache_difference", "fps": 16.0,
                                               "lossless": False, "quality": 85}, size=[420, 420])
    b.link(cmp_, "difference", s, "images")
    s2 = b.node("SaveAnimatedWEBP", (1560, -400), {"filename_prefix": "atelier/magcache_full", "fps": 16.0,
                                                   "lossless": False, "quality": 85}, size=[340, 300])
    b.link(d_full, 0, s2, "images")
    if "PreviewAny" in defs:
        p = b.node("PreviewAny", (1920, 480), size=[420, 300], title="PSNR / SSIM per frame")
        b.link(cmp_, "table", p, "source")
    b.node("Note", (0, 740), {"text": (
        "Full run against MagCache run, same seed: per-frame PSNR/SSIM and an amplified difference video. "
        "Use it once to tune thresh and K before long renders: PSNR above ~30 dB is hard to tell apart.\n\n"
        + WAN_FILES)}, size=[740, 260])
    return b


def wf_magcache_calibrate(defs):
    b = Builder(defs)
    ids = wan_base(b)
    cal = b.node("AtelierMagCacheCalibrate", (800, 0), {"seed": 42, "steps": 30, "cfg": 6.0,
                                                        "sampler_name": "uni_pc", "scheduler": "simple",
                                                        "name": "my_wan_model"}, size=[360, 330])
    b.link(ids["shift"], 0, cal, "model")
    b.link(ids["pos"], 0, cal, "positive")
    b.link(ids["neg"], 0, cal, "negative")
    b.link(ids["latent"], 0, cal, "latent_image")
    decode_save(b, (1200, -360), cal, ids["vae"], "atelier/calibration_run")
    mc = magcache_node(b, (1200, 160), 30)
    b.link(ids["shift"], 0, mc, "model")
    b.link(cal, "curve_json", mc, "custom_curve")
    k = sampler(b, (1600, 160), mc, ids, steps=30, cfg=6.0, title="KSampler (with the new curve)")
    decode_save(b, (1960, 160), k, ids["vae"], "atelier/magcache_custom_curve")
    b.node("Note", (0, 740), {"text": (
        "MagCache calibration for a model without a shipped curve (a fine-tune, a merge, a new size).\n\n"
        "Atelier MagCache Calibrate samples once without caching and records, per call and branch, the "
        "mean per-token magnitude ratio of the block-stack residual. The curve is saved as "
        "output/atelier_magcache/<name>_NNNNN.json and fed to MagCache's custom_curve; the second sampler uses "
        "it right away. Later, paste the saved JSON into a string node and connect it to custom_curve.\n\n"
        + WAN_FILES)}, size=[740, 300])
    return b


def nag_node(b, pos):
    return b.node("AtelierNAGWan", pos, {"scale": 11.0, "tau": 2.5, "alpha": 0.25}, size=[340, 200])


def wf_nag_fewstep(defs):
    b = Builder(defs)
    ids = wan_base(b, with_neg=True)
    lora = b.node("LoraLoaderModelOnly", (380, -140), {"lora_name": CAUSVID, "strength_model": 1.0},
                  size=[380, 90])
    b.link(ids["shift"], 0, lora, "model")
    nagneg = b.node("CLIPTextEncode", (800, 280), {"text": "red, blurry, static"},
                    title="NAG negative prompt", size=[360, 120])
    b.link(ids["clip"], 0, nagneg, "clip")
    nag = nag_node(b, (800, 0))
    b.link(lora, 0, nag, "model")
    b.link(nagneg, 0, nag, "nag_negative")
    k = sampler(b, (1200, 0), nag, ids, steps=6, cfg=1.0, title="KSampler (cfg 1)")
    decode_save(b, (1560, 0), k, ids["vae"], "atelier/nag_fewstep")
    b.node("Note", (0, 740), {"text": (
        "NAG (Normalized Attention Guidance) at cfg 1 with a few-step distilled LoRA (CausVid).\n\n"
        "At cfg 1 ComfyUI skips the negative branch, so the ordinary negative prompt does nothing. "
        "Atelier NAG applies the 'NAG negative prompt' inside cross-attention of the single forward pass "
        "(about +10% per step instead of 2x for CFG); the sampler's own negative prompt node is ignored at cfg 1. Defaults for Wan at cfg 1: scale 11, tau 2.5, "
        "alpha 0.25.\n\n"
        "What to expect: the positive asks for a red fox and the NAG negative names 'red' (the 'red bird turned "
        "blue at cfg 1' case). Run once with the NAG node bypassed (Ctrl+B), then with it, same seed: the "
        "fox's red fur should lose its red (another fur colour) while the pose, the snow and the motion stay; "
        "'blurry, static' push towards sharper frames and more motion. If the red stays, the prompt "
        "outweighs the negative: raise tau to 3.5 and alpha to 0.5 (with sigma_end 0.75: the official NAG "
        "few-step workflow, ChenDarYen/ComfyUI-NAG NAG-Wan-Fast). On the pack's tiny Wan, with the colour named in "
        "the prompt, the negative removes at least half of that colour in about half the seeds at 11/3.5/0.5 "
        "(a quarter of it in 3 of 4) and in about 1 of 4 at 11/2.5/0.25, while an absent colour, a shape "
        "or a motion word almost never does (README, NAG: shown effect).\n\n" + WAN_FILES +
        f"\n- {CAUSVID} -> ComfyUI/models/loras/ (Kijai/WanVideo_comfy on Hugging Face: Kijai's LoRA "
        "extraction of CausVid, tianweiy/CausVid; 4-8 steps, cfg 1)")},
        size=[740, 520])
    return b


def wf_nag_magcache(defs):
    b = Builder(defs)
    ids = wan_base(b)
    nagneg = b.node("CLIPTextEncode", (800, 300), {"text": "blurry, static, washed out"},
                    title="NAG negative prompt", size=[360, 120])
    b.link(ids["clip"], 0, nagneg, "clip")
    nag = nag_node(b, (800, 0))
    b.link(ids["shift"], 0, nag, "model")
    b.link(nagneg, 0, nag, "nag_negative")
    mc = magcache_node(b, (1200, 0), 30)
    b.link(nag, 0, mc, "model")
    k = sampler(b, (1600, 0), mc, ids, steps=30, cfg=5.0)
    decode_save(b, (1960, 0), k, ids["vae"], "atelier/nag_magcache")
    b.node("Note", (0, 740), {"text": (
        "NAG + MagCache together, 30 steps at cfg 5. The two nodes compose in either order: a skipped call "
        "reuses a residual that was computed with guidance; the CFG negative rows are computed plainly.\n\n"
        + WAN_FILES)}, size=[740, 260])
    return b


def wf_dloral(defs):
    b = Builder(defs)
    ck = b.node("CheckpointLoaderSimple", (0, 0), {"ckpt_name": SD21}, size=[340, 100])
    te = b.node("CLIPTextEncode", (380, 0), {"text": (
        "clean, high-resolution, 8k, ultra-detailed, ultra-realistic, sharp focus")},
        title="Quality prompt", size=[360, 120])
    b.link(ck, 1, te, "clip")
    dl = b.node("AtelierDLoRALLoader", (0, 160), {"weights_name": "dloral.safetensors"}, size=[340, 60])
    lv = b.node("LoadVideo", (0, 280), {"file": "input.mp4"}, size=[340, 380])
    up = b.node("AtelierDLoRALUpscaleVideo", (780, 0), size=[360, 360])
    b.link(ck, 0, up, "model")
    b.link(ck, 2, up, "vae")
    b.link(te, 0, up, "positive")
    b.link(dl, 0, up, "dloral")
    b.link(lv, 0, up, "video")
    sv = b.node("SaveVideo", (1180, 0), {"filename_prefix": "video/atelier_dloral"}, size=[420, 420])
    b.link(up, 0, sv, "video")
    b.node("Note", (0, 720), {"text": (
        "DLoRAL one-step video super-resolution (x4): every frame in, every frame out (frame 0 included), "
        "deterministic for a seed, long clips processed in windows at flat memory. The clip's frame rate and "
        "sound go through to Save Video untouched.\n\nFiles:\n"
        f"- {SD21} (Stable Diffusion 2.1-base, stabilityai/stable-diffusion-2-1-base) -> "
        "ComfyUI/models/checkpoints/\n"
        "- DLoRAL weights: the official model.pkl (yjsunnn/DLoRAL) -> ComfyUI/models/dloral/, then "
        "convert once with 'Atelier DLoRAL Convert' (or `python -m dloral convert`) to dloral.safetensors.\n"
        "- Your clip -> ComfyUI/input/ (pick it in Load Video).\n\nOn CPU use a short, small clip; tile_size "
        "bounds memory on large frames.")}, size=[740, 300])
    return b


RESTO_NOTE = (
    "Film-mask restoration: damage map -> regions in mm -> fill -> QA -> white + colour print layers at 1:1 "
    "with fiducials -> print files (16-bit TIFF + PDF) -> archival record (manifest.json + HTML).\n\n"
    "Each node shows its previews (damage classes over the scan, region labels, layers). Paint false "
    "detections out with a MASK into Damage Map Edit's remove_mask (right-click a Load Image -> Open in "
    "MaskEditor).\n\nFiles: print layers under ComfyUI/output/atelier_restoration/print/, the record under "
    "ComfyUI/output/atelier_restoration/record/.")


def resto_chain(b, image, ctx, x0=420):
    """The stages from damage detection to the record; ``image``/``ctx`` are (node, output) pairs."""
    det = b.node("AtelierDamageDetect", (x0, 0), size=[340, 420])
    b.wire(det, image=image, ctx=ctx)
    edit = b.node("AtelierDamageMapEdit", (x0 + 400, 0), size=[320, 260])
    b.wire(edit, damage_map=(det, "damage_map"), image=image)
    table = b.node("AtelierRegionTable", (x0 + 800, 0), size=[340, 260])
    b.wire(table, image=image, damage_map=(edit, "damage_map"), ctx=ctx)
    fill = b.node("AtelierRestorationFill", (x0 + 1200, 0), size=[320, 260])
    b.wire(fill, image=image, mask=(table, "fill_mask"), regions=(table, "regions"))
    qa = b.node("AtelierFillQA", (x0 + 1600, 0), size=[320, 260])
    b.wire(qa, original=image, filled=(fill, "filled"), regions=(fill, "regions"))
    save = b.node("SaveImage", (x0 + 1200, 760), {"filename_prefix": "atelier_restoration/filled"},
                  size=[320, 360])
    b.wire(save, images=(fill, "filled"))
    bil = b.node("AtelierBilayerSeparate", (x0, 760), size=[340, 300])
    b.wire(bil, filled=(fill, "filled"), original=image, mask=(fill, "used_mask"), ctx=ctx)
    lay = b.node("AtelierPrintLayout", (x0 + 400, 760), size=[320, 260])
    b.wire(lay, layers=(bil, "layers"), ctx=ctx)
    exp = b.node("AtelierPrintExport", (x0 + 800, 760), size=[340, 120])
    b.wire(exp, layers=(lay, "layers"), ctx=ctx)
    rec = b.node("AtelierRestorationRecord", (x0 + 1600, 760), size=[340, 260])
    b.wire(rec, original=image, filled=(fill, "filled"), used_mask=(fill, "used_mask"), regions=(qa, "regions"),
           layers=(lay, "layers"), ctx=ctx, damage_map=(edit, "damage_map"))
    if "PreviewAny" in b.defs:
        p = b.node("PreviewAny", (x0 + 800, 960), size=[340, 200], title="Regions summary")
        b.link(table, "summary", p, "source")
    return dict(det=det, edit=edit, table=table, fill=fill, qa=qa, bil=bil, lay=lay, exp=exp, rec=rec)


def wf_restoration_scan(defs):
    b = Builder(defs)
    scan = b.node("AtelierRestorationLoadScan", (0, 0), {"path": "scan.tif", "dpi": 0.0}, size=[360, 110])
    resto_chain(b, (scan, "image"), (scan, "ctx"))
    b.node("Note", (0, 200), {"text": (
        RESTO_NOTE + "\n\nYour scan: put the PNG or 8/16-bit TIFF in ComfyUI/input/ and type its name in "
        "Load Scan; dpi 0 reads the resolution from the file (set it when the file has none).")},
        size=[380, 420])
    return b


def wf_restoration_sample(defs):
    b = Builder(defs)
    syn = b.node("AtelierSyntheticDamage", (0, 0), {"width": 768, "height": 512}, size=[360, 300])
    resto_chain(b, (syn, "damaged"), (syn, "ctx"))
    b.node("Note", (0, 380), {"text": (
        "Bundled sample, no files needed: a procedurally generated painting with synthetic damage of every "
        "class (its ground truth is on the generator's outputs).\n\n" + RESTO_NOTE)}, size=[380, 420])
    return b


# ------------------------------------------------------------------ the other families (MagCache and NAG)
# One table of families and one builder: a workflow names its family, its middle (MagCache and/or NAG nodes)
# and its sampler settings; loaders, prompts, latent, sampler and output come from the family's record.

MC_NOTE = ("Atelier MagCache serves every family it knows from one node: preset 'auto' reads the family from the "
           "loaded model and runs its official rule and curve. target_speedup > 0 picks thresh and K for the "
           "sampler's real step count (the preview shows the choice, the ideal speedup and the error). ")


@dataclasses.dataclass(frozen=True)
class Family:
    """What a family's graph needs around the Atelier nodes (official Comfy-Org file names)."""
    unet: str
    clip: tuple  # (loader node, its widget values)
    vae: str
    latent: tuple  # (latent node, its widget values)
    files: str  # Note text: where each model file goes
    shift: tuple | None = None  # (model-sampling node, shift)
    guidance: float | None = None  # FluxGuidance on the positive (guidance-distilled families)
    fps: float | None = None  # video families save an animated WEBP at this rate


FAMILIES = {
    "flux": Family(
        unet="flux1-dev.safetensors",
        clip=("DualCLIPLoader", {"clip_name1": "clip_l.safetensors", "clip_name2": "t5xxl_fp16.safetensors",
                                 "type": "flux"}),
        vae="ae.safetensors", guidance=3.5,
        latent=("EmptySD3LatentImage", {"width": 1024, "height": 1024, "batch_size": 1}),
        files="""Model files (FLUX.1-dev, black-forest-labs/FLUX.1-dev; text encoders comfyanonymous/flux_text_encoders):
- flux1-dev.safetensors -> ComfyUI/models/diffusion_models/
- clip_l.safetensors, t5xxl_fp16.safetensors (or t5xxl_fp8_e4m3fn.safetensors) -> ComfyUI/models/text_encoders/
- ae.safetensors -> ComfyUI/models/vae/"""),
    "qwen_image": Family(
        unet="qwen_image_fp8_e4m3fn.safetensors",
        clip=("CLIPLoader", {"clip_name": "qwen_2.5_vl_7b_fp8_scaled.safetensors", "type": "qwen_image"}),
        vae="qwen_image_vae.safetensors", shift=("ModelSamplingAuraFlow", 3.1),
        latent=("EmptySD3LatentImage", {"width": 1328, "height": 1328, "batch_size": 1}),
        files="""Model files (Qwen-Image, Comfy-Org/Qwen-Image_ComfyUI; LoRA lightx2v/Qwen-Image-Lightning):
- qwen_image_fp8_e4m3fn.safetensors -> ComfyUI/models/diffusion_models/
- qwen_2.5_vl_7b_fp8_scaled.safetensors -> ComfyUI/models/text_encoders/
- qwen_image_vae.safetensors -> ComfyUI/models/vae/
- Qwen-Image-Lightning-8steps-V1.0.safetensors -> ComfyUI/models/loras/ (the 8-step workflows only)"""),
    "hunyuan_video": Family(
        unet="hunyuan_video_t2v_720p_bf16.safetensors",
        clip=("DualCLIPLoader", {"clip_name1": "clip_l.safetensors",
                                 "clip_name2": "llava_llama3_fp8_scaled.safetensors", "type": "hunyuan_video"}),
        vae="hunyuan_video_vae_bf16.safetensors", shift=("ModelSamplingSD3", 7.0), guidance=6.0, fps=24.0,
        latent=("EmptyHunyuanLatentVideo", {"width": 848, "height": 480, "length": 73, "batch_size": 1}),
        files="""Model files (HunyuanVideo, Comfy-Org/HunyuanVideo_repackaged):
- hunyuan_video_t2v_720p_bf16.safetensors -> ComfyUI/models/diffusion_models/
- clip_l.safetensors, llava_llama3_fp8_scaled.safetensors -> ComfyUI/models/text_encoders/
- hunyuan_video_vae_bf16.safetensors -> ComfyUI/models/vae/"""),
}

WAN22_FILES = f"""Model files (Wan2.2 T2V A14B, Comfy-Org/Wan_2.2_ComfyUI_Repackaged):
- wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors, wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors
  -> ComfyUI/models/diffusion_models/
- {UMT5} -> ComfyUI/models/text_encoders/
- {WAN_VAE} -> ComfyUI/models/vae/"""


class Column:
    """Places nodes top to bottom at one x, 40 canvas units apart (title bars included): no overlaps."""

    def __init__(self, b, x, y=0):
        self.b, self.x, self.y = b, x, y

    def node(self, type_, widgets=None, title=None, size=(340, 90)):
        nid = self.b.node(type_, (self.x, self.y), widgets, title=title, size=list(size))
        self.y += size[1] + 40 + 30  # the next node's title bar (30) sits below this one's body
        return nid


def text_node(col, clip, text, title, size=(380, 140)):
    n = col.node("CLIPTextEncode", {"text": text}, title=title, size=size)
    col.b.link(clip, 0, n, "clip")
    return n


def nag_settings_node(col, model, negative, scale, tau=2.5, alpha=0.25, sigma_end=0.0, title=None):
    n = col.node("AtelierNAGWan", {"scale": scale, "tau": tau, "alpha": alpha, "sigma_end": sigma_end},
                 title=title, size=(340, 200))
    col.b.link(model, 0, n, "model")
    col.b.link(negative, 0, n, "nag_negative")
    return n


def family_magcache(col, model, steps, thresh, k, retention=0.2, preset="auto", schedule_steps=0, title=None):
    n = col.node("AtelierMagCacheWan", {"preset": preset, "thresh": thresh, "k": k, "retention": retention,
                                        "preview_steps": steps, "schedule_steps": schedule_steps},
                 title=title, size=(360, 420))
    col.b.link(model, 0, n, "model")
    return n


def save_output(b, pos, samples, vae, prefix, fps=None):
    """VAE decode, then SaveImage (images) or an animated WEBP at ``fps`` (video families)."""
    if fps:
        return decode_save(b, pos, samples, vae, prefix, fps=fps)
    d = b.node("VAEDecode", pos, size=[220, 50])
    b.link(samples, 0, d, "samples")
    b.link(vae, 0, d, "vae")
    s = b.node("SaveImage", (pos[0] + 260, pos[1]), {"filename_prefix": prefix}, size=[420, 420])
    b.link(d, 0, s, "images")
    return d, s


def files_note(b, columns, note, files, size):
    """The note of a column workflow: ``note``, then where each model file goes, 40 below the lowest column."""
    return b.node("Note", (0, max(c.y for c in columns) + 40), {"text": note + "\n\n" + files}, size=size)


def family_workflow(defs, fam, *, middle, steps, cfg, prefix, note, note_height=300, positive=POS,
                    negative="", nag_negative=None, lora=None, sampler_title=None):
    """The one graph of the family workflows: loaders -> [LoRA] -> [shift] -> ``middle`` -> KSampler -> output.

    ``middle(col, model, nag_negative)`` adds the Atelier nodes in a column and returns the model it ends
    with. At cfg 1 with ``negative=None`` the sampler's negative is the positive (never evaluated); else an
    own prompt node. ``nag_negative`` adds a "NAG negative prompt" node.
    """
    f = FAMILIES[fam]
    b = Builder(defs)
    loaders, prompts, atelier = Column(b, 0), Column(b, 420), Column(b, 860)
    model = loaders.node("UNETLoader", {"unet_name": f.unet})
    clip_type, clip_widgets = f.clip
    clip = loaders.node(clip_type, clip_widgets, size=(340, 130 if clip_type == "DualCLIPLoader" else 110))
    vae = loaders.node("VAELoader", {"vae_name": f.vae}, size=(340, 60))
    if lora:
        lo = loaders.node("LoraLoaderModelOnly", {"lora_name": lora, "strength_model": 1.0})
        b.link(model, 0, lo, "model")
        model = lo
    if f.shift:
        sh = prompts.node(f.shift[0], {"shift": f.shift[1]}, size=(300, 60))
        b.link(model, 0, sh, "model")
        model = sh
    pos = text_node(prompts, clip, positive, "Positive prompt")
    if f.guidance is not None:
        g = prompts.node("FluxGuidance", {"guidance": f.guidance}, size=(300, 60))
        b.link(pos, 0, g, "conditioning")
        pos = g
    neg = pos if negative is None else text_node(
        prompts, clip, negative, "Negative prompt" if negative else "Empty negative (cfg 1)")
    nagneg = text_node(prompts, clip, nag_negative, "NAG negative prompt") if nag_negative else None
    latent = prompts.node(f.latent[0], f.latent[1], size=(300, 130 if f.fps else 110))
    model = middle(atelier, model, nagneg)
    k = b.node("KSampler", (1280, 0), {"seed": 42, "steps": steps, "cfg": cfg, "sampler_name": "euler",
                                       "scheduler": "simple", "denoise": 1.0},
               title=sampler_title, size=[320, 270])
    for src, name in ((model, "model"), (pos, "positive"), (neg, "negative"), (latent, "latent_image")):
        b.link(src, 0, k, name)
    save_output(b, (1640, 0), k, vae, prefix, fps=f.fps)
    files_note(b, (loaders, prompts, atelier), note, f.files, size=[760, note_height])
    return b


def wf_magcache_flux(defs):
    return family_workflow(
        defs, "flux", middle=lambda c, m, _: family_magcache(c, m, 28, thresh=0.24, k=5, retention=0.1), steps=28, cfg=1.0,
        prefix="atelier/magcache_flux", note=(
            "Atelier MagCache on FLUX.1-dev, 28 steps, embedded guidance 3.5 (cfg 1: one call per step).\n\n"
            + MC_NOTE + "FLUX's official rule: thresh 0.24, K 5, retention 0.1 (the step at 11 of 28 always "
            "computes). FLUX.1 Kontext: the same node; 'auto' takes the Kontext curve when the conditioning "
            "carries a reference latent (ReferenceLatent), and the report says which."))


def wf_magcache_qwen_image(defs):
    return family_workflow(
        defs, "qwen_image", middle=lambda c, m, _: family_magcache(c, m, 40, thresh=0.12, k=2), steps=40,
        cfg=2.5, negative="blurry, low quality", prefix="atelier/magcache_qwen_image", note=(
            "Atelier MagCache on Qwen-Image, 40 steps at cfg 2.5 (cond and uncond decided separately).\n\n"
            + MC_NOTE))


def wf_magcache_hunyuan_video(defs):
    return family_workflow(
        defs, "hunyuan_video", middle=lambda c, m, _: family_magcache(c, m, 30, thresh=0.24, k=6), steps=30,
        cfg=1.0, prefix="atelier/magcache_hunyuan_video", note=(
            "Atelier MagCache on HunyuanVideo T2V 720p, 30 steps, embedded guidance 6 (cfg 1).\n\n" + MC_NOTE +
            "'auto' takes the 544p curve when the latent is 544 pixels high, else the 720p curve. "
            "Official: thresh 0.24, K 6, retention 0.2."))


def wf_nag_flux(defs):
    return family_workflow(
        defs, "flux", middle=lambda c, m, neg: nag_settings_node(c, m, neg, 5.0), steps=25, cfg=1.0,
        positive="a cozy reading nook by a rainy window, warm lamp light, film photo", negative=None,
        nag_negative="cartoon, illustration, oversaturated, blurry", sampler_title="KSampler (cfg 1)",
        prefix="atelier/nag_flux", note_height=340, note=(
            "Flux + NAG at cfg 1. FLUX.1-dev is guidance-distilled: it runs at cfg 1 (FluxGuidance sets its "
            "embedded guidance), so ComfyUI never evaluates a negative prompt (the sampler's negative input is "
            "wired to the positive only because it must be connected). Atelier NAG puts the 'NAG negative "
            "prompt' into the joint attention of the same forward pass: only the image queries' attention to "
            "the text is computed twice (image-to-image once), so a step costs little more than without NAG.\n\n"
            "Flux settings: scale 5, tau 2.5, alpha 0.25 (the official NAG Flux defaults); sigma_end 0.75 gives "
            "near-identical results faster. Also for Flux-schnell, Kontext, Flux2, Chroma (same node)."))


def wf_nag_qwen(defs):
    return family_workflow(
        defs, "qwen_image", middle=lambda c, m, neg: nag_settings_node(c, m, neg, 5.0), steps=8, cfg=1.0,
        positive="a hand-painted shop sign that reads 'Atelier', morning street", negative=None,
        nag_negative="blurry, misspelled text, extra letters", lora="Qwen-Image-Lightning-8steps-V1.0.safetensors",
        sampler_title="KSampler (cfg 1, 8 steps)", prefix="atelier/nag_qwen_image", note=(
            "Qwen-Image + NAG. With the 8-step Lightning LoRA Qwen-Image runs at cfg 1, where a negative prompt "
            "does nothing; Atelier NAG applies the 'NAG negative prompt' inside the joint attention of the "
            "single forward pass (the negative text gets the same text positions the positive has). Without the "
            "LoRA (cfg 2.5-4, 20-50 steps) NAG guides only the positive branch; use a lower scale (3-5)."))


def wf_nag_hunyuan_magcache(defs):
    def middle(col, model, neg):
        nag = nag_settings_node(col, model, neg, 5.0)
        return family_magcache(col, nag, 30, thresh=0.24, k=6)
    return family_workflow(
        defs, "hunyuan_video", middle=middle, steps=30, cfg=1.0, negative=None,
        nag_negative="static, blurry, washed out colours", sampler_title="KSampler (cfg 1)",
        prefix="atelier/nag_hunyuan_magcache", note_height=320, note=(
            "HunyuanVideo + NAG + MagCache, 30 steps at cfg 1. HunyuanVideo is guidance-distilled (FluxGuidance "
            "6), so only NAG can apply a negative prompt. NAG guides the text part of the joint attention (the "
            "negative text is refined by the model's own token refiner separately from the positive); MagCache "
            "skips whole block stacks on calm steps and reuses residuals computed with guidance. The two nodes "
            "compose in either order."))


def wan22_experts(defs, middle, cfg, prefix, note, nag_negative=None, steps=20, split=10):
    """Wan2.2 T2V A14B: two experts, each through ``middle(col, model, nag_negative, expert)``, two
    KSamplerAdvanced segments (high noise to ``split``, low noise after)."""
    b = Builder(defs)
    loaders, prompts, atelier = Column(b, 0), Column(b, 440), Column(b, 880)
    experts = [loaders.node("UNETLoader", {"unet_name": f"wan2.2_t2v_{e}_noise_14B_fp8_scaled.safetensors"},
                            title=f"{e.title()}-noise expert", size=(380, 90)) for e in ("high", "low")]
    clip = loaders.node("CLIPLoader", {"clip_name": UMT5, "type": "wan"}, size=(380, 110))
    vae = loaders.node("VAELoader", {"vae_name": WAN_VAE}, size=(380, 60))
    shifted = []
    for e in experts:
        s = prompts.node("ModelSamplingSD3", {"shift": 8.0}, size=(300, 60))
        b.link(e, 0, s, "model")
        shifted.append(s)
    pos = text_node(prompts, clip, POS, "Positive prompt")
    neg = text_node(prompts, clip, NEG, "Negative prompt")
    nagneg = text_node(prompts, clip, nag_negative, "NAG negative prompt") if nag_negative else None
    latent = prompts.node("EmptyHunyuanLatentVideo", {"width": 832, "height": 480, "length": 33,
                                                      "batch_size": 1}, size=(300, 130))
    models = [middle(atelier, m, nagneg, e) for m, e in zip(shifted, ("high", "low"))]
    ks = []
    for i, (model, start, end) in enumerate(((models[0], 0, split), (models[1], split, 10000))):
        k = b.node("KSamplerAdvanced", (1300 + 360 * i, 0), {
            "add_noise": "enable" if i == 0 else "disable", "noise_seed": 42, "steps": steps, "cfg": cfg,
            "sampler_name": "euler", "scheduler": "simple", "start_at_step": start, "end_at_step": end,
            "return_with_leftover_noise": "enable" if i == 0 else "disable"},
            title=("KSampler (high noise)", "KSampler (low noise)")[i], size=[320, 340])
        for src, name in ((model, "model"), (pos, "positive"), (neg, "negative"),
                          (latent if i == 0 else ks[-1], "latent_image")):
            b.link(src, 0, k, name)
        ks.append(k)
    decode_save(b, (2020, 0), ks[-1], vae, prefix)
    files_note(b, (loaders, prompts, atelier), note, WAN22_FILES, size=[780, 320])
    return b


def wf_nag_wan22(defs):
    return wan22_experts(
        defs, lambda c, m, neg, e: nag_settings_node(c, m, neg, 7.0, title=f"NAG ({e}-noise expert)"),
        cfg=3.5, prefix="atelier/nag_wan22", nag_negative="static, blurry, washed out", note=(
            "Wan2.2 T2V A14B + NAG: one NAG node per expert (each is its own model), the same NAG negative for "
            "both. At cfg 3.5 NAG guides only the positive branch; use a lower scale (5-9) than at cfg 1. With a "
            "few-step distilled LoRA (lightx2v) at cfg 1 use scale 11, tau 2.5, alpha 0.25. TI2V-5B and the VACE "
            "blocks of Wan2.1 VACE are served by the same node."))


def wf_magcache_wan22_a14b(defs):
    return wan22_experts(
        defs, lambda c, m, _, e: family_magcache(c, m, 20, 0.24, 2, preset="wan2.2_t2v_A14B", schedule_steps=20,
                                                 title=f"MagCache ({e}-noise expert)"),
        cfg=3.5, prefix="atelier/magcache_wan22_a14b", note=(
            "Atelier MagCache on Wan2.2 T2V A14B with its two experts, 20 steps at cfg 3.5: one MagCache node per "
            "expert, both with preset wan2.2_t2v_A14B and schedule_steps 20 (the whole schedule). Each sampler "
            "runs its segment; the split is where the high-noise sampler stops, and the official phase rule keeps "
            "retention per expert.\n\n" + MC_NOTE))


WORKFLOWS = {
    "magcache_wan21_t2v": (wf_magcache_t2v, ["AtelierMagCacheWan"]),
    "magcache_compare": (wf_magcache_compare, ["AtelierMagCacheWan", "AtelierMagCacheCompare"]),
    "magcache_calibrate": (wf_magcache_calibrate, ["AtelierMagCacheCalibrate", "AtelierMagCacheWan"]),
    "magcache_flux": (wf_magcache_flux, ["AtelierMagCacheWan", "DualCLIPLoader", "FluxGuidance"]),
    "magcache_qwen_image": (wf_magcache_qwen_image, ["AtelierMagCacheWan", "ModelSamplingAuraFlow"]),
    "magcache_hunyuan_video": (wf_magcache_hunyuan_video, ["AtelierMagCacheWan", "DualCLIPLoader"]),
    "magcache_wan22_a14b": (wf_magcache_wan22_a14b, ["AtelierMagCacheWan", "KSamplerAdvanced"]),
    "nag_cfg1_fewstep": (wf_nag_fewstep, ["AtelierNAGWan"]),
    "nag_magcache": (wf_nag_magcache, ["AtelierNAGWan", "AtelierMagCacheWan"]),
    "nag_flux_cfg1": (wf_nag_flux, ["AtelierNAGWan", "DualCLIPLoader", "FluxGuidance", "EmptySD3LatentImage"]),
    "nag_qwen_image": (wf_nag_qwen, ["AtelierNAGWan", "ModelSamplingAuraFlow", "EmptySD3LatentImage"]),
    "nag_hunyuan_magcache": (wf_nag_hunyuan_magcache, ["AtelierNAGWan", "AtelierMagCacheWan", "DualCLIPLoader",
                                                       "FluxGuidance"]),
    "nag_wan22": (wf_nag_wan22, ["AtelierNAGWan", "KSamplerAdvanced"]),
    "dloral_video_upscale": (wf_dloral, ["AtelierDLoRALLoader", "AtelierDLoRALUpscaleVideo", "LoadVideo"]),
    "restoration_scan_to_print": (wf_restoration_scan, ["AtelierRestorationLoadScan", "AtelierRestorationRecord"]),
    "restoration_sample": (wf_restoration_sample, ["AtelierSyntheticDamage", "AtelierRestorationRecord"]),
}


THUMB = 512  # px, square (the template cards crop to a square)
COLOURS = {"atelier": ((196, 120, 40), (58, 44, 30)), "note": ((102, 85, 51), (68, 51, 34)),
           "host": ((70, 70, 76), (44, 44, 48))}


def thumbnail(wf, title, defs):
    """A drawing of the workflow: node boxes (Atelier nodes in amber, notes in brown), links, title."""
    from PIL import Image, ImageDraw, ImageFont
    img = Image.new("RGB", (THUMB, THUMB), (24, 24, 27))
    d = ImageDraw.Draw(img)
    head = ImageFont.load_default(size=24)
    small = ImageFont.load_default(size=11)
    d.rectangle([0, 0, THUMB, 76], fill=(36, 36, 40))
    d.text((16, 10), "Atelier", font=head, fill=(230, 160, 70))
    d.text((16, 44), title, font=ImageFont.load_default(size=17), fill=(225, 225, 225))
    rects = {n["id"]: node_rect(n) for n in wf["nodes"]}
    x0, y0 = min(r[0] for r in rects.values()), min(r[1] for r in rects.values())
    x1, y1 = max(r[2] for r in rects.values()), max(r[3] for r in rects.values())
    box = (16, 92, THUMB - 16, THUMB - 16)
    k = min((box[2] - box[0]) / (x1 - x0), (box[3] - box[1]) / (y1 - y0))
    ox = box[0] + ((box[2] - box[0]) - k * (x1 - x0)) / 2
    oy = box[1] + ((box[3] - box[1]) - k * (y1 - y0)) / 2

    def pt(x, y):
        return ox + (x - x0) * k, oy + (y - y0) * k

    by_id = {n["id"]: n for n in wf["nodes"]}
    for _, src, slot, dst, dslot, _ in wf["links"]:
        a, b_ = rects[src], rects[dst]
        p0 = pt(a[2], a[1] + 30 + 20 * slot)
        p1 = pt(b_[0], b_[1] + 30 + 20 * dslot)
        mid = (p0[0] + p1[0]) / 2
        curve = [(p0[0] + (mid - p0[0]) * t * 2 if t < 0.5 else mid + (p1[0] - mid) * (t - 0.5) * 2,
                  p0[1] + (p1[1] - p0[1]) * (3 * t * t - 2 * t * t * t)) for t in [i / 24 for i in range(25)]]
        d.line(curve, fill=(120, 170, 210), width=2)
    for nid, r in rects.items():
        n = by_id[nid]
        kind = "note" if n["type"] in ("Note", "MarkdownNote") else \
            "atelier" if n["type"].startswith("Atelier") else "host"
        bar, body = COLOURS[kind]
        a, b_ = pt(r[0], r[1]), pt(r[2], r[3])
        d.rounded_rectangle([a, b_], radius=4, fill=body, outline=bar, width=2)
        d.rectangle([a, (b_[0], a[1] + max(4, 30 * k))], fill=bar)
        label = n.get("title") or defs.get(n["type"], {}).get("display_name") or n["type"]
        label = label.removeprefix("Atelier ")
        if kind != "note" and b_[0] - a[0] > 40:
            while label and d.textlength(label, font=small) > b_[0] - a[0] - 6:
                label = label[:-1]
            d.text((a[0] + 3, a[1] + max(4, 30 * k) + 2), label, font=small, fill=(235, 235, 235))
    return img


def main():
    defs = load_defs()
    OUT.mkdir(exist_ok=True)
    for name, (fn, needs) in WORKFLOWS.items():
        missing = [n for n in needs if n not in defs]
        if missing:
            print(f"skip {name}: waiting for {missing}")
            continue
        wf = fn(defs).to_json()
        path = template_path(name)
        path.write_text(json.dumps(wf, indent=1) + "\n")
        thumbnail(wf, TEMPLATE_TITLES[name], defs).save(path.with_suffix(".jpg"), quality=85, optimize=True)
        print(f"wrote example_workflows/{path.name} ({len(wf['nodes'])} nodes) and its .jpg")


if __name__ == "__main__":
    main()
