"""Magnitude-ratio curves: the :class:`Curve` type, validation and resampling.

A curve holds the calibrated magnitude ratios gamma of one model. With two branches
(classifier-free guidance) it is *interleaved per model call*,
``[cond_0, uncond_0, cond_1, uncond_1, ...]`` of length ``2 * calib_steps``; with one
branch (embedded guidance, or a calibration made at cfg 1) it has one value per step.
The first entry of every branch is a ``1.0`` pad (step 0 has no previous residual).
"""
from __future__ import annotations

import json
import math
from numbers import Real
from typing import Any, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = ["Curve", "CurveLike", "parse_curve", "resample_curve", "as_curve"]

_RATIO_KEYS = ("mag_ratios", "ratios", "values")

CurveLike = Union["Curve", Sequence[float], Mapping[str, Any], str, bytes, bytearray]
"""What :func:`parse_curve` takes: a :class:`Curve`, a sequence of ratios, a dict with ``"mag_ratios"``, or
JSON text (str or bytes) of the last two."""


class Curve(Tuple[float, ...]):
    """An immutable tuple of floats with the number of ``branches`` it interleaves.

    ``Curve([1.0, 1.0, 0.99, 0.98], branches=2)`` is a two-step, two-branch curve.
    ``len(curve)`` is the number of values (``branches * calib_steps``).
    """
    branches: int

    def __new__(cls, values: Iterable[float], branches: int = 2) -> "Curve":
        self = super().__new__(cls, (float(v) for v in values))
        self.branches = int(branches)
        return self

    @property
    def calib_steps(self) -> int:
        """Steps the curve was calibrated at (values per branch)."""
        return len(self) // self.branches

    def columns(self) -> List[List[float]]:
        """The per-branch columns, a list of ``branches`` lists of ``calib_steps`` floats."""
        return [list(self[b::self.branches]) for b in range(self.branches)]

    def __repr__(self) -> str:
        return f"Curve(calib_steps={self.calib_steps}, branches={self.branches})"

    def __reduce__(self) -> Tuple[type, Tuple[Tuple[float, ...], int]]:
        return (Curve, (tuple(self), self.branches))


def _check_values(values: Iterable[object], what: str, branches: int) -> Curve:
    if branches not in (1, 2):
        raise ValueError(f"{what}: branches must be 1 or 2, got {branches!r}")
    out: List[float] = []
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, Real):
            raise ValueError(f"{what}: entry {i} is {v!r}, not a number")
        f = float(v)
        if not math.isfinite(f):
            raise ValueError(f"{what}: entry {i} is {f}, must be finite")
        if f <= 0.0:
            raise ValueError(f"{what}: entry {i} is {f}, must be > 0 (a ratio of norms)")
        out.append(f)
    if len(out) < branches:
        raise ValueError(f"{what}: has {len(out)} values, needs at least {branches} "
                         f"(one per branch and step)")
    if len(out) % branches:
        raise ValueError(f"{what}: has {len(out)} values, which is not a multiple of branches={branches} "
                         "(an interleaved cond/uncond curve has an even length)")
    return Curve(out, branches)


def parse_curve(obj: CurveLike, branches: Optional[int] = None, what: str = "curve") -> Curve:
    """Validate a user or calibrated curve and return a :class:`Curve`.

    Args:
        obj: one of
            * a :class:`Curve` (re-validated),
            * a list/tuple of positive finite numbers (interleaved when ``branches == 2``),
            * a dict with the values under ``"mag_ratios"`` (the format
              :meth:`CalibrationRecorder.to_json` writes), ``"ratios"`` or ``"values"``, and
              optionally ``"branches"`` (1 or 2) or ``"layout": "single_branch"``,
            * JSON text of either of the two previous forms.
        branches: 1 or 2; ``None`` takes it from the object (a Curve, the dict's
            ``"branches"``), else 2. When both are given they must agree.
        what: the input's name used in error messages.

    Raises:
        ValueError: malformed JSON, missing values, a value that is not a finite number > 0,
            a length that is not a multiple of ``branches``, or conflicting ``branches``.
    """
    if isinstance(obj, (bytes, bytearray)):
        obj = obj.decode("utf-8", errors="replace")
    if isinstance(obj, str):
        text = obj.strip()
        if not text:
            raise ValueError(f"{what}: is empty; expected a JSON list of ratios or an object with 'mag_ratios'")
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{what}: malformed JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
                             "expected a list of ratios or an object with 'mag_ratios'") from None
    declared: Optional[int] = None
    if isinstance(obj, Curve):
        declared = obj.branches
    elif isinstance(obj, dict):
        key = next((k for k in _RATIO_KEYS if k in obj), None)
        if key is None:
            raise ValueError(f"{what}: JSON object has no 'mag_ratios' (keys: {sorted(obj)[:8]})")
        if "branches" in obj:
            declared = obj["branches"]
            if isinstance(declared, bool) or not isinstance(declared, int) or declared not in (1, 2):
                raise ValueError(f"{what}: 'branches' is {declared!r}, allowed: 1 or 2")
        elif obj.get("layout") == "single_branch":
            declared = 1
        elif obj.get("layout") == "interleaved_cfg":
            declared = 2
        obj = obj[key]
    if not isinstance(obj, (list, tuple)):
        raise ValueError(f"{what}: expected a list of ratios, got {type(obj).__name__}")
    if branches is not None and declared is not None and int(branches) != declared:
        raise ValueError(f"{what}: has branches={declared} but branches={branches} was requested")
    b = declared if declared is not None else (2 if branches is None else int(branches))
    return _check_values(obj, what, b)


def as_curve(curve: CurveLike, branches: Optional[int] = None, what: str = "curve") -> Curve:
    """``curve`` as a validated :class:`Curve` (cheap when it already is one)."""
    if isinstance(curve, Curve) and (branches is None or branches == curve.branches):
        return curve
    return parse_curve(curve, branches=branches, what=what)


def floor_indices(src_len: int, steps: int) -> List[int]:
    """Source index per target step, the ComfyUI-MagCache node's mapping ``int(j * (src_len - 1) / (steps - 1))``
    (truncation), and ``[src_len - 1]`` for a single step."""
    scale = _index_scale(src_len, steps)
    if scale is None:
        return [src_len - 1]
    return [int(j * scale) for j in range(steps)]


def nearest_indices(src_len: int, steps: int) -> List[int]:
    """Source index per target step, the official ``nearest_interp`` mapping.

    ``round(j * (src_len - 1) / (steps - 1))`` with numpy's round-half-to-even (so ties such
    as 24.5 go to 24), and ``[src_len - 1]`` for a single step.
    """
    scale = _index_scale(src_len, steps)
    if scale is None:
        return [src_len - 1]
    return [int(i) for i in np.round(np.arange(steps) * scale).astype(int)]


def _index_scale(src_len: int, steps: int) -> Optional[float]:
    """Source positions per target step, ``(src_len - 1) / (steps - 1)``, of the two index mappings above;
    None for a single step (it takes the last source entry); ValueError for fewer than one step."""
    if steps < 1:
        raise ValueError(f"steps: {steps} must be >= 1")
    if steps == 1:
        return None
    return (src_len - 1) / (steps - 1)


def resample_curve(ratios_interleaved: CurveLike, steps: int, branches: Optional[int] = None,
                   method: str = "nearest") -> List[List[float]]:
    """Per-branch ratio columns for a run of ``steps`` steps, as the official code resamples.

    Args:
        ratios_interleaved: a curve (see :func:`parse_curve`), ``branches * C`` values.
        steps: the run's step count S >= 1.
        branches: 1 or 2 (default: the curve's own, else 2).
        method: ``"nearest"`` (default) or ``"floor"``.

    Returns:
        ``branches`` lists of S floats. When ``C == S`` the columns are returned as they are;
        otherwise each column is resampled by nearest neighbour with round-half-to-even
        (:func:`nearest_indices`), exactly as ``nearest_interp`` in the official MagCache
        code, or with ``method="floor"`` by the ComfyUI-MagCache node's floor mapping
        (:func:`floor_indices`), which gives other schedules.
    """
    c = as_curve(ratios_interleaved, branches)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps: {steps!r} must be an integer >= 1")
    cols = c.columns()
    if c.calib_steps == steps:
        return cols
    if method not in ("nearest", "floor"):
        raise ValueError(f"method: {method!r} is not allowed; use 'nearest' or 'floor'")
    idx = (floor_indices if method == "floor" else nearest_indices)(c.calib_steps, steps)
    return [[col[i] for i in idx] for col in cols]
