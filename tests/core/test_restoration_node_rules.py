"""What the restoration nodes hand to the core: IMAGE / MASK batches <-> arrays, previews, the one-line
summaries, the record's workflow and shown files, the registration JSON (known values, no host)."""
import numpy as np
import pytest
import torch

from restoration.artefacts import RegionTable
from restoration.color import format_rgb, parse_rgb
from restoration.outputs import comfy_workflow, node_previews
from restoration.previews import nearest, preview_stride, save_previews
from restoration.register import registration_summary
from restoration.tensors import image_array, image_batch, mask_array, mask_batch


def test_image_array_first_frame_three_channels():
    b = torch.arange(2 * 2 * 3 * 4, dtype=torch.float64).reshape(2, 2, 3, 4) / 100   # (B, H, W, RGBA)
    a = image_array(b)
    assert a.shape == (2, 3, 3) and a.dtype == np.float32 and a.flags["C_CONTIGUOUS"]
    assert a[1, 2].tolist() == pytest.approx([0.20, 0.21, 0.22])                    # frame 0, alpha dropped
    for bad in (None, torch.zeros(2, 3, 3), torch.zeros(1, 2, 3, 2)):
        with pytest.raises(ValueError, match="^filled must be an IMAGE"):
            image_array(bad, "filled")


def test_mask_array_threshold_and_size():
    m = torch.tensor([[[0.2, 0.5, 0.51]]])                                          # (1, 1, 3)
    assert mask_array(m, (1, 3), "mask").tolist() == [[False, False, True]]
    assert mask_array(m[0], (1, 3), "mask").tolist() == [[False, False, True]]       # (H, W) too
    assert mask_array(None, (1, 3), "mask") is None
    with pytest.raises(ValueError, match=r"^add_mask has size \(1, 3\); the scan is \(3, 1\)"):
        mask_array(m, (3, 1), "add_mask")


def test_batches_of_one_round_trip():
    img = np.random.default_rng(0).random((4, 5, 3))
    t = image_batch(img)
    assert t.shape == (1, 4, 5, 3) and t.dtype == torch.float32
    assert np.array_equal(image_array(t), img.astype(np.float32))
    mk = np.array([[True, False], [False, True]])
    tm = mask_batch(mk)
    assert tm.shape == (1, 2, 2) and tm.dtype == torch.float32 and tm.sum() == 2
    assert np.array_equal(mask_array(tm, (2, 2), "m"), mk)


def test_format_rgb_is_read_back_by_parse_rgb():
    assert format_rgb((0.86, 0.8, 0.675)) == "0.860,0.800,0.675"
    assert parse_rgb(format_rgb((0.1234, 0.5, 1.0))) == pytest.approx((0.123, 0.5, 1.0))


def _table(review_ids=(3,)):
    labels = np.array([[1, 1, 0, 2], [0, 3, 3, 3], [4, 0, 0, 0]], np.int32)
    dec = {1: "fill", 2: "skip", 3: "review", 4: "fill"}
    rows = tuple({"id": i, "fill_decision": d, "edge_mismatch": i == 4} for i, d in dec.items())
    return RegionTable(labels, rows, labels > 0, (), 600.0, review={"for_review": list(review_ids)})


def test_region_summaries_known_values():
    t = _table()
    # 4 regions; 1 and 4 fill (3 px); 3 waits for review; 2 skipped; 3 px at 0.5 mm/px = 0.75 mm^2
    assert t.summary(0.5) == ("4 regions, 2 to fill, 1 waiting for review (not filled; accept by id: 3), "
                              "1 skipped; fill area 0.750 mm^2")
    many = _table(review_ids=range(1, 46))
    assert "accept by id: " + ",".join(map(str, range(1, 41))) + " ...)" in many.summary(1.0)
    assert t.qa_summary(3.0) == "1 of 4 regions flagged (dE00_edge > 3.0)"


def test_save_previews_writes_subsampled_8bit_pngs(tmp_path):
    from PIL import Image
    a = np.zeros((3000, 10, 3), np.float32)
    a[::3, :, 0] = 1.0                                                             # stride 3 keeps every red row
    b = np.full((4, 4, 3), 0.5, np.float32)
    names = save_previews(str(tmp_path), [a, b], "fill", 42)
    assert names == ["atelier_fill_42_0.png", "atelier_fill_42_1.png"]
    big = np.asarray(Image.open(tmp_path / names[0]))
    assert preview_stride(3000, 10) == 3 and big.shape == nearest(a).shape == (1000, 4, 3)
    assert (big[..., 0] == 255).all() and (big[..., 1:] == 0).all()
    assert (np.asarray(Image.open(tmp_path / names[1])) == 128).all()               # 0.5 rounds half up


def test_record_workflow_and_node_previews():
    assert comfy_workflow(None, None) is None
    assert comfy_workflow({"1": {}}, None) == {"prompt": {"1": {}}, "workflow": None}
    assert comfy_workflow(None, {"workflow": {"nodes": []}}) == {"prompt": None, "workflow": {"nodes": []}}
    manifest = {"files": [{"path": p} for p in ("print/colour.tif", "damage_map_classes.png", "regions.csv",
                                                "preview_layers.png", "damage_map_loss.png")]}
    assert node_previews(manifest) == ["damage_map_classes.png", "preview_layers.png", "damage_map_loss.png"]


def test_registration_summary_drops_only_the_residual():
    r = {"warp": [[1, 0, 0]], "rms_um": 1.5, "max_um": 2.0, "residual": np.zeros((2, 2)), "scale": 0.5}
    assert registration_summary(r) == {"warp": [[1, 0, 0]], "rms_um": 1.5, "max_um": 2.0, "scale": 0.5}


def test_review_config_given_keeps_defaults_for_unset_inputs():
    from restoration.review import ReviewConfig
    d = ReviewConfig()
    assert ReviewConfig.given() == d
    c = ReviewConfig.given(min_confidence=None, max_fill_mm2=2, max_fill_share=None)
    assert c.max_fill_mm2 == 2.0 and isinstance(c.max_fill_mm2, float)
    assert (c.min_confidence, c.max_fill_share) == (d.min_confidence, d.max_fill_share)
