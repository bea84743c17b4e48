"""The review core (restoration/review.py): per-region confidence and reasons, and the decision rules.

Every expected value here is worked out by hand from the rules in the module docstring.
"""
import numpy as np
import pytest

from restoration.detect import EVIDENCE
from restoration.review import (RULES, ReviewConfig, decide, footprint, ids_under_mask, reasons_of,
                                region_confidence, summary)


def _row(i, cls="loss", area=0.4, width=0.5, contrast=20.0):
    return {"id": i, "class": cls, "area_mm2": area, "max_width_mm": width, "dE00_contrast": contrast}


def test_region_confidence_is_the_least_confident_part_and_evidence_the_or():
    labels = np.array([[1, 1, 0, 2],
                       [1, 1, 0, 2]], np.int32)
    conf = np.array([[255, 51, 0, 0],
                     [255, 51, 9, 102]], np.uint8)
    ev = np.array([[1, 0, 0, 2],
                   [8, 0, 4, 0]], np.uint8)
    c, b = region_confidence(labels, conf, ev)
    assert c.shape == (3,) and b.shape == (3,)
    assert c[0] == 0.0 and b[0] == 0                       # background never counts
    # issue 21: a region that joins a confident loss and a doubtful one is doubtful (was the mean)
    assert c[1] == pytest.approx(51 / 255, abs=1e-12)
    assert c[2] == pytest.approx(0.0, abs=1e-12)
    assert b[1] == (1 | 8) and b[2] == 2


def test_reasons_follow_the_bits():
    bits = EVIDENCE["ground_unconfirmed"] | EVIDENCE["weak_edge"]
    r = reasons_of(bits)
    assert len(r) == 2 and "not confirmed" in r[0] and "edge" in r[1]
    assert reasons_of(0) == ()


def test_default_rules_one_by_one():
    cfg = ReviewConfig()  # min_confidence 0.6, max 4 mm^2 or 0.5 % of the picture unless >= 0.85 sure, registration 100 um
    rows = [_row(1),                                    # confident small loss -> fill
            _row(2, area=5.0),                          # above 4 mm^2 -> review (large)
            _row(3),                                    # low confidence -> review (unsure)
            _row(4, cls="craquelure"),                  # not a fill class -> skip
            _row(5, cls="small_defect", width=0.05),    # a thin scratch: flagged, not filled
            _row(6, cls="user", area=50.0),             # painted by the user: filled whatever its size
            _row(7, contrast=1.0),                      # invisible -> skip
            _row(8, area=0.9)]                          # 0.9 mm^2 > 0.5 % of a 100 mm^2 picture -> review
    conf = np.array([0, .9, .8, .3, .9, .9, 0, .9, .8])   # large regions under large_min_confidence 0.85
    bits = np.zeros(9, np.uint8)
    d = decide(rows, conf, bits, picture_mm2=100.0, cfg=cfg)
    got = [(x.id, x.decision, x.rule) for x in d]
    assert got == [(1, "fill", "confident"), (2, "review", "large"), (3, "review", "unsure"),
                   (4, "skip", "class_not_filled"), (5, "skip", "below_registration"),
                   (6, "fill", "user_painted"), (7, "skip", "invisible"), (8, "review", "large")]
    assert {x.rule for x in d} <= set(RULES)
    assert summary(d)["by_decision"] == {"fill": 2, "review": 3, "skip": 3}


def test_explicit_accept_and_reject_override_every_rule():
    rows = [_row(1, area=50.0), _row(2), _row(3, cls="small_defect", width=0.05)]
    conf = np.array([0, .2, .95, .9])
    d = decide(rows, conf, np.zeros(4, np.uint8), 1e4, accept=[1, 3], reject=[2])
    assert [(x.decision, x.rule) for x in d] == [("fill", "accepted"), ("skip", "rejected"), ("fill", "accepted")]
    # the record keeps what decided: confidence and reasons stay with the region
    assert d[0].as_row() == {"id": 1, "decision": "fill", "rule": "accepted", "confidence": 0.2, "reasons": []}


def test_accept_reject_errors_name_the_problem():
    rows = [_row(1), _row(2)]
    with pytest.raises(ValueError, match=r"\[2\].*both accepted and rejected"):
        decide(rows, np.ones(3), np.zeros(3, np.uint8), 100.0, accept=[2], reject=[2])
    with pytest.raises(ValueError, match=r"\[7\] that do not exist; ids are 1..2"):
        decide(rows, np.ones(3), np.zeros(3, np.uint8), 100.0, accept=[7])
    with pytest.raises(ValueError, match=r"min_confidence \(--min-confidence\): 1.5 is out of range"):
        decide(rows, np.ones(3), np.zeros(3, np.uint8), 100.0, ReviewConfig(min_confidence=1.5))


def test_masks_name_regions_and_footprints_follow_decisions():
    labels = np.zeros((6, 6), np.int32)
    labels[0:2, 0:2] = 1
    labels[3:6, 3:6] = 2
    mask = np.zeros((6, 6))
    mask[5, 5] = 1.0                                     # one dab on region 2
    assert ids_under_mask(labels, mask) == {2}
    with pytest.raises(ValueError, match=r"review mask has size \(5, 6\)"):
        ids_under_mask(labels, np.zeros((5, 6)))
    rows = [_row(1), _row(2)]
    d = decide(rows, np.array([0, .9, .1]), np.zeros(3, np.uint8), 1e4, accept=ids_under_mask(labels, mask))
    assert [x.decision for x in d] == ["fill", "fill"]
    d = decide(rows, np.array([0, .9, .1]), np.zeros(3, np.uint8), 1e4)
    assert np.array_equal(footprint(labels, d, "fill"), labels == 1)
    assert np.array_equal(footprint(labels, d, "review"), labels == 2)


def test_a_large_region_is_filled_only_when_very_confident():
    rows = [_row(1, area=5.0), _row(2, area=5.0)]
    d = decide(rows, np.array([0, 0.9, 0.8]), np.zeros(3, np.uint8), picture_mm2=1e4, cfg=ReviewConfig())
    assert [(x.decision, x.rule) for x in d] == [("fill", "confident"), ("review", "large")]
    d = decide(rows, np.array([0, 0.9, 0.8]), np.zeros(3, np.uint8), picture_mm2=1e4,
               cfg=ReviewConfig(large_min_confidence=1.0))
    assert [(x.decision, x.rule) for x in d] == [("review", "large"), ("review", "large")]

