"""The MagCache skip rule and the schedule it gives, as pure functions.

The rule (official MagCache for Wan2.1, ``MagCache4Wan2.1/magcache_generate.py``), per
branch ``b`` (0 = cond, 1 = uncond) with its own accumulators, for every model call that
is not *protected*::

    ratio[b] *= gamma_b[step]; n[b] += 1; err[b] += |1 - ratio[b]|
    if err[b] < thresh and n[b] <= K:  skip (reuse b's cached residual)
    else:                              compute, and ratio[b], err[b], n[b] = 1, 0, 0

A protected call always computes and leaves the accumulators as they are (as the official
retention does). Protection, in this order:

* ``end_step``: steps ``>= end_step`` (global index) always compute;
* ``protect_last``: the last ``protect_last`` steps of the whole schedule always compute;
* ``start_step`` (when given) *replaces* retention: steps ``< start_step`` compute, both branches;
* otherwise retention counts **calls**: with two branches the call index is
  ``2 * step + branch`` and calls ``< int(2 * S * retention)`` compute (so an odd count
  protects the cond call of a step but not its uncond call); with one branch the call index
  is the step and ``int(S * retention)`` steps compute;
* Wan2.2 A14B (``split_step`` = first step of the low-noise expert), as the official Wan2.2
  script: ``split_mode="t2v"`` protects calls ``< int(split * r)`` and the calls
  ``split <= c <= (N - split) * r + split`` (retention restarts at the expert switch);
  ``split_mode="i2v"`` protects calls ``< int(split + (N - split) * r)`` (the high-noise
  expert never skips). Here ``split = branches * split_step`` and ``N = branches * S``.

The rule has a few *variants* (:class:`RuleVariant`), one per family of official scripts
(``magcache.families``): the threshold test ``<`` (Wan, Qwen-Image) or ``<=`` (FLUX,
HunyuanVideo); retention counted on calls or on steps, rounded down ``int(x)`` or to nearest
``int(x + 0.5)`` (FLUX); the curve resampled by nearest index with round-half-to-even (the
research scripts) or by floor (the ComfyUI node); FLUX's never-skipped step
(``round(step * 27 / (S - 1)) == 11``). The variant is a field of :class:`MagCacheConfig`,
applied here by the one :class:`RuleState`; there is no other copy of the rule.

``thresh == 0`` never skips, whatever the variant (with ``<=`` an error of exactly 0, a
ratio of exactly 1.0, would otherwise skip: the official node returns the model unchanged at 0).

One guard is added to the official rule: a branch never skips while it has no cached
residual (the official code relies on retention; with retention 0 or at the start of a
segment it would use a missing residual). When the guard fires the call computes and the
accumulators reset, as for any computed call.

The decision depends only on (curve, S, config, step range), never on tensors, so the
schedule can be shown before a run (:func:`plan_schedule`) and is reproduced call by call
at sampling time by :class:`magcache.state.MagCacheRun`, which shares :class:`RuleState`.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, asdict
from numbers import Real
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple, TypeGuard, Union

from .curve import as_curve, resample_curve, parse_curve, Curve, CurveLike  # noqa: F401 (re-exported)

if TYPE_CHECKING:   # torch is imported on first use only (``python -m magcache schedule`` starts fast)
    import torch

__all__ = ["RuleVariant", "WAN_RULE", "MagCacheConfig", "Schedule", "plan_schedule", "resample_curve", "parse_curve",
           "locate_segment", "high_noise_steps", "official_split", "RuleState", "BRANCH_NAMES",
           "StepRange", "Sigmas"]

BRANCH_NAMES: Tuple[str, str] = ("cond", "uncond")
SPLIT_MODES: Tuple[str, str] = ("t2v", "i2v")

StepRange = Tuple[int, int]
"""``(first, last)``: inclusive global step indices of the part of a schedule a run covers."""
Sigmas = Union["torch.Tensor", Sequence[float]]
"""A sampler's sigmas: a 1-D tensor or a sequence of floats."""


def _floats(values: Sigmas) -> List[float]:
    """A tensor's or a sequence's values as Python floats."""
    tolist = getattr(values, "tolist", None)
    return [float(v) for v in (tolist() if tolist is not None else values)]


def _is_int(v: object) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)



RETENTION_COUNTS: Tuple[str, str] = ("calls", "steps")
RETENTION_ROUNDING: Tuple[str, str] = ("floor", "half_up")
RESAMPLING: Tuple[str, str] = ("nearest", "floor")


@dataclass(frozen=True)
class RuleVariant:
    """Which variant of the official rule a family's script applies (the one :class:`RuleState` reads it).

    Attributes:
        name: a short name for previews and reports (``"wan"``, ``"flux"``, ...).
        strict: ``True``: skip while ``err < thresh`` (MagCache4Wan2.1/2.2, MagCache4QwenImage, the
            ComfyUI node's Chroma / HunyuanVideo-1.5 paths); ``False``: ``err <= thresh``
            (MagCache4FLUX, MagCache4FLUX_Kontext, MagCache4HunyuanVideo).
        retention_counts: ``"calls"``: with two branches call ``2 * step + branch`` is protected while
            ``< R(2 * S * r)`` (official research scripts); ``"steps"``: step ``< R(S * r)`` for both
            branches (the ComfyUI node). With one branch both read ``step < R(S * r)``.
        retention_rounding: ``R`` above: ``"floor"`` ``int(x)``; ``"half_up"`` ``int(x + 0.5)``
            (MagCache4FLUX: ``cnt >= int(r * S + 0.5)``).
        resampling: a curve calibrated at C steps used at S != C steps: ``"nearest"`` reads index
            ``round(j * (C - 1) / (S - 1))`` with round-half-to-even (``nearest_interp`` of every research
            script; MagCache4QwenImage's ``round(linspace(0, C - 1, S))`` gives the same indices for
            S >= 2); ``"floor"`` reads ``int(j * (C - 1) / (S - 1))`` (the ComfyUI node). S == 1 reads
            the last index with both.
        never_skip: ``(calib_len, calib_step)``: a step ``j`` with
            ``round(j * (calib_len - 1) / (S - 1)) == calib_step`` (half-to-even) never skips and resets
            the accumulators, as any computed call (MagCache4FLUX / _Kontext: ``(28, 11)``, also when the
            curve is resampled). None: no such step.
    """
    name: str = "wan"
    strict: bool = True
    retention_counts: str = "calls"
    retention_rounding: str = "floor"
    resampling: str = "nearest"
    never_skip: Optional[Tuple[int, int]] = None

    def __post_init__(self) -> None:
        for field_name, value, allowed in (("retention_counts", self.retention_counts, RETENTION_COUNTS),
                                           ("retention_rounding", self.retention_rounding, RETENTION_ROUNDING),
                                           ("resampling", self.resampling, RESAMPLING)):
            if value not in allowed:
                raise ValueError(f"RuleVariant.{field_name}: {value!r} is not allowed; use one of {allowed}")
        if self.never_skip is not None:
            n, c = self.never_skip
            if not (_is_int(n) and _is_int(c) and n >= 2 and 0 <= c < n):
                raise ValueError(f"RuleVariant.never_skip: {self.never_skip!r} must be (calib_len >= 2, "
                                 "0 <= calib_step < calib_len)")

    def retained(self, x: float) -> int:
        """``R(x)``: the retention count rounded as this variant rounds it."""
        return int(x + 0.5) if self.retention_rounding == "half_up" else int(x)

    def skips_allowed(self, err: float, thresh: float) -> bool:
        """The threshold test (``thresh <= 0`` is off: never)."""
        if thresh <= 0.0:
            return False
        return err < thresh if self.strict else err <= thresh

    def never_skips(self, step: int, steps: int) -> bool:
        """Whether ``step`` of an ``steps``-step run is this variant's never-skipped step."""
        if self.never_skip is None or steps < 2:
            return False
        n, c = self.never_skip
        return round(step * ((n - 1) / (steps - 1))) == c


#: The official Wan2.1 rule (MagCache4Wan2.1): ``<``, calls retention ``int(2 * S * r)``, nearest resampling.
WAN_RULE: RuleVariant = RuleVariant()

@dataclass(frozen=True)
class MagCacheConfig:
    """Settings of the skip rule (what the node's widgets fill in).

    Attributes:
        thresh: accumulated error allowed before a branch must compute; ``0`` never skips.
            Strict ``<`` as the official Wan code.
        k: most consecutive skipped steps per branch (``K``).
        (Bounds: the records of :data:`magcache.settings.SETTINGS`.)
        retention: fraction of the first *calls* that always compute, ``int(2*S*retention)``
            calls with two branches. Range [0, 1]. Ignored when ``start_step`` is given.
        start_step: when not None (``-1`` means None), steps ``< start_step`` always compute (both branches)
            instead of retention. Global step index (0-based), >= 0.
        end_step: when not None (``-1`` means None), steps ``>= end_step`` always compute.
        protect_last: the last N steps always compute (0 = official schedule).
        split_step: Wan2.2 A14B only: the first step of the low-noise expert (global index),
            enabling the official per-phase retention of ``split_mode``. None = one phase.
        split_mode: ``"t2v"`` (retention restarts at the switch) or ``"i2v"`` (the high-noise
            expert never skips), as the official Wan2.2 script.
        variant: the family's :class:`RuleVariant` (default :data:`WAN_RULE`).
    """
    thresh: float = 0.12
    k: int = 2
    retention: float = 0.2
    start_step: Optional[int] = None
    end_step: Optional[int] = None
    protect_last: int = 0
    split_step: Optional[int] = None
    split_mode: str = "t2v"
    variant: RuleVariant = WAN_RULE

    def validate(self) -> "MagCacheConfig":
        """Raise :class:`~atelier_settings.SettingError` (a ValueError) naming the first field outside its
        allowed range (the records of :data:`magcache.settings.SETTINGS`); returns self."""
        from .settings import SETTINGS   # settings -> presets -> schedule: imported here, not at the top
        for name in ("thresh", "k", "retention", "protect_last"):
            SETTINGS[name].check(getattr(self, name))
        for name in ("start_step", "end_step"):
            if getattr(self, name) is not None:
                SETTINGS[name].check(getattr(self, name))
        SETTINGS["split_step"].check(self.split_step)
        SETTINGS["split_mode"].check(self.split_mode)
        if not isinstance(self.variant, RuleVariant):
            raise ValueError(f"variant: expected a RuleVariant, got {type(self.variant).__name__}")
        return self

    @property
    def start(self) -> Optional[int]:
        """``start_step`` with -1 read as None."""
        return None if self.start_step is None or self.start_step == -1 else self.start_step

    @property
    def end(self) -> Optional[int]:
        """``end_step`` with -1 read as None."""
        return None if self.end_step is None or self.end_step == -1 else self.end_step


def _check_steps(steps: object) -> None:
    if not _is_int(steps) or steps < 1:
        raise ValueError(f"steps: {steps!r} is not allowed; use an integer >= 1")


def _check_range(step_range: Optional[StepRange], steps: int) -> StepRange:
    if step_range is None:
        return 0, steps - 1
    try:
        first, last = step_range
    except (TypeError, ValueError):
        raise ValueError(f"step_range: {step_range!r} must be a pair (first, last) of step indices") from None
    if not (_is_int(first) and _is_int(last)) or not 0 <= first <= last < steps:
        raise ValueError(f"step_range: {step_range!r} is not allowed; need 0 <= first <= last <= {steps - 1} "
                         f"(inclusive global step indices of a {steps}-step schedule)")
    return first, last


class _Acc:
    __slots__ = ("ratio", "err", "n")
    ratio: float
    err: float
    n: int

    def __init__(self) -> None:
        self.ratio, self.err, self.n = 1.0, 0.0, 0

    def reset(self) -> None:
        self.ratio, self.err, self.n = 1.0, 0.0, 0


class RuleState:
    """The official accumulators of both branches for one run of ``steps`` steps.

    Shared by :func:`plan_schedule` and :class:`magcache.state.MagCacheRun`. Branch ids are
    0 (cond) and 1 (uncond). A one-branch curve serves both ids with its single column
    (each id keeps its own accumulators); call indices then count steps.
    """

    def __init__(self, curve: CurveLike, steps: int, config: MagCacheConfig, branches: Optional[int] = None,
                 step_range: Optional[StepRange] = None) -> None:
        _check_steps(steps)
        if not isinstance(config, MagCacheConfig):
            raise ValueError(f"config: expected a MagCacheConfig, got {type(config).__name__}")
        config.validate()
        self.curve = as_curve(curve, branches)
        self.branches = self.curve.branches
        self.steps = steps
        self.config = config
        self.first, self.last = _check_range(step_range, steps)
        if config.split_step is not None and config.split_step > steps:
            raise ValueError(f"split_step: {config.split_step} is beyond the {steps}-step schedule")
        self.variant = config.variant
        self.columns = resample_curve(self.curve, steps, method=config.variant.resampling)
        self.acc: List[_Acc] = [_Acc(), _Acc()]
        self.error: List[float] = [0.0, 0.0]
        """Per branch, the sum over its skipped calls of ``|1 - ratio|`` as the rule saw it at each skip."""
        self.has_residual: List[bool] = [False, False]
        # A segment (e.g. the low-noise expert of Wan2.2) starts in the state the whole
        # schedule would have at its first step; only the residual is missing there.
        for step in range(self.first):
            for b in range(2):
                self.advance(b, step, True)
        self.has_residual = [False, False]
        self.error = [0.0, 0.0]

    def protected(self, branch: int, step: int) -> bool:
        """True when (branch, step) always computes without touching the accumulators."""
        c = self.config
        end = c.end
        if end is not None and step >= end:
            return True
        if c.protect_last and step >= self.steps - c.protect_last:
            return True
        if c.start is not None:
            return step < c.start
        nb = self.branches
        call = nb * step + min(branch, nb - 1)
        total = nb * self.steps
        r = c.retention
        v = c.variant
        if c.split_step is None and v.retention_counts == "steps":
            return step < v.retained(self.steps * r)
        if c.split_step is not None:
            split = nb * c.split_step
            if c.split_mode == "i2v":
                return call < int(split + (total - split) * r)
            return call < int(split * r) or split <= call <= (total - split) * r + split
        return call < v.retained(total * r)

    def advance(self, branch: int, step: int, has_residual: bool) -> bool:
        """Apply the rule to the first evaluation of (branch, step); True means skip."""
        if branch not in (0, 1):
            raise ValueError(f"branch: {branch!r} is not allowed; use 0 (cond) or 1 (uncond)")
        if self.protected(branch, step):
            skip = False
        else:
            a = self.acc[branch]
            a.ratio *= self.columns[min(branch, self.branches - 1)][step]
            a.n += 1
            a.err += abs(1.0 - a.ratio)
            v = self.variant
            skip = (v.skips_allowed(a.err, self.config.thresh) and a.n <= self.config.k and has_residual
                    and not v.never_skips(step, self.steps))
            if skip:
                self.error[branch] += abs(1.0 - a.ratio)
            else:
                a.reset()
        if not skip:
            self.has_residual[branch] = True
        return skip


@dataclass(frozen=True)
class Schedule:
    """A planned skip schedule.

    Attributes:
        steps: S, the schedule's step count; ``first_step``/``last_step``: the planned range.
        branches: 1 or 2 (curve columns); ``cond_skipped``/``uncond_skipped``: 0-based global
            step indices each branch skips (``uncond_skipped`` is empty when the uncond branch
            is not run: one-branch curve or cfg=1, see ``run_branches`` of plan_schedule).
        computed_calls / total_calls: block-stack evaluations run / model calls in range.
        error: the accumulated error of the plan: the sum, over every skipped call, of
            ``|1 - ratio|`` with ``ratio`` the product of the curve's ratios of the branch since its
            last computed call (what the rule adds to ``err`` at that call); 0 when nothing skips.
        rule: the name of the :class:`RuleVariant` that made it.
    """
    steps: int
    first_step: int
    last_step: int
    branches: int
    cond_skipped: Tuple[int, ...]
    uncond_skipped: Tuple[int, ...]
    computed_calls: int
    total_calls: int
    error: float = 0.0
    rule: str = "wan"

    @property
    def expected_speedup(self) -> float:
        """Ideal speedup ``total_calls / computed_calls`` (block stack only, no overhead)."""
        return self.total_calls / self.computed_calls if self.computed_calls else float("inf")

    def skipped(self, branch: int) -> Tuple[int, ...]:
        """Skipped steps of ``branch`` (0 cond, 1 uncond)."""
        return self.cond_skipped if branch == 0 else self.uncond_skipped

    def marks(self, branch: int) -> List[str]:
        """``"C"``/``"S"`` per step of the range for ``branch``."""
        s = set(self.skipped(branch))
        return ["S" if i in s else "C" for i in range(self.first_step, self.last_step + 1)]

    def to_dict(self) -> Dict[str, Any]:
        """The fields (skipped steps as lists) and ``expected_speedup``, JSON-ready."""
        d = asdict(self)
        d["cond_skipped"] = list(self.cond_skipped)
        d["uncond_skipped"] = list(self.uncond_skipped)
        d["expected_speedup"] = self.expected_speedup
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


def plan_schedule(curve: CurveLike, steps: int, config: MagCacheConfig, branches: Optional[int] = None,
                  step_range: Optional[StepRange] = None, run_branches: Optional[Sequence[int]] = None) -> Schedule:
    """The skip schedule of a run, without running anything.

    Args:
        curve: a calibrated curve (:func:`parse_curve` input); interleaved when two branches.
        steps: S, the step count of the *whole* schedule the curve is mapped onto.
        config: a :class:`MagCacheConfig`.
        branches: 1 or 2 (default: the curve's own, else 2). With one branch only
            ``cond_skipped`` is filled and there is one call per step.
        step_range: ``(first, last)`` inclusive global steps this run covers (a sampler that
            runs part of the schedule, such as one expert of Wan2.2 A14B; see
            :func:`locate_segment`). The rule state at ``first`` is the one the whole schedule
            would have; the run starts without residuals, so each branch computes its first call.
        run_branches: the branch ids the sampler evaluates: default ``(0, 1)`` for a two-branch
            curve and ``(0,)`` for a one-branch curve. ``(0,)`` previews a cfg=1 run (the host
            then drops the uncond call); ``(0, 1)`` with a one-branch curve previews CFG with
            both branches reading the single column (each with its own accumulators).

    Returns:
        a :class:`Schedule`. Identical to driving :class:`magcache.state.MagCacheRun` call by call.
    """
    st = RuleState(curve, steps, config, branches, step_range)
    if run_branches is None:
        run_branches = tuple(range(st.branches))
    runs = tuple(run_branches)
    if not runs or any(b not in (0, 1) for b in runs) or len(set(runs)) != len(runs):
        raise ValueError(f"run_branches: {runs!r} is not allowed; use (0,), (1,) or (0, 1)")
    skipped: Tuple[List[int], List[int]] = ([], [])
    for step in range(st.first, st.last + 1):
        for b in runs:
            if st.advance(b, step, st.has_residual[b]):
                skipped[b].append(step)
    n = st.last - st.first + 1
    total = len(runs) * n
    computed = total - len(skipped[0]) - len(skipped[1])
    return Schedule(steps, st.first, st.last, st.branches, tuple(skipped[0]), tuple(skipped[1]),
                    computed, total, sum(st.error[b] for b in runs), st.variant.name)


def locate_segment(segment_sigmas: Sigmas, total_steps: Optional[int] = None, full_sigmas: Optional[Sigmas] = None,
                   start_step: Optional[int] = None, sigma_max: Optional[float] = None,
                   atol: float = 1e-4) -> StepRange:
    """Map a sampler's partial run onto the whole schedule: ``(first, last)`` global steps.

    A sampler sees only its own sigmas (KSamplerAdvanced ``start_at_step``/``end_at_step``, or
    split sigmas): ``len(segment_sigmas) - 1`` steps. Their place in the whole schedule is, in
    order of preference:

    1. ``start_step`` given: ``first = start_step``;
    2. ``full_sigmas`` (the whole schedule's sigmas) given: where the segment occurs in it
       (within ``atol``);
    3. ``total_steps`` given: the segment that ends at sigma 0 is the tail
       (``first = total_steps - n``); one that starts at the schedule's top
       (``segment_sigmas[0] >= sigma_max - atol``, ``sigma_max`` defaulting to 1.0 for flow
       models such as Wan) is the head (``first = 0``);
    4. nothing given, or ``total_steps == n``: the segment is the whole schedule.

    Args:
        segment_sigmas: the n+1 sigmas of the segment (tensor or sequence), n >= 1.

    Returns:
        ``(first, last)`` inclusive, for :func:`plan_schedule` / ``MagCacheRun(step_range=...)``.

    Raises:
        ValueError: fewer than 2 sigmas, a segment not found in ``full_sigmas``, or a segment
            that is neither head nor tail of ``total_steps`` when no start is given.
    """
    seg = _floats(segment_sigmas)
    if len(seg) < 2:
        raise ValueError(f"segment_sigmas: {len(seg)} sigmas cannot hold a step (need >= 2)")
    n = len(seg) - 1
    first: Optional[int]
    if start_step is not None:
        if not _is_int(start_step) or start_step < 0:
            raise ValueError(f"start_step: {start_step!r} must be an integer >= 0")
        first = start_step
    elif full_sigmas is not None:
        full = _floats(full_sigmas)
        first = None
        for o in range(0, len(full) - n):
            if all(abs(full[o + i] - seg[i]) <= atol * max(1.0, abs(seg[i])) for i in range(n + 1)):
                first = o
                break
        if first is None:
            raise ValueError(f"segment_sigmas: the {n}-step segment starting at sigma {seg[0]:.6g} is not part "
                             f"of full_sigmas ({len(full) - 1} steps)")
        total_steps = len(full) - 1 if total_steps is None else total_steps
    elif total_steps is None or total_steps == n:
        first = 0
    else:
        top = 1.0 if sigma_max is None else float(sigma_max)
        if seg[-1] == 0.0:
            first = total_steps - n
        elif seg[0] >= top - atol:
            first = 0
        else:
            raise ValueError(f"segment_sigmas: cannot place a {n}-step segment ({seg[0]:.4g} -> {seg[-1]:.4g}) "
                             f"in a {total_steps}-step schedule; give its start step")
    if total_steps is not None and (first < 0 or first + n > total_steps):
        raise ValueError(f"segment_sigmas: steps {first}..{first + n - 1} do not fit in a "
                         f"{total_steps}-step schedule")
    return first, first + n - 1


def high_noise_steps(sigmas: Sigmas, boundary: float) -> int:
    """Steps run by the high-noise expert of Wan2.2 A14B: the official
    ``(timesteps >= 1000 * boundary).sum()`` with ``timesteps = 1000 * sigma`` over the
    n step sigmas (the final sigma excluded). This is the ``split_step`` of the run."""
    s = _floats(sigmas)[:-1]
    return sum(1 for x in s if x * 1000.0 >= 1000.0 * float(boundary))


def official_split(steps: int, shift: float, boundary: float, num_train_timesteps: int = 1000) -> int:
    """High-noise steps of Wan2.2 A14B as the official MagCache4Wan2.2 script computes them
    (its ``get_timesteps``): ``sigmas = linspace(1.0, 0.01, S + 1)[:-1]`` shifted with the
    sample shift ``shift * s / (1 + (shift - 1) * s)``, cast to float32, ``timesteps =
    int64(sigmas * 1000)``; the split is ``(timesteps >= 1000 * boundary).sum()``.

    Official values: T2V-A14B shift 12.0 / boundary 0.875, I2V-A14B shift 5.0 / boundary 0.900
    (so 10 high-noise steps at 25 steps I2V, 22 at 33 steps T2V). Returns an int in [0, S].
    """
    import numpy as np
    _check_steps(steps)
    for name, v, lo in (("shift", shift, 0.0), ("boundary", boundary, 0.0)):
        if isinstance(v, bool) or not isinstance(v, Real) or not math.isfinite(v) or v <= lo:
            raise ValueError(f"{name}: {v!r} is not allowed; use a finite number > 0")
    s = np.linspace(1.0, 0.01, steps + 1)[:-1]
    s = shift * s / (1 + (shift - 1) * s)
    t = (s.astype(np.float32) * np.float32(num_train_timesteps)).astype(np.int64)
    return int((t >= num_train_timesteps * float(boundary)).sum())
