"""CalibrationRecorder (research note section 3) and the PSNR / SSIM / difference helpers."""
import json
import math

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from magcache import (CalibrationRecorder, MagCacheConfig, get_preset, parse_curve, plan_schedule, psnr, ssim,
                      difference_image)


# ---------------------------------------------------------------- calibration
def test_recovers_a_known_curve():
    """Residuals whose magnitude follows a preset's gammas give that preset back (5 decimals)."""
    p = get_preset("wan2.1_i2v_480p_14B")
    cols = p.ratios.columns()
    g = torch.Generator().manual_seed(0)
    base = [torch.randn(1, 24, 32, generator=g, dtype=torch.float64) for _ in range(2)]
    rec = CalibrationRecorder(branches=2)
    scale = [1.0, 1.0]
    for step in range(p.calib_steps):
        for b in (1, 0):                      # host order: uncond first
            if step:
                scale[b] *= cols[b][step]
            rec.record(b, step, (base[b] * scale[b]).float())
    got = rec.curve()
    assert got.branches == 2 and len(got) == len(p.ratios)
    assert max(abs(a - b) for a, b in zip(got, p.ratios)) <= 1.5e-5
    assert got[:2] == (1.0, 1.0)
    # same direction every step: std of the per-token ratio and cosine distance ~ 0
    assert max(rec.std()) < 1e-4 and max(rec.cos_dis()) < 1e-4


def test_stats_per_token_against_numpy():
    g = torch.Generator().manual_seed(1)
    r0 = torch.randn(2, 7, 5, generator=g)
    r1 = torch.randn(2, 7, 5, generator=g)
    rec = CalibrationRecorder(branches=1)
    rec.record(0, 0, r0)
    rec.record(0, 1, r1)
    a, b = r1.double().numpy().reshape(-1, 5), r0.double().numpy().reshape(-1, 5)
    ratio = np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    cos = 1 - (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert list(rec.curve()) == [1.0, round(float(ratio.mean()), 5)]
    assert rec.std() == [0.0, round(float(ratio.std(ddof=1)), 5)]
    assert rec.cos_dis() == [0.0, round(float(cos.mean()), 5)]


def test_orthogonal_and_opposite_residuals_cosine():
    rec = CalibrationRecorder(branches=1)
    e0 = torch.tensor([[[1.0, 0.0, 0.0]]])
    rec.record(0, 0, e0)
    rec.record(0, 1, torch.tensor([[[0.0, 2.0, 0.0]]]))
    rec.record(0, 2, torch.tensor([[[0.0, -3.0, 0.0]]]))
    assert list(rec.curve()) == [1.0, 2.0, 1.5]
    assert rec.cos_dis() == [0.0, 1.0, 2.0]


def test_bf16_residuals_are_measured_in_float32():
    g = torch.Generator().manual_seed(3)
    r0 = torch.randn(1, 64, 16, generator=g).bfloat16()
    r1 = (r0.float() * 1.003).bfloat16()
    rec = CalibrationRecorder(branches=1)
    rec.record(0, 0, r0)
    rec.record(0, 1, r1)
    ref = (r1.float().norm(dim=-1) / r0.float().norm(dim=-1)).mean().item()
    assert rec.curve()[1] == round(ref, 5)


def test_interleaving_duplicates_and_json_round_trip():
    rec = CalibrationRecorder(branches=2)
    for step in range(4):
        for b in (0, 1):
            r = torch.full((1, 3, 4), float((step + 1) * (b + 2)))
            rec.record(b, step, r)
            rec.record(b, step, r * 100)          # extra evaluation of the same step: ignored
    # cond ratios (t+1)/t, uncond the same: [1, 1, 2, 2, 1.5, 1.5, 1.33333, 1.33333]
    assert list(rec.curve()) == [1.0, 1.0, 2.0, 2.0, 1.5, 1.5, 1.33333, 1.33333]
    d = json.loads(rec.to_json())
    assert d["branches"] == 2 and d["calib_steps"] == 4 and len(d["mag_std"]) == 8
    c = parse_curve(rec.to_json())
    assert c == rec.curve() and c.branches == 2
    sch = plan_schedule(c, 10, MagCacheConfig())
    assert sch.total_calls == 20
    one = CalibrationRecorder(branches=1)
    for step in range(3):
        one.record(0, step, torch.full((1, 2, 2), step + 1.0))
    c1 = parse_curve(one.to_json())
    assert c1.branches == 1 and list(c1) == [1.0, 2.0, 1.5]


def test_recorder_bad_inputs():
    rec = CalibrationRecorder(branches=2)
    with pytest.raises(ValueError, match="branches"):
        CalibrationRecorder(branches=3)
    with pytest.raises(ValueError, match="step"):
        rec.record(0, 1, torch.ones(1, 2, 2))           # must start at step 0
    rec.record(0, 0, torch.ones(1, 2, 2))
    with pytest.raises(ValueError, match="jumps"):
        rec.record(0, 2, torch.ones(1, 2, 2))
    with pytest.raises(ValueError, match="shape"):
        rec.record(0, 1, torch.ones(1, 3, 2))
    with pytest.raises(ValueError, match="branch"):
        CalibrationRecorder(branches=1).record(1, 0, torch.ones(1, 2, 2))
    with pytest.raises(ValueError, match="at least 2"):
        rec.curve()


# ---------------------------------------------------------------- compare
def ssim_reference(a, b, c1=1e-4, c2=9e-4):
    """Independent SSIM: scipy Gaussian filter (sigma 1.5, truncate 3.5 -> 11 taps), crop the 5-px
    border (skimage's convention), mean over pixels and channels. a, b: [H, W, C] float64."""
    out = []
    for ch in range(a.shape[-1]):
        x, y = a[..., ch], b[..., ch]
        f = lambda t: gaussian_filter(t, 1.5, truncate=3.5, mode="reflect")  # noqa: E731
        mx, my = f(x), f(y)
        vx, vy, cxy = f(x * x) - mx ** 2, f(y * y) - my ** 2, f(x * y) - mx * my
        m = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
        out.append(m[5:-5, 5:-5].mean())
    return float(np.mean(out))


def test_identical_frames():
    a = torch.rand(3, 20, 24, 3)
    assert torch.isinf(psnr(a, a.clone())).all()
    assert torch.allclose(ssim(a, a.clone()), torch.ones(3, dtype=torch.float64))
    assert difference_image(a, a).abs().max() == 0


def test_psnr_constant_offset_closed_form():
    a = torch.full((2, 8, 8, 3), 0.25, dtype=torch.float64)
    for d in (0.01, 0.1, 0.5):
        p = psnr(a, a + d)
        assert torch.allclose(p, torch.full((2,), -20 * math.log10(d), dtype=torch.float64), atol=1e-9)
    p = psnr(a * 255, a * 255 + 2.55, data_range=255.0)
    assert torch.allclose(p, torch.full((2,), 40.0, dtype=torch.float64), atol=1e-9)


def test_psnr_per_frame():
    a = torch.zeros(3, 4, 4, 1)
    b = a.clone()
    b[1] += 0.1
    b[2] += 0.01
    p = psnr(a, b)
    assert math.isinf(p[0]) and p[1] == pytest.approx(20.0) and p[2] == pytest.approx(40.0)


def test_ssim_constant_frames_closed_form():
    ma, mb = 0.3, 0.6
    a, b = torch.full((1, 16, 16, 1), ma), torch.full((1, 16, 16, 1), mb)
    c1 = 1e-4
    want = (2 * ma * mb + c1) / (ma ** 2 + mb ** 2 + c1)
    assert ssim(a, b).item() == pytest.approx(want, abs=1e-6)


def test_ssim_against_independent_reference():
    g = torch.Generator().manual_seed(4)
    base = torch.rand(2, 32, 40, 3, generator=g, dtype=torch.float64)
    noisy = (base + 0.1 * torch.randn(base.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    blurred = torch.from_numpy(gaussian_filter(base.numpy(), (0, 1.0, 1.0, 0)))
    for other in (noisy, blurred):
        got = ssim(base, other)
        for i in range(2):
            assert got[i].item() == pytest.approx(ssim_reference(base[i].numpy(), other[i].numpy()), abs=1e-10)
        assert (got < 1).all() and (got > 0).all()
    assert (ssim(base, noisy) < ssim(base, (base + 0.02).clamp(0, 1))).all()


def test_difference_image_and_errors():
    a = torch.zeros(1, 12, 12, 3)
    b = torch.full((1, 12, 12, 3), 0.1)
    d = difference_image(a, b, gain=4.0)
    assert torch.allclose(d, torch.full_like(a, 0.4)) and difference_image(a, b, 100.0).max() == 1.0
    with pytest.raises(ValueError, match="same shape"):
        psnr(a, b[:, :10])
    with pytest.raises(ValueError, match="smaller"):
        ssim(torch.zeros(1, 8, 8, 3), torch.zeros(1, 8, 8, 3))
    with pytest.raises(ValueError, match="a: expected"):
        ssim(torch.zeros(8, 8, 3), torch.zeros(8, 8, 3))


def test_save_curve_numbers_files_and_never_overwrites(tmp_path):
    from magcache.calibrate import check_curve_name, save_curve
    a = save_curve('{"a": 1}', "my_model", str(tmp_path))
    b = save_curve('{"b": 2}', "my_model", str(tmp_path))
    other = save_curve('{"c": 3}', "my_model-2", str(tmp_path))
    folder = tmp_path / "atelier_magcache"
    assert [a, b, other] == [str(folder / "my_model_00001.json"), str(folder / "my_model_00002.json"),
                             str(folder / "my_model-2_00001.json")]
    assert open(a).read() == '{"a": 1}' and open(b).read() == '{"b": 2}'
    (folder / "my_model_00007.json").write_text("kept")          # the count continues after the highest
    assert save_curve("x", "my_model", str(tmp_path)).endswith("my_model_00008.json")
    assert (folder / "my_model_00007.json").read_text() == "kept"
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == []   # no temp file left
    for bad in ("", "../x", "a b", "a/b", None):
        assert "not allowed" in check_curve_name(bad)
        with pytest.raises(ValueError, match="not allowed"):
            save_curve("x", bad, str(tmp_path))
    assert check_curve_name("ok_Name-1") is None


# ---------------------------------------------------------------- one model call, as the node records it
def test_record_call_takes_the_first_chunk_of_each_branch():
    g = torch.Generator().manual_seed(4)
    by_call, by_hand = CalibrationRecorder(branches=2), CalibrationRecorder(branches=2)
    for step in range(4):
        x_in = torch.randn(6, 5, 8, generator=g, dtype=torch.float64)
        x_out = x_in + torch.randn(6, 5, 8, generator=g, dtype=torch.float64)
        by_call.record_call(step, [1, 0, 0], x_in, x_out)            # uncond, cond, a second cond: 2 rows each
        by_call.record_call(None, [1, 0, 0], x_in, 2 * x_out)        # between steps: nothing
        by_hand.record(1, step, (x_out[0:2] - x_in[0:2]).float())
        by_hand.record(0, step, (x_out[2:4] - x_in[2:4]).float())
    assert by_call.to_dict() == by_hand.to_dict() and by_call.steps == 4
    one = CalibrationRecorder(branches=1)
    with pytest.raises(ValueError, match="branch: 1 is not allowed"):
        one.record_call(0, [2], torch.zeros(1, 2, 3), torch.ones(1, 2, 3))     # any id but 0 is uncond


def test_recorder_maps_sigmas_to_steps_and_restarts_with_a_new_run():
    rec = CalibrationRecorder()
    sig = torch.tensor([1.0, 0.8, 0.5, 0.2, 0.0])
    assert [rec.step_of(sig, s) for s in (1.0, 0.8, 0.65, 0.5, 0.2)] == [0, 1, None, 2, 3]
    other = torch.tensor([0.9, 0.4, 0.0])
    assert rec.step_of(other, 0.4) == 1 and rec.step_of(other, 0.8) is None


def test_compare_frames_known_values():
    from magcache.compare import compare_frames
    a = torch.rand(2, 12, 12, 3, generator=torch.Generator().manual_seed(0)) * 0.9
    b = a.clone()
    b[1] += 0.01                                                     # MSE 1e-4: PSNR 40 dB exactly
    diff, table, mp, ms = compare_frames(a, b, 4.0)
    assert mp == pytest.approx(40.0, abs=1e-3) and ms == pytest.approx(float(ssim(a, b).mean()))
    assert torch.allclose(diff[1], torch.full_like(diff[1], 0.04)) and diff[0].abs().max() == 0
    lines = table.splitlines()
    assert lines[0] == "frame  psnr_db  ssim" and lines[1].startswith("    0      inf  1.0000")
    assert lines[2].startswith("    1    40.00  0.") and lines[3] == f" mean    40.00  {ms:.4f}"
    assert compare_frames(a, a.clone())[2] == math.inf
    with pytest.raises(ValueError, match="^test: "):
        compare_frames(a, b[:1])
    with pytest.raises(ValueError, match="^reference: must be an IMAGE batch"):
        compare_frames(a[0], b)
