"""How NAG reaches a joint-attention (MM-DiT) model: Flux, Flux-Kontext, Flux2, Chroma, Chroma
Radiance, Qwen-Image, HunyuanVideo (1.0 and 1.5), SD3.5, HiDream, Lumina2 / Z-Image. All on a *clone* of the user's model.

* ``APPLY_MODEL`` wrapper (one model call): when the call has guided rows (``NAGRun.plan_call``:
  positive chunks of ``cond_or_uncond``, sigma gate), the NAG-negative text, put through the family's
  own conditioning step once per run (``BaseModel.extra_conds``: Flux2 pads to 512 tokens), is appended to the
  call's text context along the tokens (``nag.extend_context``; a text ``attention_mask`` is
  extended with "attend"), so the family's own text path (``txt_in``, ``context_embedder``, the
  blocks' projections, q/k norms and RoPE, read at call time: LoRA, low-VRAM casting and compile
  apply) makes the negative's keys and values. A per-call ``nag.JointPlan`` goes into
  ``transformer_options`` for the call and is removed after it, also on error.
* ``optimized_attention_override``, set by the wrapper for the planned call only and put back after
  it (chained to the override there at call time, which still runs every plain part): a call that :meth:`nag.JointPlan.match` recognises as a joint attention goes through
  ``nag.nag_joint_attention`` (plain rows exact, through the host's attention; guided rows: every query
  over the image keys once and each text's keys once, as views, log-sum-exp merge, ``nag_combine`` on
  the image queries, the core's own attention kernels); every other attention call goes to the host unchanged.
* Text-first families with a RoPE embedder (Flux family, Chroma, Qwen-Image): an object patch of
  ``diffusion_model.pe_embedder`` giving the negative text the positions it would have alone
  (Flux2 and Qwen-Image number their text tokens).
* HunyuanVideo only: an object patch of ``diffusion_model.txt_in`` (its token refiner pools the
  whole text and attends within it) that runs the host's own ``txt_in`` on the positive and on the
  negative separately; it shares the host module's children (same state-dict keys).
* Lumina2 / Z-Image (NextDiT, ComfyUI v0.8.0): the caption is refined alone, the image is numbered after it
  and Z-Image pads it to a multiple of 32, so the negative caption is its own stream (``nag.CaptionStreams``):
  object patches of ``cap_embedder`` (each caption padded by itself with the host's pad token),
  ``rope_embedder`` (the negative moved to end right before the image, which keeps its positions) and of every
  ``context_refiner`` layer (the host's layer on each caption alone); each shares the host module's children.
  The wrapper sets the image token count of the plan itself (an image-only refiner runs before the joint layers).
* HiDream: the NAG negative's per-layer Llama states (``conditioning_llama3`` of its CONDITIONING) are appended to
  the call's ``encoder_hidden_states_llama3`` along the tokens, as its T5 text is to the context; the joint sequence
  is ``[image, T5+, T5-, L+, L-, Li+, Li-]`` (``nag.TextSegments``), which ``nag_joint_attention`` reads as
  ``[image, positive parts, negative parts]`` through its ``order`` (the image in place, the texts' keys
  gathered; nothing reordered back). No object patch (text RoPE is 0).
* ``OUTER_SAMPLE`` wrapper: a fresh ``nag.NAGRun`` per sampling run, dropped in ``finally``.

The model's own forward is never copied: it drops the text part (negative included) at its end as
it always does. No ``dit`` block patches: composes with MagCache's block patches; the rows a cache
runs are mapped with the ``_host.block_rows`` contract.
"""
import torch

import comfy.patcher_extension as pe

from ..nag import NAGConfig, NAGRun
from ..nag.cross_attention import share_modules
from ..nag.joint_call import (CaptionStreams, JointPlan, JointSpans, TextSegments, extend_context, extend_mask,
                              nag_joint_attention, negative_positions)
from ._host import block_rows, call_with, find_transformer_options, fresh_run_wrapper

KEY = "atelier_nag"
RUN_KEY = "atelier_nag_run"
CALL_KEY = "atelier_nag_joint"
OVERRIDE = "optimized_attention_override"


def conditioned(model_base, x, options):
    """``neg -> `` the NAG negative through the family's own conditioning step (``BaseModel.extra_conds``:
    e.g. Flux2 pads its text to 512 tokens), the same step the sampler's prompts take; the raw text where
    the family has none."""
    options = {k: v for k, v in options.items() if k not in ("cross_attn", "noise", "device")}

    def project(neg):
        try:
            out = model_base.extra_conds(**dict(options, cross_attn=neg, noise=x[:1], device=x.device))
            cond = out.get("c_crossattn")
            ctx = getattr(cond, "cond", None)
        except Exception:   # a family whose extra_conds needs inputs a text alone does not give
            ctx = None
        return ctx.to(device=neg.device, dtype=neg.dtype) if isinstance(ctx, torch.Tensor) else neg
    return project


def _extra_text_tokens(dm, kwargs):
    """Tokens a HunyuanVideo-1.5 forward adds to the text part before the joint blocks (byT5 glyph
    text, vision states); 0 for the other families."""
    n = 0
    byt5 = kwargs.get("txt_byt5")
    if getattr(dm, "byt5_in", None) is not None and byt5 is not None:
        n += byt5.shape[1]
    clip = kwargs.get("clip_fea")
    if getattr(dm, "vision_in", None) is not None and clip is not None:
        n += clip.shape[1]
    return n


def _image_tokens(dm, x):
    """Image tokens of a NextDiT joint sequence for latent ``x`` ``(B, C, H, W)``: patches, then Z-Image's pads."""
    p = int(dm.patch_size)
    n = -(-x.shape[-2] // p) * -(-x.shape[-1] // p)
    multiple = getattr(dm, "pad_tokens_multiple", None)
    return n + (-n) % multiple if multiple else n


LLAMA = "encoder_hidden_states_llama3"      # HiDream's model keyword (``extra_conds``)
LLAMA_OPTION = "conditioning_llama3"        # ... and its CONDITIONING key


def _extend_llama(states, negative):
    """HiDream's per-layer Llama states ``(B, layers, Lp, C)`` with the NAG negative's ``(1 or B, layers, Ln, C)``
    appended along the tokens (the host's ``extra_conds`` passes them as they are)."""
    if negative.ndim != 4 or negative.shape[1] != states.shape[1] or negative.shape[-1] != states.shape[-1]:
        raise ValueError(f"Atelier NAG: the NAG negative's Llama states {tuple(negative.shape)} do not match the "
                         f"prompt's {tuple(states.shape)}; encode it with the same HiDream text encoder")
    neg = negative.to(device=states.device, dtype=states.dtype)
    if neg.shape[0] != states.shape[0]:
        neg = neg[:1].expand(states.shape[0], *neg.shape[1:])
    return torch.cat([states, neg], dim=2)


def apply_model_wrapper(text_first, options, caption_stream=False, llama_stream=False):
    def wrapper(executor, *args, **kwargs):
        to = find_transformer_options(args, kwargs)
        run = to.get(RUN_KEY) if to is not None else None
        if run is None:
            return executor(*args, **kwargs)
        args = list(args)
        x, context = args[0], args[3] if len(args) > 3 else kwargs.get("c_crossattn")
        if context is None:
            return executor(*args, **kwargs)
        call = run.plan_call(to.get("cond_or_uncond"), to.get("sigmas"), x.shape[0],
                             conditioned(executor.class_obj, x, options), context.device, context.dtype)
        if call is None:
            return executor(*args, **kwargs)
        lp, ln = context.shape[1], call.negative.shape[1]
        extended = extend_context(context, call.negative)
        if len(args) > 3:
            args[3] = extended
        else:
            kwargs["c_crossattn"] = extended
        dm = executor.class_obj.diffusion_model
        mask = kwargs.get("attention_mask")
        if caption_stream:      # NextDiT: the caption mask stays the positive's (the refiner runs each caption alone)
            streams = CaptionStreams(lp, ln, getattr(dm, "pad_tokens_multiple", None))
            plan = JointPlan(call, JointSpans(True, streams.positive + streams.negative, streams.negative),
                             streams.positive)
            plan.image = _image_tokens(dm, x)    # the image-only noise refiner runs first: no guessing
            plan.captions = streams
            plan.caption_pad = getattr(dm, "cap_pad_token", None)      # read at call time (weight patches)
            own = options.get("attention_mask")     # kept only with padding in it, as the host's extra_conds does
            plan.negative_mask = own if isinstance(own, torch.Tensor) and bool((own == 0).any()) else None
        elif llama_stream:      # HiDream: [image, T5, Llama last layer, Llama block layer], each [+, -]
            states = kwargs.get(LLAMA)
            if not isinstance(states, torch.Tensor):
                return executor(*args, **kwargs)
            llp = states.shape[2]
            kwargs[LLAMA] = _extend_llama(states, options[LLAMA_OPTION])
            lln = kwargs[LLAMA].shape[2] - llp
            segments = TextSegments(((lp, ln), (llp, lln), (llp, lln)))
            plan = JointPlan(call, segments.spans(), lp)
            plan.segments = segments
        else:
            if isinstance(mask, torch.Tensor) and mask.ndim >= 2 and mask.shape[-1] == lp:
                own = options.get("attention_mask")    # the NAG negative's own padding mask, if its encoder gave one
                kwargs["attention_mask"] = extend_mask(mask, ln, own if isinstance(own, torch.Tensor) else None)
            plan = JointPlan(call, JointSpans(text_first, lp + ln + _extra_text_tokens(dm, kwargs), ln), lp)
        previous = to.get(OVERRIDE)
        to[OVERRIDE] = make_override(previous)
        standins = [m for m in (getattr(dm, "pe_embedder", None), getattr(dm, "rope_embedder", None),
                                getattr(dm, "cap_embedder", None)) if isinstance(m, _Planned)]
        for m in standins:
            m.plan = plan
        try:
            return call_with(to, CALL_KEY, plan, executor, *args, **kwargs)
        finally:
            for m in standins:
                m.plan = None
            if previous is None:
                to.pop(OVERRIDE, None)
            else:
                to[OVERRIDE] = previous
    return wrapper


def _to4(t, heads, skip_reshape):
    if skip_reshape:
        return t
    return t.reshape(t.shape[0], t.shape[1], heads, -1).transpose(1, 2)   # (B, L, H*D) or (B, L, H, D)


def make_override(previous):
    """An ``optimized_attention_override`` guiding the joint attention calls of a planned call and
    handing every other call (and every plain part) to ``previous`` or the host's function."""
    def plain(func, *args, **kwargs):
        if previous is not None:
            return previous(func, *args, **kwargs)
        return func(*args, **kwargs)

    def override(func, *args, **kwargs):
        to = kwargs.get("transformer_options")
        plan = to.get(CALL_KEY) if isinstance(to, dict) else None
        if plan is None or len(args) < 3:
            return plain(func, *args, **kwargs)
        q, k, v = args[:3]
        heads = args[3] if len(args) > 3 else kwargs.get("heads")
        skip = bool(kwargs.get("skip_reshape", False))
        lq = q.shape[2] if skip else q.shape[1]
        lk = k.shape[2] if skip else k.shape[1]
        if heads is None or not plan.match(lq, lk):
            return plain(func, *args, **kwargs)
        mask = args[4] if len(args) > 4 else kwargs.get("mask")
        rest = {n: val for n, val in kwargs.items() if n not in ("mask", "skip_reshape", "skip_output_reshape",
                                                               "heads")}

        def attend(q4, k4, v4, m):
            return plain(func, q4, k4, v4, heads, mask=m, skip_reshape=True, skip_output_reshape=True, **rest)

        q4, k4, v4 = (_to4(t, heads, skip) for t in (q, k, v))
        guided = plan.call.rows_for(q4.shape[0], block_rows(to))
        # HiDream: the layout [image, +, +, +, -, -, -] of the host's [image, +, -, +, -, +, -], read in place
        orders = plan.segment_order(lq, q4.device)
        out = nag_joint_attention(q4, k4, v4, plan.spans, guided, plan.call.config, attend, mask=mask, order=orders)
        plan.joint_calls += 1
        if kwargs.get("skip_output_reshape", False):
            return out
        return out.transpose(1, 2).reshape(out.shape[0], out.shape[2], -1)
    return override


class NAGTextSplit(torch.nn.Module):
    """Stands in for HunyuanVideo's ``txt_in`` (token refiner): in a planned call it runs the host's
    own module on the positive and on the negative text separately (the refiner pools and attends
    over the whole text); otherwise it is the host module."""

    def __init__(self, host_module):
        super().__init__()
        object.__setattr__(self, "_host", host_module)
        share_modules(self, host_module)

    def forward(self, x, timesteps, mask, transformer_options={}, **kwargs):
        plan = transformer_options.get(CALL_KEY) if isinstance(transformer_options, dict) else None
        if plan is None or x.shape[1] != plan.positive + plan.spans.negative:
            return self._host(x, timesteps, mask, transformer_options=transformer_options, **kwargs)
        parts = []
        for sl in (slice(0, plan.positive), slice(plan.positive, None)):
            m = mask[..., sl] if isinstance(mask, torch.Tensor) and mask.shape[-1] == x.shape[1] else mask
            parts.append(self._host(x[:, sl], timesteps, m, transformer_options=transformer_options, **kwargs))
        return torch.cat(parts, dim=1)


class _Planned(torch.nn.Module):
    """A stand-in called without ``transformer_options``: the wrapper sets :attr:`plan` for a planned call and
    clears it in ``finally``."""

    def __init__(self, host_module):
        super().__init__()
        object.__setattr__(self, "_host", host_module)
        share_modules(self, host_module)
        self.plan = None


class NAGPositions(_Planned):
    """Stands in for a text-first family's RoPE embedder (``pe_embedder``, the host's ``EmbedND``, no weights):
    while a planned call runs (the wrapper sets :attr:`plan` and clears it in ``finally``) the negative text's
    ids are those it would have alone (``nag.negative_positions``), then the host module embeds them."""

    def forward(self, ids, *args, **kwargs):
        plan = self.plan
        if plan is not None and ids.ndim == 3 and ids.shape[1] >= plan.positive + plan.spans.negative:
            ids = negative_positions(ids, plan.positive, plan.spans.negative)
        return self._host(ids, *args, **kwargs)


class NAGCaptionEmbedder(_Planned):
    """Stands in for NextDiT's ``cap_embedder`` (Lumina2, Z-Image): the host module embeds ``[positive, negative]``
    token by token; in a planned call each caption is then padded by itself with the family's pad token
    (Z-Image: to a multiple of 32, :meth:`nag.CaptionStreams.pad`), so the host's own padding adds nothing."""

    def forward(self, x, *args, **kwargs):
        out = self._host(x, *args, **kwargs)
        plan = self.plan
        streams = getattr(plan, "captions", None)
        if streams is None or out.ndim != 3 or out.shape[1] != streams.raw_positive + streams.raw_negative:
            return out
        return streams.pad(out, plan.caption_pad)


class NAGCaptionPositions(_Planned):
    """Stands in for NextDiT's ``rope_embedder`` (``EmbedND``, no weights): in a planned call the negative caption
    ends right before the image tokens, which keep their positions (:meth:`nag.CaptionStreams.positions`)."""

    def forward(self, ids, *args, **kwargs):
        streams = getattr(self.plan, "captions", None)
        if streams is not None and ids.ndim == 3 and ids.shape[1] >= streams.positive + streams.negative:
            ids = streams.positions(ids)
        return self._host(ids, *args, **kwargs)


class NAGCaptionRefiner(torch.nn.Module):
    """Stands in for one NextDiT ``context_refiner`` layer (a masked self-attention over the caption alone): in a
    planned call the host's own layer runs on the positive caption (with the host's caption mask) and on the
    negative caption (with its own mask, if its encoder gave one) separately, each with its own RoPE part."""

    def __init__(self, host_module):
        super().__init__()
        object.__setattr__(self, "_host", host_module)
        share_modules(self, host_module)

    def forward(self, x, x_mask, freqs_cis, *args, transformer_options={}, **kwargs):
        plan = transformer_options.get(CALL_KEY) if isinstance(transformer_options, dict) else None
        streams = getattr(plan, "captions", None)
        if streams is None or x.shape[1] != streams.positive + streams.negative:
            return self._host(x, x_mask, freqs_cis, *args, transformer_options=transformer_options, **kwargs)
        p = streams.positive
        neg_mask = plan.negative_mask
        if isinstance(neg_mask, torch.Tensor):
            neg_mask = neg_mask.to(x.device)
            if neg_mask.shape[-1] < streams.negative:          # Z-Image's pads are attended, as the host's are
                neg_mask = torch.nn.functional.pad(neg_mask, (0, streams.negative - neg_mask.shape[-1]), value=1)
            if neg_mask.shape[0] != x.shape[0]:
                neg_mask = neg_mask[:1].expand(x.shape[0], *neg_mask.shape[1:])
        parts = [self._host(x[:, :p], x_mask, freqs_cis[:, :p], *args, transformer_options=transformer_options,
                            **kwargs),
                 self._host(x[:, p:], neg_mask, freqs_cis[:, p:], *args, transformer_options=transformer_options,
                            **kwargs)]
        return torch.cat(parts, dim=1)


def apply_joint_nag(model, config: NAGConfig, negative: torch.Tensor, text_first: bool, split_text_in: bool,
                    options=None, caption_stream: bool = False, llama_stream: bool = False):
    """A clone of ``model`` with NAG on its joint attention; the input model is untouched. ``options``: the
    NAG negative's CONDITIONING entry (pooled output etc.), for the family's conditioning step."""
    m = model.clone()
    to = m.model_options.setdefault("transformer_options", {})
    to[RUN_KEY] = NAGRun(config, negative)
    m.add_wrapper_with_key(pe.WrappersMP.OUTER_SAMPLE, KEY, fresh_run_wrapper(RUN_KEY, lambda run, _: run.finish()))
    m.add_wrapper_with_key(pe.WrappersMP.APPLY_MODEL, KEY,
                           apply_model_wrapper(text_first, dict(options or {}), caption_stream, llama_stream))
    if caption_stream:
        dm = m.get_model_object("diffusion_model")
        m.add_object_patch("diffusion_model.cap_embedder",
                           NAGCaptionEmbedder(m.get_model_object("diffusion_model.cap_embedder")))
        m.add_object_patch("diffusion_model.rope_embedder",
                           NAGCaptionPositions(m.get_model_object("diffusion_model.rope_embedder")))
        for i in range(len(dm.context_refiner)):
            path = f"diffusion_model.context_refiner.{i}"
            m.add_object_patch(path, NAGCaptionRefiner(m.get_model_object(path)))
    elif text_first and hasattr(m.get_model_object("diffusion_model"), "pe_embedder"):
        m.add_object_patch("diffusion_model.pe_embedder", NAGPositions(m.get_model_object("diffusion_model.pe_embedder")))
    if split_text_in:
        m.add_object_patch("diffusion_model.txt_in", NAGTextSplit(m.get_model_object("diffusion_model.txt_in")))
    return m
