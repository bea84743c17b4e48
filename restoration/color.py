"""sRGB -> CIELAB (D65) and CIEDE2000, in torch.

All functions are elementwise over leading dimensions; the colour axis is the LAST one
(``(..., 3)``), matching ComfyUI IMAGE tensors ``(B, H, W, 3)``.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union
import math

import torch

# D65 reference white, 2 degree observer (the sRGB white point).
WHITE_D65 = (0.95047, 1.0, 1.08883)
_M_RGB2XYZ = ((0.4124564, 0.3575761, 0.1804375),
              (0.2126729, 0.7151522, 0.0721750),
              (0.0193339, 0.1191920, 0.9503041))


def srgb_to_linear(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB-encoded values in [0, 1] -> linear light, same shape."""
    return torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb.clamp(min=0) + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(lin: torch.Tensor) -> torch.Tensor:
    """Linear light in [0, 1] -> sRGB-encoded values, same shape."""
    lin = lin.clamp(0, 1)
    return torch.where(lin <= 0.0031308, lin * 12.92, 1.055 * lin ** (1 / 2.4) - 0.055)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB ``(..., 3)`` in [0, 1] -> CIELAB ``(..., 3)`` (L* in [0, 100]), D65.

    Computed in float32 at least (float64 stays float64).
    """
    dt = torch.float64 if rgb.dtype == torch.float64 else torch.float32
    lin = srgb_to_linear(rgb.to(dt))
    m = torch.tensor(_M_RGB2XYZ, dtype=dt, device=rgb.device)
    xyz = lin @ m.T / torch.tensor(WHITE_D65, dtype=dt, device=rgb.device)
    eps, kappa = 216 / 24389, 24389 / 27
    f = torch.where(xyz > eps, xyz.clamp(min=eps) ** (1 / 3), (kappa * xyz + 16) / 116)
    L = 116 * f[..., 1] - 16
    a = 500 * (f[..., 0] - f[..., 1])
    b = 200 * (f[..., 1] - f[..., 2])
    return torch.stack([L, a, b], -1)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """CIELAB ``(..., 3)`` (D65) -> sRGB ``(..., 3)`` clipped to [0, 1]."""
    dt = torch.float64 if lab.dtype == torch.float64 else torch.float32
    lab = lab.to(dt)
    fy = (lab[..., 0] + 16) / 116
    fx = fy + lab[..., 1] / 500
    fz = fy - lab[..., 2] / 200
    f = torch.stack([fx, fy, fz], -1)
    eps, kappa = 216 / 24389, 24389 / 27
    xyz = torch.where(f ** 3 > eps, f ** 3, (116 * f - 16) / kappa)
    xyz = xyz * torch.tensor(WHITE_D65, dtype=dt, device=lab.device)
    m = torch.linalg.inv(torch.tensor(_M_RGB2XYZ, dtype=torch.float64)).to(dt).to(lab.device)
    return linear_to_srgb(xyz @ m.T)


def ciede2000(lab1: torch.Tensor, lab2: torch.Tensor, kL: float = 1.0, kC: float = 1.0,
              kH: float = 1.0) -> torch.Tensor:
    """CIEDE2000 colour difference (Sharma, Wu & Dalal 2005) between ``(..., 3)`` Lab tensors.

    Broadcasts over leading dimensions; returns ``(...)``. Hue angles follow the paper's
    conventions (h = 0 when a' = b' = 0; mean hue and delta-h rules for |dh| > 180 deg).
    """
    dt = torch.float64 if (lab1.dtype == torch.float64 or lab2.dtype == torch.float64) else torch.float32
    lab1, lab2 = lab1.to(dt), lab2.to(dt)
    L1, a1, b1 = lab1.unbind(-1)
    L2, a2, b2 = lab2.unbind(-1)
    C1 = torch.sqrt(a1 * a1 + b1 * b1)
    C2 = torch.sqrt(a2 * a2 + b2 * b2)
    Cm7 = ((C1 + C2) / 2) ** 7
    G = 0.5 * (1 - torch.sqrt(Cm7 / (Cm7 + 25.0 ** 7)))
    a1p, a2p = (1 + G) * a1, (1 + G) * a2
    C1p = torch.sqrt(a1p * a1p + b1 * b1)
    C2p = torch.sqrt(a2p * a2p + b2 * b2)
    deg = 180 / math.pi

    def hue(b, ap):
        h = torch.atan2(b, ap) * deg
        h = torch.where(h < 0, h + 360, h)
        return torch.where((ap == 0) & (b == 0), torch.zeros_like(h), h)

    h1p, h2p = hue(b1, a1p), hue(b2, a2p)
    dLp = L2 - L1
    dCp = C2p - C1p
    prod0 = (C1p * C2p) == 0
    dh = h2p - h1p
    dh = torch.where(dh > 180, dh - 360, torch.where(dh < -180, dh + 360, dh))
    dh = torch.where(prod0, torch.zeros_like(dh), dh)
    dHp = 2 * torch.sqrt(C1p * C2p) * torch.sin(dh / 2 / deg)
    Lpm = (L1 + L2) / 2
    Cpm = (C1p + C2p) / 2
    hsum = h1p + h2p
    far = (h1p - h2p).abs() > 180
    hpm = torch.where(far, torch.where(hsum < 360, (hsum + 360) / 2, (hsum - 360) / 2), hsum / 2)
    hpm = torch.where(prod0, hsum, hpm)
    T = (1 - 0.17 * torch.cos((hpm - 30) / deg) + 0.24 * torch.cos(2 * hpm / deg)
         + 0.32 * torch.cos((3 * hpm + 6) / deg) - 0.20 * torch.cos((4 * hpm - 63) / deg))
    dtheta = 30 * torch.exp(-(((hpm - 275) / 25) ** 2))
    Cpm7 = Cpm ** 7
    RC = 2 * torch.sqrt(Cpm7 / (Cpm7 + 25.0 ** 7))
    SL = 1 + 0.015 * (Lpm - 50) ** 2 / torch.sqrt(20 + (Lpm - 50) ** 2)
    SC = 1 + 0.045 * Cpm
    SH = 1 + 0.015 * Cpm * T
    RT = -torch.sin(2 * dtheta / deg) * RC
    tL, tC, tH = dLp / (kL * SL), dCp / (kC * SC), dHp / (kH * SH)
    return torch.sqrt(tL * tL + tC * tC + tH * tH + RT * tC * tH)


def format_rgb(rgb: Sequence[float]) -> str:
    """``(r, g, b)`` in 0..1 as the text :func:`parse_rgb` reads (3 decimals, ``"0.860,0.800,0.680"``)."""
    return ",".join(f"{float(v):.3f}" for v in rgb)


def parse_rgb(text: Union[str, Sequence[float], None], name: str = "ground_color"
              ) -> Optional[Tuple[float, float, float]]:
    """A colour option as text -> ``(r, g, b)`` floats in 0..1, or None for ``auto`` / empty.

    Accepts ``R,G,B`` in 0..1 (``0.86,0.80,0.68``). ValueError names the option, the value and what
    is allowed. The one parser of colour options (CLI ``--ground``, the Damage Detect node, its
    validation and replayed records).
    """
    if text is None:
        return None
    if isinstance(text, (tuple, list)):
        vals = text
    else:
        t = str(text).strip()
        if t.lower() in ("", "auto"):
            return None
        vals = t.split(",")
    try:
        rgb = tuple(float(v) for v in vals)
    except (TypeError, ValueError):
        rgb = ()
    if len(rgb) != 3 or not all(0.0 <= v <= 1.0 for v in rgb):
        raise ValueError(f"{name}={text!r} is not a colour; allowed 'auto' or R,G,B with each value in 0..1 "
                         "(e.g. 0.86,0.80,0.68)")
    return rgb
