"""NAG's settings, declared once (:class:`~atelier_settings.SettingsTable`).

The node's widgets and ``validate_inputs``, :class:`~nag.config.NAGConfig`'s checks and
:func:`~nag.combine.check_nag_params` are built from :data:`SETTINGS`. Defaults are the Wan2.1 values at
cfg 1 (research note section 2.2).
"""
from __future__ import annotations

try:
    from ..atelier_settings import Setting, SettingError, SettingsTable  # type: ignore[import-not-found]
except ImportError:  # the core imported as a top-level package (tests)
    from atelier_settings import Setting, SettingError, SettingsTable

__all__ = ["SETTINGS", "Setting", "SettingError"]

SETTINGS = SettingsTable("Atelier NAG", (
    Setting("scale", 11.0, "Guidance strength s (extrapolation s*Z+ - (s-1)*Z-; the paper's phi is s-1). "
            "1 turns NAG off; Wan at cfg 1: 9-11; with cfg > 1 lower (e.g. 5-9).", min=1.0, max=100.0, step=0.1),
    Setting("tau", 2.5, "Largest allowed L1 norm ratio of the guided to the positive attention output per "
            "token; larger = stronger, riskier. Few-step models: up to 3.5.", min=1.0, max=10.0, step=0.05),
    Setting("alpha", 0.25, "Blend of the guided output into the positive one (0 = off). Few-step: up to 0.5.",
            min=0.0, max=1.0, step=0.01),
    Setting("sigma_end", 0.0, "Guidance stops below this sigma (Wan sigmas run from 1 to 0); 0 = every step. "
            "E.g. 0.75 skips the cost on late detail steps.", min=0.0, max=100.0, step=0.01),
))
