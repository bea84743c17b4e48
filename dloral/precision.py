"""Compute precision of a DLoRAL run: one explicit rule, used by the node and the CLI.

``precision`` is one of ``PRECISIONS``:

- ``"auto"``: on CPU always float32 (half precision on CPU is slow and, for fp16, lossy); on a GPU
  the dtype the host loaded the UNet in (ComfyUI picks fp16 or bf16 for SD2.x on current GPUs), or,
  when that is not known, bfloat16 where the GPU supports it, else float16.
- ``"fp16"`` / ``"bf16"`` / ``"fp32"``: that dtype on any device ("forced"; half precision on CPU runs,
  slowly, and is what the CPU bf16 test measures).

The official code runs UNet, VAE and CFR in fp16 on a GPU (text encoder fp32).
"""
import torch

__all__ = ["PRECISIONS", "resolve_dtype"]

PRECISIONS = ("auto", "fp16", "bf16", "fp32")
_NAMED = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def resolve_dtype(device, precision="auto", model_dtype=None, bf16_supported=None):
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
