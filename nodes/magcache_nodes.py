"""MagCache nodes (V3 schema): cache the Wan block stack's residual, report a run, compare runs.

Thin: the curve and config come from the core resolver (:func:`magcache.resolve`, shared with
the web route, the Calibrate node and the CLI), the run from :class:`magcache.MagCacheSession`.
"""
import logging

import torch
from comfy_api.latest import io

from ..magcache import MagCacheSession, parse_curve, resolve
from ..magcache.compare import compare_frames
from ..magcache.resolve import plan_query, query_model_from_file
from ..magcache.settings import SETTINGS
from ..magcache.session import report_text
from . import _host
from ._settings_io import validator, widget
from .magcache_hook import REPORT_EVENT, RUN_KEY, apply_magcache
from .magcache_calibrate import AtelierMagCacheCalibrate, wan_config

log = logging.getLogger("atelier")

CATEGORY = "Atelier/MagCache"


def model_info(model):
    """What the resolver needs of a Wan model for ``auto`` (dim, in_dim, model_type)."""
    return wan_config(model)


class AtelierMagCacheWan(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AtelierMagCacheWan", display_name="Atelier MagCache (Wan)", category=CATEGORY,
            description=("MagCache for native Wan2.1/Wan2.2: reuses the cached residual of the whole transformer "
                         "block stack on steps where the calibrated magnitude-ratio curve says little changes. "
                         "Cond and uncond are decided separately; Wan2.2 A14B uses the official phase rule. "
                         "Connect its MODEL to your sampler."),
            inputs=[
                io.Model.Input("model", tooltip="A Wan2.1 or Wan2.2 diffusion model."),
                *[widget(SETTINGS[n]) for n in ("preset", "thresh", "k", "retention", "start_step", "end_step",
                                                "protect_last", "cache_device", "schedule_steps", "preview_steps")],
                io.String.Input("custom_curve", optional=True, force_input=True, tooltip=(
                    "A calibrated curve as JSON (from Atelier MagCache Calibrate); overrides preset.")),
            ],
            outputs=[
                io.Model.Output(display_name="model",
                                tooltip="The model with MagCache (a clone; the input model is untouched)."),
                io.String.Output(display_name="schedule_preview", tooltip=(
                    "The skip plan: which steps each branch skips, computed/total calls, the ideal speedup "
                    "and, for Wan2.2 A14B, the split used.")),
            ],
            hidden=[io.Hidden.unique_id],
        )

    validate_inputs = validator(
        SETTINGS, ("preset", "thresh", "k", "retention", "start_step", "end_step", "protect_last", "cache_device",
                   "schedule_steps", "preview_steps"),
        extra=lambda v: (parse_curve(v["custom_curve"], what="custom_curve")
                         if isinstance(v.get("custom_curve"), str) and v["custom_curve"].strip() else None),
        more=("custom_curve",))

    @classmethod
    def execute(cls, model, preset, thresh, k, retention, start_step, end_step, protect_last, cache_device,
                schedule_steps, preview_steps, custom_curve=None):
        info = model_info(model)
        r = resolve(preset, steps=preview_steps, custom_curve=custom_curve, model=info, thresh=thresh, k=k,
                    retention=retention, start_step=start_step, end_step=end_step, protect_last=protect_last,
                    schedule_steps=schedule_steps)
        if r.family is not None and r.family.name != "wan":   # this node hooks Wan's block stack only
            raise ValueError(f"preset: {preset!r} is a {r.family.title} curve; Atelier MagCache (Wan) runs Wan2.1 "
                             "and Wan2.2 models: pick 'auto' or a wan preset")
        schedule = r.plan()
        text = r.describe(schedule)
        for warning in r.warnings(schedule):
            log.warning("[Atelier] MagCache: %s", warning)
        uid = getattr(getattr(cls, "hidden", None), "unique_id", None)

        def on_report(rep):
            session.last_report = rep
            _host.send_event(REPORT_EVENT, rep)

        session = MagCacheSession(r, schedule_steps, torch.device("cpu") if cache_device == "cpu" else None,
                                  str(uid) if uid is not None else None, on_report)
        dm = model.get_model_object("diffusion_model")
        m = apply_magcache(model, session, subset_rows=not hasattr(dm, "vace_blocks"))  # VACE: hints per block
        ui = {"atelier_magcache": [{"preset": r.name, "detected": r.detected, **info}]}
        return io.NodeOutput(m, text, ui=ui)


class AtelierMagCacheReport(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AtelierMagCacheReport", display_name="Atelier MagCache Report", category=CATEGORY,
            description=("The skip report of the last sampling run made with a MagCache model: which calls ran or "
                         "were skipped per branch, computed/total calls and the measured time saved."),
            inputs=[io.Model.Input("model", tooltip="The MODEL output of Atelier MagCache (Wan)."),
                    io.Latent.Input("samples", tooltip="The sampler's output, so this runs after sampling.")],
            outputs=[io.String.Output(display_name="report", tooltip=(
                "One summary line, then per branch one mark per step: C computed, S skipped, . not run."))],
            not_idempotent=True,
        )

    @classmethod
    def fingerprint_inputs(cls, **kw):
        return float("nan")  # the report changes with every run of the upstream sampler

    @classmethod
    def execute(cls, model, samples):
        session = model.model_options.get("transformer_options", {}).get(RUN_KEY)
        if session is None:
            raise ValueError("Atelier MagCache Report: input 'model' has no MagCache; connect the MODEL "
                             "output of Atelier MagCache (Wan).")
        return io.NodeOutput(report_text(session.last_report))


class AtelierMagCacheCompare(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AtelierMagCacheCompare", display_name="Atelier MagCache Compare", category=CATEGORY,
            description=("Per-frame PSNR/SSIM between a full run and a cached run, and an amplified difference "
                         "image, to tune thresh and K against quality loss."),
            inputs=[io.Image.Input("reference", tooltip="Frames of the full (uncached) run."),
                    io.Image.Input("test", tooltip="Frames of the cached run, same size and count."),
                    io.Float.Input("gain", default=4.0, min=1.0, max=100.0, step=0.5,
                                   tooltip="Amplification of the absolute difference image.")],
            outputs=[io.Image.Output(display_name="difference", tooltip="|reference - test| x gain, clipped to [0, 1]."),
                     io.String.Output(display_name="table", tooltip="PSNR (dB) and SSIM per frame, then the means."),
                     io.Float.Output(display_name="mean_psnr", tooltip="Mean PSNR in dB over frames (identical frames excluded)."),
                     io.Float.Output(display_name="mean_ssim", tooltip="Mean SSIM over frames (1 = identical).")],
        )

    @classmethod
    def execute(cls, reference, test, gain):
        return io.NodeOutput(*compare_frames(reference, test, gain))


def route_plan(query):
    """The route's work, off the event loop: the model config of the loader's file when the query
    names one (``magcache.resolve.query_model_from_file``, the host's folders), then the plan."""
    import folder_paths
    return plan_query(query_model_from_file(query, folder_paths.get_full_path))


def _schedule_route(routes):
    import asyncio
    from aiohttp import web

    @routes.get("/atelier/magcache/schedule")
    async def schedule(request):
        try:
            loop = asyncio.get_running_loop()
            d = await loop.run_in_executor(None, route_plan, dict(request.rel_url.query))
            return web.json_response(d)
        except ValueError as exc:   # a SettingError names its parameter; any other error names none
            return web.json_response({"error": str(exc), "param": getattr(exc, "param", None)}, status=400)


_host.add_routes(_schedule_route)

NODES = [AtelierMagCacheWan, AtelierMagCacheReport, AtelierMagCacheCompare, AtelierMagCacheCalibrate]
NODE_CLASS_MAPPINGS = {c.define_schema().node_id: c for c in NODES}
NODE_DISPLAY_NAME_MAPPINGS = {c.define_schema().node_id: c.define_schema().display_name for c in NODES}
