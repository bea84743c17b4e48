"""Parity of the MagCache paths: the core plan, the resolver (node preview), the web route's
planning, the CLI and the sampling engine the node runs give one schedule; Wan2.2 A14B
schedules equal an independent re-implementation of the official MagCache4Wan2.2 loop.

The independent reference below is written from the official script's structure (one class-level
call counter over 2*S calls, its own ``get_timesteps`` for the split, numpy interpolation) and
shares no code with ``magcache``.
"""
import contextlib
import io
import itertools
import json

import numpy as np
import pytest
import torch

from magcache import (MagCacheConfig, MagCacheSession, get_preset, list_presets, plan_schedule, resolve,
                      official_split)
from magcache.__main__ import main as cli_main
from magcache.resolve import WAN_PRESETS, detect_preset, plan_query

OFFICIAL = {  # preset -> (shift, boundary, mode) of the official Wan2.2 configs / MagCache4Wan2.2 script
    "wan2.2_t2v_A14B": (12.0, 0.875, "t2v"),
    "wan2.2_i2v_A14B": (5.0, 0.900, "i2v"),
}


# ---------------------------------------------------------------- independent official reference
def ref_high_noise_steps(steps, shift, boundary):
    """The official get_timesteps + ``(timesteps >= 1000 * boundary).sum()``."""
    sig = np.linspace(1.0, 0.01, steps + 1)[:-1]
    sig = shift * sig / (1 + (shift - 1) * sig)
    sig = np.concatenate([sig, [0.0]]).astype(np.float32)
    ts = torch.from_numpy(sig[:-1] * 1000).to(dtype=torch.int64)
    return int((ts >= 1000 * boundary).sum().item())


def ref_interp(arr, n):
    """The official nearest_interp (round half to even by numpy)."""
    arr = np.asarray(arr)
    if n == 1:
        return arr[-1:]
    return arr[np.round(np.arange(n) * ((len(arr) - 1) / (n - 1))).astype(int)]


def ref_wan22(ratios, steps, thresh, K, r, high_noise_steps, mode, shared_cache=True):
    """Skipped steps ([cond], [uncond]) of the official Wan2.2 loop, or None where the official
    script would reuse a residual it never computed (it has no guard there) or, with
    ``shared_cache=False`` (two models in two samplers, as in ComfyUI), a residual that the
    other expert computed (the official script keeps one class-level cache for both)."""
    mag = np.asarray(ratios, dtype=np.float64)
    num_steps, split = 2 * steps, 2 * high_noise_steps
    if len(mag) != num_steps:  # the official script interpolates only then
        con, ucon = ref_interp(mag[0::2], steps), ref_interp(mag[1::2], steps)
        mag = np.stack([con, ucon], axis=1).reshape(-1)
    acc_ratio, acc_err, acc_steps, cache = [1.0, 1.0], [0.0, 0.0], [0, 0], [None, None]
    skipped = ([], [])
    for cnt in range(num_steps):
        b = cnt % 2
        use = True
        if mode == "i2v":
            if cnt < int(split + (num_steps - split) * r):
                use = False
        elif cnt < int(split * r) or ((num_steps - split) * r + split >= cnt >= split):
            use = False
        skip = False
        if use:
            acc_ratio[b] *= mag[cnt]
            acc_steps[b] += 1
            acc_err[b] += abs(1 - acc_ratio[b])
            if acc_err[b] < thresh and acc_steps[b] <= K:
                skip = True
            else:
                acc_ratio[b], acc_err[b], acc_steps[b] = 1.0, 0.0, 0
        if skip:
            if cache[b] is None or (not shared_cache and cache[b] < split <= cnt):
                return None
            skipped[b].append(cnt // 2)
        else:
            cache[b] = cnt
    return skipped


# ---------------------------------------------------------------- helpers: the paths
def cli_json(*args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli_main(list(args))
    assert rc == 0, err.getvalue()
    return json.loads(out.getvalue()), err.getvalue()


def core_config(preset, steps, **over):
    """The core rule's config written out by hand: the preset's defaults and, for Wan2.2 A14B,
    the official split and mode."""
    from magcache.families import COMFY_NODE_RULE, FLUX_RULE, HUNYUAN_RULE, WAN_RULE
    p = get_preset(preset)
    kw = dict(p.defaults)
    kw["variant"] = {"flux": FLUX_RULE, "flux_kontext": FLUX_RULE, "hunyuan_video": HUNYUAN_RULE,
                     "hunyuan_video_544p": HUNYUAN_RULE, "chroma": COMFY_NODE_RULE, "hunyuan_video1.5": COMFY_NODE_RULE,
                     "hunyuan_video1.5_40steps": COMFY_NODE_RULE}.get(preset, WAN_RULE)
    if preset in OFFICIAL:
        shift, boundary, mode = OFFICIAL[preset]
        kw.update(split_step=ref_high_noise_steps(steps, shift, boundary), split_mode=mode)
    kw.update(over)
    return MagCacheConfig(**kw)


def lists(sch):
    return list(sch.cond_skipped), list(sch.uncond_skipped)


def session_marks(resolved, steps, cuts, sigmas=None):
    """Drive the engine the node runs (MagCacheSession -> CallPlan -> enter/leave on a toy
    stack), one session per sampler segment ``cuts`` = [(first, last_exclusive), ...] of a
    ``steps``-step schedule; returns (skipped cond, skipped uncond, splits seen)."""
    sig = sigmas if sigmas is not None else [1.0 - i / steps for i in range(steps + 1)]
    skipped, splits = ([], []), []
    for a, b in cuts:
        s = MagCacheSession(resolved, schedule_steps=steps if (a, b) != (0, steps) else 0).fresh()
        s.start(sig[a:b + 1])
        splits.append(s.split_step)
        for i in range(a, b):
            x = torch.randn(2, 3, 4, dtype=torch.float64)
            plan = s.plan_call(sig[i], [1, 0], None, 2)            # host order: uncond rows, then cond
            xb = plan.enter(x)
            plan.leave(xb if plan.all_skip else xb * 1.5)
        rep = s.report()
        for name, bi in (("cond", 0), ("uncond", 1)):
            skipped[bi].extend(a + j for j, m in enumerate(rep["branches"][name]) if m == "S")
    return skipped[0], skipped[1], splits


# ---------------------------------------------------------------- the official split
@pytest.mark.parametrize("preset", sorted(OFFICIAL))
def test_official_split_matches_reference(preset):
    shift, boundary, _ = OFFICIAL[preset]
    p = get_preset(preset)
    assert (p.shift, p.boundary) == (shift, boundary)
    for steps in range(1, 101):
        want = ref_high_noise_steps(steps, shift, boundary)
        assert official_split(steps, shift, boundary) == want == p.split_for(steps), steps
    assert p.split_for(p.calib_steps) == p.split_step  # the calibration's own split (26 / 15 at 40 steps)


def test_official_split_known_values():
    # the issue's and the research note's values (official scheduler, official shift/boundary)
    t2v = {8: 6, 10: 7, 20: 13, 30: 20, 33: 22, 40: 26, 50: 32}
    i2v = {12: 5, 20: 8, 25: 10, 40: 15, 50: 19}
    assert {s: official_split(s, 12.0, 0.875) for s in t2v} == t2v
    assert {s: official_split(s, 5.0, 0.900) for s in i2v} == i2v


# ---------------------------------------------------------------- Wan2.2 vs the official loop
@pytest.mark.parametrize("preset", sorted(OFFICIAL))
def test_wan22_schedules_equal_official_loop(preset):
    shift, boundary, mode = OFFICIAL[preset]
    p = get_preset(preset)
    checked = 0
    for steps, thresh, k, r in itertools.product((8, 10, 20, 25, 30, 33, 40, 50), (0.04, 0.06, 0.12, 0.24),
                                                 (2, 4), (0.1, 0.2, 0.4)):
        want = ref_wan22(p.ratios, steps, thresh, k, r, ref_high_noise_steps(steps, shift, boundary), mode)
        res = resolve(preset, steps=steps, thresh=thresh, k=k, retention=r)
        got = lists(res.plan())
        if want is None:      # the official script would crash here; ours computes instead
            continue
        assert got == want, (steps, thresh, k, r)
        checked += 1
    assert checked >= 150  # of 192 settings; the rest would crash the official script


def test_issue_example_i2v_20_steps():
    res = resolve("wan2.2_i2v_A14B", steps=20, thresh=0.06, k=2, retention=0.1)
    cond, unc = lists(res.plan())
    assert res.config.split_step == 8
    assert min(cond + unc) >= 9            # int(16 + 24 * 0.1) = 18 calls = 9 steps always compute
    assert (cond, unc) == ref_wan22(get_preset("wan2.2_i2v_A14B").ratios, 20, 0.06, 2, 0.1, 8, "i2v")


# ---------------------------------------------------------------- every preset: core == resolver == CLI == route == engine
STEPS = (10, 25, 33, 50)


@pytest.mark.parametrize("preset", list_presets())
def test_core_resolver_cli_route_engine_agree(preset):
    p = get_preset(preset)
    for steps in STEPS:
        core = plan_schedule(p.ratios, steps, core_config(preset, steps))
        res = resolve(preset, steps=steps)
        assert lists(res.plan()) == lists(core), steps
        cli, _ = cli_json("schedule", "--preset", preset, "--steps", str(steps))
        assert (cli["cond_skipped"], cli["uncond_skipped"]) == lists(core), steps
        assert cli["text"] == res.describe() and cli["split_step"] == res.config.split_step
        if preset in WAN_PRESETS:
            d = p.defaults
            route = plan_query({"preset": preset, "steps": str(steps), "thresh": str(d["thresh"]),
                                "k": str(d["k"]), "retention": str(d["retention"])})
            assert (route["cond_skipped"], route["uncond_skipped"]) == lists(core), steps
            assert route["text"] == res.describe()
        if p.branches == 2:
            cond, unc, _ = session_marks(res, steps, [(0, steps)], sigmas=_official_sigmas(preset, steps))
            assert (cond, unc) == lists(core), steps


def _official_sigmas(preset, steps):
    """Sigmas whose crossing of the boundary is the official split (for Wan2.2 single-sampler runs)."""
    if preset not in OFFICIAL:
        return None
    shift, _, _ = OFFICIAL[preset]
    s = np.linspace(1.0, 0.01, steps + 1)[:-1]
    s = shift * s / (1 + (shift - 1) * s)
    return [float(v) for v in s.astype(np.float32)] + [0.0]


@pytest.mark.parametrize("preset", sorted(OFFICIAL))
@pytest.mark.parametrize("steps", (10, 20, 25, 33, 40))
def test_two_sampler_engine_equals_core_and_official(preset, steps):
    """Wan2.2 A14B as in ComfyUI: one sampler per expert over one schedule; the engine takes the
    split from where the high-noise sampler stops."""
    shift, boundary, mode = OFFICIAL[preset]
    split = ref_high_noise_steps(steps, shift, boundary)
    res = resolve(preset, steps=steps, schedule_steps=steps)
    cond, unc, splits = session_marks(res, steps, [(0, split), (split, steps)])
    assert splits == [split, split]
    p = get_preset(preset)
    cfg = core_config(preset, steps)
    hi = plan_schedule(p.ratios, steps, cfg, step_range=(0, split - 1))
    lo = plan_schedule(p.ratios, steps, cfg, step_range=(split, steps - 1))
    assert (cond, unc) == (list(hi.cond_skipped + lo.cond_skipped), list(hi.uncond_skipped + lo.uncond_skipped))
    want = ref_wan22(p.ratios, steps, *(p.defaults[k] for k in ("thresh", "k", "retention")), split, mode,
                     shared_cache=False)
    if want is not None:   # the low-noise sampler starts without residuals (the official shares one cache)
        assert (cond, unc) == want == lists(plan_schedule(p.ratios, steps, cfg))


def test_engine_takes_split_from_samplers_not_the_official_scheduler():
    # a ComfyUI split that differs from the official one (16 instead of 13 at 20 steps T2V)
    res = resolve("wan2.2_t2v_A14B", steps=20, schedule_steps=20)
    cond, unc, splits = session_marks(res, 20, [(0, 16), (16, 20)])
    assert splits == [16, 16]
    cfg = core_config("wan2.2_t2v_A14B", 20, split_step=16)
    hi = plan_schedule(res.curve, 20, cfg, step_range=(0, 15))
    lo = plan_schedule(res.curve, 20, cfg, step_range=(16, 19))
    assert (cond, unc) == (list(hi.cond_skipped + lo.cond_skipped), list(hi.uncond_skipped + lo.uncond_skipped))
    assert (cond, unc) != lists(res.plan())   # the official split (13) gives another schedule here


# ---------------------------------------------------------------- auto
@pytest.mark.parametrize("model,name", [
    ({"dim": 1536, "in_dim": 16, "model_type": "t2v"}, "wan2.1_t2v_1.3B"),
    ({"dim": 5120, "in_dim": 16, "model_type": "t2v"}, "wan2.1_t2v_14B"),
    ({"dim": 5120, "in_dim": 36, "model_type": "i2v"}, "wan2.1_i2v_480p_14B"),
    ({"dim": 1536, "in_dim": 16, "model_type": "vace"}, "wan2.1_vace_1.3B"),
    ({"dim": 5120, "in_dim": 16, "model_type": "vace"}, "wan2.1_vace_14B"),
    ({"dim": 3072, "in_dim": 48, "model_type": "t2v"}, "wan2.2_ti2v_5B_t2v"),
])
def test_auto_preview_equals_detected_preset_plan(model, name):
    assert detect_preset(model) == name
    q = {"preset": "auto", "steps": "30", "thresh": "0.12", "k": "2", "retention": "0.2",
         **{k: str(v) for k, v in model.items()}}
    auto = plan_query(q)
    named = plan_query(dict(q, preset=name))
    assert auto["preset"] == name and auto["detected"] and not named["detected"]
    for key in ("cond_skipped", "uncond_skipped", "computed_calls", "total_calls", "split_step"):
        assert auto[key] == named[key]
    node = resolve("auto", steps=30, model=model, thresh=0.12, k=2, retention=0.2)
    assert (auto["cond_skipped"], auto["uncond_skipped"]) == lists(node.plan())
