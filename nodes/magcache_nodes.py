"""MagCache nodes (V3 schema): cache a diffusion transformer's block-stack residual, report a run, compare runs.

One node (id ``AtelierMagCacheWan``, kept so saved workflows load) serves every family the core knows whose
host model offers block patches (:func:`.magcache_hook.stack_of`); ``auto`` detects the family from the
host's ``unet_config`` (:func:`magcache.detect_family`). Choices that depend on the run (target speedup at
the real step count, recorded curves) are made at its start (:mod:`.magcache_run`).

Thin: the curve and config come from the core resolver (:func:`magcache.resolve`, shared with
the web route, the Calibrate node and the CLI), the run from :class:`magcache.MagCacheSession`.
"""
import logging
import os

import torch
from comfy_api.latest import io

from ..magcache import MagCacheSession, parse_curve, resolve
from ..magcache.settings import AUTO
from ..magcache.store import CurveStore
from ..magcache.compare import compare_frames
from ..magcache.resolve import curve_given, plan_query, query_model_from_file, records_first_run
from ..magcache.settings import SETTINGS
from ..magcache.session import report_text
from . import _host
from ._settings_io import validator, widget
from .magcache_hook import REPORT_EVENT, RUN_KEY, apply_magcache, stack_of
from .magcache_run import STORE_SUBFOLDER, RunSpec, make_prepare, model_family, state_fingerprint, unet_config
from .magcache_calibrate import AtelierMagCacheCalibrate, wan_config

log = logging.getLogger("atelier")

CATEGORY = "Atelier/MagCache"


def model_info(model, family=None):
    """What the resolver needs of the model for ``auto``: a Wan model's dim, in_dim, model_type; another
    family's ``image_model`` (and ``vision_in_dim``, which tells HunyuanVideo-1.5)."""
    if family is None or family.name == "wan":
        return wan_config(model)
    cfg = unet_config(model)
    return {k: cfg[k] for k in ("image_model", "vision_in_dim") if cfg.get(k) is not None}


class AtelierMagCacheWan(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AtelierMagCacheWan", display_name="Atelier MagCache", category=CATEGORY,
            description=("MagCache for Wan2.1/2.2, FLUX.1 (and Kontext), FLUX.2, Chroma, Qwen-Image, HunyuanVideo "
                         "(and 1.5), LTX-Video, Lumina2 / Z-Image and HiDream: reuses the cached residual of the whole transformer block stack "
                         "on steps where the magnitude-ratio curve says little changes, under each family's official "
                         "rule. Cond and uncond are decided separately; Wan2.2 A14B uses the official phase rule. "
                         "Families without a shipped curve record one during the first full run. "
                         "Connect its MODEL to your sampler."),
            inputs=[
                io.Model.Input("model", tooltip=("A diffusion model of a supported family (Wan, FLUX, Chroma, "
                                                 "Qwen-Image, HunyuanVideo, LTX-Video, Lumina2 / Z-Image, "
                                                 "HiDream).")),
                *[widget(SETTINGS[n]) for n in ("preset", "thresh", "k", "retention", "start_step", "end_step",
                                                "protect_last", "cache_device", "schedule_steps", "preview_steps",
                                                "target_speedup")],
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
                   "schedule_steps", "preview_steps", "target_speedup"),
        extra=lambda v: (parse_curve(v["custom_curve"], what="custom_curve")
                         if isinstance(v.get("custom_curve"), str) and v["custom_curve"].strip() else None),
        more=("custom_curve",))

    @classmethod
    def execute(cls, model, preset, thresh, k, retention, start_step, end_step, protect_last, cache_device,
                schedule_steps, preview_steps, custom_curve=None, target_speedup=0.0):
        fam = model_family(model, preset, custom_curve)
        stack_of(model, fam)   # refuses a family the host offers no block patches for, naming it
        info = model_info(model, fam)
        has_curve = curve_given(custom_curve)
        kw = dict(preset=preset, custom_curve=custom_curve if has_curve else None, model=info, thresh=thresh, k=k,
                  retention=retention, start_step=start_step, end_step=end_step, protect_last=protect_last,
                  schedule_steps=schedule_steps, family=fam if has_curve else None)
        record = records_first_run(fam, preset, custom_curve)
        uid = getattr(getattr(cls, "hidden", None), "unique_id", None)
        dev = torch.device("cpu") if cache_device == "cpu" else None
        if record:
            root = os.path.join(_host.output_directory(), STORE_SUBFOLDER)
            spec = RunSpec(kw, fam, target_speedup, False, True, root, state_fingerprint(model),
                           type(model.model.diffusion_model).__name__)
            mine = [os.path.splitext(os.path.basename(p))[0] for p in CurveStore(root).stored(fam.name)
                    if os.path.basename(os.path.dirname(p)) == spec.fingerprint[:16]]
            text = (f"{fam.title}: no shipped curve. Curves are recorded per model, latent size, steps and sampler "
                    f"in {root} (keyed on a fingerprint of the model's weights {spec.fingerprint[:16]}: the host does "
                    "not expose the model file); a run with no recorded curve computes every call and records "
                    "it, the next run with the same key uses it (the report says which curve and why).\n"
                    f"recorded curves of this model: {', '.join(mine) if mine else 'none yet'}")
            ui_info = {"preset": "record", "detected": True, "family": fam.name, **info}
        else:
            r = resolve(steps=preview_steps, target_speedup=target_speedup, **kw)
            schedule = r.plan()
            text = r.describe(schedule)
            for warning in r.warnings(schedule):
                log.warning("[Atelier] MagCache: %s", warning)
            kontext = preset == AUTO and not has_curve and fam.name == "flux"
            spec = RunSpec(kw, fam, target_speedup, preset == AUTO and bool(fam.resolution_presets),
                           auto_kontext=kontext)
            if kontext:
                text += ("\nauto: this plan is FLUX.1-dev's; a run whose conditioning carries reference latents "
                         "(ReferenceLatent: FLUX.1-Kontext) uses the flux_kontext curve instead (same rule); "
                         "the report says which")
            ui_info = {"preset": r.name, "detected": r.detected, "family": fam.name, **info}
        if target_speedup > 0:
            text += "\ntarget speedup: thresh and K are chosen again at run start for the sampler's real step count"

        def on_report(rep):
            session.last_report = rep
            _host.send_event(REPORT_EVENT, rep)

        base = r if not record else resolve(steps=preview_steps, custom_curve=[1.0, 1.0], family=fam)
        session = MagCacheSession(base, schedule_steps, dev, str(uid) if uid is not None else None, on_report)
        dm = model.get_model_object("diffusion_model")
        prepare = make_prepare(spec, dev, session.node_id, on_report)
        m = apply_magcache(model, session, subset_rows=not hasattr(dm, "vace_blocks"), family=fam,  # VACE: hints
                           prepare=prepare)
        return io.NodeOutput(m, text, ui={"atelier_magcache": [ui_info]})


class AtelierMagCacheReport(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AtelierMagCacheReport", display_name="Atelier MagCache Report", category=CATEGORY,
            description=("The skip report of the last sampling run made with a MagCache model: which calls ran or "
                         "were skipped per branch, computed/total calls and the measured time saved."),
            inputs=[io.Model.Input("model", tooltip="The MODEL output of Atelier MagCache."),
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
                             "output of Atelier MagCache.")
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
    names one (``magcache.resolve.query_model_from_file``, the host's folders; a file of another family than
    Wan: its family by the host's own detection of the header's shapes), then the plan."""
    import folder_paths
    return plan_query(query_model_from_file(query, folder_paths.get_full_path, _host.detect_unet_config))


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
