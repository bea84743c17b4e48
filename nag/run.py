"""Per-run NAG state and the per-call plan, pure torch.

The host supplies the text projection as a callable (``project(neg) -> context``, e.g. the
live Wan ``text_embedding``), so nothing here touches a host model.

* :class:`NAGRun`: frozen settings (config + raw negative) and the per-run cache of the
  projected negative, keyed by ``(device, dtype)``. A sampling run works on :meth:`NAGRun.fresh`;
  the template itself never caches (weights may be patched differently next run).
* :class:`CallPlan`: what the cross-attention patches do in one model call (guided row slices,
  projected negative); :meth:`CallPlan.rows_for` re-expresses the guided rows when a cache runs
  the blocks on part of the batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, SupportsInt, Tuple, Union

import torch

from .config import NAGConfig
from .rows import guided_row_slices, remap_row_slices

__all__ = ["NAGRun", "CallPlan", "Project"]

Project = Callable[[torch.Tensor], torch.Tensor]
"""``project(neg) -> ctx``: raw negative ``(N, Ln, text_dim)`` to model context ``(N, Ln, C)``."""


@dataclass(frozen=True)
class CallPlan:
    """NAG in one model call.

    Attributes:
        config: the run's :class:`~nag.config.NAGConfig`.
        negative: projected NAG-negative context ``(N, Ln, C)``.
        guided: row slices of the full batch that are guided (positive chunks).
        batch: rows ``B`` of the full call.
    """
    config: NAGConfig
    negative: torch.Tensor
    guided: List[slice]
    batch: int

    def rows_for(self, rows: int, present_rows: Optional[Sequence[int]] = None) -> List[slice]:
        """Guided slices for a block call on ``rows`` rows of the batch.

        ``rows == batch``: :attr:`guided`. Fewer rows (a cache running only some rows): all
        rows when every row is guided, else ``present_rows`` (indices into the full batch of
        the rows present, in order, ``len == rows``) remapped. Raises RuntimeError when
        neither tells which rows are guided.
        """
        if rows == self.batch:
            return self.guided
        full = {r for sl in self.guided for r in range(sl.start, sl.stop)}
        if len(full) == self.batch:        # every row is positive: any subset is all guided
            return [slice(0, rows)]
        if present_rows is not None and len(present_rows) == rows:
            return remap_row_slices(self.guided, present_rows)
        raise RuntimeError(
            f"Atelier NAG: the cross-attention got {rows} of the call's {self.batch} rows and no node "
            "said which; NAG cannot tell the positive rows apart. Put the node that subsets rows "
            "after NAG or report this combination.")


class NAGRun:
    """Settings fixed at node time; per-run state (the projected negative) made per run.

    Args:
        config: validated :class:`~nag.config.NAGConfig`.
        negative: raw NAG-negative text context ``(N, Ln, text_dim)``.
        cache_projection: keep the projection per ``(device, dtype)`` (a run's copy, from
            :meth:`fresh`); False for the template, which projects on every call.
    """

    def __init__(self, config: NAGConfig, negative: torch.Tensor, *, cache_projection: bool = False) -> None:
        self.config = config
        self.negative = negative
        self.cache_projection = cache_projection
        self.cache: Dict[Tuple[str, torch.dtype], torch.Tensor] = {}   # (str(device), dtype) -> project(negative)
        self.projections = 0
        self.guided_calls = 0

    def fresh(self) -> "NAGRun":
        """A run's own state: same settings, empty cache, counters at 0."""
        return NAGRun(self.config, self.negative, cache_projection=True)

    def projected_negative(self, project: Project, device: Union[str, torch.device], dtype: torch.dtype) -> torch.Tensor:
        """``project(negative)`` on ``device``/``dtype``; cached for the run when caching."""
        key = (str(device), dtype)
        neg = self.cache.get(key)
        if neg is None:
            neg = project(self.negative.to(device=device, dtype=dtype))
            self.projections += 1
            if self.cache_projection:
                self.cache[key] = neg
        return neg

    def plan_call(self, cond_or_uncond: Optional[Sequence[SupportsInt]], sigmas: Union[float, torch.Tensor, None],
                  batch: int, project: Project, device: Union[str, torch.device],
                  dtype: torch.dtype) -> Optional[CallPlan]:
        """The plan of one model call, or None when the call runs unguided.

        Args:
            cond_or_uncond: one 0 (positive) / 1 (negative) per batch chunk; empty/None: unguided.
            sigmas: the call's sigma (float or per-row tensor; None = always on); guided while
                ``>= config.sigma_end`` (see :meth:`NAGConfig.active_at`).
            batch: rows ``B`` of the call.
            project, device, dtype: how and where to project the negative (the context's).
        """
        if not cond_or_uncond or not self.config.active_at(sigmas):
            return None
        guided = guided_row_slices(cond_or_uncond, batch)
        if not guided:
            return None
        plan = CallPlan(self.config, self.projected_negative(project, device, dtype), guided, batch)
        self.guided_calls += 1
        return plan

    def finish(self) -> Optional[str]:
        """Drop the cache; a one-line summary of the run, or None when nothing was guided."""
        self.cache.clear()
        if not self.guided_calls:
            return None
        return (f"[Atelier] NAG: guided {self.guided_calls} model calls; negative projected "
                f"{self.projections} time(s)")
