"""One sampling run of a MagCache model: the engine the host's node runs.

:class:`MagCacheSession` holds what a node fixed (a :class:`~magcache.resolve.Resolved` curve
and config, ``schedule_steps``, where residuals live) and, per run (:meth:`fresh`), the state:

* :meth:`start`: from the sampler's sigmas, the run's place in the whole schedule (a segment
  such as one Wan2.2 A14B expert, :func:`~magcache.schedule.locate_segment`) and, for Wan2.2
  A14B, the split from the samplers: a head segment (high-noise expert) ends where the
  low-noise one starts, a tail segment starts there, and one sampler over the whole schedule
  splits where its sigmas cross the preset's boundary
  (:func:`~magcache.schedule.high_noise_steps`);
* :meth:`step_of`: sigma -> global step (None for an evaluation between steps);
* :meth:`plan_call`: the :class:`~magcache.state.CallPlan` of one model call (rows, residual
  store keyed by branch and cond uuid, row assembly), from
  :class:`~magcache.state.MagCacheRun`;
* :meth:`report`: computed/skipped per branch and step, measured block time and time saved.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Dict, Hashable, List, Mapping, Optional, Sequence, Union

import torch

from .resolve import Resolved
from .schedule import Sigmas, _floats, high_noise_steps, locate_segment
from .state import CallPlan, MagCacheRun

Report = Dict[str, Any]
"""A run's report (:meth:`MagCacheSession.report`)."""

__all__ = ["MagCacheSession", "SigmaSteps", "report_text", "Report"]


class SigmaSteps:
    """Sigma -> global step of a sampler's run.

    Args:
        sample_sigmas: the sampler's n+1 sigmas (tensor or sequence).
        first_step: global index of the run's first step (a segment of a longer schedule).

    :meth:`step_of` returns the global step whose sigma matches (relative tolerance 1e-4),
    or None for an evaluation between steps (the midpoint of a 2nd-order sampler). Steps
    come in order, so the previous match and the next step are tried first.
    """

    def __init__(self, sample_sigmas: Sigmas, first_step: int = 0) -> None:
        sig = _floats(sample_sigmas)
        self.sigmas = sig
        self.first_step = first_step
        self._steps = sig[:max(1, len(sig) - 1)]
        self._last = 0

    def step_of(self, sigma: Union[float, torch.Tensor]) -> Optional[int]:
        """The global step whose sigma matches ``sigma``, None between steps."""
        s = float(sigma)
        tol = 1e-4 * max(1.0, abs(s))
        sig, i = self._steps, self._last
        for j in (i, i + 1):
            if j < len(sig) and abs(sig[j] - s) <= tol:
                self._last = j
                return j + self.first_step
        best = min(range(len(sig)), key=lambda j: abs(sig[j] - s)) if sig else None
        if best is None or abs(sig[best] - s) > tol:
            return None
        self._last = best
        return best + self.first_step


class MagCacheSession:
    """Settings of a MagCache model plus the state of its current run.

    Args:
        resolved: a :class:`~magcache.resolve.Resolved` (curve, config, preset).
        schedule_steps: > 0 when a sampler runs part of a schedule of that many steps.
        cache_device: where residuals live (None: the model's device).
        node_id: the node's id, copied into reports.
        on_report: called with the report dict when a run ends (finished or interrupted).
    """

    def __init__(self, resolved: Resolved, schedule_steps: int = 0, cache_device: Union[str, torch.device, None] = None,
                 node_id: Optional[str] = None, on_report: Optional[Callable[[Report], None]] = None) -> None:
        self.resolved = resolved
        self.schedule_steps = schedule_steps
        self.cache_device = cache_device
        self.node_id = node_id
        self.on_report = on_report
        self.run: Optional[MagCacheRun] = None
        self.first_step = 0
        self.split_step: Optional[int] = None
        self.split_source: Optional[str] = None
        self.last_report: Optional[Report] = None
        self._steps: Optional[SigmaSteps] = None
        self.t_start = time.perf_counter()

    def __deepcopy__(self, memo: dict) -> MagCacheSession:
        """The same session: the host deep-copies ``model_options`` on every ``ModelPatcher.clone()``
        (a node placed after MagCache), and a report must reach whichever clone a Report node reads.
        A run never writes into this object's settings: each run works on its own :meth:`fresh` copy."""
        return self

    def fresh(self) -> MagCacheSession:
        """A new session with the same settings and empty state (one per sampling run)."""
        return MagCacheSession(self.resolved, self.schedule_steps, self.cache_device, self.node_id, self.on_report)

    # --------------------------------------------------------------- steps
    def start(self, sample_sigmas: Sigmas) -> MagCacheRun:
        """Place the run (its ``sample_sigmas``, the n+1 sigmas of the sampler) in the schedule
        and make its :class:`MagCacheRun`."""
        sig = _floats(sample_sigmas)
        n = max(1, len(sig) - 1)
        total = self.schedule_steps or n
        if total != n:
            first, last = locate_segment(sig, total_steps=total)
        else:
            first, last = 0, n - 1
        r = self.resolved
        p = r.preset
        if (r.config.split_step is not None and p is not None and p.split_mode and p.boundary is not None
                and r.split_source != "given"):
            if first > 0:
                split, src = first, f"samplers: the low-noise segment starts at step {first}"
            elif last < total - 1:
                split, src = last + 1, f"samplers: the high-noise segment ends before step {last + 1}"
            else:
                split = high_noise_steps(sig, p.boundary)
                src = f"sigmas >= boundary {p.boundary:g}"
            r = r.with_split(split, src)
        self.split_step, self.split_source = r.config.split_step, r.split_source
        self.first_step = first
        self.run = MagCacheRun(r.curve, total, r.config, step_range=(first, last), cache_device=self.cache_device)
        self._steps = SigmaSteps(sig, first)
        return self.run

    def step_of(self, sigma: Union[float, torch.Tensor]) -> Optional[int]:
        """Global step of ``sigma`` (see :class:`SigmaSteps`), None between steps."""
        if self._steps is None:
            raise RuntimeError("MagCacheSession.step_of: the run has not started (call start() first)")
        return self._steps.step_of(sigma)

    def plan_call(self, sigma: Union[float, torch.Tensor], cond_or_uncond: Sequence[int],
                  uuids: Optional[Sequence[Hashable]], batch: int) -> CallPlan:
        """The :class:`~magcache.state.CallPlan` of one model call.

        Args:
            sigma: the call's sigma (float).
            cond_or_uncond: the host's list of branch ids per chunk (0 cond, 1 uncond; other
                ids count as uncond), chunks of equal size in batch order.
            uuids: the conds' uuids per chunk (residual keys), or None.
            batch: B.
        """
        if self.run is None:
            raise RuntimeError("MagCacheSession.plan_call: the run has not started (call start() first)")
        cu = list(cond_or_uncond)
        keys: List[Optional[Hashable]] = list(uuids) if uuids else [None] * len(cu)
        n = batch // len(cu)
        chunks = [(0 if b == 0 else 1, keys[c], slice(c * n, (c + 1) * n)) for c, b in enumerate(cu)]
        return self.run.plan_call(self.step_of(sigma), chunks, batch)

    # -------------------------------------------------------------- report
    def plan_sampler_call(self, sample_sigmas: Optional[Sigmas], sigma: Union[float, torch.Tensor],
                          cond_or_uncond: Sequence[int], uuids: Optional[Sequence[Hashable]],
                          batch: int) -> Optional[CallPlan]:
        """:meth:`plan_call` for a call inside a sampler: the first call of the run :meth:`start` s it from
        ``sample_sigmas`` (the sampler's n+1 sigmas); None (the call runs uncached) when the run has not
        started and the call brings no ``sample_sigmas``."""
        if self.run is None:
            if sample_sigmas is None:
                return None
            self.start(sample_sigmas)
        return self.plan_call(sigma, cond_or_uncond, uuids, batch)

    def finish(self, interrupted: bool) -> Optional[Report]:
        """End of the run: the report (also kept as :attr:`last_report` and given to
        ``on_report``), then the residuals are dropped."""
        rep = self.report(interrupted)
        if self.run is not None:
            self.run.clear_residuals()
        if rep is not None:
            self.last_report = rep
            if self.on_report is not None:
                self.on_report(rep)
        return rep

    def report(self, interrupted: bool = False) -> Optional[Report]:
        """The run's report dict (None before :meth:`start`): the fields of
        :meth:`MagCacheRun.report` plus ``node``, ``preset``, ``interrupted``, ``split_step``,
        ``split_source``, ``thresh`` and ``k`` used, ``target`` (the
        :class:`~magcache.target.TargetPlan` as a dict when they were chosen for a target speedup, else None),
        ``block_stack_s_per_eval``, ``time_saved_s``, ``wall_s``, ``speedup`` and a one-line ``summary``."""
        run = self.run
        if run is None:
            return None
        rep = dict(run.report())
        per_eval = run.block_time / run.block_evals if run.block_evals else 0.0
        saved = per_eval * run.skipped_evals
        wall = time.perf_counter() - self.t_start
        rep.update({"node": self.node_id, "preset": self.resolved.name, "curve_source": self.resolved.curve_source,
                    "interrupted": interrupted,
                    "split_step": self.split_step, "split_source": self.split_source,
                    "thresh": self.resolved.config.thresh, "k": self.resolved.config.k,
                    "target": self.resolved.target.to_dict() if self.resolved.target is not None else None,
                    "block_stack_s_per_eval": per_eval, "time_saved_s": saved, "wall_s": wall,
                    "speedup": (wall + saved) / wall if wall > 0 else 1.0})
        cc, tc = rep["computed_calls"], rep["total_calls"]
        rep["summary"] = (f"MagCache: computed {cc}/{tc} calls, skipped {tc - cc} "
                          f"({'interrupted, ' if interrupted else ''}~{saved:.2f}s saved, ~{rep['speedup']:.2f}x)")
        return rep


def report_text(report: Optional[Mapping[str, Any]]) -> str:
    """A run's report (:meth:`MagCacheSession.report`, or None before any run) as text: the summary line,
    then per branch one mark per step (``C`` computed, ``S`` skipped, ``.`` not run), the name right-aligned
    to 6 characters; ``"no run yet"`` for None."""
    if report is None:
        return "no run yet"
    lines = [report["summary"]] + [f"{b:>6}: {''.join(m)}" for b, m in report.get("branches", {}).items()]
    return "\n".join(lines)
