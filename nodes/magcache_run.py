"""What the MagCache node decides at the start of each sampling run (``_host.fresh_run_wrapper``'s ``prepare``).

The node resolves its curve and settings for the preview at ``preview_steps``. Some choices need the run:

* ``target_speedup`` > 0: thresh / K for the sampler's real step count (:func:`magcache.resolve` with
  ``target_speedup``, :func:`magcache.target.plan_for_target`);
* ``auto`` for a family with resolution curves (HunyuanVideo 544p): the latent's pixel height;
* ``auto`` on a FLUX.1 model: FLUX.1-Kontext when the run's conditioning carries reference latents
  (:func:`reference_latents`; the host sees a Kontext model as ``image_model`` ``flux``, its weights have
  the FLUX.1-dev layout): the Kontext curve, same rule; the report's ``curve_source`` says which and why;
* a family without a shipped curve (FLUX.2, LTX-Video, Lumina2 / Z-Image, HiDream):
  the curve store (:class:`magcache.store.CurveStore` under ``<output>/atelier_magcache/curves``)
  keyed by :class:`magcache.store.CurveKey` (model fingerprint, latent resolution, steps, sampler).
  A recorded curve is used; without one the run computes every call and records the curve
  (:class:`magcache.calibrate.CalibrationRecorder`), stored when the run ends uninterrupted.

The host does not expose the model file on the ModelPatcher (v0.3.64 and v0.8.0), so the key's
fingerprint is :func:`state_fingerprint` of the diffusion model's weights, said so in the preview.
"""
import dataclasses
import hashlib
from typing import Any, Callable, Dict, Optional

import torch

from ..magcache import CalibrationRecorder, MagCacheSession, detect_family, family_of_preset, resolve
from ..magcache.resolve import curve_given, run_height
from ..magcache.settings import AUTO
from ..magcache.families import Family
from ..magcache.store import CurveKey, CurveStore

STORE_SUBFOLDER = "atelier_magcache/curves"


def state_fingerprint(model, values=64):
    """A hex fingerprint of a ModelPatcher's diffusion model: sha256 over every weight's name, shape and
    dtype and the first ``values`` numbers of each of up to 16 weights (evenly spread). Stands in for the
    model file's :func:`magcache.store.file_fingerprint` (the host does not expose the file)."""
    sd = model.get_model_object("diffusion_model").state_dict()
    h = hashlib.sha256()
    names = sorted(sd)
    for k in names:
        h.update(f"{k}:{tuple(sd[k].shape)}:{sd[k].dtype};".encode())
    picks = names[::max(1, len(names) // 16)][:16]
    for k in picks:
        t = sd[k]
        if t.numel():
            h.update(t.detach().flatten()[:values].float().cpu().numpy().tobytes())
    return h.hexdigest()


def unet_config(model):
    return dict(getattr(getattr(model.model, "model_config", None), "unet_config", None) or {})


def model_family(model, preset, custom_curve):
    """The family MagCache hooks: the preset's, else detected from the host's ``unet_config``
    (ValueError naming ``model`` for a model no family describes)."""
    has_curve = curve_given(custom_curve)
    cfg = unet_config(model)
    detected = detect_family(cfg) if "image_model" in cfg else None
    if preset != AUTO and not has_curve:
        fam = family_of_preset(preset)
        if detected is not None and not set(fam.image_models) & set(detected.image_models):
            raise ValueError(f"preset: {preset!r} is a {fam.title} curve but the model is {detected.title}; "
                             f"pick 'auto' or a {detected.title} preset")
        return fam
    if detected is None:
        raise ValueError(f"model: a {type(model.get_model_object('diffusion_model')).__name__} is not a model "
                         "MagCache knows (no image_model in its config); supported: Wan, FLUX, Chroma, Qwen-Image, "
                         "HunyuanVideo, LTX-Video, Lumina2 / Z-Image, HiDream")
    return detected


def reference_latents(executor):
    """How many reference latents the sampling run's conditioning carries: the host's ``ReferenceLatent``
    node (the FLUX.1-Kontext image input) puts them under ``reference_latents`` in a cond's options, which
    ``CFGGuider`` keeps, as dicts, in ``conds`` (``original_conds`` before the run) and feeds the diffusion
    model as ``ref_latents``. 0 without a guider or conds."""
    guider = getattr(executor, "class_obj", None)
    conds = getattr(guider, "conds", None) or getattr(guider, "original_conds", None) or {}
    n = 0
    for cs in conds.values() if isinstance(conds, dict) else ():
        for c in cs or ():
            refs = c.get("reference_latents") if isinstance(c, dict) else None
            n += len(refs) if isinstance(refs, (list, tuple)) else 0
    return n


def kontext_choice(info, refs):
    """``(model description, why)`` for ``auto`` on a FLUX.1 model with ``refs`` reference latents."""
    if refs:
        return dict(info, kontext=True), (f"auto: FLUX.1-Kontext, the conditioning carries {refs} reference "
                                          f"latent{'s' if refs > 1 else ''} (ReferenceLatent)")
    return dict(info), "auto: FLUX.1-dev, the conditioning carries no reference latent"


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """The node's choices that the run start completes (frozen; one per node execution).

    resolve_kw: :func:`magcache.resolve` arguments of the preview (without ``steps``); family: the
    model's :class:`~magcache.families.Family`; record: no shipped or custom curve (use the store);
    store_root / fingerprint / model_name: the curve store and key parts; auto_kontext: ``auto`` on a
    FLUX.1 model (Kontext is told at run start by the conditioning's reference latents)."""
    resolve_kw: Dict[str, Any]
    family: Family
    target_speedup: float = 0.0
    auto_height: bool = False
    record: bool = False
    store_root: Optional[str] = None
    fingerprint: Optional[str] = None
    model_name: str = ""
    auto_kontext: bool = False

    @property
    def needs_run(self) -> bool:
        return self.target_speedup > 0 or self.auto_height or self.record or self.auto_kontext


def run_facts(args, kwargs):
    """``(steps, resolution, sampler, height)`` of a ``CFGGuider.outer_sample`` call
    ``(noise, latent_image, sampler, sigmas, ...)``: the sampler's steps, the latent's spatial (and
    temporal) size, the sampler's name and the latent's pixel height (8 x its rows)."""
    latent = args[1] if len(args) > 1 else kwargs.get("latent_image")
    sampler = args[2] if len(args) > 2 else kwargs.get("sampler")
    sigmas = args[3] if len(args) > 3 else kwargs.get("sigmas")
    steps = max(1, len(sigmas) - 1)
    res = tuple(int(v) for v in latent.shape[2:])
    fn = getattr(sampler, "sampler_function", None)
    name = getattr(fn, "__name__", type(sampler).__name__).replace("sample_", "") or "sampler"
    return steps, res, name, run_height(res[-2]) if len(res) >= 2 else None


def key_for(spec, steps, res, sampler):
    return CurveKey(spec.fingerprint, res, max(2, steps), sampler)


def make_prepare(spec, cache_device, node_id, on_report):
    """The ``prepare`` of ``fresh_run_wrapper``: the run's session (the node's when nothing depends on the run)."""
    def prepare(session, executor, args, kwargs):
        if not spec.needs_run:
            return session
        steps, res, sampler, height = run_facts(args, kwargs)
        kw = dict(spec.resolve_kw)
        total = kw.get("schedule_steps") or steps
        if spec.record:
            store = CurveStore(spec.store_root)
            found = store.lookup(key_for(spec, total, res, sampler), spec.family.name)
            if found.curve is None:
                if not found.record:   # an unusable file: say so, run uncached
                    raise ValueError(f"custom_curve: {found.reason}")
                guider = getattr(executor, "class_obj", None)
                cfg = float(getattr(guider, "cfg", 1.0) or 1.0)
                return RecordRun(CalibrationRecorder(branches=2 if cfg != 1.0 else 1), store,
                                 key_for(spec, total, res, sampler), spec, found.reason, on_report, node_id)
            kw.update(custom_curve=found.curve, family=spec.family, curve_source=found.reason)
            kw["preset"] = "auto"
        if spec.auto_height:
            kw["height"] = height
        if spec.auto_kontext:
            kw["model"], why = kontext_choice(kw.get("model") or {}, reference_latents(executor))
            r0 = resolve(steps=steps, **dict(kw, target_speedup=0.0))
            kw["curve_source"] = f"preset {r0.name} ({why}; calibrated at {r0.preset.calib_steps} steps)"
        r = resolve(steps=steps, target_speedup=spec.target_speedup, **kw)
        return MagCacheSession(r, session.schedule_steps, cache_device, node_id, on_report)
    return prepare


class RecordPlan:
    """One model call of a recording run, shaped like :class:`magcache.state.CallPlan` for the block
    patches (every row computes): the tokens entering the stack and leaving it go to the recorder."""
    all_compute, all_skip, subset = True, False, False

    def __init__(self, recorder, step, cond_or_uncond, batch):
        self.recorder, self.step, self.cu, self.batch = recorder, step, list(cond_or_uncond), batch
        self.x_in = None
        self.compute_rows = torch.arange(batch)

    def enter(self, x, subset_rows=True):
        self.x_in = x
        return x

    def rows_of(self, t):
        return t

    def leave(self, y):
        self.recorder.record_call(self.step, self.cu, self.x_in, y)
        return y


class RecordRun:
    """A sampling run that computes every call and records the curve; stored when it ends uninterrupted."""

    def __init__(self, recorder, store, key, spec, reason, on_report, node_id=None):
        self.recorder, self.store, self.key, self.spec, self.reason = recorder, store, key, spec, reason
        self.node_id = node_id
        self.on_report: Optional[Callable[[Dict[str, Any]], None]] = on_report
        self.schedule_steps = spec.resolve_kw.get("schedule_steps", 0) if spec is not None else 0
        self.last_report = None

    def fresh(self):
        """The Calibrate node's recording session serves one run (``fresh_run_wrapper`` asks for it)."""
        return self

    def plan_sampler_call(self, sample_sigmas, sigma, cond_or_uncond, uuids, batch):
        if sample_sigmas is None:
            return None
        return RecordPlan(self.recorder, self.recorder.step_of(sample_sigmas, sigma), cond_or_uncond, batch)

    def finish(self, interrupted):
        n = self.recorder.steps
        path, created = None, False
        if not interrupted and n >= 2 and self.store is not None:
            path, created = self.store.save(self.key, self.spec.family.name, self.recorder.to_dict(),
                                            self.spec.model_name)
        if self.store is None:
            what = "recorded the curve (Calibrate)"
        elif created:
            what = f"recorded the {self.spec.family.title} curve to {path}; the next run with this key uses it"
        else:
            what = f"curve not stored ({'interrupted' if interrupted else 'kept the existing file'})"
        calls = n * self.recorder.branches
        rep = {"summary": f"MagCache: computed every call ({n} steps), {what}", "branches": {"cond": ["C"] * n},
               "computed_calls": calls, "skipped_calls": 0, "total_calls": calls,
               "interrupted": interrupted, "recorded": path if created else None, "preset": "record",
               "node": self.node_id, "curve_source": self.reason,
               "first_step": 0, "steps": n}
        self.last_report = rep
        if self.on_report is not None:
            self.on_report(rep)
        return rep
