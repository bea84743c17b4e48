"""A target speedup instead of a threshold: pick ``thresh`` and ``K`` from the curve.

For a curve, a step count and the rest of the settings (retention, start/end, the family's rule
variant, Wan2.2 split), :func:`plan_for_target` plans every ``(thresh, K)`` of a grid with the one
rule (:func:`~magcache.schedule.plan_schedule`) and keeps, among the schedules whose ideal speedup
(``total_calls / computed_calls``) reaches the target, the one with the least accumulated error.

**Error** (:attr:`~magcache.schedule.Schedule.error`): the sum, over every skipped call, of
``|1 - ratio|``, ``ratio`` being the product of the branch's curve ratios since its last computed
call, exactly what the rule adds to its ``err`` at that call. It measures how far the reused
residual's magnitude is from the skipped ones, summed over the run, as the rule sees it.

Ties (same error) go to the higher speedup, then the smaller ``thresh``, then the smaller ``K``. When no
setting of the grid reaches the target, the closest one below is returned with ``reached=False`` and a
message saying so (or :class:`TargetError` with ``on_unreachable="raise"``). A target below 1, or above
what retention alone allows (every protected call computes, and each branch its first call), is refused
with :class:`TargetError`.

Planning the grid takes a fraction of a second (800 schedules; about 0.1-0.3 s at 30 steps on a CPU); the
node plans at every run start, so the last :data:`MEMO_SIZE` plans are kept (the inputs and the plan are
immutable): a repeated run with the same curve, steps and settings reuses its plan.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any, Dict, Hashable, List, Optional, Sequence, Tuple

from .curve import CurveLike, as_curve
from .schedule import MagCacheConfig, RuleState, Schedule, StepRange, plan_schedule

__all__ = ["TargetPlan", "TargetError", "plan_for_target", "THRESH_GRID", "K_GRID"]

#: Default thresholds tried: 0.005 .. 0.5 by 0.005 (the widget's step).
THRESH_GRID: Tuple[float, ...] = tuple(round(0.005 * i, 3) for i in range(1, 101))
#: Default K tried.
K_GRID: Tuple[int, ...] = tuple(range(1, 9))
#: Plans kept by :func:`plan_for_target` (least recently used dropped first).
MEMO_SIZE = 64
_MEMO: "OrderedDict[Hashable, TargetPlan]" = OrderedDict()


class TargetError(ValueError):
    """A target speedup that cannot be planned (the message says why and what is reachable)."""


@dataclass(frozen=True)
class TargetPlan:
    """The settings :func:`plan_for_target` chose.

    Attributes:
        target: the target speedup asked for.
        thresh, k: the chosen settings.
        config: the full :class:`~magcache.schedule.MagCacheConfig` with them.
        schedule: its :class:`~magcache.schedule.Schedule` (``error`` and ``expected_speedup`` inside).
        reached: whether ``schedule.expected_speedup >= target``.
        best_speedup: the highest ideal speedup of the grid.
        message: one sentence for the preview.
    """
    target: float
    thresh: float
    k: int
    config: MagCacheConfig
    schedule: Schedule
    reached: bool
    best_speedup: float
    message: str

    @property
    def error(self) -> float:
        """The chosen schedule's accumulated error."""
        return self.schedule.error

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready: target, thresh, k, reached, speedup, error, best_speedup, message."""
        return {"target_speedup": self.target, "thresh": self.thresh, "k": self.k, "reached": self.reached,
                "speedup": self.schedule.expected_speedup, "error": self.schedule.error,
                "best_speedup": self.best_speedup, "message": self.message}


def _ceiling(curve: CurveLike, steps: int, config: MagCacheConfig, step_range: Optional[StepRange],
             run_branches: Sequence[int]) -> float:
    """The speedup if every call that the rule may skip were skipped (protected calls, never-skipped
    steps and the first call of each branch compute): no (thresh, K) can exceed it."""
    st = RuleState(curve, steps, config, step_range=step_range)
    must = 0
    for b in run_branches:
        for step in range(st.first, st.last + 1):
            if step == st.first or st.protected(b, step) or st.variant.never_skips(step, steps):
                must += 1
    total = len(run_branches) * (st.last - st.first + 1)
    return total / must if must else float("inf")


def plan_for_target(curve: CurveLike, steps: int, target_speedup: float, config: Optional[MagCacheConfig] = None, *,
                    branches: Optional[int] = None, step_range: Optional[StepRange] = None,
                    run_branches: Optional[Sequence[int]] = None, thresholds: Sequence[float] = THRESH_GRID,
                    ks: Sequence[int] = K_GRID, on_unreachable: str = "closest") -> TargetPlan:
    """Choose ``thresh`` and ``K`` so the schedule reaches ``target_speedup`` with the least error.

    Args:
        curve: the calibrated curve (:func:`~magcache.curve.parse_curve` input).
        steps: S of the whole schedule.
        target_speedup: the ideal speedup wanted (``total_calls / computed_calls``), > 1, e.g. 2.0.
        config: the other settings (retention, start/end, protect_last, split, rule ``variant``); its
            ``thresh`` and ``k`` are replaced. Default: ``MagCacheConfig()`` (Wan rule).
        branches, step_range, run_branches: as :func:`~magcache.schedule.plan_schedule`.
        thresholds, ks: the grid (default :data:`THRESH_GRID` x :data:`K_GRID`).
        on_unreachable: ``"closest"``: return the highest speedup below the target (``reached`` False,
            the message says so); ``"raise"``: raise :class:`TargetError`.

    Returns:
        a :class:`TargetPlan`.

    Raises:
        TargetError: a target that is not a number > 1, one above what retention allows, or (with
            ``"raise"``) one no setting of the grid reaches; ValueError for a bad grid or curve.
    """
    if isinstance(target_speedup, bool) or not isinstance(target_speedup, (int, float)) or not target_speedup > 1.0:
        raise TargetError(f"target_speedup: {target_speedup!r} is not allowed; use a number > 1 "
                          "(e.g. 2.0 for about 2x), or 0 to use thresh and K")
    if on_unreachable not in ("closest", "raise"):
        raise ValueError(f"on_unreachable: {on_unreachable!r} is not allowed; use 'closest' or 'raise'")
    if not thresholds or not ks or any(t <= 0 for t in thresholds) or any(k < 1 for k in ks):
        raise ValueError("thresholds / ks: need at least one thresh > 0 and one K >= 1")
    base = (config if config is not None else MagCacheConfig()).validate()
    c = as_curve(curve, branches)
    runs = tuple(run_branches) if run_branches is not None else tuple(range(c.branches))
    key: Optional[Hashable] = (tuple(c), c.branches, steps, float(target_speedup), base, step_range, runs,
                               tuple(thresholds), tuple(ks), on_unreachable)
    try:
        hit_plan = _MEMO.get(key)
    except TypeError:   # an unhashable part (a list step_range): plan without the memo
        key, hit_plan = None, None
    if hit_plan is not None:
        _MEMO.move_to_end(key)
        return hit_plan
    plan = _plan(c, steps, float(target_speedup), base, step_range, runs, thresholds, ks, on_unreachable)
    if key is not None:
        _MEMO[key] = plan
        while len(_MEMO) > MEMO_SIZE:
            _MEMO.popitem(last=False)
    return plan


def _plan(c: Any, steps: int, target_speedup: float, base: MagCacheConfig, step_range: Optional[StepRange],
          runs: Tuple[int, ...], thresholds: Sequence[float], ks: Sequence[int], on_unreachable: str) -> TargetPlan:
    """:func:`plan_for_target` after validation, without the memo."""
    ceiling = _ceiling(c, steps, base, step_range, runs)
    if target_speedup > ceiling:
        raise TargetError(f"target_speedup: {target_speedup:g}x is impossible at {steps} steps with these settings: "
                          f"the calls retention protects (retention {base.retention:g}) and the first call of each "
                          f"branch always compute, so at most {ceiling:.2f}x; lower the target or the retention")
    plans: List[Tuple[float, int, Schedule]] = []
    for k in ks:
        for t in thresholds:
            cfg = replace(base, thresh=float(t), k=int(k))
            plans.append((float(t), int(k), plan_schedule(c, steps, cfg, step_range=step_range, run_branches=runs)))
    best = max(p[2].expected_speedup for p in plans)
    hit = [p for p in plans if p[2].expected_speedup >= target_speedup]
    if hit:
        t, k, sch = min(hit, key=lambda p: (p[2].error, -p[2].expected_speedup, p[0], p[1]))
        msg = (f"target {target_speedup:g}x: thresh {t:g}, K {k} reach {sch.expected_speedup:.2f}x with the least "
               f"accumulated error {sch.error:.4f}")
    else:
        if on_unreachable == "raise":
            raise TargetError(f"target_speedup: {target_speedup:g}x is not reached by any thresh <= {max(thresholds):g} "
                              f"and K <= {max(ks)} at {steps} steps; the most is {best:.2f}x")
        below = [p for p in plans if p[2].expected_speedup == best]
        t, k, sch = min(below, key=lambda p: (p[2].error, p[0], p[1]))
        msg = (f"target {target_speedup:g}x is not reached at {steps} steps: the closest below is "
               f"{sch.expected_speedup:.2f}x (thresh {t:g}, K {k}, accumulated error {sch.error:.4f})")
    cfg = replace(base, thresh=t, k=k)
    return TargetPlan(float(target_speedup), t, k, cfg, sch, sch.expected_speedup >= target_speedup, best, msg)
