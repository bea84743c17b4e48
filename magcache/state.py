"""Per-run MagCache state at sampling time, and residual arithmetic on a block stack.

:class:`MagCacheRun` is created fresh for every sampling run (nothing survives between
runs) and answers, call by call, whether a branch skips the block stack. It applies the
same rule as :func:`magcache.schedule.plan_schedule` (shared code), so driving it with the
first evaluation of every (branch, step) reproduces the planned schedule exactly, whatever
the order of cond and uncond inside a step: decisions are per branch, never ORed.
"""
from typing import NamedTuple

import torch

from .schedule import BRANCH_NAMES, RuleState

__all__ = ["MagCacheRun", "Decision", "apply_blocks_with_cache"]


class Decision(NamedTuple):
    """One record of :attr:`MagCacheRun.log`: the first evaluation of (branch, step)."""
    branch: int
    step: int
    skipped: bool


class MagCacheRun:
    """Mutable state of one sampling run.

    Args:
        curve: a calibrated curve (interleaved with two branches).
        steps: S of the whole schedule.
        config: a :class:`~magcache.schedule.MagCacheConfig`.
        branches: 1 or 2 curve columns (default: the curve's own, else 2).
        step_range: ``(first, last)`` global steps this run covers (a segment such as one
            Wan2.2 expert; see :func:`~magcache.schedule.locate_segment`); default the whole
            schedule. Steps passed to :meth:`decide` are *global* indices
            (``local + self.first_step``).
        cache_device: where :meth:`store_residual` keeps residuals; None = the residual's own
            device.

    Decision policy:

    * The **first** evaluation of (branch, step) applies the official accumulator rule
      (:class:`~magcache.schedule.RuleState`) and is logged.
    * **Extra evaluations** of a (branch, step) already decided (second-order samplers such as
      Heun or dpmpp_2s evaluate the model more than once per step, and a sampler that maps a
      corrector call onto a step) always **compute** and do not touch the accumulators.
      Computing is always safe, and keeping the accumulators untouched keeps the planned
      schedule of first evaluations exact. The fresh residual they produce is stored as usual.
      They are counted in ``extra_calls`` of :meth:`report`.
    * **Guard**: a branch never skips while it has no cached residual (``has_residual``
      argument, or :meth:`store_residual` having been called for it); the call computes and
      the accumulators reset.
    * Steps are expected in increasing order per branch; a step that was already decided
      (e.g. a sampler that goes back to a higher sigma) is an extra evaluation.
    """

    def __init__(self, curve, steps, config, branches=None, step_range=None, cache_device=None):
        self.config = config
        self.steps = steps
        self._init_args = (curve, steps, config, branches, step_range)
        self.cache_device = torch.device(cache_device) if isinstance(cache_device, str) else cache_device
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self):
        """Forget every decision and residual (a fresh run with the same settings)."""
        self._rule = RuleState(*self._init_args)
        self.branches = self._rule.branches
        self.first_step, self.last_step = self._rule.first, self._rule.last
        self._decided = {}
        self._residuals = [None, None]
        self.log = []
        self.extra_calls = [0, 0]

    def decide(self, branch, step, has_residual=None):
        """Whether ``branch`` (0 cond, 1 uncond) skips the block stack at global ``step``.

        ``has_residual``: whether a residual is cached for this branch (for callers that keep
        residuals themselves); None uses this run's own cache.
        Returns True to skip (use ``x + residual``), False to compute.
        """
        if branch not in (0, 1):
            raise ValueError(f"branch: {branch!r} is not allowed; use 0 (cond) or 1 (uncond)")
        if isinstance(step, bool) or not isinstance(step, int) or not self.first_step <= step <= self.last_step:
            raise ValueError(f"step: {step!r} is outside this run's steps {self.first_step}..{self.last_step}")
        key = (branch, step)
        if key in self._decided:
            self.extra_calls[branch] += 1
            return False
        if has_residual is None:
            has_residual = self._residuals[branch] is not None
        skip = self._rule.advance(branch, step, bool(has_residual))
        self._decided[key] = skip
        self.log.append(Decision(branch, step, skip))
        return skip

    # --------------------------------------------------------------- residuals
    def store_residual(self, branch, residual):
        """Keep ``residual`` (detached, on ``cache_device``) as ``branch``'s cached residual."""
        r = residual.detach()
        if self.cache_device is not None and r.device != self.cache_device:
            r = r.to(self.cache_device)  # blocking: a non-blocking GPU->CPU copy may not be complete
        self._residuals[branch] = r

    def get_residual(self, branch, like=None):
        """The cached residual of ``branch`` (None if none), moved to ``like``'s device and dtype."""
        r = self._residuals[branch]
        if r is not None and like is not None:
            r = r.to(device=like.device, dtype=like.dtype)
        return r

    def has_residual(self, branch):
        return self._residuals[branch] is not None

    # ------------------------------------------------------------------ report
    def report(self):
        """What the run did so far.

        Returns a dict: ``branches`` maps ``"cond"``/``"uncond"`` (those evaluated at least
        once; ``"cond"`` always) to one mark per step of the run's range: ``"C"`` computed,
        ``"S"`` skipped, ``"."`` not evaluated (interrupted run); ``computed_calls`` block-stack
        evaluations (extra evaluations included), ``skipped_calls``, ``total_calls`` (all
        model calls seen, per branch), ``extra_calls``, ``first_step``, ``steps``.
        """
        n = self.last_step - self.first_step + 1
        marks = {0: ["."] * n, 1: ["."] * n}
        seen = set()
        for d in self.log:
            marks[d.branch][d.step - self.first_step] = "S" if d.skipped else "C"
            seen.add(d.branch)
        seen |= {b for b in (0, 1) if self.extra_calls[b]}
        seen.add(0)
        skipped = sum(1 for d in self.log if d.skipped)
        total = len(self.log) + sum(self.extra_calls)
        return {
            "branches": {BRANCH_NAMES[b]: marks[b] for b in sorted(seen)},
            "computed_calls": total - skipped,
            "skipped_calls": skipped,
            "total_calls": total,
            "extra_calls": sum(self.extra_calls),
            "first_step": self.first_step,
            "steps": self.steps,
        }


def apply_blocks_with_cache(x, run_blocks, run, step, branch_rows):
    """Run a block stack with MagCache on a batch whose rows belong to different branches.

    Args:
        x: tokens entering the first block, ``[B, L, D]``.
        run_blocks: ``run_blocks(x_sub, rows) -> y_sub``: the whole block stack applied to the
            rows ``rows`` (a LongTensor of indices into the batch, for slicing any per-row
            context) of ``x``; ``x_sub = x[rows]``.
        run: the run's :class:`MagCacheRun` (its own residual cache is used).
        step: global step index of this call (the first evaluation decides, see MagCacheRun).
        branch_rows: ``[(branch, rows), ...]``: which rows (a slice, list or LongTensor) hold
            which branch; each branch at most once.

    Returns:
        ``[B, L, D]``: computing rows get ``run_blocks`` output (and refresh their branch's
        residual ``y - x``); each skipping row gets ``x + its own branch's cached residual``.
        Only rows that compute go through ``run_blocks``; when all compute it is called once on
        the whole batch (bit-identical to no cache).
    """
    B = x.shape[0]
    seen, parts = set(), []
    for branch, rows in branch_rows:
        if branch in seen:
            raise ValueError(f"branch_rows: branch {branch} appears twice")
        seen.add(branch)
        parts.append((branch, torch.arange(B)[rows] if not torch.is_tensor(rows) else rows.to(torch.long).cpu()))
    covered = torch.cat([i for _, i in parts]) if parts else torch.arange(0)
    if covered.numel() != B or not torch.equal(covered.sort().values, torch.arange(B)):
        raise ValueError(f"branch_rows: rows {covered.tolist()} must cover each of the {B} batch rows exactly once")
    plan = []
    for branch, idx in parts:
        r = run.get_residual(branch)
        fits = r is not None and tuple(r.shape) == (idx.numel(),) + tuple(x.shape[1:])
        plan.append((branch, idx, run.decide(branch, step, has_residual=fits)))
    compute = [(b, i) for b, i, s in plan if not s]
    skip = [(b, i) for b, i, s in plan if s]
    if not skip:
        y = run_blocks(x, torch.arange(B))
        for b, i in compute:
            di = i.to(x.device)
            run.store_residual(b, y.index_select(0, di) - x.index_select(0, di))
        return y
    out = x.clone()
    if compute:
        rows = torch.cat([i for _, i in compute]).to(x.device)
        y = run_blocks(x.index_select(0, rows), rows)
        out.index_copy_(0, rows, y)
        for b, i in compute:
            di = i.to(x.device)
            run.store_residual(b, out.index_select(0, di) - x.index_select(0, di))
    for b, i in skip:
        di = i.to(x.device)
        out.index_copy_(0, di, x.index_select(0, di) + run.get_residual(b, like=x))
    return out
