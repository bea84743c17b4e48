"""Review before print, end to end on the core: the Region Table stage (:func:`restoration.stages.regions`)
with the detector's confidence, the one accept/reject resolution (:func:`restoration.stages.review_ids`),
the fill footprint, the record and ``--replay``.

The hand-made damage map has four regions whose decisions follow from the rules by hand:
A a 60x60 px loss (6.45 mm^2 at 600 dpi > max_fill_mm2 = 4) -> review (large);
B a 20x20 px loss (0.72 mm^2), confidence 1 -> fill (confident);
C a 20x20 px loss, confidence 100/255 = 0.39 < 0.6, a weak edge -> review (unsure);
D a 2 px wide small defect (0.085 mm < 2 x 100 um) -> skip (below_registration).
"""
import json

import numpy as np
import pytest

from _testenv import one_thread
from restoration import stages
from restoration.artefacts import DamageMap
from restoration.classes import CLASS_IDS
from restoration.detect import EVIDENCE
from restoration.scanio import to_uint, write_png, write_tiff

BOXES = {"A": (100, 160, 100, 160), "B": (100, 120, 400, 420), "C": (400, 420, 100, 120), "D": (600, 602, 600, 680)}


def _scene():
    img = np.full((900, 900, 3), 0.45, np.float32)
    classes = np.zeros((900, 900), np.uint8)
    conf = np.zeros((900, 900), np.uint8)
    ev = np.zeros((900, 900), np.uint8)
    for k, (y0, y1, x0, x1) in BOXES.items():
        img[y0:y1, x0:x1] = 0.9
        classes[y0:y1, x0:x1] = CLASS_IDS["small_defect" if k == "D" else "loss"]
        # A: large and sure, but under large_min_confidence (0.85): listed for review (issue 21: a large region
        # at or above it is filled)
        conf[y0:y1, x0:x1] = 100 if k == "C" else 204 if k == "A" else 255
        ev[y0:y1, x0:x1] = EVIDENCE["ground_confirmed"] | (EVIDENCE["weak_edge"] if k == "C" else 0)
    return img, DamageMap(classes, confidence=conf, evidence=ev)


def _ids(tab):
    return {k: int(tab.labels[y0, x0]) for k, (y0, _, x0, _) in BOXES.items()}


def _by_id(tab):
    return {r["id"]: r for r in tab.rows}


def test_default_fills_only_confident_small_regions():
    img, dmap = _scene()
    tab = stages.regions(img, dmap, 600)
    ids, rows = _ids(tab), _by_id(tab)
    got = {k: (rows[i]["fill_decision"], rows[i]["rule"]) for k, i in ids.items()}
    assert got == {"A": ("review", "large"), "B": ("fill", "confident"), "C": ("review", "unsure"),
                   "D": ("skip", "below_registration")}
    assert rows[ids["C"]]["confidence"] == pytest.approx(100 / 255, abs=1e-4)
    assert any("edge" in s for s in rows[ids["C"]]["reasons"]) and rows[ids["D"]]["skip_reason"] == "below_registration"
    fp = tab.footprint()
    assert fp.sum() == 400 and fp[100:120, 400:420].all()            # B only: A and C are not filled
    rv = tab.footprint("review")
    assert rv.sum() == 3600 + 400 and sorted(tab.review["for_review"]) == sorted([ids["A"], ids["C"]])
    assert tab.review["accepted"] == [] and tab.review["config"]["max_fill_mm2"] == 4.0
    assert [d["id"] for d in tab.review["regions"]] == [r["id"] for r in tab.rows]


def test_accept_by_id_or_mask_fills_and_reject_removes():
    img, dmap = _scene()
    ids = _ids(stages.regions(img, dmap, 600))
    tab = stages.regions(img, dmap, 600, accept=f"{ids['A']}, {ids['D']}")
    rows = _by_id(tab)
    assert rows[ids["A"]]["rule"] == rows[ids["D"]]["rule"] == "accepted"  # a scratch below registration too
    assert tab.footprint().sum() == 3600 + 400 + 160 and tab.review["accepted"] == sorted([ids["A"], ids["D"]])
    m = np.zeros(img.shape[:2], bool)
    m[410, 110] = True                                                 # one pixel touching C names C
    tab = stages.regions(img, dmap, 600, accept_mask=m)
    assert _by_id(tab)[ids["C"]]["fill_decision"] == "fill" and tab.review["accepted"] == [ids["C"]]
    assert tab.footprint()[400:420, 100:120].all()
    tab = stages.regions(img, dmap, 600, reject=[ids["B"]])
    assert _by_id(tab)[ids["B"]]["rule"] == "rejected" and tab.footprint().sum() == 0
    mr = np.zeros(img.shape[:2], bool)
    mr[105, 405] = True
    tab = stages.regions(img, dmap, 600, reject_mask=mr)
    assert tab.footprint().sum() == 0 and tab.review["rejected"] == [ids["B"]]


def test_review_ids_is_the_one_resolution_and_names_bad_input():
    labels = np.zeros((4, 5), np.int32)
    labels[0, :2], labels[2, 3:] = 1, 2
    m = np.zeros((4, 5), bool)
    m[2, 4] = True
    assert stages.review_ids(labels, "1", "", None, None) == ((1,), ())
    assert stages.review_ids(labels, " 1 ,1", "", None, m) == ((1,), (2,))
    assert stages.review_ids(labels, [2], (), m, None) == ((2,), ())
    with pytest.raises(ValueError, match="accept: 'x' is not a region id"):
        stages.review_ids(labels, "1,x")
    with pytest.raises(ValueError, match="reject: '0' is not a region id"):
        stages.review_ids(labels, "", "0")
    with pytest.raises(ValueError, match=r"both accepted and rejected"):
        stages.review_ids(labels, "", "2", m, None)
    with pytest.raises(ValueError, match=r"reject_mask: review mask has size \(2, 2\)"):
        stages.review_ids(labels, "", "", None, np.zeros((2, 2), bool))
    with pytest.raises(ValueError, match="--accept"):
        stages.check_review(accept="3,a", names=("--accept", "--reject"))
    img, dmap = _scene()
    with pytest.raises(ValueError, match=r"regions \[99\] that do not exist"):
        stages.regions(img, dmap, 600, accept="99")


def _scan(tmp_path):
    from restoration.synth import SynthConfig, make_sample
    img, _, _, _ = make_sample(SynthConfig(height=256, width=320), 5)
    return write_tiff(tmp_path, "scan.tif", to_uint(img, 16), 600)


def test_cli_record_keeps_decisions_and_replay_rebuilds_the_choice(tmp_path, capsys):
    from restoration.__main__ import main
    from restoration.scanio import read_scan, sha256_file
    scan = _scan(tmp_path)
    with one_thread():
        assert main([str(scan), "--out", str(tmp_path / "d"), "--threads", "0"]) == 0
        d = json.loads((tmp_path / "d" / "manifest.json").read_text())
        wait = d["review"]["for_review"]
        assert len(wait) >= 2 and d["stats"]["n_regions_for_review"] == len(wait)
        rows = json.loads((tmp_path / "d" / "regions.json").read_text())
        assert all({"rule", "confidence", "reasons"} <= set(r) for r in rows)
        assert {r["id"] for r in rows if r["fill_decision"] == "review"} == set(wait)
        assert [x["id"] for x in d["review"]["regions"]] == [r["id"] for r in rows]
        assert all(set(x) == {"id", "decision", "rule", "confidence", "reasons"} for x in d["review"]["regions"])
        html = (tmp_path / "d" / "index.html").read_text()
        assert "Review before print" in html and f"{len(wait)} regions wait for review" in html
        labels = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(tmp_path / "d" / "damage_labels.png"))
        a, b = wait[0], wait[1]
        m = np.zeros(labels.shape, np.uint8)
        m[labels == b] = 255
        write_png(tmp_path, "acc.png", m)
        keep = next(r["id"] for r in rows if r["fill_decision"] == "fill")
        capsys.readouterr()
        assert main([str(scan), "--out", str(tmp_path / "r"), "--accept", str(a), "--accept-mask",
                     str(tmp_path / "acc.png"), "--reject", str(keep), "--threads", "0"]) == 0
        r = json.loads((tmp_path / "r" / "manifest.json").read_text())
        dec = {x["id"]: x for x in r["review"]["regions"]}
        assert r["review"]["accepted"] == sorted([a, b]) and r["review"]["rejected"] == [keep]
        assert dec[a]["rule"] == dec[b]["rule"] == "accepted" and dec[keep]["rule"] == "rejected"
        lab = labels.astype(np.int64)
        fill_d, _, _ = read_scan(tmp_path / "d" / "fill_full.tif", 600)
        fill_r, _, _ = read_scan(tmp_path / "r" / "fill_full.tif", 600)
        orig, _, _ = read_scan(scan, 600)
        assert not np.array_equal(fill_r[lab == a], orig[lab == a])      # accepted: filled now
        assert np.array_equal(fill_d[lab == a], orig[lab == a])          # by default: not touched
        assert np.array_equal(fill_r[lab == keep], orig[lab == keep])    # rejected: not touched
        assert r["stats"]["n_regions_filled"] == d["stats"]["n_regions_filled"] + 2 - 1
        assert sha256_file(tmp_path / "r" / "fill_full.tif") != sha256_file(tmp_path / "d" / "fill_full.tif")
        capsys.readouterr()
        assert main(["--replay", str(tmp_path / "r"), "--out", str(tmp_path / "again"), "--threads", "0"]) == 0
        rep = json.loads(capsys.readouterr().out)
        assert rep["identical"] and {f["role"] for f in rep["files"]} >= {"fill_full", "color_layer", "labels"}
        again = json.loads((tmp_path / "again" / "manifest.json").read_text())
        assert again["review"] == r["review"]
        # a record whose accepted ids were edited afterwards no longer reproduces its fill
        r["review"]["accepted"] = [a]
        (tmp_path / "r" / "manifest.json").write_text(json.dumps(r))
        assert main(["--replay", str(tmp_path / "r"), "--out", str(tmp_path / "edited"), "--threads", "0"]) == 1
        r["review"]["accepted"] = "1,2"
        (tmp_path / "r" / "manifest.json").write_text(json.dumps(r))
        capsys.readouterr()
        assert main(["--replay", str(tmp_path / "r"), "--out", str(tmp_path / "bad"), "--threads", "0"]) == 2
        err = capsys.readouterr().err
        assert "manifest field 'review.accepted'" in err and not (tmp_path / "bad").exists(), err


def test_cli_checks_review_options_before_work(tmp_path, capsys):
    from restoration.__main__ import main
    scan = _scan(tmp_path)
    blank = np.zeros((10, 10), np.uint8)
    write_png(tmp_path, "small.png", blank, 600)
    for opts, msg in ((["--accept", "3,x"], "--accept: 'x' is not a region id"),
                      (["--reject-mask", str(tmp_path / "small.png")], "--reject-mask: the mask has size (10, 10); the scan is (256, 320)"),
                      (["--accept", "999"], "regions [999] that do not exist"),
                      (["--accept", "3", "--reject", "3"], "named in both --accept and --reject"),
                      (["--min-confidence", "1.5"], "min_confidence (--min-confidence): 1.5 is out of range; use a number in [0, 1]"),
                      (["--max-fill-mm2", "-1"], "max_fill_mm2 (--max-fill-mm2): -1.0 is out of range; use a number in [0, 1000000]")):
        assert main([str(scan), "--out", str(tmp_path / "o"), *opts]) == 2, opts
        err = capsys.readouterr().err
        assert msg in err and not (tmp_path / "o").exists(), (opts, err)
