"""Compute precision of a DLoRAL run: one explicit rule, used by the node and the CLI.

``precision`` is one of ``PRECISIONS``:

- ``"auto"``: on CPU always float32 (half precision on CPU is slow and, for fp16, lossy); on a GPU
  the dtype the host loaded the UNet in (ComfyUI picks fp16 or bf16 for SD2.x on current GPUs), or,
  when that is not known, bfloat16 where the GPU supports it, else float16.
- ``"fp16"`` / ``"bf16"`` / ``"fp32"``: that dtype on any device ("forced"; half precision on CPU runs,
  slowly, and is what the CPU bf16 test measures).

The official code runs UNet, VAE and CFR in fp16 on a GPU (text encoder fp32).
"""
import contextlib

from typing import Callable, Optional, Tuple, Union

import torch

__all__ = ["PRECISIONS", "resolve_dtype", "run_precision", "unet_caller"]

PRECISIONS = ("auto", "fp16", "bf16", "fp32")
UNetFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``unet(x, t, context) -> eps``: x ``(B, 8, h, w)``, t ``(B,)``, context ``(B, L, D)`` -> ``(B, 4, h, w)``."""

_NAMED = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def resolve_dtype(device: Union[str, torch.device], precision: str = "auto", model_dtype: Optional[torch.dtype] = None,
                  bf16_supported: Optional[bool] = None) -> torch.dtype:
    """The compute dtype for ``device`` (a ``torch.device`` or a string such as ``"cuda:0"``).

    model_dtype: the dtype the host runs the UNet in, if known (used by ``"auto"`` on a GPU).
    bf16_supported: whether the GPU supports bfloat16 (None: ask ``torch.cuda.is_bf16_supported``).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return _NAMED[precision]
    device = torch.device(device)
    if device.type == "cpu":
        return torch.float32
    if model_dtype is not None:
        return model_dtype
    if bf16_supported is None:
        bf16_supported = device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return torch.bfloat16 if bf16_supported else torch.float16


def run_precision(device: Union[str, torch.device], precision: str = "auto",
                  host_dtype: torch.dtype = torch.float32) -> Tuple[torch.dtype, torch.dtype, Optional[torch.dtype]]:
    """How a run on a host UNet held in ``host_dtype`` computes: ``(dtype, input_dtype, autocast_dtype)``.

    dtype: the compute dtype (:func:`resolve_dtype`; CFR and the latents run in it).
    input_dtype: the dtype the UNet's inputs are cast to: ``dtype`` when it is the host's dtype or float32,
    else the host's dtype, with ``autocast_dtype`` = ``dtype`` (matmuls and convolutions under
    ``torch.autocast``); ``autocast_dtype`` is None when no autocast is needed.
    Raises ValueError for fp32 on a GPU when the host holds the UNet in half precision (autocast cannot
    raise precision: load the UNet in float32 instead).
    """
    device = torch.device(device)
    dtype = resolve_dtype(device, precision, host_dtype)
    if dtype == host_dtype:
        return dtype, dtype, None
    if dtype == torch.float32:
        if device.type != "cpu":
            raise ValueError(f"precision fp32: the host runs this UNet in {host_dtype}; load it in float32 "
                             "(ComfyUI --force-fp32 or --fp32-unet) or choose auto, fp16 or bf16")
        return dtype, dtype, None
    return dtype, host_dtype, dtype


def unet_caller(fn: UNetFn, device: Union[str, torch.device], input_dtype: torch.dtype,
                autocast_dtype: Optional[torch.dtype] = None) -> UNetFn:
    """``unet(x, t, context)`` as :class:`~dloral.pipeline.DLoRALModels` calls it, running ``fn(x, t, context)``
    (the host's UNet) the way :func:`run_precision` says: x ``(B, 8, h, w)`` and context ``(B, L, D)`` on
    ``device`` in ``input_dtype``, t ``(B,)`` in float32, under ``torch.autocast`` to ``autocast_dtype`` when
    it is given; the output eps ``(B, 4, h, w)`` as float32."""
    device = torch.device(device)

    def unet(x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        amp = contextlib.nullcontext() if autocast_dtype is None else torch.autocast(device.type, dtype=autocast_dtype)
        with amp:
            return fn(x.to(device, input_dtype), t.to(device, torch.float32), context.to(device, input_dtype)).float()
    return unet
