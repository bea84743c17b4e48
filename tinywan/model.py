"""A pure-torch Wan2.1-architecture diffusion transformer (no ComfyUI import).

Its ``state_dict`` has exactly the key names and shapes of the host's
``comfy.ldm.wan.model.WanModel`` (T2V and I2V), so weights trained here load into
ComfyUI and are auto-detected as Wan2.1. The forward pass follows the host's
numerics (sinusoidal time embedding, per-block 6-way modulation, RMS-normed q/k,
3-axis rope, head with 2-way modulation); rope is computed here in plain torch so
the module can be trained (the host's fused rope op has no backward).

The forward is split in three parts so a cache can replace the block stack:

    tokens, aux = model.embed(x, t, context)      # patchify + embeddings
    tokens = model.run_blocks(tokens, aux)         # the transformer block stack
    v = model.head_out(tokens, aux)                # head + unpatchify

``model(x, t, context)`` is exactly those three calls.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

PATCH = (1, 2, 2)
FREQ_DIM = 256
HEAD_DIM = 128  # the host sets num_heads = dim // 128
CLIP_DIM = 1280


@dataclasses.dataclass(frozen=True)
class TinyWanConfig:
    """Shape of a Wan2.1 model. ``variant`` is ``"t2v"`` or ``"i2v"``.

    ``dim`` must be a multiple of 128 (the host derives ``num_heads = dim // 128``);
    ``text_dim`` must be 4096 for the host (it is not read from the weights).
    """

    variant: str = "t2v"
    dim: int = 128
    ffn_dim: int = 256
    num_layers: int = 2
    in_dim: Optional[int] = None  # default: 16 (t2v) or 36 (i2v)
    out_dim: int = 16
    text_dim: int = 4096
    eps: float = 1e-6

    def __post_init__(self):
        if self.variant not in ("t2v", "i2v"):
            raise ValueError(f"variant={self.variant!r}: allowed are 't2v' and 'i2v'")
        if self.dim <= 0 or self.dim % HEAD_DIM:
            raise ValueError(f"dim={self.dim}: must be a positive multiple of {HEAD_DIM}")
        if self.ffn_dim <= 0 or self.num_layers <= 0:
            raise ValueError(f"ffn_dim={self.ffn_dim}, num_layers={self.num_layers}: must be > 0")
        if self.in_dim is None:
            object.__setattr__(self, "in_dim", 16 if self.variant == "t2v" else 36)

    @property
    def num_heads(self) -> int:
        return self.dim // HEAD_DIM

    @classmethod
    def from_state_dict(cls, sd) -> "TinyWanConfig":
        """Read the config from a Wan2.1 state dict the way the host detects it."""
        if "head.modulation" not in sd:
            raise ValueError("state dict is not Wan2.1: key 'head.modulation' is missing")
        n = 0
        while f"blocks.{n}.modulation" in sd:
            n += 1
        return cls(
            variant="i2v" if "img_emb.proj.0.bias" in sd else "t2v",
            dim=sd["head.modulation"].shape[-1],
            ffn_dim=sd["blocks.0.ffn.0.weight"].shape[0],
            num_layers=n,
            in_dim=sd["patch_embedding.weight"].shape[1],
            out_dim=sd["head.head.weight"].shape[0] // math.prod(PATCH),
            text_dim=sd["text_embedding.0.weight"].shape[1],
        )


@dataclasses.dataclass
class WanAux:
    """Per-call tensors the block stack and the head need besides the tokens.

    e: [B, 1, dim] time embedding (head modulation); e0: [B, 1, 6, dim] block modulation;
    context: [B, L, dim] embedded text (CLIP tokens first for I2V); freqs: rope table
    [1, N, 1, head_dim/2, 2, 2]; grid: (F', H', W') token grid; size: (F, H, W) of the input;
    context_img_len: number of CLIP tokens at the front of ``context`` (I2V) or None.
    """

    e: torch.Tensor
    e0: torch.Tensor
    context: torch.Tensor
    freqs: torch.Tensor
    grid: tuple
    size: tuple
    context_img_len: Optional[int] = None

    def select(self, rows) -> "WanAux":
        """The aux restricted to batch ``rows`` (a list or index tensor)."""
        idx = torch.as_tensor(rows, dtype=torch.long, device=self.e.device)
        return dataclasses.replace(self, e=self.e[idx], e0=self.e0[idx], context=self.context[idx])


def sinusoidal_embedding(dim: int, position: torch.Tensor) -> torch.Tensor:
    """[N] positions -> [N, dim] float32 embedding (cos half then sin half), as Wan."""
    half = dim // 2
    position = position.float()
    freqs = torch.pow(10000, -torch.arange(half, device=position.device).float().div(half))
    ang = torch.outer(position, freqs)
    return torch.cat([torch.cos(ang), torch.sin(ang)], dim=1)


def _rope_axis(pos: torch.Tensor, dim: int, theta: float = 10000.0) -> torch.Tensor:
    """[N] positions -> [N, dim/2, 2, 2] rotation matrices."""
    scale = torch.linspace(0, (dim - 2) / dim, steps=dim // 2, dtype=torch.float64, device=pos.device)
    omega = 1.0 / (theta ** scale)
    ang = torch.einsum("n,d->nd", pos.float(), omega.float())
    cos, sin = torch.cos(ang), torch.sin(ang)
    return torch.stack([cos, -sin, sin, cos], dim=-1).reshape(*ang.shape, 2, 2)


def rope_table(grid: Sequence[int], head_dim: int, device=None) -> torch.Tensor:
    """Rope for a (F', H', W') token grid: [1, N, 1, head_dim/2, 2, 2] float32.

    The head dimension is split over the time, height and width axes as
    ``[d - 4*(d//6), 2*(d//6), 2*(d//6)]``, like the host.
    """
    d = head_dim
    axes = [d - 4 * (d // 6), 2 * (d // 6), 2 * (d // 6)]
    f, h, w = grid
    ids = torch.stack(torch.meshgrid(
        torch.arange(f, device=device, dtype=torch.float32),
        torch.arange(h, device=device, dtype=torch.float32),
        torch.arange(w, device=device, dtype=torch.float32), indexing="ij"), dim=-1).reshape(-1, 3)
    tab = torch.cat([_rope_axis(ids[:, i], axes[i]) for i in range(3)], dim=-3)
    return tab[None, :, None]


def apply_rope(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved channel pairs of x [B, N, heads, head_dim] by ``freqs``."""
    xp = x.float().reshape(*x.shape[:-1], -1, 1, 2)
    out = freqs[..., 0] * xp[..., 0] + freqs[..., 1] * xp[..., 1]
    return out.reshape(x.shape).type_as(x)


def attention(q, k, v, heads: int) -> torch.Tensor:
    """q [B, N, C], k/v [B, M, C] -> [B, N, C] multi-head scaled dot-product attention."""
    b, n, c = q.shape
    d = c // heads
    q, k, v = (t.reshape(b, -1, heads, d).transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v)
    return out.transpose(1, 2).reshape(b, n, c)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, eps: float):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm_q = nn.RMSNorm(dim, eps=eps)
        self.norm_k = nn.RMSNorm(dim, eps=eps)

    def forward(self, x, freqs):
        b, s, _ = x.shape
        q = apply_rope(self.norm_q(self.q(x)).view(b, s, self.heads, -1), freqs)
        k = apply_rope(self.norm_k(self.k(x)).view(b, s, self.heads, -1), freqs)
        return self.o(attention(q.view(b, s, -1), k.view(b, s, -1), self.v(x), self.heads))


class CrossAttention(SelfAttention):
    """Text cross-attention (the projections and norms of :class:`SelfAttention`, as the host's Wan has
    them); with ``image=True`` also the I2V CLIP branch (k_img, v_img)."""

    def __init__(self, dim: int, heads: int, eps: float, image: bool = False):
        super().__init__(dim, heads, eps)
        self.image = image
        if image:
            self.k_img = nn.Linear(dim, dim)
            self.v_img = nn.Linear(dim, dim)
            self.norm_k_img = nn.RMSNorm(dim, eps=eps)

    def text_kv(self, context):
        """Projected text keys and values of ``context`` [B, L, dim] (no image tokens)."""
        return self.norm_k(self.k(context)), self.v(context)

    def forward(self, x, context, context_img_len=None):
        q = self.norm_q(self.q(x))
        if self.image:  # like the host: without CLIP tokens both branches see the whole context
            ctx_img, context = context[:, :context_img_len], context[:, context_img_len:]
        out = attention(q, self.norm_k(self.k(context)), self.v(context), self.heads)
        if self.image:
            out = out + attention(q, self.norm_k_img(self.k_img(ctx_img)), self.v_img(ctx_img), self.heads)
        return self.o(out)


class Block(nn.Module):
    def __init__(self, cfg: TinyWanConfig):
        super().__init__()
        dim = cfg.dim
        self.norm1 = nn.LayerNorm(dim, cfg.eps, elementwise_affine=False)
        self.self_attn = SelfAttention(dim, cfg.num_heads, cfg.eps)
        self.norm3 = nn.LayerNorm(dim, cfg.eps, elementwise_affine=True)
        self.cross_attn = CrossAttention(dim, cfg.num_heads, cfg.eps, image=cfg.variant == "i2v")
        self.norm2 = nn.LayerNorm(dim, cfg.eps, elementwise_affine=False)
        self.ffn = nn.Sequential(nn.Linear(dim, cfg.ffn_dim), nn.GELU(approximate="tanh"),
                                 nn.Linear(cfg.ffn_dim, dim))
        self.modulation = nn.Parameter(torch.zeros(1, 6, dim))

    def forward(self, x, e0, freqs, context, context_img_len=None, cross_attn_fn=None, index=0):
        e = (self.modulation.to(x.dtype).unsqueeze(0) + e0).unbind(2)  # 6 x [B, 1, dim]
        y = self.self_attn(torch.addcmul(e[0], self.norm1(x), 1 + e[1]), freqs)
        x = torch.addcmul(x, y, e[2])
        if cross_attn_fn is None:
            x = x + self.cross_attn(self.norm3(x), context, context_img_len)
        else:
            x = x + cross_attn_fn(index, self.cross_attn, self.norm3(x), context, context_img_len)
        y = self.ffn(torch.addcmul(e[3], self.norm2(x), 1 + e[4]))
        return torch.addcmul(x, y, e[5])


class Head(nn.Module):
    def __init__(self, cfg: TinyWanConfig):
        super().__init__()
        self.norm = nn.LayerNorm(cfg.dim, cfg.eps, elementwise_affine=False)
        self.head = nn.Linear(cfg.dim, cfg.out_dim * math.prod(PATCH))
        self.modulation = nn.Parameter(torch.zeros(1, 2, cfg.dim))

    def forward(self, x, e):
        m = (self.modulation.to(x.dtype).unsqueeze(0) + e.unsqueeze(2)).unbind(2)  # 2 x [B, 1, dim]
        return self.head(torch.addcmul(m[0], self.norm(x), 1 + m[1]))


class ImageProj(nn.Module):
    """I2V: CLIP-vision penultimate states [B, 257, 1280] -> [B, 257, dim] (key prefix img_emb)."""

    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Sequential(nn.LayerNorm(CLIP_DIM), nn.Linear(CLIP_DIM, CLIP_DIM), nn.GELU(),
                                  nn.Linear(CLIP_DIM, dim), nn.LayerNorm(dim))

    def forward(self, clip_fea):
        return self.proj(clip_fea)


class TinyWan(nn.Module):
    """Wan2.1 transformer with the host's state-dict layout; see the module docstring.

    Inputs of ``forward``: x [B, in_dim or 16, F, H, W] latent (float), t [B] timestep in
    [0, 1000] (= sigma * 1000, what the host passes), context [B, L, text_dim] text
    embeddings, clip_fea [B, 257, 1280] (I2V), y [B, in_dim-16, F, H, W] channels
    concatenated to x (I2V; zeros when omitted). Output: velocity [B, out_dim, F, H, W]
    (flow matching: ``noise - x0``).
    """

    def __init__(self, config: TinyWanConfig = TinyWanConfig()):
        super().__init__()
        self.config = cfg = config
        dim = cfg.dim
        self.patch_embedding = nn.Conv3d(cfg.in_dim, dim, kernel_size=PATCH, stride=PATCH)
        self.text_embedding = nn.Sequential(nn.Linear(cfg.text_dim, dim), nn.GELU(approximate="tanh"),
                                            nn.Linear(dim, dim))
        self.time_embedding = nn.Sequential(nn.Linear(FREQ_DIM, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(dim, dim * 6))
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.num_layers)])
        self.head = Head(cfg)
        self.img_emb = ImageProj(dim) if cfg.variant == "i2v" else None

    @classmethod
    def from_state_dict(cls, sd) -> "TinyWan":
        """Build on the meta device (no global RNG use) and take float32 copies of ``sd``."""
        with torch.device("meta"):
            model = cls(TinyWanConfig.from_state_dict(sd))
        model.load_state_dict({k: v.detach().float().clone() for k, v in sd.items()}, strict=True, assign=True)
        return model

    def embed(self, x, t, context, clip_fea=None, y=None):
        """Patchify and embed. Returns ``(tokens [B, N, dim], aux: WanAux)``."""
        cfg = self.config
        if x.ndim != 5:
            raise ValueError(f"x: expected [B, C, F, H, W], got shape {tuple(x.shape)}")
        if y is not None:
            x = torch.cat([x, y.to(x)], dim=1)
        elif x.shape[1] < cfg.in_dim:
            x = torch.cat([x, x.new_zeros(x.shape[0], cfg.in_dim - x.shape[1], *x.shape[2:])], dim=1)
        if x.shape[1] != cfg.in_dim:
            raise ValueError(f"x: {x.shape[1]} channels (with y), the model takes {cfg.in_dim}")
        if context.shape[-1] != cfg.text_dim:
            raise ValueError(f"context: width {context.shape[-1]}, the model takes {cfg.text_dim}")
        size = tuple(x.shape[2:])
        pad = [(-s) % p for s, p in zip(size, PATCH)]
        if any(pad):
            x = F.pad(x, (0, pad[2], 0, pad[1], 0, pad[0]), mode="circular")  # as the host
        dtype = x.dtype
        tok = self.patch_embedding(x.float()).to(dtype)
        grid = tuple(tok.shape[2:])
        tok = tok.flatten(2).transpose(1, 2)
        t = torch.as_tensor(t, device=x.device).reshape(-1)
        if t.numel() == 1 and x.shape[0] > 1:
            t = t.expand(x.shape[0])
        e = self.time_embedding(sinusoidal_embedding(FREQ_DIM, t).to(dtype)).reshape(t.shape[0], 1, cfg.dim)
        e0 = self.time_projection(e).unflatten(2, (6, cfg.dim))
        ctx = self.text_embedding(context.to(dtype))
        n_img = None
        if clip_fea is not None:
            if self.img_emb is not None:
                ctx = torch.cat([self.img_emb(clip_fea.to(dtype)), ctx], dim=1)
            n_img = clip_fea.shape[-2]
        freqs = rope_table(grid, cfg.dim // cfg.num_heads, device=x.device)
        return tok, WanAux(e=e, e0=e0, context=ctx, freqs=freqs, grid=grid, size=size, context_img_len=n_img)

    def run_blocks(self, tokens, aux: WanAux, rows=None, cross_attn_fn=None):
        """The block stack: tokens [B, N, dim] -> [B, N, dim].

        With ``rows`` (indices into the batch) only those rows are run; the other rows are
        returned unchanged (the caller adds its cached residual to them).
        ``cross_attn_fn(block_index, cross_attn_module, x, context, context_img_len) -> [B, N, dim]``
        replaces each block's cross-attention call (e.g. for NAG); ``x`` is already norm3-ed and
        the result is added to the residual stream.
        """
        if rows is None:
            x = tokens
            for i, blk in enumerate(self.blocks):
                x = blk(x, aux.e0, aux.freqs, aux.context, aux.context_img_len, cross_attn_fn, i)
            return x
        idx = torch.as_tensor(rows, dtype=torch.long, device=tokens.device)
        out = tokens.clone()
        if idx.numel():
            out[idx] = self.run_blocks(tokens[idx], aux.select(idx), cross_attn_fn=cross_attn_fn)
        return out

    def head_out(self, tokens, aux: WanAux):
        """Head and unpatchify: tokens [B, N, dim] -> [B, out_dim, F, H, W]."""
        x = self.head(tokens, aux.e)
        b, c = x.shape[0], self.config.out_dim
        f, h, w = aux.grid
        pt, ph, pw = PATCH
        x = x[:, : f * h * w].reshape(b, f, h, w, pt, ph, pw, c)
        x = torch.einsum("bfhwpqrc->bcfphqwr", x).reshape(b, c, f * pt, h * ph, w * pw)
        fs, hs, ws = aux.size
        return x[:, :, :fs, :hs, :ws]

    def forward(self, x, t, context, clip_fea=None, y=None):
        tokens, aux = self.embed(x, t, context, clip_fea=clip_fea, y=y)
        return self.head_out(self.run_blocks(tokens, aux), aux)
