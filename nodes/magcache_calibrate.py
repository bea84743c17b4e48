"""Calibration run: sample once without caching and record the block-stack residual per call.

Hooks on a clone only: one APPLY_MODEL wrapper tells the block patches which step
and branches the call has; patches on the first and last block take the residual
``x_out - x_in`` and hand it to the core's ``CalibrationRecorder``.
"""
import torch

import comfy.patcher_extension as pe

from ..magcache import CalibrationRecorder
from ._host import find_transformer_options
from .magcache_hook import eager

KEY = "atelier_magcache_calibrate"
CALL_KEY = "atelier_magcache_calibrate_call"


def _wrapper(recorder):
    def apply_model(executor, *args, **kwargs):
        to = find_transformer_options(args, kwargs)
        if to is None or "sample_sigmas" not in to:
            return executor(*args, **kwargs)
        sig = to["sample_sigmas"].detach().float().cpu()[:-1]
        s = float((args[1] if len(args) > 1 else kwargs["t"]).flatten()[0])
        d = (sig - s).abs()
        i = int(torch.argmin(d))
        step = i if float(d[i]) <= 1e-4 * max(1.0, abs(s)) else None
        to[CALL_KEY] = {"step": step, "cu": list(to["cond_or_uncond"])}
        try:
            return executor(*args, **kwargs)
        finally:
            to.pop(CALL_KEY, None)
    return apply_model


def _patch(index, last, recorder, state):
    def patch(args, extra):
        call = (args.get("transformer_options") or {}).get(CALL_KEY)
        if index == 0:
            state["x_in"] = args["img"]
        out = extra["original_block"](args)
        if last and call is not None and call["step"] is not None:
            x_in, x_out = state.pop("x_in"), out["img"]
            n = x_out.shape[0] // len(call["cu"])
            seen = set()
            for c, branch in enumerate(call["cu"]):
                b = 0 if branch == 0 else 1
                if b in seen:  # several conds of one branch: the first one calibrates
                    continue
                seen.add(b)
                r = (x_out[c * n:(c + 1) * n] - x_in[c * n:(c + 1) * n]).float()
                recorder.record(b, call["step"], r)
        return out
    return eager(patch)


def calibrate_run(model, positive, negative, latent_image, seed, steps, cfg, sampler_name, scheduler):
    """Run the host sampler once with recording; returns (LATENT, curve JSON text)."""
    import nodes as host_nodes  # the host's nodes module (KSampler path)
    branches = 2 if cfg != 1.0 else 1
    recorder = CalibrationRecorder(branches=branches)
    m = model.clone()
    dm = m.get_model_object("diffusion_model")
    n = len(dm.blocks)
    state = {}
    m.add_wrapper_with_key(pe.WrappersMP.APPLY_MODEL, KEY, _wrapper(recorder))
    for i in range(n):
        if i == 0 or i == n - 1:
            m.set_model_patch_replace(_patch(i, i == n - 1, recorder, state), "dit", "double_block", i)
    (out,) = host_nodes.common_ksampler(m, seed, steps, cfg, sampler_name, scheduler, positive, negative,
                                        latent_image)
    return out, recorder.to_json()
