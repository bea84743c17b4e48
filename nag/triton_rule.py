"""NAG's merge-and-rule pass as one hand-written Triton kernel: each token's parts read once (CUDA).

:mod:`nag.fused` compiles the expression graph of :func:`~nag.fused.guided_eager` with ``torch.compile``. The
rule needs a per-token reduction (the L1 norms over a token's ``H*D`` channels) before its element-wise part, and
inductor makes a single-pass ("persistent") reduction only up to 1,024 channels: at Flux's 3,072 its kernel reads
every token's three partial outputs twice (once in the reduction loop, once in the element-wise loop). Here one
program holds one token whole: it reads the token's three partial outputs and log-sum-exps once, merges them in
registers, reduces, applies the rule and writes the token once (``B x L x H x D`` elements out, ``3 x`` that
in). On Flux-dev that is 120 MB instead of 209 MB per guided joint call (``bench/bench_nag_flux_cost.py``,
``byte_count``).

Used by :mod:`nag.fused` on CUDA when Triton imports (it ships with PyTorch's CUDA builds); a failure falls back
to the compiled kernel, then to the eager rule. The same kernels run on the CPU in Triton's interpreter
(``TRITON_INTERPRET=1`` set before the first use defines the kernel), which is how the tests check them against the eager
rule on a machine without a GPU. Float16, bfloat16 and float32 parts; the arithmetic is float32.
"""
from __future__ import annotations

import os
from typing import Any, Optional

import torch

__all__ = ["available", "interpreting", "guided", "combine", "launch_config", "IMAGE", "POSITIVE", "NEGATIVE"]

IMAGE, POSITIVE, NEGATIVE = 0, 1, 2
"""Token kinds of a joint sequence (``kind`` of :func:`guided` and :func:`nag.fused.guided_eager`): the image tokens
get NAG's rule, the positive text's Z+, the negative text's Z-. Defined here, the leaf of the two modules; the kernel
is told them (``KIND_IMAGE``, ``KIND_POSITIVE``)."""
_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_STATE: dict = {}   # "kernel": the jit kernel once defined; "error": why Triton could not be imported


def interpreting() -> bool:
    """Whether Triton runs its kernels in the interpreter on the CPU (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def available(t: torch.Tensor) -> bool:
    """Whether the kernels can run on ``t``'s device and dtype: a CUDA tensor (or any tensor under the
    interpreter) of float16 / bfloat16 / float32, and Triton importable (tried once, on the first such tensor)."""
    return t.dtype in _DTYPES and (t.is_cuda or interpreting()) and _kernel() is not None


def _kernel() -> Any:
    """The jit kernel, defined on first use (so the pack imports no Triton where no CUDA tensor is guided), or
    None without Triton. Triton reads ``TRITON_INTERPRET`` here, when the kernel is defined."""
    if "kernel" in _STATE or "error" in _STATE:
        return _STATE.get("kernel")
    try:   # optional: PyTorch's CUDA builds ship Triton; the CPU builds do not
        from ._triton_kernels import _token_kernel as token_kernel
    except Exception as exc:   # noqa: BLE001 - an absent or broken Triton means "not available", nothing else
        _STATE["error"] = f"{type(exc).__name__}: {exc}"
        return None
    _STATE["kernel"] = token_kernel
    return token_kernel


def launch_config(heads: int, width: int) -> tuple[int, int, int]:
    """``(BLOCK_H, BLOCK_D, num_warps)`` of a token of ``heads x width`` channels: the next powers of two, and
    one warp per 128 elements of the tile (4 to 32): at Flux's 24 x 128 (a 32 x 128 tile) 32 warps need 54
    registers a thread on sm_90 (8 warps: 174, one block per SM), so a whole block stays resident with room to
    hide the loads' latency. The compile check (tests/_triton_compile.py) compiles these configurations."""
    bh, bd = 1 << max(heads - 1, 0).bit_length(), 1 << max(width - 1, 0).bit_length()
    return bh, bd, max(4, min(32, bh * bd // 128))


def _launch(oi: torch.Tensor, op: torch.Tensor, on: torch.Tensor, lses: Optional[tuple], kind: Optional[torch.Tensor],
            out: torch.Tensor, scale: float, tau: float, alpha: float, merged: bool) -> torch.Tensor:
    """One program per (token, batch row) of ``(B, H, L, D)`` parts into the ``(B, L, H, D)`` ``out``."""
    kernel = _kernel()
    if kernel is None:
        raise RuntimeError(f"Triton is not available ({_STATE.get('error')})")
    b, h, length, d = oi.shape
    bh, bd, warps = launch_config(h, d)
    if lses is None:   # merged: no log-sum-exps read (any tensor stands in for the pointers)
        lses = (oi, oi, oi)
        lstrides: tuple = (0, 0, 0) * 3
    else:
        lstrides = tuple(s for t in lses for s in t.stride())
    kind_arg: Any = kind if kind is not None else oi
    if length and b:
        kernel[(length, b)](
            oi, op, on, lses[0], lses[1], lses[2], kind_arg, out, h, d,
            *oi.stride(), *op.stride(), *on.stride(), *lstrides,
            *out.stride(),
            float(scale), float(tau), float(alpha), float(torch.finfo(torch.float32).tiny),
            MERGED=merged, HAS_KIND=kind is not None, KIND_IMAGE=IMAGE, KIND_POSITIVE=POSITIVE,
            BLOCK_H=bh, BLOCK_D=bd, num_warps=warps)
    return out


def guided(o_img: torch.Tensor, l_img: torch.Tensor, o_pos: torch.Tensor, l_pos: torch.Tensor,
           o_neg: torch.Tensor, l_neg: torch.Tensor, scale: float, tau: float, alpha: float,
           out_dtype: torch.dtype, kind: Optional[torch.Tensor] = None) -> torch.Tensor:
    """:func:`nag.fused.guided_eager` (same arguments, same ``(B, L, H, D)`` result up to float32 rounding)
    in one pass: parts ``(B, H, L, D)`` of any strides, log-sum-exps ``(B, H, L)``, ``kind`` ``(L,)`` or None.
    ValueError for float64 parts or parts of different shapes (the caller's fallback runs those)."""
    parts = (o_img, o_pos, o_neg)
    if any(p.dtype not in _DTYPES for p in parts) or out_dtype not in _DTYPES:
        raise ValueError("the Triton kernel takes float16 / bfloat16 / float32 parts and output")
    if any(p.shape != o_img.shape for p in parts) or o_img.ndim != 4:
        raise ValueError(f"parts {[tuple(p.shape) for p in parts]}: expected three equal (B, H, L, D)")
    b, h, length, d = o_img.shape
    out = torch.empty((b, length, h, d), dtype=out_dtype, device=o_img.device)
    lses = tuple(t.float() for t in (l_img, l_pos, l_neg))
    if kind is not None:
        kind = kind.to(device=o_img.device).contiguous()
    return _launch(o_img, o_pos, o_neg, lses, kind, out, scale, tau, alpha, merged=False)


def combine(z_pos: torch.Tensor, z_neg: torch.Tensor, scale: float, tau: float, alpha: float) -> torch.Tensor:
    """:func:`nag.fused.combine_eager` (NAG's rule on ``(..., L, C)``, norms over ``C``; same dtype out) in one
    pass: each token's ``Z+`` and ``Z-`` read once."""
    if z_pos.shape != z_neg.shape or z_pos.ndim < 2 or z_pos.dtype not in _DTYPES:
        raise ValueError(f"z_pos {tuple(z_pos.shape)} {z_pos.dtype} / z_neg {tuple(z_neg.shape)}: expected equal "
                         "(..., L, C) float16 / bfloat16 / float32")
    c = z_pos.shape[-1]
    zp, zn = (t.reshape(1, 1, -1, c) for t in (z_pos, z_neg.to(z_pos.dtype)))   # (1, 1, N, C): one head of C
    out = torch.empty((1, zp.shape[2], 1, c), dtype=z_pos.dtype, device=z_pos.device)
    _launch(zp, zn, zn, None, None, out, scale, tau, alpha, merged=True)
    return out.reshape(z_pos.shape)
