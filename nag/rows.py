"""Which rows of a batched model call are guided: the positive (cond) chunks only."""
from __future__ import annotations

from typing import Iterable, List, Sequence, Set, SupportsInt

__all__ = ["guided_row_slices", "remap_row_slices", "COND"]

COND = 0  # ComfyUI's cond_or_uncond marks positive chunks 0 and negative (CFG uncond) chunks 1


def guided_row_slices(cond_or_uncond: Sequence[SupportsInt], batch: int) -> List[slice]:
    """Row slices of the positive chunks of a batch.

    The host concatenates ``len(cond_or_uncond)`` chunks of equal size along the batch, in any
    order (usually uncond first: ``[1, 0]``), possibly several positive chunks (area conds),
    or a single chunk per call when the contexts' lengths differ.

    Args:
        cond_or_uncond: sequence of 0 (positive) / 1 (negative), one per chunk.
        batch: rows in the call (``B``), a multiple of ``len(cond_or_uncond)``.

    Returns:
        list of ``slice`` over rows, one per positive chunk, in batch order (adjacent ones merged).
    """
    cu = list(cond_or_uncond)
    if not cu:
        raise ValueError("cond_or_uncond: empty; expected one 0/1 entry per batch chunk")
    if batch % len(cu):
        raise ValueError(f"batch={batch}: not a multiple of len(cond_or_uncond)={len(cu)}")
    n = batch // len(cu)
    out: List[slice] = []
    for i, kind in enumerate(cu):
        if int(kind) != COND:
            continue
        if out and out[-1].stop == i * n:
            out[-1] = slice(out[-1].start, (i + 1) * n)
        else:
            out.append(slice(i * n, (i + 1) * n))
    return out


def remap_row_slices(guided: Iterable[slice], present_rows: Iterable[SupportsInt]) -> List[slice]:
    """Guided slices of a full batch, re-expressed for a call that runs only some rows.

    A cache (e.g. MagCache skipping one branch) may run the blocks on a subset of the batch.
    Args:
        guided: slices of the full batch (from :func:`guided_row_slices`).
        present_rows: indices into the full batch of the rows present, in order.
    Returns:
        slices over the *present* rows that are guided (adjacent ones merged).
    """
    full: Set[int] = set()
    for sl in guided:
        full.update(range(sl.start, sl.stop))
    out: List[slice] = []
    for j, r in enumerate(int(r) for r in present_rows):
        if r not in full:
            continue
        if out and out[-1].stop == j:
            out[-1] = slice(out[-1].start, j + 1)
        else:
            out.append(slice(j, j + 1))
    return out
