"""The shipped calibrated curves (``data/magcache_ratios.json``) as named presets.

Names are the keys of the research table, e.g. ``"wan2.1_t2v_1.3B"``. Values are the
official MagCache calibrations copied verbatim; defaults (thresh, K, retention) are the
official README recommendations per model.

Every preset belongs to one :class:`~magcache.families.Family`, whose
:class:`~magcache.schedule.RuleVariant` (the variant of the official rule its official script
applies: ``<`` or ``<=``, retention rounding, resampling, FLUX's never-skipped step) is put in the
preset's :meth:`Preset.config`; the one rule of :mod:`magcache.schedule` applies it.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Dict, List, Optional, Tuple

from .curve import Curve
from .schedule import MagCacheConfig, RuleVariant, official_split

__all__ = ["Preset", "list_presets", "get_preset"]

_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "magcache_ratios.json")


@dataclass(frozen=True)
class Preset:
    """One calibrated curve.

    Attributes:
        name: preset name.
        ratios: the curve (:class:`~magcache.curve.Curve`, a tuple of floats), interleaved
            ``[c0, u0, c1, u1, ...]`` when ``branches == 2``, one per step when 1.
        calib_steps: steps of the calibration run (``len(ratios) == branches * calib_steps``).
        branches: 2 for separate cond/uncond calls (CFG), 1 for single-branch curves.
        defaults: ``{"thresh", "k", "retention"}`` recommended by the official README.
        description: one line for people.
        split_step: Wan2.2 A14B: first low-noise step at ``calib_steps`` (None otherwise).
        split_mode: ``"t2v"`` or ``"i2v"`` official Wan2.2 retention rule (None otherwise).
        boundary: Wan2.2 A14B expert boundary in sigma (None otherwise); see
            :func:`~magcache.schedule.high_noise_steps`.
        shift: Wan2.2 A14B official sample shift (T2V 12, I2V 5; None otherwise), used with
            ``boundary`` by :func:`official_split`.
        source: where the values come from.
    """
    name: str
    ratios: Curve
    calib_steps: int
    branches: int
    defaults: Dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    description: str = ""
    split_step: Optional[int] = None
    split_mode: Optional[str] = None
    boundary: Optional[float] = None
    shift: Optional[float] = None
    source: Tuple[str, ...] = ()

    def split_for(self, steps: int, shift: Optional[float] = None) -> Optional[int]:
        """Wan2.2 A14B: the first low-noise step at ``steps`` steps as the official script
        computes it (:func:`official_split` with this preset's ``shift`` and ``boundary``, or
        ``shift`` when given); None for one-expert presets. In ComfyUI the samplers give the
        split (where the high-noise sampler's segment ends), see
        :class:`~magcache.session.MagCacheSession`."""
        if self.split_step is None:
            return None
        sh = self.shift if shift is None else shift
        if sh is None or self.boundary is None:
            raise ValueError(f"preset {self.name}: the official split needs a shift and a boundary "
                             f"(shift={sh!r}, boundary={self.boundary!r})")
        return official_split(steps, sh, self.boundary)

    @property
    def family(self) -> str:
        """The name of the :class:`~magcache.families.Family` this curve belongs to."""
        from .families import family_of_preset
        return family_of_preset(self.name).name

    @property
    def variant(self) -> RuleVariant:
        """The rule variant of this curve's family."""
        from .families import family_of_preset
        return family_of_preset(self.name).variant

    def config(self, steps: Optional[int] = None, **overrides: Any) -> MagCacheConfig:
        """A validated :class:`MagCacheConfig` from the defaults and the family's rule variant, with
        ``overrides`` applied. For Wan2.2 A14B presets it also sets ``split_mode`` and, when ``steps`` is
        given, ``split_step = split_for(steps)``."""
        kw: Dict[str, Any] = dict(self.defaults)
        kw["variant"] = self.variant
        if self.split_mode is not None:
            kw["split_mode"] = self.split_mode
            if steps is not None:
                kw["split_step"] = self.split_for(steps)
        kw.update(overrides)
        return MagCacheConfig(**kw).validate()


@lru_cache(maxsize=1)
def _load() -> Dict[str, Preset]:
    with open(_DATA, "r", encoding="utf-8") as f:
        data = json.load(f)
    out = {}
    for name, e in data["presets"].items():
        curve = Curve(e["ratios"], e["branches"])
        if len(curve) != e["branches"] * e["calib_steps"]:
            raise RuntimeError(f"corrupt preset table {_DATA}: {name} has {len(curve)} values")
        out[name] = Preset(name=name, ratios=curve, calib_steps=e["calib_steps"], branches=e["branches"],
                           defaults=dict(e["defaults"]), description=e.get("description", ""),
                           split_step=e.get("split_step"), split_mode=e.get("split_mode"),
                           boundary=e.get("boundary"), shift=e.get("shift"), source=tuple(e.get("source", ())))
    return out


def list_presets() -> List[str]:
    """Names of all shipped presets, in table order (Wan2.1, Wan2.2, then others)."""
    return list(_load())


def get_preset(name: str) -> Preset:
    """The :class:`Preset` called ``name``; ValueError listing the allowed names otherwise."""
    presets = _load()
    if name not in presets:
        raise ValueError(f"preset: {name!r} is not a known preset; allowed: {', '.join(presets)}")
    return presets[name]
