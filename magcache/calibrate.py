"""Calibrate a magnitude-ratio curve from one uncached run.

For every branch and step t >= 1 (as the official ``magcache_calibration``):

* ``ratio_t = mean_tokens( ||r_t|| / ||r_{t-1}|| )`` with ``r`` the residual of the whole block
  stack ``[B, L, D]`` of that branch, ``||.||`` the L2 norm over channels ``D`` per token, and
  the mean over all ``B * L`` tokens;
* ``std_t`` the (unbiased, as ``torch.std``) standard deviation of that per-token ratio;
* ``cos_t = mean_tokens(1 - cos(r_t, r_{t-1}))`` (per token over ``D``, eps 1e-8).

Values are rounded to 5 decimals and each branch's column starts with a ``1.0`` pad (step 0
has no predecessor); with two branches the columns are interleaved per call
``[c0, u0, c1, u1, ...]``, which is the format of the shipped presets (std and cosine
distance use the same layout with ``0.0`` pads; the official script saves them unpadded). Norms are computed in
float32 whatever the residual's dtype (bf16 norms quantise the ratios). A token whose
previous residual has zero norm would divide by zero; its denominator is clamped to 1e-12.
"""
from __future__ import annotations

import json
import os
import re
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple, Union

import torch

from .curve import Curve
from .schedule import Sigmas
from .session import SigmaSteps

Stats = Tuple[float, float, float]
"""``(mean ratio, ratio std, mean cosine distance)`` of one residual against the previous step's."""

__all__ = ["CalibrationRecorder", "residual_stats", "check_curve_name", "save_curve"]

FORMAT = "atelier.magcache.curve"


def residual_stats(residual: torch.Tensor, previous: torch.Tensor) -> Stats:
    """``(mean ratio, ratio std, mean cosine distance)`` of two residuals ``[B, L, D]`` (or any
    ``[..., D]``), per token over the last dim, as Python floats (unrounded)."""
    if residual.shape != previous.shape:
        raise ValueError(f"residual: shape {tuple(residual.shape)} differs from the previous step's "
                         f"{tuple(previous.shape)}; calibrate at one resolution and batch size")
    r = residual.detach().float().reshape(-1, residual.shape[-1])
    p = previous.detach().float().reshape(-1, previous.shape[-1]).to(r.device)
    ratio = r.norm(dim=-1) / p.norm(dim=-1).clamp_min(1e-12)
    std = ratio.std().item() if ratio.numel() > 1 else 0.0
    cos = (1 - torch.nn.functional.cosine_similarity(r, p, dim=-1, eps=1e-8)).mean().item()
    return ratio.mean().item(), std, cos


class CalibrationRecorder:
    """Collects per-call statistics of the block-stack residual during one calibration run.

    Args:
        branches: 2 when cond and uncond are evaluated (cfg > 1), 1 otherwise.

    Call :meth:`record` with each evaluation's residual. The first record of a
    (branch, step) counts; further records of the same pair (multi-evaluation samplers) are
    ignored, like extra evaluations in :class:`~magcache.state.MagCacheRun`. Only the previous
    step's residual is kept per branch (memory: one residual per branch, on its own device).
    """

    def __init__(self, branches: int = 2) -> None:
        if branches not in (1, 2):
            raise ValueError(f"branches: {branches!r} is not allowed; use 1 or 2")
        self.branches = branches
        self._prev: List[Optional[Tuple[int, torch.Tensor]]] = [None, None]     # (step, residual)
        self._stats: List[Dict[int, Stats]] = [{}, {}]        # step -> (ratio, std, cos)
        self._steps: List[Set[int]] = [set(), set()]
        self._sigma_steps: Optional[SigmaSteps] = None

    def step_of(self, sample_sigmas: Sigmas, sigma: Union[float, torch.Tensor]) -> Optional[int]:
        """The 0-based step of a call at ``sigma`` in a sampler run with ``sample_sigmas`` (its n+1 sigmas;
        a run whose first sigma differs from the last one seen starts over), None between steps
        (:class:`~magcache.session.SigmaSteps`)."""
        if self._sigma_steps is None or self._sigma_steps.sigmas[0] != float(sample_sigmas[0]):
            self._sigma_steps = SigmaSteps(sample_sigmas)
        return self._sigma_steps.step_of(sigma)

    def record_call(self, step: Optional[int], cond_or_uncond: Sequence[int], x_in: torch.Tensor,
                    x_out: torch.Tensor) -> None:
        """Record one model call: ``x_in`` / ``x_out`` ``[B, L, D]`` the tokens entering the first block and
        leaving the last, in ``len(cond_or_uncond)`` chunks of equal size (the host's branch ids per chunk:
        0 cond, any other uncond). The first chunk of each branch records its residual ``x_out - x_in``
        (float32); a call between steps (``step`` None) records nothing."""
        if step is None:
            return
        n = x_out.shape[0] // len(cond_or_uncond)
        seen: Set[int] = set()
        for c, branch in enumerate(cond_or_uncond):
            b = 0 if branch == 0 else 1
            if b not in seen:   # several conds of one branch: the first one calibrates
                seen.add(b)
                self.record(b, step, (x_out[c * n:(c + 1) * n] - x_in[c * n:(c + 1) * n]).float())

    def record(self, branch: int, step: int, residual: torch.Tensor) -> None:
        """Record the block-stack residual ``[B, L, D]`` of ``branch`` at 0-based ``step``.

        Steps must come in increasing order per branch; a gap (a step never recorded) raises.
        """
        if branch not in range(self.branches):
            raise ValueError(f"branch: {branch!r} is not allowed with branches={self.branches}")
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step: {step!r} must be an integer >= 0")
        if not torch.is_tensor(residual) or residual.dim() < 2:
            raise ValueError("residual: expected a tensor [B, L, D]")
        if step in self._steps[branch]:
            return
        prev = self._prev[branch]
        if prev is None:
            if step != 0:
                raise ValueError(f"step: branch {branch} starts at step {step}; calibration needs step 0 first")
        else:
            if step != prev[0] + 1:
                raise ValueError(f"step: branch {branch} jumps from step {prev[0]} to {step}; "
                                 "calibration needs every step in order")
            self._stats[branch][step] = residual_stats(residual, prev[1])
        self._steps[branch].add(step)
        self._prev[branch] = (step, residual.detach().float().clone())

    @property
    def steps(self) -> int:
        """Steps recorded for every branch (the calibration length)."""
        return min(len(s) for s in self._steps[:self.branches])

    def _column(self, b: int, k: int, steps: int, pad: float) -> List[float]:
        return [pad] + [round(self._stats[b][t][k], 5) for t in range(1, steps)]

    def _interleave(self, k: int, pad: float) -> List[float]:
        s = self.steps
        if s < 2:
            raise ValueError(f"calibration: {s} step(s) recorded per branch; need at least 2")
        cols = [self._column(b, k, s, pad) for b in range(self.branches)]
        return [cols[b][t] for t in range(s) for b in range(self.branches)]

    def curve(self) -> Curve:
        """The ratio curve (:class:`~magcache.curve.Curve`), interleaved, with 1.0 pads."""
        return Curve(self._interleave(0, 1.0), self.branches)

    def std(self) -> List[float]:
        """Per-call std of the per-token ratio, same layout as :meth:`curve` (pads 0.0)."""
        return self._interleave(1, 0.0)

    def cos_dis(self) -> List[float]:
        """Per-call mean cosine distance, same layout as :meth:`curve` (pads 0.0)."""
        return self._interleave(2, 0.0)

    def to_dict(self) -> Dict[str, Any]:
        """The curve file's fields (``format``, ``version``, ``branches``, ``calib_steps``, ``mag_ratios``,
        ``mag_std``, ``cos_dis``)."""
        return {"format": FORMAT, "version": 1, "branches": self.branches, "calib_steps": self.steps,
                "mag_ratios": list(self.curve()), "mag_std": self.std(), "cos_dis": self.cos_dis()}

    def to_json(self) -> str:
        """JSON text that :func:`~magcache.curve.parse_curve` accepts (``mag_ratios`` + metadata)."""
        return json.dumps(self.to_dict())


def check_curve_name(name: object) -> Optional[str]:
    """None when ``name`` may name a saved curve (letters, digits, ``-`` and ``_``), else the message."""
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        return (f"name: {name!r} is not allowed; use letters, digits, '-' and '_' (the JSON is saved as "
                "output/atelier_magcache/<name>_NNNNN.json)")
    return None


def save_curve(curve_json: str, name: str, out_root: str) -> str:
    """Write ``curve_json`` to a new ``<out_root>/atelier_magcache/<name>_NNNNN.json`` and return its path.

    Never overwrites: the counter continues after the highest number already there for ``name`` (as the
    host's SaveImage counts), and the file is created exclusively and written completely before it gets
    its name (a temp file in the same folder, then ``os.link``, which fails if the name was taken)."""
    msg = check_curve_name(name)
    if msg is not None:
        raise ValueError(msg)
    folder = os.path.join(out_root, "atelier_magcache")
    os.makedirs(folder, exist_ok=True)
    pat = re.compile(re.escape(name) + r"_(\d{5,})\.json$")
    n = max([int(m.group(1)) for f in os.listdir(folder) if (m := pat.match(f))], default=0)
    tmp = os.path.join(folder, f".{name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(curve_json)
    try:
        while True:
            n += 1
            path = os.path.join(folder, f"{name}_{n:05d}.json")
            try:
                os.link(tmp, path)
                return path
            except FileExistsError:
                continue
    finally:
        os.unlink(tmp)
