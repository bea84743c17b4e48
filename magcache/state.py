"""Per-run MagCache state at sampling time, and residual arithmetic on a block stack.

:class:`MagCacheRun` is created fresh for every sampling run (nothing survives between
runs) and answers, call by call, whether a branch skips the block stack. It applies the
same rule as :func:`magcache.schedule.plan_schedule` (shared code), so driving it with the
first evaluation of every (branch, step) reproduces the planned schedule exactly, whatever
the order of cond and uncond inside a step: decisions are per branch, never ORed.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Dict, Hashable, Iterable, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch

from .curve import CurveLike
from .schedule import BRANCH_NAMES, MagCacheConfig, RuleState, StepRange, plan_schedule

__all__ = ["MagCacheRun", "Decision", "CallPlan", "apply_blocks_with_cache", "Rows", "Chunk", "Block"]

Rows = Union[slice, Sequence[int], torch.Tensor]
"""Batch rows of a chunk: a slice, a list of indices or a LongTensor of indices."""
Chunk = Tuple[int, Optional[Hashable], Rows]
"""``(branch, key, rows)``: branch 0 (cond) / 1 (uncond), residual key (None or the host's cond uuid), rows."""
Block = Callable[[Dict[str, Any]], Dict[str, Any]]
"""One block of the stack: its inputs by name (``"img"`` the tokens ``[B, L, D]``) -> ``{"img": tokens}``."""
_Rows = Union[slice, torch.Tensor]          # rows as held by a plan: a unit-step slice or a CPU LongTensor
_Chunk = Tuple[int, Optional[Hashable], _Rows]
_Key = Tuple[int, Optional[Hashable]]      # (branch, key) of a residual


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

    The run also holds the residual store (keyed by branch and cond key) and the block-stack
    timing of the calls planned with :meth:`plan_call`; the host's node and
    :func:`apply_blocks_with_cache` both run through :meth:`plan_call` and :class:`CallPlan`.

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

    def __init__(self, curve: CurveLike, steps: int, config: MagCacheConfig, branches: Optional[int] = None,
                 step_range: Optional[StepRange] = None,
                 cache_device: Union[str, torch.device, None] = None) -> None:
        self.config = config
        self.steps = steps
        self._init_args = (curve, steps, config, branches, step_range)
        self.cache_device: Optional[torch.device] = torch.device(cache_device) if isinstance(cache_device, str) else cache_device
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget every decision and residual (a fresh run with the same settings)."""
        self._rule = RuleState(*self._init_args)
        self.branches = self._rule.branches
        curve, steps, config, branches, step_range = self._init_args
        sch = plan_schedule(curve, steps, config, branches=branches, step_range=step_range, run_branches=(0, 1))
        # the last step at which each branch reuses a residual: later residuals are never read
        self._last_skip = [max(sch.cond_skipped, default=-1), max(sch.uncond_skipped, default=-1)]
        self.first_step, self.last_step = self._rule.first, self._rule.last
        self._decided: Dict[Tuple[int, int], bool] = {}
        self._residuals: Dict[_Key, torch.Tensor] = {}
        self.log: List[Decision] = []
        self.extra_calls = [0, 0]
        self.block_time = 0.0
        self.block_evals = 0
        self.skipped_evals = 0

    def decide(self, branch: int, step: int, has_residual: Optional[bool] = None) -> bool:
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
            has_residual = (branch, None) in self._residuals
        skip = self._rule.advance(branch, step, bool(has_residual))
        self._decided[key] = skip
        self.log.append(Decision(branch, step, skip))
        return skip

    # --------------------------------------------------------------- residuals
    def store_residual(self, branch: int, residual: torch.Tensor, key: Optional[Hashable] = None) -> None:
        """Keep ``residual`` (detached, on ``cache_device``) as the cached residual of
        ``(branch, key)``; ``key`` tells apart several conds of one branch (the host's cond
        uuid), None for the usual one cond per branch."""
        r = residual.detach()
        if self.cache_device is not None and r.device != self.cache_device:
            r = r.to(self.cache_device)  # blocking: a non-blocking GPU->CPU copy may not be complete
        self._residuals[(branch, key)] = r

    def get_residual(self, branch: int, like: Optional[torch.Tensor] = None,
                     key: Optional[Hashable] = None) -> Optional[torch.Tensor]:
        """The cached residual of ``(branch, key)`` (None if none), moved to ``like``'s device
        and dtype."""
        r = self._residuals.get((branch, key))
        if r is not None and like is not None and (r.device != like.device or r.dtype != like.dtype):
            r = r.to(device=like.device, dtype=like.dtype)
        return r

    def wants_residual(self, branch: int, step: Optional[int]) -> bool:
        """Whether a residual computed at ``step`` (None: between steps) can still be read: some
        later step of ``branch`` is planned to skip. The plan is exact (the rule does not depend
        on tensors), so a computing call after the branch's last planned skip need not store its
        residual (with ``thresh`` 0 nothing is ever stored)."""
        return step is None or step < self._last_skip[branch]

    def has_residual(self, branch: int, key: Optional[Hashable] = None) -> bool:
        """Whether a residual of ``(branch, key)`` is cached."""
        return (branch, key) in self._residuals

    def clear_residuals(self) -> None:
        """Drop every cached residual (end of a run); decisions and the log stay."""
        self._residuals.clear()

    # ------------------------------------------------------------- one call
    def plan_call(self, step: Optional[int], chunks: Iterable[Chunk], batch: int) -> CallPlan:
        """Decide one model call whose batch rows belong to several (branch, key) chunks.

        Args:
            step: global step of the call, or None for an evaluation that is not a step of
                the schedule (the midpoint of a 2nd-order sampler): everything computes and
                the accumulators are left alone.
            chunks: ``[(branch, key, rows), ...]``: branch 0 (cond) / 1 (uncond), the
                residual key (None, or the host's cond uuid), and the batch rows (a slice, a
                list or a LongTensor); together they must cover each of the ``batch`` rows once.
            batch: B, the rows of the call.

        The decision is made once per branch (several conds of one branch share it), with
        ``has_residual`` true only when every chunk of the branch has a cached residual of its
        row count. Returns a :class:`CallPlan` for :meth:`CallPlan.enter` / :meth:`CallPlan.leave`.
        """
        return CallPlan(self, step, chunks, batch)

    def note_block_time(self, seconds: float, computed: int, skipped: int) -> None:
        """Timing of one call's block stack (computed / skipped row chunks), for :meth:`report`."""
        self.block_time += seconds
        self.block_evals += computed
        self.skipped_evals += skipped

    # ------------------------------------------------------------------ report
    def report(self) -> Dict[str, Any]:
        """What the run did so far.

        Returns a dict: ``branches`` maps ``"cond"``/``"uncond"`` (those evaluated at least
        once; ``"cond"`` always) to one mark per step of the run's range: ``"C"`` computed,
        ``"S"`` skipped, ``"."`` not evaluated (interrupted run); ``computed_calls`` block-stack
        evaluations (extra evaluations included), ``skipped_calls``, ``total_calls`` (all
        model calls seen, per branch), ``extra_calls``, ``first_step``, ``steps``.
        """
        n = self.last_step - self.first_step + 1
        marks = {0: ["."] * n, 1: ["."] * n}
        seen: set[int] = set()
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


def _as_rows(rows: Rows, batch: int) -> _Rows:
    """Rows as a unit-step slice with explicit bounds when possible (no tensor work), else a CPU
    LongTensor of batch indices."""
    if isinstance(rows, slice):
        start, stop, step = rows.indices(batch)
        if step == 1:
            return slice(start, max(start, stop))
        rows = range(start, stop, step)
    if torch.is_tensor(rows):
        return rows.to(torch.long).cpu()
    return torch.as_tensor(list(rows), dtype=torch.long)


def _count(rows: _Rows) -> int:
    return rows.stop - rows.start if isinstance(rows, slice) else rows.numel()


def _indices(rows: _Rows) -> List[int]:
    return list(range(rows.start, rows.stop)) if isinstance(rows, slice) else rows.tolist()


def _rows(t: torch.Tensor, rows: _Rows) -> torch.Tensor:
    """``t[rows]`` along dim 0 (a view for a slice)."""
    if isinstance(rows, slice):
        return t[rows]
    return t.index_select(0, rows if rows.device == t.device else rows.to(t.device))


class CallPlan:
    """What the block stack does in one model call (made by :meth:`MagCacheRun.plan_call`).

    Use: ``x_blocks = plan.enter(x)`` with the tokens entering the first block ``[B, L, D]``;
    run the blocks on ``x_blocks`` (unless :attr:`all_skip`), with per-row inputs cut by
    :meth:`rows_of` when :attr:`subset`; then ``plan.leave(y)`` with the last block's output
    gives the full ``[B, L, D]``: computing rows are ``y`` (and refresh their residual
    ``y - x``), each skipping row is ``x + its own (branch, key)'s cached residual``.

    The per-call work is done once per call here, never per block: the decision (one per
    branch), the rows, the cut of per-row inputs (cached per tensor). Contiguous chunks (the
    host's) need no index tensors unless some rows skip and others compute.

    Attributes:
        all_compute: no row skips (the blocks run on the whole batch, bit-identical to no cache).
        all_skip: every row skips; the blocks need not run.
        subset: some rows skip: the blocks run on :attr:`compute_rows` only (when the caller
            can cut per-row inputs; otherwise it runs all rows and :meth:`leave` discards the
            skipped rows' output, pass ``subset_rows=False`` to :meth:`enter`).
        compute_rows: LongTensor of the computing batch rows, in the order ``y`` holds them
            (made on first use).
    """
    __slots__ = ("run", "step", "batch", "compute", "skip", "all_compute", "all_skip", "subset", "x_in", "t0",
                 "_cut", "_dev_rows", "_compute_rows")
    run: MagCacheRun
    step: Optional[int]
    batch: int
    compute: List[_Chunk]
    skip: List[_Chunk]
    all_compute: bool
    all_skip: bool
    subset: bool
    x_in: Optional[torch.Tensor]
    t0: float
    _cut: Dict[int, Tuple[torch.Tensor, torch.Tensor]]
    _dev_rows: Optional[torch.Tensor]
    _compute_rows: Optional[torch.Tensor]

    def __init__(self, run: MagCacheRun, step: Optional[int], chunks: Iterable[Chunk], batch: int) -> None:
        self.run, self.step, self.batch = run, step, batch
        parts: List[_Chunk] = []
        seen: set[_Key] = set()
        covered: List[int] = []
        for branch, key, rows in chunks:
            if branch not in (0, 1):
                raise ValueError(f"chunks: branch {branch!r} is not allowed; use 0 (cond) or 1 (uncond)")
            if (branch, key) in seen:
                raise ValueError(f"branch_rows: branch {branch} (key {key!r}) appears twice")
            seen.add((branch, key))
            r = _as_rows(rows, batch)
            parts.append((branch, key, r))
            covered.extend(_indices(r))
        if len(covered) != batch or sorted(covered) != list(range(batch)):
            raise ValueError(f"branch_rows: rows {covered} must cover each of the {batch} batch rows exactly once")
        skip_branch: Dict[int, bool] = {}
        if step is not None:
            store = run._residuals
            for branch, _, _ in parts:
                if branch not in skip_branch:
                    fits = all(_fits(store.get((b, k)), _count(r)) for b, k, r in parts if b == branch)
                    skip_branch[branch] = run.decide(branch, step, has_residual=fits)
        if any(skip_branch.values()):
            self.compute = [c for c in parts if not skip_branch.get(c[0], False)]
            self.skip = [c for c in parts if skip_branch.get(c[0], False)]
        else:
            self.compute, self.skip = parts, []
        self.all_compute = not self.skip
        self.all_skip = not self.compute
        self.subset = not (self.all_compute or self.all_skip)
        self.x_in = None
        self.t0 = 0.0
        self._cut = {}
        self._dev_rows = None
        self._compute_rows = None

    @property
    def compute_rows(self) -> torch.Tensor:
        """LongTensor of the computing batch rows, in the order ``y`` holds them (made on first use)."""
        if self._compute_rows is None:
            self._compute_rows = torch.as_tensor([i for _, _, r in self.compute for i in _indices(r)],
                                                 dtype=torch.long)
        return self._compute_rows

    def _rows_on(self, device: torch.device) -> torch.Tensor:
        if self._dev_rows is None or self._dev_rows.device != device:
            self._dev_rows = self.compute_rows.to(device)
        return self._dev_rows

    def enter(self, x: torch.Tensor, subset_rows: bool = True) -> torch.Tensor:
        """Record the tokens ``x`` ``[B, L, D]`` entering the first block and return what the
        blocks run on: ``x`` itself, or its computing rows when :attr:`subset` (and
        ``subset_rows``)."""
        self.x_in = x
        self.t0 = time.perf_counter()
        if not subset_rows:
            self.subset = False
        if self.subset:
            return x.index_select(0, self._rows_on(x.device))
        return x

    def rows_of(self, t: Any) -> Any:
        """A per-row block input (context, modulation, ...) cut to the computing rows when
        :attr:`subset`; tensors whose first dim is not the batch pass unchanged. Cut once
        per tensor and call, whatever the number of blocks."""
        if not self.subset or not torch.is_tensor(t) or t.dim() == 0 or t.shape[0] != self.batch:
            return t
        hit = self._cut.get(id(t))
        if hit is not None and hit[0] is t:
            return hit[1]
        out = t.index_select(0, self._rows_on(t.device))
        self._cut[id(t)] = (t, out)
        return out

    def run_block(self, inputs: Dict[str, Any], block: Block, first: bool, last: bool, subset_rows: bool = True,
                  per_row: Sequence[str] = ("txt", "vec", "pe")) -> Dict[str, Any]:
        """Run one block of the stack under this plan: ``block(inputs) -> {"img": ...}``.

        inputs: the block's inputs by name; ``"img"`` the tokens ``[B, L, D]``, ``per_row`` the names of inputs
        with one row per batch row (Wan: context ``txt``, modulation ``vec``, rope ``pe``). first / last: the
        block is the stack's first (the plan :meth:`enter` s there) / last (:meth:`leave` gives the full
        ``[B, L, D]``). A middle block forwards ``inputs`` unchanged when every row computes; when every row
        skips no block runs; when some rows skip the blocks see the computing rows only (``subset_rows``).
        Returns ``{"img": tokens}``."""
        if self.all_compute and not first and not last:
            return block(inputs)
        img = self.enter(inputs["img"], subset_rows) if first else inputs["img"]
        if self.all_skip:
            out = img
        elif self.subset:
            cut = {k: self.rows_of(inputs[k]) for k in per_row if k in inputs}
            out = block(dict(inputs, **cut, img=img))["img"]
        else:
            out = block(inputs)["img"]
        return {"img": self.leave(out) if last else out}

    def _entered(self) -> torch.Tensor:
        if self.x_in is None:
            raise RuntimeError("CallPlan.leave: the plan was never entered (call enter() at the first block)")
        return self.x_in

    def _residual(self, branch: int, like: torch.Tensor, key: Optional[Hashable]) -> torch.Tensor:
        r = self.run.get_residual(branch, like=like, key=key)
        if r is None:
            raise RuntimeError(f"CallPlan.leave: branch {branch} (key {key!r}) skips without a cached residual")
        return r

    def leave(self, y: torch.Tensor) -> torch.Tensor:
        """The full ``[B, L, D]`` output of the block stack from the last block's output ``y``
        (rows as :meth:`enter` returned them; ignored when :attr:`all_skip`). Stores the
        residuals of computing chunks and records the block time."""
        run = self.run
        if self.all_compute:
            run.note_block_time(time.perf_counter() - self.t0, len(self.compute), 0)
            keep = [c for c in self.compute if run.wants_residual(c[0], self.step)]
            if keep:
                res = y.detach() - self._entered().detach()   # one subtraction; each chunk keeps a view of its rows
                for b, k, rows in keep:
                    run.store_residual(b, _rows(res, rows), key=k)
            return y
        x = self._entered()
        if self.all_skip:
            full = x.clone()
        else:
            if self.subset:
                full = x.clone()
                full.index_copy_(0, self._rows_on(x.device), y)
            else:
                full = y.clone()
            run.note_block_time(time.perf_counter() - self.t0, len(self.compute), 0)
            for b, k, rows in self.compute:
                if run.wants_residual(b, self.step):
                    run.store_residual(b, _rows(full, rows) - _rows(x, rows), key=k)
        for b, k, rows in self.skip:
            res = self._residual(b, x, k)
            if isinstance(rows, slice):
                full[rows] = x[rows] + res
            else:
                di = rows.to(x.device)
                full.index_copy_(0, di, x.index_select(0, di) + res)
        run.note_block_time(0.0, 0, len(self.skip))
        self._cut.clear()
        return full


def _fits(res: Optional[torch.Tensor], rows: int) -> bool:
    return res is not None and res.shape[0] == rows


def apply_blocks_with_cache(x: torch.Tensor, run_blocks: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                            run: MagCacheRun, step: Optional[int],
                            branch_rows: Sequence[Union[Tuple[int, Rows], Tuple[int, Rows, Hashable]]]) -> torch.Tensor:
    """Run a block stack with MagCache on a batch whose rows belong to different branches.

    Args:
        x: tokens entering the first block, ``[B, L, D]``.
        run_blocks: ``run_blocks(x_sub, rows) -> y_sub``: the whole block stack applied to the
            rows ``rows`` (a LongTensor of indices into the batch, for slicing any per-row
            context) of ``x``; ``x_sub = x[rows]``.
        run: the run's :class:`MagCacheRun` (its own residual store is used).
        step: global step index of this call (the first evaluation decides, see MagCacheRun);
            None for an off-schedule evaluation (computes).
        branch_rows: ``[(branch, rows), ...]`` or ``[(branch, rows, key), ...]``: which rows
            (a slice, list or LongTensor) hold which branch (and residual key); each
            (branch, key) at most once.

    Returns:
        ``[B, L, D]``: computing rows get ``run_blocks`` output (and refresh their residual
        ``y - x``); each skipping row gets ``x + its own cached residual``. Only rows that
        compute go through ``run_blocks``; when all compute it is called once on the whole
        batch (bit-identical to no cache). The same :class:`CallPlan` the node's block patches
        use.
    """
    B = x.shape[0]
    chunks = [(e[0], e[2] if len(e) > 2 else None, e[1]) for e in branch_rows]
    plan = run.plan_call(step, chunks, B)
    xb = plan.enter(x)
    if plan.all_skip:
        return plan.leave(xb)
    rows = plan.compute_rows if plan.subset else torch.arange(B)
    return plan.leave(run_blocks(xb, rows))
