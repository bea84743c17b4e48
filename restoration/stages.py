"""The restoration stages as functions on typed artefacts (:mod:`restoration.artefacts`).

One function per rule, called by the CLI pipeline (:func:`restoration.pipeline.run`) and by the
ComfyUI nodes alike, so the same settings give the same maps, tables and files on both paths.
Shapes: images (H, W, 3) float32 sRGB in [0, 1]; masks and maps (H, W).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Optional, Sequence, Tuple
import logging
import time
from dataclasses import asdict, replace

import numpy as np

from .artefacts import DamageMap, Palette, RegionTable
from .classes import CLASS_IDS, DEFAULT_FILL_CLASSES
from .color import parse_rgb
from .detect import DetectConfig, detect_damage, fill_mask_from_classes, merge_user_mask
from .fileio import to_uint
from .fill import METHODS, fill_image, fill_qa
from .palette import count_rgb8, merge_palette
from .regions import RegionConfig, label_by_fill, region_table
from .review import ReviewConfig, decide, ids_under_mask, region_confidence, summary
from .scale import Scale
from .settings import SETTINGS, TILE, check_tile

log = logging.getLogger("atelier")
PALETTE_TOP = 256    # palette leaders kept (by area)


def check_fill_classes(fill_classes: Iterable[str], name: str = "fill classes") -> Tuple[str, ...]:
    """The class names as a tuple, or ValueError naming the unknown ones and the allowed names."""
    fc = tuple(fill_classes)
    bad = [c for c in fc if c not in CLASS_IDS]
    if bad:
        raise ValueError(f"{name}: unknown {bad}; allowed {sorted(CLASS_IDS)}")
    return fc


def detect_config(ground_color: str = "auto", tile: int = TILE, **thresholds: float) -> DetectConfig:
    """The :class:`DetectConfig` of the detection settings a user sets (the Damage Detect node's widgets,
    the CLI's ``--ground`` / ``--tile``), parsed and validated: ``ground_color`` text ('auto' or R,G,B),
    ``tile``, and any DetectConfig threshold by name. ValueError names the setting and what is allowed."""
    unknown = sorted(set(thresholds) - set(DetectConfig.__dataclass_fields__))
    if unknown:
        raise ValueError(f"unknown detection settings {unknown}")
    SETTINGS["ground_color"].check(ground_color)
    kw: dict[str, Any] = dict(thresholds)
    return DetectConfig(ground_rgb=parse_rgb(ground_color, SETTINGS["ground_color"].label),
                        tile=check_tile(tile), **kw)


def fill_classes_of(loss: bool = True, small_defect: bool = True, craquelure: bool = False,
                    support_split: bool = False, user: bool = True) -> Tuple[str, ...]:
    """The fill classes chosen by switches (Damage Map Edit), in a fixed order."""
    on = {"loss": loss, "small_defect": small_defect, "craquelure": craquelure, "support_split": support_split,
          "user": user}
    return tuple(k for k, v in on.items() if v)


def detect(img: np.ndarray, dpi: "float | Scale", cfg: DetectConfig = DetectConfig(),
           progress: Optional[Callable[[int, int], None]] = None) -> DamageMap:
    """Damage detection -> :class:`DamageMap` (no user masks yet; default fill classes)."""
    t = time.perf_counter()
    det = detect_damage(img, dpi, cfg, progress=progress)
    g = det.get("ground_rgb")
    return DamageMap(det["classes"], det.get("responses", {}), None if g is None else tuple(g), det.get("params"),
                     times={"detect": round(time.perf_counter() - t, 3)}, confidence=det.get("confidence"),
                     evidence=det.get("evidence"))


def edit(dmap: DamageMap, add: Optional[np.ndarray] = None, remove: Optional[np.ndarray] = None,
         fill_classes: Optional[Iterable[str]] = None) -> DamageMap:
    """User masks merged into the class map (``add``: (H, W) bool painted as ``user`` where nothing was
    found, ``remove``: cleared) and the classes chosen for filling. Returns a new :class:`DamageMap`."""
    classes = merge_user_mask(dmap.classes, add, remove)
    fc = dmap.fill_classes if fill_classes is None else check_fill_classes(fill_classes)
    to_b = lambda m: None if m is None else np.asarray(m) > 0.5
    return replace(dmap, classes=classes, fill_classes=fc, user_add=to_b(add), user_remove=to_b(remove))


def fill_candidates(dmap: DamageMap) -> np.ndarray:
    """(H, W) bool: pixels of the classes chosen for filling."""
    return fill_mask_from_classes(dmap.classes, dmap.fill_classes)


REVIEW_INPUTS = ("accept", "reject", "accept_mask", "reject_mask")  # default names in review messages


def parse_ids(ids: "str | Iterable[Any] | None", name: str = "accept") -> Tuple[int, ...]:
    """Region ids as a sorted tuple of ints from text ('3,7,12' or '3 7 12'; empty = none) or an iterable
    of ints. ValueError names the input, the bad value and what is allowed."""
    if ids is None:
        return ()
    items = ids.replace(",", " ").split() if isinstance(ids, str) else list(ids)
    out = set()
    for v in items:
        try:
            i = int(v)
        except (TypeError, ValueError):
            i = None
        if i is None or i < 1 or (isinstance(v, float) and v != i):
            raise ValueError(f"{name}: {v!r} is not a region id; give region ids (integers >= 1) separated by "
                             "commas, e.g. 3,7,12")
        out.add(i)
    return tuple(sorted(out))


def check_review(cfg: ReviewConfig = ReviewConfig(), accept: "str | Iterable[Any]" = "",
                 reject: "str | Iterable[Any]" = "", names: Sequence[str] = REVIEW_INPUTS
                 ) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    """The checks that need no region map (before detection starts): the review settings and the id lists.
    Returns ``(accept ids, reject ids)``; ValueError names the input."""
    cfg.validate()
    a, r = parse_ids(accept, names[0]), parse_ids(reject, names[1])
    both = sorted(set(a) & set(r))
    if both:
        raise ValueError(f"regions {both} are named in both {names[0]} and {names[1]}; name each in one list only")
    return a, r


def review_ids(labels: np.ndarray, accept: "str | Iterable[Any]" = "", reject: "str | Iterable[Any]" = "",
               accept_mask: Optional[np.ndarray] = None, reject_mask: Optional[np.ndarray] = None,
               names: Optional[Sequence[str]] = None) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    """THE rule that turns a user's accept/reject choice into region ids (Region Table node, CLI, replay):
    ids given as text or ints (:func:`parse_ids`) united with the regions each mask ((H, W) bool, the
    region map's size) touches (:func:`restoration.review.ids_under_mask`). Returns ``(accept, reject)``
    sorted tuples; ValueError names the input (a mask of the wrong size, a bad id, an id in both)."""
    names = names or REVIEW_INPUTS
    a, r = set(parse_ids(accept, names[0])), set(parse_ids(reject, names[1]))
    for ids, m, name in ((a, accept_mask, names[2]), (r, reject_mask, names[3])):
        if m is not None:
            try:
                ids |= ids_under_mask(labels, m)
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
    both = sorted(a & r)
    if both:
        raise ValueError(f"regions {both} are both accepted and rejected ({names[0]}/{names[2]} vs "
                         f"{names[1]}/{names[3]}); name each in one list only")
    return tuple(sorted(a)), tuple(sorted(r))


def regions(img: np.ndarray, dmap: DamageMap, dpi: "float | Scale", cfg: RegionConfig = RegionConfig(),
            review: ReviewConfig = ReviewConfig(), accept: "str | Iterable[Any]" = "",
            reject: "str | Iterable[Any]" = "", accept_mask: Optional[np.ndarray] = None,
            reject_mask: Optional[np.ndarray] = None, names: Optional[Sequence[str]] = REVIEW_INPUTS) -> RegionTable:
    """Label and measure every region and decide what gets filled -> :class:`RegionTable`.

    The review before print (:mod:`restoration.review`): each region gets the mean detector confidence
    and the evidence reasons, then :func:`restoration.review.decide` with the accepted/rejected ids of
    :func:`review_ids`. ``review`` gives min_confidence, max_fill_mm2 and max_fill_share; its registration
    tolerance, invisibility threshold and fill classes are those of ``cfg`` and ``dmap`` (one setting,
    one place). A region that :func:`restoration.regions.region_table` finds invisible (contrast, or
    narrower than 1 arcmin at the viewing distance) meets the ``invisible`` rule. Each row gets
    ``fill_decision`` (fill | review | skip), ``skip_reason`` (the rule, for skips), ``rule``,
    ``confidence`` and ``reasons``; the table's ``review`` keeps the config, ids and per-region decisions.
    ``names``: how the caller spells the four review inputs (for the error messages)."""
    t = time.perf_counter()
    scale = Scale.of(dpi)
    labels, _ = label_by_fill(dmap.classes, dmap.fill_classes)
    rows = region_table(labels, dmap.classes, img, scale, dmap.fill_classes, cfg)
    rcfg = replace(review, registration_tol_um=float(cfg.registration_tol_um), invisible_de=float(cfg.invisible_de),
                   fill_classes=tuple(dmap.fill_classes)).validate()
    acc, rej = review_ids(labels, accept, reject, accept_mask, reject_mask, names)
    zeros = np.zeros(labels.shape, np.uint8)  # no detector maps (a hand-made DamageMap): every region unsure
    conf, bits = region_confidence(labels, zeros if dmap.confidence is None else dmap.confidence,
                                   zeros if dmap.evidence is None else dmap.evidence)
    gate = [dict(r, dE00_contrast=0.0) if r["skip_reason"] == "invisible" else r for r in rows]
    decs = decide(gate, conf, bits, scale.px_area_to_mm2(labels.size), rcfg, acc, rej)
    for r, d in zip(rows, decs):
        r.update(fill_decision=d.decision, skip_reason=d.rule if d.decision == "skip" else "", rule=d.rule,
                 confidence=d.confidence, reasons=list(d.reasons))
    rv = {"config": asdict(rcfg), "accepted": list(acc), "rejected": list(rej), "summary": summary(decs),
          "for_review": [d.id for d in decs if d.decision == "review"], "regions": [d.as_row() for d in decs]}
    return RegionTable(labels, tuple(rows), dmap.classes, tuple(dmap.fill_classes), scale.dpi,
                       times={"regions": round(time.perf_counter() - t, 3)}, review=rv)


def fill(img: np.ndarray, mask: np.ndarray, method: str = "harmonic", grow_px: int = 1,
         external: Optional[np.ndarray] = None, source: Optional[np.ndarray] = None, tile: int = TILE,
         device: Any = "cpu", progress: Optional[Callable[[int, int], None]] = None,
         workers: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Fill ``mask`` (see :func:`restoration.fill.fill_image`) -> ``(filled, used)``; the tile is the
    same on every path so node and CLI fills are identical. ``external`` is required by (and only used
    with) method ``external``, ``source`` only with ``patch``; an input given to another method is
    ignored with a warning. ``method``, ``grow_px`` and ``workers`` (the exemplar fill's, ``fill_workers``: the
    result does not depend on it) are checked by their records."""
    SETTINGS["method"].check(method)
    SETTINGS["grow_px"].check(grow_px)
    SETTINGS["fill_workers"].check(workers)
    if method == "external" and external is None:
        raise ValueError("fill method 'external' needs the external fill IMAGE (external_fill)")
    if external is not None and method != "external":
        log.warning("atelier restoration: an external fill is given but the method is %r; it is ignored", method)
        external = None
    if source is not None and method != "patch":
        log.warning("atelier restoration: a source mask is given but the method is %r; it is ignored", method)
        source = None
    return fill_image(img, mask, method, external=external, grow_px=grow_px, tile=tile, device=device,
                      progress=progress, source=source, workers=workers)


def annotate_fill(table: RegionTable, method: str, external_model: Optional[str] = "",
                  seconds: Optional[float] = None) -> RegionTable:
    """The table after a fill by ``method``: each filled region's ``fill_method`` and ``generative``
    (an external model made it); returns a new :class:`RegionTable`."""
    if method not in METHODS:
        raise ValueError(f"fill method {method!r} is not one of {METHODS}")
    rows = []
    for r in table.rows:
        r = dict(r)
        filled = r["fill_decision"] == "fill"
        r["fill_method"] = method if filled else ""
        r["generative"] = method == "external" and filled
        rows.append(r)
    t = {"fill": seconds} if seconds is not None else {}
    return replace(table, rows=tuple(rows), method=method, external_model=external_model or "",
                   times={**table.times, **t})


def qa(original: np.ndarray, filled: np.ndarray, table: RegionTable, edge_de: float = 3.0, tile: int = TILE
       ) -> RegionTable:
    """Fill QA per region (dE00 of the fill against its edge ring) -> new :class:`RegionTable` with
    the QA columns and ``qa_per_label``."""
    if original.shape != filled.shape or original.shape[:2] != table.labels.shape:
        raise ValueError(f"original {original.shape}, filled {filled.shape} and regions {table.labels.shape} "
                         "differ in size")
    SETTINGS["edge_de"].check(edge_de)
    t = time.perf_counter()
    rows, per = fill_qa(original, filled, table.labels, list(table.rows), edge_de=edge_de, tile=tile, heat=False)
    return replace(table, rows=tuple(rows), qa_per_label=per,
                   times={**table.times, "qa": round(time.perf_counter() - t, 3)})


def palette(filled: np.ndarray, used: np.ndarray, q: float = 1.0, merge: bool = True, top: int = PALETTE_TOP
            ) -> Palette:
    """The colour count of the fill (inside ``used``) -> :class:`Palette`. The one palette summary
    (pipeline, Colour Count node, Record node). ``merge=False`` skips the ΔE00 clustering."""
    SETTINGS["q"].check(q)
    rgb8 = to_uint(np.asarray(filled)[np.asarray(used, bool)], 8)
    n8 = count_rgb8(rgb8)
    if not merge:
        return Palette(n8, None, float(q))
    leaders, counts, _, _ = merge_palette(rgb8, q)
    order = np.argsort(-counts, kind="stable")[:top]
    cols = tuple({"rgb8": [int(v) for v in leaders[i]], "pixels": int(counts[i])} for i in order)
    return Palette(n8, int(len(leaders)), float(q), cols)


def palette_swatch(pal: Palette, n: int = 32, side: int = 64) -> np.ndarray:
    """(side, side * k, 3) float32 swatches of the first ``k = min(n, len)`` leaders (white when none)."""
    cols = pal.colours[:n]
    sw = np.ones((side, side * max(1, len(cols)), 3), np.float32)
    for j, c in enumerate(cols):
        sw[:, side * j:side * (j + 1)] = np.array(c["rgb8"], np.float32) / 255
    return sw


__all__ = ["TILE", "DEFAULT_FILL_CLASSES", "check_fill_classes", "check_tile", "detect_config", "fill_classes_of",
           "detect", "edit", "fill_candidates", "parse_ids", "check_review", "review_ids", "regions",
           "fill", "annotate_fill", "qa", "palette", "palette_swatch"]
