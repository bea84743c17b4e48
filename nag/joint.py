"""NAG on joint (MM-DiT) attention, attending the text keys twice and the image keys once.

In an MM-DiT block (Flux, SD3.5, Qwen-Image, HunyuanVideo, ...) the image queries attend to the
union of the text keys and the image keys. NAG needs, for the image queries,

* ``Z+`` = attention over ``[positive text keys, image keys]``,
* ``Z-`` = attention over ``[NAG-negative text keys, image keys]``.

Attention over a union of disjoint key sets is the log-sum-exp weighted merge of the partial
attentions: with ``(o_i, l_i)`` the output and the per-query log-sum-exp of the logits over set
``i``, ``o = sum_i exp(l_i - l) o_i`` where ``l = log sum_i exp(l_i)``. So the image->image part
(the big one) is computed once and merged with the image->positive-text and the
image->negative-text parts; only the text keys are attended twice. The merge is exact (up to
float rounding), not an approximation.

Functions (pure torch; tensors ``(B, H, L, D)``: batch, heads, tokens, head dim):

* :func:`attention_with_lse`: reference attention returning ``(out, lse)``; explicit logits in
  float32, chunked over queries (bounded memory), fully masked rows handled.
* :func:`fused_attention_with_lse`: the same contract through torch's fused SDPA kernels that
  return the log-sum-exp (private ``aten`` ops); falls back to :func:`attention_with_lse`
  for masks, broadcast batches, or inputs the fused op refuses.
* :func:`merge_attention`: ``[(out, lse), ...]`` over disjoint key sets -> ``(out, lse)`` over
  their union.
* :func:`joint_pair`: ``(Z+, Z-)`` for the image queries, the image->image part computed once.
* :func:`joint_nag`: :func:`joint_pair` then :func:`~nag.combine.nag_combine` on the heads-merged
  outputs ``(B, Lq, H*D)``.

Why an LSE-returning ``attention`` callable, not the host's plain attention: the merge needs the
log-sum-exp of each part, which a plain ``attention(q, k, v) -> out`` does not return;
recomputing it from ``q @ k^T`` would cost half an attention of the image part again and undo the
saving. So the pluggable ``attention`` has the signature of :data:`AttendLSE`; a host can plug any
kernel that exposes the LSE (flash-attention's ``softmax_lse``, torch's fused SDPA ops).

Positions: apply RoPE / q-k norms to the keys before calling (key order does not matter to
attention; the caller decides which positions the negative text keys get, usually the
positive text's own).
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import torch

from .combine import check_nag_params, combine_heads, nag_combine

__all__ = ["attention_with_lse", "fused_attention_with_lse", "merge_attention", "merge_weight", "joint_pair",
           "joint_nag", "merge_heads", "guided_from_parts", "sequence_from_parts", "check_rows", "AttendLSE", "SCORE_BUDGET"]

AttendLSE = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Optional[torch.Tensor]],
                     tuple[torch.Tensor, torch.Tensor]]
"""``attention(q, k, v, mask) -> (out, lse)``: q ``(B, H, Lq, D)``, k/v ``(B or 1, H, Lk, D)``,
mask ``None`` or broadcastable to ``(B, H, Lq, Lk)`` (bool: True = attend; float: added to the
logits); out ``(B, H, Lq, D)``, lse ``(B, H, Lq)`` float32 (natural log, of the scaled logits),
``-inf`` where a row has no key."""

SCORE_BUDGET = 1 << 25
"""Largest number of float32 logits :func:`attention_with_lse` holds per query chunk (128 MiB;
the chunk's temporaries are about three times that)."""


def _check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ValueError(f"q, k, v: expected (B, H, L, D), got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if k.shape[:3] != v.shape[:3] or k.shape[-1] != q.shape[-1] or k.shape[1] != q.shape[1]:
        raise ValueError(f"k {tuple(k.shape)} / v {tuple(v.shape)} do not fit q {tuple(q.shape)} "
                         "(same heads and head dim; k and v the same length)")
    if k.shape[0] not in (1, q.shape[0]):
        raise ValueError(f"k: batch {k.shape[0]} does not fit q's {q.shape[0]} (allowed: 1 or {q.shape[0]})")


def _mask4(mask: torch.Tensor, shape: tuple) -> torch.Tensor:
    """``mask`` as a 4-D tensor broadcastable to ``shape`` ``(B, H, Lq, Lk)``; ValueError otherwise."""
    ok = mask.ndim <= 4
    if ok:
        mask = mask.reshape((1,) * (4 - mask.ndim) + tuple(mask.shape))
        try:
            ok = torch.broadcast_shapes(tuple(mask.shape), shape) == shape
        except RuntimeError:
            ok = False
    if not ok:
        raise ValueError(f"mask: shape {tuple(mask.shape)} does not broadcast to (B, H, Lq, Lk) = {shape}")
    return mask


def attention_with_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor] = None,
                       *, scale: Optional[float] = None, out_dtype: Optional[torch.dtype] = None,
                       chunk_queries: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention and the per-query log-sum-exp of its logits (reference implementation).

    Args:
        q: ``(B, H, Lq, D)``.
        k, v: ``(B or 1, H, Lk, D)``; ``Lk`` may be 0 (every row empty).
        mask: None, or broadcastable to ``(B, H, Lq, Lk)``: bool (True = attend, as in torch's
            SDPA) or float (added to the logits; ``-inf`` removes a key).
        scale: logit scale; None = ``1/sqrt(D)``.
        out_dtype: dtype of ``out``; None = ``q.dtype``.
        chunk_queries: queries per chunk; None = as many as keep ``B*H*chunk*Lk`` within
            :data:`SCORE_BUDGET` (at least 1). The result does not depend on it.

    Returns:
        ``out (B, H, Lq, D)`` and ``lse (B, H, Lq)`` float32 (float64 for float64 inputs), with
        ``lse = log sum_j exp(scale * q.k_j + mask_j)``. Logits, softmax and ``p @ v`` run in
        float32 whatever the input dtype (float64 stays float64), max-subtracted. A row whose
        keys are all masked (or ``Lk == 0``) gets ``lse = -inf`` and ``out = 0``, never NaN.
    """
    _check_qkv(q, k, v)
    b, h, lq, d = q.shape
    lk = k.shape[2]
    work = torch.float64 if q.dtype == torch.float64 else torch.float32
    out = torch.zeros(b, h, lq, v.shape[-1], dtype=work, device=q.device)
    lse = torch.full((b, h, lq), -math.inf, dtype=work, device=q.device)
    m4 = None if mask is None else _mask4(mask, (b, h, lq, lk))
    if lk == 0 or lq == 0:
        return out.to(out_dtype or q.dtype), lse
    if chunk_queries is not None and chunk_queries < 1:
        raise ValueError(f"chunk_queries={chunk_queries}: must be >= 1 or None")
    step = chunk_queries or max(1, SCORE_BUDGET // max(1, b * h * lk))
    sc = 1.0 / math.sqrt(d) if scale is None else float(scale)
    kt = k.to(work).transpose(-1, -2)
    vw = v.to(work)
    for a in range(0, lq, step):
        s = torch.matmul(q[:, :, a:a + step].to(work), kt).mul_(sc)              # (B, H, c, Lk)
        if m4 is not None:
            mc = m4 if m4.shape[2] == 1 else m4[:, :, a:a + step]
            s = s.masked_fill(~mc, -math.inf) if mc.dtype == torch.bool else s.add_(mc.to(work))
        top = s.amax(dim=-1, keepdim=True)
        top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))      # empty rows: 0
        p = torch.exp(s.sub_(top))
        den = p.sum(dim=-1, keepdim=True)                                        # 0 on empty rows
        out[:, :, a:a + step] = torch.matmul(p, vw) / torch.where(den > 0, den, torch.ones_like(den))
        lse[:, :, a:a + step] = (top + torch.log(den)).squeeze(-1)               # log 0 = -inf
    return out.to(out_dtype or q.dtype), lse


def fused_attention_with_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                             mask: Optional[torch.Tensor] = None, *, scale: Optional[float] = None,
                             out_dtype: Optional[torch.dtype] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`attention_with_lse` through torch's fused attention kernels (same contract).

    Unmasked calls with ``k`` of ``q``'s batch and ``Lk > 0`` go to the private aten op that
    SDPA itself dispatches to and that also returns the log-sum-exp:
    ``_scaled_dot_product_flash_attention_for_cpu`` on the CPU (float32/16, bfloat16),
    ``_scaled_dot_product_flash_attention`` on CUDA (float16/bfloat16) and
    ``_scaled_dot_product_efficient_attention`` on CUDA (other dtypes). These kernels keep the
    ``(Lq, Lk)`` scores in tiles (memory ``O(Lq + Lk)`` per head). Everything else (masks,
    broadcast batches, empty keys, float64, an op missing in this torch or refusing the inputs)
    uses :func:`attention_with_lse`. ``out`` is the kernel's (input dtype, float32 softmax
    accumulation) cast to ``out_dtype``; ``lse`` is float32.
    """
    _check_qkv(q, k, v)
    if mask is None and k.shape[0] == q.shape[0] and k.shape[2] > 0 and q.dtype != torch.float64:
        lq = q.shape[2]
        try:
            if q.device.type == "cpu":
                o, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, False,
                                                                                   scale=scale)[:2]
            elif q.device.type == "cuda" and q.dtype in (torch.float16, torch.bfloat16):
                o, lse = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, 0.0, False, False,
                                                                           scale=scale)[:2]
            elif q.device.type == "cuda":
                o, lse = torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, None, True, 0.0, False,
                                                                               scale=scale)[:2]
            else:
                o = None
            if o is not None:
                return o.to(out_dtype or q.dtype), lse[..., :lq].float()   # efficient pads lse to x32
        except (RuntimeError, AttributeError, NotImplementedError):
            pass
    return attention_with_lse(q, k, v, mask, scale=scale, out_dtype=out_dtype)


def merge_weight(lse_part: torch.Tensor, lse_base: torch.Tensor) -> torch.Tensor:
    """The weight of a part against a base in a two-part log-sum-exp merge, ``base + (part - base) * w``:
    ``w = sigmoid(lse_part - lse_base)`` (same shape as the log-sum-exps), 0 where both are empty
    (``-inf - -inf`` is NaN). One place for :func:`merge_attention`, :func:`guided_from_parts` and the fused
    kernel (:mod:`nag.fused`)."""
    return torch.nan_to_num(torch.sigmoid(lse_part - lse_base), nan=0.0)


def merge_attention(parts: Sequence[tuple[torch.Tensor, torch.Tensor]], *,
                    out_dtype: Optional[torch.dtype] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention over the union of disjoint key sets, from the attention over each set.

    Args:
        parts: ``[(out_i, lse_i), ...]`` (at least one), ``out_i (B, H, Lq, D)`` and
            ``lse_i (B, H, Lq)`` of the same queries over key set ``i`` (as returned by
            :func:`attention_with_lse`); an empty or fully masked part has ``lse = -inf``.
        out_dtype: dtype of the merged ``out``; None = the first part's.

    Returns:
        ``(out, lse)``: ``lse = log sum_i exp(lse_i)`` and ``out = sum_i exp(lse_i - lse) out_i``,
        computed in float32 (float64 if any part is) with the largest ``lse_i`` subtracted (two parts:
        ``o_1 + (o_2 - o_1) * sigmoid(lse_2 - lse_1)``, the same weights in fewer passes). A row
        empty in every part gets ``out = 0``, ``lse = -inf`` (no NaN).
    """
    if not parts:
        raise ValueError("parts: need at least one (out, lse) pair")
    shape = parts[0][0].shape
    for i, (o, l) in enumerate(parts):
        if o.shape != shape or l.shape != shape[:-1]:
            raise ValueError(f"parts[{i}]: out {tuple(o.shape)} / lse {tuple(l.shape)} do not match "
                             f"out {tuple(shape)} / lse {tuple(shape[:-1])}")
    work = torch.float64 if any(o.dtype == torch.float64 or l.dtype == torch.float64 for o, l in parts) \
        else torch.float32
    if len(parts) == 2:   # o1 + (o2 - o1) * sigmoid(l2 - l1): fewer passes over the outputs
        (o1, l1), (o2, l2) = parts
        l1w, l2w = l1.to(work), l2.to(work)
        w = merge_weight(l2w, l1w).unsqueeze(-1)
        a = o1.to(work)
        return torch.lerp(a, o2.to(work), w).to(out_dtype or o1.dtype), torch.logaddexp(l1w, l2w)
    lses = torch.stack([l.to(work) for _, l in parts])                 # (P, B, H, Lq)
    top = lses.amax(dim=0)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    w = torch.exp(lses - top)                                           # exp(-inf) = 0 for empty parts
    den = w.sum(dim=0)
    out = torch.zeros(shape, dtype=work, device=parts[0][0].device)
    for (o, _), wi in zip(parts, w):
        out.add_(o.to(work) * wi.unsqueeze(-1))
    out = out / torch.where(den > 0, den, torch.ones_like(den)).unsqueeze(-1)
    return out.to(out_dtype or parts[0][0].dtype), top + torch.log(den)


def joint_pair(q_img: torch.Tensor, k_img: torch.Tensor, v_img: torch.Tensor,
               k_pos: torch.Tensor, v_pos: torch.Tensor, k_neg: torch.Tensor, v_neg: torch.Tensor, *,
               mask_img: Optional[torch.Tensor] = None, mask_pos: Optional[torch.Tensor] = None,
               mask_neg: Optional[torch.Tensor] = None, attention: Optional[AttendLSE] = None,
               softmax_scale: Optional[float] = None,
               with_negative: bool = True) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """``(Z+, Z-)`` of the image queries in a joint attention, the image->image part computed once.

    Args:
        q_img: image queries ``(B, H, Li, D)`` (RoPE/norms applied).
        k_img, v_img: image keys/values ``(B or 1, H, Lk, D)`` (usually ``Lk == Li``).
        k_pos, v_pos: positive text keys/values ``(B or 1, H, Lp, D)``.
        k_neg, v_neg: NAG-negative text keys/values ``(B or 1, H, Ln, D)``; ``Ln`` may differ from ``Lp``.
        mask_img, mask_pos, mask_neg: None, or a mask over that part's keys, broadcastable to
            ``(B, H, Li, L_part)`` (bool True = attend, or additive float), e.g. a text padding
            mask ``(B, 1, 1, Lp)``.
        attention: :data:`AttendLSE` for each partial attention (three calls; two with
            ``with_negative=False``); None = :func:`attention_with_lse` with float32 outputs.
        softmax_scale: logit scale of the default attention; None = ``1/sqrt(D)``. A custom
            ``attention`` applies its own.
        with_negative: False skips the negative text and returns ``(Z+, None)``.

    Returns:
        ``Z+`` = attention of ``q_img`` over ``[k_pos, k_img]`` and ``Z-`` over ``[k_neg, k_img]``,
        each ``(B, H, Li, D)`` in ``q_img.dtype``; merged in float32 from the partial outputs.
    """
    if attention is None:
        def attention(q, k, v, m):
            return attention_with_lse(q, k, v, m, scale=softmax_scale, out_dtype=torch.float32)
    img = attention(q_img, k_img, v_img, mask_img)
    z_pos, _ = merge_attention([img, attention(q_img, k_pos, v_pos, mask_pos)], out_dtype=q_img.dtype)
    if not with_negative:
        return z_pos, None
    z_neg, _ = merge_attention([img, attention(q_img, k_neg, v_neg, mask_neg)], out_dtype=q_img.dtype)
    return z_pos, z_neg


def guided_from_parts(img: tuple[torch.Tensor, torch.Tensor], pos: tuple[torch.Tensor, torch.Tensor],
                      neg: tuple[torch.Tensor, torch.Tensor], scale: float, tau: float, alpha: float, *,
                      out_dtype: torch.dtype, chunk_tokens: Optional[int] = None) -> torch.Tensor:
    """NAG's guided output of the image queries of a joint attention from their three partial attentions.

    Args:
        img, pos, neg: ``(out (B, H, Li, D), lse (B, H, Li))`` of the image queries over the image keys, the
            positive text's keys and the negative text's keys (:data:`AttendLSE` results).
        scale, tau, alpha, chunk_tokens: as :func:`~nag.combine.nag_combine`.
        out_dtype: dtype of the result (the model's).

    Returns:
        ``(B, Li, H, D)`` (tokens before heads: ``.flatten(-2)`` is the heads-merged output):
        :func:`~nag.combine.combine_heads` of ``Z+ = merge(img, pos)`` and ``Z- = merge(img, neg)``
        (:func:`merge_attention`'s two-part rule), which is what :func:`joint_nag` computes, in fewer passes
        over the image queries' outputs: each part is cast up and laid out token-major in one copy (the image
        part once for both merges), and Z+ and Z- stay in float32 up to the combine rule (no rounding to the
        model's dtype and no heads-merge copies in between).
    """
    work = torch.float64 if any(t.dtype == torch.float64 for part in (img, pos, neg) for t in part) \
        else torch.float32

    def tokens_first(o):
        b, h, n, d = o.shape
        return torch.empty((b, n, h, d), dtype=work, device=o.device).copy_(o.transpose(1, 2))

    o_img, l_img = tokens_first(img[0]), img[1].to(work)

    def merged(part):
        w = merge_weight(part[1].to(work), l_img).transpose(1, 2).unsqueeze(-1)
        w = w.contiguous()     # (B, Li, H, 1): a strided weight sends lerp down a slow path
        return torch.lerp(o_img, tokens_first(part[0]), w)

    return combine_heads(merged(pos), merged(neg), scale, tau, alpha, out_dtype=out_dtype,
                         chunk_tokens=chunk_tokens)


def check_rows(rows: Sequence[slice], length: int) -> None:
    """ValueError unless the token slices ``rows`` (step 1) cover ``0..length`` once, in any order."""
    spans = sorted((range(length)[sl] for sl in rows), key=lambda r: (r.start, r.stop))
    if not spans or any(r.step != 1 for r in spans) or \
            [spans[0].start, *(r.stop for r in spans)] != [0, *(r.start for r in spans[1:]), length]:
        raise ValueError(f"rows {tuple(rows)} do not cover the {length} tokens once")


def sequence_from_parts(img: tuple[torch.Tensor, torch.Tensor], pos: tuple[torch.Tensor, torch.Tensor],
                        neg: tuple[torch.Tensor, torch.Tensor], rows: tuple[slice, slice, slice], scale: float,
                        tau: float, alpha: float, *, out_dtype: torch.dtype,
                        chunk_tokens: Optional[int] = None) -> torch.Tensor:
    """A whole guided joint sequence from three partial attentions of *every* query over the three key sets.

    Args:
        img, pos, neg: ``(out (B, H, L, D), lse (B, H, L))`` of all ``L`` queries of the sequence over the image
            keys, the positive text's keys and the negative text's keys (:data:`AttendLSE` results; each key
            set a view of the joint keys, so no key or value is copied).
        rows: ``(positive text, negative text, image)`` token slices of the sequence (they cover ``0..L``).
        scale, tau, alpha, chunk_tokens: as :func:`~nag.combine.nag_combine`.
        out_dtype: dtype of the result (the model's).

    Returns:
        ``(B, L, H, D)`` (token-major: ``.flatten(-2)`` is the heads-merged output; ``.transpose(1, 2)`` the
        ``(B, H, L, D)`` one): the image tokens get :func:`guided_from_parts` (NAG's rule on ``Z+ = merge(img,
        pos)`` and ``Z- = merge(img, neg)``), the positive text's tokens ``merge(img, pos)`` (their attention
        over ``[positive text, image]``), the negative text's tokens ``merge(img, neg)`` (over ``[negative text,
        image]``); :func:`merge_attention`'s two-part rule. The parts' other rows (the negative text's queries
        over the positive's keys and the reverse) are not read.
    """
    p_rows, n_rows, i_rows = rows
    b, h, length, d = img[0].shape
    check_rows(rows, length)
    out = torch.empty((b, length, h, d), dtype=out_dtype, device=img[0].device)

    def at(part, sl):
        return part[0][:, :, sl], part[1][:, :, sl]
    out[:, i_rows] = guided_from_parts(at(img, i_rows), at(pos, i_rows), at(neg, i_rows), scale, tau, alpha,
                                       out_dtype=out_dtype, chunk_tokens=chunk_tokens)
    for sl, part in ((p_rows, pos), (n_rows, neg)):
        out[:, sl] = merge_attention([at(img, sl), at(part, sl)], out_dtype=out_dtype)[0].transpose(1, 2)
    return out


def merge_heads(z: torch.Tensor) -> torch.Tensor:
    """``(B, H, L, D)`` -> ``(B, L, H*D)``, head-major channels (the layout of the host's
    attention output before the output projection, and what :func:`nag_combine` expects)."""
    b, h, l, d = z.shape
    return z.transpose(1, 2).reshape(b, l, h * d)


def joint_nag(q_img: torch.Tensor, k_img: torch.Tensor, v_img: torch.Tensor,
              k_pos: torch.Tensor, v_pos: torch.Tensor, k_neg: torch.Tensor, v_neg: torch.Tensor,
              scale: float, tau: float, alpha: float, *,
              mask_img: Optional[torch.Tensor] = None, mask_pos: Optional[torch.Tensor] = None,
              mask_neg: Optional[torch.Tensor] = None, attention: Optional[AttendLSE] = None,
              softmax_scale: Optional[float] = None, chunk_tokens: Optional[int] = None) -> torch.Tensor:
    """NAG-guided attention output of the image queries of a joint attention.

    Args: as :func:`joint_pair` (tensors ``(B, H, L, D)``), plus the NAG ``scale``, ``tau``,
    ``alpha`` and ``chunk_tokens`` of :func:`~nag.combine.nag_combine`.

    Returns:
        ``(B, Li, H*D)`` (heads merged, before the output projection), ``q_img.dtype``:
        ``nag_combine(merge_heads(Z+), merge_heads(Z-), scale, tau, alpha)``. With ``scale == 1``
        or ``alpha == 0`` the negative text is not attended at all and the result is
        ``merge_heads(Z+)``; with ``Z- == Z+`` (negative text equal to the positive) it is
        ``merge_heads(Z+)`` bit for bit (the combine rule's exact case).
    """
    check_nag_params(scale, tau, alpha)
    enabled = scale > 1 and alpha > 0
    z_pos, z_neg = joint_pair(q_img, k_img, v_img, k_pos, v_pos, k_neg, v_neg, mask_img=mask_img,
                              mask_pos=mask_pos, mask_neg=mask_neg, attention=attention,
                              softmax_scale=softmax_scale, with_negative=enabled)
    if z_neg is None:
        return merge_heads(z_pos)
    return nag_combine(merge_heads(z_pos), merge_heads(z_neg), scale, tau, alpha, chunk_tokens=chunk_tokens)
