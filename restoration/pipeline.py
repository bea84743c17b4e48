"""The whole job: scan -> damage map -> regions -> fill -> QA -> colours -> layers -> print files ->
record. Used by the CLI (``python -m restoration``) and the benchmark; the nodes run the same stages.
"""
import json
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from .classes import CLASS_IDS, DEFAULT_FILL_CLASSES
from .detect import DetectConfig, detect_damage, merge_user_mask
from .export import WHITE_POLARITY
from .fill import fill_image, fill_qa
from .layers import separate, simulate
from .printfile import canvas_geometry, canvas_rows, laid_rows, layer_rows_fn, write_print_files, write_tiff_rows
from .palette import count_rgb8, merge_palette
from .previews import class_overlay, downscale, heat, label_colors, layers_preview
from .record import file_entry, versions, write_record
from .regions import RegionConfig, decision_mask, label_by_fill, region_table, table_csv
from .scanio import check_dpi, prepare_out_dir, to_uint, write_bytes, write_png


@dataclass(frozen=True)
class PipelineConfig:
    detect: DetectConfig = field(default_factory=DetectConfig)
    regions: RegionConfig = field(default_factory=RegionConfig)
    fill_classes: tuple = DEFAULT_FILL_CLASSES
    fill_method: str = "harmonic"
    grow_px: int = 1
    count_q: float = 1.0
    white_mode: str = "same_pattern"
    white_amount_mm: float = 0.0
    min_feature_mm: float = 0.0
    margin_mm: float = 10.0
    mirror: bool = True
    tile: int = 1024
    preview_side: int = 1024
    write_pdf: bool = True
    count_colours_dE: bool = True


def config_from_dict(d):
    """A :class:`PipelineConfig` from its ``asdict`` form (as stored in a record's manifest); unknown keys
    are refused by name, lists become tuples."""
    from dataclasses import fields

    def build(cls, v, where):
        names = {f.name for f in fields(cls)}
        bad = sorted(set(v) - names)
        if bad:
            raise ValueError(f"record config{where}: unknown keys {bad}; this version knows {sorted(names)}")
        kw = {k: tuple(x) if isinstance(x, list) else x for k, x in v.items()}
        return cls(**kw)
    d = dict(d)
    det = build(DetectConfig, d.pop("detect", {}), ".detect")
    reg = build(RegionConfig, d.pop("regions", {}), ".regions")
    return build(PipelineConfig, {**d, "detect": det, "regions": reg}, "")


class Stages:
    """Wall-clock timing per stage and a progress callback ``cb(stage_index, n_stages, name, frac)``."""

    def __init__(self, names, cb=None):
        self.names, self.cb, self.times, self.i = list(names), cb, {}, -1

    def start(self, name):
        self.i = self.names.index(name)
        self._t = time.perf_counter()
        self.cur = name
        self.tick(0.0)

    def tick(self, frac):
        if self.cb:
            self.cb(self.i, len(self.names), self.cur, frac)

    def end(self):
        self.times[self.cur] = round(time.perf_counter() - self._t, 3)
        self.tick(1.0)


STAGES = ("detect", "regions", "fill", "qa", "colours", "layers", "export", "previews", "record")


def run(img, dpi, out_dir, cfg=PipelineConfig(), scan_info=None, user_add=None, user_remove=None,
        external_fill=None, workflow=None, extra=None, progress=None, capture=None):
    """Run every stage on ``img`` ((H, W, 3) float32 sRGB in [0, 1]) and write all artefacts.

    Returns the manifest dict. ``extra`` is merged into the manifest (e.g. sample metrics);
    ``capture`` (same size as img) triggers the registration check.
    """
    dpi = check_dpi(dpi)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3), got {img.shape}")
    out = prepare_out_dir(out_dir)
    st = Stages(STAGES, progress)
    h, w = img.shape[:2]

    st.start("detect")
    dcfg = cfg.detect if cfg.detect.tile == cfg.tile else DetectConfig(**{**asdict(cfg.detect), "tile": cfg.tile})
    det = detect_damage(img, dpi, dcfg, progress=lambda i, n: st.tick(i / n))
    classes = merge_user_mask(det["classes"], user_add, user_remove)
    st.end()

    st.start("regions")
    labels, n = label_by_fill(classes, cfg.fill_classes)
    rows = region_table(labels, classes, img, dpi, cfg.fill_classes, cfg.regions)
    fill_fp = decision_mask(labels, rows, "fill")
    st.end()

    st.start("fill")
    method = cfg.fill_method if external_fill is None else "external"
    filled, used = fill_image(img, fill_fp, method, external=external_fill, grow_px=cfg.grow_px, tile=cfg.tile,
                              progress=lambda i, k: st.tick(i / k))
    for r in rows:
        r["fill_method"] = method if r["fill_decision"] == "fill" else ""
        r["generative"] = method == "external" and r["fill_decision"] == "fill"
    st.end()

    st.start("qa")
    rows, qa_per_label = fill_qa(img, filled, labels, rows, tile=cfg.tile, heat=False)
    st.end()

    st.start("colours")
    rgb8 = to_uint(filled[used], 8)
    n_rgb8 = count_rgb8(rgb8)
    if cfg.count_colours_dE and len(rgb8):
        leaders, lcounts, _, _ = merge_palette(rgb8, cfg.count_q)
        order = np.argsort(-lcounts, kind="stable")[:256]
        palette = [{"rgb8": [int(v) for v in leaders[i]], "pixels": int(lcounts[i])} for i in order]
        n_de = int(len(leaders))
    else:
        palette, n_de = [], None
    del rgb8
    st.end()

    st.start("layers")
    # the print canvas is produced in row strips while it is written (export stage), so memory stays
    # bounded whatever the scan size; here only its geometry and a preview-scale appearance simulation
    geom = canvas_geometry(h, w, dpi, margin_mm=cfg.margin_mm, mirror=cfg.mirror)
    sep = dict(white_mode=cfg.white_mode, amount_mm=cfg.white_amount_mm, min_feature_mm=cfg.min_feature_mm)
    layer_rows = layer_rows_fn(filled, img, used, dpi, **sep)
    s = max(1, int(np.ceil(max(h, w) / cfg.preview_side)))
    sim = simulate(img[::s, ::s], separate(filled[::s, ::s], img[::s, ::s], used[::s, ::s], dpi / s, **sep))
    st.end()

    parts = dict(img=img, dpi=dpi, classes=classes, labels=labels, rows=rows, fill_fp=fill_fp, filled=filled,
                 used=used, method=method, qa_per_label=qa_per_label, n_rgb8=n_rgb8, palette=palette, n_de=n_de,
                 count_q=cfg.count_q, laid=None, print_src=dict(geom=geom, layer_rows=layer_rows, **sep), sim=sim,
                 responses=det["responses"], det_params=det["params"],
                 ground_rgb=det["ground_rgb"], fill_classes=cfg.fill_classes, times=dict(st.times),
                 user_mask={"add": user_add is not None, "remove": user_remove is not None},
                 user_mask_arrays={"add": user_add, "remove": user_remove})
    return write_outputs(out, parts, st, asdict(cfg), scan_info, workflow, extra, capture, cfg.preview_side,
                         cfg.write_pdf)


def write_outputs(out, p, st=None, cfg_dict=None, scan_info=None, workflow=None, extra=None, capture=None,
                  preview_side=1024, write_pdf=True):
    """Write print files, tables, previews and the record from computed parts ``p``.

    ``p`` keys: img, dpi, classes, labels, rows, fill_fp, filled, used, method, ``qa_heat`` (H, W) or
    ``qa_per_label`` (N + 1,), n_rgb8, palette, n_de, count_q, sim (or None), responses (dict or {}),
    det_params, ground_rgb, fill_classes, and the print canvas as either ``laid`` (in memory, from
    :func:`restoration.layers.layout`) or ``print_src`` (``geom`` from
    :func:`restoration.printfile.canvas_geometry`, ``layer_rows`` and the separation parameters),
    which is produced in row strips while the files are written. Returns the manifest.
    """
    st = st or Stages(("export", "previews", "record"))
    img, dpi, classes, labels, rows = p["img"], p["dpi"], p["classes"], p["labels"], p["rows"]
    filled, used, laid, method = p["filled"], p["used"], p.get("laid"), p["method"]
    h, w = img.shape[:2]
    n = int(labels.max())
    files = []
    ps = preview_side
    st.start("export")
    if laid is not None:
        canvas_fn = laid_rows(laid)
        cw, ch = laid["canvas_px"]
        canvas = {k: laid.get(k) for k in ("canvas_mm", "canvas_px", "mirror", "margin_mm", "fiducials", "white_mode",
                                           "amount_mm", "min_feature_mm")}
    else:
        src = p["print_src"]
        geom = src["geom"]
        canvas_fn = lambda r0, r1: canvas_rows(geom, src["layer_rows"], r0, r1)
        cw, ch = geom["canvas_px"]
        canvas = {**{k: geom[k] for k in ("canvas_mm", "canvas_px", "mirror", "margin_mm", "fiducials")},
                  "white_mode": src["white_mode"], "amount_mm": src["amount_mm"],
                  "min_feature_mm": src["min_feature_mm"]}
    pf, lay_prev = write_print_files(out, canvas_fn, ch, cw, dpi, pdf=write_pdf, preview_side=preview_side,
                                     progress=lambda i, k: st.tick(0.8 * i / k))
    files += pf
    write_tiff_rows(out, "fill_full.tif", lambda y0, y1: to_uint(filled[y0:y1], 16), filled.shape, np.uint16, dpi)
    files.append(file_entry(out, "fill_full.tif", role="fill_full", px_w=w, px_h=h, dpi=dpi, bit_depth=16))
    lab_dtype = np.uint16 if n < 65536 else np.uint32
    if lab_dtype == np.uint16:
        write_png(out, "damage_labels.png", labels.astype(np.uint16), dpi)
        files.append(file_entry(out, "damage_labels.png", role="labels", px_w=w, px_h=h, bit_depth=16))
    else:
        write_tiff_rows(out, "damage_labels.tif", lambda y0, y1: labels[y0:y1].astype(np.uint32), labels.shape,
                        np.uint32, dpi)
        files.append(file_entry(out, "damage_labels.tif", role="labels", px_w=w, px_h=h, bit_depth=32))
    write_png(out, "damage_classes.png", classes, dpi)
    files.append(file_entry(out, "damage_classes.png", role="classes", px_w=w, px_h=h, bit_depth=8))
    for k, m in (p.get("user_mask_arrays") or {}).items():  # kept so that the record can be replayed
        if m is not None:
            write_png(out, f"user_mask_{k}.png", (np.asarray(m) > 0.5).astype(np.uint8) * 255, dpi)
            files.append(file_entry(out, f"user_mask_{k}.png", role=f"user_mask_{k}", px_w=w, px_h=h, bit_depth=8))
    write_bytes(out, "regions.csv", table_csv(rows))
    write_bytes(out, "regions.json", json.dumps(rows))
    write_bytes(out, "damage_classes.json", json.dumps({"classes": CLASS_IDS, "class_of_label": {
        r["id"]: r["class"] for r in rows}}))
    for name in ("regions.csv", "regions.json", "damage_classes.json"):
        files.append(file_entry(out, name, role="table"))
    st.end()

    st.start("previews")
    thumbs = []

    def prev(name, arr, caption):
        write_png(out, name, to_uint(downscale(arr, ps), 8))
        thumbs.append((name, caption))
    prev("preview_scan.png", img, "scan as received")
    prev("damage_map_preview.png", class_overlay(_nearest(img, ps), _nearest(classes, ps)),
         "damage classes: green split, red craquelure, blue loss, pink small defect, yellow user")
    prev("preview_regions.png", label_colors(_nearest(labels, ps)), f"{n} regions (8-connected)")
    prev("preview_fill_footprint.png", class_overlay(_nearest(img, ps), _nearest(p['fill_fp'].astype(np.uint8) * 3, ps)),
         "regions that are filled (blue); the rest are in the table with a skip reason")
    prev("preview_filled.png", filled, f"filled ({method})")
    for k, v in p.get("responses", {}).items():
        prev(f"response_{k}.png", heat(_nearest(v, ps).astype(np.float32), 128), f"response map {k} (yellow = 32+ L* or dE00)")
    qa = p["qa_per_label"][_nearest(labels, ps)] if p.get("qa_heat") is None else _nearest(p["qa_heat"], ps)
    prev("preview_qa.png", heat(qa, 6.0), "fill QA: dE00 fill vs edge ring (yellow = 6+)")
    prev("preview_layers.png", layers_preview(lay_prev),
         "print layers: colour (left, on checkerboard), white plate (right); mirrored" if canvas["mirror"] else "print layers")
    if p.get("sim") is not None:
        prev("composite_preview.png", p["sim"], "predicted appearance with the film (ideal registration)")
    for t in thumbs:
        files.append(file_entry(out, t[0], role="preview"))
    st.end()

    st.start("record")
    reg = None
    if capture is not None:
        from .register import registration_check
        reg = registration_check(capture, img, dpi, exclude=classes > 0)
        write_png(out, "registration_residual.png", to_uint(heat(reg["residual"], 10.0), 8))
        files.append(file_entry(out, "registration_residual.png", role="preview"))
        thumbs.append(("registration_residual.png", f"registration residual |dL*|, rms {reg['rms_um']:.1f} um"))
        reg = {k: v for k, v in reg.items() if k != "residual"}
    if workflow is not None:
        write_bytes(out, "workflow.json", json.dumps(workflow))
        files.append(file_entry(out, "workflow.json", role="workflow"))
    skipped = {}
    for r in rows:
        if r["fill_decision"] == "skip":
            skipped[r["skip_reason"]] = skipped.get(r["skip_reason"], 0) + 1
    info = dict(scan_info or {})
    manifest = {
        "object": {"title": "", "attribution": "", "date": "", "support": "", "inventory_no": "", "owner": "",
                   "dimensions_mm": {"w": round(w * 25.4 / dpi, 3), "h": round(h * 25.4 / dpi, 3)}},
        "capture": {"path": info.get("path"), "sha256": info.get("sha256"), "ppi": dpi,
                    "dpi_source": info.get("dpi_source"), "bits": info.get("bits"), "px": [w, h]},
        "processing": {"software": "Atelier restoration", "versions": versions(), "config": cfg_dict or {},
                       "detect_params": p.get("det_params"), "seeds": info.get("seeds", {}),
                       "user_mask": p.get("user_mask", {})},
        "generative": ([{"region_ids": [r["id"] for r in rows if r.get("generative")],
                         "model": (extra or {}).get("external_model", "external IMAGE (unknown model)"),
                         "approved_by": ""}] if method == "external" else []),
        "detection": {"ground_rgb": p.get("ground_rgb"), "classes_filled": list(p["fill_classes"]),
                      "classes_not_filled": [c for c in CLASS_IDS if c not in p["fill_classes"]]},
        "stats": {"n_regions": n, "n_regions_filled": sum(r["fill_decision"] == "fill" for r in rows),
                  "n_regions_skipped_by_reason": skipped,
                  "total_fill_area_mm2": round(float(used.sum()) * (25.4 / dpi) ** 2, 4),
                  "total_damage_area_mm2": round(float((classes > 0).sum()) * (25.4 / dpi) ** 2, 4),
                  "count_rgb8": p["n_rgb8"], "count_dE1": p["n_de"], "count_dE_q": p["count_q"], "bit_depth_counted": 8,
                  "wallclock_s": st.times},
        "palette": (p.get("palette") or [])[:64],
        "print": {"dpi": dpi, "canvas_mm": canvas["canvas_mm"], "canvas_px": canvas["canvas_px"],
                  "mirror": canvas["mirror"], "margin_mm": canvas.get("margin_mm"), "fiducials_mm": canvas["fiducials"],
                  "color_file": "layer_color_rgba.tif", "white_file": "layer_white.tif",
                  "white_polarity": WHITE_POLARITY, "white_mode": canvas.get("white_mode"),
                  "white_amount_mm": canvas.get("amount_mm"), "min_feature_mm": canvas.get("min_feature_mm"),
                  "icc_embedded": bool(pf[0].get("icc_embedded")),
                  "icc": "sRGB (LittleCMS built-in, colour TIFF)" if pf[0].get("icc_embedded") else None,
                  "printer": "", "ink_set": "", "film": "", "print_mode": ""},
        "registration": reg,
        "application": {"date": "", "method": "aligned by hand", "adhesive_varnish": "", "solvent_for_removal": "",
                        "measured_registration_rms_um": reg["rms_um"] if reg else None, "conservator": ""},
        "files": files,
        "workflow_file": "workflow.json" if workflow is not None else None,
    }
    manifest.update(extra or {})
    st.end()
    manifest["stats"]["wallclock_s"] = {**p.get("times", {}), **st.times}
    write_record(out, manifest, thumbs, rows)
    return manifest


def _nearest(a, side):
    """Nearest-neighbour downscale (for label/class maps)."""
    h, w = a.shape[:2]
    s = max(1, int(np.ceil(max(h, w) / side)))
    return a[::s, ::s]
