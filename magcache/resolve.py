"""One resolver: preset, custom curve or ``auto`` + model config + settings + steps -> curve and config.

Used by the node (its preview and its sampling session), the web route
``/atelier/magcache/schedule``, the Calibrate node (its curve output) and ``python -m magcache``,
so the four show and run the same schedule.

* :data:`~magcache.settings.SETTINGS`: every setting's record (bounds, default, help), from which the
  node's widgets, the web route's query bounds and the CLI's flags are built.
* :func:`detect_preset`: the shipped curve that fits a model description (``auto``): a Wan config, or
  the host's ``unet_config`` of another family (:func:`~magcache.families.detect_family`).
* the family (:class:`~magcache.families.Family`) of the curve gives the variant of the rule
  (``config.variant``); ``target_speedup`` > 0 chooses ``thresh`` / ``k``
  (:func:`~magcache.target.plan_for_target`).
* :func:`resolve`: a :class:`Resolved` (name, curve, validated config, whole-schedule steps).
  Wan2.2 A14B presets get the official phase rule with the official split
  (:func:`~magcache.schedule.official_split` from the preset's shift and boundary) unless a
  split is given; at sampling time the samplers give it (:mod:`magcache.session`).
* :func:`query_settings`: the web route's query string -> :func:`resolve` arguments, each
  parameter parsed by its record (:class:`~atelier_settings.SettingError` naming the parameter).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, TypeGuard, Union

from .curve import Curve, CurveLike, parse_curve
from .families import FAMILIES, Family, detect_family, family_of_preset, get_family
from .presets import Preset, get_preset, list_presets
from .schedule import MagCacheConfig, Schedule, StepRange, plan_schedule
from .settings import AUTO, DEFAULT_SETTINGS, SETTINGS, WAN_PRESETS, Setting, SettingError
from .target import TargetError, TargetPlan, plan_for_target

__all__ = ["AUTO", "SETTINGS", "Resolved", "resolve", "detect_preset", "query_settings", "check_settings",
           "plan_query", "WAN_PRESETS", "DEFAULT_SETTINGS", "wan_model_from_shapes", "safetensors_shapes", "wan_model_info", "query_model_from_file", "LOADER_FOLDERS"]

# model config fields the route accepts for ``auto`` (from the node's last run)
MODEL_FIELDS: Dict[str, Tuple[type, int, int]] = {"dim": (int, 1, 1 << 16), "in_dim": (int, 1, 1 << 12)}
MODEL_TYPES: Tuple[str, ...] = ("t2v", "i2v", "vace", "camera", "camera_2.2", "flf2v", "s2v", "humo", "animate")


LATENT_ROWS_PX = 8
"""Pixels per latent row of the families whose curve depends on the height (HunyuanVideo's 544p)."""


def run_height(latent_rows: int) -> int:
    """The pixel height a run is taken to have from its latent's rows (the node at run start; the route from an
    empty-latent node's height, which makes ``height // LATENT_ROWS_PX`` rows)."""
    return LATENT_ROWS_PX * int(latent_rows)


def detect_preset(model: Optional[Mapping[str, Any]], steps: Optional[int] = None,
                  height: Optional[int] = None) -> str:
    """The shipped curve that fits a model description.

    A Wan config (the host's ``unet_config``: ``dim``, ``in_dim``, ``model_type``, with or without
    ``image_model`` "wan2.1"): TI2V-5B (in_dim 48 or dim 3072), VACE 1.3B/14B, I2V 14B (480p curve),
    else T2V 1.3B/14B by ``dim``. Wan2.2 A14B experts have the Wan2.1 14B config, so ``auto`` cannot
    tell them apart: pick their preset by hand. Another family (``image_model``, see
    :func:`~magcache.families.detect_family`): its curve for ``steps`` and pixel ``height``
    (:meth:`~magcache.families.Family.preset_for`); SettingError naming ``model`` when the family has
    no shipped curve (calibrate, or give a custom curve)."""
    if not isinstance(model, Mapping):
        raise SettingError("model", "model", f"model: {model!r} is not a model config; preset 'auto' needs the model's "
                         "dim, in_dim and model_type")
    try:
        fam = detect_family(model)
    except ValueError as exc:
        raise SettingError("model", "model", str(exc)) from None
    if fam.name != "wan":
        name = fam.preset_for(steps, height)
        if name is None:
            raise SettingError("model", "model", f"model: {fam.title} has no shipped MagCache curve; record one "
                               "(a first full run, or the Calibrate node) and give it as custom_curve")
        return name
    kind = model.get("model_type", "t2v")
    dim = int(model.get("dim", 1536))
    big = dim >= 4096
    if model.get("in_dim") == 48 or dim == 3072:
        return "wan2.2_ti2v_5B_t2v"
    if kind == "vace":
        return "wan2.1_vace_14B" if big else "wan2.1_vace_1.3B"
    if kind in ("i2v", "camera", "flf2v"):
        return "wan2.1_i2v_480p_14B"
    return "wan2.1_t2v_14B" if big else "wan2.1_t2v_1.3B"


def wan_model_info(unet_config: Optional[Mapping[str, Any]], model_class: str = "?",
                   has_blocks: bool = True) -> Dict[str, Any]:
    """What ``auto`` needs of a loaded Wan model (``dim``, ``in_dim``, ``model_type``, those present) from its
    config (the host's ``unet_config``); ValueError naming the ``model`` input unless the config says Wan2.1
    (``image_model`` "wan2.1", Wan2.2 included) and the model has its ``blocks`` (``model_class``: the
    diffusion model's class name, for the message)."""
    cfg = unet_config or {}
    if cfg.get("image_model") != "wan2.1" or not has_blocks:
        raise ValueError(
            f"Atelier MagCache (Wan): input 'model' is a {model_class} "
            f"(image_model={cfg.get('image_model')!r}), not a Wan model. Allowed: Wan2.1 and Wan2.2 "
            "diffusion models (T2V, I2V, VACE, TI2V-5B) loaded by the host.")
    return {k: cfg[k] for k in ("dim", "in_dim", "model_type") if k in cfg}


_PREFIXES = ("", "model.diffusion_model.", "diffusion_model.", "model.")


def wan_model_from_shapes(shapes: Mapping[str, Sequence[int]], what: str = "model") -> Dict[str, Union[int, str]]:
    """The model config ``auto`` needs (``dim``, ``in_dim``, ``model_type``) from the tensor
    shapes of a Wan diffusion-model checkpoint (``{key: shape}``), read as the host detects a
    Wan model (``head.modulation`` -> dim, ``patch_embedding.weight`` -> in_dim, VACE / camera /
    I2V keys -> model_type). ValueError naming ``what`` when it is not a Wan model."""
    for p in _PREFIXES:
        if p + "head.modulation" in shapes and p + "patch_embedding.weight" in shapes:
            break
    else:
        raise SettingError(what, what, f"{what}: not a Wan diffusion model (no head.modulation / patch_embedding.weight); "
                         "preset 'auto' needs a Wan2.1/Wan2.2 model, or pick a preset")
    model: Dict[str, Union[int, str]] = {"dim": int(shapes[p + "head.modulation"][-1]), "in_dim": int(shapes[p + "patch_embedding.weight"][1])}
    has = lambda k: p + k in shapes  # noqa: E731
    if has("vace_patch_embedding.weight"):
        model["model_type"] = "vace"
    elif has("control_adapter.conv.weight"):
        model["model_type"] = "camera" if has("img_emb.proj.0.bias") else "camera_2.2"
    elif has("img_emb.proj.0.bias"):
        model["model_type"] = "i2v"
    else:
        model["model_type"] = "t2v"
    return model


def safetensors_shapes(path: str, what: str = "model") -> Dict[str, Tuple[int, ...]]:
    """``{key: shape}`` from a .safetensors file's header (the tensors are not read)."""
    import json
    import struct
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise SettingError(what, what, f"{what}: {path!r} is not a .safetensors file")
        (n,) = struct.unpack("<Q", head)
        if not 2 <= n <= 256 << 20:
            raise SettingError(what, what, f"{what}: {path!r} has no readable .safetensors header")
        try:
            header = json.loads(f.read(n))
        except ValueError:
            raise SettingError(what, what, f"{what}: {path!r} has no readable .safetensors header") from None
    return {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)}


@dataclass(frozen=True)
class Resolved:
    """A curve and a validated config for a whole schedule of ``steps`` steps.

    Attributes:
        name: the preset's name, or ``"custom"``.
        curve: the :class:`~magcache.curve.Curve`.
        config: the :class:`~magcache.schedule.MagCacheConfig` (``split_step`` set for Wan2.2
            A14B presets).
        steps: steps of the whole schedule the plan covers.
        preset: the :class:`~magcache.presets.Preset`, None for a custom curve.
        split_source: where ``config.split_step`` comes from (None without a split).
        detected: True when ``name`` was chosen by ``auto``.
        family: the :class:`~magcache.families.Family` (its variant is ``config.variant``).
        target: the :class:`~magcache.target.TargetPlan` when ``thresh`` / ``k`` were chosen for a
            target speedup (None otherwise).
        curve_source: why this curve (for the preview), e.g. ``"preset flux (auto: FLUX.1-dev)"``.
    """
    name: str
    curve: Curve
    config: MagCacheConfig
    steps: int
    preset: Optional[Preset] = None
    split_source: Optional[str] = None
    detected: bool = False
    family: Optional[Family] = None
    target: Optional[TargetPlan] = None
    curve_source: Optional[str] = None

    def plan(self, step_range: Optional[StepRange] = None, run_branches: Optional[Sequence[int]] = None) -> Schedule:
        """The planned :class:`~magcache.schedule.Schedule` (see :func:`plan_schedule`)."""
        return plan_schedule(self.curve, self.steps, self.config, step_range=step_range, run_branches=run_branches)

    def with_split(self, split_step: Optional[int], source: Optional[str]) -> Resolved:
        """This resolution with another Wan2.2 split (no-op for one-expert curves)."""
        if self.config.split_step is None and not (self.preset is not None and self.preset.split_mode):
            return self
        return replace(self, config=replace(self.config, split_step=split_step).validate(), split_source=source)

    def describe(self, schedule: Optional[Schedule] = None) -> str:
        """The preview text: skipped steps per branch, computed calls, the split used, a
        warning when nothing is skipped."""
        sch = schedule if schedule is not None else self.plan()
        cs, us, n = list(sch.cond_skipped), list(sch.uncond_skipped), self.steps
        head = f"preset {self.name}{' (auto)' if self.detected else ''}, {n} steps"
        lines = [f"{head}: skips {len(cs)}/{n} cond and {len(us)}/{n} uncond steps; computes "
                 f"{sch.computed_calls}/{sch.total_calls} calls (ideal {sch.expected_speedup:.2f}x, "
                 f"accumulated error {sch.error:.4f})",
                 f"cond skipped: {cs}", f"uncond skipped: {us}"]
        fam = self.family.title if self.family is not None else "custom"
        c = self.config
        lines.append(f"rule: {c.variant.name} ({fam}), thresh {c.thresh:g}, K {c.k}, retention {c.retention:g}")
        if self.curve_source:
            lines.append(f"curve: {self.curve_source}")
        if self.target is not None:
            lines.append(self.target.message)
        if self.config.split_step is not None:
            lines.append(f"Wan2.2 {self.config.split_mode} phase rule, low-noise expert from step "
                         f"{self.config.split_step} ({self.split_source})")
        lines += [f"WARNING: {w}" for w in self.warnings(sch)]
        return "\n".join(lines)

    def warnings(self, schedule: Optional[Schedule] = None) -> List[str]:
        """What a user should be warned of before the run (a list of sentences; empty when nothing)."""
        sch = schedule if schedule is not None else self.plan()
        out: List[str] = []
        if not sch.cond_skipped and not sch.uncond_skipped:
            out.append("this setting skips nothing at this step count (few-step distilled models gain nothing "
                       "from MagCache).")
        if self.target is not None and not self.target.reached:
            out.append(self.target.message)
        return out

    def to_dict(self, schedule: Optional[Schedule] = None) -> Dict[str, Any]:
        """JSON-ready: the schedule's fields, the settings and the split used."""
        sch = schedule if schedule is not None else self.plan()
        c = self.config
        d = sch.to_dict()
        d.update({"preset": self.name, "detected": self.detected, "thresh": c.thresh, "k": c.k,
                  "retention": c.retention, "start_step": c.start_step, "end_step": c.end_step,
                  "protect_last": c.protect_last, "split_step": c.split_step,
                  "split_mode": c.split_mode if c.split_step is not None else None,
                  "split_source": self.split_source,
                  "family": self.family.name if self.family is not None else None,
                  "curve_source": self.curve_source,
                  "target": self.target.to_dict() if self.target is not None else None,
                  "text": self.describe(sch)})
        return d


def _opt_step(v: Optional[int]) -> Optional[int]:
    return None if v is None or v == -1 else v


def curve_given(custom_curve: Optional[CurveLike]) -> TypeGuard[CurveLike]:
    """Whether ``custom_curve`` gives a curve: anything but None or blank text (the node's empty widget)."""
    return custom_curve is not None and not (isinstance(custom_curve, str) and not custom_curve.strip())


def records_first_run(family: Optional[Family], preset: str, custom_curve: Optional[CurveLike] = None) -> bool:
    """Whether a run records its curve in its first full run instead of planning from a curve: ``auto`` on
    a family with no shipped curve (:attr:`~magcache.families.Family.calibrate_only`) and no custom curve.
    The node's run and the web route's step strip both ask this."""
    return preset == AUTO and family is not None and family.calibrate_only and not curve_given(custom_curve)


def resolve(preset: str = AUTO, *, steps: int, custom_curve: Optional[CurveLike] = None,
            model: Optional[Mapping[str, Any]] = None, thresh: Optional[float] = None, k: Optional[int] = None,
            retention: Optional[float] = None, start_step: Optional[int] = None, end_step: Optional[int] = None,
            protect_last: int = 0, schedule_steps: int = 0, split_step: Optional[int] = None,
            split_mode: Optional[str] = None, shift: Optional[float] = None,
            family: Union[str, Family, None] = None, target_speedup: float = 0.0,
            height: Optional[int] = None, curve_source: Optional[str] = None) -> Resolved:
    """Curve and config for a run.

    Args:
        preset: a preset name or ``"auto"`` (then ``model`` is required).
        steps: the sampler's steps (the node's ``preview_steps``).
        custom_curve: a curve (JSON text, list or dict, see :func:`parse_curve`); overrides
            ``preset``.
        model: the model config for ``auto`` (``dim``, ``in_dim``, ``model_type``).
        thresh, k, retention: None takes the preset's recommended value (custom curve:
            0.12, 2, 0.2).
        start_step, end_step: -1 or None = unused.
        schedule_steps: > 0: the whole schedule's steps when a sampler runs only part of it;
            the plan then covers ``schedule_steps`` steps instead of ``steps``.
        split_step: Wan2.2 A14B first low-noise step; None = the official split at the plan's
            steps (preset's shift and boundary, or ``shift``).
        split_mode: ``"t2v"``/``"i2v"``; None = the preset's (custom curves: no phase rule
            unless ``split_step`` is given, then ``"t2v"``).
        shift: sample shift for the official split (default: the preset's official one).
        family: a :class:`~magcache.families.Family` or its name: the rule variant for a custom
            curve (default: detected from ``model`` when it names an ``image_model``, else ``"wan"``);
            with ``"auto"`` it picks the family's curve. A preset always runs under its own family.
        target_speedup: > 1: ``thresh`` and ``k`` are chosen for this ideal speedup
            (:func:`~magcache.target.plan_for_target`, the other settings kept); 0 = off.
        height: the run's pixel height (HunyuanVideo 544p curve), for ``auto``.
        curve_source: why this curve, for the preview (e.g. the curve store's reason).

    Raises:
        ValueError naming the bad input.
    """
    total = schedule_steps if schedule_steps else steps
    if isinstance(total, bool) or not isinstance(total, int) or total < 1:
        raise SettingError("steps", "steps", f"steps: {total!r} is not allowed; use an integer >= 1")
    detected = False
    p: Optional[Preset]
    defaults: Mapping[str, Any]
    fam: Optional[Family] = None
    if family is not None:
        try:
            fam = get_family(family)
        except ValueError as exc:
            raise SettingError("family", "family", str(exc)) from None
    if curve_given(custom_curve):
        curve, name, p, defaults = parse_curve(custom_curve, what="custom_curve"), "custom", None, DEFAULT_SETTINGS
        if fam is None:
            fam = detect_family(model) if isinstance(model, Mapping) and "image_model" in model else get_family("wan")
        source = curve_source or "custom curve"
    else:
        if preset == AUTO:
            if fam is not None and fam.name != "wan":
                picked = fam.preset_for(total, height)
                if picked is None:
                    raise SettingError("preset", "preset", f"preset: {fam.title} has no shipped curve; record one "
                                       "(a first full run, or the Calibrate node) and give it as custom_curve")
                name = picked
            else:
                name = detect_preset(model, total, height)
            detected = True
        else:
            name = preset
        p = get_preset(name)
        curve, defaults = p.ratios, p.defaults
        fam = family_of_preset(name)
        source = curve_source or (f"preset {name} ({'auto: ' if detected else ''}{fam.title}, "
                                  f"calibrated at {p.calib_steps} steps)")
    kw: Dict[str, Any] = {"thresh": defaults["thresh"] if thresh is None else thresh,
          "k": defaults["k"] if k is None else k,
          "retention": defaults["retention"] if retention is None else retention,
          "start_step": _opt_step(start_step), "end_step": _opt_step(end_step), "protect_last": protect_last,
          "variant": fam.variant}
    mode = split_mode or (p.split_mode if p is not None else None)
    split: Optional[str] = None
    if split_step is not None:
        kw["split_step"], kw["split_mode"], split = split_step, mode or "t2v", "given"
    elif mode and p is not None and p.split_step is not None:
        sh = p.shift if shift is None else shift
        kw["split_step"], kw["split_mode"] = p.split_for(total, shift=sh), mode
        split = f"official scheduler at {total} steps, shift {sh:g}, boundary {p.boundary:g}"
    config = MagCacheConfig(**kw).validate()
    if config.split_step is not None and config.split_step > total:
        raise SettingError("split_step", SETTINGS["split_step"].label, f"split_step: {config.split_step} is beyond the {total}-step schedule")
    target: Optional[TargetPlan] = None
    if target_speedup:
        SETTINGS["target_speedup"].check(target_speedup)
        try:
            target = plan_for_target(curve, total, target_speedup, config)
        except TargetError as exc:
            raise SettingError("target_speedup", SETTINGS["target_speedup"].label, str(exc)) from None
        config = target.config
    return Resolved(name, curve, config, total, p, split, detected, fam, target, source)


#: The rule's settings the web route takes (``preview_steps`` comes as ``steps``).
QUERY_SETTINGS: Tuple[str, ...] = ("thresh", "k", "retention", "start_step", "end_step", "protect_last", "schedule_steps",
                                   "target_speedup")


def _model_field(name: str, raw: str, lo: int, hi: int) -> int:
    return Setting(name, lo, flag=name, min=lo, max=hi).parse(raw)


def check_settings(**kw: object) -> None:
    """Check node settings by their records in :data:`SETTINGS` (None = linked, unchecked); raise
    :class:`~atelier_settings.SettingError` naming the first bad one. Names not in the table are ignored."""
    for name, v in kw.items():
        if name in SETTINGS and v is not None:
            SETTINGS[name].check(v)


def query_settings(query: Mapping[str, str]) -> Dict[str, Any]:
    """The web route's query parameters -> keyword arguments of :func:`resolve`.

    Accepted: ``preset`` ('auto' or a preset), ``steps`` (as ``preview_steps``), the settings
    :data:`QUERY_SETTINGS`, ``family`` (the family the node reported; for ``auto`` a non-Wan family needs
    nothing else), ``reference_latents`` (how many ReferenceLatent nodes the graph has: with ``auto`` a FLUX
    model is planned as FLUX.1-Kontext, as the run decides), ``height`` (the empty latent's pixel height: with
    ``auto`` HunyuanVideo's 544p curve at 544) and for ``auto`` on Wan the model's ``dim``,
    ``in_dim`` and ``model_type``. Every value
    is parsed by its record, as the node's widget bounds it; a bad or unknown parameter raises
    :class:`~atelier_settings.SettingError` naming it.
    """
    q = dict(query)
    allowed = ({"preset", "steps", "model_type", "preview_steps", "family", "reference_latents", "height"}
               | set(QUERY_SETTINGS) | set(MODEL_FIELDS))
    for name in q:
        if name not in allowed:
            raise SettingError(name, name, f"{name}: unknown parameter; allowed: {', '.join(sorted(allowed))}")
    out = SETTINGS.parse_query(q, ("preset",) + QUERY_SETTINGS)
    # the route's ``steps`` is the node's ``preview_steps`` (the same record, named as the route names it)
    steps = replace(SETTINGS["preview_steps"], name="steps")
    out["steps"] = steps.parse(q["steps"]) if "steps" in q else (
        SETTINGS["preview_steps"].parse(q["preview_steps"]) if "preview_steps" in q else steps.default)
    model: Dict[str, Any] = {}
    for name, (typ, lo, hi) in MODEL_FIELDS.items():
        if name in q:
            model[name] = _model_field(name, q[name], lo, hi)
    if "model_type" in q:
        model["model_type"] = Setting("model_type", MODEL_TYPES[0], flag="model_type",
                                      choices=MODEL_TYPES).parse(q["model_type"])
    fam = Setting("family", "wan", flag="family", choices=tuple(FAMILIES)).parse(q["family"]) if "family" in q else None
    refs = _model_field("reference_latents", q["reference_latents"], 0, 64) if "reference_latents" in q else 0
    if fam is not None and refs and out["preset"] == AUTO:
        # the graph feeds reference latents (ReferenceLatent): the run's rule, detect_family's ``kontext``
        fam = detect_family({"image_model": "flux", "kontext": True}).name if fam == "flux" else fam
    if fam is not None:
        out["family"] = fam
    if "height" in q and out["preset"] == AUTO:
        # the empty-latent node's pixel height: it makes height // 8 latent rows, and the run reads 8 x rows
        out["height"] = run_height(_model_field("height", q["height"], 8, 1 << 14) // LATENT_ROWS_PX)
    if out["preset"] == AUTO and fam in (None, "wan"):   # another family's curve needs only the family
        if "dim" not in model:
            raise SettingError("dim", "dim", "dim: preset 'auto' needs the model's dim (and in_dim, model_type); "
                               "run the workflow once so the node knows its model, or pick a preset")
        out["model"] = model
    return out


def plan_query(query: Mapping[str, str]) -> Dict[str, Any]:
    """The web route's work: its query parameters -> the JSON plan (:meth:`Resolved.to_dict`),
    resolved exactly as the node resolves its widgets; for ``auto`` on a family with no shipped curve,
    ``{"record": True, "family", "title", "steps"}`` (the node's first full run records the curve).
    ValueError names a bad parameter."""
    kw = query_settings(query)
    steps, preset = kw.pop("steps"), kw.pop("preset")
    fam = get_family(kw["family"]) if "family" in kw else None
    if fam is not None and records_first_run(fam, preset):   # as the node: the first full run records it
        return {"record": True, "family": fam.name, "title": fam.title, "steps": steps}
    return resolve(preset, steps=steps, **kw).to_dict()


LOADER_FOLDERS: Dict[str, str] = {"unet_name": "diffusion_models", "ckpt_name": "checkpoints"}


def query_model_from_file(query: Mapping[str, str],
                          find_file: Callable[[str, str], Optional[str]],
                          detect: Optional[Callable[[Dict[str, Tuple[int, ...]]], Optional[Mapping[str, Any]]]] = None,
                          ) -> Dict[str, str]:
    """The web route's query, whose model may be named by the loader's file (``unet_name`` / ``ckpt_name``,
    folders :data:`LOADER_FOLDERS`), as :func:`plan_query` takes it: the file parameters removed and, for
    ``auto`` without ``dim``, the model read from that file's .safetensors header: a Wan model's config
    (:func:`wan_model_from_shapes`), else, when ``detect`` is given, the ``family`` of the model description
    ``detect(shapes)`` returns (the host's ``unet_config`` from the header's shapes, or None;
    :func:`~magcache.families.detect_family`). ``find_file(folder, name)`` gives the file's path (None when
    it is not there). ValueError names the parameter."""
    q = dict(query)
    files = {k: q.pop(k) for k in list(q) if k in LOADER_FOLDERS}
    if files and q.get("preset", AUTO) == AUTO and "dim" not in q and q.get("family", "wan") == "wan":
        param, name = next(iter(files.items()))
        path = find_file(LOADER_FOLDERS[param], name)
        if path is None or not path.endswith(".safetensors"):
            raise SettingError(param, param, f"{param}: {name!r} is not a .safetensors file in models/{LOADER_FOLDERS[param]}; "
                             "run the workflow once so the node reports its model, or pick a preset")
        try:
            shapes = safetensors_shapes(path, param)
        except OSError as exc:
            raise SettingError(param, param, f"{param}: cannot read {name!r} ({exc.strerror})") from None
        try:
            q.update({k: str(v) for k, v in wan_model_from_shapes(shapes, param).items()})
        except SettingError:
            model = detect(shapes) if detect is not None else None
            if not model or model.get("image_model") in (None, "wan2.1"):
                raise
            try:
                q["family"] = detect_family(model).name
            except ValueError as exc:
                raise SettingError(param, param, f"{param}: {name!r}: {exc}") from None
    return q
