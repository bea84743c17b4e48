"""The exemplar fill's search and seam, pinned against their direct forms (issue 21 item 4, speed).

The search scores are a weighted mean squared difference expanded into plain correlations
(sum w I^2 - 2 sum w T I + sum w T^2); OpenCV's masked ``TM_SQDIFF`` (mask sqrt(w)) is the direct form the
fill used first. The seam is one membrane of (rim - beta * copy) instead of two; the membrane is linear, so
both give the same. Known values, random templates and masks, and a real photograph.
"""
import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from restoration import exemplar as E


def _masked(win, tpl, wt):
    """The direct form: OpenCV's masked TM_SQDIFF, per channel value."""
    c = win.shape[2]
    d = cv2.matchTemplate(win, tpl, cv2.TM_SQDIFF, mask=np.ascontiguousarray(np.repeat(np.sqrt(wt)[..., None], c, 2)))
    return d / (c * wt.sum())


@pytest.mark.parametrize("seed", range(4))
def test_expanded_scores_equal_the_masked_template_match(seed):
    rng = np.random.default_rng(seed)
    th, tw = rng.integers(5, 23, 2)
    win = rng.random((th + 60, tw + 50, 3)).astype(np.float32)
    tpl = rng.random((th, tw, 3)).astype(np.float32)
    wt = rng.choice(np.array([0.0, 0.5, 1.0], np.float32), (th, tw))
    wt[0, 0] = 1.0
    tpl[wt == 0] = 0
    ref = _masked(win, tpl, wt)
    assert np.allclose(E._ssd(win, tpl, wt), ref, atol=2e-5)
    sc = E._scan_maps(win, np.zeros(win.shape[:2], bool), 22)
    lum, lum2 = sc.lum, sc.lum2
    ref1 = _masked(np.ascontiguousarray(lum[..., None]), np.ascontiguousarray((tpl @ E._LUM)[..., None]), wt)
    assert np.allclose(E._ssd_grey(lum, lum2, tpl @ E._LUM, wt), ref1, atol=2e-5)
    # a known value: the template cut from the window scores 0 where it was cut
    y, x = 17, 23
    exact = np.where((wt > 0)[..., None], win[y:y + th, x:x + tw], 0).astype(np.float32)
    assert E._ssd(win, exact, wt)[y, x] < 1e-5


def test_chosen_candidates_are_the_same_on_a_real_picture():
    skd = pytest.importorskip("skimage.data")
    img = np.ascontiguousarray(skd.astronaut()[100:300, 150:350].astype(np.float32) / 255)
    dmg = np.zeros(img.shape[:2], bool)
    dmg[60:75, 40:52] = True
    dmg[140:150, 120:180] = True
    sc = E._scan_maps(img, dmg, 22)
    lum, lum2 = sc.lum, sc.lum2
    ii = cv2.integral(dmg.view(np.uint8))
    n = 0
    for (y, x) in ((95, 95), (30, 130), (120, 40), (155, 100)):
        tpl = img[y:y + 22, x:x + 22] * np.float32(1)
        wt = np.ones((22, 22), np.float32)
        wt[5:17, 5:17] = 0                                   # the piece: nothing known
        wt[5:17, 3:5] = 0.5                                  # pixels filled earlier
        tpl = np.where((wt > 0)[..., None], tpl, 0).astype(np.float32)
        tl = np.ascontiguousarray(tpl @ E._LUM)
        holds_damage = E._box_sum(ii, 22, 22) > 0
        assert np.array_equal(holds_damage, sc.bad[:179, :179].view(bool))
        new = E._ssd_grey(lum, lum2, tl, wt)
        old = _masked(np.ascontiguousarray(lum[..., None]), tl[..., None], wt)
        new[holds_damage], old[holds_damage] = np.inf, np.inf
        a, b = E._best_places(new, 8, 3), E._best_places(old, 8, 3)
        assert [p[:2] for p in a] == [p[:2] for p in b]
        assert np.allclose([p[2] for p in a], [p[2] for p in b], atol=2e-5)
        assert a[0][:2] == (y, x) and a[0][2] < 1e-5              # the template's own place comes first
        n += len(a)
    assert n == 32


def test_one_membrane_of_the_difference_equals_the_two_membranes():
    rng = np.random.default_rng(7)
    tpl = rng.random((22, 20, 3)).astype(np.float32)
    src = rng.random((22, 20, 3)).astype(np.float32)
    known = np.ones((22, 20), bool)
    known[5:17, 5:15] = False
    tpl[~known] = 0
    for beta in (0.0, 0.37, 1.0):
        two = E._membrane(np.concatenate([tpl, src], 2), known)
        ref = two[..., :3] + beta * (src - two[..., 3:])
        bs = np.float32(beta) * src
        one = E._membrane(tpl - bs, known) + bs
        assert np.allclose(one, ref, atol=1e-5)
        assert np.allclose(one[known], tpl[known], atol=1e-6)           # the rim is held


@pytest.mark.parametrize("side", [3, 22])
def test_the_scan_wide_damage_box_map_equals_the_per_window_integral(side):
    rng = np.random.default_rng(side)
    dmg = rng.random((90, 70)) > 0.995
    dmg[0, 0] = dmg[89, 69] = dmg[40, 0] = True
    sc = E._scan_maps(np.zeros((90, 70, 3), np.float32), dmg, side)
    ref = E._box_sum(cv2.integral(dmg.view(np.uint8)), side, side) > 0
    assert ref.any() and (~ref).any()
    assert np.array_equal(sc.bad[:90 - side + 1, :70 - side + 1].view(bool), ref)


def test_a_flat_rim_gets_the_membrane_without_a_search(monkeypatch):
    """Pieces whose rim varies less than flat_var skip the search (their copy could add at most that little
    detail); a textured rim is searched."""
    calls = []
    real = E._search_raw
    monkeypatch.setattr(E, "_search_raw", lambda *a: calls.append(1) or real(*a))
    rng = np.random.default_rng(3)
    flat = np.clip(0.5 + 0.003 * rng.standard_normal((96, 96, 1)), 0, 1).repeat(3, 2).astype(np.float32)
    mask = np.zeros((96, 96), bool)
    mask[40:48, 40:48] = True
    out, rest = E.exemplar_fill(flat, mask)
    assert not calls and not rest.any()
    assert np.abs(out[mask] - 0.5).max() < 0.01                     # the membrane of a flat rim
    out0, _ = E.exemplar_fill(flat, mask, E.ExemplarConfig(flat_var=0.0))
    assert calls                                                    # searched when the skip is off
    assert np.abs(out0[mask] - out[mask]).max() < 0.02
    calls.clear()
    yy, xx = np.mgrid[0:96, 0:96]
    stripes = np.repeat((0.5 + 0.3 * np.sin(xx / 3.0))[..., None], 3, 2).astype(np.float32)
    E.exemplar_fill(stripes, mask)
    assert calls


@pytest.mark.parametrize("seed", range(3))
def test_the_exact_seam_membrane_is_what_the_jacobi_sweeps_converge_to(seed):
    """The banded Cholesky solve of the seam's Laplace equation equals many Jacobi sweeps of it (holes of
    any shape, holes touching the box's border, a lone unknown pixel) and holds the rim."""
    rng = np.random.default_rng(seed)
    for _ in range(6):
        h, w = rng.integers(2, 23, 2)
        known = rng.random((h, w)) < rng.uniform(0.2, 0.9)
        known[rng.integers(h), rng.integers(w)] = True
        resid = rng.random((h, w, 3)).astype(np.float32)
        exact = E._membrane_exact(resid, known)
        assert np.array_equal(exact[known], resid[known])
        assert np.allclose(exact, E._membrane(resid, known, 6000), atol=2e-4)
    one = np.ones((5, 5), bool)
    one[2, 2] = False
    r = np.arange(75, dtype=np.float32).reshape(5, 5, 3)
    assert np.allclose(E._membrane_exact(r, one)[2, 2], (r[1, 2] + r[3, 2] + r[2, 1] + r[2, 3]) / 4)


@pytest.mark.parametrize("seed", range(2))
def test_a_batch_of_membranes_gives_each_box_its_own_solution_bit_for_bit(seed):
    """Boxes solved together (one block-diagonal banded system, :func:`restoration.exemplar._membrane_batch`) get
    what each gets solved alone, bit for bit, whatever the batch holds (boxes of other sizes, a wide one that
    widens the band, all known, one unknown, none known), and each solves its Laplace equation."""
    rng = np.random.default_rng(seed)
    boxes = []
    for q in range(40):
        h, w = (14, 14) if q % 3 else tuple(int(v) for v in rng.integers(1, 17, 2))
        if q == 7:
            h, w = 31, 40
        known = rng.random((h, w)) < rng.uniform(0.1, 0.9)
        if q == 5:
            known[:] = True
        if q == 9:
            known[:] = True
            known[h // 2, w // 2] = False
        if q == 11:
            known[:] = False
        boxes.append((rng.random((h, w, 3)).astype(np.float32) * known[..., None], known))
    alone = [E._membrane_exact(r, k) for r, k in boxes]
    for order in (list(range(40)), list(rng.permutation(40))):
        for lo, hi in ((0, 40), (3, 17), (7, 8)):
            got = E._membrane_batch([boxes[i] for i in order[lo:hi]])
            for i, x in zip(order[lo:hi], got):
                assert x.shape == boxes[i][0].shape and np.array_equal(x.view(np.uint32), alone[i].view(np.uint32))
    for (r, k), x in zip(boxes, alone):
        assert np.array_equal(x[k], r[k])
        if k.any() and not k.all():   # (deg + eps) x = the sum of the box neighbours + eps * the known mean
            h, w = k.shape
            p = np.pad(x.astype(np.float64), ((1, 1), (1, 1), (0, 0)))
            inb = np.pad(np.ones((h, w)), 1)
            nb = p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:]
            deg = inb[:-2, 1:-1] + inb[2:, 1:-1] + inb[1:-1, :-2] + inb[1:-1, 2:]
            mean = r[k].astype(np.float64).mean(0)
            lhs = (deg[..., None] + E._EPS) * x - nb - E._EPS * mean
            assert np.abs(lhs[~k]).max() < 1e-4


def test_the_exact_seam_membrane_reproduces_a_ramp_and_is_the_default():
    """A linear ramp is harmonic: the exact membrane gives it back inside a hole (24 Jacobi sweeps from a
    blurred start do not); the default fill uses the exact solve for every box of a piece and its band."""
    yy, xx = np.mgrid[0:22, 0:22].astype(np.float32)
    ramp = np.stack([0.01 * yy, 0.02 * xx, 0.01 * (xx + yy)], -1).astype(np.float32)
    known = np.ones((22, 22), bool)
    known[4:18, 3:19] = False
    assert np.abs(E._membrane_exact(np.where(known[..., None], ramp, 0).astype(np.float32), known) - ramp).max() < 1e-5
    assert np.abs(E._membrane(np.where(known[..., None], ramp, 0).astype(np.float32), known, 24) - ramp).max() > 1e-3
    cfg = E.ExemplarConfig()
    assert cfg.seam_exact >= (cfg.piece + 2 * cfg.band) ** 2


def test_the_seam_solves_run_with_one_blas_thread(monkeypatch):
    """The banded solves are tiny: a BLAS thread pool only slows them (several times on a loaded machine), so
    the fill holds BLAS at one thread while it runs and gives the caller's setting back after."""
    tpc = pytest.importorskip("threadpoolctl")
    seen = []
    real = E._membrane_batch
    monkeypatch.setattr(E, "_membrane_batch", lambda *a: seen.append(
        [i["num_threads"] for i in tpc.threadpool_info() if i["user_api"] == "blas"]) or real(*a))
    img = np.repeat((0.5 + 0.3 * np.sin(np.arange(64) / 3.0))[None, :, None], 48, 0).repeat(3, 2)
    mask = np.zeros((48, 64), bool)
    mask[20:26, 20:40] = True
    with tpc.threadpool_limits(limits=2, user_api="blas"):
        before = [i["num_threads"] for i in tpc.threadpool_info() if i["user_api"] == "blas"]
        E.exemplar_fill(img.astype(np.float32), mask)
        after = [i["num_threads"] for i in tpc.threadpool_info() if i["user_api"] == "blas"]
    assert seen and all(n == 1 for s in seen for n in s)
    assert after == before
