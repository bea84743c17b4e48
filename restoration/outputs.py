"""Writing a finished job: print files, maps, tables, previews and the record (manifest + HTML).

:func:`write_job` is what the CLI pipeline and the Restoration Record node both call; it is made of
parts (:func:`write_print`, :func:`write_maps`, :func:`write_tables`, :func:`write_previews`) and of
:func:`build_manifest`, the one function that assembles ``manifest.json``.
"""

from __future__ import annotations
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .artefacts import DamageMap, Palette, PrintCanvas, RegionTable, ScanContext
from .classes import CLASS_IDS
from .fileio import to_uint, write_bytes, write_png, write_tiff_rows
from .previews import (PREVIEW_SIDE, class_overlay, downscale, heat, label_colors, layers_preview, nearest,
                       review_overlay)
from .printfile import WHITE_POLARITY, write_print_files
from .record import file_entry, versions, write_record
from .regions import table_csv


@dataclass(frozen=True, eq=False)
class JobResult:
    """Everything a record documents. ``sim``: predicted appearance at preview scale, or None."""
    img: np.ndarray
    ctx: ScanContext
    damage: DamageMap
    table: RegionTable
    filled: np.ndarray
    used: np.ndarray
    palette: Palette
    canvas: PrintCanvas
    sim: Optional[np.ndarray] = None
    times: Mapping = field(default_factory=dict)

    @classmethod
    def assemble(cls, original: np.ndarray, filled: np.ndarray, used: np.ndarray, table: RegionTable,
                 canvas: PrintCanvas, ctx: ScanContext, count_q: float = 1.0, damage: Optional[DamageMap] = None
                 ) -> "JobResult":
        """The job as the nodes hand it over (Restoration Record): the colour count made here, the damage
        map (or one made of the table's classes) with the table's fill classes, the stage times merged."""
        from dataclasses import replace
        from .stages import palette
        ctx.check(original, "original")
        if not isinstance(canvas, PrintCanvas):
            raise ValueError("layers must come from Print Layout (the print files and the record document the canvas)")
        if filled.shape != original.shape or used.shape != original.shape[:2]:
            raise ValueError(f"filled {filled.shape} and used mask {used.shape} differ from the scan {original.shape}")
        dmap = replace(damage if damage is not None else DamageMap(table.classes), fill_classes=table.fill_classes)
        return cls(original, ctx, dmap, table, filled, used, palette(filled, used, count_q), canvas,
                   times={**dmap.times, **table.times})


class _NoStages:
    """Stand-in for :class:`restoration.pipeline.Stages` (no timing, no progress)."""
    times: dict = {}

    def start(self, name):
        pass

    def tick(self, frac):
        pass

    def end(self):
        pass


def write_print(out: Any, canvas: PrintCanvas, dpi: float, pdf: bool = True, preview_side: Optional[int] = PREVIEW_SIDE,
                progress: Optional[Callable[[int, int], None]] = None) -> Tuple[List[dict], Any]:
    """The print files of ``canvas`` -> ``(file entries, canvas preview {"color_rgba", "white"})``."""
    cw, ch = canvas.canvas_px
    return write_print_files(out, canvas.rows, ch, cw, dpi, pdf=pdf, preview_side=preview_side, progress=progress)


def write_maps(out: Any, job: "JobResult") -> List[dict]:
    """Full-size maps: the fill (16-bit TIFF), labels, classes and the user masks (kept so that the
    record can be replayed). Returns file entries."""
    img, dpi, labels = job.img, job.ctx.dpi, job.table.labels
    h, w = img.shape[:2]
    files = []
    write_tiff_rows(out, "fill_full.tif", lambda y0, y1: to_uint(job.filled[y0:y1], 16), job.filled.shape,
                    np.uint16, dpi)
    files.append(file_entry(out, "fill_full.tif", role="fill_full", px_w=w, px_h=h, dpi=dpi, bit_depth=16))
    if job.table.n_regions < 65536:
        write_png(out, "damage_labels.png", labels.astype(np.uint16), dpi)
        files.append(file_entry(out, "damage_labels.png", role="labels", px_w=w, px_h=h, bit_depth=16))
    else:
        write_tiff_rows(out, "damage_labels.tif", lambda y0, y1: labels[y0:y1].astype(np.uint32), labels.shape,
                        np.uint32, dpi)
        files.append(file_entry(out, "damage_labels.tif", role="labels", px_w=w, px_h=h, bit_depth=32))
    write_png(out, "damage_classes.png", job.table.classes, dpi)
    files.append(file_entry(out, "damage_classes.png", role="classes", px_w=w, px_h=h, bit_depth=8))
    for k, m in (("add", job.damage.user_add), ("remove", job.damage.user_remove)):
        if m is not None:
            write_png(out, f"user_mask_{k}.png", np.asarray(m, bool).astype(np.uint8) * 255, dpi)
            files.append(file_entry(out, f"user_mask_{k}.png", role=f"user_mask_{k}", px_w=w, px_h=h, bit_depth=8))
    return files


def write_tables(out: Any, rows: Sequence[dict]) -> List[dict]:
    """regions.csv, regions.json and the class legend. Returns file entries."""
    write_bytes(out, "regions.csv", table_csv(rows))
    write_bytes(out, "regions.json", json.dumps(list(rows)))
    write_bytes(out, "damage_classes.json", json.dumps({"classes": CLASS_IDS, "class_of_label": {
        r["id"]: r["class"] for r in rows}}))
    return [file_entry(out, n, role="table") for n in ("regions.csv", "regions.json", "damage_classes.json")]


def write_previews(out: Any, job: "JobResult", canvas_preview: Any, side: int = PREVIEW_SIDE
                   ) -> List[Tuple[str, str]]:
    """The preview PNGs -> ``[(name, caption)]``, in the order the record shows them."""
    thumbs = []
    img, classes, labels = job.img, job.table.classes, job.table.labels

    def prev(name, arr, caption):
        write_png(out, name, to_uint(downscale(arr, side), 8))
        thumbs.append((name, caption))
    small = nearest(img, side)
    prev("preview_scan.png", img, "scan as received")
    prev("damage_map_preview.png", class_overlay(small, nearest(classes, side)),
         "damage classes: green split, red craquelure, blue loss, pink small defect, yellow user")
    prev("preview_regions.png", label_colors(nearest(labels, side)), f"{job.table.n_regions} regions (8-connected)")
    n_rev = len((job.table.review or {}).get("for_review", ()))
    prev("preview_fill_footprint.png",
         review_overlay(small, nearest(job.table.footprint(), side), nearest(job.table.footprint("review"), side)),
         f"filled (blue); {n_rev} regions waiting for review, NOT filled (orange, magenta outline): accept them by "
         "id or mask to fill; the rest are in the table with a skip reason")
    prev("preview_filled.png", job.filled, f"filled ({job.table.method})")
    for k, v in job.damage.responses.items():
        prev(f"response_{k}.png", heat(nearest(v, side).astype(np.float32), 128),
             f"response map {k} (yellow = 32+ L* or dE00)")
    qa_small = (job.table.qa_per_label[nearest(labels, side)] if job.table.qa_per_label is not None
                else np.zeros(nearest(labels, side).shape, np.float32))
    prev("preview_qa.png", heat(qa_small, 6.0), "fill QA: dE00 fill vs edge ring (yellow = 6+)")
    prev("preview_layers.png", layers_preview(canvas_preview["color_rgba"], canvas_preview["white"]),
         "print layers: colour (left, on checkerboard), white plate (right); mirrored" if job.canvas.mirror
         else "print layers")
    if job.sim is not None:
        prev("composite_preview.png", job.sim, "predicted appearance with the film (ideal registration)")
    return thumbs


def capture_section(ctx: ScanContext) -> dict:
    """The record's ``capture`` section: the scan's file name and hash, never a server path."""
    s = ctx.scan
    return {"file": s.get("name"), "path": s.get("path"), "sha256": s.get("sha256"), "ppi": ctx.dpi,
            "dpi_source": s.get("dpi_source"), "bits": s.get("bits"), "format": s.get("format"),
            "lossy": bool(s.get("lossy", False)), "px": [ctx.width, ctx.height]}


def build_manifest(job: "JobResult", files: List[dict], config: Optional[Mapping[str, Any]],
                   times: Mapping[str, float], icc_embedded: bool, workflow: bool = False,
                   registration: Optional[dict] = None, external_model: Optional[str] = None,
                   extra: Optional[Mapping[str, Any]] = None) -> dict:
    """The record's manifest (spec 4.5) as a dict: the ONE place its sections are assembled.

    ``config``: the settings that made the job (the CLI's ``PipelineConfig`` as a dict, or the nodes'
    ``{"source": "ComfyUI nodes"}``); ``times``: wall-clock seconds per stage; ``workflow``: whether
    ``workflow.json`` is in the record; ``registration``: the registration check without its map.
    ``review``: the review before print as the Region Table made it (config, accepted and rejected ids,
    per region decision, rule, confidence and reasons; ``--replay`` rebuilds the choice from it).
    """
    ctx, rows, dmap, pal = job.ctx, job.table.rows, job.damage, job.palette
    scale = ctx.scale
    skipped: dict = {}
    review = dict(job.table.review or {})
    for r in rows:
        if r["fill_decision"] == "skip":
            skipped[r["skip_reason"]] = skipped.get(r["skip_reason"], 0) + 1
    method = job.table.method
    generative = []
    if method == "external":
        generative = [{"region_ids": [r["id"] for r in rows if r.get("generative")],
                       "model": external_model or job.table.external_model or "external IMAGE (unknown model)",
                       "approved_by": ""}]
    manifest = {
        "object": {"title": "", "attribution": "", "date": "", "support": "", "inventory_no": "", "owner": "",
                   "dimensions_mm": {"w": round(scale.px_to_mm(ctx.width), 3),
                                     "h": round(scale.px_to_mm(ctx.height), 3)}},
        "capture": capture_section(ctx),
        "processing": {"software": "Atelier restoration", "versions": versions(), "config": dict(config or {}),
                       "detect_params": dmap.params, "seeds": dict(ctx.scan.get("seeds", {})),
                       "user_mask": dmap.user_mask},
        "generative": generative,
        "detection": {"ground_rgb": list(dmap.ground_rgb) if dmap.ground_rgb is not None else None,
                      "classes_filled": list(job.table.fill_classes),
                      "classes_not_filled": [c for c in CLASS_IDS if c not in job.table.fill_classes]},
        "stats": {"n_regions": job.table.n_regions,
                  "n_regions_filled": sum(r["fill_decision"] == "fill" for r in rows),
                  "n_regions_skipped_by_reason": skipped,
                  "n_regions_for_review": sum(r["fill_decision"] == "review" for r in rows),
                  "total_fill_area_mm2": round(scale.px_area_to_mm2(int(np.count_nonzero(job.used))), 4),
                  "total_damage_area_mm2": round(scale.px_area_to_mm2(int(np.count_nonzero(job.table.classes))), 4),
                  "count_rgb8": pal.n_rgb8, "count_dE1": pal.n_de, "count_dE_q": pal.q, "bit_depth_counted": 8,
                  "wallclock_s": dict(times)},
        "review": review or None,
        "palette": list(pal.colours[:64]),
        "print": {"dpi": ctx.dpi, **job.canvas.print_section(),
                  "color_file": "layer_color_rgba.tif", "white_file": "layer_white.tif",
                  "white_polarity": WHITE_POLARITY, "icc_embedded": bool(icc_embedded),
                  "icc": "sRGB (LittleCMS built-in, colour TIFF)" if icc_embedded else None,
                  "printer": "", "ink_set": "", "film": "", "print_mode": ""},
        "registration": registration,
        "application": {"date": "", "method": "aligned by hand", "adhesive_varnish": "", "solvent_for_removal": "",
                        "measured_registration_rms_um": registration["rms_um"] if registration else None,
                        "conservator": ""},
        "files": list(files),
        "workflow_file": "workflow.json" if workflow else None,
    }
    manifest.update(extra or {})
    return manifest


def comfy_workflow(prompt: Any, extra_pnginfo: Optional[Mapping[str, Any]]) -> Optional[dict]:
    """What a record stores of the ComfyUI run that made it (``workflow.json``): the API ``prompt`` and the
    editor's ``workflow`` (from the host's ``extra_pnginfo``); None when neither is known."""
    if prompt is None and extra_pnginfo is None:
        return None
    return {"prompt": prompt, "workflow": (extra_pnginfo or {}).get("workflow")}


NODE_PREVIEWS = ("damage_map", "preview_layers")


def node_previews(manifest: Mapping[str, Any], prefixes: Iterable[str] = NODE_PREVIEWS) -> List[str]:
    """The record's files a node shows (paths in ``manifest["files"]`` starting with one of ``prefixes``:
    the damage map previews and the layer previews), in the manifest's order."""
    return [x["path"] for x in manifest["files"] if x["path"].startswith(tuple(prefixes))]


def write_job(out: Any, job: "JobResult", config: Optional[Mapping[str, Any]], stages: Any = None,
              workflow: Optional[dict] = None, extra: Optional[Mapping[str, Any]] = None,
              capture: Optional[np.ndarray] = None, preview_side: int = PREVIEW_SIDE, pdf: bool = True,
              external_model: Optional[str] = None) -> dict:
    """Write every artefact of ``job`` into ``out`` and the record last; returns the manifest.

    ``stages``: a :class:`restoration.pipeline.Stages` for timing and progress (export, previews,
    record); ``workflow``: the ComfyUI prompt/workflow to store; ``capture``: (H, W, 3) capture with
    the film applied, for the registration check.
    """
    st = stages or _NoStages()
    dpi = job.ctx.dpi
    st.start("export")
    pf, canvas_prev = write_print(out, job.canvas, dpi, pdf=pdf, preview_side=preview_side,
                                  progress=lambda i, k: st.tick(0.8 * i / k))
    files: List[dict] = pf + write_maps(out, job) + write_tables(out, job.table.rows)
    st.end()
    st.start("previews")
    thumbs = write_previews(out, job, canvas_prev, preview_side)
    files += [file_entry(out, name, role="preview") for name, _ in thumbs]
    st.end()
    st.start("record")
    reg = None
    if capture is not None:
        from .register import registration_check, registration_summary
        reg = registration_check(capture, job.img, dpi, exclude=job.table.classes > 0)
        write_png(out, "registration_residual.png", to_uint(heat(reg["residual"], 10.0), 8))
        files.append(file_entry(out, "registration_residual.png", role="preview"))
        thumbs.append(("registration_residual.png", f"registration residual |dL*|, rms {reg['rms_um']:.1f} um"))
        reg = registration_summary(reg)
    if workflow is not None:
        write_bytes(out, "workflow.json", json.dumps(workflow))
        files.append(file_entry(out, "workflow.json", role="workflow"))
    st.end()
    times = {**job.times, **st.times}
    manifest = build_manifest(job, files, config, times, bool(pf[0].get("icc_embedded")), workflow is not None, reg,
                              external_model, extra)
    write_record(out, manifest, thumbs, list(job.table.rows))
    return manifest
