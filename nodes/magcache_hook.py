"""How MagCache reaches the host's Wan model: wrappers and block patches on a clone.

Host plumbing only; the engine is the core's :class:`magcache.MagCacheSession` (sigma -> step,
segment and Wan2.2 split, residual store keyed by branch and cond uuid, row assembly, timing).

* ``OUTER_SAMPLE`` wrapper: one sampling run gets a fresh session; in ``finally`` the session
  reports (logged once, sent to the frontend) and drops its residuals, so an interrupted run
  leaves nothing behind.
* ``APPLY_MODEL`` wrapper: one model call; the session plans it (one decision per branch
  present, never ORed) and the :class:`~magcache.state.CallPlan` rides in
  ``transformer_options`` under ``_host.BLOCK_ROWS_KEY``, the published contract saying which rows the
  blocks run (NAG reads it). It sits outside the diffusion model, so outside a
  ``TorchCompileModel`` compiled module.
* ``dit``/``double_block`` patches: each hands its block to ``CallPlan.run_block`` (core):
  block 0 enters the plan, every block runs on the rows that compute (per-row inputs cut
  once per call), the last block leaves it (assembly). When every row computes, a middle
  block only forwards to the original block.
"""
import torch

import comfy.patcher_extension as pe

from ._host import BLOCK_ROWS_KEY, call_with, find_transformer_options, fresh_run_wrapper

KEY = "atelier_magcache"
RUN_KEY = "atelier_magcache_run"
CALL_KEY = BLOCK_ROWS_KEY   # the per-call plan; its ``compute_rows`` is the published rows contract (_host)
REPORT_EVENT = "atelier.magcache.report"


def finish_run(session, interrupted):
    """End of a sampling run (``_host.fresh_run_wrapper``): the session reports; its summary is logged."""
    rep = session.finish(interrupted)
    return None if rep is None else "[Atelier] " + rep["summary"]


def apply_model_wrapper(executor, *args, **kwargs):
    to = find_transformer_options(args, kwargs)
    session = to.get(RUN_KEY) if to is not None else None
    if session is None or "cond_or_uncond" not in to:
        return executor(*args, **kwargs)
    x = args[0] if args else kwargs["x"]
    sigma = (args[1] if len(args) > 1 else kwargs["t"]).flatten()[0]
    plan = session.plan_sampler_call(to.get("sample_sigmas"), sigma, to["cond_or_uncond"], to.get("uuids"),
                                     x.shape[0])
    return call_with(to, CALL_KEY, plan, executor, *args, **kwargs)


def make_block_patch(index, num_blocks, subset_rows=True):
    """The patch of block ``index``; ``subset_rows=False`` runs all rows through the blocks
    (VACE adds hints between blocks) and lets the last block discard skipped rows."""
    first, last = index == 0, index == num_blocks - 1

    def patch(args, extra):
        plan = args["transformer_options"].get(CALL_KEY)
        if plan is None:
            return extra["original_block"](args)
        return plan.run_block(args, extra["original_block"], first, last, subset_rows)

    return eager(patch)


def eager(fn):
    """Keep ``fn`` out of torch.compile graphs.

    The host's TorchCompileModel compiles the whole diffusion model and filters out the guards
    on ``transformer_options``, so a traced graph would not notice that the next call's plan
    differs (skip vs compute). The patches therefore run eagerly (a graph break); the rest of
    the model stays compiled.
    """
    disable = getattr(getattr(torch, "compiler", None), "disable", None)
    return disable(fn) if disable is not None else fn


def apply_magcache(model, session, subset_rows=True):
    """A clone of ``model`` with MagCache hooked in; the input model is untouched."""
    m = model.clone()
    n = len(m.get_model_object("diffusion_model").blocks)
    to = m.model_options.setdefault("transformer_options", {})
    to[RUN_KEY] = session
    m.add_wrapper_with_key(pe.WrappersMP.OUTER_SAMPLE, KEY, fresh_run_wrapper(RUN_KEY, finish_run))
    m.add_wrapper_with_key(pe.WrappersMP.APPLY_MODEL, KEY, apply_model_wrapper)
    for i in range(n):
        m.set_model_patch_replace(make_block_patch(i, n, subset_rows), "dit", "double_block", i)
    return m
