"""Each family's rule against an independent re-implementation of its official loop.

The loops below are written from the official scripts (public repository Zehong-Ma/MagCache @df81cb1:
MagCache4FLUX/magcache_flux.py l.12-19, 327-338, 459-463; MagCache4FLUX_Kontext (same rule);
MagCache4HunyuanVideo/magcache_sample_video.py l.20-27, 90-102, 320-322; MagCache4QwenImage/magcache_generate.py
l.14-21, 63-83, 206-220; and Zehong-Ma/ComfyUI-MagCache @47bdd2a nodes.py l.1202-1216 with the per-branch
accumulators of l.521-531 for Chroma and HunyuanVideo-1.5), with numpy only: they call nothing of the engine.
Each keeps the script's own counter (``cnt``), its own interpolation and its own comparisons.
"""
import numpy as np
import pytest
import torch

from magcache import (MagCacheConfig, MagCacheRun, MagCacheSession, get_family, get_preset, list_families,
                      list_presets, plan_schedule, resolve)
from magcache.families import COMFY_NODE_RULE, FAMILIES, FLUX_RULE, detect_family, family_of_preset
from magcache.schedule import WAN_RULE


# ------------------------------------------------------------------ independent official loops
def interp_arange(src, n):
    """nearest_interp of the FLUX / HunyuanVideo / Wan scripts."""
    src = np.asarray(src)
    if n == 1:
        return np.array([src[-1]])
    scale = (len(src) - 1) / (n - 1)
    return src[np.round(np.arange(n) * scale).astype(int)]


def interp_linspace(src, n):
    """nearest_interp of the Qwen-Image script."""
    src = np.asarray(src)
    if len(src) == n:
        return src.copy()
    return src[np.round(np.linspace(0, len(src) - 1, n)).astype(int)]


def official_flux(curve, S, thresh, K, r):
    """MagCache4FLUX: one call per step; returns the skipped steps."""
    ratios = np.asarray(curve, dtype=float)
    if len(ratios) != S:
        ratios = interp_arange(ratios, S)
    acc_ratio, acc_err, acc_steps, skipped = 1.0, 0.0, 0, []
    for cnt in range(S):
        skip = False
        if cnt >= int(r * S + 0.5):
            acc_ratio = acc_ratio * ratios[cnt]
            acc_steps += 1
            acc_err += np.abs(1 - acc_ratio)
            if acc_err <= thresh and acc_steps <= K and np.round(cnt * ((28 - 1) / (S - 1))).astype(int) != 11:
                skip = True
            else:
                acc_ratio, acc_steps, acc_err = 1.0, 0, 0
        if skip:
            skipped.append(cnt)
    return skipped


def official_hunyuan(curve, S, thresh, K, r):
    """MagCache4HunyuanVideo: one call per step, ``<=``, ``int(r*S)``."""
    ratios = np.asarray(curve, dtype=float)
    if len(ratios) != S:
        ratios = interp_arange(ratios, S)
    acc_ratio, acc_err, acc_steps, skipped = 1.0, 0.0, 0, []
    for cnt in range(S):
        if cnt >= int(r * S):
            acc_ratio = acc_ratio * ratios[cnt]
            acc_err += np.abs(1 - acc_ratio)
            acc_steps += 1
            if acc_err <= thresh and acc_steps <= K:
                skipped.append(cnt)
            else:
                acc_ratio, acc_steps, acc_err = 1.0, 0, 0
    return skipped


def official_qwen(curve, S, thresh, K, r):
    """MagCache4QwenImage: cond and uncond are separate calls; ``cnt`` over 2S calls; returns (cond, uncond)."""
    ratios = np.asarray(curve, dtype=float)
    n = 2 * S
    if len(ratios) != n:
        c, u = interp_linspace(ratios[0::2], S), interp_linspace(ratios[1::2], S)
        ratios = np.concatenate([c.reshape(-1, 1), u.reshape(-1, 1)], axis=1).reshape(-1)
    acc_ratio, acc_err, acc_steps = [1.0, 1.0], [0.0, 0.0], [0, 0]
    out = ([], [])
    for cnt in range(n):
        b = cnt % 2
        if cnt >= int(n * r):
            acc_ratio[b] *= ratios[cnt]
            acc_steps[b] += 1
            acc_err[b] += np.abs(1 - acc_ratio[b])
            if acc_err[b] < thresh and acc_steps[b] <= K:
                out[b].append(cnt // 2)
            else:
                acc_err[b], acc_steps[b], acc_ratio[b] = 0.0, 0, 1.0
    return out


def node_rule(curve, S, thresh, K, r):
    """ComfyUI-MagCache node (Chroma, HunyuanVideo-1.5): per step index ``idx``, enabled iff
    ``idx >= int(S*r)`` (start 0, end -1), mapped ``idx`` or ``int(idx*((C-1)/(S-1)))``, ratio
    ``mag_ratios[2*mapped + b]``, ``<``; accumulators per branch (the node's batched OR is not kept)."""
    ratios = np.asarray(curve, dtype=float)
    C = len(ratios) // 2
    acc_ratio, acc_err, acc_steps = [1.0, 1.0], [0.0, 0.0], [0, 0]
    out = ([], [])
    for idx in range(S):
        enabled = idx >= int(S * r) and 0 <= idx <= S - 1
        mapped = idx if S == C else int(idx * ((C - 1) / (S - 1)))
        for b in (0, 1):
            if not enabled:
                continue
            acc_ratio[b] = acc_ratio[b] * ratios[2 * mapped + b]
            acc_steps[b] += 1
            acc_err[b] += np.abs(1 - acc_ratio[b])
            if acc_err[b] < thresh and acc_steps[b] <= K:
                out[b].append(idx)
            else:
                acc_err[b], acc_steps[b], acc_ratio[b] = 0, 0, 1.0
    return out


def lists(sch):
    return list(sch.cond_skipped), list(sch.uncond_skipped)


# ------------------------------------------------------------------ FLUX and Kontext
FLUX_SETTINGS = [(0.24, 5, 0.1), (0.12, 2, 0.2), (0.05, 4, 0.2), (0.4, 3, 0.1), (0.08, 6, 0.3), (0.3, 1, 0.15)]


@pytest.mark.parametrize("preset", ["flux", "flux_kontext"])
@pytest.mark.parametrize("steps", [20, 28, 50, 10, 25, 33, 8])
@pytest.mark.parametrize("thresh,k,ret", FLUX_SETTINGS)
def test_flux_family_equals_official_loop(preset, steps, thresh, k, ret):
    p = get_preset(preset)
    want = official_flux(list(p.ratios), steps, thresh, k, ret)
    res = resolve(preset, steps=steps, thresh=thresh, k=k, retention=ret)
    assert res.config.variant == FLUX_RULE and res.family is not None and res.family.name == preset
    assert lists(res.plan()) == (want, []), (steps, want)


def test_flux_wan_rule_was_wrong_at_20_28_50():
    """The known wrong fact: the flux preset under the Wan rule is not MagCache4FLUX. Over a grid of settings,
    at 20, 28 and 50 steps, the Wan rule's schedule differs from the official loop for most settings; the FLUX
    variant equals it for all of them."""
    p = get_preset("flux")
    for steps in (20, 28, 50):
        differ = 0
        for thresh in (0.05, 0.1, 0.16, 0.24, 0.3):
            for k in (2, 3, 5, 6):
                for ret in (0.1, 0.2, 0.25):
                    want = official_flux(list(p.ratios), steps, thresh, k, ret)
                    wan = plan_schedule(p.ratios, steps, MagCacheConfig(thresh=thresh, k=k, retention=ret,
                                                                        variant=WAN_RULE))
                    flux = plan_schedule(p.ratios, steps, p.config(thresh=thresh, k=k, retention=ret))
                    differ += list(wan.cond_skipped) != want
                    assert list(flux.cond_skipped) == want, (steps, thresh, k, ret)
                    # the step mapping to calibration step 11 never skips
                    assert all(round(s * 27 / (steps - 1)) != 11 for s in flux.cond_skipped)
        assert differ >= 30, (steps, differ)


def test_flux_known_schedule_28_steps():
    """MagCache4FLUX at its calibration length with its defaults (worked by hand from the curve: retention
    int(2.8 + 0.5) = 3 steps, step 11 computes)."""
    p = get_preset("flux")
    sch = plan_schedule(p.ratios, 28, p.config())
    assert 11 not in sch.cond_skipped and min(sch.cond_skipped) >= 3
    assert list(sch.cond_skipped) == official_flux(list(p.ratios), 28, 0.24, 5, 0.1)


def test_flux_thresh_zero_skips_nothing():
    """With ``<=`` a ratio of exactly 1.0 gives an error of 0; thresh 0 still means off."""
    p = get_preset("flux")
    assert 1.0 in list(p.ratios)[1:]
    for steps in (20, 28, 50):
        sch = plan_schedule(p.ratios, steps, p.config(thresh=0.0))
        assert not sch.cond_skipped


# ------------------------------------------------------------------ HunyuanVideo
@pytest.mark.parametrize("preset", ["hunyuan_video", "hunyuan_video_544p"])
@pytest.mark.parametrize("steps", [50, 30, 20, 25, 40, 7])
@pytest.mark.parametrize("thresh,k,ret", [(0.24, 6, 0.2), (0.12, 4, 0.2), (0.05, 2, 0.3), (0.3, 3, 0.25)])
def test_hunyuan_video_equals_official_loop(preset, steps, thresh, k, ret):
    p = get_preset(preset)
    want = official_hunyuan(list(p.ratios), steps, thresh, k, ret)
    res = resolve(preset, steps=steps, thresh=thresh, k=k, retention=ret)
    assert lists(res.plan()) == (want, [])


def test_hunyuan_video_544p_by_height():
    model = {"image_model": "hunyuan_video"}
    assert resolve("auto", steps=50, model=model).name == "hunyuan_video"
    assert resolve("auto", steps=50, model=model, height=544).name == "hunyuan_video_544p"


# ------------------------------------------------------------------ Qwen-Image
@pytest.mark.parametrize("steps", [40, 50, 30, 20, 25, 15, 12])
@pytest.mark.parametrize("thresh,k,ret", [(0.1, 2, 0.2), (0.2, 4, 0.2), (0.3, 6, 0.1), (0.05, 3, 0.25)])
def test_qwen_image_equals_official_loop(steps, thresh, k, ret):
    p = get_preset("qwen_image")
    want = official_qwen(list(p.ratios), steps, thresh, k, ret)
    res = resolve("qwen_image", steps=steps, thresh=thresh, k=k, retention=ret)
    assert lists(res.plan()) == want


# ------------------------------------------------------------------ Chroma and HunyuanVideo-1.5 (node rule)
@pytest.mark.parametrize("preset", ["chroma", "hunyuan_video1.5", "hunyuan_video1.5_40steps"])
@pytest.mark.parametrize("steps", [26, 20, 40, 30, 50, 13])
@pytest.mark.parametrize("thresh,k,ret", [(0.1, 2, 0.25), (0.03, 2, 0.25), (0.2, 4, 0.2), (0.06, 6, 0.1)])
def test_node_rule_families_equal_node_loop(preset, steps, thresh, k, ret):
    p = get_preset(preset)
    want = node_rule(list(p.ratios), steps, thresh, k, ret)
    res = resolve(preset, steps=steps, thresh=thresh, k=k, retention=ret)
    assert res.config.variant == COMFY_NODE_RULE
    assert lists(res.plan()) == want


@pytest.mark.parametrize("steps", [10, 20, 21, 30, 40])
def test_hunyuan_video15_picks_the_40_step_curve_above_20(steps):
    model = {"image_model": "hunyuan_video", "vision_in_dim": 1152}
    res = resolve("auto", steps=steps, model=model, thresh=0.03, k=2, retention=0.25)
    want_name = "hunyuan_video1.5_40steps" if steps > 20 else "hunyuan_video1.5"
    assert res.name == want_name and res.detected
    assert lists(res.plan()) == node_rule(list(get_preset(want_name).ratios), steps, 0.03, 2, 0.25)


def test_node_rule_floor_mapping_differs_from_nearest():
    """The node's floor mapping is not the research nearest mapping: at some step count the schedules differ
    (so the variant's resampling is exercised, not a no-op)."""
    p = get_preset("hunyuan_video1.5_40steps")
    diff = 0
    for steps in range(21, 60):
        cfg = p.config(thresh=0.03, k=2, retention=0.25)
        nearest = plan_schedule(p.ratios, steps, MagCacheConfig(thresh=0.03, k=2, retention=0.25,
                                                                variant=WAN_RULE))
        diff += lists(plan_schedule(p.ratios, steps, cfg)) != lists(nearest)
    assert diff > 0


# ------------------------------------------------------------------ per-row decisions in one batch
def _batched_marks(resolved, steps, order):
    """Drive the engine with cond and uncond rows batched into one call in ``order`` (host: [1, 0]);
    checks that each skipping row gets its own branch's residual. Returns (cond skipped, uncond skipped)."""
    s = MagCacheSession(resolved).fresh()
    sig = [1.0 - i / steps for i in range(steps + 1)]
    s.start(sig)
    last = {}
    for i in range(steps):
        x = torch.randn(2, 3, 4, dtype=torch.float64)
        plan = s.plan_call(sig[i], order, None, 2)
        xb = plan.enter(x)
        # a toy block stack whose residual differs per branch and step
        offs = torch.tensor([[10.0 * (b + 1) + i] for b in order], dtype=torch.float64)
        if plan.subset:
            rows = plan.compute_rows.tolist()
            y = xb + offs[rows].view(-1, 1, 1)
        else:
            y = xb + offs.view(-1, 1, 1)
        full = plan.leave(xb if plan.all_skip else y)
        for row, b in enumerate(order):
            if any(c[0] == b for c in plan.skip):
                assert torch.allclose(full[row] - x[row], last[b]), (i, b)
            else:
                last[b] = (full[row] - x[row]).clone()
    rep = s.report()
    return tuple([j for j, m in enumerate(rep["branches"][n]) if m == "S"] for n in ("cond", "uncond"))


@pytest.mark.parametrize("family,preset,settings,official", [
    ("chroma", "chroma", (0.1, 2, 0.25), node_rule),
    ("hunyuan_video1.5", "hunyuan_video1.5", (0.03, 2, 0.25), node_rule),
    ("qwen_image", "qwen_image", (0.2, 4, 0.25), official_qwen),
])
@pytest.mark.parametrize("steps", [20, 26, 30])
@pytest.mark.parametrize("order", [[1, 0], [0, 1]])
def test_per_row_decisions_in_one_batch(family, preset, settings, official, steps, order):
    thresh, k, ret = settings
    res = resolve(preset, steps=steps, thresh=thresh, k=k, retention=ret)
    want = official(list(get_preset(preset).ratios), steps, thresh, k, ret)
    assert _batched_marks(res, steps, order) == tuple(want)


def test_per_row_decisions_diverge_somewhere():
    """Qwen counts calls: an odd retention count protects the cond call of a step but not its uncond call,
    so the branches decide differently in one batch (the test above then checks rows, not one OR)."""
    p = get_preset("qwen_image")
    cond, unc = official_qwen(list(p.ratios), 30, 0.2, 4, 0.25)   # int(60 * 0.25) = 15 calls
    assert cond != unc
    res = resolve("qwen_image", steps=30, thresh=0.2, k=4, retention=0.25)
    assert _batched_marks(res, 30, [1, 0]) == (cond, unc)


# ------------------------------------------------------------------ descriptions and detection
def test_every_preset_has_one_family_and_every_family_curve_exists():
    for name in list_presets():
        fam = family_of_preset(name)
        assert get_preset(name).family == fam.name
    for f in FAMILIES.values():
        for name in f.presets:
            assert name in list_presets()
        d = f.to_dict()
        assert d["rule"]["name"] == f.variant.name and d["stack"]["first"][0]


@pytest.mark.parametrize("model,family", [
    ({"image_model": "wan2.1", "dim": 1536}, "wan"), ({"dim": 5120, "model_type": "i2v"}, "wan"),
    ({"image_model": "flux"}, "flux"), ({"image_model": "flux", "kontext": True}, "flux_kontext"),
    ({"image_model": "chroma"}, "chroma"), ({"image_model": "qwen_image"}, "qwen_image"),
    ({"image_model": "hunyuan_video"}, "hunyuan_video"),
    ({"image_model": "hunyuan_video", "vision_in_dim": 1152}, "hunyuan_video1.5"),
    ({"image_model": "flux2"}, "flux2"), ({"image_model": "hidream"}, "hidream"),
    ({"image_model": "lumina2", "dim": 3840}, "lumina2"), ({"image_model": "ltxv"}, "ltxv"),
])
def test_detect_family(model, family):
    assert detect_family(model).name == family


def test_detect_unknown_family_names_model():
    with pytest.raises(ValueError, match="^model: image_model 'sd3' has no MagCache family"):
        detect_family({"image_model": "sd3"})


@pytest.mark.parametrize("name", ["flux2", "hidream", "lumina2", "ltxv"])
def test_calibrate_only_families(name):
    f = get_family(name)
    assert f.calibrate_only and f.preset_for(30) is None
    with pytest.raises(ValueError, match="no shipped"):
        resolve("auto", steps=30, model={"image_model": f.image_models[0]})
    # a recorded curve runs under the family's rule
    curve = [1.0, 1.0] + [0.99, 0.99] * 29
    res = resolve("auto", steps=30, custom_curve=curve, family=name)
    assert res.family is f and res.config.variant == f.variant and res.plan().computed_calls < 60


def test_family_names_listed():
    assert set(list_families()) >= {"wan", "flux", "flux_kontext", "chroma", "qwen_image", "hunyuan_video",
                                    "hunyuan_video1.5", "flux2", "hidream", "lumina2", "ltxv"}


def test_engine_run_matches_plan_for_every_family_preset():
    """The sampling-time engine (MagCacheRun) applies the same variant as the plan."""
    for name in list_presets():
        p = get_preset(name)
        for steps in (12, p.calib_steps):
            cfg = p.config(steps)
            sch = plan_schedule(p.ratios, steps, cfg, run_branches=(0, 1))
            run = MagCacheRun(p.ratios, steps, cfg)
            got = ([], [])
            for st in range(steps):
                for b in (0, 1):
                    if run.decide(b, st, has_residual=run._rule.has_residual[b]):
                        got[b].append(st)
            assert got == lists(sch), (name, steps)


# ------------------------------------------------------------------ ties: `<` against `<=`
def _tie_thresholds(values, n=12):
    """Thresholds equal to an error the rule meets exactly (``|1 - ratio|`` after one step), where ``<``
    and ``<=`` decide differently."""
    ties = sorted({abs(1.0 - float(v)) for v in values if v != 1.0})
    return ties[:: max(1, len(ties) // n)][:n]


@pytest.mark.parametrize("preset,official,steps", [
    ("flux", official_flux, 28), ("flux", official_flux, 20), ("flux_kontext", official_flux, 20),
    ("flux_kontext", official_flux, 28), ("hunyuan_video", official_hunyuan, 50), ("hunyuan_video", official_hunyuan, 30),
])
def test_single_branch_ties_equal_official(preset, official, steps):
    p = get_preset(preset)
    for thresh in _tie_thresholds(list(p.ratios)):
        for k in (1, 2, 4):
            want = official(list(p.ratios), steps, thresh, k, 0.2)
            assert lists(resolve(preset, steps=steps, thresh=thresh, k=k, retention=0.2).plan()) == (want, []), thresh


@pytest.mark.parametrize("preset,official,steps", [
    ("qwen_image", official_qwen, 40), ("qwen_image", official_qwen, 30), ("chroma", node_rule, 26),
    ("chroma", node_rule, 30), ("hunyuan_video1.5", node_rule, 20), ("hunyuan_video1.5_40steps", node_rule, 40),
])
def test_two_branch_ties_equal_official(preset, official, steps):
    p = get_preset(preset)
    for thresh in _tie_thresholds(list(p.ratios)):
        for k in (1, 2, 4):
            want = official(list(p.ratios), steps, thresh, k, 0.25)
            assert lists(resolve(preset, steps=steps, thresh=thresh, k=k, retention=0.25).plan()) == want, thresh


def test_records_first_run_is_one_rule_for_node_and_route():
    """``records_first_run``: ``auto`` on a family with no shipped curve records, a custom curve or a preset
    never does; the route's ``plan_query`` answers ``record`` exactly when the rule says so, for every family."""
    from magcache.families import FAMILIES
    from magcache.resolve import plan_query, records_first_run
    curve = "[1.0, 0.99, 0.98, 0.97, 0.96, 0.95, 0.94, 0.93]"
    for fam in FAMILIES.values():
        assert records_first_run(fam, "auto") == (not fam.presets), fam.name
        assert not records_first_run(fam, "auto", curve) and not records_first_run(fam, "auto", [1.0] * 8)
        assert records_first_run(fam, "auto", "  ") == records_first_run(fam, "auto")   # an empty widget
        for preset in fam.presets:
            assert not records_first_run(fam, preset)
        if fam.name == "wan":
            continue   # auto on Wan needs the model's dim: tested by the route tests
        got = plan_query({"preset": "auto", "steps": "8", "family": fam.name})
        assert ("record" in got) == records_first_run(fam, "auto"), fam.name
    assert not records_first_run(None, "auto")
