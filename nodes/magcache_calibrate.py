"""MagCache Calibrate node (V3): sample once without caching and record the block-stack residual per call.

Hooks on a clone only, the MagCache node's own (``magcache_hook.apply_magcache``, every family it hooks)
with a recording session: each call's step (the core's ``CalibrationRecorder.step_of``) and branches,
and the tokens entering and leaving the block stack, go to ``CalibrationRecorder.record_call``. The
curve it writes goes through the core resolver, so the MagCache node accepts it as is.
The node is registered through ``magcache_nodes.NODES``.
"""

from comfy_api.latest import io

from ..magcache import CalibrationRecorder, resolve
from ..magcache.calibrate import check_curve_name, save_curve
from ..magcache.resolve import wan_model_info
from . import _host
from ._settings_io import validator

CATEGORY = "Atelier/MagCache"


def wan_config(model):
    """What ``auto`` needs of a Wan model (``magcache.resolve.wan_model_info``), or a ValueError naming the input."""
    dm = model.get_model_object("diffusion_model")
    cfg = getattr(getattr(model.model, "model_config", None), "unet_config", {})
    return wan_model_info(cfg, type(dm).__name__, hasattr(dm, "blocks"))


def calibrate_run(model, positive, negative, latent_image, seed, steps, cfg, sampler_name, scheduler):
    """Run the host sampler once with recording; returns (LATENT, curve JSON text). The recording runs through
    the MagCache hooks of the model's family (:func:`.magcache_hook.apply_magcache` with a
    :class:`.magcache_run.RecordRun` session: every call computes, the stack's input and output go to the
    recorder), so every family the MagCache node hooks can be calibrated."""
    import nodes as host_nodes  # the host's nodes module (KSampler path)
    from ..magcache.settings import AUTO
    from .magcache_hook import apply_magcache, stack_of
    from .magcache_run import RecordRun, model_family
    fam = model_family(model, AUTO, None)
    stack_of(model, fam)
    recorder = CalibrationRecorder(branches=2 if cfg != 1.0 else 1)
    m = apply_magcache(model, RecordRun(recorder, None, None, None, "calibrate", None), family=fam)
    (out,) = host_nodes.common_ksampler(m, seed, steps, cfg, sampler_name, scheduler, positive, negative,
                                        latent_image)
    curve_json = recorder.to_json()
    resolve("custom", steps=steps, custom_curve=curve_json, family=fam)  # what the MagCache node will accept
    return out, curve_json


def _named_check(check, value):
    """A core check that returns a message (or None), raised as ValueError for ``validate_inputs``."""
    msg = None if value is None else check(value)
    if msg is not None:
        raise ValueError(msg)


class AtelierMagCacheCalibrate(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        import comfy.samplers
        return io.Schema(
            node_id="AtelierMagCacheCalibrate", display_name="Atelier MagCache Calibrate", category=CATEGORY,
            description=("Samples once without caching while recording, per call and branch, the mean per-token "
                         "L2 magnitude ratio of the block-stack residual (plus its std and cosine distance). "
                         "Outputs a curve for Atelier MagCache (custom_curve) and saves it as JSON in the output "
                         "folder."),
            inputs=[
                io.Model.Input("model", tooltip=("The model to calibrate, of any family Atelier MagCache hooks "
                                                 "(no MagCache on it).")),
                io.Conditioning.Input("positive", tooltip="Positive prompt of the calibration sample."),
                io.Conditioning.Input("negative", tooltip="Negative prompt (used when cfg > 1)."),
                io.Latent.Input("latent_image", tooltip="Empty latent of the size you will render at."),
                io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, tooltip="Noise seed."),
                io.Int.Input("steps", default=50, min=2, max=1000, tooltip=(
                    "Steps of the calibration run; the curve is resampled to other step counts.")),
                io.Float.Input("cfg", default=5.0, min=0.0, max=100.0, step=0.1,
                               tooltip="CFG scale; > 1 calibrates cond and uncond separately."),
                io.Combo.Input("sampler_name", options=comfy.samplers.KSampler.SAMPLERS,
                               tooltip="Sampler (use a 1st-order one, e.g. euler)."),
                io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS, tooltip="Scheduler."),
                io.String.Input("name", default="my_wan_model", tooltip=(
                    "Name (letters, digits, - and _) of the JSON saved under output/atelier_magcache/ as "
                    "<name>_NNNNN.json; earlier files are never overwritten.")),
            ],
            outputs=[
                io.Latent.Output(display_name="samples", tooltip="The uncached sample of the calibration run."),
                io.String.Output(display_name="curve_json", tooltip=(
                    "The calibrated curve (mag_ratios interleaved cond/uncond, plus std and cosine distance); "
                    "feed it to custom_curve of Atelier MagCache.")),
                io.String.Output(display_name="saved_path", tooltip=(
                    "Where the JSON was written: output/atelier_magcache/<name>_NNNNN.json (a new file each run).")),
            ],
        )

    validate_inputs = validator(None, combos=("sampler_name", "scheduler"), more=("name",),
                                extra=lambda v: _named_check(check_curve_name, v.get("name")))

    @classmethod
    def execute(cls, model, positive, negative, latent_image, seed, steps, cfg, sampler_name, scheduler, name):
        msg = check_curve_name(name)
        if msg is not None:
            raise ValueError(f"Atelier MagCache Calibrate: {msg}")
        samples, curve_json = calibrate_run(model, positive, negative, latent_image, seed, steps, cfg,
                                            sampler_name, scheduler)
        return io.NodeOutput(samples, curve_json, save_curve(curve_json, name, _host.output_directory()))

