"""NAG settings (frozen; what the node's widgets fill in) and the sigma gate."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

if TYPE_CHECKING:
    import torch

from .settings import SETTINGS

__all__ = ["NAGConfig", "SETTINGS", "config_from_inputs"]


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
    scale: float = SETTINGS["scale"].default
    tau: float = SETTINGS["tau"].default
    alpha: float = SETTINGS["alpha"].default
    sigma_end: float = SETTINGS["sigma_end"].default
    chunk_tokens: int | None = None

    def validate(self) -> "NAGConfig":
        """Raise :class:`~atelier_settings.SettingError` naming the bad field (the records of
        :data:`nag.settings.SETTINGS`); return self."""
        for name in SETTINGS:
            SETTINGS[name].check(getattr(self, name))
        if self.chunk_tokens is not None and (not isinstance(self.chunk_tokens, int) or self.chunk_tokens < 1):
            raise ValueError(f"chunk_tokens={self.chunk_tokens!r}: must be an int >= 1 or None")
        return self

    @property
    def enabled(self) -> bool:
        """False when the settings make NAG a no-op (scale 1 or alpha 0)."""
        return self.scale > 1 and self.alpha > 0

    def active_at(self, sigma: Union[float, torch.Tensor, None]) -> bool:
        """Whether guidance runs at this sigma (a float, or a tensor of per-row sigmas: its max)."""
        if not self.enabled:
            return False
        if sigma is None or self.sigma_end <= 0:
            return True
        s = float(sigma.max()) if hasattr(sigma, "max") else float(sigma)
        return s >= self.sigma_end


def config_from_inputs(scale: float | None = None, tau: float | None = None, alpha: float | None = None,
                       sigma_end: float | None = None) -> NAGConfig:
    """The node's inputs as a validated :class:`NAGConfig`.

    ``None`` stands for an input not known yet (linked to another node at validation time) and takes the
    default. Raises :class:`~atelier_settings.SettingError` naming the input, its value and what is allowed
    (the records of :data:`nag.settings.SETTINGS`)."""
    given = {"scale": scale, "tau": tau, "alpha": alpha, "sigma_end": sigma_end}
    values = {name: SETTINGS[name].default if v is None else SETTINGS[name].check(v) for name, v in given.items()}
    return NAGConfig(**values).validate()
