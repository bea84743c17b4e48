"""Typed stage artefacts: what one stage hands to the next (CLI pipeline and ComfyUI nodes alike).

Frozen dataclasses (``eq=False``: they hold arrays, compared by identity). Arrays are numpy:
images (H, W, 3) float32 sRGB in [0, 1], maps (H, W). A stage never edits an artefact it received;
it returns a new one (``dataclasses.replace``).
"""

from __future__ import annotations
from dataclasses import dataclass, field, replace
from typing import Any, Callable, List, Mapping, Optional, Tuple

import numpy as np

from .classes import CLASS_IDS, DEFAULT_FILL_CLASSES
from .scale import Scale


@dataclass(frozen=True, eq=False)
class ScanContext:
    """Physical scale and provenance of a scan (the nodes' ``RESTO_CTX``).

    ``scale``: the scan's :class:`~restoration.scale.Scale` (its dpi checked once, when it was made); the
    stages convert mm <-> px with it. ``scan``: what the record keeps about the input -- file ``name``
    (never a server path), ``sha256``, ``bits``, ``format``, ``lossy``, ``dpi_source``, ``seeds``.
    """
    scale: Scale
    width: int
    height: int
    scan: Mapping = field(default_factory=dict)

    @classmethod
    def of(cls, img: np.ndarray, dpi: "float | Scale", scan: Optional[Mapping] = None) -> "ScanContext":
        """The context of ``img`` (H, W, ...) at ``dpi`` (a number, checked, or a :class:`Scale`)."""
        scale = dpi if isinstance(dpi, Scale) else Scale(dpi)
        return cls(scale, int(img.shape[1]), int(img.shape[0]), dict(scan or {}))

    @property
    def dpi(self) -> float:
        """Pixels per inch."""
        return self.scale.dpi

    @property
    def mm_per_px(self) -> float:
        """Millimetres per pixel."""
        return self.scale.mm_per_px

    def check(self, img: np.ndarray, name: str = "image") -> np.ndarray:
        """ValueError unless ``img`` (H, W, ...) has this context's size."""
        if (img.shape[1], img.shape[0]) != (self.width, self.height):
            raise ValueError(f"{name} is {img.shape[1]}x{img.shape[0]} px but the context was made for "
                             f"{self.width}x{self.height} px")
        return img

    def summary(self) -> str:
        """``W x H px at D dpi = w x h mm``."""
        s = self.scale
        return (f"{self.width}x{self.height} px at {self.dpi:g} dpi = {s.px_to_mm(self.width):.2f} x "
                f"{s.px_to_mm(self.height):.2f} mm")


@dataclass(frozen=True, eq=False)
class DamageMap:
    """Detected (and edited) damage (``DAMAGE_MAP``): ``classes`` (H, W) uint8 ids of ``CLASS_IDS``;
    ``responses`` {name: (H, W) uint8}; the ground colour and detection parameters; the classes chosen
    for filling; the user's add/remove masks ((H, W) bool or None, kept so a record can be replayed);
    the detector's ``confidence`` (H, W) uint8 (255 = 1) and ``evidence`` (H, W) uint8 bits (see
    :mod:`restoration.review`; None when the map did not come from the detector)."""
    classes: np.ndarray
    responses: Mapping = field(default_factory=dict)
    ground_rgb: Optional[tuple] = None
    params: Optional[Mapping] = None
    fill_classes: tuple = DEFAULT_FILL_CLASSES
    user_add: Optional[np.ndarray] = None
    user_remove: Optional[np.ndarray] = None
    times: Mapping = field(default_factory=dict)
    confidence: Optional[np.ndarray] = None
    evidence: Optional[np.ndarray] = None

    @property
    def user_mask(self) -> dict:
        return {"add": self.user_add is not None, "remove": self.user_remove is not None}


@dataclass(frozen=True, eq=False)
class RegionTable:
    """Labelled regions and their rows (``REGION_TABLE``): ``labels`` (H, W) int32 (0 = none);
    ``rows`` one dict per region (see :func:`restoration.regions.region_table`), ordered by id;
    after a fill the ``method``; after QA ``qa_per_label`` (N + 1,) float32 dE00 per label; ``review``
    the review before print (:func:`restoration.stages.regions`): the effective ``config``, the
    ``accepted`` and ``rejected`` ids, a ``summary`` and per region its ``decision``, ``rule``,
    ``confidence`` and ``reasons``."""
    labels: np.ndarray
    rows: tuple
    classes: np.ndarray
    fill_classes: tuple
    dpi: float
    method: Optional[str] = None
    external_model: str = ""
    qa_per_label: Optional[np.ndarray] = None
    times: Mapping = field(default_factory=dict)
    review: Optional[Mapping] = None

    @property
    def n_regions(self) -> int:
        return int(self.labels.max()) if self.labels.size else 0

    def footprint(self, decision: str = "fill") -> np.ndarray:
        """Boolean (H, W) map of the regions whose ``fill_decision`` equals ``decision``."""
        from .regions import decision_mask
        return decision_mask(self.labels, self.rows, decision)

    def qa_map(self) -> np.ndarray:
        """(H, W) float32 fill QA (dE00 per filled region), zeros before QA."""
        if self.qa_per_label is None:
            return np.zeros(self.labels.shape, np.float32)
        return self.qa_per_label[self.labels]

    def with_times(self, **t: float) -> "RegionTable":
        return replace(self, times={**self.times, **t})

    def summary(self, mm_per_px: float, shown: int = 40) -> str:
        """One line for a person: regions found, to fill, waiting for review (not filled; the first ``shown``
        ids, to accept by id), skipped, and the fill area in mm^2 (``mm_per_px``: the scan's scale)."""
        rv = list(self.review["for_review"]) if self.review else []
        nf = sum(r["fill_decision"] == "fill" for r in self.rows)
        return (f"{self.n_regions} regions, {nf} to fill, {len(rv)} waiting for review (not filled; accept by id: "
                f"{','.join(map(str, rv[:shown]))}{' ...' if len(rv) > shown else ''}), "
                f"{self.n_regions - nf - len(rv)} skipped; fill area {self.footprint().sum() * mm_per_px ** 2:.3f} mm^2")

    def qa_summary(self, edge_de: float) -> str:
        """One line after fill QA: how many regions have an edge mismatch (dE00_edge > ``edge_de``)."""
        flagged = sum(r["edge_mismatch"] for r in self.rows)
        return f"{flagged} of {len(self.rows)} regions flagged (dE00_edge > {edge_de})"


@dataclass(frozen=True, eq=False)
class Palette:
    """Colour count of the fill: distinct 8-bit triplets, ΔE00-merged clusters at ``q`` (None when not
    counted) and the leaders by decreasing area (``{"rgb8": [r, g, b], "pixels": n}``, at most 256)."""
    n_rgb8: int
    n_de: Optional[int]
    q: float
    colours: tuple = ()

    def as_json(self) -> dict:
        return {"q": self.q, "count_rgb8": self.n_rgb8, "count_dE": self.n_de, "palette": list(self.colours)}


@dataclass(frozen=True, eq=False)
class PrintLayers:
    """The fill split into print layers at image size (``MASK_LAYERS`` before layout): ``color_rgba``
    (H, W, 4) float32 (A = ink footprint), ``white`` (H, W) float32 coverage 0..1, and how they were made."""
    color_rgba: np.ndarray
    white: np.ndarray
    white_mode: str
    amount_mm: float
    min_feature_mm: float
    white_on_black: bool
    white_reflectance: float


@dataclass(frozen=True, eq=False)
class PrintCanvas:
    """Both layers on the print canvas with fiducials (``MASK_LAYERS`` after layout).

    ``geom`` from :func:`restoration.printfile.canvas_geometry`; ``rows(r0, r1)`` gives canvas rows
    ``(rgba (R, CW, 4), white (R, CW))`` float32 -- from memory (:func:`restoration.layers.layout`) or
    computed strip by strip from the image (the CLI pipeline, any scan size). ``separation`` holds the
    white plate settings (white_mode, amount_mm, min_feature_mm).
    """
    geom: Mapping
    rows: Callable
    separation: Mapping
    color_rgba: Optional[np.ndarray] = None
    white: Optional[np.ndarray] = None

    @property
    def canvas_px(self) -> List[int]:
        return list(self.geom["canvas_px"])

    @property
    def canvas_mm(self) -> List[float]:
        return list(self.geom["canvas_mm"])

    @property
    def fiducials(self) -> List[dict]:
        return self.geom["fiducials"]

    @property
    def mirror(self) -> bool:
        return bool(self.geom["mirror"])

    @property
    def offset_px(self) -> int:
        return self.geom["offset_px"]

    @property
    def margin_mm(self) -> float:
        return self.geom["margin_mm"]

    @property
    def fiducial_mask(self) -> np.ndarray:
        from .printfile import fiducial_rows
        return fiducial_rows(self.geom, 0, self.canvas_px[1])

    def print_section(self) -> dict:
        """The canvas part of the record's ``print`` section."""
        return {"canvas_mm": self.canvas_mm, "canvas_px": self.canvas_px, "mirror": self.mirror,
                "margin_mm": self.margin_mm, "fiducials_mm": self.fiducials,
                "white_mode": self.separation.get("white_mode"), "white_amount_mm": self.separation.get("amount_mm"),
                "min_feature_mm": self.separation.get("min_feature_mm")}


def class_masks(classes: np.ndarray, names: Tuple[str, ...] = ("support_split", "craquelure", "loss",
                                                               "small_defect")) -> List[np.ndarray]:
    """Boolean (H, W) masks of the named classes, in the order given."""
    return [classes == CLASS_IDS[k] for k in names]
