"""MagCache nodes: cache the Wan block stack's residual, compare runs, calibrate new models."""
import json
import logging
import os

import torch

from ..magcache import (MagCacheConfig, get_preset, list_presets, parse_curve, plan_schedule,
                        psnr, ssim, difference_image)
from . import _host
from .magcache_hook import REPORT_EVENT, RunHolder, apply_magcache
from .magcache_calibrate import calibrate_run

log = logging.getLogger("atelier")

CATEGORY = "Atelier/MagCache"
AUTO = "auto"
WAN_PRESETS = [p for p in list_presets() if p.startswith("wan")]


def wan_config(model):
    """The host's unet_config of a Wan model, or a ValueError naming the input."""
    dm = model.get_model_object("diffusion_model")
    cfg = getattr(getattr(model.model, "model_config", None), "unet_config", {}) or {}
    if cfg.get("image_model") != "wan2.1" or not hasattr(dm, "blocks"):
        raise ValueError(
            f"Atelier MagCache (Wan): input 'model' is a {type(dm).__name__} "
            f"(image_model={cfg.get('image_model')!r}), not a Wan model. Allowed: Wan2.1 and Wan2.2 "
            "diffusion models (T2V, I2V, VACE, TI2V-5B) loaded by the host.")
    return cfg


def detect_preset(cfg):
    """Pick the calibrated curve that fits a Wan unet_config (dim, in_dim, model_type)."""
    kind = cfg.get("model_type", "t2v")
    dim = int(cfg.get("dim", 1536))
    big = dim >= 4096
    if cfg.get("in_dim") == 48 or dim == 3072:
        return "wan2.2_ti2v_5B_t2v"
    if kind == "vace":
        return "wan2.1_vace_14B" if big else "wan2.1_vace_1.3B"
    if kind in ("i2v", "camera", "flf2v"):
        return "wan2.1_i2v_480p_14B"
    return "wan2.1_t2v_14B" if big else "wan2.1_t2v_1.3B"


def make_config(thresh, k, retention, start_step, end_step, protect_last):
    cfg = MagCacheConfig(thresh=thresh, k=k, retention=retention,
                         start_step=None if start_step < 0 else start_step,
                         end_step=None if end_step < 0 else end_step,
                         protect_last=protect_last)
    cfg.validate()
    return cfg


def schedule_text(curve, steps, config, preset):
    sch = plan_schedule(curve, steps, config)
    s = sch.to_dict() if hasattr(sch, "to_dict") else json.loads(sch.to_json())
    cs, us = s["cond_skipped"], s["uncond_skipped"]
    lines = [f"preset {preset}, {steps} steps: skips {len(cs)}/{steps} cond and {len(us)}/{steps} "
             f"uncond steps; computes {s['computed_calls']}/{s['total_calls']} calls "
             f"(ideal {s['total_calls'] / max(1, s['computed_calls']):.2f}x)",
             f"cond skipped: {cs}", f"uncond skipped: {us}"]
    if not cs and not us:
        lines.append("WARNING: this setting skips nothing at this step count "
                     "(few-step distilled models gain nothing from MagCache).")
    return "\n".join(lines), s


class AtelierMagCacheWan:
    DESCRIPTION = ("MagCache for native Wan2.1/Wan2.2: reuses the cached residual of the whole transformer "
                   "block stack on steps where the calibrated magnitude-ratio curve says little changes. "
                   "Cond and uncond are decided separately. Connect its MODEL to your sampler.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MODEL", "STRING")
    RETURN_NAMES = ("model", "schedule_preview")
    OUTPUT_TOOLTIPS = ("The model with MagCache (a clone; the input model is untouched).",
                       "The skip plan for preview_steps steps: which steps each branch skips, and the ideal speedup.")
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "A Wan2.1 or Wan2.2 diffusion model."}),
                "preset": ([AUTO] + WAN_PRESETS, {"default": AUTO, "tooltip":
                           "Calibrated magnitude-ratio curve. 'auto' picks one from the model's size and type "
                           "(I2V: 480p curve; pick 720p by hand)."}),
                "thresh": ("FLOAT", {"default": 0.12, "min": 0.0, "max": 1.0, "step": 0.005, "tooltip":
                           "Accumulated error allowed before a step must compute. 0 disables skipping. "
                           "Official: 0.12 (1.3B), 0.24 (14B); conservative: 0.02."}),
                "k": ("INT", {"default": 2, "min": 1, "max": 50, "tooltip":
                      "Most consecutive skipped steps per branch (official 2; conservative 6 with low thresh)."}),
                "retention": ("FLOAT", {"default": 0.2, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip":
                              "Fraction of the first calls that always compute (official rule counts calls). "
                              "Ignored when start_step >= 0."}),
                "start_step": ("INT", {"default": -1, "min": -1, "max": 10000, "tooltip":
                               "Steps before this always compute, both branches; -1 uses retention instead."}),
                "end_step": ("INT", {"default": -1, "min": -1, "max": 10000, "tooltip":
                             "Steps from this on always compute; -1 = no end."}),
                "protect_last": ("INT", {"default": 0, "min": 0, "max": 100, "tooltip":
                                 "Always compute the last N steps (0 keeps the official schedule)."}),
                "cache_device": (["auto", "cpu"], {"default": "auto", "tooltip":
                                 "Where cached residuals live: 'auto' keeps them on the model's device; "
                                 "'cpu' saves GPU memory at a small copy cost."}),
                "schedule_steps": ("INT", {"default": 0, "min": 0, "max": 10000, "tooltip":
                                   "Steps of the whole schedule when this sampler runs only part of it "
                                   "(Wan2.2 A14B: one KSamplerAdvanced per expert, each with this node); "
                                   "0 = the sampler's own steps."}),
                "preview_steps": ("INT", {"default": 50, "min": 1, "max": 1000, "tooltip":
                                  "Step count for the schedule preview output (set it to your sampler's steps)."}),
            },
            "optional": {
                "custom_curve": ("STRING", {"forceInput": True, "tooltip":
                                 "A calibrated curve as JSON (from Atelier MagCache Calibrate); overrides preset."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def apply(self, model, preset, thresh, k, retention, start_step, end_step, protect_last,
              cache_device, preview_steps, schedule_steps=0, custom_curve=None, unique_id=None):
        cfg = wan_config(model)
        config = make_config(thresh, k, retention, start_step, end_step, protect_last)
        if custom_curve:
            curve, name = parse_curve(custom_curve), "custom"
        else:
            name = detect_preset(cfg) if preset == AUTO else preset
            curve = get_preset(name).ratios
        text, _ = schedule_text(curve, preview_steps, config, name)
        if "WARNING" in text:
            log.warning("[Atelier] MagCache: %s", text.splitlines()[-1])
        dev = torch.device("cpu") if cache_device == "cpu" else None
        dm = model.get_model_object("diffusion_model")
        subset_rows = not hasattr(dm, "vace_blocks")  # VACE adds hints between blocks: run all rows

        def on_report(rep):
            holder.last_report = rep
            _host.send_event(REPORT_EVENT, rep)

        holder = RunHolder(curve, config, dev, str(unique_id) if unique_id is not None else None,
                           on_report, subset_rows, schedule_steps)
        return (apply_magcache(model, holder), text)


class AtelierMagCacheReport:
    DESCRIPTION = ("The skip report of the last sampling run made with a MagCache model: which calls ran or "
                   "were skipped per branch, computed/total calls and the measured time saved.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("report",)
    FUNCTION = "report"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "The MODEL output of Atelier MagCache (Wan)."}),
            "samples": ("LATENT", {"tooltip": "The sampler's output, so this runs after sampling."}),
        }}

    @classmethod
    def IS_CHANGED(cls, **kw):
        return float("nan")

    def report(self, model, samples):
        from .magcache_hook import RUN_KEY
        holder = model.model_options.get("transformer_options", {}).get(RUN_KEY)
        if holder is None:
            raise ValueError("Atelier MagCache Report: input 'model' has no MagCache; connect the MODEL "
                             "output of Atelier MagCache (Wan).")
        rep = holder.last_report
        if rep is None:
            return ("no run yet",)
        lines = [rep["summary"]]
        for b, marks in rep.get("branches", {}).items():
            lines.append(f"{b:>6}: {''.join(marks)}")
        return ("\n".join(lines),)


def _frames(images, name):
    if not torch.is_tensor(images) or images.dim() != 4:
        raise ValueError(f"Atelier MagCache Compare: input '{name}' must be an IMAGE batch [N,H,W,C].")
    return images.float()


class AtelierMagCacheCompare:
    DESCRIPTION = ("Per-frame PSNR/SSIM between a full run and a cached run, and an amplified difference "
                   "image, to tune thresh and K against quality loss.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "STRING", "FLOAT", "FLOAT")
    RETURN_NAMES = ("difference", "table", "mean_psnr", "mean_ssim")
    FUNCTION = "compare"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "reference": ("IMAGE", {"tooltip": "Frames of the full (uncached) run."}),
            "test": ("IMAGE", {"tooltip": "Frames of the cached run, same size and count."}),
            "gain": ("FLOAT", {"default": 4.0, "min": 1.0, "max": 100.0, "step": 0.5,
                               "tooltip": "Amplification of the absolute difference image."}),
        }}

    def compare(self, reference, test, gain):
        a, b = _frames(reference, "reference"), _frames(test, "test")
        if a.shape != b.shape:
            raise ValueError(f"Atelier MagCache Compare: 'reference' {tuple(a.shape)} and 'test' "
                             f"{tuple(b.shape)} must have the same frame count and size.")
        p = psnr(a, b)
        s = ssim(a, b)
        rows = ["frame  psnr_db  ssim"] + [f"{i:5d}  {float(pi):7.2f}  {float(si):.4f}"
                                           for i, (pi, si) in enumerate(zip(p, s))]
        finite = p[torch.isfinite(p)]
        mp = float(finite.mean()) if finite.numel() else float("inf")
        ms = float(s.mean())
        rows.append(f" mean  {mp:7.2f}  {ms:.4f}")
        return (difference_image(a, b, gain), "\n".join(rows), mp, ms)


class AtelierMagCacheCalibrate:
    DESCRIPTION = ("Samples once without caching while recording, per call and branch, the mean per-token "
                   "L2 magnitude ratio of the block-stack residual (plus its std and cosine distance). "
                   "Outputs a curve for Atelier MagCache (custom_curve) and saves it as JSON in the output folder.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("LATENT", "STRING", "STRING")
    RETURN_NAMES = ("samples", "curve_json", "saved_path")
    FUNCTION = "calibrate"

    @classmethod
    def INPUT_TYPES(cls):
        import comfy.samplers
        return {"required": {
            "model": ("MODEL", {"tooltip": "The Wan model to calibrate (no MagCache on it)."}),
            "positive": ("CONDITIONING", {"tooltip": "Positive prompt of the calibration sample."}),
            "negative": ("CONDITIONING", {"tooltip": "Negative prompt (used when cfg > 1)."}),
            "latent_image": ("LATENT", {"tooltip": "Empty latent of the size you will render at."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xffffffffffffffff, "tooltip": "Noise seed."}),
            "steps": ("INT", {"default": 50, "min": 2, "max": 1000, "tooltip":
                      "Steps of the calibration run; the curve is resampled to other step counts."}),
            "cfg": ("FLOAT", {"default": 5.0, "min": 0.0, "max": 100.0, "step": 0.1,
                              "tooltip": "CFG scale; > 1 calibrates cond and uncond separately."}),
            "sampler_name": (comfy.samplers.KSampler.SAMPLERS, {"tooltip": "Sampler (use a 1st-order one, e.g. euler)."}),
            "scheduler": (comfy.samplers.KSampler.SCHEDULERS, {"tooltip": "Scheduler."}),
            "name": ("STRING", {"default": "my_wan_model", "tooltip":
                     "File name (letters, digits, - and _) of the JSON saved under output/atelier_magcache/."}),
        }}

    def calibrate(self, model, positive, negative, latent_image, seed, steps, cfg, sampler_name,
                  scheduler, name):
        wan_config(model)
        samples, curve_json = calibrate_run(model, positive, negative, latent_image, seed, steps, cfg,
                                            sampler_name, scheduler)
        path = save_curve(curve_json, name, _host.output_directory())
        return (samples, curve_json, path)


def save_curve(curve_json, name, out_root):
    safe = "".join(ch for ch in name if ch.isalnum() or ch in "-_")
    if not safe or safe != name:
        raise ValueError(f"Atelier MagCache Calibrate: 'name' {name!r} may only contain letters, digits, "
                         "'-' and '_'.")
    folder = os.path.join(out_root, "atelier_magcache")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, safe + ".json")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(curve_json)
    os.replace(tmp, path)
    return path


def _schedule_route(routes):
    from aiohttp import web

    @routes.get("/atelier/magcache/schedule")
    async def schedule(request):
        q = request.rel_url.query
        try:
            preset = q.get("preset", "wan2.1_t2v_1.3B")
            if preset == AUTO:
                preset = "wan2.1_t2v_1.3B"
            config = make_config(float(q.get("thresh", 0.12)), int(q.get("k", 2)),
                                 float(q.get("retention", 0.2)), int(q.get("start_step", -1)),
                                 int(q.get("end_step", -1)), int(q.get("protect_last", 0)))
            steps = int(q.get("steps", 50))
            text, s = schedule_text(get_preset(preset).ratios, steps, config, preset)
            s = dict(s, preset=preset, steps=steps, text=text)
            return web.json_response(s)
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)


_host.add_routes(_schedule_route)

NODE_CLASS_MAPPINGS = {
    "AtelierMagCacheWan": AtelierMagCacheWan,
    "AtelierMagCacheReport": AtelierMagCacheReport,
    "AtelierMagCacheCompare": AtelierMagCacheCompare,
    "AtelierMagCacheCalibrate": AtelierMagCacheCalibrate,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "AtelierMagCacheWan": "Atelier MagCache (Wan)",
    "AtelierMagCacheReport": "Atelier MagCache Report",
    "AtelierMagCacheCompare": "Atelier MagCache Compare",
    "AtelierMagCacheCalibrate": "Atelier MagCache Calibrate",
}
