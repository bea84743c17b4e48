"""The MagCache node on every family's tiny model (tests/_families.py) through the host's KSampler path.

Block-stack evaluations are counted with a forward pre-hook on the first block module of the host's model
(test-only instrumentation, independent of the node's patches); the expected counts come from the core's
plan (:func:`magcache.resolve` then ``plan()``), itself checked against the official loops in tests/core.
"""
import contextlib

import pytest
import torch

import _families as _F

# family of the tiny model -> (the core's family, the host's first block list of the stack)
CURVED = {"flux": ("flux", "double_blocks"), "flux_kontext": ("flux_kontext", "double_blocks"),
          "chroma": ("chroma", "double_blocks"), "qwen_image": ("qwen_image", "transformer_blocks"),
          "hunyuan_video": ("hunyuan_video", "double_blocks"),
          "hunyuan_video15": ("hunyuan_video1.5", "double_blocks")}
RECORDED = {"ltxv": "transformer_blocks", "flux2": "double_blocks", "lumina2": "layers", "z_image": "layers",
            "hidream": "double_stream_blocks"}
TWO_BRANCH = ("qwen_image", "chroma", "hunyuan_video15")
STEPS = 10


@pytest.fixture
def outdir(mc, tmp_path, monkeypatch):
    monkeypatch.setattr(mc._host, "output_directory", lambda: str(tmp_path))
    return tmp_path


def apply(mc, m, **kw):
    args = dict(preset="auto", thresh=0.3, k=3, retention=0.2, start_step=-1, end_step=-1, protect_last=0,
                cache_device="auto", schedule_steps=0, preview_steps=STEPS)
    args.update(kw)
    return tuple(mc.AtelierMagCacheWan.execute(m, **args).result)


@contextlib.contextmanager
def count_rows(m, blocks):
    """Rows entering the stack's first block module (block-stack evaluations)."""
    counter = {"rows": 0}
    blk = getattr(m.get_model_object("diffusion_model"), blocks)[0]
    blk = getattr(blk, "_host", blk)   # an object patch left in place by a previous run: its host block

    def hook(mod, args, kwargs):
        x = args[0] if args else kwargs.get("img", kwargs.get("hidden_states"))
        counter["rows"] += x.shape[0]

    h = blk.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield counter
    finally:
        h.remove()


def report(m):
    return m.model_options["transformer_options"]["atelier_magcache_run"].last_report


def skipped(rep, branch):
    return [i for i, x in enumerate(rep["branches"][branch]) if x == "S"]


def run(fam, name, m, cfg, steps=STEPS, seed=1):
    return fam.sample(m, name, steps=steps, cfg=cfg, seed=seed)


@pytest.mark.parametrize("name", list(CURVED))
def test_thresh_zero_is_bit_identical(fam, mc, name):
    m = fam.model(name)
    cfg = 3.0 if name in TWO_BRANCH else 1.0
    ref = run(fam, name, m, cfg)
    mm, _ = apply(mc, m, thresh=0.0)
    assert torch.equal(ref, run(fam, name, mm, cfg))


@pytest.mark.parametrize("name", list(CURVED))
def test_block_evaluations_follow_the_core_plan(fam, mc, core, name):
    m = fam.model(name)
    family, blocks = CURVED[name]
    preset = core.get_family(family).preset_for(STEPS)
    sch = core.resolve(preset, steps=STEPS, thresh=0.3, k=3, retention=0.2).plan()
    assert sch.cond_skipped, "the setting must skip something"
    mm, preview = apply(mc, m)
    # Kontext is told at run start (reference latents in the conditioning): the preview plans FLUX.1-dev's curve
    assert f"preset {'flux' if name == 'flux_kontext' else preset} (auto)" in preview
    two = name in TWO_BRANCH
    with count_rows(mm, blocks) as c:
        out = run(fam, name, mm, 3.0 if two else 1.0)
    assert torch.isfinite(out).all()
    rep = report(mm)
    assert skipped(rep, "cond") == list(sch.cond_skipped)
    if two:
        assert skipped(rep, "uncond") == list(sch.uncond_skipped)
        assert c["rows"] == sch.computed_calls
    else:
        assert c["rows"] == STEPS - len(sch.cond_skipped)


@pytest.mark.parametrize("name", TWO_BRANCH)
def test_per_row_decisions_at_cfg(fam, mc, core, name):
    """cond and uncond batched in one call ([cond, uncond] rows) skip on different steps (a curve whose cond
    column barely changes and whose uncond column does): the blocks run only the rows that compute, and
    each row gets its own branch's residual."""
    m = fam.model(name)
    family, blocks = CURVED[name]
    curve = "[" + ", ".join(["1.0, 1.0"] + ["0.995, 0.9"] * (STEPS - 1)) + "]"
    kw = dict(thresh=0.05, k=2, retention=0.2)
    sch = core.resolve("auto", steps=STEPS, custom_curve=curve, family=family, **kw).plan()
    assert sch.cond_skipped and set(sch.cond_skipped) != set(sch.uncond_skipped)
    mm, _ = apply(mc, m, custom_curve=curve, **kw)
    with count_rows(mm, blocks) as c:
        out = run(fam, name, mm, 3.0)
    assert torch.isfinite(out).all()
    rep = report(mm)
    assert (skipped(rep, "cond"), skipped(rep, "uncond")) == (list(sch.cond_skipped), list(sch.uncond_skipped))
    assert c["rows"] == sch.computed_calls


@pytest.mark.parametrize("name", ("flux", "qwen_image"))
def test_interrupt_leaves_nothing_and_runs_are_independent(fam, mc, interrupt, name):
    m = fam.model(name)
    mm, _ = apply(mc, m)
    clean = run(fam, name, mm, 3.0, seed=5)
    interrupt(mm, 6, lambda broken: run(fam, name, broken, 3.0, seed=5))
    assert report(mm)["interrupted"]
    assert "atelier_magcache_run" not in m.model_options.get("transformer_options", {})
    assert torch.equal(clean, run(fam, name, mm, 3.0, seed=5))
    run(fam, name, mm, 3.0, steps=7, seed=5)   # another step count between
    assert torch.equal(clean, run(fam, name, mm, 3.0, seed=5))


@pytest.mark.slow
def test_torch_compile_model_on_top(fam, mc):
    """The host's TorchCompileModel over a MagCache Flux (backend "eager": dynamo's tracing and guards
    without code generation): the skips still follow the plan and the output matches the eager run."""
    import importlib
    tc = importlib.import_module("comfy_extras.nodes_torch_compile").TorchCompileModel
    m = fam.model("flux")
    mm, _ = apply(mc, m)
    eager = run(fam, "flux", mm, 1.0, steps=6)
    torch._dynamo.reset()
    compiled = tc.execute(mm, "eager") if hasattr(tc, "execute") else tc().patch(mm, "eager")
    compiled = compiled[0] if isinstance(compiled, tuple) else getattr(compiled, "args", [compiled])[0]
    try:
        out = run(fam, "flux", compiled, 1.0, steps=6)
    finally:
        torch._dynamo.reset()
    assert "S" in "".join(report(compiled)["branches"]["cond"])
    assert skipped(report(compiled), "cond") == skipped(report(mm), "cond")
    assert torch.allclose(out, eager, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", list(RECORDED))
def test_first_run_records_the_curve_second_run_uses_it(fam, mc, core, outdir, name):
    m = fam.model(name)
    ref = run(fam, name, m, 3.0)
    mm, preview = apply(mc, m)
    assert "no shipped curve" in preview and "recorded curves of this model: none yet" in preview
    with count_rows(mm, RECORDED[name]) as c:
        first = run(fam, name, mm, 3.0)
    assert torch.equal(first, ref), "the recording run computes every call"
    assert c["rows"] == 2 * STEPS
    files = sorted(p for p in outdir.rglob("*.json"))
    assert len(files) == 1, files
    assert report(mm)["recorded"] == str(files[0])
    curve = core.parse_curve(files[0].read_text(), what="recorded")
    assert curve.branches == 2 and len(curve) == 2 * STEPS
    mm2, preview2 = apply(mc, m)
    assert f"recorded curves of this model: {files[0].stem}" in preview2
    with count_rows(mm2, RECORDED[name]) as c:
        second = run(fam, name, mm2, 3.0)
    rep = report(mm2)
    assert rep["curve_source"].startswith("recorded on ") and "10 steps" in rep["curve_source"]
    assert rep["skipped_calls"] > 0 and c["rows"] == rep["computed_calls"]
    family = {"z_image": "lumina2"}.get(name, name)
    sch = core.resolve("auto", steps=STEPS, custom_curve=curve, family=family, thresh=0.3, k=3, retention=0.2).plan()
    assert (skipped(rep, "cond"), skipped(rep, "uncond")) == (list(sch.cond_skipped), list(sch.uncond_skipped))
    assert not torch.equal(second, ref)
    assert len(list(outdir.rglob("*.json"))) == 1, "the second run writes nothing"


@pytest.mark.parametrize("name,target", [("qwen_image", 2.0), ("flux", 1.8)])
def test_target_speedup_reaches_the_target_at_the_real_step_count(fam, mc, core, name, target):
    """The node previews at 50 steps; the sampler runs 12: thresh / K are chosen for 12 steps."""
    m = fam.model(name)
    steps = 12
    two = name in TWO_BRANCH
    family, blocks = CURVED[name]
    mm, preview = apply(mc, m, preview_steps=50, target_speedup=target)
    assert "target speedup" in preview
    with count_rows(mm, blocks) as c:
        run(fam, name, mm, 3.0 if two else 1.0, steps=steps)
    rep = report(mm)
    want = core.resolve(core.get_family(family).preset_for(steps), steps=steps, thresh=0.3, k=3, retention=0.2,
                        target_speedup=target)
    assert want.target.reached and want.target.schedule.expected_speedup >= target
    sch = want.plan()
    assert skipped(rep, "cond") == list(sch.cond_skipped)
    calls = sch.computed_calls if two else steps - len(sch.cond_skipped)
    assert c["rows"] == calls
    assert (2 * steps if two else steps) / calls >= target


def test_flux_kontext_is_told_by_its_reference_latents(fam, mc, core):
    """One tiny FLUX.1 model (the host sees Kontext as ``flux``), ``auto``: a run whose conditioning carries a
    reference latent (the ReferenceLatent node's ``reference_latents``) uses the flux_kontext curve, one without
    uses flux's; the preview says that it will, the report which it used and why, and the block evaluations
    follow each curve's core plan (thresh 0.1, K 3: the two plans differ at 10 steps)."""
    m = fam.model("flux")
    kw = dict(thresh=0.1, k=3, retention=0.2)
    mm, preview = apply(mc, m, **kw)
    assert "preset flux (auto)" in preview and "reference latents" in preview and "flux_kontext" in preview
    plans = {p: core.resolve(p, steps=STEPS, **kw).plan() for p in ("flux", "flux_kontext")}
    assert plans["flux"].cond_skipped != plans["flux_kontext"].cond_skipped
    for with_ref, preset in ((True, "flux_kontext"), (False, "flux"), (True, "flux_kontext")):
        pos = fam.conditioning("flux_kontext" if with_ref else "flux", seed=2)
        assert ("reference_latents" in pos[0][1]) == with_ref
        with count_rows(mm, "double_blocks") as c:
            out = fam.sample(mm, "flux", steps=STEPS, cfg=1.0, seed=1, positive=pos)
        assert torch.isfinite(out).all()
        rep = report(mm)
        assert rep["preset"] == preset, rep
        why = "carries 1 reference latent (ReferenceLatent)" if with_ref else "carries no reference latent"
        assert rep["curve_source"].startswith(f"preset {preset} (auto: FLUX.1-") and why in rep["curve_source"], rep
        assert skipped(rep, "cond") == list(plans[preset].cond_skipped)
        assert c["rows"] == STEPS - len(plans[preset].cond_skipped)
    # an explicit preset is the user's choice: no switch
    mf, _ = apply(mc, m, preset="flux", **kw)
    fam.sample(mf, "flux", steps=STEPS, cfg=1.0, seed=1, positive=fam.conditioning("flux_kontext", seed=2))
    assert report(mf)["preset"] == "flux"


def test_hidream_per_row_subset_equals_all_rows(fam, mc, core, monkeypatch):
    """HiDream's object-patched blocks at cfg 3 with a curve on which cond and uncond skip on different steps:
    the blocks run only the computing rows (each wrapper cuts its inputs and gives every row back, as the host
    concatenates full-batch text streams between blocks), and the output equals running every row through the
    blocks and discarding the skipped ones (the path a ControlNet call takes)."""
    m = fam.model("hidream")
    curve = "[" + ", ".join(["1.0, 1.0"] + ["0.995, 0.9"] * (STEPS - 1)) + "]"
    kw = dict(thresh=0.05, k=2, retention=0.2, custom_curve=curve)
    sch = core.resolve("auto", steps=STEPS, custom_curve=curve, family="hidream", thresh=0.05, k=2,
                       retention=0.2).plan()
    assert sch.cond_skipped and set(sch.cond_skipped) != set(sch.uncond_skipped)
    mm, preview = apply(mc, m, **kw)
    assert "HiDream" in preview
    patched = sorted(mm.object_patches)
    assert patched == sorted([f"diffusion_model.double_stream_blocks.{i}" for i in range(2)] +
                             [f"diffusion_model.single_stream_blocks.{i}" for i in range(2)])
    with count_rows(mm, "double_stream_blocks") as c:
        subset = run(fam, "hidream", mm, 3.0)
    rep = report(mm)
    assert (skipped(rep, "cond"), skipped(rep, "uncond")) == (list(sch.cond_skipped), list(sch.uncond_skipped))
    assert c["rows"] == sch.computed_calls
    monkeypatch.setattr(_hook(mc), "_rows_fit",
                        lambda plan, inputs: False)
    mm2, _ = apply(mc, m, **kw)
    with count_rows(mm2, "double_stream_blocks") as c2:
        every = run(fam, "hidream", mm2, 3.0)
    assert c2["rows"] > c["rows"]
    assert torch.allclose(subset, every, atol=1e-5, rtol=1e-4)
    assert not torch.equal(subset, run(fam, "hidream", m, 3.0))


def _hook(mc):
    import sys
    return sys.modules[mc.__name__.rsplit(".", 1)[0] + ".magcache_hook"]


@pytest.mark.parametrize("name", ("lumina2", "z_image"))
def test_object_patched_blocks_share_the_host_blocks(fam, mc, name):
    """Lumina2 / Z-Image have no dit patches: the blocks are object patches sharing the host blocks' children
    (same state-dict keys, same tensors); the input model is untouched and runs as before afterwards."""
    m = fam.model(name)
    ref = run(fam, name, m, 3.0)
    mm, _ = apply(mc, m)
    patches = mm.object_patches
    assert sorted(patches) == [f"diffusion_model.layers.{i}" for i in range(len(m.model.diffusion_model.layers))]
    for key, wrapper in patches.items():
        host = m.get_model_object(key)
        assert wrapper is not host and type(wrapper).__name__ == "StackLayer"
        assert {k: v.data_ptr() for k, v in wrapper.state_dict().items()} == \
            {k: v.data_ptr() for k, v in host.state_dict().items()}
    assert not m.object_patches
    run(fam, name, mm, 3.0)
    assert torch.equal(run(fam, name, m, 3.0), ref)


def test_preset_of_another_family_is_refused(fam, mc):
    with pytest.raises(ValueError, match="is a Qwen-Image curve but the model is FLUX"):
        apply(mc, fam.model("flux"), preset="qwen_image")


@pytest.mark.parametrize("name", ("qwen_image", "flux"))
def test_controlnet_call_runs_every_row(fam, mc, core, name):
    """A ControlNet's additions between blocks have every batch row: a call that brings ``control`` runs all
    rows through the blocks even when one branch skips (here zero additions: the output equals the run without
    them, where only computing rows run), and the decisions stay per row. FLUX blocks add to their input in
    place: the stack's input must be kept intact when the blocks run on it."""
    import comfy.patcher_extension as pe
    family, blocks = CURVED[name]
    m = fam.model(name)
    curve = "[" + ", ".join(["1.0, 1.0"] + ["0.995, 0.9"] * (STEPS - 1)) + "]"
    kw = dict(thresh=0.05, k=2, retention=0.2, custom_curve=curve)
    sch = core.resolve("auto", steps=STEPS, custom_curve=curve, family=family, thresh=0.05, k=2,
                       retention=0.2).plan()
    assert set(sch.cond_skipped) != set(sch.uncond_skipped)
    plain, _ = apply(mc, m, **kw)
    ref = run(fam, name, plain, 3.0)
    dm = m.get_model_object("diffusion_model")
    width = getattr(dm, "inner_dim", None) or dm.hidden_size

    def with_control(executor, *a, **k):
        x = a[0]
        zero = torch.zeros(x.shape[0], (x.shape[-2] // 2) * (x.shape[-1] // 2), width)
        a = list(a)
        a[4] = {"input": [zero], "output": []}
        return executor(*a, **k)

    base = m.clone()
    base.add_wrapper_with_key(pe.WrappersMP.APPLY_MODEL, "test_control", with_control)
    mm, _ = apply(mc, base, **kw)
    with count_rows(mm, blocks) as c:
        out = run(fam, name, mm, 3.0)
    assert c["rows"] == 2 * STEPS - len(set(sch.cond_skipped) & set(sch.uncond_skipped)) * 2
    assert torch.allclose(out, ref, atol=1e-4, rtol=1e-4)   # all rows batched vs one row: float order only


def test_calibrate_node_records_the_same_curve_as_a_recording_run(fam, mc, core, outdir):
    """The Calibrate node on a FLUX.2 (v0.3.64: LTX-Video) model at cfg 3 (two branches) gives the curve the
    MagCache node's own recording run stores for the same run, and the MagCache node takes it as custom_curve."""
    name = "flux2" if fam.present("flux2") else "ltxv"
    m = fam.model(name)
    f = fam.FAMILIES[name]
    pos, neg = fam.conditioning(name, seed=2), fam.conditioning(name, seed=3)
    lat, curve_json, path = mc.AtelierMagCacheCalibrate.execute(
        m, pos, neg, fam.latent(name), 1, STEPS, 3.0, "euler", "simple", "tiny_family").result
    assert path.startswith(str(outdir)) and path.endswith("tiny_family_00001.json")
    mm, _ = apply(mc, m)
    fam.sample(mm, name, steps=STEPS, cfg=3.0, seed=1, positive=pos, negative=neg)
    (stored,) = [p for p in outdir.rglob("*.json") if "curves" in p.parts]
    a, b = core.parse_curve(curve_json), core.parse_curve(stored.read_text())
    assert a.branches == b.branches == 2 and list(a) == list(b)
    mm2, preview = apply(mc, m, custom_curve=curve_json)
    assert f"rule: {core.get_family(name).variant.name}" in preview and "custom curve" in preview
    assert torch.isfinite(fam.sample(mm2, name, steps=STEPS, cfg=3.0, seed=1)).all()
    assert f.name == name


def test_recorded_ratios_match_an_independent_measure(fam, mc, core, outdir):
    """The curve a FLUX-layout recording run stores (the stack's input kept intact although FLUX blocks add to
    it in place; the residual on the image part of the joint sequence) equals the magnitude ratios measured
    independently with forward hooks on the host's first double block and last single block."""
    name = "flux2" if fam.present("flux2") else "ltxv"
    m = fam.model(name)
    dm = m.get_model_object("diffusion_model")
    first, last = (dm.double_blocks[0], dm.single_blocks[-1]) if name == "flux2" else \
        (dm.transformer_blocks[0], dm.transformer_blocks[-1])
    seen, residuals = {}, []

    def pre(mod, args, kwargs):
        seen["x"] = (args[0] if args else kwargs["img"]).detach().clone()

    def post(mod, args, kwargs, out):
        x = seen.pop("x")
        residuals.append(out[:, out.shape[1] - x.shape[1]:].detach() - x)

    mm, _ = apply(mc, m)
    hooks = [first.register_forward_pre_hook(pre, with_kwargs=True), last.register_forward_hook(post, with_kwargs=True)]
    try:
        run(fam, name, mm, 1.0)
    finally:
        for h in hooks:
            h.remove()
    (stored,) = list(outdir.rglob("*.json"))
    curve = core.parse_curve(stored.read_text())
    assert curve.branches == 1 and len(residuals) == STEPS
    want = [1.0] + [float((r.norm(dim=-1) / p.norm(dim=-1)).mean()) for p, r in zip(residuals, residuals[1:])]
    assert list(curve) == pytest.approx(want, rel=1e-5)
