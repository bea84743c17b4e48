"""A target speedup instead of thresh/K (:mod:`magcache.target`), and recorded curves on disk (:mod:`magcache.store`)."""
import json
import os
from datetime import datetime, timezone

import numpy as np
import pytest
import torch

from magcache import (CalibrationRecorder, CurveKey, CurveStore, MagCacheConfig, TargetError, file_fingerprint,
                      get_preset, plan_for_target, plan_schedule, resolve)
from magcache.target import K_GRID, THRESH_GRID


# ------------------------------------------------------------------ the error, independently
def wan_loop_with_error(curve, S, thresh, K, r):
    """The official Wan2.1 loop (calls, ``<``, nearest interpolation), returning (skipped calls, error) with the
    error = sum over skipped calls of |1 - accumulated ratio| as the loop sees it."""
    ratios = np.asarray(curve, dtype=float)
    if len(ratios) != 2 * S:
        idx = np.round(np.arange(S) * ((len(ratios) // 2 - 1) / (S - 1))).astype(int)
        ratios = np.stack([ratios[0::2][idx], ratios[1::2][idx]], axis=1).reshape(-1)
    acc_ratio, acc_err, acc_n, skipped, error = [1.0, 1.0], [0.0, 0.0], [0, 0], 0, 0.0
    for cnt in range(2 * S):
        b = cnt % 2
        if cnt >= int(2 * S * r):
            acc_ratio[b] *= ratios[cnt]
            acc_n[b] += 1
            acc_err[b] += abs(1 - acc_ratio[b])
            if acc_err[b] < thresh and acc_n[b] <= K:
                skipped += 1
                error += abs(1 - acc_ratio[b])
            else:
                acc_ratio[b], acc_err[b], acc_n[b] = 1.0, 0.0, 0
    return skipped, error


@pytest.mark.parametrize("steps", [50, 30, 20])
@pytest.mark.parametrize("thresh,k", [(0.12, 2), (0.24, 6), (0.05, 4)])
def test_schedule_error_is_the_rules_accumulated_error(steps, thresh, k):
    p = get_preset("wan2.1_t2v_14B")
    skipped, error = wan_loop_with_error(list(p.ratios), steps, thresh, k, 0.2)
    sch = plan_schedule(p.ratios, steps, MagCacheConfig(thresh=thresh, k=k, retention=0.2))
    assert sch.total_calls - sch.computed_calls == skipped
    assert sch.error == pytest.approx(error, rel=1e-12, abs=1e-12)


# ------------------------------------------------------------------ target planner
CASES = [("wan2.1_t2v_1.3B", 50), ("wan2.1_t2v_14B", 30), ("flux", 28), ("flux", 20), ("qwen_image", 40),
         ("hunyuan_video", 50)]


@pytest.mark.parametrize("preset,steps", CASES)
def test_target_is_reached_with_the_least_error_of_the_grid(preset, steps):
    p = get_preset(preset)
    base = p.config()
    grid = [plan_schedule(p.ratios, steps, MagCacheConfig(**{**base.__dict__, "thresh": t, "k": k}))
            for k in K_GRID for t in THRESH_GRID]
    for target in (1.3, 1.6, 2.0):
        tp = plan_for_target(p.ratios, steps, target, base)
        ok = [s for s in grid if s.expected_speedup >= target]
        assert tp.reached and tp.schedule.expected_speedup >= target
        assert tp.error == pytest.approx(min(s.error for s in ok))
        assert tp.config.variant == base.variant and tp.config.retention == base.retention
        # the chosen settings give the chosen schedule
        assert plan_schedule(p.ratios, steps, tp.config) == tp.schedule


@pytest.mark.parametrize("preset,steps", CASES)
def test_target_is_monotone(preset, steps):
    p = get_preset(preset)
    last_err, last_speed = -1.0, 0.0
    for target in (1.1, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5):
        tp = plan_for_target(p.ratios, steps, target, p.config())
        if not tp.reached:
            break
        assert tp.error >= last_err - 1e-12
        assert tp.schedule.expected_speedup >= target
        last_err, last_speed = tp.error, tp.schedule.expected_speedup


def test_impossible_target_is_refused_with_a_clear_message():
    p = get_preset("wan2.1_t2v_1.3B")
    with pytest.raises(TargetError, match=r"^target_speedup: 6x is impossible at 50 steps .* at most 5.00x"):
        plan_for_target(p.ratios, 50, 6.0, p.config())
    for bad in (0, 1, 0.5, -2, float("nan"), True, "2"):
        with pytest.raises(TargetError, match="use a number > 1"):
            plan_for_target(p.ratios, 50, bad, p.config())  # type: ignore[arg-type]


def test_plans_are_memoized_per_input_and_bounded(monkeypatch):
    """The node plans at every run start: the same inputs give the same plan object without planning again;
    any input that changes the plan (target, steps, settings, curve) is planned anew; the memo is bounded."""
    import magcache.target as target
    monkeypatch.setattr(target, "_MEMO", type(target._MEMO)())
    calls = {"n": 0}
    real = target._plan

    def counting(*a, **kw):
        calls["n"] += 1
        return real(*a, **kw)

    monkeypatch.setattr(target, "_plan", counting)
    p = get_preset("wan2.1_t2v_1.3B")
    a = plan_for_target(p.ratios, 30, 2.0, p.config())
    assert plan_for_target(list(p.ratios), 30, 2.0, p.config()) is a and calls["n"] == 1
    others = [plan_for_target(p.ratios, 30, 2.5, p.config()), plan_for_target(p.ratios, 31, 2.0, p.config()),
              plan_for_target(p.ratios, 30, 2.0, p.config(retention=0.3)),
              plan_for_target(get_preset("wan2.1_t2v_14B").ratios, 30, 2.0, p.config())]
    assert calls["n"] == 5 and all(o is not a for o in others)
    assert (others[0].thresh, others[0].k) != (a.thresh, a.k)
    monkeypatch.setattr(target, "MEMO_SIZE", 3)
    plan_for_target(p.ratios, 32, 2.0, p.config())
    assert len(target._MEMO) == 3
    assert plan_for_target(p.ratios, 30, 2.0, p.config()) is not a and calls["n"] == 7   # dropped, planned anew


def test_unreachable_by_the_grid_gives_the_closest_below_or_raises():
    p = get_preset("wan2.1_t2v_1.3B")
    small = dict(thresholds=(0.01, 0.02), ks=(1, 2))
    tp = plan_for_target(p.ratios, 50, 4.0, p.config(), **small)
    best = max(plan_schedule(p.ratios, 50, p.config(thresh=t, k=k)).expected_speedup for t in (0.01, 0.02) for k in (1, 2))
    assert not tp.reached and tp.schedule.expected_speedup == best == tp.best_speedup
    assert tp.message.startswith("target 4x is not reached at 50 steps: the closest below is")
    with pytest.raises(TargetError, match="is not reached by any thresh <= 0.02 and K <= 2 at 50 steps; the most is"):
        plan_for_target(p.ratios, 50, 4.0, p.config(), on_unreachable="raise", **small)


def test_resolve_with_a_target_shows_the_plan():
    r = resolve("wan2.1_t2v_14B", steps=30, target_speedup=2.0)
    assert r.target is not None and (r.config.thresh, r.config.k) == (r.target.thresh, r.target.k)
    text = r.describe()
    assert "target 2x: thresh" in text and "accumulated error" in text and "rule: wan" in text
    d = r.to_dict()
    assert d["target"]["reached"] and d["target"]["thresh"] == d["thresh"] and d["error"] == r.plan().error
    assert resolve("wan2.1_t2v_14B", steps=30).target is None


# ------------------------------------------------------------------ the curve store
FP = "ab" * 32
KEY = CurveKey(FP, (104, 60), 30, "euler/simple")
NOW = datetime(2026, 12, 7, 9, 30, tzinfo=timezone.utc)


def _recorded(branches=2, steps=30):
    rec = CalibrationRecorder(branches)
    g = torch.Generator().manual_seed(0)
    base = torch.randn(1, 8, 16, generator=g)
    for t in range(steps):
        for b in range(branches):
            rec.record(b, t, base * (1.0 - 0.01 * t) + 0.001 * b)
    return rec.to_dict()


def test_key_layout_and_checks():
    assert KEY.relpath("flux2") == os.path.join("flux2", FP[:16], "104x60_30steps_euler-simple.json")
    assert KEY.describe() == "104x60, 30 steps, euler/simple"
    for bad in (dict(fingerprint="xyz"), dict(resolution=(0, 4)), dict(resolution=()), dict(steps=1),
                dict(sampler=" ")):
        kw = dict(fingerprint=FP, resolution=(104, 60), steps=30, sampler="euler")
        kw.update(bad)
        with pytest.raises(ValueError, match=f"^{next(iter(bad))}: "):
            CurveKey(**kw)


def test_store_lookup_save_never_overwrite(tmp_path):
    store = CurveStore(str(tmp_path / "curves"), now=lambda: NOW)
    first = store.lookup(KEY, "flux2")
    assert first.curve is None and first.record
    assert first.reason == "no curve: will record during this run (104x60, 30 steps, euler/simple)"
    rec = _recorded()
    path, created = store.save(KEY, "flux2", rec, model_name="flux2_dev.safetensors")
    assert created and path == first.path and os.path.exists(path)
    assert [f for f in os.listdir(os.path.dirname(path)) if f.startswith(".")] == []   # no temp file left
    found = store.lookup(KEY, "flux2")
    assert not found.record and list(found.curve) == rec["mag_ratios"] and found.curve.branches == 2
    assert found.reason == "recorded on 2026-12-07 for flux2_dev.safetensors (104x60, 30 steps, euler/simple)"
    before = open(path).read()
    other = _recorded(branches=1)
    path2, created2 = store.save(KEY, "flux2", other, model_name="other")
    assert (path2, created2) == (path, False) and open(path).read() == before     # kept, not overwritten
    # another step count is another curve
    k40 = CurveKey(FP, (104, 60), 40, "euler/simple")
    assert store.lookup(k40, "flux2").record
    store.save(k40, "flux2", _recorded(steps=40))
    assert len(store.stored("flux2")) == 2 and store.stored("wan") == []


def test_store_unusable_file_is_left_alone(tmp_path):
    store = CurveStore(str(tmp_path))
    path = store.path(KEY, "ltxv")
    os.makedirs(os.path.dirname(path))
    with open(path, "w") as f:
        f.write("{not json")
    got = store.lookup(KEY, "ltxv")
    assert got.curve is None and not got.record and "is unusable" in got.reason and "delete it" in got.reason
    assert open(path).read() == "{not json"
    with open(path, "w") as f:
        json.dump({**_recorded(), "key": {**KEY.to_dict(), "steps": 31}}, f)
    assert "another key" in store.lookup(KEY, "ltxv").reason
    with pytest.raises(ValueError, match="recorded curve"):
        store.save(CurveKey(FP, (8, 8), 30, "euler"), "ltxv", {"mag_ratios": [1.0, -2.0]})


def test_file_fingerprint(tmp_path):
    a = tmp_path / "a.safetensors"
    a.write_bytes(b"x" * 3_000_000)
    fa = file_fingerprint(str(a))
    assert len(fa) == 64 and fa == file_fingerprint(str(a))
    a.write_bytes(b"x" * 2_999_999 + b"y")
    assert file_fingerprint(str(a)) != fa
    small = tmp_path / "s.bin"
    small.write_bytes(b"abc")
    assert file_fingerprint(str(small)) != file_fingerprint(str(a))
    CurveKey(file_fingerprint(str(small)), (4, 4), 2, "euler")


def test_recorded_curve_drives_the_plan_and_the_preview_says_why(tmp_path):
    store = CurveStore(str(tmp_path), now=lambda: NOW)
    store.save(KEY, "flux2", _recorded(), model_name="flux2_dev.safetensors")
    found = store.lookup(KEY, "flux2")
    r = resolve("auto", steps=30, custom_curve=found.curve, family="flux2", curve_source=found.reason,
                target_speedup=1.5)
    text = r.describe()
    assert "curve: recorded on 2026-12-07 for flux2_dev.safetensors" in text
    assert r.family is not None and r.family.name == "flux2" and r.plan().expected_speedup >= 1.5
