"""The whole job: scan -> damage map -> regions -> fill -> QA -> colours -> layers -> print files ->
record. Used by the CLI (``python -m restoration``) and the benchmark; the nodes call the same
stage functions (:mod:`restoration.stages`) and the same writer (:func:`restoration.outputs.write_job`).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, TYPE_CHECKING
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from .artefacts import ScanContext
from .classes import DEFAULT_FILL_CLASSES
from .color import parse_rgb
from .detect import DetectConfig
from .fileio import prepare_out_dir
from .layers import separate, simulate, stream_canvas
from .outputs import JobResult, write_job
from .previews import PREVIEW_SIDE, preview_stride
from .printfile import check_layout
from .regions import RegionConfig
from .review import ReviewConfig
from .settings import CLI_FILL_METHODS, SETTINGS, check_tile  # noqa: F401  (CLI_FILL_METHODS: for callers)
from . import stages

if TYPE_CHECKING:
    from .scale import Scale


_S = SETTINGS


@dataclass(frozen=True)
class PipelineConfig:
    """Every setting of a whole job (the CLI's, kept in the record). The fields named in :attr:`RECORDS`
    are records of :data:`restoration.settings.SETTINGS` (default and bounds; ``fill_method`` is the
    ``method`` record, ``white_amount_mm`` the ``amount_mm`` one); checked when the config is made."""
    detect: DetectConfig = field(default_factory=DetectConfig)
    regions: RegionConfig = field(default_factory=RegionConfig)
    review: ReviewConfig = field(default_factory=ReviewConfig)
    fill_classes: tuple = DEFAULT_FILL_CLASSES
    fill_method: str = _S["method"].default
    grow_px: int = _S["grow_px"].default
    count_q: float = _S["count_q"].default
    white_mode: str = _S["white_mode"].default
    white_amount_mm: float = _S["amount_mm"].default
    min_feature_mm: float = _S["min_feature_mm"].default
    margin_mm: float = _S["margin_mm"].default
    mirror: bool = _S["mirror"].default
    tile: int = _S["tile"].default
    preview_side: int = PREVIEW_SIDE
    write_pdf: bool = True
    count_colours_dE: bool = True

    #: field -> the record that checks it (not fields)
    RECORDS = {"fill_method": "method", "grow_px": "grow_px", "count_q": "count_q", "white_mode": "white_mode",
               "white_amount_mm": "amount_mm", "min_feature_mm": "min_feature_mm", "margin_mm": "margin_mm",
               "mirror": "mirror"}

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> "PipelineConfig":
        """Check every setting before any work starts; ValueError (a :class:`~atelier_settings.SettingError`
        for one setting) names the setting, the value and what is allowed."""
        self.detect.validate()
        self.review.validate()
        if self.detect.ground_rgb is not None:
            parse_rgb(self.detect.ground_rgb, "ground colour")
        stages.check_fill_classes(self.fill_classes)
        for f, rec in self.RECORDS.items():
            _S[rec].check(getattr(self, f))
        check_tile(self.tile)
        if not 64 <= self.preview_side <= 8192:
            raise ValueError(f"preview_side={self.preview_side!r} is out of range; allowed 64..8192 px")
        return self


def config_from_dict(d: Mapping[str, Any]) -> PipelineConfig:
    """A :class:`PipelineConfig` from its ``asdict`` form (as stored in a record's manifest); unknown keys
    are refused by name, lists become tuples."""
    from dataclasses import fields

    def build(cls, v, where):
        if not isinstance(v, dict):
            raise ValueError(f"record config{where} must be an object, got {type(v).__name__}")
        names = {f.name for f in fields(cls)}
        bad = sorted(set(v) - names)
        if bad:
            raise ValueError(f"record config{where}: unknown keys {bad}; this version knows {sorted(names)}")
        kw = {k: tuple(x) if isinstance(x, list) else x for k, x in v.items()}
        try:
            return cls(**kw)
        except TypeError as exc:
            raise ValueError(f"record config{where}: {exc}") from None
    if not isinstance(d, dict):
        raise ValueError(f"record config must be an object, got {type(d).__name__}")
    d = dict(d)
    det = build(DetectConfig, d.pop("detect", {}), ".detect")
    reg = build(RegionConfig, d.pop("regions", {}), ".regions")
    rev = build(ReviewConfig, d.pop("review", {}), ".review")  # records made before the review: the defaults
    return build(PipelineConfig, {**d, "detect": det, "regions": reg, "review": rev}, "")


class Stages:
    """Wall-clock timing per stage and a progress callback ``cb(stage_index, n_stages, name, frac)``."""

    def __init__(self, names, cb=None):
        self.names, self.cb, self.times, self.i = list(names), cb, {}, -1

    def start(self, name: str) -> None:
        self.i = self.names.index(name)
        self._t = time.perf_counter()
        self.cur = name
        self.tick(0.0)

    def tick(self, frac: float) -> None:
        if self.cb:
            self.cb(self.i, len(self.names), self.cur, frac)

    def end(self) -> None:
        self.times[self.cur] = round(time.perf_counter() - self._t, 3)
        self.tick(1.0)


STAGES = ("detect", "regions", "fill", "qa", "colours", "layers", "export", "previews", "record")


def run(img: np.ndarray, dpi: "float | Scale", out_dir: Any, cfg: PipelineConfig = PipelineConfig(),
        scan_info: Optional[Mapping[str, Any]] = None, user_add: Optional[np.ndarray] = None,
        user_remove: Optional[np.ndarray] = None, external_fill: Optional[np.ndarray] = None,
        workflow: Optional[dict] = None, extra: Optional[Mapping[str, Any]] = None,
        progress: Optional[Callable[[int, int, str, float], None]] = None, capture: Optional[np.ndarray] = None,
        accept: "str | Iterable[int]" = (), reject: "str | Iterable[int]" = (),
        accept_mask: Optional[np.ndarray] = None, reject_mask: Optional[np.ndarray] = None,
        review_names: Optional[Sequence[str]] = None, fill_workers: int = 0) -> dict:
    """Run every stage on ``img`` ((H, W, 3) float32 sRGB in [0, 1]) and write all artefacts into
    ``out_dir`` (the CLI stages it in a hidden folder, :class:`restoration.fileio.StagedFolder`).

    Returns the manifest dict. ``extra`` is merged into the manifest (e.g. sample metrics);
    ``capture`` (same size as img) triggers the registration check. A scan with nothing to fill is a
    normal result (empty region table, empty print layers apart from the fiducials). ``accept`` /
    ``reject`` (region ids) and ``accept_mask`` / ``reject_mask`` ((H, W) bool) are the user's review
    choices (:func:`restoration.stages.review_ids`; ``review_names``: how the caller spells them in
    messages); the record keeps the ids they resolve to. ``fill_workers``: the exemplar fill's workers (the
    ``fill_workers`` record; the result, hence the record, does not depend on it).
    """
    cfg.validate()
    _S["fill_workers"].check(fill_workers)
    stages.check_review(cfg.review, accept, reject, review_names or stages.REVIEW_INPUTS)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3), got {img.shape}")
    rn = review_names or stages.REVIEW_INPUTS
    for name, m in (("user mask 'add'", user_add), ("user mask 'remove'", user_remove), (rn[2], accept_mask),
                    (rn[3], reject_mask)):  # before any work: a mask of another size is refused by name
        if m is not None and tuple(np.shape(m)) != img.shape[:2]:
            raise ValueError(f"{name}: the mask has size {tuple(np.shape(m))}; the scan is {img.shape[:2]} (H, W)")
    ctx = ScanContext.of(img, dpi, scan_info)
    scale = ctx.scale
    check_layout(scale, cfg.margin_mm)  # before any work: the fiducials must fit in the margin at this dpi
    out = prepare_out_dir(out_dir)
    st = Stages(STAGES, progress)
    h, w = img.shape[:2]

    st.start("detect")
    dcfg = cfg.detect if cfg.detect.tile == cfg.tile else replace(cfg.detect, tile=cfg.tile)
    dmap = stages.detect(img, scale, dcfg, progress=lambda i, n: st.tick(i / n))
    dmap = stages.edit(dmap, user_add, user_remove, cfg.fill_classes)
    st.end()

    st.start("regions")
    table = stages.regions(img, dmap, scale, cfg.regions, cfg.review, accept, reject, accept_mask, reject_mask,
                           review_names)
    st.end()

    st.start("fill")
    method = cfg.fill_method if external_fill is None else "external"
    filled, used = stages.fill(img, table.footprint(), method, grow_px=cfg.grow_px, external=external_fill,
                               tile=cfg.tile, progress=lambda i, k: st.tick(i / k), workers=fill_workers)
    table = stages.annotate_fill(table, method)
    st.end()

    st.start("qa")
    table = stages.qa(img, filled, table, tile=cfg.tile)
    st.end()

    st.start("colours")
    pal = stages.palette(filled, used, cfg.count_q, merge=cfg.count_colours_dE)
    st.end()

    st.start("layers")
    # the print canvas is produced in row strips while it is written (export stage), so memory stays
    # bounded whatever the scan size; here only its geometry and a preview-scale appearance simulation
    sep: dict[str, Any] = dict(white_mode=cfg.white_mode, amount_mm=cfg.white_amount_mm, min_feature_mm=cfg.min_feature_mm)
    canvas = stream_canvas(filled, img, used, scale, margin_mm=cfg.margin_mm, mirror=cfg.mirror, **sep)
    s = preview_stride(h, w, cfg.preview_side)
    sim = simulate(img[::s, ::s], separate(filled[::s, ::s], img[::s, ::s], used[::s, ::s], scale.coarser(s), **sep))
    st.end()

    job = JobResult(img, ctx, dmap, table, filled, used, pal, canvas, sim, times=dict(st.times))
    return write_job(out, job, asdict(cfg), st, workflow=workflow, extra=extra, capture=capture,
                     preview_side=cfg.preview_side, pdf=cfg.write_pdf)
