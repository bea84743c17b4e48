"""NAG inside one Wan cross-attention call (T2V, and I2V with an unguided image branch)."""
from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence, Tuple

import torch

from . import fused
from .config import NAGConfig

__all__ = ["nag_cross_attention", "negative_kv", "guide_rows", "Attend", "share_modules", "CrossAttention"]

Attend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``attend(q, k, v) -> out``: multi-head attention, q ``(B, Lq, C)``, k/v ``(B, Lk, C)``,
out ``(B, Lq, C)`` with heads merged (the host's ``optimized_attention`` with its heads)."""


class CrossAttention(Protocol):
    """What NAG calls of a Wan cross-attention module (duck-typed; the host's ``WanT2VCrossAttention``):
    the projections ``q, k, v, o`` and the norms ``norm_q, norm_k``, each ``(B, L, C) -> (B, L, C)``.
    An I2V module (``WanI2VCrossAttention``) also has ``k_img, v_img, norm_k_img``."""

    def q(self, x: torch.Tensor) -> torch.Tensor: ...
    def k(self, x: torch.Tensor) -> torch.Tensor: ...
    def v(self, x: torch.Tensor) -> torch.Tensor: ...
    def o(self, x: torch.Tensor) -> torch.Tensor: ...
    def norm_q(self, x: torch.Tensor) -> torch.Tensor: ...
    def norm_k(self, x: torch.Tensor) -> torch.Tensor: ...


def share_modules(target: torch.nn.Module, source: torch.nn.Module) -> torch.nn.Module:
    """Register ``source``'s own children, parameters and buffers on ``target`` under the same names (the same
    objects, not copies): ``target.state_dict()`` has ``source``'s keys, and weight patches, device moves and
    casts of either reach both. Returns ``target``."""
    for name, child in source.named_children():
        target.add_module(name, child)
    for name, p in source.named_parameters(recurse=False):
        target.register_parameter(name, p)
    for name, b in source.named_buffers(recurse=False):
        target.register_buffer(name, b)
    return target


def negative_kv(module: CrossAttention, neg_context: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Keys and values of the NAG-negative context through the module's own text projections:
    ``(norm_k(k(neg)), v(neg))``, each ``(N, Ln, C)``."""
    return module.norm_k(module.k(neg_context)), module.v(neg_context)


def _rows_for(t: torch.Tensor, n: int, name: str) -> torch.Tensor:
    if t.shape[0] == n:
        return t
    if t.shape[0] == 1:
        return t.expand(n, *t.shape[1:])
    raise ValueError(f"{name}: batch {t.shape[0]} does not fit {n} guided rows (allowed: 1 or {n})")


def guide_rows(z: torch.Tensor, q: torch.Tensor, k_neg: torch.Tensor, v_neg: torch.Tensor, attend: Attend,
               guided: Sequence[slice], config: NAGConfig) -> torch.Tensor:
    """NAG on the guided rows of one cross-attention output, in place.

    Args:
        z: ``(B, Lx, C)`` the plain attention output ``Z+`` of every row (heads merged).
        q: ``(B, Lx, C)`` the queries it was computed from.
        k_neg, v_neg: ``(1 or n, Ln, C)`` the NAG negative's keys/values (the module's own projections).
        attend, guided, config: as :func:`nag_cross_attention`.
    Returns:
        ``z`` with ``nag_combine(Z+, Z-)`` on the guided rows (``Z-``: the same queries on the negative).
    """
    if not guided or not config.enabled:
        return z
    for sl in guided:
        n = sl.stop - sl.start
        z_neg = attend(q[sl], _rows_for(k_neg, n, "neg_context"), _rows_for(v_neg, n, "neg_context"))
        z[sl] = fused.combine(z[sl], z_neg, config.scale, config.tau, config.alpha, chunk_tokens=config.chunk_tokens)
    return z


def nag_cross_attention(module: CrossAttention, x: torch.Tensor, context: torch.Tensor, neg_context: torch.Tensor,
                        attend: Attend, guided: Sequence[slice], config: NAGConfig,
                        context_img_len: int | None = None) -> torch.Tensor:
    """A Wan cross-attention forward with NAG on the guided rows.

    Args:
        module: a Wan cross-attention module (duck-typed): linear ``q, k, v, o`` and norms
            ``norm_q, norm_k``; I2V modules also ``k_img, v_img, norm_k_img``. Only its
            projections are called, in the host's order.
        x: ``(B, Lx, C)`` hidden states (already normalised by the block).
        context: ``(B, Limg + Lt, C)`` positive context after ``text_embedding``; in I2V the
            first ``context_img_len`` tokens are the CLIP image tokens.
        neg_context: ``(1 or n, Ln, C)`` NAG-negative text context after ``text_embedding``
            (its own length ``Ln``: no padding, no truncation); ``n`` = rows of a guided chunk.
        attend: multi-head attention, see :data:`Attend`.
        guided: row slices to guide (positive chunks); the other rows are computed plainly.
        config: :class:`~nag.config.NAGConfig`.
        context_img_len: I2V only, number of CLIP tokens at the start of ``context`` (ignored by
            modules without an image branch).

    Returns:
        ``(B, Lx, C)``: ``o(Z)`` where ``Z`` is ``nag_combine(Z+, Z-)`` on guided rows and
        ``Z+`` elsewhere, plus (I2V) the image-branch attention of every row, unguided.
        Z- of a row uses that row's own queries (the positive rows' queries).
    """
    image = hasattr(module, "k_img")
    if image:  # like the host: with context_img_len None both branches see the whole context
        ctx_img, context = context[:, :context_img_len], context[:, context_img_len:]
    q = module.norm_q(module.q(x))
    z = attend(q, module.norm_k(module.k(context)), module.v(context))
    if guided and config.enabled:
        k_neg, v_neg = negative_kv(module, neg_context.to(device=q.device, dtype=q.dtype))
        z = guide_rows(z, q, k_neg, v_neg, attend, guided, config)
    if image:
        img: Any = module   # the I2V parts (checked by hasattr above)
        z = z + attend(q, img.norm_k_img(img.k_img(ctx_img)), img.v_img(ctx_img))
    return module.o(z)
