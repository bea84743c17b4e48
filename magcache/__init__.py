"""MagCache (magnitude-aware cache) for diffusion transformers, pure torch.

The skip rule of the official MagCache code, per branch (cond/uncond) with calls-counting
retention, interleaved calibrated curves, round-half-to-even resampling, and the residual of
the whole block stack. Nothing here imports ComfyUI.

* :mod:`.curve` / :mod:`.presets`: calibrated curves and the shipped tables.
* :mod:`.schedule`: :class:`MagCacheConfig`, :class:`RuleVariant`, :func:`plan_schedule` (the schedule preview).
* :mod:`.families`: :class:`Family` descriptions (block stack, curves, rule variant) and their detection.
* :mod:`.target`: :func:`plan_for_target`, thresh and K for a target speedup.
* :mod:`.store`: :class:`CurveStore`, curves recorded during a first run, on disk.
* :mod:`.resolve`: :func:`resolve`, the one resolver (preset / custom curve / ``auto`` + model
  config + settings + steps -> curve and config) of the node, the web route, Calibrate and the CLI.
* :mod:`.state`: :class:`MagCacheRun` (per-run rule state, residual store) and :class:`CallPlan`
  (one model call: rows that compute, row assembly).
* :mod:`.session`: :class:`MagCacheSession`, one sampling run as the host's node runs it
  (sigma -> step, segment and Wan2.2 split from the samplers, timing, report).
* :mod:`.calibrate`: :class:`CalibrationRecorder` for models without a table.
* :mod:`.compare`: PSNR / SSIM / difference image for tuning thresh and K.

The schedule part (curves, presets, config, plan) needs only numpy; the torch parts are
imported on first use, so ``python -m magcache schedule`` starts fast.
"""
import importlib
from typing import Any, Dict

from .curve import Curve, parse_curve, resample_curve
from .presets import Preset, get_preset, list_presets
from .schedule import (MagCacheConfig, RuleVariant, WAN_RULE, Schedule, plan_schedule, locate_segment,
                       high_noise_steps, official_split, BRANCH_NAMES)
from .families import Family, BlockStack, FAMILIES, get_family, list_families, detect_family, family_of_preset
from .target import TargetPlan, TargetError, plan_for_target
from .store import CurveKey, CurveLookup, CurveStore, file_fingerprint
from .settings import SETTINGS
from .resolve import AUTO, Resolved, resolve, detect_preset, query_settings, check_settings

_LAZY: Dict[str, str] = {
    "MagCacheRun": "state", "Decision": "state", "CallPlan": "state", "apply_blocks_with_cache": "state",
    "MagCacheSession": "session",
    "CalibrationRecorder": "calibrate", "residual_stats": "calibrate",
    "psnr": "compare", "ssim": "compare", "difference_image": "compare",
}


def __getattr__(name: str) -> Any:
    """The torch parts (:data:`_LAZY`), imported on first use."""
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{mod}", __name__), name)
    globals()[name] = value
    return value

__all__ = [
    "Curve", "parse_curve", "resample_curve",
    "Preset", "get_preset", "list_presets",
    "MagCacheConfig", "RuleVariant", "WAN_RULE", "Schedule", "plan_schedule",
    "Family", "BlockStack", "FAMILIES", "get_family", "list_families", "detect_family", "family_of_preset",
    "TargetPlan", "TargetError", "plan_for_target", "CurveKey", "CurveLookup", "CurveStore", "file_fingerprint", "locate_segment", "high_noise_steps", "official_split",
    "BRANCH_NAMES", "AUTO", "SETTINGS", "Resolved", "resolve", "detect_preset", "query_settings", "check_settings",
    "MagCacheRun", "Decision", "CallPlan", "apply_blocks_with_cache", "MagCacheSession",
    "CalibrationRecorder", "residual_stats",
    "psnr", "ssim", "difference_image",
]
