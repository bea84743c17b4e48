"""The NAG combine rule (Normalized Attention Guidance), as one pure function.

Chen et al., "Normalized Attention Guidance: Universal Negative Guidance for Diffusion
Models" (arXiv 2505.21179). Per token, on cross-attention outputs taken after the heads are
merged and before the output projection:

1. extrapolate  ``G = s*Z+ - (s-1)*Z-``   (computed as ``Z+ + (s-1)*(Z+ - Z-)``, the same value)
2. normalise    ``r = ||G||_1 / ||Z+||_1`` over all C channels of the token (not per head);
                if ``r > tau`` then ``G <- G * tau / r``
3. blend        ``out = alpha*G + (1-alpha)*Z+``   (computed as ``Z+ + alpha*(G - Z+)``)

``s`` is the implementation's ``nag_scale`` (the paper's phi is ``s - 1``).
"""
from __future__ import annotations

import math

import torch

__all__ = ["nag_combine", "check_nag_params", "combine_heads"]


def check_nag_params(scale: float, tau: float, alpha: float) -> None:
    """Raise ValueError naming the parameter when scale, tau or alpha is not allowed.

    Allowed: finite ``scale >= 1`` (1 turns NAG off), finite ``tau >= 1``, ``0 <= alpha <= 1``.
    """
    for name, v in (("scale", scale), ("tau", tau), ("alpha", alpha)):
        if not isinstance(v, (int, float)) or not math.isfinite(float(v)):
            raise ValueError(f"{name}={v!r}: must be a finite number")
    if scale < 1:
        raise ValueError(f"scale={scale}: must be >= 1 (scale 1 turns NAG off; below 1 is not allowed)")
    if tau < 1:
        raise ValueError(f"tau={tau}: must be >= 1 (the largest allowed L1 ratio ||G||/||Z+|| per token)")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha={alpha}: must be in [0, 1] (0 turns NAG off)")


def nag_combine(z_pos: torch.Tensor, z_neg: torch.Tensor, scale: float, tau: float, alpha: float,
                *, chunk_tokens: int | None = None) -> torch.Tensor:
    """Guided attention output from the positive and negative attention outputs.

    Args:
        z_pos: Z+, attention of the image/video queries on the positive prompt,
            ``(..., L, C)`` (e.g. ``(B, L, C)``), heads merged, before the output projection.
        z_neg: Z-, attention of the *same* queries on the NAG-negative prompt, same shape.
        scale: ``s >= 1``; 1 returns Z+ unchanged.
        tau: ``>= 1``; largest allowed ratio ``||G||_1 / ||Z+||_1`` per token.
        alpha: in ``[0, 1]``; 0 returns Z+ unchanged, 1 returns the normalised G.
        chunk_tokens: process this many tokens at a time (bounds the float32 temporaries;
            the rule is per token, so the result does not depend on it). None: all at once.

    Returns:
        ``(..., L, C)`` tensor, dtype and device of ``z_pos``.

    The arithmetic runs in float32 (float64 stays float64) whatever the input dtype, so the
    two L1 norms over C channels are accurate for float16/bfloat16 activations. Zero-norm
    guard: the rescale factor is ``tau*||Z+|| / ||G||`` applied only where
    ``||G|| > tau*||Z+||``, which implies ``||G|| > 0``; a token with ``Z+ = 0`` therefore
    gets ``G = 0`` and the output stays finite (0). Exact cases: ``Z- == Z+``, ``scale == 1``
    or ``alpha == 0`` return Z+ bit for bit.
    """
    if z_pos.shape != z_neg.shape:
        raise ValueError(f"z_neg: shape {tuple(z_neg.shape)} differs from z_pos {tuple(z_pos.shape)}")
    if z_pos.ndim < 2:
        raise ValueError(f"z_pos: expected (..., L, C), got shape {tuple(z_pos.shape)}")
    check_nag_params(scale, tau, alpha)
    if scale == 1 or alpha == 0:
        return z_pos
    if chunk_tokens is not None and chunk_tokens < 1:
        raise ValueError(f"chunk_tokens={chunk_tokens}: must be >= 1 or None")
    length = z_pos.shape[-2]
    step = length if chunk_tokens is None else int(chunk_tokens)
    if step >= length:
        return _combine(z_pos, z_neg, float(scale), float(tau), float(alpha))
    out = torch.empty_like(z_pos)
    for a in range(0, length, step):
        sl = (..., slice(a, a + step), slice(None))
        out[sl] = _combine(z_pos[sl], z_neg[sl], float(scale), float(tau), float(alpha))
    return out


def _combine(z_pos, z_neg, scale, tau, alpha, dims=(-1,), out_dtype=None):
    # five passes over the tokens: G = lerp(Z-, Z+, s) = s*Z+ - (s-1)*Z-, the two L1 norms, the rescale,
    # out = lerp(Z+, G_hat, alpha); factor = min(1, tau*||Z+|| / ||G||) is exactly 1 where ||G|| <= tau*||Z+||
    # (so Z- == Z+ returns Z+ bit for bit) and never divides by zero (||G|| = 0 gives 1). ``dims``: the channel
    # dims of one token (the last one; the last two for (B, L, H, D) outputs whose heads are not merged).
    work = torch.float64 if z_pos.dtype == torch.float64 else torch.float32
    zp = z_pos.to(work)
    g = torch.lerp(z_neg.to(work), zp, scale)
    n_pos = torch.linalg.vector_norm(zp, ord=1, dim=dims, keepdim=True)
    n_g = torch.linalg.vector_norm(g, ord=1, dim=dims, keepdim=True)
    factor = (n_pos.mul_(tau) / n_g.clamp_min_(torch.finfo(work).tiny)).clamp_max_(1.0)
    return torch.lerp(zp, g.mul_(factor), alpha).to(out_dtype or z_pos.dtype)


def combine_heads(z_pos: torch.Tensor, z_neg: torch.Tensor, scale: float, tau: float, alpha: float, *,
                  out_dtype: torch.dtype | None = None, chunk_tokens: int | None = None) -> torch.Tensor:
    """:func:`nag_combine` on attention outputs laid out ``(B, L, H, D)`` (heads not merged into channels).

    Args:
        z_pos, z_neg: ``(B, L, H, D)``; a token's channels are its ``H*D`` values (the L1 norms run over the
            last two dims together: the per-token norms of :func:`nag_combine` on ``(B, L, H*D)``).
        scale, tau, alpha, chunk_tokens: as :func:`nag_combine`.
        out_dtype: dtype of the result; None = ``z_pos.dtype``. Float32 inputs (the float32 merge of
            partial attentions) need no copy, so nothing is rounded to the model's dtype in between.
    Returns:
        ``(B, L, H, D)``: what :func:`nag_combine` gives on ``z.flatten(-2)``, in this layout. Exact cases as
        :func:`nag_combine`.
    """
    if z_pos.shape != z_neg.shape or z_pos.ndim != 4:
        raise ValueError(f"z_pos {tuple(z_pos.shape)} / z_neg {tuple(z_neg.shape)}: expected two (B, L, H, D)")
    check_nag_params(scale, tau, alpha)
    dtype = out_dtype or z_pos.dtype
    if scale == 1 or alpha == 0:
        return z_pos.to(dtype)
    if chunk_tokens is not None and chunk_tokens < 1:
        raise ValueError(f"chunk_tokens={chunk_tokens}: must be >= 1 or None")
    length = z_pos.shape[1]
    step = length if chunk_tokens is None else int(chunk_tokens)
    if step >= length:
        return _combine(z_pos, z_neg, float(scale), float(tau), float(alpha), (-2, -1), dtype)
    out = torch.empty(z_pos.shape, dtype=dtype, device=z_pos.device)
    for a in range(0, length, step):
        out[:, a:a + step] = _combine(z_pos[:, a:a + step], z_neg[:, a:a + step], float(scale), float(tau),
                                      float(alpha), (-2, -1), dtype)
    return out
