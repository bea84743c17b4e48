"""MagCache's settings, declared once (:class:`~atelier_settings.SettingsTable`).

The node's widgets and ``validate_inputs``, the web route's query parameters, ``python -m magcache``'s
flags and :class:`~magcache.schedule.MagCacheConfig`'s checks are all built from :data:`SETTINGS`, so a
bound, a default or a message exists in one place. ``thresh``, ``k`` and ``retention`` default to the
Wan2.1 1.3B values; a preset's own recommendation (:attr:`~magcache.presets.Preset.defaults`) replaces
them where the front end leaves them unset (the CLI).
"""
from __future__ import annotations

try:
    from ..atelier_settings import Setting, SettingError, SettingsTable  # type: ignore[import-not-found]
except ImportError:  # the core imported as a top-level package (tests, ``python -m magcache``)
    from atelier_settings import Setting, SettingError, SettingsTable

from typing import Any, Dict, Tuple

from .presets import list_presets
from .schedule import SPLIT_MODES

__all__ = ["SETTINGS", "AUTO", "WAN_PRESETS", "ALL_PRESETS", "SPLIT_MODES", "CACHE_DEVICES", "DEFAULT_SETTINGS",
           "Setting", "SettingError"]

AUTO: str = "auto"
WAN_PRESETS: Tuple[str, ...] = tuple(p for p in list_presets() if p.startswith("wan"))
#: Every shipped curve (Wan first, then FLUX, Kontext, Chroma, Qwen-Image, HunyuanVideo, HunyuanVideo-1.5).
ALL_PRESETS: Tuple[str, ...] = tuple(list_presets())
CACHE_DEVICES: Tuple[str, ...] = ("auto", "cpu")

SETTINGS: SettingsTable = SettingsTable("Atelier MagCache", (
    Setting("preset", AUTO, "Calibrated magnitude-ratio curve. 'auto' picks one from the model's family, size and "
            "type (Wan I2V: 480p curve; pick 720p, the Wan2.2 A14B curves and FLUX Kontext by hand); each curve "
            "runs under its family's official rule.", choices=(AUTO,) + ALL_PRESETS),
    Setting("thresh", 0.12, "Accumulated error allowed before a step must compute. 0 disables skipping. "
            "Official: 0.12 (1.3B), 0.24 (14B); conservative: 0.02.", min=0.0, max=1.0, step=0.005),
    Setting("target_speedup", 0.0, "Ideal speedup wanted (e.g. 2 for about 2x): thresh and k are chosen from the "
            "curve for the actual step count, the least accumulated error among the settings that reach it. "
            "0 = off (use thresh and k).", min=0.0, max=20.0, step=0.05),
    Setting("k", 2, "Most consecutive skipped steps per branch (official 2; conservative 6 with low thresh); "
            "0 never skips.", min=0, max=50),
    Setting("retention", 0.2, "Fraction of the first calls that always compute (official rule counts calls; "
            "Wan2.2 A14B: per expert phase as the official script). Ignored when start_step >= 0.",
            min=0.0, max=1.0, step=0.01),
    Setting("start_step", -1, "Steps before this always compute, both branches; -1 uses retention instead.",
            min=-1, max=10000),
    Setting("end_step", -1, "Steps from this on always compute; -1 = no end.", min=-1, max=10000),
    Setting("protect_last", 0, "Always compute the last N steps (0 keeps the official schedule).", min=0, max=100),
    Setting("cache_device", "auto", "Where cached residuals live: 'auto' keeps them on the model's device; "
            "'cpu' saves GPU memory at a small copy cost.", choices=CACHE_DEVICES),
    Setting("schedule_steps", 0, "Steps of the whole schedule when this sampler runs only part of it "
            "(Wan2.2 A14B: one KSamplerAdvanced per expert, each with this node; the split is where the "
            "high-noise sampler stops); 0 = the sampler's own steps.", min=0, max=10000),
    Setting("preview_steps", 50, "Step count for the schedule preview output (set it to your sampler's steps; "
            "schedule_steps > 0 previews the whole schedule).", flag="--steps", min=1, max=1000),
    Setting("split_step", None, "Wan2.2 A14B: first low-noise step (default: the official split, from the "
            "official scheduler at --steps with the preset's shift and boundary).", kind=int, nullable=True,
            min=0, max=10000),
    Setting("split_mode", None, "Wan2.2 A14B retention rule (default: the preset's).", kind=str, nullable=True,
            choices=SPLIT_MODES),
    Setting("shift", None, "Wan2.2 A14B: sample shift for the official split (default: the preset's official "
            "shift, T2V 12, I2V 5).", kind=float, nullable=True, min=0.01, max=100.0),
))

#: The rule's settings of a custom curve (a preset has its own :attr:`~magcache.presets.Preset.defaults`).
DEFAULT_SETTINGS: Dict[str, Any] = {n: SETTINGS[n].default for n in ("thresh", "k", "retention")}
