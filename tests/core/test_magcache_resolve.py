"""The one resolver (:func:`magcache.resolve`), the web route's parameter bounds and the sampling
session (sigma -> step, segments, residual keys)."""
import pytest
import torch

from magcache import MagCacheSession, SETTINGS, get_preset, resolve
from magcache.resolve import check_settings, plan_query, query_settings


# ---------------------------------------------------------------- resolver
def test_defaults_and_overrides():
    r = resolve("wan2.1_t2v_14B", steps=30)
    assert (r.config.thresh, r.config.k, r.config.retention) == (0.24, 6, 0.2)
    r = resolve("wan2.1_t2v_14B", steps=30, thresh=0.1, k=3, retention=0.3, start_step=-1, end_step=-1)
    assert (r.config.thresh, r.config.k, r.config.retention, r.config.start_step, r.config.end) == \
        (0.1, 3, 0.3, None, None)
    c = resolve("x", steps=10, custom_curve="[1.0, 1.0, 0.99, 0.98]")
    assert c.name == "custom" and c.preset is None and c.config.split_step is None
    assert (c.config.thresh, c.config.k, c.config.retention) == (0.12, 2, 0.2)


def test_schedule_steps_sets_the_plan_length():
    r = resolve("wan2.1_t2v_1.3B", steps=10, schedule_steps=40)
    assert r.steps == 40 and r.plan().total_calls == 80


def test_wan22_split_sources():
    r = resolve("wan2.2_t2v_A14B", steps=33)
    assert r.config.split_step == 22 and r.config.split_mode == "t2v" and "shift 12" in r.split_source
    assert resolve("wan2.2_t2v_A14B", steps=33, shift=5.0).config.split_step != 22
    g = resolve("wan2.2_i2v_A14B", steps=25, split_step=12)
    assert (g.config.split_step, g.config.split_mode, g.split_source) == (12, "i2v", "given")
    assert "low-noise expert from step 12" in g.describe()
    with pytest.raises(ValueError, match="split_step"):
        resolve("wan2.2_i2v_A14B", steps=25, split_step=26)


@pytest.mark.parametrize("kw,frag", [
    (dict(preset="nope"), "preset: 'nope'"),
    (dict(preset="auto"), "model"),
    (dict(thresh=-1.0), "thresh"),
    (dict(k=-1), r"^k \(--k\): "),
    (dict(custom_curve="{oops"), "custom_curve"),
    (dict(steps=0), "steps"),
])
def test_resolve_errors_name_the_input(kw, frag):
    args = dict(preset="wan2.1_t2v_1.3B", steps=20)
    args.update(kw)
    with pytest.raises(ValueError, match=frag):
        resolve(args.pop("preset"), **args)


# ---------------------------------------------------------------- route parameters
def test_query_defaults_are_the_widgets():
    q = query_settings({"preset": "wan2.1_t2v_1.3B"})
    assert q["steps"] == SETTINGS["preview_steps"].default
    for name in ("thresh", "k", "retention", "start_step", "end_step", "protect_last", "schedule_steps"):
        assert q[name] == SETTINGS[name].default


@pytest.mark.parametrize("param,value", [
    ("steps", "1000000"), ("steps", "0"), ("steps", "abc"), ("steps", "2.5"),
    ("thresh", "nan"), ("thresh", "1.5"), ("k", "-1"), ("k", "51"), ("retention", "-0.1"),
    ("start_step", "-2"), ("end_step", "10001"), ("protect_last", "101"), ("schedule_steps", "99999"),
    ("dim", "0"), ("model_type", "flux"), ("bogus", "1"), ("preset", "flux_dev"), ("target_speedup", "-1"),
])
def test_query_out_of_widget_bounds_names_parameter(param, value):
    q = {"preset": "wan2.1_t2v_1.3B", "steps": "20", param: value}
    with pytest.raises(ValueError) as e:
        plan_query(q)
    assert e.value.param == param and str(e.value).startswith(param), str(e.value)   # named by the record


def test_query_at_widget_bounds_plans():
    from magcache.resolve import QUERY_SETTINGS
    # target_speedup is planned against the others (retention 1 protects everything): checked below
    top = {name: str(SETTINGS[name].max) for name in QUERY_SETTINGS if name != "target_speedup"}
    d = plan_query({"preset": "wan2.1_t2v_1.3B", "steps": str(SETTINGS["preview_steps"].max), **top})
    assert d["steps"] == 10000  # schedule_steps at its maximum is the plan's length


def test_query_target_speedup_plans_and_names_an_impossible_target():
    d = plan_query({"preset": "wan2.1_t2v_1.3B", "steps": "50", "target_speedup": "2"})
    assert d["target"]["reached"] and d["expected_speedup"] >= 2.0 and d["thresh"] == d["target"]["thresh"]
    with pytest.raises(ValueError, match=r"^target_speedup: 4.9x is impossible .* at most 1.67x") as e:
        plan_query({"preset": "wan2.1_t2v_1.3B", "steps": "50", "target_speedup": "4.9", "retention": "0.6"})
    assert e.value.param == "target_speedup"


def test_auto_without_model_names_dim():
    with pytest.raises(ValueError, match="^dim: "):
        plan_query({"preset": "auto", "steps": "20"})


def test_check_settings():
    check_settings(preset="auto", thresh=0.0, k=50, preview_steps=1000)
    with pytest.raises(ValueError, match="preview_steps"):
        check_settings(preview_steps=1001)
    with pytest.raises(ValueError, match=r"^k \(--k\): 2.5 is not an integer"):
        check_settings(k=2.5)


# ---------------------------------------------------------------- session
def test_session_sigma_mapping_and_midpoints():
    r = resolve("wan2.1_t2v_1.3B", steps=10)
    s = MagCacheSession(r).fresh()
    sig = torch.linspace(1.0, 0.0, 11)
    s.start(sig)
    assert [s.step_of(float(v)) for v in sig[:-1]] == list(range(10))
    assert s.step_of(0.95) is None and s.step_of(float(sig[3]) * (1 + 5e-5)) == 3
    assert s.step_of(float(sig[1])) == 1  # going back is found too


def test_session_segment_and_wan22_split_from_sigmas():
    r = resolve("wan2.2_t2v_A14B", steps=20, schedule_steps=20)
    sig = [1.0 - i / 20 for i in range(21)]
    hi = MagCacheSession(r, schedule_steps=20).fresh()
    hi.start(sig[:9])
    assert (hi.first_step, hi.split_step) == (0, 8) and "high-noise" in hi.split_source
    lo = MagCacheSession(r, schedule_steps=20).fresh()
    lo.start(sig[8:])
    assert (lo.first_step, lo.split_step) == (8, 8)
    one = MagCacheSession(resolve("wan2.2_t2v_A14B", steps=20)).fresh()
    one.start(sig)
    assert one.split_step == sum(1 for v in sig[:-1] if v >= 0.875) and "boundary" in one.split_source


def test_session_residuals_keyed_by_cond_uuid():
    """Two positive conds (different uuids) of one branch keep their own residuals."""
    r = resolve("wan2.1_t2v_1.3B", steps=10, thresh=0.5, k=3, retention=0.0)
    s = MagCacheSession(r).fresh()
    sig = [1.0 - i / 10 for i in range(11)]
    s.start(sig)
    seen_skip = False
    for i in range(10):
        x = torch.randint(-8, 8, (3, 2, 4)).double()   # integers: every sum below is exact
        plan = s.plan_call(sig[i], [0, 0, 1], ["a", "b", "u"], 3)
        xb = plan.enter(x)
        y = xb + torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)[plan.compute_rows].view(-1, 1, 1) \
            if plan.subset else xb + torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64).view(-1, 1, 1)
        out = plan.leave(xb if plan.all_skip else y)
        # each row gets its own offset back, computed or from its own key's residual
        assert torch.equal(out - x, torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64).view(-1, 1, 1)
                           .expand_as(x))
        seen_skip |= bool(plan.skip)
    assert seen_skip
    rep = s.finish(False)
    assert rep["skipped_calls"] > 0 and not s.run.has_residual(0, "a")


def test_preset_split_for_is_official():
    p = get_preset("wan2.2_i2v_A14B")
    assert p.split_for(25) == 10 and p.split_for(40) == 15 and get_preset("wan2.1_t2v_1.3B").split_for(25) is None


# ---------------------------------------------------------------- auto from a checkpoint's header
def _shapes(variant, prefix="", **kw):
    from tinywan.build import random_state_dict
    return {prefix + k: tuple(v.shape) for k, v in random_state_dict(variant=variant, **kw).items()}


def test_wan_model_from_shapes_and_detection():
    from magcache.resolve import wan_model_from_shapes
    assert wan_model_from_shapes(_shapes("t2v")) == {"dim": 128, "in_dim": 16, "model_type": "t2v"}
    assert wan_model_from_shapes(_shapes("i2v", "model.diffusion_model.")) == \
        {"dim": 128, "in_dim": 36, "model_type": "i2v"}
    big = {"head.modulation": (1, 2, 5120), "patch_embedding.weight": (5120, 16, 1, 2, 2),
           "vace_patch_embedding.weight": (5120, 96, 1, 2, 2)}
    assert resolve("auto", steps=20, model=wan_model_from_shapes(big)).name == "wan2.1_vace_14B"
    with pytest.raises(ValueError, match="^unet_name: not a Wan"):
        wan_model_from_shapes({"x.weight": (2, 2)}, "unet_name")


def test_safetensors_header_only(tmp_path):
    import json
    import struct
    from magcache.resolve import safetensors_shapes
    header = {"head.modulation": {"dtype": "F32", "shape": [1, 2, 1536], "data_offsets": [0, 12288]},
              "__metadata__": {"format": "pt"}}
    raw = json.dumps(header).encode()
    f = tmp_path / "m.safetensors"
    f.write_bytes(struct.pack("<Q", len(raw)) + raw)   # no tensor data: only the header is read
    assert safetensors_shapes(str(f)) == {"head.modulation": (1, 2, 1536)}
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\xff" * 16)
    with pytest.raises(ValueError, match="^unet_name: "):
        safetensors_shapes(str(bad), "unet_name")


def test_session_plans_a_sampler_call_once_started():
    s = MagCacheSession(resolve("wan2.1_t2v_1.3B", steps=4)).fresh()
    assert s.plan_sampler_call(None, 1.0, [1, 0], None, 2) is None and s.run is None   # outside a sampler
    sig = [1.0, 0.75, 0.5, 0.25, 0.0]
    plan = s.plan_sampler_call(sig, 0.75, [1, 0], None, 2)
    assert s.run is not None and plan.step == 1 and plan.all_compute
    assert s.plan_sampler_call(None, 0.5, [1, 0], None, 2).step == 2                    # started: sigmas not needed


def test_report_text():
    from magcache.session import report_text
    assert report_text(None) == "no run yet"
    rep = {"summary": "MagCache: computed 3/4 calls", "branches": {"cond": ["C", "S"], "uncond": ["C", "C"]}}
    assert report_text(rep) == "MagCache: computed 3/4 calls\n  cond: CS\nuncond: CC"
    assert report_text({"summary": "x"}) == "x"


def test_wan_model_info_from_the_host_config():
    from magcache.resolve import wan_model_info
    cfg = {"image_model": "wan2.1", "dim": 5120, "in_dim": 36, "model_type": "i2v", "num_heads": 40}
    assert wan_model_info(cfg, "WanModel") == {"dim": 5120, "in_dim": 36, "model_type": "i2v"}
    assert wan_model_info({"image_model": "wan2.1"}) == {}
    with pytest.raises(ValueError, match=r"input 'model' is a Flux \(image_model='flux'\), not a Wan model"):
        wan_model_info({"image_model": "flux"}, "Flux")
    with pytest.raises(ValueError, match="not a Wan model"):
        wan_model_info(cfg, "WanModel", has_blocks=False)
    with pytest.raises(ValueError, match="image_model=None"):
        wan_model_info(None, "Linear")


def test_query_model_from_the_loader_file(tmp_path):
    from safetensors.torch import save_file
    from tinywan.build import random_state_dict
    from magcache.resolve import query_model_from_file
    save_file(random_state_dict(variant="i2v", seed=0), str(tmp_path / "w.safetensors"))
    asked = []

    def find(folder, name):
        asked.append((folder, name))
        return str(tmp_path / name) if (tmp_path / name).exists() else None

    q = {"preset": "auto", "steps": "20", "unet_name": "w.safetensors"}
    assert query_model_from_file(q, find) == {"preset": "auto", "steps": "20", "dim": "128", "in_dim": "36",
                                              "model_type": "i2v"}
    assert asked == [("diffusion_models", "w.safetensors")] and "unet_name" in q       # the query is not changed
    assert plan_query(query_model_from_file(q, find))["preset"] == "wan2.1_i2v_480p_14B"
    # a named preset or a given dim: the file is not read, only its parameter dropped
    assert query_model_from_file({"preset": "wan2.1_t2v_1.3B", "ckpt_name": "x"}, find) == {"preset": "wan2.1_t2v_1.3B"}
    assert query_model_from_file({"dim": "5120", "ckpt_name": "x"}, find) == {"dim": "5120"}
    assert len(asked) == 2                                                               # the two reads above
    with pytest.raises(ValueError, match="^ckpt_name: 'missing.safetensors' is not a .safetensors file in "
                                         "models/checkpoints"):
        query_model_from_file({"ckpt_name": "missing.safetensors"}, find)


def test_query_reference_latents_plan_flux_as_kontext():
    """``reference_latents`` (the frontend counts the graph's active ReferenceLatent nodes): with ``auto`` a FLUX
    model is planned on the flux_kontext curve, as the run decides (detect_family's ``kontext``); a picked preset
    or another family is not changed; a bad count names the parameter."""
    q = {"preset": "auto", "steps": "50", "family": "flux"}
    kontext = plan_query(dict(q, reference_latents="1"))
    assert (kontext["preset"], kontext["family"]) == ("flux_kontext", "flux_kontext")
    picked = plan_query({"preset": "flux_kontext", "steps": "50"})
    assert kontext["detected"] and kontext["curve_source"].startswith("preset flux_kontext (auto: FLUX.1-Kontext")
    assert {k: v for k, v in kontext.items() if k not in ("detected", "curve_source", "text")} == \
        {k: v for k, v in picked.items() if k not in ("detected", "curve_source", "text")}
    assert kontext["cond_skipped"] != plan_query(q)["cond_skipped"]   # the two curves plan differently here
    assert plan_query(dict(q, reference_latents="0"))["preset"] == "flux"
    assert plan_query(dict(q, preset="flux", reference_latents="1"))["preset"] == "flux"
    assert plan_query({"preset": "auto", "steps": "50", "family": "qwen_image", "reference_latents": "2"})["preset"] \
        == "qwen_image"
    with pytest.raises(ValueError, match="^reference_latents"):
        plan_query(dict(q, reference_latents="many"))


def test_query_family_from_a_file_of_another_family(tmp_path):
    """A loader file that is no Wan model: its family by ``detect`` (the host's detection of the header's shapes,
    here a stand-in that must receive those shapes), and the plan is that family's; without ``detect``, or where it
    recognises nothing or a family MagCache lacks, an error naming the loader's parameter."""
    import torch
    from safetensors.torch import save_file
    from magcache.resolve import query_model_from_file
    save_file({"img_in.proj.weight": torch.zeros(48, 16, 1, 2, 2),
               "txt_in.c_embedder.linear_1.weight": torch.zeros(4, 2)}, str(tmp_path / "h.safetensors"))
    find = lambda folder, name: str(tmp_path / name)   # noqa: E731
    seen = []

    def detect(shapes):
        seen.append(shapes)
        return {"image_model": "hunyuan_video", "vision_in_dim": None} if "img_in.proj.weight" in shapes else None

    q = {"preset": "auto", "steps": "8", "thresh": "0.24", "k": "6", "unet_name": "h.safetensors"}
    got = query_model_from_file(q, find, detect)
    assert got == {"preset": "auto", "steps": "8", "thresh": "0.24", "k": "6", "family": "hunyuan_video"}
    assert seen == [{"img_in.proj.weight": (48, 16, 1, 2, 2), "txt_in.c_embedder.linear_1.weight": (4, 2)}]
    plan = plan_query(got)
    want = resolve("hunyuan_video", steps=8, thresh=0.24, k=6).plan()
    assert plan["preset"] == "hunyuan_video" and plan["detected"]
    assert plan["cond_skipped"] == list(want.cond_skipped) and plan["uncond_skipped"] == []
    assert query_model_from_file(dict(q, family="flux"), find, detect)["family"] == "flux"   # the node's family wins
    assert len(seen) == 1
    for det in (None, lambda shapes: None, lambda shapes: {"image_model": "wan2.1"}):
        with pytest.raises(ValueError, match="^unet_name: not a Wan diffusion model"):
            query_model_from_file(q, find, det)
    with pytest.raises(ValueError, match="^unet_name: 'h.safetensors': model: image_model 'nope' has no MagCache"):
        query_model_from_file(q, find, lambda shapes: {"image_model": "nope"})


def test_warnings_are_a_field_not_text_to_sniff():
    """A schedule that skips nothing carries its warning in ``Resolved.warnings`` (the node logs those);
    the preview text shows the same sentence."""
    few = resolve("wan2.1_t2v_1.3B", steps=2)
    assert few.plan().computed_calls == few.plan().total_calls
    assert len(few.warnings()) == 1 and "skips nothing" in few.warnings()[0]
    assert few.describe().endswith("WARNING: " + few.warnings()[0])
    full = resolve("wan2.1_t2v_1.3B", steps=50)
    assert full.warnings() == [] and "WARNING" not in full.describe()
