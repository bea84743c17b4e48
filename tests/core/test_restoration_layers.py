"""Invariants of fill, layers, layout, export and registration."""
import numpy as np
import pytest

from _restoration_util import small_sample
from restoration.export import export_layers, read_tiff
from restoration.fill import METHODS, fill_image, grow_mask
from restoration.layers import layout, separate, simulate


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def parts():
    img, clean, gt, info = small_sample(0)
    m = (gt == 3) | (gt == 4)
    return img, clean, m


@pytest.mark.parametrize("method", [m for m in METHODS])
def test_pixels_outside_mask_bit_identical(parts, method):
    img, clean, m = parts
    filled, used = fill_image(img, m, method, external=clean if method == "external" else None)
    assert np.array_equal(used, grow_mask(m, 1))
    assert np.array_equal(filled[~used], img[~used])  # bitwise
    assert filled.dtype == np.float32
    if method == "external":
        assert np.array_equal(filled[used], clean[used])


def test_layers_same_pattern_footprint_and_alpha(parts):
    img, clean, m = parts
    filled, used = fill_image(img, m)
    lay = separate(filled, img, used, 600, "same_pattern", white_on_black=True)
    assert np.array_equal(lay.white > 0, used) and set(np.unique(lay.white)) <= {0.0, 1.0}
    assert np.array_equal(lay.color_rgba[..., 3] > 0, used)
    assert np.all(lay.color_rgba[~used] == 0)
    assert np.array_equal(lay.color_rgba[used, :3], filled[used])


def test_choke_spread_and_minimal_white(parts):
    import cv2
    img, clean, m = parts
    filled, used = fill_image(img, m)
    ch = separate(filled, img, used, 600, "choke", 0.085, white_on_black=True).white > 0  # 2 px
    er = cv2.erode(used.view(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))) > 0
    assert np.array_equal(ch, er) and ch.sum() < used.sum()
    sp = separate(filled, img, used, 600, "spread", 0.085, white_on_black=True).white > 0
    assert np.all(sp[used]) and sp.sum() > used.sum()
    # minimal_white: no white where the target is not lighter than the painting in any channel
    target = img.copy()
    target[used] = img[used] * 0.8
    mw = separate(target, img, used, 600, "minimal_white", white_on_black=True).white
    assert np.all(mw == 0)
    target[used] = np.minimum(img[used] + 0.3, 1.0)
    mw = separate(target, img, used, 600, "minimal_white", white_on_black=True).white
    assert mw[used].min() > 0 and np.all(mw[~used] == 0) and mw.max() <= 1


def test_bilayer_simulation_hides_damage(parts):
    img, clean, m = parts
    from restoration.metrics import fill_scores
    filled, used = fill_image(img, m)
    lay = separate(filled, img, used, 600)
    view = simulate(img, lay)
    s_view = fill_scores(view, clean, m)["dE00_mean"]
    s_none = fill_scores(img, clean, m)["dE00_mean"]
    assert s_view < 0.3 * s_none
    shifted = fill_scores(simulate(img, lay, shift_px=(2, 2)), clean, m)["dE00_mean"]
    assert s_view < shifted < s_none  # misregistration hurts but still beats no mask


def _white_and_color_marks(laid):
    f = laid.fiducial_mask
    return f, laid.white[f], laid.color_rgba[f]


@pytest.mark.parametrize("mirror", [False, True])
def test_fiducials_identical_in_both_layers(parts, mirror):
    img, clean, m = parts
    lay = separate(*fill_image(img, m)[:1], img, grow_mask(m, 1), 600)
    laid = layout(lay, 600, mirror=mirror)
    f, w, c = _white_and_color_marks(laid)
    assert f.sum() > 100
    assert np.all(w == 1) and np.all(c == np.array([0, 0, 0, 1], np.float32))
    # the ink footprints of both layers coincide exactly outside the image area (only the marks)
    off = laid.offset_px
    h, w_ = m.shape
    outside = np.ones(laid.white.shape, bool)
    if mirror:
        cw = laid.white.shape[1]
        outside[off:off + h, cw - off - w_:cw - off] = False
    else:
        outside[off:off + h, off:off + w_] = False
    assert np.array_equal((laid.white > 0) & outside, (laid.color_rgba[..., 3] > 0) & outside)
    for mk in laid.fiducials:
        assert laid.white[mk["y_px"], mk["x_px"]] == 1 and laid.color_rgba[mk["y_px"], mk["x_px"], 3] == 1
    mm = [(mk["x_mm"], mk["y_mm"]) for mk in laid.fiducials]
    assert all(0 < x < laid.canvas_mm[0] and 0 < y < laid.canvas_mm[1] for x, y in mm)


def test_mirroring_mirrors_both_layers(parts):
    img, clean, m = parts
    filled, used = fill_image(img, m)
    lay = separate(filled, img, used, 600)
    a = layout(lay, 600, mirror=False)
    b = layout(lay, 600, mirror=True)
    assert np.array_equal(b.white, a.white[:, ::-1])
    assert np.array_equal(b.color_rgba, a.color_rgba[:, ::-1])
    cw = a.white.shape[1]
    assert [k["x_px"] for k in b.fiducials] == [cw - 1 - k["x_px"] for k in a.fiducials]


def test_export_round_trip(parts, tmp_path):
    img, clean, m = parts
    filled, used = fill_image(img, m)
    laid = layout(separate(filled, img, used, 600), 600, mirror=True)
    files = export_layers(tmp_path, laid, 600)
    from restoration.scanio import sha256_file, to_uint
    col, dpi_c = read_tiff(tmp_path / "layer_color_rgba.tif")
    wh, dpi_w = read_tiff(tmp_path / "layer_white.tif")
    assert col.dtype == np.uint16 and col.shape == laid.color_rgba.shape and dpi_c == pytest.approx(600)
    assert wh.dtype == np.uint8 and wh.shape == laid.white.shape and dpi_w == pytest.approx(600)
    assert np.array_equal(col, to_uint(laid.color_rgba, 16)) and np.array_equal(wh, to_uint(laid.white, 8))
    h, w = wh.shape
    assert laid.canvas_mm == pytest.approx([w * 25.4 / 600, h * 25.4 / 600], abs=1e-3)
    assert laid.canvas_mm[0] == pytest.approx(img.shape[1] * 25.4 / 600 + 20, abs=0.05)  # 10 mm margins
    for f in files:
        assert f["sha256"] == sha256_file(tmp_path / f["path"])
    # PDF page size is the physical size (points = 1/72 inch)
    from PIL import Image
    pdf = (tmp_path / "print_layers.pdf").read_bytes()
    import re
    box = [float(v) for v in re.search(rb"/MediaBox \[\s*([\d.]+) ([\d.]+) ([\d.]+) ([\d.]+)", pdf).groups()]
    assert box[2] == pytest.approx(w / 600 * 72, abs=0.1) and box[3] == pytest.approx(h / 600 * 72, abs=0.1)
    assert not list(tmp_path.glob("*.part"))


def test_registration_recovers_subpixel_shift():
    import cv2
    img, clean, _, _ = small_sample(2)
    M = np.float32([[1, 0, 3.3], [0, 1, -1.2]])
    cap = cv2.warpAffine(clean, M, (clean.shape[1], clean.shape[0]), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    from restoration.register import registration_check
    r = registration_check(cap, clean, 600, motion="translation")
    assert r["shift_px"][0] == pytest.approx(3.3, abs=0.25) and r["shift_px"][1] == pytest.approx(-1.2, abs=0.25)
    assert r["rms_um"] == pytest.approx(np.hypot(3.3, 1.2) * 25400 / 600, rel=0.1)
    r = registration_check(cap, clean, 600, motion="homography")
    assert r["shift_px"][0] == pytest.approx(3.3, abs=0.25)


def _texture(h=200, w=260):
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([0.5 + 0.4 * np.sin(2 * np.pi * xx / 12), 0.5 + 0.4 * np.sin(2 * np.pi * (xx + yy) / 17),
                     0.4 + 0.2 * ((yy // 8) % 2)], -1).astype(np.float32)


def test_patch_fill_continues_a_pattern_that_harmonic_smooths_away():
    tex = _texture()
    m = np.zeros(tex.shape[:2], bool)
    for y, x in [(40, 40), (100, 150), (150, 60), (60, 200)]:
        m[y:y + 14, x:x + 10] = True
    img = tex.copy()
    img[m] = 0.05
    err = {}
    for method in ("harmonic", "patch"):
        f, used = fill_image(img, m, method, grow_px=0)
        assert np.array_equal(f[~used], img[~used])
        err[method] = float(np.abs(f - tex)[used].mean())
    # measured: patch 0.000 (the periodic texture has exact copies nearby), harmonic 0.165
    assert err["patch"] < 0.01 and err["harmonic"] > 0.1


def test_patch_fill_copies_only_from_the_source_mask_and_falls_back_for_wide_holes():
    from restoration.fill import patch_fill
    tex = _texture()
    img = tex.copy()
    img[:, 140:] = 0.5  # the right part is flat: a copy from there carries no pattern
    m = np.zeros(tex.shape[:2], bool)
    m[80:92, 60:70] = True  # a hole in the patterned left part
    img[m] = 0.0
    src = np.zeros_like(m)
    src[:, 140:] = True  # copies may only come from the flat part
    free, rest_free = patch_fill(img, m, search_px=200)
    only, rest = patch_fill(img, m, source=src, search_px=200)
    assert not rest.any() and not rest_free.any()
    err_free = float(np.abs(free - tex)[m].mean())
    err_only = float(np.abs(only - tex)[m].mean())
    assert err_free < 0.01 and err_only > 0.1, (err_free, err_only)  # the pattern came from the left only when allowed
    # a hole wider than max_side is left for the caller, and fill_image gives it the harmonic fill
    big = np.zeros_like(m)
    big[20:30, 10:250] = True
    out, rest = patch_fill(tex, big, max_side=64)
    assert np.array_equal(rest, big) and np.array_equal(out, tex)
    tex2 = _texture(120, 400)
    wide = np.zeros(tex2.shape[:2], bool)
    wide[20:30, 10:390] = True  # 380 px > the default max_side of 256
    f_patch, _ = fill_image(tex2, wide, "patch", grow_px=0)
    f_harm, _ = fill_image(tex2, wide, "harmonic", grow_px=0)
    assert np.array_equal(f_patch, f_harm)
