"""Cross-Frame Retrieval (CFR): flow-align the previous latent and fuse it into the current one.

For a pair (previous, current), at latent resolution (h, w) = (H/8, W/8):

1. both ×4-upsampled LR frames ([-1, 1]) are bicubic-downsampled to (h, w);
2. SpyNet estimates the flow current -> previous (ImageNet mean/std applied to the [-1, 1] input,
   as the official code does);
3. the previous latent is warped with it (bilinear, zero padding, ``align_corners=True``): ``P``;
4. thresholded retrieval attention, no softmax: with ``Q = q(C)``, ``K = k(P)``, ``V = v(P)`` (1×1 convs,
   9 heads of 64), ``A = ReLU((Q Kᵀ/8 − τ(Q)) / 3000)`` and ``fused = C + out(A V)``.

The attention is computed over query chunks, so memory grows with ``chunk × N`` instead of ``N²``.
"""
import math
from typing import TYPE_CHECKING, Literal, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

if TYPE_CHECKING:
    from .checkpoint import DLoRALWeights

__all__ = ["flow_warp", "SpyNet", "RetrievalAttention", "CFR", "cfr_fuse"]

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def flow_warp(x: torch.Tensor, flow: torch.Tensor, padding_mode: str = "zeros") -> torch.Tensor:
    """Sample ``x`` at ``p + flow(p)`` (bilinear, ``align_corners=True``).

    x: (B, C, H, W); flow: (B, 2, H, W) in pixels, channel 0 = x (width) offset, 1 = y offset.
    A constant integer flow (dx, dy) gives ``out[..., i, j] = x[..., i + dy, j + dx]`` (zeros outside).
    """
    if flow.shape[-2:] != x.shape[-2:] or flow.shape[1] != 2:
        raise ValueError(f"flow must be (B, 2, {x.shape[-2]}, {x.shape[-1]}), got {tuple(flow.shape)}")
    b, _, h, w = x.shape
    ys = torch.arange(h, device=x.device, dtype=flow.dtype).view(1, h, 1)
    xs = torch.arange(w, device=x.device, dtype=flow.dtype).view(1, 1, w)
    gx = (xs + flow[:, 0]) * (2.0 / max(w - 1, 1)) - 1.0
    gy = (ys + flow[:, 1]) * (2.0 / max(h - 1, 1)) - 1.0
    grid = torch.stack((gx, gy), dim=-1).to(x.dtype)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding_mode, align_corners=True)


class SpyNet(nn.Module):
    """SpyNet (6 pyramid levels, 5 conv layers of kernel 7 each), the BasicVSR variant without BN.

    ``forward(ref, supp)``: (B, 3, h, w) images in [-1, 1] -> (B, 2, h, w) flow from ref to supp,
    so that ``flow_warp(supp, flow)`` aligns supp to ref.
    """

    _CH = (8, 32, 64, 32, 16, 2)
    mean: torch.Tensor          # buffers (1, 3, 1, 1)
    std: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.levels = nn.ModuleList(
            nn.ModuleList(nn.Conv2d(a, b, 7, padding=3) for a, b in zip(self._CH[:-1], self._CH[1:]))
            for _ in range(6))
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def _refine(self, level, x):
        convs = self.levels[level]
        for i, conv in enumerate(convs):
            x = conv(x)
            if i < len(convs) - 1:
                x = F.relu(x)
        return x

    def forward(self, ref: torch.Tensor, supp: torch.Tensor) -> torch.Tensor:
        h, w = ref.shape[-2:]
        hp, wp = math.ceil(h / 32) * 32, math.ceil(w / 32) * 32
        if (hp, wp) != (h, w):
            ref = F.interpolate(ref, size=(hp, wp), mode="bilinear", align_corners=False)
            supp = F.interpolate(supp, size=(hp, wp), mode="bilinear", align_corners=False)
        refs = [(ref - self.mean.to(ref)) / self.std.to(ref)]
        supps = [(supp - self.mean.to(supp)) / self.std.to(supp)]
        for _ in range(5):
            refs.append(F.avg_pool2d(refs[-1], 2))
            supps.append(F.avg_pool2d(supps[-1], 2))
        flow = refs[-1].new_zeros(ref.shape[0], 2, hp // 32, wp // 32)
        for level, (r, s) in enumerate(zip(reversed(refs), reversed(supps))):
            if level:
                flow = 2.0 * F.interpolate(flow, scale_factor=2, mode="bilinear", align_corners=True)
            warped = flow_warp(s, flow, padding_mode="border")
            flow = flow + self._refine(level, torch.cat((r, warped, flow), 1))
        if (hp, wp) != (h, w):
            flow = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=False)
            flow = flow * torch.tensor([w / wp, h / hp], device=flow.device, dtype=flow.dtype).view(1, 2, 1, 1)
        return flow


class RetrievalAttention(nn.Module):
    """Thresholded cross-frame attention (no softmax): ``C + out(ReLU((QKᵀ/√d − τ(Q)) / T) V)``.

    ``forward(cur, prev, chunk)``: cur, prev (B, 4, h, w) latents -> fused (B, 4, h, w).
    ``chunk`` = queries per block (None: all at once, the dense N×N form).
    """

    def __init__(self, channels: int = 4, heads: int = 9, head_dim: int = 64, temperature: float = 3000.0) -> None:
        super().__init__()
        inner = heads * head_dim
        self.heads, self.head_dim, self.temperature = heads, head_dim, float(temperature)
        self.q = nn.Conv2d(channels, inner, 1)
        self.k = nn.Conv2d(channels, inner, 1)
        self.v = nn.Conv2d(channels, inner, 1)
        self.out = nn.Conv2d(inner, channels, 1)
        self.threshold = nn.Linear(head_dim, 1)

    def forward(self, cur: torch.Tensor, prev: torch.Tensor, chunk: Optional[int] = None) -> torch.Tensor:
        b, _, h, w = cur.shape
        n, hd = h * w, self.heads
        q = self.q(cur).view(b, hd, self.head_dim, n).transpose(-1, -2)  # B, heads, N, d
        k = self.k(prev).view(b, hd, self.head_dim, n)                    # B, heads, d, N
        v = self.v(prev).view(b, hd, self.head_dim, n).transpose(-1, -2)  # B, heads, N, d
        tau = self.threshold(q)                                            # B, heads, N, 1
        step = n if not chunk else max(1, int(chunk))
        outs = []
        for i in range(0, n, step):
            sim = (q[:, :, i:i + step] @ k) / math.sqrt(self.head_dim)
            a = F.relu((sim - tau[:, :, i:i + step]) / self.temperature)
            outs.append(a @ v)
            del sim, a
        o = torch.cat(outs, 2) if len(outs) > 1 else outs[0]
        o = o.transpose(-1, -2).reshape(b, hd * self.head_dim, h, w)
        return cur + self.out(o)


class CFR(nn.Module):
    """SpyNet + retrieval attention, loaded from converted weights (``DLoRALWeights``)."""

    def __init__(self) -> None:
        super().__init__()
        self.spynet = SpyNet()
        self.attn = RetrievalAttention()

    @classmethod
    def from_weights(cls, w: "DLoRALWeights") -> "CFR":
        m = cls()
        m.spynet.load_state_dict({k: v.float() for k, v in w.spynet.items()}, strict=True)
        m.attn.load_state_dict({k: v.float() for k, v in w.attn.items()}, strict=True)
        return m.eval().requires_grad_(False)


def auto_chunk(batch: int, n: int, heads: int = 9, budget_bytes: int = 256 << 20, itemsize: int = 4) -> int:
    """Queries per attention block so that one block's similarity matrix stays under ``budget_bytes``."""
    return max(64, int(budget_bytes // max(1, batch * heads * n * itemsize * 2)))


def cfr_fuse(cfr: CFR, lr_prev: torch.Tensor, lr_cur: torch.Tensor, z_prev: torch.Tensor, z_cur: torch.Tensor,
             chunk: Union[int, Literal["auto"], None] = "auto") -> Tuple[torch.Tensor, torch.Tensor]:
    """One CFR step for a batch of pairs.

    lr_prev, lr_cur: (B, 3, H, W) ×4-upsampled LR frames in [-1, 1], H = 8h, W = 8w.
    z_prev, z_cur: (B, 4, h, w) scaled latents. Returns (warped_prev, fused), both (B, 4, h, w).
    """
    h, w = z_cur.shape[-2:]
    if lr_cur.shape[-2:] != (8 * h, 8 * w):
        raise ValueError(f"frames {tuple(lr_cur.shape[-2:])} do not match latents {(h, w)} (expected 8x)")
    small = F.interpolate(torch.cat((lr_prev, lr_cur), 0), size=(h, w), mode="bicubic", align_corners=False)
    s_prev, s_cur = small.chunk(2, 0)
    flow = cfr.spynet(s_cur, s_prev)
    warped = flow_warp(z_prev, flow.to(z_prev.dtype))
    if chunk == "auto":
        chunk = auto_chunk(z_cur.shape[0], h * w, itemsize=z_cur.element_size())
    fused = cfr.attn(z_cur, warped, chunk=chunk)
    return warped, fused
