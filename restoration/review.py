"""Review before print: a confidence and reasons for every region, and the decision what gets filled.

A film mask that covers intact paint is the one result a conservator cannot accept, so the default
fills only what the detector is sure of and what is small; everything else waits for a person.

Interface (for the pipeline, the Region Table node, the CLI and the record)
--------------------------------------------------------------------------
1. :func:`restoration.detect.detect_damage` returns, besides ``classes``, two (H, W) uint8 maps:
   ``confidence`` (0..255 = 0..1; losses get theirs from :func:`restoration.detect.loss_confidence`,
   pixels of the other detected classes 255, undamaged 0) and ``evidence`` (bits of
   :data:`restoration.detect.EVIDENCE`).
2. After labelling (``regions.label_by_fill``) call :func:`region_confidence` ``(labels, confidence,
   evidence)`` -> per-label confidence (mean over the region) and evidence bits (OR over the region).
   User-painted pixels carry no detector confidence: the ``user`` class is filled by rule instead.
3. With the region table rows (``regions.region_table``: ``id``, ``class``, ``area_mm2``,
   ``max_width_mm``, optional ``dE00_contrast``) call :func:`decide` ``(rows, conf, bits, picture_mm2,
   cfg, accept=ids, reject=ids)``. Ids come from the user (node input / CLI option: comma-separated
   region ids) or from masks via :func:`ids_under_mask` (a region touched by the mask is named).
   It returns one :class:`Decision` per row, in row order: ``decision`` is ``fill``, ``review`` or
   ``skip``; ``rule`` the rule that made it (:data:`RULES`); ``confidence`` and ``reasons``.
4. :func:`footprint` ``(labels, decisions)`` is the boolean fill footprint (only ``fill``); the same
   with ``"review"`` gives the map of regions listed for review (previews, HTML record).
5. The record keeps, per region, ``decision``, ``rule``, ``confidence`` and ``reasons``
   (:meth:`Decision.as_row`), and the ``ReviewConfig`` with the accepted and rejected ids.

Rules, first match wins (:data:`RULES`):
``rejected`` (named in ``reject``) -> skip; ``accepted`` (named in ``accept``) -> fill;
``class_not_filled`` -> skip; ``user_painted`` -> fill; ``below_registration`` (narrower than twice
the registration tolerance: thin scratches and specks are flagged, listed and not filled, because a
film cannot be laid on them; accept them by id to fill) -> skip; ``invisible`` (contrast to the ring
below ``invisible_de``) -> skip; ``large`` (area above ``max_fill_mm2`` or above ``max_fill_share`` of
the picture, and confidence below ``large_min_confidence``) -> review; ``unsure`` (confidence below ``min_confidence``) -> review; ``confident`` -> fill.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np

from .classes import DEFAULT_FILL_CLASSES
from .detect import EVIDENCE
from .settings import SETTINGS

RULES = ("rejected", "accepted", "class_not_filled", "user_painted", "below_registration", "invisible",
         "large", "unsure", "confident")
REASONS = {"ground_confirmed": "colour of a ground shared by several losses (or given)",
           "ground_unconfirmed": "colour not confirmed as a ground on this scan",
           "low_contrast": "low contrast to the surrounding paint",
           "weak_edge": "no sharp edge along part of the outline",
           "textured": "interior less flat than an exposed ground",
           "colour_off": "mean colour off the ground colour (paint of a similar colour?)",
           "mixed_ring": "differs from the paint around it point by point only (lighter and darker paint around it; "
                         "paint of the ground's colour may touch it)",
           "unlike_ground": "per-pixel texture unlike the ground's, or an edge that blends into the paint "
                            "(a painted highlight?)"}


_S = SETTINGS


@dataclass(frozen=True)
class ReviewConfig:
    """The review rules' settings; every field but ``invisible_de`` and ``fill_classes`` is a record of
    :data:`restoration.settings.SETTINGS` (default and bounds), checked when the config is made."""
    min_confidence: float = _S["min_confidence"].default       # below: review
    max_fill_mm2: float = _S["max_fill_mm2"].default           # larger regions go to review ...
    max_fill_share: float = _S["max_fill_share"].default       # ... as do regions above this share of the picture
    registration_tol_um: float = _S["registration_tol_um"].default
    large_min_confidence: float = _S["large_min_confidence"].default  # a large region is filled only this sure
    invisible_de: float = 2.0
    fill_classes: tuple = DEFAULT_FILL_CLASSES

    RECORDS = ("min_confidence", "max_fill_mm2", "max_fill_share", "registration_tol_um", "large_min_confidence")  # not fields

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def given(cls, **values: Optional[float]) -> "ReviewConfig":
        """The config with the ``values`` that are given (as floats); a None value keeps the default (an
        optional node input left unset)."""
        kw: dict[str, Any] = {k: float(v) for k, v in values.items() if v is not None}
        return cls(**kw)

    def validate(self) -> "ReviewConfig":
        """Every setting checked by its record (:class:`~atelier_settings.SettingError` naming it)."""
        for k in self.RECORDS:
            _S[k].check(getattr(self, k))
        if not self.invisible_de >= 0:
            raise ValueError(f"invisible_de={self.invisible_de!r} must be >= 0")
        return self


@dataclass(frozen=True)
class Decision:
    id: int
    decision: str                     # fill | review | skip
    rule: str                         # one of RULES
    confidence: float
    reasons: tuple = field(default_factory=tuple)

    def as_row(self) -> dict:
        d = asdict(self)
        d["reasons"] = list(self.reasons)
        return d


def region_confidence(labels: np.ndarray, confidence: np.ndarray, evidence: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Per label of ``labels`` ((H, W) int, 0 = none, N = max): mean of ``confidence`` ((H, W) uint8,
    255 = 1): the minimum over the region (its least confident part) as (N + 1,) float64 in [0, 1], and the
    OR of ``evidence`` bits as (N + 1,) uint8."""
    lab = np.asarray(labels).ravel()
    n = int(lab.max()) if lab.size else 0
    cnt = np.bincount(lab, minlength=n + 1).astype(np.float64)
    # the least confident part decides: a region that joins a confident loss and a doubtful one is doubtful
    conf = np.full(n + 1, 255.0)
    np.minimum.at(conf, lab, np.asarray(confidence).ravel().astype(np.float64))
    conf = np.where(cnt > 0, conf, 0.0) / 255
    ev = np.asarray(evidence).ravel()
    bits = np.zeros(n + 1, np.uint8)
    for b in EVIDENCE.values():
        has = np.bincount(lab, (ev & b) > 0, minlength=n + 1) > 0
        bits[has] |= b
    conf[0], bits[0] = 0.0, 0
    return conf, bits


def reasons_of(bits: int) -> tuple:
    """Human-readable reasons for a region's evidence bits (see :data:`REASONS`)."""
    return tuple(REASONS[k] for k, b in EVIDENCE.items() if int(bits) & b)


def ids_under_mask(labels: np.ndarray, mask: np.ndarray) -> set:
    """Ids of the regions that a user mask ((H, W) bool or float > 0.5) touches."""
    if tuple(np.shape(mask)) != tuple(np.shape(labels)):
        raise ValueError(f"review mask has size {tuple(np.shape(mask))}; the region map is {tuple(np.shape(labels))}")
    ids = np.unique(np.asarray(labels)[np.asarray(mask) > 0.5])
    return {int(i) for i in ids if i > 0}


def decide(rows: Sequence[Mapping[str, Any]], conf: np.ndarray, bits: np.ndarray, picture_mm2: float,
           cfg: ReviewConfig = ReviewConfig(), accept: Iterable[int] = (), reject: Iterable[int] = ()
           ) -> list[Decision]:
    """One :class:`Decision` per region row, in row order (rules in the module docstring).

    rows: dicts with ``id``, ``class``, ``area_mm2``, ``max_width_mm`` and optionally
    ``dE00_contrast``; conf/bits: from :func:`region_confidence`; picture_mm2: area of the scan;
    accept/reject: region ids (an id in both is refused).
    """
    cfg.validate()
    accept, reject = {int(i) for i in accept}, {int(i) for i in reject}
    both = sorted(accept & reject)
    if both:
        raise ValueError(f"regions {both} are both accepted and rejected; name each in one list only")
    known = {int(r["id"]) for r in rows}
    unknown = sorted((accept | reject) - known)
    if unknown:
        raise ValueError(f"accept/reject name regions {unknown[:10]} that do not exist; ids are 1..{max(known, default=0)}")
    out = []
    min_width = 2 * cfg.registration_tol_um / 1000
    for r in rows:
        i = int(r["id"])
        c = float(conf[i]) if i < len(conf) else 0.0
        why = reasons_of(bits[i]) if i < len(bits) else ()
        cls = r["class"]
        contrast = r.get("dE00_contrast")
        if i in reject:
            d, rule = "skip", "rejected"
        elif i in accept:
            d, rule = "fill", "accepted"
        elif cls not in cfg.fill_classes:
            d, rule = "skip", "class_not_filled"
        elif cls == "user":
            d, rule = "fill", "user_painted"
        elif r["max_width_mm"] < min_width:
            d, rule = "skip", "below_registration"
        elif contrast is not None and contrast < cfg.invisible_de and not (i < len(bits) and bits[i] & EVIDENCE["mixed_ring"]):
            # (a loss across lighter and darker paint: its ring's mean hides a contrast every ring pixel shows)
            d, rule = "skip", "invisible"
        elif (r["area_mm2"] > cfg.max_fill_mm2 or r["area_mm2"] > cfg.max_fill_share * picture_mm2) \
                and c < cfg.large_min_confidence:
            d, rule = "review", "large"
        elif c < cfg.min_confidence:
            d, rule = "review", "unsure"
        else:
            d, rule = "fill", "confident"
        out.append(Decision(i, d, rule, round(c, 4), why))
    return out


def footprint(labels: np.ndarray, decisions: Sequence[Decision], decision: str = "fill") -> np.ndarray:
    """Boolean (H, W) map of the regions whose decision is ``decision``."""
    n = int(np.asarray(labels).max()) if np.size(labels) else 0
    keep = np.zeros(n + 1, bool)
    for d in decisions:
        if d.id <= n:
            keep[d.id] = d.decision == decision
    return keep[labels]


def summary(decisions: Sequence[Decision]) -> dict:
    """Counts per decision and per rule (for the record's stats)."""
    by_d: dict = {}
    by_r: dict = {}
    for d in decisions:
        by_d[d.decision] = by_d.get(d.decision, 0) + 1
        by_r[d.rule] = by_r.get(d.rule, 0) + 1
    return {"by_decision": by_d, "by_rule": by_r}
