"""How MagCache reaches the host's Wan model: wrappers and block patches on a clone.

Three hooks, all registered under one key on a *clone* of the user's model:

* ``OUTER_SAMPLE`` wrapper: one sampling run. It gives the run a fresh
  :class:`RunHolder` (a copy of the node's settings with empty state) and, in
  ``finally``, finishes the report, logs it once and sends it to the frontend, then
  drops the cached residuals. An interrupted run therefore leaves nothing behind.
* ``APPLY_MODEL`` wrapper: one model call. It maps the call's sigma to a step of
  the run's ``sample_sigmas``, asks the core for a decision per branch present in the
  batch (``transformer_options["cond_or_uncond"]``; cond and uncond are decided
  separately, never ORed) and leaves a per-call :class:`CallPlan` in
  ``transformer_options``. This sits outside the diffusion model, so it stays
  outside a ``TorchCompileModel`` compiled module.
* ``dit``/``double_block`` patches on every block: they run the block stack on the
  rows that must compute and give every skipping row ``x_in + its own cached
  residual`` (the residual of the whole block stack, keyed by the cond's uuid).

The decision rule itself lives in the pure core (``magcache.state.MagCacheRun``).
"""
import logging
import time

import torch

import comfy.patcher_extension as pe

from ..magcache import MagCacheRun, locate_segment
from ._host import find_transformer_options

log = logging.getLogger("atelier")

KEY = "atelier_magcache"
RUN_KEY = "atelier_magcache_run"
CALL_KEY = "atelier_magcache_call"
REPORT_EVENT = "atelier.magcache.report"


class RunHolder:
    """Per-run state: settings are fixed at node time, state is made per run."""

    def __init__(self, curve, config, cache_device, node_id, on_report, subset_rows, schedule_steps=0):
        self.curve = curve
        self.schedule_steps = schedule_steps
        self.first_step = 0
        self.config = config
        self.cache_device = cache_device
        self.node_id = node_id
        self.on_report = on_report
        self.subset_rows = subset_rows
        self.run = None
        self.sigmas = None
        self.residuals = {}
        self.block_time = 0.0
        self.block_evals = 0
        self.skipped_evals = 0
        self.t_start = 0.0
        self.last_report = None

    def fresh(self):
        h = RunHolder(self.curve, self.config, self.cache_device, self.node_id, self.on_report,
                      self.subset_rows, self.schedule_steps)
        h.t_start = time.perf_counter()
        return h

    # --- steps -------------------------------------------------------------
    def start(self, sample_sigmas):
        sig = sample_sigmas.detach().float().cpu()
        self.sigmas = sig
        steps = max(1, len(sig) - 1)
        total = self.schedule_steps
        if total and total != steps:
            # This sampler runs part of a longer schedule (Wan2.2 A14B: one sampler per
            # expert): place its steps on the one curve of the whole schedule.
            self.first_step, last = locate_segment(sig, total_steps=total)
            self.run = MagCacheRun(self.curve, total, self.config, step_range=(self.first_step, last))
        else:
            self.first_step = 0
            self.run = MagCacheRun(self.curve, steps, self.config)

    def step_of(self, sigma):
        """Index of ``sigma`` in the run's schedule, or None for an off-schedule evaluation."""
        s = float(sigma)
        diffs = (self.sigmas[:-1] - s).abs()
        i = int(torch.argmin(diffs))
        tol = 1e-4 * max(1.0, abs(s))
        return i + self.first_step if float(diffs[i]) <= tol else None

    # --- report ------------------------------------------------------------
    def report(self, interrupted=False):
        if self.run is None:
            return None
        rep = dict(self.run.report())
        evals = self.block_evals
        per_eval = self.block_time / evals if evals else 0.0
        saved = per_eval * self.skipped_evals
        wall = time.perf_counter() - self.t_start
        rep.update({
            "node": self.node_id,
            "interrupted": interrupted,
            "block_stack_s_per_eval": per_eval,
            "time_saved_s": saved,
            "wall_s": wall,
            "speedup": (wall + saved) / wall if wall > 0 else 1.0,
        })
        cc, tc = rep.get("computed_calls"), rep.get("total_calls")
        rep["summary"] = (f"MagCache: computed {cc}/{tc} calls, skipped {tc - cc} "
                          f"({'interrupted, ' if interrupted else ''}~{saved:.2f}s saved, "
                          f"~{rep['speedup']:.2f}x)") if cc is not None else "MagCache: no calls"
        return rep


class CallPlan:
    """What the block patches must do for one model call."""

    def __init__(self, holder, compute_rows, skip_rows, store_keys, batch):
        self.holder = holder
        self.compute_rows = compute_rows   # LongTensor of rows that run the blocks
        self.skip_rows = skip_rows         # list of (row slice, uuid key)
        self.store_keys = store_keys       # list of (row slice, uuid key) to store residuals for
        self.batch = batch
        self.x_in = None
        self.t0 = 0.0

    @property
    def all_compute(self):
        return not self.skip_rows

    @property
    def all_skip(self):
        return self.compute_rows.numel() == 0


def outer_sample_wrapper(executor, *args, **kwargs):
    guider = executor.class_obj
    orig = guider.model_options
    guider.model_options = _clone_options(orig)
    to = guider.model_options["transformer_options"]
    holder = to[RUN_KEY].fresh()
    to[RUN_KEY] = holder
    interrupted = True
    try:
        out = executor(*args, **kwargs)
        interrupted = False
        return out
    finally:
        try:
            rep = holder.report(interrupted=interrupted)
            if rep is not None:
                log.info("[Atelier] %s", rep["summary"])
                holder.on_report(rep)
        finally:
            holder.residuals.clear()
            guider.model_options = orig


def _clone_options(model_options):
    import comfy.model_patcher
    return comfy.model_patcher.create_model_options_clone(model_options)


def apply_model_wrapper(executor, *args, **kwargs):
    to = find_transformer_options(args, kwargs)
    holder = to.get(RUN_KEY) if to is not None else None
    if holder is None or "cond_or_uncond" not in to:
        return executor(*args, **kwargs)
    x = args[0] if args else kwargs["x"]
    sigma = (args[1] if len(args) > 1 else kwargs["t"]).flatten()[0]
    if holder.run is None:
        sample_sigmas = to.get("sample_sigmas")
        if sample_sigmas is None:
            return executor(*args, **kwargs)
        holder.start(sample_sigmas)
    step = holder.step_of(sigma)
    cu = list(to["cond_or_uncond"])
    uuids = list(to.get("uuids") or [None] * len(cu))
    n = x.shape[0] // len(cu)
    compute, skip, store = [], [], []
    decided = {}
    for c, (branch, uid) in enumerate(zip(cu, uuids)):
        rows = slice(c * n, (c + 1) * n)
        key = (branch, uid)
        branch_idx = 0 if branch == 0 else 1
        if branch_idx not in decided:
            has_res = _residual_fits(holder.residuals.get(key), n)
            # An evaluation at a sigma that is not a step of the schedule (the midpoint of
            # a 2nd-order sampler) always computes and leaves the accumulators alone.
            decided[branch_idx] = (step is not None
                                   and holder.run.decide(branch_idx, step, has_residual=has_res))
        res = holder.residuals.get(key)
        if decided[branch_idx] and _residual_fits(res, n):
            skip.append((rows, key))
        else:
            compute.extend(range(rows.start, rows.stop))
            store.append((rows, key))
    plan = CallPlan(holder, torch.tensor(compute, dtype=torch.long), skip, store, x.shape[0])
    to[CALL_KEY] = plan
    try:
        return executor(*args, **kwargs)
    finally:
        to.pop(CALL_KEY, None)


def _residual_fits(res, n):
    return res is not None and res.shape[0] == n


def _take(t, rows, batch):
    if torch.is_tensor(t) and t.dim() > 0 and t.shape[0] == batch:
        return t.index_select(0, rows.to(t.device))
    return t


def make_block_patch(index, num_blocks):
    last = index == num_blocks - 1

    def patch(args, extra):
        to = args.get("transformer_options") or {}
        plan = to.get(CALL_KEY)
        original = extra["original_block"]
        if plan is None:
            return original(args)
        holder = plan.holder
        img = args["img"]
        if index == 0:
            plan.x_in = img
            plan.t0 = time.perf_counter()
        if plan.all_skip:
            out = img
        else:
            sub = not plan.all_compute and holder.subset_rows
            if sub:
                rows = plan.compute_rows
                a = dict(args)
                if index == 0:
                    a["img"] = img.index_select(0, rows.to(img.device))
                for k in ("txt", "vec", "pe"):
                    a[k] = _take(args[k], rows, plan.batch)
                out = original(a)["img"]
            else:
                out = original(args)["img"]
        if not last:
            return {"img": out}
        return {"img": _finish(plan, out)}

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


def _finish(plan, out):
    """Last block: store residuals of computed rows, assemble skipped rows."""
    holder = plan.holder
    x_in = plan.x_in
    if plan.all_skip:
        full = x_in.clone()
    elif plan.all_compute or not holder.subset_rows:
        full = out.clone() if plan.skip_rows else out
    else:
        full = x_in.clone()
        full.index_copy_(0, plan.compute_rows.to(full.device), out)
    if not plan.all_skip:
        holder.block_time += time.perf_counter() - plan.t0
        holder.block_evals += len(plan.store_keys)
        dev = holder.cache_device or full.device
        for rows, key in plan.store_keys:
            holder.residuals[key] = (full[rows] - x_in[rows]).detach().to(dev)
    for rows, key in plan.skip_rows:
        full[rows] = x_in[rows] + holder.residuals[key].to(device=x_in.device, dtype=x_in.dtype)
        holder.skipped_evals += 1
    return full


def apply_magcache(model, holder):
    """A clone of ``model`` with MagCache hooked in; the input model is untouched."""
    m = model.clone()
    dm = m.get_model_object("diffusion_model")
    n = len(dm.blocks)
    to = m.model_options.setdefault("transformer_options", {})
    to[RUN_KEY] = holder
    m.add_wrapper_with_key(pe.WrappersMP.OUTER_SAMPLE, KEY, outer_sample_wrapper)
    m.add_wrapper_with_key(pe.WrappersMP.APPLY_MODEL, KEY, apply_model_wrapper)
    for i in range(n):
        m.set_model_patch_replace(make_block_patch(i, n), "dit", "double_block", i)
    return m
