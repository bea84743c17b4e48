"""Exactness tests of the restoration core: known numbers, invariants, published references."""
import numpy as np
import pytest
import torch

from _restoration_util import disc_map
from restoration.color import ciede2000, lab_to_rgb, rgb_to_lab
from restoration.palette import count_de, count_rgb8, merge_palette
from restoration.regions import area_mm2, label_regions, region_table

# Sharma, Wu & Dalal (2005), "The CIEDE2000 color-difference formula: implementation notes,
# supplementary test data, and mathematical observations", Table 1: L1 a1 b1 L2 a2 b2 dE00.
SHARMA = [
    (50.0000, 2.6772, -79.7751, 50.0000, 0.0000, -82.7485, 2.0425),
    (50.0000, 3.1571, -77.2803, 50.0000, 0.0000, -82.7485, 2.8615),
    (50.0000, 2.8361, -74.0200, 50.0000, 0.0000, -82.7485, 3.4412),
    (50.0000, -1.3802, -84.2814, 50.0000, 0.0000, -82.7485, 1.0000),
    (50.0000, -1.1848, -84.8006, 50.0000, 0.0000, -82.7485, 1.0000),
    (50.0000, -0.9009, -85.5211, 50.0000, 0.0000, -82.7485, 1.0000),
    (50.0000, 0.0000, 0.0000, 50.0000, -1.0000, 2.0000, 2.3669),
    (50.0000, -1.0000, 2.0000, 50.0000, 0.0000, 0.0000, 2.3669),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0009, 7.1792),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0010, 7.1792),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0011, 7.2195),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0012, 7.2195),
    (50.0000, -0.0010, 2.4900, 50.0000, 0.0009, -2.4900, 4.8045),
    (50.0000, -0.0010, 2.4900, 50.0000, 0.0010, -2.4900, 4.8045),
    (50.0000, -0.0010, 2.4900, 50.0000, 0.0011, -2.4900, 4.7461),
    (50.0000, 2.5000, 0.0000, 50.0000, 0.0000, -2.5000, 4.3065),
    (50.0000, 2.5000, 0.0000, 73.0000, 25.0000, -18.0000, 27.1492),
    (50.0000, 2.5000, 0.0000, 61.0000, -5.0000, 29.0000, 22.8977),
    (50.0000, 2.5000, 0.0000, 56.0000, -27.0000, -3.0000, 31.9030),
    (50.0000, 2.5000, 0.0000, 58.0000, 24.0000, 15.0000, 19.4535),
    (50.0000, 2.5000, 0.0000, 50.0000, 3.1736, 0.5854, 1.0000),
    (50.0000, 2.5000, 0.0000, 50.0000, 3.2972, 0.0000, 1.0000),
    (50.0000, 2.5000, 0.0000, 50.0000, 1.8634, 0.5757, 1.0000),
    (50.0000, 2.5000, 0.0000, 50.0000, 3.2592, 0.3350, 1.0000),
    (60.2574, -34.0099, 36.2677, 60.4626, -34.1751, 39.4387, 1.2644),
    (63.0109, -31.0961, -5.8663, 62.8187, -29.7946, -4.0864, 1.2630),
    (61.2901, 3.7196, -5.3901, 61.4292, 2.2480, -4.9620, 1.8731),
    (35.0831, -44.1164, 3.7933, 35.0232, -40.0716, 1.5901, 1.8645),
    (22.7233, 20.0904, -46.6940, 23.0331, 14.9730, -42.5619, 2.0373),
    (36.4612, 47.8580, 18.3852, 36.2715, 50.5065, 21.2231, 1.4146),
    (90.8027, -2.0831, 1.4410, 91.1528, -1.6435, 0.0447, 1.4441),
    (90.9257, -0.5406, -0.9208, 88.6381, -0.8985, -0.7239, 1.5381),
    (6.7747, -0.2908, -2.4247, 5.8714, -0.0985, -2.2286, 0.6377),
    (2.0776, 0.0795, -1.1350, 0.9033, -0.0636, -0.5514, 0.9082),
]


def test_ciede2000_sharma_pairs_to_4_decimals():
    t = torch.tensor(SHARMA, dtype=torch.float64)
    d = ciede2000(t[:, :3], t[:, 3:6])
    assert torch.all((d - t[:, 6]).abs() < 5e-5 + 1e-9), (d - t[:, 6]).abs().max()
    d_rev = ciede2000(t[:, 3:6], t[:, :3])  # symmetric
    assert torch.allclose(d, d_rev, atol=1e-12)


def test_lab_known_values_and_roundtrip():
    lab = rgb_to_lab(torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]], dtype=torch.float64))
    assert torch.allclose(lab[0], torch.tensor([100.0, 0.0, 0.0], dtype=torch.float64), atol=1e-3)
    assert torch.allclose(lab[1], torch.zeros(3, dtype=torch.float64), atol=1e-9)
    # sRGB red in CIELAB D65: (53.24, 80.09, 67.20)
    assert torch.allclose(lab[2], torch.tensor([53.2408, 80.0925, 67.2032], dtype=torch.float64), atol=2e-2)
    rgb = torch.rand(100, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(lab_to_rgb(rgb_to_lab(rgb)), rgb, atol=1e-6)


def test_area_100px_square_at_600dpi():
    assert round(area_mm2(100 * 100, 600), 4) == 17.9211
    m = np.zeros((140, 140), bool)
    m[20:120, 20:120] = True
    labels, n = label_regions(m)
    img = np.full((140, 140, 3), 0.5, np.float32)
    img[m] = 0.9
    rows = region_table(labels, m.astype(np.uint8) * 3, img, 600, ("loss",))
    assert n == 1 and rows[0]["area_px"] == 10000 and rows[0]["area_mm2"] == pytest.approx(17.9211, abs=5e-5)
    mm = 25.4 / 600
    assert rows[0]["bbox_mm"] == pytest.approx([20 * mm, 20 * mm, 120 * mm, 120 * mm], abs=1e-4)
    assert rows[0]["centroid_mm"] == pytest.approx([70 * mm, 70 * mm], abs=1e-4)
    assert rows[0]["max_inscribed_radius_mm"] == pytest.approx(50 * mm, abs=1e-3)
    assert rows[0]["fill_decision"] == "fill"


def test_region_count_on_discs_and_nothing_dropped():
    m = disc_map(n_side=12, r=2, gap=2)
    labels, n = label_regions(m)
    assert n == 144 and labels.max() == 144
    img = np.full(m.shape + (3,), 0.3, np.float32)
    img[m] = 0.9
    rows = region_table(labels, m.astype(np.uint8) * 3, img, 600, ("loss",))
    assert [r["id"] for r in rows] == list(range(1, 145))  # every region in the table, in raster order
    # r=2 discs are 0.21 mm wide: above 2 x 100 um, so filled; at 300 um tolerance: skipped, still listed
    from restoration.regions import RegionConfig
    rows2 = region_table(labels, m.astype(np.uint8) * 3, img, 600, ("loss",), RegionConfig(registration_tol_um=300))
    assert len(rows2) == 144 and all(r["skip_reason"] == "below_registration" for r in rows2)


def test_region_touching_diagonally_is_one_region():
    m = np.zeros((10, 10), bool)
    m[2, 2] = m[3, 3] = True
    assert label_regions(m)[1] == 1


def test_colour_counts_known():
    k = 57314
    idx = np.random.default_rng(0).permutation(256 ** 3)[:k]
    rgb = np.stack([(idx >> 16) & 255, (idx >> 8) & 255, idx & 255], 1).astype(np.uint8)
    rgb = np.concatenate([rgb, rgb[:1000]])  # duplicates do not count
    assert count_rgb8(rgb) == k
    # dE merge: three well-separated colours with tiny variations -> exactly 3 clusters at q=1
    base = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200]], np.uint8)
    jit = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.uint8)
    pix = (base[:, None] + jit[None]).reshape(-1, 3)
    assert count_rgb8(pix) == 12 and count_de(pix, 1.0) == 3
    assert count_de(pix, 0.0) == 12
    leaders, counts, assign, u = merge_palette(pix, 1.0)
    assert counts.sum() == len(pix)
    # every colour is within q of its leader
    lab_u = rgb_to_lab(torch.from_numpy(u / 255.0))
    lab_l = rgb_to_lab(torch.from_numpy(leaders[assign] / 255.0))
    assert float(ciede2000(lab_u, lab_l).max()) <= 1.0


def test_label_ring_fraction_known_values_and_tiling():
    from restoration.detect import label_ring_fraction
    labels = np.zeros((40, 60), np.int32)
    labels[10:13, 10:13] = 1  # 3x3 square: its 2 px Chebyshev ring is 7x7 - 3x3 = 40 px
    labels[25:28, 40:43] = 2
    flag = np.zeros(labels.shape, bool)
    flag[8:15, 8:15] = True  # the whole ring of label 1 (and the label itself, which does not count)
    flag[23:26, 38:45] = True  # the top 3 rows of label 2's ring: 2 rows x 7 + 1 row x 4 = 18 px
    f = label_ring_fraction(labels, flag, 2)
    assert f[1] == 1.0 and f[2] == pytest.approx(18 / 40) and f[0] == 0
    assert np.array_equal(label_ring_fraction(labels, flag, 2, tile=16), f)
