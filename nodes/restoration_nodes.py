"""Film-mask restoration nodes (category ``Atelier/Restoration``), V3 schema: thin glue over
``restoration/`` (the stage functions of :mod:`restoration.stages`, the same ones the CLI runs).

Stages pass ComfyUI IMAGE / MASK wherever a user may want to swap in their own detector, mask
painting or inpainting model, and typed artefacts (:mod:`restoration.artefacts`) for the rest:
``RESTO_CTX`` (ScanContext), ``DAMAGE_MAP`` (DamageMap), ``REGION_TABLE`` (RegionTable), ``MASK_LAYERS``
(PrintLayers, then PrintCanvas after layout). Every node shows its previews. The print and record
nodes are in :mod:`.restoration_print_nodes`.
"""
import json
import time

from comfy_api.latest import io

from ..restoration import stages
from ..restoration.artefacts import ScanContext, class_masks
from ..restoration.color import format_rgb, parse_rgb
from ..restoration.detect import check_order
from ..restoration.previews import class_overlay, heat, label_colors, response_previews, review_overlay
from ..restoration.regions import RegionConfig
from ..restoration.review import ReviewConfig
from ..restoration.scanio import confined_file, content_fingerprint, list_scans, read_confined
from ..restoration.settings import LOAD_SCAN, SETTINGS, check_tile
from ..restoration.synth import SynthConfig, make_sample
from . import restoration_print_nodes as _print
from ._host import progress_bar
from ..restoration.tensors import image_array, image_batch, mask_array, mask_batch
from ._resto_io import input_directory, output, torch_device
from ._settings_io import validator, widget, widgets

CAT = "Atelier/Restoration"
RestoCtx, DamageMapT, RegionTableT = io.Custom("RESTO_CTX"), io.Custom("DAMAGE_MAP"), io.Custom("REGION_TABLE")
CTX_TIP = "Scale of the scan (from Restoration Context or Load Scan)."
CLASS_TIPS = (("support_split", "Support splits (long, wide dark lines)."),
              ("craquelure", "Craquelure (thin dark cracks)."), ("loss", "Losses to the ground."),
              ("small_defect", "Small light defects (scratches, abrasion)."))




def _load_scan_rules(values):
    """Load Scan: the file inside the input folder; a dpi other than 0 (from the file) is a scan dpi."""
    if values.get("path") is not None:
        confined_file(input_directory(), values["path"], "path")
    if values.get("dpi"):
        SETTINGS["dpi"].check(values["dpi"])


class AtelierRestorationLoadScan(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AtelierRestorationLoadScan", display_name="Atelier Load Scan (DPI)", category=CAT,
            description="Read a PNG or 8/16-bit TIFF scan of the input folder with its DPI (from the file or "
                        "given). JPEG is read but flagged lossy in the record.",
            inputs=[io.Combo.Input("path", options=list_scans(input_directory()), upload=io.UploadType.image,
                                   tooltip="A scan in ComfyUI's input folder (upload one with the button). Files "
                                           "outside the input folder cannot be read."),
                    widget(LOAD_SCAN["dpi"])],
            outputs=[io.Image.Output("image", display_name="image", tooltip="The scan, sRGB in 0..1 (16-bit files keep their precision "
                                                      "in float32)."),
                     RestoCtx.Output("ctx", display_name="ctx", tooltip="Scale (dpi) and the file's name and SHA-256 for the record.")])

    validate_inputs = validator(LOAD_SCAN, ("dpi",), extra=_load_scan_rules, more=("path",))

    @classmethod
    def fingerprint_inputs(cls, path=None, dpi=None):
        return content_fingerprint(input_directory(), path), dpi  # like LoadImage: a changed file reruns

    @classmethod
    def execute(cls, path, dpi):
        img, d, scan = read_confined(input_directory(), path, dpi)
        return io.NodeOutput(image_batch(img), ScanContext.of(img, d, scan))


class AtelierRestorationContext(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AtelierRestorationContext", display_name="Atelier Restoration Context", category=CAT,
            description="Attach the physical scale (DPI) to an IMAGE loaded by any node; all later measurements "
                        "are in mm.",
            inputs=[io.Image.Input("image", tooltip="The scan (sRGB)."), widget(SETTINGS["dpi"])],
            outputs=[RestoCtx.Output("ctx", display_name="ctx", tooltip="Scale of the scan for the later nodes."),
                     io.String.Output("summary", display_name="summary", tooltip="Size in px and mm.")])

    validate_inputs = validator(SETTINGS, ("dpi",))

    @classmethod
    def execute(cls, image, dpi):
        ctx = ScanContext.of(image_array(image), dpi)
        return io.NodeOutput(ctx, ctx.summary())


SYNTH = ("seed", "width", "height", "dpi")


class AtelierSyntheticDamage(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AtelierSyntheticDamage", display_name="Atelier Synthetic Damaged Painting", category=CAT,
            description="A procedural 'painting' with synthetic damage of every class and its ground truth (for "
                        "trying the chain and for benchmarks; no data needed).",
            inputs=widgets(SETTINGS, SYNTH),
            outputs=[io.Image.Output("damaged", display_name="damaged", tooltip="The damaged painting (the 'scan')."),
                     io.Image.Output("clean", display_name="clean", tooltip="The same painting without damage (ground truth)."),
                     *[io.Mask.Output(f"gt_{k}", display_name=f"gt_{k}", tooltip=f"Ground truth: {t}") for k, t in CLASS_TIPS],
                     RestoCtx.Output("ctx", display_name="ctx", tooltip="Scale of the sample (the dpi given)."),
                     io.String.Output("ground_color", display_name="ground_color", tooltip="The exposed ground's colour R,G,B (for Damage Detect).")])

    validate_inputs = validator(SETTINGS, SYNTH)

    @classmethod
    def execute(cls, seed, width, height, dpi):
        img, clean, gt, info = make_sample(SynthConfig(height=height, width=width, dpi=dpi), seed)
        ctx = ScanContext.of(img, dpi, {"name": f"synthetic seed {seed}", "seeds": {"sample": seed},
                                        "dpi_source": "given"})
        return output((image_batch(img), image_batch(clean), *map(mask_batch, class_masks(gt)), ctx,
                       format_rgb(info["ground_rgb"])),
                      [img, class_overlay(img, gt)], "synth")


THRESHOLDS = ("crack_low", "crack_high", "light_low", "light_high", "ground_seed_de", "ground_grow_de",
              "loss_contrast_de", "split_min_length_mm")
DETECT = ("ground_color", *THRESHOLDS, "tile")
#: Added after workflows were saved: optional and last, so a saved workflow's widget values keep their places.
DETECT_OPTIONAL = ("ground_tolerance_de",)


def _detect_rules(values):
    """Damage Detect beyond one setting: the ground colour's syntax, a tile of 0 or >= 64, the ordered
    thresholds (each rule only where its inputs are given, not linked)."""
    if values.get("ground_color") is not None:
        parse_rgb(values["ground_color"], SETTINGS["ground_color"].label)
    if values.get("tile") is not None:
        check_tile(values["tile"])
    check_order(values)


class AtelierDamageDetect(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AtelierDamageDetect", display_name="Atelier Damage Detect", category=CAT,
            description="Find damage per class on CIELAB: craquelure (black-hat on L*), small light defects "
                        "(top-hat), each relative to the local paint's own texture; losses by local evidence (differs from "
                        "its own ring, an edge all round, a flat interior, the colour of a ground estimated from the "
                        "loss candidates themselves); support "
                        "splits (long wide dark lines). Outputs one MASK per class, the response maps and an overlay.",
            inputs=[io.Image.Input("image", tooltip="The scan."), RestoCtx.Input("ctx", tooltip=CTX_TIP),
                    *widgets(SETTINGS, DETECT), *widgets(SETTINGS, DETECT_OPTIONAL, optional=True)],
            outputs=[DamageMapT.Output("damage_map", display_name="damage_map", tooltip="Classes, response maps and parameters (for Damage "
                                                             "Map Edit, Region Table and the record)."),
                     io.Mask.Output("all_damage", display_name="all_damage", tooltip="Every detected class."),
                     *[io.Mask.Output(k, display_name=k, tooltip=t) for k, t in CLASS_TIPS],
                     io.Image.Output("overlay", display_name="overlay", tooltip="Classes over the dimmed scan: green split, red craquelure, "
                                                        "blue loss, pink small defect."),
                     io.Image.Output("responses", display_name="responses", tooltip="Response maps (batch of 4: crack, light, ground ΔE00, "
                                                          "split), yellow = 32+.")])

    validate_inputs = validator(SETTINGS, DETECT + DETECT_OPTIONAL, extra=_detect_rules)

    @classmethod
    def execute(cls, image, ctx, ground_color, crack_low, crack_high, light_low, light_high,
                ground_seed_de, ground_grow_de, loss_contrast_de, split_min_length_mm, tile,
                ground_tolerance_de=SETTINGS["ground_tolerance_de"].default):
        img = ctx.check(image_array(image))
        cfg = stages.detect_config(ground_color, tile, ground_tolerance_de=ground_tolerance_de,
                                   crack_low=crack_low, crack_high=crack_high,
                                   light_low=light_low, light_high=light_high, ground_seed_de=ground_seed_de,
                                   ground_grow_de=ground_grow_de, loss_contrast_de=loss_contrast_de,
                                   split_min_length_mm=split_min_length_mm)
        pbar = progress_bar(100)
        dmap = stages.detect(img, ctx.scale, cfg, progress=lambda i, n: pbar.update_absolute(int(90 * i / n), 100))
        pbar.update_absolute(100, 100)
        c, overlay, resp = dmap.classes, class_overlay(img, dmap.classes), response_previews(dmap.responses)
        return output((dmap, mask_batch(c > 0), *map(mask_batch, class_masks(c)), image_batch(overlay),
                       image_batch(resp)[0]),
                      [overlay, *resp], "detect")


EDIT = ("fill_loss", "fill_small_defect", "fill_craquelure", "fill_support_split", "fill_user")


class AtelierDamageMapEdit(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AtelierDamageMapEdit", display_name="Atelier Damage Map Edit", category=CAT,
            description="Merge user-painted masks into the damage map (add = new 'user' damage, remove = false "
                        "detections) and choose which classes get filled. Outputs the fill candidate MASK.",
            inputs=[DamageMapT.Input("damage_map", tooltip="From Damage Detect."),
                    io.Image.Input("image", tooltip="The scan (for the overlay)."),
                    *widgets(SETTINGS, EDIT),
                    io.Mask.Input("add_mask", optional=True, tooltip="Painted damage to add (same size as the scan)."),
                    io.Mask.Input("remove_mask", optional=True, tooltip="Painted areas to clear (false detections).")],
            outputs=[DamageMapT.Output("damage_map_out", display_name="damage_map", tooltip="The edited damage map with the classes to fill."),
                     io.Mask.Output("fill_candidates", display_name="fill_candidates", tooltip="Pixels of the classes chosen for filling."),
                     io.Image.Output("overlay", display_name="overlay", tooltip="The edited classes over the dimmed scan.")])

    validate_inputs = validator(SETTINGS, EDIT)

    @classmethod
    def execute(cls, damage_map, image, fill_loss, fill_small_defect, fill_craquelure, fill_support_split, fill_user,
                add_mask=None, remove_mask=None):
        shape = damage_map.classes.shape
        dm = stages.edit(damage_map, mask_array(add_mask, shape, "add_mask"),
                         mask_array(remove_mask, shape, "remove_mask"),
                         stages.fill_classes_of(fill_loss, fill_small_defect, fill_craquelure, fill_support_split,
                                                fill_user))
        overlay = class_overlay(image_array(image), dm.classes)
        return output((dm, mask_batch(stages.fill_candidates(dm)), image_batch(overlay)), [overlay], "edit")


REVIEW = ("min_confidence", "max_fill_mm2", "max_fill_share", "large_min_confidence")
REGIONS = ("viewing_distance_mm", "registration_tol_um", "accept_ids", "reject_ids", *REVIEW)


class AtelierRegionTable(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AtelierRegionTable", display_name="Atelier Region Table (mm)", category=CAT,
            description="Label every 8-connected damage region, measure it in mm (area, bbox, centroid, inscribed "
                        "radius, perimeter, contrast) and decide what gets filled (review before print): only "
                        "confident losses and small defects by default; large and unsure regions are listed for "
                        "review (orange in the preview) and filled only when accepted. Nothing is dropped: every "
                        "region has its decision, rule, confidence and reasons.",
            inputs=[io.Image.Input("image", tooltip="The scan."),
                    DamageMapT.Input("damage_map", tooltip="From Damage Detect or Damage Map Edit."),
                    RestoCtx.Input("ctx", tooltip=CTX_TIP),
                    *widgets(SETTINGS, ("viewing_distance_mm", "registration_tol_um")),
                    *widgets(SETTINGS, ("accept_ids", "reject_ids"), optional=True),
                    io.Mask.Input("accept_mask", optional=True, tooltip="Every region this mask touches is accepted."),
                    io.Mask.Input("reject_mask", optional=True, tooltip="Every region this mask touches is rejected."),
                    *widgets(SETTINGS, REVIEW, optional=True)],
            outputs=[RegionTableT.Output("regions", display_name="regions", tooltip="Labels and one row per region with its "
                                         "fill decision (fill / review / skip), rule, confidence and reasons."),
                     io.Mask.Output("fill_mask", display_name="fill_mask", tooltip="The regions to fill (for Restoration "
                                    "Fill): never those waiting for review."),
                     io.Image.Output("labels_preview", display_name="labels_preview", tooltip="Each region in its own "
                                     "colour; then the decision: blue fill, orange (magenta outline) review."),
                     io.String.Output("summary", display_name="summary", tooltip="Regions found, filled, waiting for "
                                      "review (their ids), skipped, and the fill area.")])

    validate_inputs = validator(SETTINGS, REGIONS, extra=lambda v: stages.check_review(
        ReviewConfig(), v.get("accept_ids") or "", v.get("reject_ids") or "", REVIEW_NAMES))

    @classmethod
    def execute(cls, image, damage_map, ctx, viewing_distance_mm, registration_tol_um, accept_ids="", reject_ids="",
                accept_mask=None, reject_mask=None, min_confidence=None, max_fill_mm2=None, max_fill_share=None,
                large_min_confidence=None):
        img = ctx.check(image_array(image))
        sh = img.shape[:2]
        tab = stages.regions(img, damage_map, ctx.scale, RegionConfig(viewing_distance_mm, registration_tol_um),
                             _review_cfg(min_confidence, max_fill_mm2, max_fill_share, large_min_confidence),
                             accept_ids or "",
                             reject_ids or "", mask_array(accept_mask, sh, "accept_mask"),
                             mask_array(reject_mask, sh, "reject_mask"), REVIEW_NAMES)
        fp, prev = tab.footprint(), label_colors(tab.labels)
        return output((tab, mask_batch(fp), image_batch(prev), tab.summary(ctx.mm_per_px)),
                      [prev, review_overlay(img, fp, tab.footprint("review"))], "regions")


REVIEW_NAMES = ("accept_ids", "reject_ids", "accept_mask", "reject_mask")


def _review_cfg(min_confidence=None, max_fill_mm2=None, max_fill_share=None, large_min_confidence=None):
    """The Region Table's review settings (an input left unset keeps the core default)."""
    return ReviewConfig.given(min_confidence=min_confidence, max_fill_mm2=max_fill_mm2,
                              max_fill_share=max_fill_share, large_min_confidence=large_min_confidence)


class AtelierRestorationFill(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AtelierRestorationFill", display_name="Atelier Restoration Fill", category=CAT,
            description="Fill the mask: 'exemplar' (default: continues lines and texture from the undamaged picture "
                        "nearby), harmonic (pure torch), OpenCV telea/ns, 'patch' (copy the best-"
                        "matching nearby texture, seam-corrected; optionally only from source_mask), or 'external' to "
                        "composite any inpainting model's IMAGE strictly inside the mask (flagged generative in the "
                        "record). Pixels outside the mask stay bit-identical.",
            inputs=[io.Image.Input("image", tooltip="The scan."),
                    io.Mask.Input("mask", tooltip="What to fill (e.g. fill_mask of Region Table, or your own)."),
                    *widgets(SETTINGS, ("method", "grow_px")),
                    io.Image.Input("external_fill", optional=True, tooltip="An inpainted IMAGE of the same size (LaMa, "
                                                                           "diffusion...). Needed for method 'external'."),
                    RegionTableT.Input("regions", optional=True, tooltip="Region table to annotate with the fill method."),
                    widget(SETTINGS["external_model"], optional=True),
                    io.Mask.Input("source_mask", optional=True, tooltip="For method 'patch': where texture may be "
                                  "copied from (white = allowed). Default: anywhere undamaged."),
                    widget(SETTINGS["fill_workers"], optional=True)],
            outputs=[io.Image.Output("filled", display_name="filled", tooltip="The scan with the mask filled."),
                     io.Mask.Output("used_mask", display_name="used_mask", tooltip="The pixels actually filled (the mask grown by grow_px): the "
                                                         "ink footprint of the print layers."),
                     RegionTableT.Output("regions_out", display_name="regions", tooltip="The region table annotated with the fill method (None "
                                                            "when no table was connected).")])

    validate_inputs = validator(SETTINGS, ("method", "grow_px", "external_model", "fill_workers"))

    @classmethod
    def execute(cls, image, mask, method, grow_px, external_fill=None, regions=None, external_model="",
                source_mask=None, fill_workers=0):
        img = image_array(image)
        ext = None if external_fill is None else image_array(external_fill, "external_fill")
        t, pbar = time.perf_counter(), progress_bar(100)
        filled, used = stages.fill(img, mask_array(mask, img.shape[:2], "mask"), method, grow_px, external=ext,
                                   source=mask_array(source_mask, img.shape[:2], "source_mask"),
                                   device=torch_device() if method == "harmonic" else "cpu",
                                   progress=lambda i, n: pbar.update_absolute(int(100 * i / n), 100),
                                   workers=fill_workers or 0)
        tab = None if regions is None else stages.annotate_fill(regions, method, external_model,
                                                                round(time.perf_counter() - t, 3))
        return output((image_batch(filled), mask_batch(used), tab), [filled], "fill")


class AtelierFillQA(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AtelierFillQA", display_name="Atelier Fill QA", category=CAT,
            description="Per-region fill check: ΔE00 of the fill against a 2 px ring of the original; flags edge "
                        "mismatches (> edge_de).",
            inputs=[io.Image.Input("original", tooltip="The scan before filling."),
                    io.Image.Input("filled", tooltip="The filled image."),
                    RegionTableT.Input("regions", tooltip="From Region Table (or Fill)."),
                    widget(SETTINGS["edge_de"])],
            outputs=[RegionTableT.Output("regions_out", display_name="regions", tooltip="The table with the QA columns (dE00_edge, edge_mismatch, "
                                                            "needs_review)."),
                     io.Image.Output("heatmap", display_name="heatmap", tooltip="dE00_edge per filled region (yellow = 2 x edge_de)."),
                     io.String.Output("summary", display_name="summary", tooltip="How many regions were flagged.")])

    validate_inputs = validator(SETTINGS, ("edge_de",))

    @classmethod
    def execute(cls, original, filled, regions, edge_de):
        tab = stages.qa(image_array(original, "original"), image_array(filled, "filled"), regions, edge_de)
        vis = heat(tab.qa_map(), 2 * edge_de)
        return output((tab, image_batch(vis), tab.qa_summary(edge_de)), [vis], "qa")


class AtelierColourCount(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AtelierColourCount", display_name="Atelier Colour Count", category=CAT,
            description="Count the fill's colours: exact distinct 8-bit RGB triplets and clusters merged at ΔE00 <= q "
                        "(greedy by area). Outputs a palette swatch image.",
            inputs=[io.Image.Input("filled", tooltip="The filled image."),
                    io.Mask.Input("mask", tooltip="Where the colour layer has ink (used_mask of Fill)."),
                    widget(SETTINGS["q"])],
            outputs=[io.Int.Output("count_rgb8", display_name="count_rgb8", tooltip="Distinct 8-bit RGB triplets in the mask."),
                     io.Int.Output("count_dE", display_name="count_dE", tooltip="Colour clusters merged at ΔE00 <= q."),
                     io.Image.Output("palette", display_name="palette", tooltip="The first 32 cluster leaders by area."),
                     io.String.Output("palette_json", display_name="palette_json", tooltip="q, both counts and up to 256 leaders with their pixel "
                                                              "counts (JSON).")])

    validate_inputs = validator(SETTINGS, ("q",))

    @classmethod
    def execute(cls, filled, mask, q):
        f = image_array(filled, "filled")
        pal = stages.palette(f, mask_array(mask, f.shape[:2], "mask"), q)
        sw = stages.palette_swatch(pal)
        return output((pal.n_rgb8, pal.n_de, image_batch(sw), json.dumps(pal.as_json())), [sw], "palette")


NODES = [AtelierRestorationLoadScan, AtelierRestorationContext, AtelierSyntheticDamage, AtelierDamageDetect,
         AtelierDamageMapEdit, AtelierRegionTable, AtelierRestorationFill, AtelierFillQA, AtelierColourCount,
         *_print.NODES]
NODE_CLASS_MAPPINGS = {c.define_schema().node_id: c for c in NODES}
NODE_DISPLAY_NAME_MAPPINGS = {k: c.define_schema().display_name for k, c in NODE_CLASS_MAPPINGS.items()}
