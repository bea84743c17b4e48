"""DLoRAL nodes (V3 schema): load/convert the official weights and upscale IMAGE frames (a batch is a video)
or the host's VIDEO (frames, frame rate, audio) ×4.

The VIDEO node (registered only where the host's V3 ``io`` has ``Video``: v0.3.64 and v0.8.0 do) splits the
VIDEO into its frames, frame rate and audio, runs the frames through the same path as the IMAGE node and
builds a VIDEO from the ×4 frames, the same frame rate and the same audio object, untouched (the host's
SaveVideo encodes it: AAC in an .mp4). The host's VIDEO holds one frame rate: per-frame timestamps of a
variable-rate clip are not kept here (the CLI keeps them).

Thin: the settings are checked by the core's ``dloral.settings.UpscaleSettings`` (the constructor the CLI
uses too; ``validate_inputs`` returns its message before anything runs) and the widgets' defaults, bounds
and tooltips come from its table ``SETTINGS``; the host plumbing (LoRA and conv_in patches on a clone,
the base-model check, the host UNet/VAE as callables) is ``dloral_host``.
"""
import logging
import os

import torch
from comfy_api.latest import io

from ..dloral import convert_file, load_weights
from ..dloral.checkpoint import STORAGE_DTYPES, check_output_name, converted_path, file_sha256
from ..dloral.pipeline import check_images
from ..dloral.settings import CONVERT_SETTINGS, SETTINGS, UpscaleSettings, check_settings
from ._host import progress_bar, throw_if_interrupted
from ._settings_io import validator, widget, widgets
from .dloral_host import (EXTS, FOLDER, check_sd2, full_path, host_models, model_files, patch_model,  # noqa: F401
                          register_folder, run_upscale)

log = logging.getLogger("atelier")

DLORAL = io.Custom("DLORAL")
PKL_EXTS = {".pkl", ".pth"}
CATEGORY = "Atelier/Video"

register_folder()

def _fingerprint_in_folder(name):
    try:
        return file_sha256(full_path("name", name)) if name else None
    except ValueError:
        return None   # a missing file: the run reports it


class AtelierDLoRALLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AtelierDLoRALLoader", display_name="Atelier DLoRAL Load Weights", category=CATEGORY,
            description="Load DLoRAL weights: a converted .safetensors (small, fast) or the official model.pkl "
                        "(opened safely with weights_only, converted in memory). Files live in models/dloral.",
            inputs=[io.Combo.Input("weights_name", options=model_files(EXTS),
                                   tooltip="DLoRAL weights in models/dloral: a .safetensors made by 'Atelier DLoRAL "
                                           "Convert' or the official model.pkl.")],
            outputs=[DLORAL.Output("dloral", display_name="dloral", tooltip="The DLoRAL weights (LoRA deltas, 8-channel conv_in, CFR) and "
                                                     "the fingerprint of their base model, for 'Atelier DLoRAL "
                                                     "Video Upscale ×4'.")])

    validate_inputs = validator(None, combos=("weights_name",))

    @classmethod
    def fingerprint_inputs(cls, weights_name):
        return _fingerprint_in_folder(weights_name)

    @classmethod
    def execute(cls, weights_name):
        return io.NodeOutput(load_weights(full_path("weights_name", weights_name)))


class AtelierDLoRALConvert(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AtelierDLoRALConvert", display_name="Atelier DLoRAL Convert", category=CATEGORY,
            description="Convert the official DLoRAL model.pkl (3.6 GB, opened with weights_only; nothing in it "
                        "runs) to a small .safetensors in models/dloral: merged LoRA deltas in ComfyUI's SD2 UNet "
                        "naming, the 8-channel input conv, the CFR weights and a fingerprint of the base UNet "
                        "(checked against your SD2.1 when upscaling). An existing file is never overwritten.",
            is_output_node=True,
            inputs=[
                io.Combo.Input("pkl_name", options=model_files(PKL_EXTS),
                               tooltip="The official DLoRAL checkpoint in models/dloral."),
                io.String.Input("output_name", default="dloral.safetensors",
                                tooltip="File name of the converted weights (written to models/dloral; "
                                        "must end with .safetensors and not exist yet)."),
                widget(CONVERT_SETTINGS["precision"]),
            ],
            outputs=[io.String.Output("path", display_name="path", tooltip="Full path of the converted .safetensors file.")])

    validate_inputs = validator(CONVERT_SETTINGS, ("precision",), combos=("pkl_name",), more=("output_name",),
                                extra=lambda v: _check(None if v.get("output_name") is None
                                                       else check_output_name(v["output_name"])))

    @classmethod
    def fingerprint_inputs(cls, pkl_name, output_name, precision):
        dst = os.path.join(register_folder().get_folder_paths(FOLDER)[0], os.path.basename(output_name.strip()))
        return _fingerprint_in_folder(pkl_name), output_name, precision, os.path.exists(dst)

    @classmethod
    def execute(cls, pkl_name, output_name, precision):
        src = full_path("pkl_name", pkl_name)
        dst = converted_path(register_folder().get_folder_paths(FOLDER)[0], output_name)
        convert_file(src, dst, dtype=STORAGE_DTYPES[precision])
        log.info("atelier: DLoRAL weights converted to %s", dst)
        return io.NodeOutput(dst, ui={"text": [dst]})


#: The Upscale nodes' settings: the required widgets, then the optional ones (older workflows lack them).
REQUIRED = ("tile_size", "tile_overlap", "color_fix", "seed", "window")
OPTIONAL = tuple(n for n in SETTINGS if n not in REQUIRED)


def _check(message):
    """The cross-field rules of ``check_settings`` (tile_overlap < tile_size, tiling minimums)."""
    if message is not None:
        raise ValueError(message)


def _upscale(model, vae, positive, dloral, images, tile_size, tile_overlap, color_fix, seed, window,
             vae_tile=0, process_size=512, sample_posterior=False, precision="auto", processing="official"):
    """IMAGE (N, H, W, 3) -> IMAGE (N, 4H, 4W, 3): the one path of both upscale nodes."""
    check_images(images)
    settings = UpscaleSettings(tile_size=tile_size, tile_overlap=tile_overlap, color_fix=color_fix, seed=seed,
                               window=window, vae_tile=vae_tile, process_size=process_size,
                               sample_posterior=sample_posterior, precision=precision, processing=processing)
    models = host_models(model, vae, positive, dloral, settings.sample_posterior, settings.precision)
    n = images.shape[0]
    pbar = progress_bar(n)

    def progress(i):
        throw_if_interrupted()
        pbar.update_absolute(i + 1, n)

    with torch.inference_mode():
        return run_upscale(models, images, settings.config(), progress)


def _inputs(frames_input):
    """The upscale nodes' inputs, ``frames_input`` (IMAGE or VIDEO) in the fifth place."""
    return [
        io.Model.Input("model", tooltip="Stable Diffusion 2.1-base (512, epsilon) UNet, e.g. from Load "
                                        "Checkpoint; checked against the DLoRAL weights' base fingerprint."),
        io.Vae.Input("vae", tooltip="The SD2.1 VAE (from the same checkpoint)."),
        io.Conditioning.Input("positive", tooltip="Prompt from the SD2.1 text encoder; a fixed quality "
                                                  "prompt such as 'high quality, detailed, clean, natural' "
                                                  "works well."),
        DLORAL.Input("dloral", tooltip="Weights from 'Atelier DLoRAL Load Weights'."),
        frames_input,
        *widgets(SETTINGS, REQUIRED), *widgets(SETTINGS, OPTIONAL, optional=True),
    ]


class AtelierDLoRALUpscale(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AtelierDLoRALUpscale", display_name="Atelier DLoRAL Video Upscale ×4", category=CATEGORY,
            description="DLoRAL one-step video super-resolution ×4 on an SD2.1-base model. Every input frame gets "
                        "an output frame (frame 0 is paired with itself); deterministic; frames are processed in "
                        "windows so memory does not grow with the clip length.",
            inputs=_inputs(io.Image.Input("images", tooltip="Video frames (a batch is a video, in order); all the "
                                                            "same size.")),
            outputs=[io.Image.Output("upscaled", display_name="images", tooltip="The frames ×4 (N, 4H, 4W, 3), one per input frame, in order.")])

    validate_inputs = validator(SETTINGS, extra=lambda v: _check(check_settings(**v)))

    @classmethod
    def execute(cls, model, vae, positive, dloral, images, *settings, **named):
        return io.NodeOutput(_upscale(model, vae, positive, dloral, images, *settings, **named))


class AtelierDLoRALUpscaleVideo(io.ComfyNode):
    """The IMAGE node on the host's VIDEO: frames ×4, the frame rate and the audio passed through."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AtelierDLoRALUpscaleVideo", display_name="Atelier DLoRAL Upscale ×4 (Video)", category=CATEGORY,
            description="DLoRAL ×4 on a VIDEO (e.g. from Load Video): the frames are upscaled as by 'Atelier "
                        "DLoRAL Video Upscale ×4'; the frame rate and the audio are passed through untouched to "
                        "the output VIDEO (Save Video writes them). One frame rate: a variable-rate clip's "
                        "per-frame timing is not kept (the CLI keeps it).",
            inputs=_inputs(io.Video.Input("video", tooltip="The clip: its frames are upscaled, its frame rate and "
                                                           "audio kept.")),
            outputs=[io.Video.Output("upscaled", display_name="video",
                                     tooltip="The clip ×4: every frame in order, the input's frame rate and audio.")])

    validate_inputs = AtelierDLoRALUpscale.validate_inputs   # the same settings, the same checks

    @classmethod
    def execute(cls, model, vae, positive, dloral, video, *settings_args, **settings):
        from comfy_api.latest import InputImpl, Types
        c = video.get_components()
        frames = _upscale(model, vae, positive, dloral, c.images, *settings_args, **settings)
        return io.NodeOutput(InputImpl.VideoFromComponents(
            Types.VideoComponents(images=frames, audio=c.audio, frame_rate=c.frame_rate)))


NODES = [AtelierDLoRALLoader, AtelierDLoRALConvert, AtelierDLoRALUpscale]
if hasattr(io, "Video"):   # the host's VIDEO type in its V3 API (v0.3.64 and v0.8.0 have it)
    NODES.append(AtelierDLoRALUpscaleVideo)
NODE_CLASS_MAPPINGS = {c.define_schema().node_id: c for c in NODES}
NODE_DISPLAY_NAME_MAPPINGS = {c.define_schema().node_id: c.define_schema().display_name for c in NODES}
