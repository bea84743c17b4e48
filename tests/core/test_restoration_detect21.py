"""Issue 21: no confident false loss, a loss never merged with a thin line, the film margin, the ground
found on a noisy gesso and checked, and the benchmark's split and held-out goals (reduced).

The held-out check runs the first three held-out pictures of the committed split (alphabetical, chosen
before any result was seen) at 256 px, one case each, with the goals of the full benchmark
(bench/bench_restoration_split.py) as assertions.
"""
import ast
import pathlib

import numpy as np
import pytest
import torch

from restoration.classes import CLASS_IDS
from restoration.color import ciede2000, rgb_to_lab
from restoration.detect import DetectConfig, detect_damage
from restoration.settings import SETTINGS

GESSO = (0.86, 0.80, 0.68)


pytestmark = pytest.mark.usefixtures("single_thread")


def _paint(h=256, w=320, seed=0, dark=0.5):
    """Darker textured paint: a real photograph (scikit-image's camera, a tune-half picture) toned brown."""
    from restoration.realbench import picture
    a = picture("camera", 320)[:h, :w]
    rng = np.random.default_rng(seed)
    return np.clip(a * np.array([0.9, 0.7, 0.5], np.float32) * dark + rng.normal(0, 0.004, a.shape), 0, 1).astype(np.float32)


def _losses(img, seed=0, n=10, noise=0.03, ground=GESSO):
    """Noisy cream gesso losses (discs and blobs) drawn into ``img``; returns (img, loss mask)."""
    import cv2
    rng = np.random.default_rng(seed)
    h, w = img.shape[:2]
    m = np.zeros((h, w), np.uint8)
    for _ in range(n):
        cv2.ellipse(m, (int(rng.uniform(20, w - 20)), int(rng.uniform(20, h - 20))),
                    (int(rng.uniform(5, 14)), int(rng.uniform(4, 10))), float(rng.uniform(0, 180)), 0, 360, 1, -1)
    loss = m > 0
    gesso = np.array(ground, np.float32) + rng.normal(0, noise, (h, w, 1)).astype(np.float32)
    out = img.copy()
    out[loss] = np.clip(gesso[loss], 0, 1)
    return out, loss


def test_noisy_cream_gesso_among_darker_paint_is_found_by_default():
    # issue 21: per-pixel noise 0.03 on the gesso; the defaults took the ground from a painted area and found
    # almost no loss (F1 0.00-0.03), and a given ground gave masks full of holes
    img, loss = _losses(_paint(), 1, 12)
    det = detect_damage(img, 600)
    g = det["params"]["grounds"][0]
    de = float(ciede2000(torch.tensor(g["lab"], dtype=torch.float64), rgb_to_lab(torch.tensor(GESSO, dtype=torch.float64))))
    assert de < 2.0, g
    assert g["noise_L"] > 1.0 and g["spread_de"] is not None          # reported with its spread and noise
    found = det["classes"] == CLASS_IDS["loss"]
    tp = (found & loss).sum()
    f1 = 2 * tp / (found.sum() + loss.sum())
    assert f1 >= 0.9, f1
    # no holes: inside each true loss (eroded by 1 px) nearly every pixel is found
    import cv2
    inner = cv2.erode(loss.view(np.uint8), np.ones((3, 3), np.uint8)) > 0
    assert found[inner].mean() >= 0.98
    given = detect_damage(img, 600, DetectConfig(ground_rgb=GESSO))
    gl = given["classes"] == CLASS_IDS["loss"]
    assert given["params"]["grounds"][0]["rgb"] == list(GESSO)
    assert gl[inner].mean() >= 0.98


def test_flat_highlight_near_the_ground_is_never_a_confident_loss():
    # a flat, smooth painted highlight 3 dE00 off a noisy gesso ground, with an edge that blends: the
    # losses of the picture are noisy gesso with broken edges; the highlight is listed for review, not filled
    import cv2
    from restoration import stages
    from restoration.regions import RegionConfig
    from restoration.review import ReviewConfig
    img, loss = _losses(_paint(seed=2), 3, 14)
    hl = np.zeros(loss.shape, np.uint8)
    cv2.line(hl, (40, 230), (200, 205), 1, 9)
    hl = (hl > 0) & ~cv2.dilate(loss.view(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    col = np.array([0.83, 0.775, 0.66], np.float32)   # about 2-3 dE00 from the gesso, no gesso noise
    a = cv2.GaussianBlur(hl.astype(np.float32), (0, 0), 1.2)[..., None]
    img = (img * (1 - a) + col * a).astype(np.float32)
    dmap = stages.detect(img, 600, DetectConfig())
    table = stages.regions(img, dmap, 600, RegionConfig(), ReviewConfig())
    fill = table.footprint("fill")
    assert (fill & hl).sum() <= 0.02 * hl.sum(), (fill & hl).sum()
    assert fill[loss].mean() >= 0.8     # the real losses are still filled


def test_a_loss_touching_a_thin_light_line_is_split_at_the_neck():
    # issue 21: a real loss touching a thin light line (a window-frame highlight) was merged with the line
    import cv2
    from restoration import stages
    from restoration.regions import RegionConfig
    from restoration.review import ReviewConfig
    img, loss = _losses(_paint(seed=3), 4, 16, noise=0.01)
    line = np.zeros(loss.shape, np.uint8)
    cv2.line(line, (20, 128), (300, 128), 1, 2)
    line = (line > 0) & ~loss
    img[line] = np.array(GESSO, np.float32) * 1.02
    blob = np.zeros(loss.shape, np.uint8)
    cv2.circle(blob, (160, 138), 10, 1, -1)      # touches the line
    blob = blob > 0
    img[blob] = np.clip(np.array(GESSO, np.float32) + np.random.default_rng(5).normal(0, 0.01, (int(blob.sum()), 1)), 0, 1)
    line &= ~blob
    dmap = stages.detect(img, 600, DetectConfig())
    table = stages.regions(img, dmap, 600, RegionConfig(), ReviewConfig())
    fill = table.footprint("fill")
    far = line & ~(cv2.dilate((blob | loss).view(np.uint8), np.ones((9, 9), np.uint8)) > 0)
    assert fill[blob].mean() >= 0.9
    # the line is cut from every loss it touches; a few pixels can stay where it ends inside another loss's rim
    assert (fill & far).sum() <= 0.03 * far.sum(), int((fill & far).sum())
    lab = table.labels
    ids = set(np.unique(lab[blob])) - {0}
    assert not (set(np.unique(lab[far])) & ids)       # the line is no part of the loss's region


def test_film_margin_never_grows_into_intact_paint():
    from restoration.layers import film_margin
    img = np.full((40, 40, 3), 0.3, np.float32)
    img[10:20, 10:20] = 0.9
    img[9, 10:20] = 0.6                       # the anti-aliased rim above the loss
    m = np.zeros((40, 40), bool)
    m[10:20, 10:20] = True
    f = film_margin(m, img, 2)
    assert f[9, 10:20].all()                  # the rim the loss touched
    assert not f[20:, :].any() and not f[:, 20:].any() and not f[:, :10].any()   # intact paint
    assert not f[:9].any()
    assert (film_margin(m, img, 0) == m).all()


def test_the_ground_is_checked_against_what_it_finds():
    img, _ = _losses(_paint(seed=4), 5, 1)   # one loss only: a ground given that explains nothing
    det = detect_damage(img, 600, DetectConfig(ground_rgb=(0.2, 0.6, 0.2)))
    assert det["params"]["ground_check"] and "explains 0 region" in det["params"]["ground_check"]
    ok = detect_damage(_losses(_paint(seed=4), 5, 12)[0], 600)
    assert ok["params"]["ground_check"] is None and ok["params"]["grounds"][0]["explains_regions"] >= 8


def test_ground_tolerance_is_one_record_for_node_cli_and_config():
    import importlib
    rec = SETTINGS["ground_tolerance_de"]
    assert rec.flag == "--ground-tolerance-de" and rec.default == DetectConfig().ground_tolerance_de
    with pytest.raises(ValueError, match="ground_tolerance_de"):
        DetectConfig(ground_tolerance_de=-1.0)
    main = importlib.import_module("restoration.__main__")
    assert "ground_tolerance_de" in main.CLI_SETTINGS
    src = (pathlib.Path(__file__).resolve().parents[2] / "nodes" / "restoration_nodes.py").read_text()
    assert '"ground_tolerance_de"' in src


def test_the_split_is_committed_real_and_from_several_sources():
    from restoration.realbench import SOURCES, load_split
    split = load_split()
    tune, held = set(split["tune"]), set(split["held_out"])
    assert not tune & held and tune | held == set(split["all"]) == set(SOURCES)
    assert len(SOURCES) >= 20 and len(held) >= 10
    assert len({SOURCES[n][0] for n in SOURCES}) >= 3
    assert len({SOURCES[n][0] for n in held}) >= 2


def test_the_generator_does_not_use_the_detector():
    src = (pathlib.Path(__file__).resolve().parents[2] / "restoration" / "benchgen.py").read_text()
    mods = {n.module for n in ast.walk(ast.parse(src)) if isinstance(n, ast.ImportFrom)}
    mods |= {a.name for n in ast.walk(ast.parse(src)) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in mods if m and any(k in m for k in ("detect", "losses", "review", "regions", "stages"))}


HELD_SMALL = ("chelsea", "china", "coffee")   # the first three held-out pictures (alphabetical)
#: goals this detector misses on the reduced check (256 px, case 0), measured once and kept as they are: strict, so
#: a change that meets a goal must say so here
MISSED: dict = {}   # (chelsea, every loss listed for review at 256 px before the grain rulings of the ground, meets them now)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.xfail(reason=MISSED[n], strict=True))
                                  if n in MISSED else n for n in HELD_SMALL])
def test_held_out_goals_reduced(name):
    from restoration.realbench import GOALS21, evaluate_case, load_split
    assert name in load_split()["held_out"]
    s = evaluate_case(name, 0, max_side=256)
    for k, (op, v) in GOALS21.items():
        assert (s[k] <= v if op == "<=" else s[k] >= v), (k, s[k], v, s)


def _features(**over):
    """Per-component features (index 0 = none, 1 = the component) as component_features returns them."""
    f = {"n": np.array([0, 400.0]), "lab": np.array([[0, 0, 0], [80.0, 3.0, 15.0]]), "std_L": np.array([0, 0.8]),
         "contrast": np.array([0, 20.0]), "edge_frac": np.array([0, 1.0]), "sharp_frac": np.array([0, 0.95]),
         "noise_L": np.array([np.nan, 2.0])}
    for k, v in over.items():
        f[k] = np.array([f[k][0], v], dtype=np.float64) if k != "lab" else np.array([[0, 0, 0], v], np.float64)
    return f


def test_two_doubts_make_a_loss_unlike_its_ground_one_does_not():
    # issue 21: evidence that is not damning alone (colour towards the edge of the ground's tolerance, an edge
    # that blends, a texture off the losses') sends a region to review only when two of them meet
    from restoration.losses import EVIDENCE, loss_confidence
    cfg = DetectConfig()
    g = {"lab": [80.0, 3.0, 15.0], "support": 20, "match_de": 2.0, "noise_ref_L": 2.0, "flat_ref_L": 0.8}
    # a colour 1.6 dE00 from the ground: within the tolerance 2.0, beyond 0.6 x of it
    lab_near = [80.0, 3.0, 15.0]
    for dl in np.linspace(0.5, 3.0, 51):
        cand = [80.0 + dl, 3.0, 15.0]
        if float(ciede2000(torch.tensor(cand, dtype=torch.float64), torch.tensor(g["lab"], dtype=torch.float64))) >= 1.6:
            lab_near = cand
            break
    assert lab_near != [80.0, 3.0, 15.0]
    unlike = EVIDENCE["unlike_ground"]
    # texture 1.4 against the losses' 2.0 (ratio 0.7: a doubt, not beyond loss_noise_ratio); flatness 2.0 against
    # 0.8 (above 1.5 x + 0.5, below 2 x + 0.5)
    cases = {"none": ({}, False), "colour": ({"lab": lab_near}, False), "edge": ({"sharp_frac": 0.6}, False),
             "texture": ({"noise_L": 1.4}, False), "colour+edge": ({"lab": lab_near, "sharp_frac": 0.6}, True),
             "edge+texture": ({"sharp_frac": 0.6, "noise_L": 1.4}, True),
             "colour+flatness": ({"lab": lab_near, "std_L": 2.0}, True)}
    for name, (over, doubtful) in cases.items():
        conf, bits = loss_confidence(_features(**over), [g], cfg)
        assert bool(bits[1] & unlike) == doubtful, name
        assert (conf[1] / 255 < 0.6) == doubtful, (name, conf[1])   # below the default min_confidence: review


def _ground_losses(ground, n=34, seed=4):
    """Many small losses of one ground colour (per-pixel noise 0.012) on toned paint: (img, loss)."""
    return _losses(_paint(seed=seed), seed, n, noise=0.012, ground=ground)


def test_a_tinted_neutral_ground_is_confirmed_a_saturated_one_never():
    # issue 21: a greenish chalk ground (outside the warm hues) shared by many losses was never confirmed, so
    # every loss went to review; a saturated colour of an unusual hue is paint and stays unconfirmed
    from restoration import stages
    from restoration.regions import RegionConfig
    from restoration.review import ReviewConfig
    out = {}
    for name, ground in (("chalk", (0.79, 0.83, 0.68)), ("blue", (0.25, 0.40, 0.75))):
        img, loss = _ground_losses(ground)
        dmap = stages.detect(img, 600, DetectConfig())
        table = stages.regions(img, dmap, 600, RegionConfig(), ReviewConfig())
        g = dmap.params["grounds"][0] if dmap.params["grounds"] else {}
        out[name] = (g.get("plausible"), table.footprint("fill")[loss].mean(), loss)
    assert out["chalk"][0] == "tinted" and out["chalk"][1] >= 0.8, out["chalk"][:2]
    assert out["blue"][0] != "tinted" and out["blue"][1] <= 0.05, out["blue"][:2]


def test_a_painting_with_two_grounds_reports_both_from_its_losses():
    # issue 21 item 2: the ground is estimated from the candidate losses themselves, several candidate grounds
    # where a painting has more than one, each with its spread: noisy cream gesso losses on one half,
    # red-brown bole losses on the other
    img, loss_a = _losses(_paint(seed=6), 6, 12, noise=0.02)
    bole = (0.45, 0.26, 0.17)
    img2, loss_b = _losses(_paint(seed=6), 7, 12, noise=0.01, ground=bole)
    half = np.zeros(loss_a.shape, bool)
    half[:, 160:] = True
    img = np.where(half[..., None], img2, img).astype(np.float32)
    det = detect_damage(img, 600)
    cands = det["params"]["ground_candidates"]
    lab = lambda c: torch.tensor(c, dtype=torch.float64)
    for true in (GESSO, bole):
        t = rgb_to_lab(lab(true))
        de = [float(ciede2000(lab(c["lab"]), t)) for c in cands]
        k = int(np.argmin(de))
        assert de[k] < 3.0 and cands[k]["support"] >= 3 and cands[k]["spread_de"] is not None, (true, cands)
    # the paint between them is no candidate ground: every reported candidate is one of the two
    assert all(min(float(ciede2000(lab(c["lab"]), rgb_to_lab(lab(t)))) for t in (GESSO, bole)) < 6 for c in cands
               if c["support"] >= 3)


def test_a_part_off_the_losses_colour_is_cut_from_its_loss():
    # a loss touching flat paint of a colour near the ground's, wider than a neck (a highlight stroke): the
    # part off the colour the picture's losses share becomes its own component; a loss whose colour drifts
    # within that spread (the ground's own texture) is never cut
    from restoration.losses import RESP_SCALE, split_unlike
    rng = np.random.default_rng(0)
    h, w = 120, 200
    labels = np.zeros((h, w), np.int32)
    de = np.abs(rng.normal(0.0, 0.5, (h, w)))            # ground pixels: dE00 about 0.4 to the ground
    for i, x in enumerate(range(10, 190, 30)):
        labels[10:30, x:x + 20] = i + 1                   # six plain losses
    labels[60:90, 20:60] = 7                              # a loss ...
    labels[68:82, 60:120] = 7                             # ... with a highlight stroke 14 px wide joined to it
    de[68:82, 62:120] = 3.0 + rng.normal(0, 0.1, (14, 58))
    labels[60:95, 140:190] = 8                            # a loss whose colour drifts by 1 dE00 across it
    de[60:95, 140:190] += np.linspace(0, 1.0, 50)[None, :]
    de8 = np.clip(de * RESP_SCALE, 0, 255).astype(np.uint8)
    keep = np.ones(9, bool)
    keep[0] = False
    out, stats = split_unlike(labels, de8, keep, DetectConfig())
    assert stats["cut"] == 1 and 1.0 < stats["split_de"] < 3.0
    body = set(np.unique(out[60:90, 20:55])) - {0}
    part = set(np.unique(out[70:80, 70:118])) - {0}
    assert len(body) == 1 and len(part) == 1 and body != part
    assert (out[labels == 8] > 0).all() and len(set(np.unique(out[labels == 8]))) == 1   # drift: kept whole
    assert (out[labels == 3] > 0).all()
    cut = (labels > 0) & (out == 0)                        # only the one-pixel cut between body and part is dropped
    assert cut.sum() <= 3 * 14 and cut[:, :55].sum() == 0


def test_a_ground_few_candidates_vote_for_is_confirmed_by_the_losses_it_explains():
    # issue 21 item 2 (the ground checked against what it finds): three losses large enough to vote and twelve
    # small ones of the same gesso; the ground has 3 voters (fewer than ground_min_regions) but its 15 losses
    # agree with it, so it is confirmed (confidence 1, filled) instead of every loss going to review
    import cv2
    rng = np.random.default_rng(8)
    img = _paint(seed=8)
    h, w = img.shape[:2]
    m = np.zeros((h, w), np.uint8)
    for i in range(3):
        cv2.circle(m, (40 + 100 * i, 60), 9, 1, -1)
    for i in range(12):
        x, y = 25 + 24 * i, 150 + 40 * (i % 3)
        m[y:y + 4, x:x + 4] = 1
    loss = m > 0
    img[loss] = (np.array(GESSO, np.float32) + rng.normal(0, 0.004, (h, w, 1)).astype(np.float32))[loss]
    for k, want in ((6, 255), (100, 128)):      # ground_confirm_losses beyond the losses found: unconfirmed
        det = detect_damage(img, 600, DetectConfig(ground_confirm_losses=k))
        g = det["params"]["grounds"][0]
        assert g["support"] < DetectConfig().ground_min_regions <= g["losses_agree"]
        assert g.get("confirmed_by") == ("losses" if k == 6 else None)
        found = loss & (det["classes"] == CLASS_IDS["loss"])
        assert found.sum() >= 0.9 * loss.sum()
        assert np.median(det["confidence"][found]) == want


def test_the_ground_is_the_grainy_mode_not_a_better_supported_flat_paint():
    # issue 21 (held-out shape reproduced on tune pictures: brick, clock, gravel cases whose auto ground was a
    # flat passage of paint): 24 smooth flat patches of a warm paint outnumber 10 noisy gesso losses; the
    # ground is the gesso (its candidates show the ground's grain), the paint is reported as a second candidate
    import cv2
    from restoration.detect import candidate_grounds
    img, loss = _losses(_paint(seed=9), 9, 10, noise=0.02)
    rng = np.random.default_rng(10)
    h, w = img.shape[:2]
    flat = np.zeros((h, w), np.uint8)
    for _ in range(24):
        x, y = int(rng.uniform(15, w - 15)), int(rng.uniform(15, h - 15))
        cv2.rectangle(flat, (x - 5, y - 4), (x + 5, y + 4), 1, -1)
    flat = (flat > 0) & ~(cv2.dilate(loss.view(np.uint8), np.ones((7, 7), np.uint8)) > 0)
    paint = (0.62, 0.50, 0.36)
    img[flat] = np.array(paint, np.float32)
    lab = lambda c: rgb_to_lab(torch.tensor(c, dtype=torch.float64))
    de = lambda g, c: float(ciede2000(torch.tensor(g["lab"], dtype=torch.float64), lab(c)))
    g = candidate_grounds(img, 600.0, DetectConfig())
    assert de(g[0], GESSO) < 2.0 and g[0]["noise_L"] >= DetectConfig().loss_noise_floor
    assert any(de(x, paint) < 1.0 and x["support"] > g[0]["support"] for x in g[1:])
    # with the grain not measured (floor above any noise) the better-supported flat paint would win
    smooth = candidate_grounds(img, 600.0, DetectConfig(loss_noise_floor=100.0))
    assert de(smooth[0], paint) < 1.0
    assert de(detect_damage(img, 600)["params"]["grounds"][0], GESSO) < 2.0


def test_a_given_ground_seeds_within_its_tolerance_but_fills_only_close_matches():
    # the user's ground is used as given and its tolerance (5 dE00) decides what seeds a loss. The given colour is
    # 1 dE00 off the losses (as a measured colour can be), so 3 x their median distance would allow 3 dE00; noisy
    # flat paint 2.75 dE00 off the given colour (the gesso's own grain) is found (within the tolerance) but is no
    # confident loss: a loss filled by default matches the ground at most loss_match_de (2.5) off, else review
    import cv2
    img, loss = _losses(_paint(seed=11), 12, 12, noise=0.01)
    lab = lambda c: rgb_to_lab(torch.tensor(c, dtype=torch.float64))
    de = lambda a, b: float(ciede2000(lab(a), lab(b)))
    given = next(tuple(min(1.0, v * k) for v in GESSO) for k in np.linspace(1.0, 1.1, 201)
                 if abs(de(tuple(min(1.0, v * k) for v in GESSO), GESSO) - 1.0) < 0.05)
    paint = next(tuple(v * k for v in GESSO) for k in np.linspace(1.0, 0.9, 201)
                 if abs(de(tuple(v * k for v in GESSO), given) - 2.75) < 0.05)
    patch = np.zeros(loss.shape, np.uint8)
    cv2.rectangle(patch, (140, 200), (175, 225), 1, -1)
    patch = (patch > 0) & ~(cv2.dilate(loss.view(np.uint8), np.ones((9, 9), np.uint8)) > 0)
    rng = np.random.default_rng(12)
    img[patch] = np.clip(np.array(paint, np.float32) + rng.normal(0, 0.01, (int(patch.sum()), 1)), 0, 1)
    det = detect_damage(img, 600, DetectConfig(ground_rgb=given))
    g = det["params"]["grounds"][0]
    found = det["classes"] == CLASS_IDS["loss"]
    assert found[patch].mean() > 0.8                              # seeded: within the user's tolerance
    assert det["confidence"][patch & found].max() < 0.6 * 255     # ... but not a confident loss
    assert g["rgb"] == list(given) and g["match_de"] <= DetectConfig().loss_match_de
    assert np.median(det["confidence"][loss & found]) >= 0.6 * 255


def test_a_cut_piece_without_the_signature_stays_a_loss_for_review():
    # tune case motorcycle_left/2 (white gesso): cutting parts off the losses' shared colour left pieces without the
    # signature on their own, dropped (recall 0.969 -> 0.950). They stay losses, listed for review, never filled
    from restoration.realbench import evaluate_case
    s, a = evaluate_case("motorcycle_left", 2, keep=True)
    cut = a["params"]["grounds"][0]["split"]
    assert cut["cut"] >= 1 and cut["doubtful"] >= 1
    assert s["loss_recall_area"] >= 0.96
    s0 = evaluate_case("motorcycle_left", 2, detect_cfg=DetectConfig(split_min_px=10 ** 9))   # no cut at all
    assert s["loss_recall_area"] >= s0["loss_recall_area"] - 0.005
    assert s["intact_share_of_fill"] <= s0["intact_share_of_fill"] + 0.001


@pytest.mark.parametrize("noise", [0.01, 0.0])
def test_a_ground_under_a_better_supported_paint_colour_is_found_and_confirmed_only_by_a_shared_grain(noise):
    # issue 21 item 2 (several candidate grounds; the shape of a small picture whose auto ground was its blue paint,
    # reproduced on tune pictures at 128 and 256 px): 20 flat blue patches (a colour no ground has) outnumber 4 gesso
    # losses. The blue mode is reported first and never confirmed; the gesso, a candidate beside it, seeds too and its
    # losses are found. With a grain (noise 0.01) that its candidates and its losses share, its agreeing losses confirm
    # it (filled, tune coins/1 at 256 px 0.00 -> 0.94 filled); a smooth gesso shows no such evidence (flat paint of
    # one colour neither): its losses are listed for review. The blue patches are never filled
    import cv2
    img, loss = _losses(_paint(seed=11), 11, 4, noise=noise)
    rng = np.random.default_rng(12)
    h, w = img.shape[:2]
    flat = np.zeros((h, w), np.uint8)
    for _ in range(20):
        x, y = int(rng.uniform(15, w - 15)), int(rng.uniform(15, h - 15))
        cv2.rectangle(flat, (x - 6, y - 5), (x + 6, y + 5), 1, -1)
    flat = (flat > 0) & ~(cv2.dilate(loss.view(np.uint8), np.ones((9, 9), np.uint8)) > 0)
    img[flat] = np.array((0.36, 0.42, 0.60), np.float32) + rng.normal(0, 0.002, (int(flat.sum()), 3)).astype(np.float32)
    det = detect_damage(img, 600, DetectConfig())
    gs = det["params"]["grounds"]
    assert gs[0]["plausible"] is False                     # the blue paint: the best-supported mode, never confirmed
    other = [g for g in gs[1:] if g.get("role") == "other"]
    assert other and min(_de(g["rgb"], GESSO) for g in other) < 3.0
    found = loss & (det["classes"] == CLASS_IDS["loss"])
    assert found.sum() >= 0.8 * loss.sum()                 # before: the gesso never seeded (recall about 0)
    gesso = min(other, key=lambda g: _de(g["rgb"], GESSO))
    if noise:
        assert gesso.get("confirmed_by") == "losses"
        assert np.median(det["confidence"][found]) >= 0.6 * 255
    else:
        assert gesso.get("confirmed_by") is None
        assert det["confidence"][found].max() < 0.6 * 255  # review, never a default fill
    assert not (flat & (det["classes"] == CLASS_IDS["loss"]) & (det["confidence"] >= 0.6 * 255)).any()


def _de(a, b) -> float:
    """dE00 between two sRGB colours."""
    return float(ciede2000(rgb_to_lab(torch.tensor(a, dtype=torch.float64)), rgb_to_lab(torch.tensor(b, dtype=torch.float64))))


def test_a_region_too_thin_to_show_the_losses_texture_is_a_doubt():
    # tune cases text/13 and clock/25 (given bole and ochre): painted star points and strokes of a colour near the
    # given ground's, too thin for an interior, were filled at confidence 1.0: their texture cannot be compared with the
    # losses' (a doubt, not a proof), so with their colour towards the tolerance's edge (a second doubt) they go to review
    from restoration.losses import EVIDENCE, loss_confidence
    cfg = DetectConfig()
    g = {"lab": [80.0, 3.0, 15.0], "support": -1, "source": "given", "match_de": 2.0, "noise_ref_L": 2.0, "flat_ref_L": 0.8}
    lab_near = next([80.0 + dl, 3.0, 15.0] for dl in np.linspace(0.5, 3.0, 51)
                    if float(ciede2000(torch.tensor([80.0 + dl, 3.0, 15.0], dtype=torch.float64),
                                       torch.tensor(g["lab"], dtype=torch.float64))) >= 1.6)
    unlike = EVIDENCE["unlike_ground"]
    for name, over, doubtful in (("thin", {"noise_L": float("nan")}, False),
                                 ("thin+colour", {"noise_L": float("nan"), "lab": lab_near}, True),
                                 ("colour", {"lab": lab_near}, False)):
        conf, bits = loss_confidence(_features(**over), [g], cfg)
        assert bool(bits[1] & unlike) == doubtful, name
        assert (conf[1] / 255 < 0.6) == doubtful, (name, conf[1])
    # where the losses show no texture the scan can measure, or the ground's candidates vouch for it (at 128 px most
    # losses are too thin for an interior: tune case astronaut/5 lost its confirmation), a thin region is no doubt
    for other in (dict(g, noise_ref_L=0.3), dict(g, support=20, source="estimated")):
        conf, bits = loss_confidence(_features(noise_L=float("nan"), lab=lab_near), [other], cfg)
        assert not bits[1] & unlike


def test_a_given_grounds_tolerance_finds_a_loss_but_never_joins_it_to_paint_of_a_near_colour():
    # tune cases grass/14, grass/10 (given grey imprimatura, ochre): paint 3.5-7 dE00 from the given colour around the
    # losses was seeded by the tolerance (5 dE00) and filled with them (intact share of the fill 11.9 %, 7.6 %). The
    # tolerance still finds the losses; a loss's region is what seeds within an estimated ground's reach (auto_seed_de)
    # hold, grown as a loss grows; the paint around it is not part of it
    import cv2
    img, loss = _losses(_paint(seed=11), 12, 12, noise=0.01)
    lab = lambda c: rgb_to_lab(torch.tensor(c, dtype=torch.float64))
    paint = next(tuple(v * k for v in GESSO) for k in np.linspace(1.0, 0.8, 401)
                 if abs(float(ciede2000(lab(tuple(v * k for v in GESSO)), lab(GESSO))) - 4.3) < 0.05)
    ring = np.zeros_like(loss)                                            # a crescent 4 px wide on each loss's right
    for dx in range(1, 5):
        ring |= np.roll(loss, dx, axis=1)
    ring &= ~loss
    img[ring] = np.array(paint, np.float32)
    det = detect_damage(img, 600, DetectConfig(ground_rgb=GESSO))
    found = det["classes"] == CLASS_IDS["loss"]
    assert found[loss].mean() > 0.9                                      # the losses: found
    far = ring & ~np.roll(loss, 1, axis=1)
    assert found[far].mean() < 0.1                                       # the paint 2-4 px beside them: not theirs (was 1.0)
    assert det["params"]["grounds"][0]["trimmed_px"] > 0


def test_a_ground_its_loose_candidates_confirm_is_rivalled_by_a_tight_one():
    # tune case coins/4 at 128 px: a dark grey passage of paint between the coins (16 candidates spread 1.66 dE00) was
    # confirmed by its candidates and filled (96 % intact paint); the cream gesso beside it (4 candidates within
    # 0.35 dE00) never seeded. A ground is one colour wherever it shows: a tight rival seeds too, and when it explains
    # losses that agree with it, which is the ground is ambiguous: both are listed for review
    from restoration.detect import _other_grounds
    from restoration.losses import ground_confirmed as _confirmed
    from restoration.realbench import evaluate_case
    cfg = DetectConfig()
    first = {"lab": [35.0, 1.0, 3.0], "support": 16, "spread_de": 1.66, "plausible": True}
    tight = {"lab": [87.0, -1.0, 15.0], "support": 4, "spread_de": 0.35, "plausible": True}
    assert [g["role"] for g in _other_grounds([dict(first), dict(tight)], cfg)] == ["other"]
    assert _other_grounds([dict(first, spread_de=0.9), dict(tight)], cfg) == []        # the first is tight itself
    assert _other_grounds([dict(first), dict(tight, spread_de=1.0)], cfg) == []         # the rival no tighter
    assert _confirmed(first, cfg) and not _confirmed(dict(first, ambiguous=True), cfg)
    s, a = evaluate_case("coins", 4, max_side=128, keep=True)
    g0 = a["params"]["grounds"][0]
    assert g0.get("rivalled") and g0.get("ambiguous")
    assert s["intact_share_of_fill"] <= 0.05 and s["loss_recall_area"] >= 0.9      # before: 0.96 and 0.17


def test_a_ground_that_would_make_most_of_the_picture_loss_is_paint_and_fills_nothing():
    """Tune case brick/15 (512 px): the brick faces, flat paint of one colour, are voted the ground by 67 candidates
    while the drawn imprimatura is not a plausible ground colour; its "losses" would cover 67 % of the picture and
    filled 85 % intact paint. An estimated ground explaining more than ground_max_share (one half) of the picture
    is never confirmed: all its losses go to review, and the run says why."""
    from restoration.realbench import evaluate_case
    s, a = evaluate_case("brick", 15, max_side=512, keep=True)
    g0 = a["params"]["grounds"][0]
    assert g0["source"] == "estimated" and g0["explains_share"] > 0.5 and g0["explains_most"] is True
    assert s["n_fill"] == 0 and s["intact_share_of_fill"] == 0.0 and s["n_review"] > 0
    assert "picture's paint" in a["params"]["ground_check"]
    # the same picture's other cases keep their grounds: case 0 fills its losses (the rule is the share, not brick)
    s0, a0 = evaluate_case("brick", 0, max_side=512, keep=True)
    assert not a0["params"]["grounds"][0].get("explains_most") and s0["loss_filled_area"] >= 0.9


def test_the_share_rule_is_one_predicate_and_spares_a_given_ground():
    from restoration.losses import ground_confirmed
    cfg = DetectConfig()
    g = {"support": 67, "plausible": True, "source": "estimated"}
    assert ground_confirmed(g, cfg) and not ground_confirmed({**g, "explains_most": True}, cfg)
    assert not ground_confirmed({**g, "ambiguous": True}, cfg)
    with pytest.raises(ValueError, match="ground_max_share"):
        DetectConfig(ground_max_share=1.5)
    # a ground the user gives is used as given, however much it explains: brick/15 given the brick faces' colour
    from restoration.realbench import evaluate_case
    _, a = evaluate_case("brick", 15, max_side=512, keep=True)
    rgb = tuple(round(v, 4) for v in a["params"]["grounds"][0]["rgb"])
    s, a = evaluate_case("brick", 15, max_side=512, keep=True, detect_cfg=DetectConfig(ground_rgb=rgb))
    g = a["params"]["grounds"][0]
    assert g["source"] == "given" and g["explains_share"] > 0.5 and not g.get("explains_most") and s["n_fill"] > 0


def test_grain_shared_is_measured_agreeing_contradicting_or_unknown():
    # the one predicate of the grain rulings: a ground's candidates and its losses share one per-pixel grain
    from restoration.detect import grain_shared
    cfg = DetectConfig()
    assert grain_shared({"noise_L": 2.59, "noise_ref_L": 2.44}, cfg) is True         # a noisy gesso (astronaut/2, 256 px)
    assert grain_shared({"noise_L": 0.084, "noise_ref_L": 0.928}, cfg) is False      # flat paint, grainy "losses"
    assert grain_shared({"noise_L": 2.1, "noise_ref_L": 0.534}, cfg) is False        # grainy candidates, smooth losses
    assert grain_shared({"noise_L": 0.495, "noise_ref_L": 0.531}, cfg) is None       # both below the floor: no proof
    assert grain_shared({"noise_L": None, "noise_ref_L": 2.0}, cfg) is None
    assert grain_shared({"noise_L": 1.0, "noise_ref_L": 1.0 * cfg.doubt_noise + 0.01}, cfg) is False


def test_a_rival_without_the_grain_of_a_grainy_ground_does_not_make_it_ambiguous():
    # tune case astronaut/2 (256 px, estimated cream gesso, 0.00 filled): the gesso (7 candidates within 0.33 dE00,
    # grain 2.6 L* shared by its losses) was confirmed by its losses, then ruled ambiguous by a grey passage of
    # paint (4 flat candidates, grain 0.08, "losses" 0.93) explaining a few agreeing regions. Beside a ground whose
    # grain its candidates and losses share (evidence of one material), a rival counts only when it shares one too
    from restoration.detect import _several_grounds
    cfg = DetectConfig()
    gesso = {"plausible": True, "support": 7, "spread_de": 0.33, "match_ref_de": 0.21, "losses_agree": 5,
             "confirmed_by": "losses", "noise_L": 2.59, "noise_ref_L": 2.44}
    grey = {"plausible": True, "support": 4, "spread_de": 0.75, "match_ref_de": 1.29, "losses_agree": 4,
            "noise_L": 0.08, "noise_ref_L": 0.93}
    res = [(0,), (1,)]
    gs = [dict(gesso), dict(grey)]
    assert _several_grounds(gs, res, cfg) == set() and gs[0]["confirmed_by"] == "losses"
    # the same grey rival with a grain it shares with its losses: which is the ground is ambiguous
    gs = [dict(gesso), dict(grey, noise_L=0.9)]
    assert _several_grounds(gs, res, cfg) == {0} and gs[0]["ambiguous"] and gs[1]["ambiguous"]
    # a ground with no measurable grain is still rivalled by one that shows none either (the rule before)
    gs = [dict(gesso, noise_L=0.4, noise_ref_L=0.5), dict(grey, noise_L=0.3, noise_ref_L=0.4)]
    assert _several_grounds(gs, res, cfg) == {0}
    from restoration.realbench import evaluate_case
    s = evaluate_case("astronaut", 2, max_side=256)
    assert s["loss_filled_area"] >= 0.8 and s["intact_share_of_fill"] <= 0.05        # before: 0.00 filled


def test_a_grainy_candidate_beside_an_unconfirmed_grainless_first_ground_is_confirmed_by_its_losses():
    # tune case text/11 (512 px, estimated grey imprimatura, 0.00 filled): the first mode (5 loose candidates,
    # spread 4.3 dE00, no grain while its "losses" show 2.9 L*) is confirmed by nothing; the imprimatura beside it
    # (4 candidates within 1.5 dE00, grain 1.41 L* shared by its losses at 1.37) was never checked against its 21
    # agreeing losses, so every loss went to review. Beside an unconfirmed first ground without a shared grain, a
    # candidate that shows one is confirmed by its losses; the first's losses stay in review
    from restoration.realbench import evaluate_case
    s, a = evaluate_case("text", 11, max_side=512, keep=True)
    g0, other = a["params"]["grounds"][0], a["params"]["grounds"][1]
    assert g0.get("confirmed_by") is None and other["role"] == "other" and other["confirmed_by"] == "losses"
    assert s["loss_filled_area"] >= 0.9 and s["intact_share_of_fill"] <= 0.01         # before: 0.00 filled
    # without the grain (the same case with the shared-grain test made impossible) nothing is confirmed
    s2 = evaluate_case("text", 11, max_side=512, detect_cfg=DetectConfig(doubt_noise=1.0))
    assert s2["loss_filled_area"] <= 0.1


def test_half_the_agreeing_losses_confirm_a_ground_whose_grain_they_share():
    # tune case text/2 (256 px, estimated cream gesso, 0.00 filled): 4 candidates within 0.56 dE00 and 3 agreeing
    # losses (ground_confirm_losses is 4), their grain 0.80 L* shared by the candidates at 0.80: a small picture shows
    # few losses, and the shared grain is evidence flat paint lacks. Half as many agreeing losses confirm it then
    from restoration.realbench import evaluate_case
    s, a = evaluate_case("text", 2, max_side=256, keep=True)
    g = a["params"]["grounds"][0]
    assert g["support"] < 8 and g["losses_agree"] < DetectConfig().ground_confirm_losses
    assert g["confirmed_by"] == "losses"
    assert s["loss_filled_area"] >= 0.9 and s["intact_share_of_fill"] <= 0.01         # before: 0.00 filled
    s2, a2 = evaluate_case("text", 2, max_side=256, keep=True, detect_cfg=DetectConfig(ground_confirm_losses=7))
    assert a2["params"]["grounds"][0].get("confirmed_by") is None and s2["loss_filled_area"] == 0.0


def _one_loss(noise_L: float, de: float = 0.3, sharp: float = 1.0) -> dict:
    """Component features (restoration.losses.component_features) of one loss on the ground Lab (50, 10, 20): its
    colour ``de`` dE00 off along L*, contrast 15 to its ring, an edge all round, flat; its per-pixel noise ``noise_L``."""
    n = np.array([0.0, 400.0])
    lab = np.array([[0.0, 0.0, 0.0], [50.0 + de, 10.0, 20.0]])
    one = lambda v: np.array([0.0, v])
    return {"n": n, "lab": lab, "contrast": one(15.0), "ring_de": one(15.0), "ring_differs": one(1.0),
            "edge_frac": one(1.0), "edge_seen": one(1.0), "sharp_frac": one(sharp), "std_L": one(1.0), "noise_L": one(noise_L)}


def test_a_loss_smoother_than_the_losses_is_unlike_them_only_on_a_ground_known_grainy():
    # tune case text/13 (512 px, given bole, 0.47 filled): the bole's losses show a per-pixel noise of 0.4 to 1.7 L*
    # (weighted median 1.05) while the flat candidates of the bole's colour show 0.15: the smoother losses (0.4-0.5)
    # were each ruled unlike the ground by that alone and went to review. Smoother than the losses is proof of flat
    # paint only where the candidates show the losses' grain too (grain_shared: the ground is grainy wherever it
    # shows: a star on a noisy gesso, hubble_deep_field/14); else it is one doubt, and flat paint seldom shows no second
    from restoration.losses import EVIDENCE, loss_confidence
    cfg = DetectConfig()
    g = {"lab": [50.0, 10.0, 20.0], "support": -1, "source": "given", "match_de": 2.5, "noise_ref_L": 1.05,
         "flat_ref_L": 1.0}
    unlike = lambda c_b: bool(c_b[1][1] & EVIDENCE["unlike_ground"])
    smooth = _one_loss(0.45)
    assert unlike(loss_confidence(smooth, [dict(g, noise_L=1.0)], cfg))          # grainy ground: proof alone
    c, b = loss_confidence(smooth, [dict(g, noise_L=0.15)], cfg)                # candidates smooth: one doubt
    assert not unlike((c, b)) and c[1] == 255
    # ... and a second doubt makes it unlike (its colour towards the tolerance's edge: paint of a near colour)
    assert unlike(loss_confidence(_one_loss(0.45, de=2.0), [dict(g, noise_L=0.15)], cfg))
    # grainier than the losses stays proof on any ground (paint's texture)
    assert unlike(loss_confidence(_one_loss(2.0), [dict(g, noise_L=0.15)], cfg))
    from restoration.realbench import evaluate_case
    s = evaluate_case("text", 13, max_side=512)
    assert s["loss_filled_area"] >= 0.75 and s["intact_share_of_fill"] <= 0.06     # before: 0.47 and 0.089


def test_a_loss_every_other_check_vouches_for_needs_no_more_edge_than_the_signature():
    # tune coins/11 at 512 px (given cream gesso): large soft-edged losses, every check passed but an edge share of
    # 0.62-0.83 (a frayed edge blends into paint of a near colour), went to review as large (confidence below 0.85):
    # 0.36 of the loss area filled. Such a loss needs only the signature's edge (loss_edge_frac); where its ground's
    # candidates contradict the losses' grain (a highlight merged with a loss on a given ground: motorcycle_left/11 and
    # text/15 at 256 px) or another check fails, the blended edge still counts
    from restoration.losses import loss_confidence
    cfg = DetectConfig()
    g = {"lab": [50.0, 10.0, 20.0], "support": -1, "source": "given", "match_de": 2.5, "noise_ref_L": 1.05,
         "flat_ref_L": 1.0}
    soft = dict(_one_loss(1.0, sharp=0.6), edge_frac=np.array([0.0, 0.7]), edge_seen=np.array([0.0, 0.7]))
    assert soft["edge_frac"][1] >= cfg.loss_edge_frac
    conf = lambda f, gr: int(loss_confidence(f, [gr], cfg)[0][1])
    assert conf(soft, dict(g, noise_L=1.0)) == 255                       # grain shared: vouched (before: 178)
    smooth = dict(soft, noise_L=np.array([np.nan, 0.6]))
    assert conf(smooth, dict(g, noise_L=0.55, noise_ref_L=0.6)) == 255   # no grain measurable: not contradicted
    assert abs(conf(soft, dict(g, noise_L=0.15)) - 0.7 * 255) <= 1       # grain contradicted: the edge counts
    # a low contrast (camera/15, astronaut/4 at 512 px: a ground among paint of a near colour) with a ring that differs
    # point by point all round: vouched; so is one whose ring differs on half of it only (the signature's share; camera/12
    # at 512 px, estimated ochre: 0.48 -> 0.60 filled; before: the edge and the contrast margin counted, 0.7 x 0.77);
    # a ring that differs point by point only (mean contrast within loss_contrast_de, mixed_ring) is never vouched
    low = dict(soft, contrast=np.array([0.0, 1.2 * cfg.loss_contrast_de]), ring_de=np.array([0.0, 1.2 * cfg.loss_contrast_de]))
    assert conf(low, dict(g, noise_L=1.0)) == 255
    low_half = dict(low, ring_differs=np.array([0.0, 0.5]))
    assert conf(low_half, dict(g, noise_L=1.0)) == 255
    mixed = dict(low_half, contrast=np.array([0.0, 0.9 * cfg.loss_contrast_de]))
    assert abs(conf(mixed, dict(g, noise_L=1.0)) - 0.5 * 0.7 * 0.6 ** 0.5 * 255) <= 1
    est = {"lab": [50.0, 10.0, 20.0], "support": 3, "source": "estimated", "match_de": 2.5, "noise_ref_L": 1.05,
           "noise_L": 1.0, "flat_ref_L": 1.0}
    assert abs(conf(soft, est) - 0.5 * 0.7 * 255) <= 1                   # unconfirmed ground: the edge counts
    from restoration.realbench import evaluate_case
    s = evaluate_case("coins", 11, max_side=512)
    assert s["loss_filled_area"] >= 0.7 and s["intact_share_of_fill"] <= 0.01   # before: 0.36 and 0.002
    s = evaluate_case("text", 15, max_side=256)                                 # a contradicted grain: edge counts
    assert s["intact_share_of_fill"] <= 0.01                                    # without the grain check: 0.034


def test_a_candidate_without_an_interior_has_no_measured_grain():
    # tune cell/13 (512 px, noisy cream gesso): 22 of the gesso's 38 candidates were too small for an interior and
    # counted as smooth (0 L*), so the mode's grain read 0.10 L* against 2.2 L* on its measured candidates and its
    # losses: its grain contradicted them and its large losses stayed in review. Unmeasured is not smooth
    from restoration.losses import estimate_grounds, grain_shared, measured_grain
    cfg = DetectConfig()
    nan = float("nan")
    assert measured_grain(np.array([nan, 2.2, nan, 2.4, nan])) == pytest.approx(2.3)
    assert measured_grain(np.array([nan, nan])) is None and measured_grain(np.zeros(0)) is None
    assert measured_grain(np.array([0.1, 0.2, nan])) == pytest.approx(0.15)    # flat paint stays flat
    lab = np.array([[85.0, 1.0, 12.0]] * 9) + np.linspace(0, 0.4, 9)[:, None]
    noise = np.array([2.2, nan, nan, 2.3, nan, nan, 2.1, nan, nan])          # 6 of 9 too small to measure
    g = estimate_grounds(lab, np.full(9, 200.0), cfg, 1, noise)[0]
    assert g["support"] == 9 and g["noise_L"] == pytest.approx(2.2)
    assert grain_shared(dict(g, noise_ref_L=2.16), cfg) is True
    assert estimate_grounds(lab, np.full(9, 200.0), cfg, 1, np.full(9, nan))[0]["noise_L"] is None
    # a given ground's candidates keep the old reading (unmeasured as smooth) on purpose: measured, a given bole's losses
    # merged with a thin light line were vouched for (tune retina/33 at 512 px: 1.65 % -> 5.0 % intact)
    from restoration.detect import _given_grain
    assert _given_grain(noise) == pytest.approx(0.0) and _given_grain(np.array([1.0, 2.0, nan])) == pytest.approx(1.0)


def test_a_mode_showing_more_signs_of_one_material_comes_first():
    # the ordering of candidate grounds: a comparably supported mode comes before the best-supported one when it shows
    # a sign of one exposed material that one lacks: a grain where it is smooth (flat paint), or a grain and one colour
    # where it is grainy but loose (tune gravel/9 at 512 px: a grey passage of grainy paint, 55 candidates spread
    # 1.6 dE00, beside the bole, 34 within 0.43)
    from restoration.detect import grain_beats
    cfg = DetectConfig()
    grey = {"support": 55, "spread_de": 1.603, "noise_L": 1.541}
    bole = {"support": 34, "spread_de": 0.426, "noise_L": 0.955}
    assert grain_beats(bole, grey, cfg) and not grain_beats(grey, bole, cfg)
    assert not grain_beats(dict(bole, support=10), grey, cfg)                     # not comparably supported
    assert not grain_beats(dict(bole, spread_de=1.2), grey, cfg)                  # as loose: no sign more
    assert not grain_beats(dict(bole, noise_L=0.4), grey, cfg)                    # smooth: no grain
    assert not grain_beats(bole, dict(grey, spread_de=0.8), cfg)                  # both one colour, both grainy
    assert grain_beats(dict(bole, spread_de=1.5), dict(grey, noise_L=0.2), cfg)   # the grain alone beats flat paint
    assert not grain_beats(dict(bole, noise_L=None), dict(grey, noise_L=0.2), cfg)  # an unmeasured grain is none
    # grass's grainy grey paint (33 candidates spread 1.94, 7.8 L*) against a cream gesso of 51 within 0.35 at 0.69 L*:
    # each lacks a sign the other shows, the gesso stays first
    assert not grain_beats({"support": 33, "spread_de": 1.941, "noise_L": 7.806},
                           {"support": 51, "spread_de": 0.349, "noise_L": 0.688}, cfg)


def test_a_loose_ground_whose_grain_its_losses_contradict_is_not_confirmed_by_its_candidates():
    # tune brick/11 at 256 px: 8 candidates of the bricks' grey-blue paint (31.9 dE00 from the chalk ground), spread
    # 1.45 dE00, grain 3.1 L* against its losses' 5.0 L*: neither one colour nor one grain, and 98 % of its fill was
    # intact paint. Either sign alone still confirms it, as do a given ground and one its losses confirm
    from restoration.losses import ground_confirmed
    cfg = DetectConfig()
    paint = {"source": "estimated", "support": 8, "spread_de": 1.45, "plausible": True, "noise_L": 3.064,
             "noise_ref_L": 4.955}
    assert not ground_confirmed(paint, cfg)
    assert ground_confirmed(dict(paint, spread_de=0.9), cfg)                    # one colour
    assert ground_confirmed(dict(paint, noise_ref_L=3.2), cfg)                  # one grain
    assert ground_confirmed(dict(paint, noise_ref_L=None), cfg)                 # the losses' grain not yet measured
    assert ground_confirmed(dict(paint, support=-1, source="given"), cfg)       # given: used as given
    assert ground_confirmed(dict(paint, support=3, confirmed_by="losses"), cfg)
