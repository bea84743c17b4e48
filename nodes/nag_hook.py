"""How NAG reaches the host's Wan model: object patches of each cross-attention and two
wrappers, all on a *clone* of the user's model.

* ``diffusion_model.blocks.{i}.cross_attn`` object patches: a :class:`NAGCrossAttention`
  that shares the host module's own children (``q, k, v, o, norm_q, norm_k`` and, in I2V,
  ``k_img, v_img, norm_k_img``) under the same names, so state-dict keys, LoRA weight patches,
  device moves and low-VRAM casting reach the very same modules. It runs the host's own
  projections and attention function (``optimized_attention`` of the host module's file,
  read at call time, so attention overrides still apply); calls without a NAG plan go to the
  host module's own ``forward`` unchanged. No ``dit`` block patches are used, so it composes
  with MagCache's block patches.
* ``OUTER_SAMPLE`` wrapper: one sampling run gets a fresh :class:`NAGRun` (settings from the
  node, empty cache); ``finally`` drops the cache, so an interrupted run leaves nothing behind.
* ``DIFFUSION_MODEL`` wrapper: one model call. It reads ``cond_or_uncond`` and ``sigmas`` from
  ``transformer_options``, projects the NAG negative through the live model's
  ``text_embedding`` (once per run and device/dtype, then cached), and leaves a per-call
  :class:`CallPlan` (guided row slices, negative context) for the cross-attention patches.

The rule itself lives in the pure core (``nag.nag_cross_attention`` / ``nag.nag_combine``).
"""
import logging
import sys

import torch

import comfy.patcher_extension as pe

from ..nag import NAGConfig, guided_row_slices, remap_row_slices, nag_cross_attention
from ._host import find_transformer_options

log = logging.getLogger("atelier")

KEY = "atelier_nag"
RUN_KEY = "atelier_nag_run"
CALL_KEY = "atelier_nag_call"
MAGCACHE_CALL_KEY = "atelier_magcache_call"  # MagCache's per-call plan (rows it runs)


class NAGRun:
    """Settings fixed at node time; per-run state (the projected negative) made per run."""

    def __init__(self, config: NAGConfig, negative: torch.Tensor, per_run=False):
        self.config = config
        self.negative = negative          # raw NAG-negative text context [N, Ln, text_dim]
        self.per_run = per_run
        self.cache = {}                   # (device, dtype) -> text_embedding(negative)
        self.projections = 0
        self.guided_calls = 0

    def fresh(self):
        return NAGRun(self.config, self.negative, per_run=True)

    def projected_negative(self, diffusion_model, device, dtype):
        """``text_embedding(negative)`` by the live model; cached for the run (not across runs:
        weights may be patched differently next time)."""
        key = (str(device), dtype)
        neg = self.cache.get(key)
        if neg is None:
            neg = diffusion_model.text_embedding(self.negative.to(device=device, dtype=dtype))
            self.projections += 1
            if self.per_run:
                self.cache[key] = neg
        return neg


class CallPlan:
    """What the cross-attention patches do in one model call."""

    def __init__(self, config, negative, guided, batch):
        self.config = config
        self.negative = negative   # [N, Ln, dim]
        self.guided = guided       # row slices of the full batch
        self.batch = batch


def outer_sample_wrapper(executor, *args, **kwargs):
    guider = executor.class_obj
    orig = guider.model_options
    import comfy.model_patcher
    guider.model_options = comfy.model_patcher.create_model_options_clone(orig)
    to = guider.model_options["transformer_options"]
    run = to[RUN_KEY].fresh()
    to[RUN_KEY] = run
    try:
        return executor(*args, **kwargs)
    finally:
        if run.guided_calls:
            log.info("[Atelier] NAG: guided %d model calls; negative projected %d time(s)",
                     run.guided_calls, run.projections)
        run.cache.clear()
        guider.model_options = orig


def diffusion_model_wrapper(executor, *args, **kwargs):
    to = find_transformer_options(args, kwargs)
    run = to.get(RUN_KEY) if to is not None else None
    cu = to.get("cond_or_uncond") if to is not None else None
    if run is None or not cu or not run.config.active_at(to.get("sigmas")):
        return executor(*args, **kwargs)
    x = args[0] if args else kwargs["x"]
    context = args[2] if len(args) > 2 else kwargs["context"]
    guided = guided_row_slices(cu, x.shape[0])
    if not guided:
        return executor(*args, **kwargs)
    neg = run.projected_negative(executor.class_obj, context.device, context.dtype)
    to[CALL_KEY] = CallPlan(run.config, neg, guided, x.shape[0])
    run.guided_calls += 1
    try:
        return executor(*args, **kwargs)
    finally:
        to.pop(CALL_KEY, None)


def _host_attention(host_module):
    mod = sys.modules.get(type(host_module).__module__)
    fn = getattr(mod, "optimized_attention", None)
    if fn is None:
        from comfy.ldm.modules.attention import optimized_attention as fn
    return fn


class NAGCrossAttention(torch.nn.Module):
    """Stands in for one Wan cross-attention module; see the module docstring."""

    def __init__(self, host_module, index):
        super().__init__()
        object.__setattr__(self, "_host", host_module)  # outside the module tree on purpose
        for name, child in host_module.named_children():
            self.add_module(name, child)
        for name, p in host_module.named_parameters(recurse=False):
            self.register_parameter(name, p)
        for name, b in host_module.named_buffers(recurse=False):
            self.register_buffer(name, b)
        self.num_heads = host_module.num_heads
        self.index = index

    def extra_repr(self):
        return f"NAG over {type(self._host).__name__}, block {self.index}"

    def forward(self, x, context, context_img_len=None, transformer_options={}, **kwargs):
        plan = transformer_options.get(CALL_KEY) if isinstance(transformer_options, dict) else None
        if plan is None:
            return self._host(x, context, context_img_len=context_img_len,
                              transformer_options=transformer_options, **kwargs)
        guided = plan.guided
        if x.shape[0] != plan.batch:
            guided = _subset_rows(plan, transformer_options, x.shape[0])
        attention = _host_attention(self._host)
        heads = self.num_heads

        def attend(q, k, v):
            return attention(q, k, v, heads=heads, transformer_options=transformer_options)

        return nag_cross_attention(self, x, context, plan.negative, attend, guided, plan.config,
                                   context_img_len)


def _subset_rows(plan, to, rows):
    """Guided rows when a cache runs the blocks on part of the batch."""
    full = {r for sl in plan.guided for r in range(sl.start, sl.stop)}
    if len(full) == plan.batch:        # every row is positive: any subset is all guided
        return [slice(0, rows)]
    mc = to.get(MAGCACHE_CALL_KEY)
    present = getattr(mc, "compute_rows", None)
    if present is not None and len(present) == rows:
        return remap_row_slices(plan.guided, present.tolist())
    raise RuntimeError(
        f"Atelier NAG: the cross-attention got {rows} of the call's {plan.batch} rows and no node "
        "said which; NAG cannot tell the positive rows apart. Put the node that subsets rows "
        "after NAG or report this combination.")


def apply_nag(model, config: NAGConfig, negative: torch.Tensor):
    """A clone of ``model`` with NAG hooked in; the input model is untouched."""
    m = model.clone()
    dm = m.get_model_object("diffusion_model")
    to = m.model_options.setdefault("transformer_options", {})
    to[RUN_KEY] = NAGRun(config, negative)
    m.add_wrapper_with_key(pe.WrappersMP.OUTER_SAMPLE, KEY, outer_sample_wrapper)
    m.add_wrapper_with_key(pe.WrappersMP.DIFFUSION_MODEL, KEY, diffusion_model_wrapper)
    for i in range(len(dm.blocks)):
        name = f"diffusion_model.blocks.{i}.cross_attn"
        m.add_object_patch(name, NAGCrossAttention(m.get_model_object(name), i))
    return m
