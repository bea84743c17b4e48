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
from typing import Optional, Tuple

from .colorfix import COLOR_FIXES
from .pipeline import PROCESSINGS
from .precision import PRECISIONS
from .tiling import LATENT_PX, TilingConfig
from .video import FRAME_FORMATS, VIDEO_FORMATS

__all__ = ["Setting", "SETTINGS", "OUTPUT_SETTINGS", "UpscaleSettings", "check_settings"]


@dataclass(frozen=True)
class Setting:
    """One user setting: node input name, CLI flag, default, bounds (ints) or choices, help text."""
    name: str
    flag: str
    default: object
    help: str
    min: Optional[int] = None
    max: Optional[int] = None
    multiple: int = 1
    choices: Optional[Tuple[str, ...]] = None
    step: Optional[int] = None      # the widget's step when it is not ``multiple`` (a UI hint, not a rule)

    @property
    def label(self):
        return f"{self.name} ({self.flag})"


_TILE = TilingConfig
SETTINGS = {s.name: s for s in (
    Setting("tile_size", "--tile", 768,
            f"Latent tile in pixels of the ×4 frame (768 = 96 latent px, the official default); frames whose "
            f"latent has more than (tile_size/8)² positions are tiled. 0 = never tile; otherwise "
            f"{_TILE.MIN_TILE * LATENT_PX}..4096 in steps of {LATENT_PX}.",
            min=0, max=4096, multiple=LATENT_PX),
    Setting("tile_overlap", "--overlap", 256,
            f"Overlap of neighbouring latent tiles in pixels of the ×4 frame (a multiple of {LATENT_PX}, "
            "below tile_size), blended with linear ramps.", min=0, max=2048, multiple=LATENT_PX),
    Setting("color_fix", "--color-fix", "adain",
            "Colour correction against the upsampled input: adain (mean/std, the official default), wavelet "
            "(keeps the input's low frequencies) or none.", choices=tuple(COLOR_FIXES)),
    Setting("seed", "--seed", 0, "Seed of VAE posterior sampling; used only with sample_posterior "
            "(otherwise the posterior mean is used and the output is deterministic).", min=0, max=2 ** 64 - 1),
    Setting("window", "--window", 4, "Frames processed as one batch. Larger is faster on a GPU and uses more "
            "memory; the result does not depend on it.", min=1, max=64),
    Setting("vae_tile", "--vae-tile", 0,
            f"VAE tile in latent pixels (0 = no VAE tiling: the host VAE manages memory); otherwise "
            f"{_TILE.MIN_VAE_TILE}..512, overlap min({_TILE.MAX_VAE_OVERLAP}, vae_tile // 4) latent px.",
            min=0, max=512, step=8),
    Setting("process_size", "--process-size", 512,
            "Frames whose ×4 short side is below this are upscaled to it first and the result resized back to "
            "exactly ×4 (512: the size SD2.1-base and DLoRAL were trained at).", min=64, max=2048,
            multiple=LATENT_PX),
    Setting("sample_posterior", "--sample-posterior", False,
            "Sample the VAE posterior with the seed, like the official code (which does it unseeded); "
            "off = posterior mean."),
    Setting("precision", "--precision", "auto",
            "Compute precision. auto: fp32 on CPU; on a GPU the dtype ComfyUI loaded the UNet in (fp16 or bf16). "
            "fp16 / bf16 force half precision (also on CPU, slowly); fp32 on a GPU needs a UNet loaded in fp32.",
            choices=tuple(PRECISIONS)),
    Setting("processing", "--processing", "official",
            "official: the frames are prepared and finished as the official inference script does (8-bit "
            "PIL-exact bicubic ×4, LANCZOS to a multiple of 8, colour fix on the 8-bit decode, truncated output). "
            "float: the same kernels without any 8-bit step (up to a few levels of 255 apart).",
            choices=tuple(PROCESSINGS)),
)}


#: How the CLI writes its output (``--out`` a video file or a folder); the node returns the host's VIDEO or
#: IMAGE and leaves the file format to the host's save nodes. Checked by ``video.resolve_format``.
OUTPUT_SETTINGS = {s.name: s for s in (
    Setting("video_format", "--video-format", "auto",
            "Encoder when --out is a video file: h264 (8-bit, .mp4/.mkv/.mov), h265-10 (H.265 10-bit 4:2:0, "
            ".mkv/.mp4/.mov), prores (ProRes 422 HQ 10-bit, .mov/.mkv); auto: .mp4 -> h264, .mkv -> h265-10, "
            ".mov -> prores.", choices=VIDEO_FORMATS),
    Setting("frames", "--frames", "png",
            "Frame files when --out is a folder: png (8-bit RGB) or tiff16 (16-bit RGB TIFF).",
            choices=tuple(FRAME_FORMATS)),
)}


def _check_one(s, v):
    if s.choices is not None:
        if v not in s.choices:
            raise ValueError(f"{s.label}: {v!r} is not allowed; choose one of {', '.join(s.choices)}")
        return
    if isinstance(s.default, bool):
        if not isinstance(v, bool):
            raise ValueError(f"{s.label}: {v!r} is not allowed; give true or false")
        return
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"{s.label}: {v!r} is not an integer")
    step = f" in steps of {s.multiple}" if s.multiple > 1 else ""
    if not s.min <= v <= s.max:
        raise ValueError(f"{s.label}: {v} is out of range; use {s.min}..{s.max}{step}")
    if v % s.multiple:
        raise ValueError(f"{s.label}: {v} is not a multiple of {s.multiple}; use {s.min}..{s.max}{step}")


@dataclass(frozen=True)
class UpscaleSettings:
    """A checked set of user settings (see the module docstring); field names are the node's inputs."""
    tile_size: int = 768
    tile_overlap: int = 256
    color_fix: str = "adain"
    seed: int = 0
    window: int = 4
    vae_tile: int = 0
    process_size: int = 512
    sample_posterior: bool = False
    precision: str = "auto"
    processing: str = "official"

    def __post_init__(self):
        for f in fields(self):
            _check_one(SETTINGS[f.name], getattr(self, f.name))
        self.tiling()   # the cross-field tiling rules (minimums, overlap < tile)

    def tiling(self) -> TilingConfig:
        """Pixel settings -> latent tiling (raises ValueError naming the input)."""
        return TilingConfig.from_settings(self.tile_size, self.tile_overlap, self.vae_tile,
                                          names={k: SETTINGS[k].label for k in ("tile_size", "tile_overlap",
                                                                                 "vae_tile")})

    def config(self):
        """The pipeline's ``DLoRALConfig`` for these settings."""
        from .pipeline import DLoRALConfig
        t = self.tiling()
        return DLoRALConfig(tile=t.tile, overlap=t.overlap, vae_tile=t.vae_tile, vae_overlap=t.vae_overlap,
                            color_fix=self.color_fix, window=self.window, seed=self.seed,
                            sample_posterior=self.sample_posterior, process_size=self.process_size,
                            processing=self.processing)


def check_settings(**values) -> Optional[str]:
    """None when ``UpscaleSettings(**values)`` is valid, else its message (for a node's validate_inputs).

    A value that is None (an input linked from another node, unknown before the run) is not checked, nor
    is a cross-field rule that involves it; the full check runs again when the settings are built."""
    try:
        if any(v is None for v in values.values()):
            for k, v in values.items():
                if v is not None:
                    _check_one(SETTINGS[k], v)
            t = {k: values.get(k, SETTINGS[k].default) for k in ("tile_size", "tile_overlap", "vae_tile")}
            if None not in t.values():
                UpscaleSettings(**t)
        else:
            UpscaleSettings(**values)
    except ValueError as exc:
        return str(exc)
    return None
