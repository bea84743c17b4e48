"""How NAG reaches the host's cross-attention families (Wan; SD1.5/SDXL ``attn2``; LTX-Video ``attn2``, see
:class:`NAGUNetCrossAttention`, :class:`NAGLTXVCrossAttention`): object patches of each cross-attention and
two wrappers, all on a *clone* of the user's model. Described here for Wan:

* ``diffusion_model.blocks.{i}.cross_attn`` object patches: a :class:`NAGCrossAttention`
  that shares the host module's own children (``q, k, v, o, norm_q, norm_k`` and, in I2V,
  ``k_img, v_img, norm_k_img``) under the same names, so state-dict keys, LoRA weight patches,
  device moves and low-VRAM casting reach the very same modules. It runs the host's own
  projections and attention function (``optimized_attention`` of the host module's file,
  read at call time, so attention overrides still apply); calls without a NAG plan go to the
  host module's own ``forward`` unchanged. No ``dit`` block patches are used, so it composes
  with MagCache's block patches.
* ``OUTER_SAMPLE`` wrapper: one sampling run gets a fresh ``nag.NAGRun`` (settings from the
  node, empty cache); ``finally`` drops the cache, so an interrupted run leaves nothing behind.
* ``DIFFUSION_MODEL`` wrapper: one model call. It reads ``cond_or_uncond`` and ``sigmas`` from
  ``transformer_options`` and hands them, with the live model's ``text_embedding`` as the
  projection, to ``NAGRun.plan_call`` (core), which leaves a per-call ``nag.CallPlan`` (guided
  row slices, projected negative, cached once per run and device/dtype) for the patches.

The rules live in the pure core: ``nag.run`` (run state, call plan, row subsets),
``nag.nag_cross_attention`` / ``nag.nag_combine``.
"""
import logging
import sys

import torch

import comfy.patcher_extension as pe

from ..nag import NAGConfig, NAGRun, nag_cross_attention
from ..nag.cross_attention import guide_rows, share_modules
from ._host import block_rows, call_with, find_transformer_options, fresh_run_wrapper

log = logging.getLogger("atelier")

KEY = "atelier_nag"
RUN_KEY = "atelier_nag_run"
CALL_KEY = "atelier_nag_call"


def diffusion_model_wrapper(executor, *args, **kwargs):
    to = find_transformer_options(args, kwargs)
    run = to.get(RUN_KEY) if to is not None else None
    if run is None:
        return executor(*args, **kwargs)
    x = args[0] if args else kwargs["x"]
    context = args[2] if len(args) > 2 else kwargs["context"]
    dm = executor.class_obj
    project = _projection(dm)
    plan = run.plan_call(to.get("cond_or_uncond"), to.get("sigmas"), x.shape[0], project,
                         context.device, context.dtype)
    return call_with(to, CALL_KEY, plan, executor, *args, **kwargs)


def _identity(t):
    return t


def _projection(dm):
    """The live text projection the family's forward puts its prompt through before the cross-attention:
    Wan ``text_embedding``, LTXV ``caption_projection`` (token-wise); UNets use the raw text."""
    for name in ("text_embedding", "caption_projection"):
        mod = getattr(dm, name, None)
        if mod is not None:
            return mod
    return _identity


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
        share_modules(self, host_module)
        self.num_heads = host_module.num_heads
        self.index = index

    def extra_repr(self):
        return f"NAG over {type(self._host).__name__}, block {self.index}"

    def forward(self, x, context, context_img_len=None, transformer_options={}, **kwargs):
        plan = transformer_options.get(CALL_KEY) if isinstance(transformer_options, dict) else None
        if plan is None:
            return self._host(x, context, context_img_len=context_img_len,
                              transformer_options=transformer_options, **kwargs)
        guided = plan.guided if x.shape[0] == plan.batch else _subset_rows(plan, transformer_options, x.shape[0])
        attention = _host_attention(self._host)
        heads = self.num_heads

        def attend(q, k, v):
            return attention(q, k, v, heads=heads, transformer_options=transformer_options)

        return nag_cross_attention(self, x, context, plan.negative, attend, guided, plan.config,
                                   context_img_len)


class NAGUNetCrossAttention(torch.nn.Module):
    """Stands in for one UNet cross-attention (``attn2``, the host's ``CrossAttention``: ``to_q, to_k, to_v,
    to_out``) of SD1.5/SDXL; shares the host module's children like :class:`NAGCrossAttention`. A call with a
    plan runs the host's projections and attention (``optimized_attention``, so overrides apply) and guides the
    positive rows with the negative's keys/values (``nag.guide_rows``); other calls are the host module's."""

    def __init__(self, host_module, name):
        super().__init__()
        object.__setattr__(self, "_host", host_module)
        share_modules(self, host_module)
        self.heads = host_module.heads
        self.attn_precision = getattr(host_module, "attn_precision", None)
        self.name = name

    def extra_repr(self):
        return f"NAG over {type(self._host).__name__} {self.name}"

    def forward(self, x, context=None, value=None, mask=None, transformer_options={}, **kwargs):
        plan = transformer_options.get(CALL_KEY) if isinstance(transformer_options, dict) else None
        if plan is None or context is None or value is not None or mask is not None:
            return self._host(x, context=context, value=value, mask=mask,
                              transformer_options=transformer_options, **kwargs)
        guided = plan.guided if x.shape[0] == plan.batch else _subset_rows(plan, transformer_options, x.shape[0])
        attention = _host_attention(self._host)
        heads, precision = self.heads, self.attn_precision

        def attend(q, k, v):
            return attention(q, k, v, heads, attn_precision=precision, transformer_options=transformer_options)

        q = self.to_q(x)
        z = attend(q, self.to_k(context), self.to_v(context))
        neg = plan.negative.to(device=q.device, dtype=context.dtype)
        z = guide_rows(z, q, self.to_k(neg), self.to_v(neg), attend, guided, plan.config)
        return self.to_out(z)


class NAGLTXVCrossAttention(NAGUNetCrossAttention):
    """Stands in for one LTXV cross-attention (``attn2``, the host's lightricks ``CrossAttention``: ``to_q, to_k,
    to_v, q_norm, k_norm, to_out``); shares the host module's children. A call with a plan and a text context
    runs the host's projections, norms and attention (``optimized_attention`` / ``optimized_attention_masked``
    of ``comfy.ldm.modules.attention``, read at call time) in the host's order and guides the positive rows
    with the negative's keys/values (the negative holds only its real tokens, see ``nag_nodes``; when the
    host's call is masked, the negative's attention is too, with a mask that keeps every token, so a negative
    equal to the positive is the identity bit for bit); other calls are the host module's."""

    def forward(self, x, context=None, mask=None, pe=None, transformer_options={}, **kwargs):
        plan = transformer_options.get(CALL_KEY) if isinstance(transformer_options, dict) else None
        if plan is None or context is None or pe is not None or kwargs.get("k_pe") is not None:
            return self._host(x, context=context, mask=mask, pe=pe, transformer_options=transformer_options,
                              **kwargs)
        import comfy.ldm.modules.attention as host_attention
        guided = plan.guided if x.shape[0] == plan.batch else _subset_rows(plan, transformer_options, x.shape[0])
        heads, precision = self.heads, self.attn_precision

        def attend_with(m):
            def attend(q, k, v):
                if m is None:
                    return host_attention.optimized_attention(q, k, v, heads, attn_precision=precision,
                                                              transformer_options=transformer_options)
                return host_attention.optimized_attention_masked(q, k, v, heads, m, attn_precision=precision,
                                                                 transformer_options=transformer_options)
            return attend

        q = self.to_q(x)
        k = self.to_k(context)
        v = self.to_v(context)
        q = self.q_norm(q)
        k = self.k_norm(k)
        z = attend_with(mask)(q, k, v)
        neg = plan.negative.to(device=q.device, dtype=context.dtype)
        keep_all = None
        if isinstance(mask, torch.Tensor):    # every negative token kept, in the host mask's own form
            shape = (1,) + tuple(mask.shape[1:-1]) + (neg.shape[1],)
            keep_all = mask.new_ones(shape) if mask.dtype == torch.bool else mask.new_zeros(shape)
        z = guide_rows(z, q, self.k_norm(self.to_k(neg)), self.to_v(neg), attend_with(keep_all), guided,
                       plan.config)
        return self.to_out(z)


def _subset_rows(plan, to, rows):
    """Guided rows when a cache runs the blocks on part of the batch (the rows contract of ``_host``:
    :func:`~._host.block_rows`)."""
    return plan.rows_for(rows, block_rows(to))


def wan_cross_attention_names(dm):
    """Object names of every Wan cross-attention: ``blocks.{i}.cross_attn`` and, in VACE models,
    ``vace_blocks.{i}.cross_attn``."""
    names = [f"blocks.{i}.cross_attn" for i in range(len(dm.blocks))]
    names += [f"vace_blocks.{i}.cross_attn" for i in range(len(getattr(dm, "vace_blocks", None) or ()))]
    return names


def unet_cross_attention_names(dm):
    """Object names of every UNet cross-attention (``...transformer_blocks.{j}.attn2``)."""
    return [n for n, mod in dm.named_modules() if n.endswith(".attn2") and hasattr(mod, "to_k")]


def ltxv_cross_attention_names(dm):
    """Object names of every LTXV cross-attention (``transformer_blocks.{i}.attn2``)."""
    return [f"transformer_blocks.{i}.attn2" for i in range(len(dm.transformer_blocks))]


def apply_nag(model, config: NAGConfig, negative: torch.Tensor, unet: bool = False, kind: str = ""):
    """A clone of ``model`` with NAG hooked in its cross-attention (Wan; ``unet``: SD1.5/SDXL; ``kind="ltxv"``:
    LTX-Video); the input model is untouched."""
    unet = unet or kind == "unet"
    m = model.clone()
    dm = m.get_model_object("diffusion_model")
    to = m.model_options.setdefault("transformer_options", {})
    to[RUN_KEY] = NAGRun(config, negative)
    m.add_wrapper_with_key(pe.WrappersMP.OUTER_SAMPLE, KEY, fresh_run_wrapper(RUN_KEY, lambda run, _: run.finish()))
    m.add_wrapper_with_key(pe.WrappersMP.DIFFUSION_MODEL, KEY, diffusion_model_wrapper)
    ltxv = kind == "ltxv"
    names = (ltxv_cross_attention_names(dm) if ltxv else unet_cross_attention_names(dm) if unet
             else wan_cross_attention_names(dm))
    replaced = to.get("patches_replace", {}).get("attn2", {}) if unet else {}
    if replaced:   # BasicTransformerBlock then calls the replacement, not attn2: those blocks stay unguided
        log.warning("[Atelier] NAG: %d cross-attention(s) already have an attn2 replace patch (e.g. IPAdapter); "
                    "those blocks call the replacement instead of attn2 and stay unguided.",
                    len(replaced))
    for i, name in enumerate(names):
        host = m.get_model_object(f"diffusion_model.{name}")
        stand_in = (NAGLTXVCrossAttention(host, name) if ltxv else NAGUNetCrossAttention(host, name) if unet
                    else NAGCrossAttention(host, i))
        m.add_object_patch(f"diffusion_model.{name}", stand_in)
    return m
