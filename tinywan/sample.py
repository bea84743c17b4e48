"""Standalone flow-matching sampler equal to ComfyUI's ``euler`` + ``simple`` scheduler on Wan.

Host facts it reproduces (comfy/model_sampling.py, comfy/samplers.py, k_diffusion euler):
sigmas of ``ModelSamplingDiscreteFlow`` are ``shift*t/(1+(shift-1)*t)`` at t = i/1000
(float32), Wan2.1 uses shift 8; the ``simple`` scheduler takes ``steps`` of them from the
top at stride 1000/steps and appends 0; the model gets timestep ``sigma*1000`` and predicts
velocity v, ``denoised = x - sigma*v``; CFG is ``uncond + cfg*(cond - uncond)`` on denoised,
and the uncond branch is not run at cfg == 1; Euler: ``x += (x - denoised)/sigma * (s_next - s)``.
The start noise is ``torch.randn(shape, generator=manual_seed(seed))`` as the host draws it.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from .data import encode_prompt

BlockStackFn = Callable[..., torch.Tensor]  # (tokens, aux, branch, step) -> tokens


def flow_sigmas(steps: int, shift: float = 8.0) -> torch.Tensor:
    """[steps + 1] float32 sigmas, from 1.0 down to 0.0 (ComfyUI ``simple`` schedule)."""
    if steps < 1:
        raise ValueError(f"steps={steps}: must be >= 1")
    t = torch.arange(1, 1001, 1) / 1000.0
    table = t if shift == 1.0 else shift * t / (1 + (shift - 1) * t)
    stride = len(table) / steps
    sigs = [float(table[-(1 + int(i * stride))]) for i in range(steps)] + [0.0]
    return torch.tensor(sigs, dtype=torch.float32)


def velocity(model, x, sigma, context, *, clip_fea=None, y=None, block_stack_fn: Optional[BlockStackFn] = None,
             branch: str = "cond", step: int = 0) -> torch.Tensor:
    """One model evaluation at noise level ``sigma`` (float): v [B, 16, F, H, W].

    With ``block_stack_fn`` the block stack is ``block_stack_fn(tokens, aux, branch, step)``
    instead of ``model.run_blocks(tokens, aux)``.
    """
    t = torch.full((x.shape[0],), float(sigma) * 1000.0, dtype=torch.float32, device=x.device)
    tokens, aux = model.embed(x, t, context, clip_fea=clip_fea, y=y)
    if block_stack_fn is None:
        tokens = model.run_blocks(tokens, aux)
    else:
        tokens = block_stack_fn(tokens, aux, branch, step)
    return model.head_out(tokens, aux)


def _batched(ctx, b):
    if ctx.ndim == 2:
        ctx = ctx[None]
    if ctx.shape[0] == 1 and b > 1:
        ctx = ctx.expand(b, *ctx.shape[1:])
    return ctx


@torch.no_grad()
def sample(model, context, neg_context=None, *, steps: int = 20, cfg: float = 5.0, seed: int = 0,
           shift: float = 8.0, shape=(1, 16, 3, 16, 16), noise: Optional[torch.Tensor] = None,
           block_stack_fn: Optional[BlockStackFn] = None, clip_fea=None, y=None,
           callback: Optional[Callable] = None) -> torch.Tensor:
    """Sample a latent [B, 16, F, H, W] (in the model's space; ``render``/``vae`` decode it).

    context / neg_context: [L, 4096] or [B, L, 4096] (lengths may differ; the two branches
    run as separate forwards, cond first). ``neg_context`` defaults to the empty prompt.
    ``block_stack_fn(tokens, aux, branch, step) -> tokens`` (branch ``"cond"`` or
    ``"uncond"``, step 0-based) replaces the block stack, e.g. for MagCache.
    ``callback(step, x, denoised)`` is called after each step's model evaluation.
    """
    p = next(model.parameters())
    if noise is None:
        noise = torch.randn(tuple(shape), generator=torch.Generator().manual_seed(int(seed)))
    x = noise.to(p.device, torch.float32)
    b = x.shape[0]
    cond = _batched(context.to(x), b)
    uncond = None
    if cfg != 1.0:
        uncond = _batched((encode_prompt("") if neg_context is None else neg_context).to(x), b)
    sigmas = flow_sigmas(steps, shift)
    x = x * sigmas[0]
    for i in range(steps):
        s, s_next = sigmas[i], sigmas[i + 1]
        den = x - velocity(model, x, s, cond, clip_fea=clip_fea, y=y, block_stack_fn=block_stack_fn,
                           branch="cond", step=i) * s
        if uncond is not None:
            den_u = x - velocity(model, x, s, uncond, clip_fea=clip_fea, y=y, block_stack_fn=block_stack_fn,
                                 branch="uncond", step=i) * s
            den = den_u + (den - den_u) * cfg
        if callback is not None:
            callback(i, x, den)
        x = x + (x - den) / s * (s_next - s)
    return x
