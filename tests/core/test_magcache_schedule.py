"""MagCache schedule: the research note's schedules (sections 8.2-8.6) from the shipped tables,
properties over a grid, an independent reference of the official loop, presets and curves."""
import itertools
import json
import math

import numpy as np
import pytest

from magcache import (MagCacheConfig, get_preset, list_presets, parse_curve, plan_schedule, resample_curve,
                      locate_segment, high_noise_steps, Curve)
from magcache.schedule import RuleState

# The official MagCache4Wan2.2 script's Wan2.2 A14B curves (magcache_generate.py, T2V and I2V
# branches; unpadded, 39 calls per branch), copied here as data to check the shipped table.
OFFICIAL_WAN22_T2V = [
    1.00124, 1.00155, 0.99822, 0.99851, 0.99696, 0.99687, 0.99703, 0.99732, 0.9966, 0.99679, 0.99602, 0.99658,
    0.99578, 0.99664, 0.99484, 0.9949, 0.99633, 0.996, 0.99659, 0.99683, 0.99534, 0.99549, 0.99584, 0.99577,
    0.99681, 0.99694, 0.99563, 0.99554, 0.9944, 0.99473, 0.99594, 0.9964, 0.99466, 0.99461, 0.99453, 0.99481,
    0.99389, 0.99365, 0.99391, 0.99406, 0.99354, 0.99361, 0.99283, 0.99278, 0.99268, 0.99263, 0.99057, 0.99091,
    0.99125, 0.99126, 0.65523, 0.65252, 0.98808, 0.98852, 0.98765, 0.98736, 0.9851, 0.98535, 0.98311, 0.98339,
    0.9805, 0.9806, 0.97776, 0.97771, 0.97278, 0.97286, 0.96731, 0.96728, 0.95857, 0.95855, 0.94385, 0.94385,
    0.92118, 0.921, 0.88108, 0.88076, 0.80263, 0.80181]
OFFICIAL_WAN22_I2V = [
    0.99191, 0.99144, 0.99356, 0.99337, 0.99326, 0.99285, 0.99251, 0.99264, 0.99393, 0.99366, 0.9943, 0.9943,
    0.99276, 0.99288, 0.99389, 0.99393, 0.99274, 0.99289, 0.99316, 0.9931, 0.99379, 0.99377, 0.99268, 0.99271,
    0.99222, 0.99227, 0.99175, 0.9916, 0.91076, 0.91046, 0.98931, 0.98933, 0.99087, 0.99088, 0.98852, 0.98855,
    0.98895, 0.98896, 0.98806, 0.98808, 0.9871, 0.98711, 0.98613, 0.98618, 0.98434, 0.98435, 0.983, 0.98307,
    0.98185, 0.98187, 0.98131, 0.98131, 0.9783, 0.97835, 0.97619, 0.9762, 0.97264, 0.9727, 0.97088, 0.97098,
    0.96568, 0.9658, 0.96045, 0.96055, 0.95322, 0.95335, 0.94579, 0.94594, 0.93297, 0.93311, 0.91699, 0.9172,
    0.89174, 0.89202, 0.8541, 0.85446, 0.79823, 0.79902]


# ---------------------------------------------------------------- independent reference
# The official loop as the official scripts are structured (one call counter over 2*S calls,
# branch cnt % 2, numpy interpolation); it shares no code with ``magcache``.
def official_interp(column, steps):
    column = np.asarray(column, dtype=np.float64)
    if steps == 1:
        return column[-1:]
    idx = np.round(np.arange(steps) * ((len(column) - 1) / (steps - 1))).astype(int)
    return column[idx]


def official_schedule(ratios, steps, thresh, k, retention, split_step=None, mode="t2v", start_step=None):
    """Skipped steps per branch ([cond], [uncond]) of the official two-branch rule."""
    mag = np.asarray(ratios, dtype=np.float64)
    if len(mag) != 2 * steps:
        c = official_interp(mag[0::2], steps)
        u = official_interp(mag[1::2], steps)
        mag = np.concatenate([c.reshape(-1, 1), u.reshape(-1, 1)], axis=1).reshape(-1)
    num = 2 * steps
    acc_ratio, acc_err, acc_steps = [1.0, 1.0], [0.0, 0.0], [0, 0]
    skipped = ([], [])
    for cnt in range(num):
        b = cnt % 2
        if start_step is not None:
            use = cnt // 2 >= start_step
        elif split_step is not None:
            split = 2 * split_step
            if mode == "i2v":
                use = not cnt < int(split + (num - split) * retention)
            else:
                use = not (cnt < int(split * retention) or (split <= cnt <= (num - split) * retention + split))
        else:
            use = cnt >= int(num * retention)
        if use:
            acc_ratio[b] = acc_ratio[b] * mag[cnt]
            acc_steps[b] += 1
            acc_err[b] += np.abs(1 - acc_ratio[b])
            if acc_err[b] < thresh and acc_steps[b] <= k:
                skipped[b].append(cnt // 2)
            else:
                acc_ratio[b], acc_err[b], acc_steps[b] = 1.0, 0.0, 0
    return skipped


def steps_from_text(text):
    """'10-15,17,19-20' (hyphen or en dash) -> [10, 11, ..., 15, 17, 19, 20]."""
    out = []
    for part in text.replace("\u2013", "-").split(","):
        part = part.strip()
        if "-" in part:
            a, b = part.split("-")
            out.extend(range(int(a), int(b) + 1))
        elif part:
            out.append(int(part))
    return out


S = steps_from_text


def plan(preset, steps, thresh, k, retention=0.2, **kw):
    return plan_schedule(get_preset(preset).ratios, steps,
                         MagCacheConfig(thresh=thresh, k=k, retention=retention, **kw))


# ---------------------------------------------------------------- section 8.3 (official rule)
# (preset, S, thresh, K, retention, skipped steps per branch, computed calls)
T13, T14 = "wan2.1_t2v_1.3B", "wan2.1_t2v_14B"
K4_50 = "10,11,12,13,15,16,17,18,20,21,22,23,25,26,27,28,30,31,32,33,35,36,37,39,40,42,43,45,47"
K2_50 = "10,11,13,14,16,17,19,20,22,23,25,26,28,29,31,32,34,35,37,38,40,41,43,45,47"
TABLE_8_3 = [
    (T13, 50, 0.12, 2, 0.2, K2_50, 50),
    (T13, 50, 0.12, 4, 0.2, K4_50, 42),
    (T13, 50, 0.24, 6, 0.2, "10–15,17–22,24–29,31–35,37–40,42–44,46,48", 36),
    (T13, 50, 0.06, 2, 0.2, "10,11,13,14,16,17,19,20,22,23,25,26,28,29,31,32,34,35,37,38,40,42,44", 54),
    (T13, 50, 0.02, 2, 0.2, "10,11,13,14,16,17,19,20,22,23,25,27,29,31,33,35,37", 66),
    (T13, 30, 0.12, 4, 0.2, "6,7,8,9,11,12,13,14,16,17,18,19,21,22,23,25,26,28", 24),
    (T13, 30, 0.24, 6, 0.2, "6–11,13–18,20–23,25,26,28", 22),
    (T13, 30, 0.06, 2, 0.2, "6,7,9,10,12,13,15,16,18,19,21,22,24,26", 32),
    (T13, 30, 0.02, 6, 0.2, "6,7,9,10,12,13,15,17,19,21", 40),
    (T13, 25, 0.12, 2, 0.2, "5,6,8,9,11,12,14,15,17,18,20,21,23", 24),
    (T13, 25, 0.24, 6, 0.2, "5–10,12–17,19,20,21,23", 18),
    (T13, 20, 0.24, 6, 0.2, "4,5,6,7,8,9,11,12,13,14,15,17,18", 14),
    (T14, 50, 0.12, 2, 0.2, K2_50, 50),
    (T14, 50, 0.12, 4, 0.2, K4_50, 42),
    (T14, 50, 0.24, 6, 0.2, "10–15,17–22,24–29,31–35,37–40,42,43,45,46,48", 36),
    (T14, 50, 0.06, 2, 0.2, "10,11,13,14,16,17,19,20,22,23,25,26,28,29,31,32,34,35,37,39,41,43", 56),
    (T14, 50, 0.02, 2, 0.2, "10,11,13,14,16,17,19,20,22,24,26,28,30,32,34,36", 68),
    (T14, 30, 0.12, 4, 0.2, "6,7,8,9,11,12,13,14,16,17,18,19,21,22,23,25,27", 26),
    (T14, 30, 0.24, 6, 0.2, "6–11,13–18,20–23,25,26,28", 22),
    (T14, 30, 0.06, 2, 0.2, "6,7,9,10,12,13,15,16,18,19,21,22,24,26", 32),
    (T14, 30, 0.02, 6, 0.2, "6,7,9,10,12,13,15,17,19,21", 40),
    (T14, 25, 0.12, 2, 0.2, "5,6,8,9,11,12,14,15,17,18,20,21,23", 24),
    (T14, 25, 0.24, 6, 0.2, "5–10,12–17,19,20,21,23", 18),
    (T14, 20, 0.24, 6, 0.2, "4,5,6,7,8,9,11,12,13,14,15,17,18", 14),
    # I2V 14B at the calibration length (40 steps)
    ("wan2.1_i2v_480p_14B", 40, 0.12, 4, 0.2,
     "8,9,10,11,13,14,15,16,18,19,20,22,23,24,26,27,29,30,32,33,35,37,39", 34),
    ("wan2.1_i2v_480p_14B", 40, 0.24, 6, 0.2, "8–13,15–19,21–24,26–29,31–33,35,36,38", 30),
    ("wan2.1_i2v_720p_14B", 40, 0.12, 4, 0.2, "8–11,13–16,18–21,23–25,27–29,31,32,34,36,38", 34),
    ("wan2.1_i2v_720p_14B", 40, 0.24, 6, 0.2, "8–13,15–20,22–26,28–31,33,34,36,37,39", 28),
    ("wan2.1_vace_1.3B", 50, 0.02, 3, 0.2, "10,11,12,14,15,16,18,19,20,22,23,25,26,28,29,31,32,34,36,38,40", None),
]


@pytest.mark.parametrize("preset,steps,thresh,k,ret,skipped,computed", TABLE_8_3,
                         ids=[f"{r[0]}-S{r[1]}-{r[2]}-K{r[3]}" for r in TABLE_8_3])
def test_section_8_3_schedules(preset, steps, thresh, k, ret, skipped, computed):
    sch = plan(preset, steps, thresh, k, ret)
    want = S(skipped)
    assert list(sch.cond_skipped) == want
    assert list(sch.uncond_skipped) == want
    assert sch.total_calls == 2 * steps
    assert sch.computed_calls == (computed if computed is not None else 2 * steps - 2 * len(want))


def test_start_step_replaces_retention_section_8_3():
    # 1.3B and 14B, S=30, 0.02/K6, start step 5: first eligible call 10
    for preset in (T13, T14):
        sch = plan(preset, 30, 0.02, 6, 0.2, start_step=5)
        assert list(sch.cond_skipped) == [5, 6, 8, 9, 11, 12, 14, 16, 18, 20, 22]
        assert sch.cond_skipped == sch.uncond_skipped and sch.computed_calls == 38
    # retention 0.2 with start 5 would keep int(60*0.2)=12 calls; start_step wins
    assert plan(T13, 30, 0.02, 6, 0.9, start_step=5).cond_skipped == plan(T13, 30, 0.02, 6, 0.2,
                                                                            start_step=5).cond_skipped


# ---------------------------------------------------------------- section 8.4 (calls, not steps)
def odd(a, b):
    return list(range(a, b + 1, 2))


@pytest.mark.parametrize("preset,steps,thresh,k,ret,cond,uncond", [
    (T14, 30, 0.01, 1, 0.25, [8, 10, 12, 14, 16], [7, 9, 11, 13, 15]),
    (T13, 30, 0.005, 1, 0.25, [8], [7]),
    (T14, 50, 0.01, 1, 0.25, odd(13, 27), odd(12, 26)),
    (T13, 50, 0.07, 5, 0.2, S("10–14,16–19,21–24,26–28,30–32,34,35,37,38,40,42,44"),
     S("10–13,15–18,20–23,25–27,29–31,33,34,36,37,39,41,43,45")),
])
def test_section_8_4_divergence(preset, steps, thresh, k, ret, cond, uncond):
    sch = plan(preset, steps, thresh, k, ret)
    assert list(sch.cond_skipped) == cond
    assert list(sch.uncond_skipped) == uncond


@pytest.mark.parametrize("k", [3, 4, 5, 6])
def test_section_8_4_14b_thresh_003(k):
    sch = plan(T14, 50, 0.03, k, 0.2)
    assert len(sch.cond_skipped) == len(sch.uncond_skipped) == 19
    assert longest_run(sch.cond_skipped) <= k  # the node's OR rule gave 31 in a row here


# ---------------------------------------------------------------- section 8.5 (interpolation)
def test_section_8_5_index_tables():
    from magcache.curve import nearest_indices
    assert nearest_indices(50, 30) == [0, 2, 3, 5, 7, 8, 10, 12, 14, 15, 17, 19, 20, 22, 24, 25, 27, 29, 30,
                                       32, 34, 35, 37, 39, 41, 42, 44, 46, 47, 49]
    assert nearest_indices(50, 20) == [0, 3, 5, 8, 10, 13, 15, 18, 21, 23, 26, 28, 31, 34, 36, 39, 41, 44, 46, 49]
    i25 = nearest_indices(50, 25)
    assert i25[12] == 24  # 24.5 -> 24 (half to even), half-up would give 25
    assert i25 == list(range(0, 25, 2)) + list(range(27, 50, 2))
    assert nearest_indices(50, 1) == [49]


# research magcache_ratios.json "derived_examples" (official nearest_interp), copied here
DERIVED_13B_20 = [1.0, 1.0, 0.99791, 1.00061, 0.99634, 0.99685, 0.99578, 0.99575, 0.99511, 0.99506, 0.99541, 0.99539, 0.99489, 0.99485, 0.99481, 0.99479, 0.99396, 0.99393, 0.99349, 0.99349, 0.99228, 0.99226, 0.99137, 0.99135, 0.98944, 0.98942, 0.98644, 0.98643, 0.9836, 0.98359, 0.97717, 0.97718, 0.97003, 0.97002, 0.95086, 0.95089, 0.92402, 0.92414, 0.81838, 0.81939]
DERIVED_14B_30 = [1.0, 1.0, 1.00025, 1.00251, 0.9985, 0.99962, 0.9966, 0.99658, 0.99467, 0.99451, 0.99664, 0.99656, 0.99533, 0.99545, 0.99438, 0.99434, 0.99384, 0.9938, 0.99404, 0.99401, 0.99409, 0.99408, 0.99347, 0.99343, 0.99418, 0.99416, 0.99313, 0.99311, 0.99218, 0.99215, 0.99216, 0.99217, 0.99138, 0.99135, 0.98996, 0.98995, 0.9887, 0.98866, 0.98767, 0.98765, 0.98501, 0.98498, 0.9838, 0.98376, 0.98037, 0.98035, 0.97546, 0.97543, 0.96711, 0.96708, 0.96349, 0.96345, 0.94926, 0.94929, 0.92511, 0.92504, 0.90693, 0.90678, 0.86111, 0.86189]


def test_resample_matches_research_derived_examples():
    for name, steps, want in ((T13, 20, DERIVED_13B_20), (T14, 30, DERIVED_14B_30)):
        cols = resample_curve(get_preset(name).ratios, steps)
        assert [v for pair in zip(*cols) for v in pair] == want


def test_rounding_matters_section_8_5():
    # 1.3B, S=15, 0.05/K3/0.2: half-even gives [3,4,5,7,8,9,11]
    assert list(plan(T13, 15, 0.05, 3, 0.2).cond_skipped) == [3, 4, 5, 7, 8, 9, 11]
    # the same run on a curve resampled half-up (floor(x+0.5)) gives the other schedule
    p = get_preset(T13)
    idx = [int(math.floor(j * 49 / 14 + 0.5)) for j in range(15)]
    c, u = p.ratios[0::2], p.ratios[1::2]
    half_up = Curve([v for j in idx for v in (c[j], u[j])], 2)
    sch = plan_schedule(half_up, 15, MagCacheConfig(thresh=0.05, k=3, retention=0.2))
    assert list(sch.cond_skipped) == [3, 4, 5, 7, 8, 10, 12]
    # node floor mapping vs official round, S=20 thresh 0.01 K1: official 4 skips
    assert list(plan(T13, 20, 0.01, 1, 0.2).cond_skipped) == [4, 6, 8, 10]


@pytest.mark.parametrize("steps,ret,calls", [(50, 0.2, 20), (30, 0.2, 12), (30, 0.25, 15)])
def test_retention_counts_calls(steps, ret, calls):
    st = RuleState(get_preset(T13).ratios, steps, MagCacheConfig(retention=ret))
    prot = [st.protected(c % 2, c // 2) for c in range(2 * steps)]
    assert prot == [True] * calls + [False] * (2 * steps - calls)


# ---------------------------------------------------------------- section 8.2 worked trace
def test_section_8_2_trace():
    cond = resample_curve(get_preset(T13).ratios, 50)[0]
    for step, g in [(8, 0.99578), (9, 0.99570), (10, 0.99511), (11, 0.99535), (12, 0.99552), (13, 0.99541),
                    (40, 0.97410), (41, 0.97003), (42, 0.96538), (43, 0.95930), (44, 0.95086),
                    (45, 0.94013), (46, 0.92402), (47, 0.90241), (48, 0.86821), (49, 0.81838)]:
        assert cond[step] == g
    # step 44: err = |1-g43| + |1-g43*g44| = 0.12854 >= 0.12 -> compute
    assert abs(1 - 0.95930) + abs(1 - 0.95930 * 0.95086) == pytest.approx(0.12854, abs=1e-5)
    st = RuleState(get_preset(T13).ratios, 50, MagCacheConfig(thresh=0.12, k=2, retention=0.2))
    got = {}
    for step in range(50):
        got[step] = st.advance(0, step, True)
        if step == 11:
            assert st.acc[0].n == 2 and st.acc[0].ratio == pytest.approx(0.99048, abs=1e-5)
            assert st.acc[0].err == pytest.approx(0.01441, abs=1e-5)
    want = {10: 1, 11: 1, 12: 0, 13: 1, 40: 1, 41: 1, 42: 0, 43: 1, 44: 0, 45: 1, 46: 0, 47: 1, 48: 0, 49: 0}
    assert {s: int(got[s]) for s in want} == want
    assert not any(got[s] for s in range(10))


# ---------------------------------------------------------------- section 8.6
def test_section_8_6_facts():
    for name in list_presets():
        p = get_preset(name)
        assert len(p.ratios) == p.branches * p.calib_steps
        assert all(v == 1.0 for v in p.ratios[:p.branches]), name
    assert tuple(get_preset("wan2.1_vace_14B").ratios) == tuple(get_preset(T14).ratios)
    # final step is not protected by default; protect_last keeps it
    sch = plan("wan2.1_i2v_720p_14B", 40, 0.24, 6, 0.2)
    assert 39 in sch.cond_skipped and 39 in sch.uncond_skipped
    sch = plan("wan2.1_i2v_720p_14B", 40, 0.24, 6, 0.2, protect_last=1)
    assert 39 not in sch.cond_skipped and 39 not in sch.uncond_skipped
    # K = 0 and thresh = 0 never skip
    assert plan(T13, 50, 0.3, 0).computed_calls == 100
    assert plan(T13, 50, 0.0, 6).computed_calls == 100


def test_shipped_tables_equal_official_wan22_and_names():
    # the official script pads two 1.0 (step 0 of both branches) in front of its lists
    assert list(get_preset("wan2.2_t2v_A14B").ratios) == [1.0, 1.0] + OFFICIAL_WAN22_T2V
    assert list(get_preset("wan2.2_i2v_A14B").ratios) == [1.0, 1.0] + OFFICIAL_WAN22_I2V
    for name in ("wan2.1_t2v_1.3B", "wan2.1_t2v_14B", "wan2.1_i2v_480p_14B", "wan2.1_i2v_720p_14B",
                 "wan2.1_vace_1.3B", "wan2.1_vace_14B", "wan2.2_t2v_A14B", "wan2.2_i2v_A14B"):
        assert name in list_presets()
    for name in list_presets():
        p = get_preset(name)
        assert len(p.ratios) == p.branches * p.calib_steps and list(p.ratios[:p.branches]) == [1.0] * p.branches


# ---------------------------------------------------------------- independent reference, grid
def longest_run(steps):
    best = run = 0
    prev = None
    for s in steps:
        run = run + 1 if prev is not None and s == prev + 1 else 1
        best = max(best, run)
        prev = s
    return best


GRID_TABLES = [T13, T14, "wan2.1_i2v_480p_14B", "wan2.1_vace_1.3B"]


@pytest.mark.parametrize("preset", GRID_TABLES)
def test_grid_matches_official_reference_and_properties(preset):
    curve = get_preset(preset).ratios
    n = 0
    for steps, k, thresh, ret in itertools.product((8, 15, 20, 25, 30, 50), (1, 2, 4, 6),
                                                   (0.0, 0.01, 0.03, 0.07, 0.12, 0.24, 0.4), (0.1, 0.2, 0.25, 0.3)):
        cfg = MagCacheConfig(thresh=thresh, k=k, retention=ret)
        sch = plan_schedule(curve, steps, cfg)
        first = int(2 * steps * ret)
        if first >= 2:
            cond, unc = official_schedule(curve, steps, thresh, k, ret)
            assert (list(sch.cond_skipped), list(sch.uncond_skipped)) == (cond, unc), (steps, k, thresh, ret)
        else:  # the official code would add a missing residual at step 0 (crash); the guard computes
            assert 0 not in sch.cond_skipped and 0 not in sch.uncond_skipped
        for b, sk in enumerate((sch.cond_skipped, sch.uncond_skipped)):
            assert longest_run(sk) <= k
            assert all(2 * s + b >= first for s in sk)      # retention honoured (calls)
        if thresh == 0:
            assert sch.computed_calls == sch.total_calls
        assert sch.computed_calls == 2 * steps - len(sch.cond_skipped) - len(sch.uncond_skipped)
        n += 1
    assert n == 6 * 4 * 7 * 4


def test_guard_when_nothing_is_retained():
    # retention 0: the official code would reuse a missing residual at call 0; the guard computes
    sch = plan(T13, 20, 0.3, 3, 0.0)
    assert 0 not in sch.cond_skipped and 0 not in sch.uncond_skipped
    assert sch.cond_skipped and sch.cond_skipped[0] >= 1
    sch = plan(T13, 20, 0.3, 3, 0.9, start_step=0)
    assert 0 not in sch.cond_skipped


def test_end_step_and_protect_last():
    base = plan(T13, 50, 0.24, 6, 0.2)
    e = plan(T13, 50, 0.24, 6, 0.2, end_step=30)
    assert all(s < 30 for s in e.cond_skipped + e.uncond_skipped)
    assert [s for s in base.cond_skipped if s < 30] == list(e.cond_skipped)
    assert plan(T13, 50, 0.24, 6, 0.2, end_step=-1) == base
    p = plan(T13, 50, 0.24, 6, 0.2, protect_last=5)
    assert all(s < 45 for s in p.cond_skipped + p.uncond_skipped)
    assert plan(T13, 50, 0.24, 6, 0.2, protect_last=0) == base


def test_schedule_object():
    sch = plan(T13, 50, 0.12, 2, 0.2)
    assert sch.expected_speedup == pytest.approx(2.0)
    d = json.loads(sch.to_json())
    assert d["cond_skipped"] == S(K2_50) and d["computed_calls"] == 50 and d["total_calls"] == 100
    assert sch.marks(0)[10:14] == ["S", "S", "C", "S"]
    with pytest.raises(Exception):
        sch.computed_calls = 3  # frozen


# ---------------------------------------------------------------- single-branch presets
def test_single_branch_preset():
    p = get_preset("flux")
    assert p.branches == 1 and len(p.ratios) == 28
    sch = plan_schedule(p.ratios, 28, p.config())
    assert sch.total_calls == 28 and sch.uncond_skipped == ()
    assert all(s >= int(28 * 0.1) for s in sch.cond_skipped)
    assert longest_run(sch.cond_skipped) <= 5
    with pytest.raises(ValueError, match="branches"):
        plan_schedule(p.ratios, 28, p.config(), branches=2)


# ---------------------------------------------------------------- Wan2.2 A14B: split + segments
@pytest.mark.parametrize("preset,mode", [("wan2.2_t2v_A14B", "t2v"), ("wan2.2_i2v_A14B", "i2v")])
def test_wan22_split_matches_official_and_segments_join(preset, mode):
    p = get_preset(preset)
    for steps, thresh, k, ret in itertools.product((20, 30, 40), (0.02, 0.06, 0.12), (2, 4), (0.1, 0.2, 0.4)):
        split = p.split_for(steps)
        cfg = MagCacheConfig(thresh=thresh, k=k, retention=ret, split_step=split, split_mode=mode)
        whole = plan_schedule(p.ratios, steps, cfg)
        cond, unc = official_schedule(p.ratios, steps, thresh, k, ret, split_step=split, mode=mode)
        assert (list(whole.cond_skipped), list(whole.uncond_skipped)) == (cond, unc)
        # two samplers, one per expert: their segment plans join to the whole plan
        hi = plan_schedule(p.ratios, steps, cfg, step_range=(0, split - 1))
        lo = plan_schedule(p.ratios, steps, cfg, step_range=(split, steps - 1))
        assert hi.cond_skipped + lo.cond_skipped == whole.cond_skipped
        assert hi.uncond_skipped + lo.uncond_skipped == whole.uncond_skipped
        assert hi.total_calls + lo.total_calls == whole.total_calls
        if mode == "i2v":
            assert not hi.cond_skipped and not hi.uncond_skipped
    assert p.split_for(p.calib_steps) == p.split_step


def test_segment_without_protection_recomputes_first_step():
    # a segment that starts in the middle of a skip window: no residual yet -> computes first
    full = plan(T13, 50, 0.24, 6, 0.2)
    first = full.cond_skipped[3]
    seg = plan_schedule(
        get_preset(T13).ratios, 50, MagCacheConfig(thresh=0.24, k=6, retention=0.2), step_range=(first, 49))
    assert first not in seg.cond_skipped and first not in seg.uncond_skipped
    assert seg.total_calls == 2 * (50 - first)
    for b in (0, 1):
        assert longest_run(seg.skipped(b)) <= 6


def test_locate_segment():
    full = [1.0, 0.95, 0.9, 0.8, 0.6, 0.4, 0.2, 0.0]  # 7 steps
    assert locate_segment(full[:5], total_steps=7) == (0, 3)      # head, starts at sigma_max 1.0
    assert locate_segment(full[4:], total_steps=7) == (4, 6)      # tail, ends at 0
    assert locate_segment(full[2:6], full_sigmas=full) == (2, 4)
    assert locate_segment(full[2:6], start_step=2) == (2, 4)
    assert locate_segment(full) == (0, 6)
    import torch
    assert locate_segment(torch.tensor(full[4:]), total_steps=7) == (4, 6)
    with pytest.raises(ValueError, match="segment_sigmas"):
        locate_segment(full[2:6], total_steps=7)
    with pytest.raises(ValueError, match="segment_sigmas"):
        locate_segment([0.5, 0.45], full_sigmas=full)
    with pytest.raises(ValueError, match="segment_sigmas"):
        locate_segment([1.0])
    assert high_noise_steps(full, 0.875) == 3  # 1.0, 0.95, 0.9
    assert high_noise_steps(full, 0.92) == 2
    assert high_noise_steps(full, 0.9) == 3    # >= as the official code


# ---------------------------------------------------------------- config, curves, presets: errors
@pytest.mark.parametrize("kw,name", [
    (dict(thresh=-0.1), "thresh"), (dict(thresh=float("nan")), "thresh"), (dict(thresh="0.1"), "thresh"),
    (dict(k=-1), "k"), (dict(k=2.5), "k"), (dict(retention=1.5), "retention"),
    (dict(start_step=-2), "start_step"), (dict(end_step=-3), "end_step"), (dict(protect_last=-1), "protect_last"),
    (dict(split_step=-1), "split_step"), (dict(split_mode="x"), "split_mode"),
])
def test_config_validate_names_field(kw, name):
    with pytest.raises(ValueError, match=rf"^{name} \(--"):
        MagCacheConfig(**kw).validate()


def test_plan_bad_inputs():
    c = get_preset(T13).ratios
    with pytest.raises(ValueError, match="steps"):
        plan_schedule(c, 0, MagCacheConfig())
    with pytest.raises(ValueError, match="step_range"):
        plan_schedule(c, 10, MagCacheConfig(), step_range=(5, 10))
    with pytest.raises(ValueError, match=r"^k \(--k\): "):
        plan_schedule(c, 10, MagCacheConfig(k=-1))
    with pytest.raises(ValueError, match="split_step"):
        plan_schedule(c, 10, MagCacheConfig(split_step=11))
    with pytest.raises(ValueError, match="config"):
        plan_schedule(c, 10, {"thresh": 0.1})


@pytest.mark.parametrize("text,frag", [
    ("{not json", "malformed JSON"), ("", "empty"), ("[1.0, 0.9, 0.8]", "multiple"),
    ("[1.0, 1.0, NaN, 0.9]", "finite"), ("[1.0, 1.0, 0.0, 0.9]", "> 0"), ("[1.0, 1.0, -1, 0.9]", "> 0"),
    ('[1.0, 1.0, "a", 0.9]', "not a number"), ('{"foo": [1, 1]}', "mag_ratios"),
    ('{"mag_ratios": [1, 1], "branches": 3}', "branches"), ('"abc"', "list"), ("[]", "at least"),
])
def test_parse_curve_errors(text, frag):
    with pytest.raises(ValueError, match=frag) as e:
        parse_curve(text)
    assert str(e.value).startswith("curve:")


def test_parse_curve_forms():
    c = parse_curve("[1.0, 1.0, 0.99, 0.98]")
    assert isinstance(c, Curve) and c.branches == 2 and c.calib_steps == 2 and len(c) == 4
    assert list(parse_curve({"mag_ratios": [1.0, 0.9, 0.8], "branches": 1})) == [1.0, 0.9, 0.8]
    assert parse_curve('{"values": [1.0, 0.9], "layout": "single_branch"}').branches == 1
    assert parse_curve(c) == c
    with pytest.raises(ValueError, match="branches"):
        parse_curve({"mag_ratios": [1.0, 0.9], "branches": 1}, branches=2)
    p = get_preset(T13)
    assert parse_curve(json.dumps(list(p.ratios))) == p.ratios


def test_presets_api():
    names = list_presets()
    assert names[0] == T13 and "wan2.2_i2v_A14B" in names
    p = get_preset("wan2.1_t2v_14B")
    assert (p.calib_steps, p.branches) == (50, 2) and p.defaults == {"thresh": 0.24, "k": 6, "retention": 0.2}
    assert p.description
    with pytest.raises(ValueError, match="wan2.1_t2v_1.3B") as e:
        get_preset("wan2.1_t2v_13B")
    assert "preset" in str(e.value)
    cfg = get_preset("wan2.2_t2v_A14B").config(steps=40)
    assert (cfg.split_step, cfg.split_mode, cfg.retention) == (26, "t2v", 0.4)
    with pytest.raises(Exception):
        p.name = "x"


def test_official_interp_reference_agrees():
    col = np.arange(50, dtype=float)
    for s in (1, 7, 15, 20, 25, 30, 49, 50, 64):
        assert list(official_interp(col, s)) == [float(i) for i in
                                                 __import__("magcache.curve", fromlist=["x"]).nearest_indices(50, s)]


def test_run_branches_cfg1_and_single_column_with_cfg():
    c = get_preset(T13).ratios
    cfg = MagCacheConfig(thresh=0.12, k=2, retention=0.2)
    both = plan_schedule(c, 30, cfg)
    one = plan_schedule(c, 30, cfg, run_branches=(0,))
    assert one.cond_skipped == both.cond_skipped and one.uncond_skipped == ()
    assert one.total_calls == 30 and one.computed_calls == 30 - len(one.cond_skipped)
    flux = get_preset("flux").ratios
    cfg2 = get_preset("flux").config()
    sch = plan_schedule(flux, 28, cfg2, run_branches=(0, 1))
    assert sch.uncond_skipped == sch.cond_skipped and sch.total_calls == 56
    with pytest.raises(ValueError, match="run_branches"):
        plan_schedule(c, 30, cfg, run_branches=(0, 2))


def test_curve_and_config_copy_and_pickle():
    import copy
    import pickle
    c = get_preset(T13).ratios
    for d in (copy.deepcopy(c), pickle.loads(pickle.dumps(c))):
        assert d == c and d.branches == 2 and type(d).__name__ == "Curve"
    cfg = MagCacheConfig(thresh=0.2)
    assert copy.deepcopy(cfg) == cfg


def test_core_never_imports_comfy():
    import pathlib
    root = pathlib.Path(__file__).resolve().parents[2] / "magcache"
    for f in root.glob("*.py"):
        text = f.read_text()
        assert "import comfy" not in text and "from comfy" not in text, f
        assert "from magcache" not in text and "import magcache" not in text, f  # relative imports only


@pytest.mark.parametrize("name,length,value,pos", [
    ("wan2.1_t2v_1.3B", 100, 0.81838, 98), ("wan2.1_t2v_14B", 100, 0.86111, 98),
    ("wan2.1_i2v_480p_14B", 80, 0.90954, 77), ("wan2.1_i2v_720p_14B", 80, 0.86768, 79),
    ("wan2.1_vace_1.3B", 100, 0.80141, 98), ("wan2.2_t2v_A14B", 80, 0.65252, 53),
    ("wan2.2_i2v_A14B", 80, 0.79823, 78), ("wan2.2_ti2v_5B_t2v", 100, 0.94583, 94),
    ("flux", 28, 0.89062, None), ("qwen_image", 80, 0.54688, None), ("hunyuan_video", 50, 0.75456, None),
    ("hunyuan_video_544p", 50, 0.76592, None),
])
def test_shipped_tables_section_2_minima(name, length, value, pos):
    r = get_preset(name).ratios
    assert len(r) == length and min(r) == value
    if pos is not None:
        assert r[pos] == value
