"""How MagCache reaches the host's diffusion transformer: wrappers and block patches on a clone.

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
* ``dit`` block patches, one per block of the family's stack (:func:`stack_of`, from
  :attr:`magcache.families.Family.stack`): Wan, Qwen-Image, LTXV, HunyuanVideo-1.5 ``double_block``
  0..n-1; Flux, Kontext, Flux2, Chroma, HunyuanVideo ``double_block`` 0..n-1 then ``single_block``
  0..m-1. The first block enters the plan with the image tokens (``args["img"]``); every block
  runs on the rows that compute (every per-row tensor input cut once per call, inside tuples and
  dataclasses such as Chroma's modulations); the last block leaves it. The tokens entering the stack
  are copied when every row computes, as Flux and LTXV blocks add to their input in place. When the stack ends in a
  single block its output is the joint sequence: ``txt_img`` (Flux, Chroma: ``cat(txt, img)``) or
  ``img_txt`` (HunyuanVideo: ``cat(img, txt)``); the residual is taken on the image part only and
  the text part of skipped rows is zeros (the host slices it off right after the stack). When
  every row computes, a middle block only forwards to the original block; when every row skips,
  no block runs and each block passes its ``img``/``txt`` through. A call with a ControlNet (``control``,
  whose additions between blocks have every row) runs all rows through the blocks and discards the
  skipped rows' output (``ALL_ROWS_KEY``).
* Lumina2 / Z-Image offer no ``dit`` patches in the host: each ``layers[i]`` is object-patched
  (``add_object_patch``) with a :class:`StackLayer` that shares the host block's children (its
  ``state_dict`` keys, weight patches and device moves are the host block's) and hands the block to
  the same :func:`run_stack_block`. HiDream offers no ``dit`` patches either: each
  ``double_stream_blocks[i]`` and ``single_stream_blocks[i]`` is object-patched with a :class:`HiDreamStackBlock`
  (same sharing). Its model concatenates full-batch text streams onto the block outputs between blocks, so
  when only some rows compute each wrapper cuts its inputs to those rows and gives its outputs back as every
  row (zeros for skipped rows; the last block's image part gets the cached residual, its text part is
  sliced off by the host).
"""
import dataclasses

import torch

import comfy.patcher_extension as pe

from ..nag.cross_attention import share_modules
from ._host import BLOCK_ROWS_KEY, call_with, find_transformer_options, fresh_run_wrapper

KEY = "atelier_magcache"
RUN_KEY = "atelier_magcache_run"
ALL_ROWS_KEY = "atelier_magcache_all_rows"   # this call's blocks run every row (a ControlNet adds between blocks)
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
    control = args[4] if len(args) > 4 else kwargs.get("control")
    between = (to.get("patches") or {}).get("double_block")   # Qwen, Lumina2: patches see the full batch
    if plan is None or (control is None and not between):
        return call_with(to, CALL_KEY, plan, executor, *args, **kwargs)
    to[ALL_ROWS_KEY] = True   # a ControlNet (or a between-block patch) sees every row: the blocks run them all
    try:
        return call_with(to, CALL_KEY, plan, executor, *args, **kwargs)
    finally:
        to.pop(ALL_ROWS_KEY, None)


def _cut(plan, v):
    """``v`` (a block input) cut to the computing rows: tensors with the call's batch rows, inside
    tuples, lists, dicts and dataclasses; anything else unchanged."""
    if torch.is_tensor(v):
        return plan.rows_of(v)
    if isinstance(v, tuple) and hasattr(v, "_fields"):
        return type(v)(*[_cut(plan, x) for x in v])
    if isinstance(v, (tuple, list)):
        return type(v)(_cut(plan, x) for x in v)
    if isinstance(v, dict):
        return {k: _cut(plan, x) for k, x in v.items()}
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return dataclasses.replace(v, **{f.name: _cut(plan, getattr(v, f.name))
                                         for f in dataclasses.fields(v) if f.init})
    return v


def _rows_fit(plan, inputs):
    """True when every batched tensor input has the call's batch rows (or 1): the blocks can run on a
    subset of rows. Qwen-Image edit models with ``timestep_zero_index`` double the modulation rows."""
    def ok(v):
        if torch.is_tensor(v):
            return v.dim() == 0 or v.shape[0] in (1, plan.batch)
        if isinstance(v, (tuple, list)):
            return all(ok(x) for x in v)
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return all(ok(getattr(v, f.name)) for f in dataclasses.fields(v))
        return True
    return all(ok(v) for k, v in inputs.items() if k != "transformer_options")


def _full_rows(plan, t):
    """``t`` holding the computing rows (in ``compute_rows`` order) as all ``plan.batch`` rows, zeros elsewhere."""
    full = t.new_zeros((plan.batch,) + tuple(t.shape[1:]))
    return full.index_copy_(0, plan.compute_rows.to(t.device), t)


def _passthrough(inputs):
    return {k: inputs[k] for k in ("img", "txt") if k in inputs}


def run_stack_block(plan, inputs, block, first, last, layout="img", subset_rows=True):
    """One block of the stack under ``plan`` (a :class:`magcache.state.CallPlan`).

    inputs: the host's block arguments (``img`` the block's token stream, ``txt`` the text stream of a
    double block, per-row modulation and rope); block: the host's ``original_block``; layout: how the last
    block's ``img`` holds the image tokens (``img``, ``txt_img``, ``img_txt``). Returns the block's output
    dict with ``img`` (and ``txt`` where the block returns one)."""
    if plan.all_compute and not first and not last:
        return block(inputs)
    if first:
        to = inputs.get("transformer_options") or {}
        img = plan.enter(inputs["img"], subset_rows and not to.get(ALL_ROWS_KEY) and _rows_fit(plan, inputs))
        if img is plan.x_in and not plan.all_skip:   # the blocks run on x_in itself (all rows), and Flux and
            plan.x_in = img.clone()                   # LTXV blocks add to their input in place: keep it intact
    else:
        img = inputs["img"]
    if plan.all_skip:
        out = _passthrough(inputs)
    elif plan.subset:
        cut = {k: _cut(plan, v) for k, v in inputs.items() if k not in ("img", "transformer_options")}
        out = dict(block(dict(inputs, **cut, img=img)))
    else:
        out = dict(block(inputs))
    if not last:
        return out
    if plan.all_skip:
        y = inputs["img"]
    else:
        y = out["img"]
    n = plan.x_in.shape[1]
    if layout == "img" or y.shape[1] == n:
        out["img"] = plan.leave(y)
    elif plan.all_compute:
        plan.leave(y[:, y.shape[1] - n:] if layout == "txt_img" else y[:, :n])
    else:
        m = y.shape[1] - n
        other = y[:, :m] if layout == "txt_img" else y[:, n:]
        img_part = y[:, m:] if layout == "txt_img" else y[:, :n]
        full = plan.leave(img_part)
        if plan.subset:
            other = _full_rows(plan, other)
        out["img"] = torch.cat((other, full) if layout == "txt_img" else (full, other), 1)
    if plan.subset and "txt" in out and torch.is_tensor(out["txt"]):
        out["txt"] = _full_rows(plan, out["txt"])
    return out


def make_block_patch(index, num_blocks, subset_rows=True, layout="img"):
    """The patch of the stack's block ``index`` (of ``num_blocks``, counted over the whole stack);
    ``subset_rows=False`` runs all rows through the blocks (VACE adds hints between blocks) and lets the
    last block discard skipped rows."""
    first, last = index == 0, index == num_blocks - 1

    def patch(args, extra):
        plan = args["transformer_options"].get(CALL_KEY)
        if plan is None:
            return extra["original_block"](args)
        return run_stack_block(plan, args, extra["original_block"], first, last, layout, subset_rows)

    return eager(patch)


class StackLayer(torch.nn.Module):
    """Stands in for block ``index`` of a host model without ``dit`` patches (Lumina2 / Z-Image ``layers[i]``,
    called ``layer(x, x_mask, freqs_cis, adaln_input, transformer_options=...)``): shares the host block's
    children and runs it through :func:`make_block_patch`'s patch (``img`` = x, ``mask``, ``pe``, ``vec``)."""

    def __init__(self, host_module, index, num_blocks, subset_rows=True, layout="img"):
        super().__init__()
        object.__setattr__(self, "_host", host_module)   # outside the module tree; its children are shared
        share_modules(self, host_module)
        object.__setattr__(self, "_patch", make_block_patch(index, num_blocks, subset_rows, layout))
        self.index = index

    def extra_repr(self):
        return f"MagCache over {type(self._host).__name__}, block {self.index}"

    def forward(self, x, x_mask, freqs_cis, adaln_input=None, transformer_options={}, **kwargs):
        host = self._host

        def original(a):
            return {"img": host(a["img"], a["mask"], a["pe"], a["vec"], transformer_options=a["transformer_options"],
                                **kwargs)}

        args = {"img": x, "mask": x_mask, "pe": freqs_cis, "vec": adaln_input,
                "transformer_options": transformer_options}
        return self._patch(args, {"original_block": original})["img"]


class HiDreamStackBlock(torch.nn.Module):
    """Stands in for a HiDream ``double_stream_blocks[i]`` / ``single_stream_blocks[i]`` (``HiDreamImageBlock``,
    called ``block(image_tokens=, image_tokens_masks=, text_tokens=, adaln_input=, rope=, transformer_options=)``;
    a double block returns ``(image_tokens, text_tokens)``, a single block the joint tokens). Shares the host
    block's children and runs it through :func:`make_block_patch`'s patch; between blocks its tensors have
    every batch row (the host concatenates full-batch text streams onto them)."""

    def __init__(self, host_module, index, num_blocks, double, layout="img_txt"):
        super().__init__()
        object.__setattr__(self, "_host", host_module)   # outside the module tree; its children are shared
        share_modules(self, host_module)
        object.__setattr__(self, "_patch", make_block_patch(index, num_blocks, True, layout))
        self.index, self.double, self.first, self.last = index, double, index == 0, index == num_blocks - 1

    def extra_repr(self):
        return f"MagCache over {type(self._host).__name__} ({'double' if self.double else 'single'}), block {self.index}"

    def forward(self, image_tokens, image_tokens_masks=None, text_tokens=None, adaln_input=None, rope=None,
                transformer_options={}):
        host = self._host
        plan = transformer_options.get(CALL_KEY)
        if plan is None:
            return host(image_tokens, image_tokens_masks, text_tokens, adaln_input, rope,
                        transformer_options=transformer_options)

        def original(a):
            r = host(a["img"], a["mask"], a.get("txt"), a["vec"], a["pe"], transformer_options=a["transformer_options"])
            return {"img": r[0], "txt": r[1]} if isinstance(r, tuple) else {"img": r}

        img = image_tokens if self.first or not plan.subset else plan.rows_of(image_tokens)
        args = {"img": img, "mask": image_tokens_masks, "pe": rope, "vec": adaln_input,
                "transformer_options": transformer_options}
        if text_tokens is not None:
            args["txt"] = text_tokens
        out = self._patch(args, {"original_block": original})
        y, txt = out["img"], out.get("txt")
        if plan.subset and not self.last:   # back to every row for the host's concatenations
            y = _full_rows(plan, y)
            txt = _full_rows(plan, txt) if torch.is_tensor(txt) else txt
        if not self.double:
            return y
        return y, (txt if txt is not None else text_tokens)


def stack_of(model, family):
    """The patch keys of ``family``'s block stack in ``model`` (a ModelPatcher), in order (``(block_type, i)``
    for ``dit`` patches, ``("object", name)`` for object patches), and the layout of the last block's output.
    ValueError naming the family when the host offers no way in or the model lacks the family's block lists.
    HiDream's object keys are ``("hidream_double" | "hidream_single", name)``."""
    st = family.stack
    dm = model.get_model_object("diffusion_model")
    if not st.dit_patches:
        if st.modules == ("layers",) and hasattr(dm, "layers"):   # Lumina2 / Z-Image: object patches
            return [("object", f"diffusion_model.layers.{i}") for i in range(len(dm.layers))], st.layout
        if st.modules == ("double_stream_blocks", "single_stream_blocks") and hasattr(dm, "double_stream_blocks"):
            singles = len(getattr(dm, "single_stream_blocks", ()) or ())
            keys = [("hidream_double", f"diffusion_model.double_stream_blocks.{i}")
                    for i in range(len(dm.double_stream_blocks))]
            keys += [("hidream_single", f"diffusion_model.single_stream_blocks.{i}") for i in range(singles)]
            return keys, ("img_txt" if singles else "img")
        raise ValueError(f"model: a {type(dm).__name__} has none of the block lists {', '.join(st.modules)}; it is "
                         f"not a {family.title} model (pick its family's preset or 'auto')")
    lists = [getattr(dm, name, None) for name in st.modules]
    if lists[0] is None:
        raise ValueError(f"model: a {type(dm).__name__} has no {st.modules[0]!r} blocks; it is not a "
                         f"{family.title} model (pick its family's preset or 'auto')")
    skip_double = set(getattr(dm, "skip_mmdit", ()) or ())   # Chroma: blocks it never runs
    skip_single = set(getattr(dm, "skip_dit", ()) or ())
    keys = [("double_block", i) for i in range(len(lists[0])) if i not in skip_double]
    singles = len(lists[1]) if len(lists) > 1 and lists[1] is not None and st.last == "single_block" else 0
    keys += [("single_block", i) for i in range(singles) if i not in skip_single]
    return keys, (st.layout if singles else "img")
def eager(fn):
    """Keep ``fn`` out of torch.compile graphs.

    The host's TorchCompileModel compiles the whole diffusion model and filters out the guards
    on ``transformer_options``, so a traced graph would not notice that the next call's plan
    differs (skip vs compute). The patches therefore run eagerly (a graph break); the rest of
    the model stays compiled.
    """
    disable = getattr(getattr(torch, "compiler", None), "disable", None)
    return disable(fn) if disable is not None else fn


def apply_magcache(model, session, subset_rows=True, family=None, prepare=None):
    """A clone of ``model`` with MagCache hooked in on ``family``'s block stack (default Wan); the input
    model is untouched. ``prepare(session, executor, args, kwargs)``: the run's session chosen at its start
    (``nodes.magcache_run``)."""
    from ..magcache import get_family
    keys, layout = stack_of(model, get_family(family or "wan"))
    m = model.clone()
    to = m.model_options.setdefault("transformer_options", {})
    to[RUN_KEY] = session
    m.add_wrapper_with_key(pe.WrappersMP.OUTER_SAMPLE, KEY, fresh_run_wrapper(RUN_KEY, finish_run, prepare))
    m.add_wrapper_with_key(pe.WrappersMP.APPLY_MODEL, KEY, apply_model_wrapper)
    n = len(keys)
    for i, (kind, j) in enumerate(keys):
        if kind == "object":
            m.add_object_patch(j, StackLayer(m.get_model_object(j), i, n, subset_rows, layout))
        elif kind.startswith("hidream_"):
            m.add_object_patch(j, HiDreamStackBlock(m.get_model_object(j), i, n, kind == "hidream_double", layout))
        else:
            m.set_model_patch_replace(make_block_patch(i, n, subset_rows, layout), "dit", kind, j)
    return m
