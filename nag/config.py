"""NAG settings (frozen; what the node's widgets fill in) and the sigma gate."""
from __future__ import annotations

import math
from dataclasses import dataclass

from .combine import check_nag_params

__all__ = ["NAGConfig", "WIDGET_BOUNDS", "config_from_inputs"]

# Widget bounds (min, max, step, default) of the node's inputs; the schema and the checks read them.
WIDGET_BOUNDS = {"scale": (1.0, 100.0, 0.1, 11.0), "tau": (1.0, 10.0, 0.05, 2.5),
                 "alpha": (0.0, 1.0, 0.01, 0.25), "sigma_end": (0.0, 100.0, 0.01, 0.0)}


@dataclass(frozen=True)
class NAGConfig:
    """Settings of Normalized Attention Guidance.

    Defaults are the Wan2.1 values at cfg 1 (scale 11, tau 2.5, alpha 0.25).

    Attributes:
        scale: ``s >= 1`` (the paper's phi + 1); 1 = off.
        tau: ``>= 1``; the largest L1 ratio ``||G||/||Z+||`` per token.
        alpha: ``[0, 1]``; blend of the normalised guided output into Z+; 0 = off.
        sigma_end: ``>= 0``; guidance runs while the model call's sigma is ``>= sigma_end``
            and is off below it (0 = every step). Wan flow sigmas run from 1 down to 0.
        chunk_tokens: tokens per chunk in :func:`~nag.combine.nag_combine` (None = all).
    """
    scale: float = 11.0
    tau: float = 2.5
    alpha: float = 0.25
    sigma_end: float = 0.0
    chunk_tokens: int | None = None

    def validate(self) -> "NAGConfig":
        """Raise ValueError naming the bad field; return self."""
        check_nag_params(self.scale, self.tau, self.alpha)
        if not isinstance(self.sigma_end, (int, float)) or not math.isfinite(float(self.sigma_end)) \
                or self.sigma_end < 0:
            raise ValueError(f"sigma_end={self.sigma_end!r}: must be a finite number >= 0 (0 = always on)")
        if self.chunk_tokens is not None and (not isinstance(self.chunk_tokens, int) or self.chunk_tokens < 1):
            raise ValueError(f"chunk_tokens={self.chunk_tokens!r}: must be an int >= 1 or None")
        return self

    @property
    def enabled(self) -> bool:
        """False when the settings make NAG a no-op (scale 1 or alpha 0)."""
        return self.scale > 1 and self.alpha > 0

    def active_at(self, sigma) -> bool:
        """Whether guidance runs at this sigma (a float, or a tensor of per-row sigmas: its max)."""
        if not self.enabled:
            return False
        if sigma is None or self.sigma_end <= 0:
            return True
        s = float(sigma.max()) if hasattr(sigma, "max") else float(sigma)
        return s >= self.sigma_end


def config_from_inputs(scale=None, tau=None, alpha=None, sigma_end=None) -> NAGConfig:
    """The node's inputs as a validated :class:`NAGConfig`.

    ``None`` stands for an input not known yet (linked to another node at validation time) and
    takes the default. Raises ValueError starting ``input '<name>'`` with its value and what is
    allowed: first the widget bounds (:data:`WIDGET_BOUNDS`; the host skips its own range check
    for inputs that ``validate_inputs`` takes), then :meth:`NAGConfig.validate`."""
    given = {"scale": scale, "tau": tau, "alpha": alpha, "sigma_end": sigma_end}
    values = {}
    for name, v in given.items():
        lo, hi, _, default = WIDGET_BOUNDS[name]
        if v is None:
            values[name] = default
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
            raise ValueError(f"input '{name}' is {v!r}; must be a finite number in [{lo}, {hi}].")
        if not lo <= float(v) <= hi:
            raise ValueError(f"input '{name}' is {v}; allowed: {lo} .. {hi}.")
        values[name] = float(v)
    try:
        return NAGConfig(**values).validate()
    except ValueError as exc:
        raise ValueError(f"input {exc}") from None
