"""The settings a user gives an upscaling run, checked once: the one constructor of node and CLI.

``UpscaleSettings`` holds what the node's widgets and the CLI's flags hold, in the units they are
shown in (tile sizes in pixels of the ×4 frame, the VAE tile in latent pixels). Building one checks
every value (bounds, multiples, choices) and every cross-field rule (``tile_overlap < tile_size``) and
raises ``ValueError`` naming the input (node name and CLI flag), the value and what is allowed;
``.config()`` turns it into the pipeline's :class:`~dloral.pipeline.DLoRALConfig` through
:meth:`~dloral.tiling.TilingConfig.from_settings` (pixels -> latent pixels, the VAE overlap rule).

``SETTINGS`` is the table both front ends are built from: the node's widget defaults and bounds and
the CLI's flags and defaults, so the two cannot drift apart. ``check_settings`` returns the message
instead of raising (the node's ``validate_inputs``).
"""
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from .pipeline import DLoRALConfig

try:
    from ..atelier_settings import Setting, SettingError, SettingsTable  # type: ignore[import-not-found]
except ImportError:  # the core imported as a top-level package (tests, ``python -m dloral``)
    from atelier_settings import Setting, SettingError, SettingsTable

from .colorfix import COLOR_FIXES
from .pipeline import PROCESSINGS
from .precision import PRECISIONS
from .tiling import LATENT_PX, TilingConfig
from .video import FRAME_FORMATS, VIDEO_FORMATS

__all__ = ["Setting", "SettingError", "SETTINGS", "OUTPUT_SETTINGS", "JOB_SETTINGS", "CONVERT_SETTINGS",
           "UpscaleSettings", "check_settings"]


_TILE = TilingConfig
SETTINGS = SettingsTable("Atelier DLoRAL Upscale", (
    Setting("tile_size", 768,
            f"Latent tile in pixels of the ×4 frame (768 = 96 latent px, the official default); frames whose "
            f"latent has more than (tile_size/8)² positions are tiled. 0 = never tile; otherwise "
            f"{_TILE.MIN_TILE * LATENT_PX}..4096 in steps of {LATENT_PX}.",
            flag="--tile", min=0, max=4096, multiple=LATENT_PX),
    Setting("tile_overlap", 256,
            f"Overlap of neighbouring latent tiles in pixels of the ×4 frame (a multiple of {LATENT_PX}, "
            "below tile_size), blended with linear ramps.", flag="--overlap", min=0, max=2048, multiple=LATENT_PX),
    Setting("color_fix", "adain",
            "Colour correction against the upsampled input: adain (mean/std, the official default), wavelet "
            "(keeps the input's low frequencies) or none.", choices=tuple(COLOR_FIXES)),
    Setting("seed", 0, "Seed of VAE posterior sampling; used only with sample_posterior "
            "(otherwise the posterior mean is used and the output is deterministic).", min=0, max=2 ** 64 - 1),
    Setting("window", 4, "Frames processed as one batch. Larger is faster on a GPU and uses more "
            "memory; the result does not depend on it.", min=1, max=64),
    Setting("vae_tile", 0,
            f"VAE tile in latent pixels (0 = no VAE tiling: the host VAE manages memory); otherwise "
            f"{_TILE.MIN_VAE_TILE}..512, overlap min({_TILE.MAX_VAE_OVERLAP}, vae_tile // 4) latent px.",
            min=0, max=512, step=8),
    Setting("process_size", 512,
            "Frames whose ×4 short side is below this are upscaled to it first and the result resized back to "
            "exactly ×4 (512: the size SD2.1-base and DLoRAL were trained at).", min=64, max=2048,
            multiple=LATENT_PX),
    Setting("sample_posterior", False,
            "Sample the VAE posterior with the seed, like the official code (which does it unseeded); "
            "off = posterior mean."),
    Setting("precision", "auto",
            "Compute precision. auto: fp32 on CPU; on a GPU the dtype ComfyUI loaded the UNet in (fp16 or bf16). "
            "fp16 / bf16 force half precision (also on CPU, slowly); fp32 on a GPU needs a UNet loaded in fp32.",
            choices=tuple(PRECISIONS)),
    Setting("processing", "official",
            "official: the frames are prepared and finished as the official inference script does (8-bit "
            "PIL-exact bicubic ×4, LANCZOS to a multiple of 8, colour fix on the 8-bit decode, truncated output). "
            "float: the same kernels without any 8-bit step (up to a few levels of 255 apart).",
            choices=tuple(PROCESSINGS)),
))


#: How the CLI writes its output (``--out`` a video file or a folder); the node returns the host's VIDEO or
#: IMAGE and leaves the file format to the host's save nodes. Checked by ``video.resolve_format``.
OUTPUT_SETTINGS = SettingsTable("dloral upscale output", (
    Setting("video_format", "auto",
            "Encoder when --out is a video file: h264 (8-bit, .mp4/.mkv/.mov), h265-10 (H.265 10-bit 4:2:0, "
            ".mkv/.mp4/.mov), prores (ProRes 422 HQ 10-bit, .mov/.mkv); auto: .mp4 -> h264, .mkv -> h265-10, "
            ".mov -> prores.", choices=tuple(VIDEO_FORMATS)),
    Setting("frames", "png",
            "Frame files when --out is a folder: png (8-bit RGB) or tiff16 (16-bit RGB TIFF).",
            choices=tuple(FRAME_FORMATS)),
))


#: How the CLI splits a long run (``dloral.chunks``, ``dloral.job``): chunks of whole windows, each a finished
#: part in a job folder beside --out, so a rerun of the same command resumes. Checked against ``window`` by
#: ``chunks.ChunkPlan``.
JOB_SETTINGS = SettingsTable("dloral upscale job", (
    Setting("chunk", 0,
            "Frames per chunk (a multiple of --window; 0 = one pass, no job folder). Each finished chunk is kept "
            "in .NAME.dloral-job beside --out, so after an interruption the same command resumes where it stopped; "
            "the frames are the one-pass frames bit for bit on a CPU.", min=0, max=1_000_000),
))

#: What the converter writes (``python -m dloral convert --precision`` and the Convert node's ``precision``).
CONVERT_SETTINGS = SettingsTable("Atelier DLoRAL Convert", (
    Setting("precision", "fp32",
            "Storage precision of the converted tensors. fp32 (default) keeps the official output on a CPU "
            "(decoded frames 2e-5 apart); fp16 halves the file but rounds the LoRA and CFR weights: decoded "
            "frames up to 2e-3 apart, 95.8 % of 8-bit values identical.", choices=("fp32", "fp16")),
))


@dataclass(frozen=True)
class UpscaleSettings:
    """A checked set of user settings (see the module docstring); field names are the node's inputs."""
    tile_size: int = SETTINGS["tile_size"].default
    tile_overlap: int = SETTINGS["tile_overlap"].default
    color_fix: str = SETTINGS["color_fix"].default
    seed: int = SETTINGS["seed"].default
    window: int = SETTINGS["window"].default
    vae_tile: int = SETTINGS["vae_tile"].default
    process_size: int = SETTINGS["process_size"].default
    sample_posterior: bool = SETTINGS["sample_posterior"].default
    precision: str = SETTINGS["precision"].default
    processing: str = SETTINGS["processing"].default

    def __post_init__(self) -> None:
        for f in fields(self):
            SETTINGS[f.name].check(getattr(self, f.name))
        self.tiling()   # the cross-field tiling rules (minimums, overlap < tile)

    def tiling(self) -> TilingConfig:
        """Pixel settings -> latent tiling (raises ValueError naming the input)."""
        return TilingConfig.from_settings(self.tile_size, self.tile_overlap, self.vae_tile,
                                          names={k: SETTINGS[k].label for k in ("tile_size", "tile_overlap",
                                                                                 "vae_tile")})

    def config(self) -> "DLoRALConfig":
        """The pipeline's ``DLoRALConfig`` for these settings."""
        from .pipeline import DLoRALConfig
        t = self.tiling()
        return DLoRALConfig(tile=t.tile, overlap=t.overlap, vae_tile=t.vae_tile, vae_overlap=t.vae_overlap,
                            color_fix=self.color_fix, window=self.window, seed=self.seed,
                            sample_posterior=self.sample_posterior, process_size=self.process_size,
                            processing=self.processing)


def check_settings(**values: Any) -> Optional[str]:
    """None when ``UpscaleSettings(**values)`` is valid, else its message (for a node's validate_inputs).

    A value that is None (an input linked from another node, unknown before the run) is not checked, nor
    is a cross-field rule that involves it; the full check runs again when the settings are built."""
    try:
        if any(v is None for v in values.values()):
            for k, v in values.items():
                if v is not None:
                    SETTINGS[k].check(v)
            t = {k: values.get(k, SETTINGS[k].default) for k in ("tile_size", "tile_overlap", "vae_tile")}
            if None not in t.values():
                UpscaleSettings(**t)
        else:
            UpscaleSettings(**values)
    except ValueError as exc:
        return str(exc)
    return None
