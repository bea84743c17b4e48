"""Quality on synthetic damage with ground truth (384 x 512 px at 600 dpi, seeds 0-2).

Thresholds come from a measurement of seeds 0-4 at this size (default detector settings, the ground
colour given, split length scaled to the 21.7 mm wide image), each set about 0.05-0.1 below the
worst seed so a real regression fails while seed noise does not:
  F1 (1 px)   split 0.75-0.82, craquelure 0.79-0.89 (seeds 0-2: 0.865-0.895), loss 0.97-1.0,
              small_defect 0.74-0.82, all 0.90-0.94
  (craquelure was 0.915-0.954 before the texture-relative crack thresholds that keep hair, fur and grass
  out of the craquelure class on real pictures; small_defect was 0.58-0.76 before light spots ringed by
  craquelure were dropped, light_max_crack_ring; with the ground estimated instead of given the F1 are
  the same to 0.005: loss 0.9997-1.0)
  fill dE00 mean in the GT mask (harmonic) 2.81-5.67, no-fill baseline 28.4-35.2
(the research note's prototype: F1 0.79-0.97, fill dE00 2.1-2.4 on 1024^2 images; at 1536 x 1024 our
sample measures F1 0.99 and fill dE00 1.67 — small images carry proportionally more of the split).
"""
import numpy as np
import pytest

from _restoration_util import small_sample
from restoration.detect import DetectConfig, detect_damage
from restoration.fill import fill_image
from restoration.metrics import detection_scores, fill_scores

F1_MIN = {"support_split": 0.65, "craquelure": 0.85, "loss": 0.97, "small_defect": 0.60, "all": 0.88}


pytestmark = pytest.mark.usefixtures("single_thread")


def _cfg(info, **kw):
    return DetectConfig(ground_rgb=tuple(info["ground_rgb"]), split_min_length_mm=15, **kw)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_detection_f1_per_class(seed):
    img, clean, gt, info = small_sample(seed)
    det = detect_damage(img, 600, _cfg(info))
    s = detection_scores(det["classes"], gt)
    for k, lo in F1_MIN.items():
        assert s[k]["f1"] >= lo, (k, s[k])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fill_de00_on_ground_truth_mask(seed):
    img, clean, gt, info = small_sample(seed)
    m = gt > 0
    filled, used = fill_image(img, m, "harmonic")
    s = fill_scores(filled, clean, m, damaged=img)
    assert s["dE00_mean"] <= 6.5, s
    assert s["dE00_mean"] <= 0.25 * s["no_fill_dE00_mean"], s
    # harmonic is not worse than OpenCV Telea by more than 15 % (the research note found it better)
    t = fill_scores(fill_image(img, m, "telea")[0], clean, m)
    assert s["dE00_mean"] <= 1.15 * t["dE00_mean"], (s["dE00_mean"], t["dE00_mean"])
    # error grows with depth into the hole (the note's observation): edge bucket is the best
    b = s["dE00_by_depth_px"]
    assert b["0-1.5"] <= min(b.values()) + 1e-9 or b["0-1.5"] < s["dE00_mean"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auto_ground_finds_the_gesso(seed):
    from restoration.color import ciede2000, rgb_to_lab
    import torch
    img, _, _, info = small_sample(seed)
    from restoration.detect import auto_ground
    g = auto_ground(img)
    de = float(ciede2000(rgb_to_lab(torch.tensor(g)), rgb_to_lab(torch.tensor(info["ground_rgb"]))))
    # measured 0.0-0.1 dE00 (candidates vote; the old brightest-low-chroma rule was 6.6-6.9 off)
    assert de < 1.0, (g, de)


def test_tiled_detection_equals_untiled():
    img, _, _, info = small_sample(1)
    a = detect_damage(img, 600, _cfg(info, tile=0))
    b = detect_damage(img, 600, _cfg(info, tile=128))
    assert np.array_equal(a["classes"], b["classes"])
    for k in a["responses"]:
        assert np.array_equal(a["responses"][k], b["responses"][k]), k


def test_tiled_fill_close_to_untiled():
    # push-pull sees only its tile + overlap, so tiles differ from the untiled run only far from any
    # context edge: with 128 px overlap and holes < 60 px the difference is below 8-bit resolution
    img, _, gt, _ = small_sample(1)
    m = gt == 3
    a, _ = fill_image(img, m, tile=0)
    b, _ = fill_image(img, m, tile=192, overlap=128)
    assert np.abs(a - b).max() < 1 / 255, np.abs(a - b).max()


def test_deterministic_same_seed_same_result():
    from restoration.synth import SynthConfig, make_sample
    a = make_sample(SynthConfig(height=128, width=160), 7)
    b = make_sample(SynthConfig(height=128, width=160), 7)
    assert all(np.array_equal(x, y) for x, y in zip(a[:3], b[:3]))
    c = make_sample(SynthConfig(height=128, width=160), 8)
    assert not np.array_equal(a[0], c[0])
