"""NAG's element-wise work as one compiled kernel on CUDA: the log-sum-exp merges and the combine rule.

On a GPU the cost of NAG beyond its matmuls is memory traffic: :func:`~nag.joint.guided_from_parts` runs the two
merges and the combine rule (:func:`~nag.combine.combine_heads`) as separate PyTorch kernels, each reading and
writing float32 tensors of ``tokens x width`` (about 100 bytes per element of the image queries' output on
Flux). Written as one expression graph (:func:`guided_eager`, :func:`combine_eager`), ``torch.compile`` fuses it
into a per-token reduction and one element-wise pass that read the partial outputs and write the result once;
nothing of ``Z+``, ``Z-`` or ``G`` is stored. With per-token kinds (:func:`kinds`) the same pass covers the whole
joint sequence, the text tokens' merges too (:func:`~nag.joint.sequence_from_parts`), and its token-major result
is the joint call's output itself.

On CUDA with Triton, the hand-written kernel of :mod:`nag.triton_rule` runs first: inductor reduces a token's
channels in one pass only up to 1,024 of them, so at Flux's 3,072 its kernel reads each token's parts twice; the
hand-written one holds a token whole and reads them once. It falls back to the compiled kernel if it fails.

The compiled kernels are used on CUDA only (:func:`guided`, :func:`combine`): on the CPU the eager functions of
:mod:`nag.joint` / :mod:`nag.combine` run, as before. A compile that fails (no Triton on the machine, a torch
that cannot compile) is reported once as a warning and the eager functions run from then on; results are the
same up to float rounding (tested against the eager rule). Exact cases are kept: ``scale == 1`` or ``alpha ==
0`` return ``Z+`` before any kernel; with the negative's parts equal to the positive's, ``Z- == Z+`` inside the
kernel, so ``G == Z+``, the rescale factor is exactly 1 and the output is the kernel's ``Z+``.
"""
from __future__ import annotations

import contextlib
import logging
import threading
from typing import Callable, Dict, Iterator, Optional

import torch

from . import triton_rule
from .triton_rule import IMAGE, NEGATIVE, POSITIVE
from .combine import _combine, check_nag_params, nag_combine
from .joint import check_rows, guided_from_parts, merge_weight, sequence_from_parts

__all__ = ["guided_eager", "combine_eager", "guided", "combine", "compiled", "fused_available", "policy", "kinds",
           "hand_kernel", "hand_kernel_failure",
           "IMAGE", "POSITIVE", "NEGATIVE"]

log = logging.getLogger(__name__)

Part = tuple[torch.Tensor, torch.Tensor]


# Token kinds of guided_eager's ``kind`` (IMAGE, POSITIVE, NEGATIVE): defined once in nag.triton_rule, whose kernel
# reads them too: the image tokens get NAG's rule, the positive text's Z+, the negative text's Z-.


def guided_eager(o_img: torch.Tensor, l_img: torch.Tensor, o_pos: torch.Tensor, l_pos: torch.Tensor,
                 o_neg: torch.Tensor, l_neg: torch.Tensor, scale: float, tau: float, alpha: float,
                 out_dtype: torch.dtype, kind: Optional[torch.Tensor] = None) -> torch.Tensor:
    """NAG's guided output of the queries of a joint attention, as one expression graph.

    Args:
        o_img, o_pos, o_neg: ``(B, H, L, D)`` outputs of the queries over the image keys, the positive
            text's keys and the negative text's keys (any float dtype).
        l_img, l_pos, l_neg: ``(B, H, L)`` their log-sum-exps (``-inf`` where a part has no key).
        scale, tau, alpha: the NAG rule's (checked by the caller; ``scale > 1`` and ``alpha > 0``).
        out_dtype: dtype of the result.
        kind: None (every query is an image query), or ``(L,)`` integers, each query's :data:`IMAGE`,
            :data:`POSITIVE` or :data:`NEGATIVE` (the whole joint sequence in one kernel).

    Returns:
        ``(B, L, H, D)``: ``Z+ = merge(img, pos)``, ``Z- = merge(img, neg)`` (two-part log-sum-exp merge:
        ``o_img + (o_part - o_img) * sigmoid(l_part - l_img)``), ``G = lerp(Z-, Z+, scale)``, the rescale
        ``min(1, tau*||Z+||_1 / ||G||_1)`` over the ``H*D`` channels of a token and ``lerp(Z+, G*f, alpha)``,
        in float32 (float64 if an input is): what :func:`~nag.joint.guided_from_parts` computes; with
        ``kind``, that on the image queries, ``Z+`` on the positive text's and ``Z-`` on the negative text's
        (what :func:`~nag.joint.sequence_from_parts` computes). Written once, in the token-major layout.
    """
    work = torch.float64 if any(t.dtype == torch.float64 for t in (o_img, o_pos, o_neg)) else torch.float32
    oi = o_img.transpose(1, 2).to(work)                                     # (B, Li, H, D) views, cast in-kernel
    li = l_img.to(work)

    def weight(lse):   # (B, Li, H, 1)
        return merge_weight(lse.to(work), li).transpose(1, 2).unsqueeze(-1)
    zp = torch.lerp(oi, o_pos.transpose(1, 2).to(work), weight(l_pos))
    zn = torch.lerp(oi, o_neg.transpose(1, 2).to(work), weight(l_neg))
    if kind is None:
        return _combine(zp, zn, scale, tau, alpha, (-2, -1), out_dtype)
    k = kind.reshape(1, -1, 1, 1)
    rule = _combine(zp, zn, scale, tau, alpha, (-2, -1), work)
    return torch.where(k == IMAGE, rule, torch.where(k == POSITIVE, zp, zn)).to(out_dtype)


def combine_eager(z_pos: torch.Tensor, z_neg: torch.Tensor, scale: float, tau: float, alpha: float) -> torch.Tensor:
    """:func:`~nag.combine.nag_combine`'s rule on ``(..., L, C)`` as one expression graph (same dtype out)."""
    return _combine(z_pos, z_neg, scale, tau, alpha)


_LOCK = threading.Lock()
_COMPILED: Dict[str, Callable] = {}
_FAILED: Dict[str, str] = {}
_KINDS: Dict[tuple, torch.Tensor] = {}
_POLICY = ["auto"]
POLICIES = ("auto", "on", "off")


def fused_available(device: torch.device) -> bool:
    """Whether :func:`guided` / :func:`combine` use the compiled kernels on ``device``: no earlier compile
    failure in this process, and CUDA under the ``"auto"`` policy, any device under ``"on"``, none under
    ``"off"`` (:func:`policy`)."""
    if _FAILED or _POLICY[-1] == "off":
        return False
    return _POLICY[-1] == "on" or device.type == "cuda"


@contextlib.contextmanager
def _pushed(stack: list, value: object) -> Iterator[None]:
    """``value`` on top of the setting ``stack`` within the block (nested blocks stack; the lock guards it)."""
    with _LOCK:
        stack.append(value)
    try:
        yield
    finally:
        with _LOCK:
            stack.pop()


def policy(mode: str) -> contextlib.AbstractContextManager:
    """Within the block, ``"on"`` (the compiled kernels on every device, e.g. the CPU check of the GPU bench),
    ``"off"`` (the eager functions, the bench's unfused baseline) or ``"auto"`` (CUDA only; the default)."""
    if mode not in POLICIES:
        raise ValueError(f"mode={mode!r}: allowed {', '.join(POLICIES)}")
    return _pushed(_POLICY, mode)


def compiled(name: str) -> Callable:
    """The ``torch.compile``d :func:`guided_eager` (``"guided"``) or :func:`combine_eager` (``"combine"``):
    dynamic shapes (one compile for every token count), the whole function one graph. Compiled lazily, once
    per process; torch's own cache holds one specialisation per dtype and device."""
    with _LOCK:
        fn = _COMPILED.get(name)
        if fn is None:
            eager: Callable[..., torch.Tensor] = guided_eager if name == "guided" else combine_eager
            fn = _COMPILED[name] = torch.compile(eager, dynamic=True, fullgraph=True)
            log.info("Atelier NAG: compiling the fused %s kernel (once per process, cached on disk by torch; "
                     "the first guided step waits for it)", name)
        return fn


def _is_compiling() -> bool:
    """Whether dynamo is tracing this call (``torch.compiler.is_compiling``; absent before torch 2.3)."""
    check = getattr(getattr(torch, "compiler", None), "is_compiling", None)
    return bool(check()) if check is not None else False


_HAND_FAILED: Dict[str, str] = {}
_HAND_POLICY = [True]


def hand_kernel(enabled: bool) -> contextlib.AbstractContextManager:
    """Within the block, whether the hand-written Triton kernel (:mod:`nag.triton_rule`, each token's parts
    read once) runs where it can (True, the default) or the ``torch.compile``d one does (False: the benchmark's
    comparison of the two)."""
    return _pushed(_HAND_POLICY, bool(enabled))


def hand_kernel_failure() -> Dict[str, str]:
    """Why the hand-written kernel stopped being used in this process (``{kernel: reason}``; empty if it never
    failed)."""
    with _LOCK:
        return dict(_HAND_FAILED)


def _hand(name: str, args: tuple) -> Optional[torch.Tensor]:
    """The hand-written kernel's result, or None where it does not run (off, no Triton, not CUDA, a dtype it
    does not take, an earlier failure in this process: reported once, then the compiled kernel runs)."""
    if not _HAND_POLICY[-1] or _HAND_FAILED or not triton_rule.available(args[0]):
        return None
    try:
        return (triton_rule.guided if name == "guided" else triton_rule.combine)(*args)
    except Exception as exc:   # noqa: BLE001 - any launch/compile failure: the compiled kernel runs instead
        _failed(_HAND_FAILED, name, exc, "the hand-written Triton kernel failed on this machine (%s); the compiled "
                "kernel runs instead (same result, each token read twice)")
        return None


def _failed(record: Dict[str, str], name: str, exc: BaseException, message: str) -> None:
    """Record why kernel ``name`` failed; the first failure of ``record``'s kind is logged once (``message``
    takes the reason)."""
    with _LOCK:
        first = not record
        record[name] = f"{type(exc).__name__}: {exc}"
    if first:
        log.warning("Atelier NAG: " + message, record[name][:300])


def _run(name: str, eager: Callable, args: tuple) -> torch.Tensor:
    if _is_compiling():   # traced into a compiled model (TorchCompileModel): its graph fuses it
        return eager(*args)
    hand = _hand(name, args)
    if hand is not None:
        return hand
    try:
        return compiled(name)(*args)
    except Exception as exc:   # noqa: BLE001 - any compile/runtime failure of the kernel: fall back, say so once
        _failed(_FAILED, name, exc, "the fused kernel could not be compiled on this machine (%s); the unfused "
                "kernels run instead (same result, more memory traffic)")
        return eager(*args)


def kinds(rows: tuple[slice, slice, slice], length: int, device: torch.device) -> torch.Tensor:
    """``(length,)`` int8 token kinds (:data:`POSITIVE`, :data:`NEGATIVE`, :data:`IMAGE`) of the ``(positive
    text, negative text, image)`` token slices ``rows`` (ValueError unless they cover ``0..length`` once)."""
    check_rows(rows, length)
    key = (length, tuple(range(length)[sl][:1].start for sl in rows), tuple(range(length)[sl].stop for sl in rows),
           str(device))
    if not _is_compiling():   # made once per sequence layout and device (three small kernels less per call)
        with _LOCK:
            cached = _KINDS.get(key)
        if cached is not None:
            return cached
    kind = torch.full((length,), IMAGE, dtype=torch.int8, device=device)
    kind[rows[0]] = POSITIVE
    kind[rows[1]] = NEGATIVE
    if not _is_compiling():
        with _LOCK:
            if len(_KINDS) >= 64:
                _KINDS.clear()
            _KINDS[key] = kind
    return kind


def guided(img: Part, pos: Part, neg: Part, scale: float, tau: float, alpha: float, *, out_dtype: torch.dtype,
           chunk_tokens: Optional[int] = None, rows: Optional[tuple[slice, slice, slice]] = None,
           order: Optional[tuple[torch.Tensor, torch.Tensor]] = None) -> torch.Tensor:
    """:func:`~nag.joint.guided_from_parts` (same arguments, same ``(B, Li, H, D)`` result), or with ``rows``
    (the parts hold every query of the joint sequence) :func:`~nag.joint.sequence_from_parts` (same ``(B, L, H,
    D)`` result), through the fused kernel on CUDA (:func:`fused_available`) unless ``chunk_tokens`` asks for
    bounded temporaries (the fused kernel keeps none, so it never needs them; the eager path does). ``order``:
    ``(order, inverse)`` when the parts' queries are in the host's order and ``rows`` describe the layout
    ``q[:, :, order]`` (:func:`~nag.joint_call.nag_joint_attention`'s); the result is in the host's order."""
    check_nag_params(scale, tau, alpha)
    if scale == 1 or alpha == 0 or chunk_tokens is not None or not fused_available(img[0].device):
        if rows is None:
            return guided_from_parts(img, pos, neg, scale, tau, alpha, out_dtype=out_dtype,
                                     chunk_tokens=chunk_tokens)
        if order is None:
            return sequence_from_parts(img, pos, neg, rows, scale, tau, alpha, out_dtype=out_dtype,
                                       chunk_tokens=chunk_tokens)

        def laid(p: Part) -> Part:
            return p[0].index_select(2, order[0]), p[1].index_select(2, order[0])
        return sequence_from_parts(laid(img), laid(pos), laid(neg), rows, scale, tau, alpha, out_dtype=out_dtype,
                                   chunk_tokens=chunk_tokens).index_select(1, order[1])
    args: tuple = (img[0], img[1], pos[0], pos[1], neg[0], neg[1], float(scale), float(tau), float(alpha), out_dtype)
    if rows is not None:
        kind = kinds(rows, img[0].shape[2], img[0].device)
        args += (kind if order is None else kind.index_select(0, order[1]),)
    return _run("guided", guided_eager, args)


def combine(z_pos: torch.Tensor, z_neg: torch.Tensor, scale: float, tau: float, alpha: float, *,
            chunk_tokens: Optional[int] = None) -> torch.Tensor:
    """:func:`~nag.combine.nag_combine` (same arguments and result), through the fused kernel on CUDA
    (:func:`fused_available`) unless ``chunk_tokens`` is given."""
    if (z_pos.shape != z_neg.shape or z_pos.ndim < 2 or chunk_tokens is not None or scale == 1 or alpha == 0
            or not fused_available(z_pos.device)):
        return nag_combine(z_pos, z_neg, scale, tau, alpha, chunk_tokens=chunk_tokens)
    check_nag_params(scale, tau, alpha)
    return _run("combine", combine_eager, (z_pos, z_neg, float(scale), float(tau), float(alpha)))
