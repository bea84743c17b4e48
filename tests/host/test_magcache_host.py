"""MagCache node on a tiny random Wan2.1 through the host's real KSampler path."""
import contextlib

import pytest
import torch


@contextlib.contextmanager
def count_rows(model):
    """Count rows entering the first block (block-stack evaluations), via a forward hook
    that is removed afterwards (test-only instrumentation)."""
    counter = {"rows": 0, "calls": 0}
    blk = model.get_model_object("diffusion_model").blocks[0]

    def hook(mod, args, kwargs):
        counter["calls"] += 1
        counter["rows"] += args[0].shape[0]

    h = blk.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield counter
    finally:
        h.remove()


def apply(mc, model, **kw):
    args = dict(preset="wan2.1_t2v_1.3B", thresh=0.12, k=2, retention=0.2, start_step=-1,
                end_step=-1, protect_last=0, cache_device="auto", schedule_steps=0, preview_steps=50)
    args.update(kw)
    return tuple(mc.AtelierMagCacheWan.execute(model, **args).result)


def planned(core, preset, steps, **kw):
    cfg = core.MagCacheConfig(**kw)
    return core.plan_schedule(core.get_preset(preset).ratios, steps, cfg)


def test_thresh_zero_is_bit_identical(host, mc, t2v):
    pos, neg = host.text_cond(1), host.text_cond(2)
    ref = host.ksample(t2v, pos, neg, steps=12, cfg=5.0, seed=3)
    m, _ = apply(mc, t2v, thresh=0.0)
    out = host.ksample(m, pos, neg, steps=12, cfg=5.0, seed=3)
    assert torch.equal(ref, out)


@pytest.mark.parametrize("steps,cfg", [(20, 5.0), (30, 5.0), (20, 1.0)])
def test_block_evaluations_follow_schedule(host, mc, core, t2v, steps, cfg):
    sch = planned(core, "wan2.1_t2v_1.3B", steps, thresh=0.12, k=2, retention=0.2)
    m, preview = apply(mc, t2v, preview_steps=steps)
    pos, neg = host.text_cond(1), host.text_cond(2)
    with count_rows(m) as c:
        host.ksample(m, pos, neg, steps=steps, cfg=cfg, seed=0)
    expect = steps - len(sch.cond_skipped) if cfg == 1.0 else sch.computed_calls
    assert (sch.cond_skipped or sch.uncond_skipped), "test setting must skip something"
    assert c["rows"] == expect
    rep = m.model_options["transformer_options"]["atelier_magcache_run"].last_report
    assert rep is not None and not rep["interrupted"]
    skipped_cond = [i for i, x in enumerate(rep["branches"]["cond"]) if x == "S"]
    assert skipped_cond == list(sch.cond_skipped)
    if cfg != 1.0:
        skipped_unc = [i for i, x in enumerate(rep["branches"]["uncond"]) if x == "S"]
        assert skipped_unc == list(sch.uncond_skipped)
    assert f"{len(sch.cond_skipped)}/{steps} cond" in preview


def test_cached_output_close_but_not_identical(host, mc, t2v):
    pos, neg = host.text_cond(1), host.text_cond(2)
    ref = host.ksample(t2v, pos, neg, steps=20, cfg=5.0, seed=3)
    m, _ = apply(mc, t2v)
    out = host.ksample(m, pos, neg, steps=20, cfg=5.0, seed=3)
    assert not torch.equal(ref, out)
    assert torch.isfinite(out).all()


def test_input_model_untouched(host, mc, t2v):
    before = host.state_fingerprint(t2v)
    m, _ = apply(mc, t2v)
    host.ksample(m, host.text_cond(1), host.text_cond(2), steps=8, cfg=5.0)
    assert host.state_fingerprint(t2v) == before
    assert "atelier_magcache_run" not in t2v.model_options.get("transformer_options", {})


def test_runs_with_different_step_counts(host, mc, core, t2v):
    m, _ = apply(mc, t2v)
    pos, neg = host.text_cond(1), host.text_cond(2)
    for steps in (30, 20, 30):
        sch = planned(core, "wan2.1_t2v_1.3B", steps, thresh=0.12, k=2, retention=0.2)
        with count_rows(m) as c:
            host.ksample(m, pos, neg, steps=steps, cfg=5.0)
        assert c["rows"] == sch.computed_calls, steps


def test_interrupted_then_full_run_is_clean(host, mc, interrupt, t2v):
    pos, neg = host.text_cond(1), host.text_cond(2)
    m, _ = apply(mc, t2v)
    clean = host.ksample(m, pos, neg, steps=20, cfg=5.0, seed=9)
    interrupt(m, 9, lambda broken: host.ksample(broken, pos, neg, steps=20, cfg=5.0, seed=9))
    rep = m.model_options["transformer_options"]["atelier_magcache_run"].last_report
    assert rep["interrupted"]
    again = host.ksample(m, pos, neg, steps=20, cfg=5.0, seed=9)
    assert torch.equal(clean, again)


def test_second_order_sampler_runs_and_never_over_skips(host, mc, core, t2v):
    steps = 12
    sch = planned(core, "wan2.1_t2v_1.3B", steps, thresh=0.12, k=2, retention=0.2)
    m, _ = apply(mc, t2v)
    with count_rows(m) as c:
        out = host.ksample(m, host.text_cond(1), host.text_cond(2), steps=steps, cfg=5.0, sampler="heun")
    assert torch.isfinite(out).all()
    # heun evaluates ~2x per step; skipped (branch, step) pairs never exceed the plan
    total_rows = 2 * (2 * steps - 1)
    assert c["rows"] >= total_rows - (len(sch.cond_skipped) + len(sch.uncond_skipped))


def test_separate_cond_uncond_calls(host, mc, core, t2v):
    """Prompts of different lengths run as separate calls ([0] then [1]); decisions stay per branch."""
    steps = 20
    sch = planned(core, "wan2.1_t2v_1.3B", steps, thresh=0.12, k=2, retention=0.2)
    m, _ = apply(mc, t2v)
    with count_rows(m) as c:
        host.ksample(m, host.text_cond(1, length=8), host.text_cond(2, length=5), steps=steps, cfg=5.0)
    assert c["rows"] == sch.computed_calls


def test_i2v_runs(host, mc):
    i2v = host.load_tiny_wan("i2v", seed=2)
    extra = host.i2v_extra()
    m, _ = apply(mc, i2v, preset="auto")
    out = host.ksample(m, host.text_cond(1, extra=extra), host.text_cond(2, extra=extra), steps=10, cfg=5.0)
    assert torch.isfinite(out).all()


def test_preset_of_another_family_is_refused(mc):
    class Fake:
        model = type("M", (), {"model_config": type("C", (), {"unet_config": {"image_model": "flux"}})()})()

        def get_model_object(self, name):
            return torch.nn.Linear(2, 2)

    with pytest.raises(ValueError, match="is a Wan2.1 / Wan2.2 curve but the model is FLUX.1-dev"):
        apply(mc, Fake())


def test_bad_curve_is_refused(mc, t2v):
    with pytest.raises(ValueError):
        apply(mc, t2v, custom_curve="{not json")
    for bad in ("[1.0, -0.9, 0.9, 0.8]", '{"ratios": "x"}', "[1.0, NaN, 0.9, 0.8]", "[]"):
        with pytest.raises(ValueError):
            apply(mc, t2v, custom_curve=bad)


def test_report_node(host, mc, t2v):
    m, _ = apply(mc, t2v)
    lat = host.ksample(m, host.text_cond(1), host.text_cond(2), steps=20, cfg=5.0)
    (text,) = mc.AtelierMagCacheReport.execute(m, {"samples": lat}).result
    assert "computed" in text and "cond" in text and "S" in text


def test_report_node_on_a_later_clone(host, mc, t2v):
    """A node after MagCache clones the model (the host deep-copies model_options): the Report node wired
    to that clone still shows the run's report."""
    m, _ = apply(mc, t2v)
    later = m.clone()
    later.model_options["transformer_options"]["atelier_test_marker"] = 1  # as a later node's patch would
    lat = host.ksample(later, host.text_cond(1), host.text_cond(2), steps=20, cfg=5.0)
    (text,) = mc.AtelierMagCacheReport.execute(later, {"samples": lat}).result
    assert "computed" in text and "cond" in text
    (first,) = mc.AtelierMagCacheReport.execute(m, {"samples": lat}).result
    assert first == text


def run_compare(mc, *a):
    return tuple(mc.AtelierMagCacheCompare.execute(*a).result)


def test_compare_node(mc):
    a = torch.rand(3, 16, 16, 3)
    b = (a + 0.01).clamp(0, 1)
    diff, table, mp, ms = run_compare(mc, a, a.clone(), 4.0)
    assert ms == pytest.approx(1.0) and diff.abs().max() == 0
    diff, table, mp, ms = run_compare(mc, a, b, 4.0)
    assert 30 < mp < 45 and 0.9 < ms < 1.0 and diff.shape == a.shape


def test_calibrate_node_output_feeds_magcache(host, mc, core, t2v, tmp_path, monkeypatch):
    import importlib
    cal = importlib.import_module(mc.__name__.rsplit(".", 1)[0] + ".magcache_calibrate")
    monkeypatch.setattr(cal._host, "output_directory", lambda: str(tmp_path))
    lat, curve_json, path = mc.AtelierMagCacheCalibrate.execute(
        t2v, host.text_cond(1), host.text_cond(2), host.empty_latent(), 0, 10, 5.0, "euler", "simple",
        "tiny_test").result
    assert path.startswith(str(tmp_path)) and path.endswith("tiny_test_00001.json")
    curve = core.parse_curve(open(path).read())
    assert len(curve) == 20  # 10 steps x 2 branches, interleaved
    m, preview = apply(mc, t2v, custom_curve=curve_json, preview_steps=10)
    out = host.ksample(m, host.text_cond(1), host.text_cond(2), steps=10, cfg=5.0)
    assert torch.isfinite(out).all()


def test_two_samplers_split_one_schedule(host, mc, core, t2v):
    """Wan2.2 A14B style: two KSamplerAdvanced over parts of one 20-step schedule, each with
    schedule_steps=20, map their steps onto the one curve."""
    steps, split = 20, 10
    pos, neg = host.text_cond(1), host.text_cond(2)
    m, _ = apply(mc, t2v, schedule_steps=steps)
    cfg = core.MagCacheConfig(thresh=0.12, k=2, retention=0.2)
    curve = core.get_preset("wan2.1_t2v_1.3B").ratios
    holder = m.model_options["transformer_options"]["atelier_magcache_run"]
    with count_rows(m) as c:
        lat = host.ksample(m, pos, neg, steps=steps, cfg=5.0, start_step=0, last_step=split,
                           force_full_denoise=False)
        first_rep = holder.last_report
        host.ksample(m, pos, neg, steps=steps, cfg=5.0, latent={"samples": lat}, start_step=split,
                     last_step=steps, disable_noise=True)
        second_rep = holder.last_report
    a = core.plan_schedule(curve, steps, cfg, step_range=(0, split - 1))
    b = core.plan_schedule(curve, steps, cfg, step_range=(split, steps - 1))
    assert c["rows"] == a.computed_calls + b.computed_calls
    assert first_rep["first_step"] == 0 and second_rep["first_step"] == split
    assert [i for i, x in enumerate(second_rep["branches"]["cond"]) if x == "S"] == \
        [s - split for s in b.cond_skipped]


@pytest.mark.slow
def test_under_torch_compile(host, mc, t2v):
    """The host's TorchCompileModel wraps APPLY_MODEL; the skip decision stays outside it."""
    import importlib
    tc = importlib.import_module("comfy_extras.nodes_torch_compile")
    pos, neg = host.text_cond(1), host.text_cond(2)
    m, _ = apply(mc, t2v)
    eager = host.ksample(m, pos, neg, steps=12, cfg=5.0, seed=4)
    node = tc.TorchCompileModel
    if hasattr(node, "execute"):
        compiled = node.execute(m, "inductor")
        compiled = compiled[0] if isinstance(compiled, tuple) else compiled.args[0]
    else:
        (compiled,) = node().patch(m, "inductor")
    holder = compiled.model_options["transformer_options"]["atelier_magcache_run"]
    out = host.ksample(compiled, pos, neg, steps=12, cfg=5.0, seed=4)
    rep = holder.last_report
    assert "S" in "".join(rep["branches"]["cond"])
    assert torch.allclose(out, eager, atol=1e-3, rtol=1e-3)


# ---------------------------------------------------------------- parity: node == CLI == core
def _parity_ref():
    """The independent official Wan2.2 loop and official split of the core parity test (it imports
    the core as the top-level ``magcache``; its plan_schedule/core_config are used together)."""
    import importlib.util
    import pathlib
    path = pathlib.Path(__file__).resolve().parents[1] / "core" / "test_magcache_parity.py"
    spec = importlib.util.spec_from_file_location("atelier_magcache_parity_ref", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _cli(core, *args):
    import contextlib
    import importlib
    import io
    import json
    main = importlib.import_module(core.__name__ + ".__main__").main
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert main(list(args)) == 0
    return json.loads(out.getvalue())


def _skipped_from_text(text):
    lines = dict(line.split(": ", 1) for line in text.splitlines()[1:3])
    return eval(lines["cond skipped"]), eval(lines["uncond skipped"])  # noqa: S307 (our own list repr)


@pytest.mark.parametrize("steps", (10, 25, 33))
def test_node_preview_equals_cli_and_core_every_preset(mc, core, t2v, steps):
    ref = _parity_ref()
    for preset in core.resolve.__globals__["WAN_PRESETS"]:
        p = core.get_preset(preset)
        d = p.defaults
        _, text = apply(mc, t2v, preset=preset, preview_steps=steps, thresh=d["thresh"], k=d["k"],
                        retention=d["retention"])
        cli = _cli(core, "schedule", "--preset", preset, "--steps", str(steps))
        plan = ref.plan_schedule(p.ratios, steps, ref.core_config(preset, steps))  # the core's own copy
        want = (list(plan.cond_skipped), list(plan.uncond_skipped))
        assert _skipped_from_text(text) == want == (cli["cond_skipped"], cli["uncond_skipped"]), preset
        assert text == cli["text"]


@pytest.mark.parametrize("preset,steps", [("wan2.2_t2v_A14B", 20), ("wan2.2_i2v_A14B", 25),
                                          ("wan2.2_t2v_A14B", 33)])
def test_wan22_two_samplers_follow_official_split_and_loop(host, mc, core, t2v, preset, steps):
    """Wan2.2 A14B in ComfyUI: one MagCache node and KSamplerAdvanced per expert over one schedule,
    split at the official step. The run equals the node's preview, the core plan and the
    independent official loop (the low-noise sampler starts without residuals)."""
    ref = _parity_ref()
    shift, boundary, mode = ref.OFFICIAL[preset]
    split = ref.ref_high_noise_steps(steps, shift, boundary)
    p = core.get_preset(preset)
    d = p.defaults
    high, text = apply(mc, t2v, preset=preset, schedule_steps=steps, preview_steps=steps, **d)
    low, _ = apply(mc, t2v, preset=preset, schedule_steps=steps, preview_steps=steps, **d)
    pos, neg = host.text_cond(1), host.text_cond(2)
    with count_rows(high) as c:  # both clones share the tiny model's block modules
        lat = host.ksample(high, pos, neg, steps=steps, cfg=5.0, start_step=0, last_step=split,
                           force_full_denoise=False)
        host.ksample(low, pos, neg, steps=steps, cfg=5.0, latent={"samples": lat}, start_step=split,
                     last_step=steps, disable_noise=True)
    reps = [m.model_options["transformer_options"]["atelier_magcache_run"].last_report for m in (high, low)]
    assert [r["split_step"] for r in reps] == [split, split] and reps[1]["first_step"] == split
    got = tuple([r["first_step"] + i for r in reps for i, x in enumerate(r["branches"][b]) if x == "S"]
                for b in ("cond", "uncond"))
    cfg = ref.core_config(preset, steps)
    hi = ref.plan_schedule(p.ratios, steps, cfg, step_range=(0, split - 1))
    lo = ref.plan_schedule(p.ratios, steps, cfg, step_range=(split, steps - 1))
    assert got == (list(hi.cond_skipped + lo.cond_skipped), list(hi.uncond_skipped + lo.uncond_skipped))
    assert c["rows"] == hi.computed_calls + lo.computed_calls
    official = ref.ref_wan22(p.ratios, steps, d["thresh"], d["k"], d["retention"], split, mode, shared_cache=False)
    assert official is not None and got == tuple(official)
    assert got == _skipped_from_text(text)   # the node's preview (official split) is what ran
    if mode == "i2v":  # the official I2V rule: calls < int(split + (N - split) * r) never skip (in calls)
        protected = int(2 * split + (2 * steps - 2 * split) * d["retention"])
        assert all(2 * s >= protected for s in got[0]) and all(2 * s + 1 >= protected for s in got[1])


# ---------------------------------------------------------------- web route
def _route_client(mc):
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer
    routes = web.RouteTableDef()
    mc._schedule_route(routes)
    app = web.Application()
    app.add_routes(routes)
    return TestClient(TestServer(app))


def _get(mc, params):
    import asyncio

    async def go():
        client = _route_client(mc)
        await client.start_server()
        try:
            r = await client.get("/atelier/magcache/schedule", params=params)
            return r.status, await r.json()
        finally:
            await client.close()
    return asyncio.run(go())


@pytest.mark.parametrize("param,value", [("steps", "1000000"), ("steps", "abc"), ("k", "-1"),
                                         ("thresh", "inf"), ("schedule_steps", "-1"), ("nope", "1")])
def test_route_bounds_parameters_like_widgets(mc, param, value):
    status, body = _get(mc, {"preset": "wan2.1_t2v_1.3B", "steps": "20", param: value})
    assert status == 400 and body["param"] == param and body["error"].startswith(param), body


def test_route_plans_off_the_event_loop(mc, monkeypatch):
    import threading
    seen = {}
    real = mc.plan_query

    def spy(q):
        seen["thread"] = threading.current_thread()
        return real(q)

    monkeypatch.setattr(mc, "plan_query", spy)
    status, body = _get(mc, {"preset": "wan2.2_i2v_A14B", "steps": "25", "thresh": "0.06", "k": "2",
                             "retention": "0.1"})
    assert status == 200 and seen["thread"] is not threading.main_thread()
    assert body["split_step"] == 10 and min(body["cond_skipped"] + body["uncond_skipped"]) >= 11


def test_route_auto_preview_equals_node_detected_plan(mc, core, t2v):
    out = mc.AtelierMagCacheWan.execute(t2v, preset="auto", thresh=0.12, k=2, retention=0.2, start_step=-1,
                                        end_step=-1, protect_last=0, cache_device="auto", schedule_steps=0,
                                        preview_steps=30)
    info = out.ui["atelier_magcache"][0]
    assert info["preset"] == "wan2.1_t2v_1.3B" and info["dim"] == 128
    q = {"preset": "auto", "steps": "30", "thresh": "0.12", "k": "2", "retention": "0.2",
         **{k: str(info[k]) for k in ("dim", "in_dim", "model_type") if k in info}}
    status, body = _get(mc, q)
    assert status == 200 and body["preset"] == info["preset"] and body["detected"]
    assert body["text"] == out.result[1]
    named = core.plan_schedule(core.get_preset(info["preset"]).ratios, 30,
                               core.MagCacheConfig(thresh=0.12, k=2, retention=0.2))
    assert (body["cond_skipped"], body["uncond_skipped"]) == (list(named.cond_skipped), list(named.uncond_skipped))
    status, body = _get(mc, {"preset": "auto", "steps": "30"})
    assert status == 400 and body["param"] == "dim"


def test_v3_schema_tooltips_and_validation(mc):
    for cls in mc.NODES:
        schema = cls.define_schema()
        assert schema.node_id.startswith("AtelierMagCache")
        assert all(o.tooltip for o in schema.outputs), schema.node_id
    names = [i.id for i in mc.AtelierMagCacheWan.define_schema().inputs]
    assert names == ["model", "preset", "thresh", "k", "retention", "start_step", "end_step", "protect_last",
                     "cache_device", "schedule_steps", "preview_steps", "target_speedup", "custom_curve"]
    v = mc.AtelierMagCacheWan.validate_inputs
    assert v(preset="auto", thresh=0.12, k=2, preview_steps=50, custom_curve="[1.0, 1.0, 0.9, 0.9]") is True
    assert v(custom_curve="{oops").startswith("custom_curve:")
    assert v(custom_curve="[1.0, -1.0]").startswith("custom_curve:")
    assert v(preview_steps=5000).startswith("preview_steps (--steps): 5000 is out of range")
    assert v(target_speedup=-1.0).startswith("target_speedup")
    assert mc.AtelierMagCacheCalibrate.validate_inputs(name="../x").startswith("name:")


def test_route_auto_reads_the_loader_file(mc, core, tmp_path):
    """Before the node has run, the frontend sends the loader's file name; the route reads its header."""
    import folder_paths
    from safetensors.torch import save_file
    from tinywan.build import random_state_dict
    save_file(random_state_dict(variant="i2v", seed=0), str(tmp_path / "tiny_i2v_atelier.safetensors"))
    folder_paths.add_model_folder_path("diffusion_models", str(tmp_path))
    base = {"preset": "auto", "steps": "40", "thresh": "0.24", "k": "6", "retention": "0.2"}
    status, body = _get(mc, dict(base, unet_name="tiny_i2v_atelier.safetensors"))
    assert status == 200 and body["preset"] == "wan2.1_i2v_480p_14B" and body["detected"], body
    named = core.plan_schedule(core.get_preset("wan2.1_i2v_480p_14B").ratios, 40,
                               core.MagCacheConfig(thresh=0.24, k=6, retention=0.2))
    assert (body["cond_skipped"], body["uncond_skipped"]) == (list(named.cond_skipped), list(named.uncond_skipped))
    status, body = _get(mc, dict(base, unet_name="missing.safetensors"))
    assert status == 400 and body["param"] == "unet_name"
