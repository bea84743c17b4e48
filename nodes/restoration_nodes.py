"""Film-mask restoration nodes (category ``Atelier/Restoration``): thin glue over ``restoration/``.

Stages pass ComfyUI IMAGE / MASK wherever a user may want to swap in their own detector, mask
painting or inpainting model, and small dict types for the rest:
``RESTO_CTX`` (dpi + scan info), ``DAMAGE_MAP`` (class map, responses, params), ``REGION_TABLE``
(labels + per-region rows), ``MASK_LAYERS`` (colour RGBA + white plate, after layout: canvas and
fiducials). Every node returns previews as IMAGE outputs and shows them on the node ("ui" images).
"""
import json
import logging
import os
import time

import numpy as np
import torch

from ..restoration import classes as rc
from ..restoration.detect import DetectConfig, detect_damage, fill_mask_from_classes, merge_user_mask
from ..restoration.export import export_layers
from ..restoration.fill import METHODS, fill_image, fill_qa
from ..restoration.layers import WHITE_MODES, layout, separate, simulate
from ..restoration.palette import count_rgb8, merge_palette
from ..restoration.pipeline import write_outputs
from ..restoration.previews import class_overlay, heat, label_colors, layers_preview
from ..restoration.regions import RegionConfig, decision_mask, label_by_fill, region_table
from ..restoration.scanio import check_dpi, read_scan, to_uint
from ..restoration.synth import SynthConfig, make_sample
from ._host import output_directory, output_subfolder, progress_bar

log = logging.getLogger("atelier")
CAT = "Atelier/Restoration"


# ---------------------------------------------------------------- helpers
def _img_np(image, name="image"):
    """First frame of an IMAGE batch as (H, W, 3) float32 numpy."""
    if image is None or image.ndim != 4 or image.shape[-1] < 3:
        raise ValueError(f"{name} must be an IMAGE [B,H,W,C] with C >= 3, got "
                         f"{None if image is None else tuple(image.shape)}")
    if image.shape[0] > 1:
        log.warning("atelier restoration: %s has a batch of %d; using the first image", name, image.shape[0])
    return np.ascontiguousarray(image[0, ..., :3].detach().cpu().float().numpy())


def _mask_np(mask, shape, name):
    if mask is None:
        return None
    m = mask[0] if mask.ndim == 3 else mask
    if tuple(m.shape) != tuple(shape):
        raise ValueError(f"{name} has size {tuple(m.shape)}; the scan is {tuple(shape)} (H, W)")
    return m.detach().cpu().float().numpy() > 0.5


def _to_image(arr):
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))[None]


def _to_mask(m):
    return torch.from_numpy(np.asarray(m, np.float32))[None]


def _preview_side(a, side=1024):
    h, w = a.shape[:2]
    s = max(1, int(np.ceil(max(h, w) / side)))
    return a[::s, ::s]


def _ui_images(arrays, prefix):
    """Save (H, W, 3) float previews as PNGs in the host temp folder; return the "ui" image list."""
    try:
        import folder_paths
        from PIL import Image
        tmp = folder_paths.get_temp_directory()
        os.makedirs(tmp, exist_ok=True)
    except Exception:
        return []
    out = []
    for i, a in enumerate(arrays):
        name = f"atelier_{prefix}_{int(time.time() * 1000) % 10 ** 9}_{i}.png"
        Image.fromarray(to_uint(_preview_side(a), 8)).save(os.path.join(tmp, name), compress_level=1)
        out.append({"filename": name, "subfolder": "", "type": "temp"})
    return out


def _ret(result, previews, prefix):
    return {"ui": {"images": _ui_images(previews, prefix)}, "result": result}


def _ctx_of(image, dpi, info=None):
    img = _img_np(image)
    return {"dpi": check_dpi(dpi), "mm_per_px": 25.4 / float(dpi), "px": [img.shape[1], img.shape[0]],
            "scan": dict(info or {}), "working_space": "sRGB", "t": {}}


def _check_ctx(ctx, img):
    if not isinstance(ctx, dict) or "dpi" not in ctx:
        raise ValueError("ctx must come from an Atelier Restoration Context / Load Scan node")
    if list(ctx["px"]) != [img.shape[1], img.shape[0]]:
        raise ValueError(f"the image is {img.shape[1]}x{img.shape[0]} px but the context was made for "
                         f"{ctx['px'][0]}x{ctx['px'][1]} px")


DPI_INPUT = ("FLOAT", {"default": 600.0, "min": 50.0, "max": 20000.0, "step": 1.0,
                       "tooltip": "Scan resolution in pixels per inch at 1:1 (600 = 42.3 µm per pixel)."})


# ---------------------------------------------------------------- nodes
class AtelierRestorationLoadScan:
    DESCRIPTION = "Read a PNG or 8/16-bit TIFF scan from the input folder with its DPI (from the file or given)."
    CATEGORY = CAT
    RETURN_TYPES = ("IMAGE", "RESTO_CTX")
    RETURN_NAMES = ("image", "ctx")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "path": ("STRING", {"default": "scan.tif", "tooltip": "File name in ComfyUI's input folder, or an absolute path."}),
            "dpi": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 20000.0, "step": 1.0,
                              "tooltip": "0 = read the resolution from the file; otherwise this value wins."}),
        }}

    def load(self, path, dpi):
        p = path
        if not os.path.isabs(p):
            import folder_paths
            p = os.path.join(folder_paths.get_input_directory(), p)
        img, d, info = read_scan(p, dpi if dpi > 0 else None)
        return (_to_image(img), _ctx_of(_to_image(img), d, info))


class AtelierRestorationContext:
    DESCRIPTION = "Attach the physical scale (DPI) to an IMAGE loaded by any node; all later measurements are in mm."
    CATEGORY = CAT
    RETURN_TYPES = ("RESTO_CTX", "STRING")
    RETURN_NAMES = ("ctx", "summary")
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE", {"tooltip": "The scan (sRGB)."}), "dpi": DPI_INPUT}}

    def make(self, image, dpi):
        ctx = _ctx_of(image, dpi)
        w, h = ctx["px"]
        return (ctx, f"{w}x{h} px at {ctx['dpi']:g} dpi = {w * ctx['mm_per_px']:.2f} x {h * ctx['mm_per_px']:.2f} mm")


class AtelierDamageDetect:
    DESCRIPTION = ("Find damage per class on CIELAB: craquelure (black-hat on L*), small light defects (top-hat), "
                   "losses to the ground (CIEDE2000 to the ground colour + contrast gate), support splits (long wide "
                   "dark lines). Outputs one MASK per class, the response maps and an overlay to judge.")
    CATEGORY = CAT
    RETURN_TYPES = ("DAMAGE_MAP", "MASK", "MASK", "MASK", "MASK", "MASK", "IMAGE", "IMAGE")
    RETURN_NAMES = ("damage_map", "all_damage", "support_split", "craquelure", "loss", "small_defect", "overlay",
                    "responses")
    FUNCTION = "detect"

    @classmethod
    def INPUT_TYPES(cls):
        d = DetectConfig()
        return {"required": {
            "image": ("IMAGE", {"tooltip": "The scan."}),
            "ctx": ("RESTO_CTX", {"tooltip": "Scale of the scan (from Restoration Context or Load Scan)."}),
            "ground_color": ("STRING", {"default": "auto", "tooltip": "Colour of the exposed ground as R,G,B in 0..1 "
                                        "(e.g. 0.86,0.80,0.68), or 'auto' (brightest low-chroma pixels). Strongly recommended."}),
            "crack_low": ("FLOAT", {"default": d.crack_low, "min": 0.0, "max": 100.0, "step": 0.5, "tooltip": "Crack hysteresis low threshold (L* units)."}),
            "crack_high": ("FLOAT", {"default": d.crack_high, "min": 0.0, "max": 100.0, "step": 0.5, "tooltip": "Crack hysteresis high threshold (L* units)."}),
            "light_low": ("FLOAT", {"default": d.light_low, "min": 0.0, "max": 100.0, "step": 0.5, "tooltip": "Light-defect hysteresis low (L*)."}),
            "light_high": ("FLOAT", {"default": d.light_high, "min": 0.0, "max": 100.0, "step": 0.5, "tooltip": "Light-defect hysteresis high (L*)."}),
            "ground_seed_de": ("FLOAT", {"default": d.ground_seed_de, "min": 0.0, "max": 100.0, "step": 0.5, "tooltip": "ΔE00 to the ground that seeds a loss."}),
            "ground_grow_de": ("FLOAT", {"default": d.ground_grow_de, "min": 0.0, "max": 100.0, "step": 0.5, "tooltip": "ΔE00 to the ground up to which a loss grows."}),
            "loss_contrast_de": ("FLOAT", {"default": d.loss_contrast_de, "min": 0.0, "max": 100.0, "step": 0.5, "tooltip": "A loss must differ from its 3 px ring by more than this ΔE00."}),
            "split_min_length_mm": ("FLOAT", {"default": d.split_min_length_mm, "min": 1.0, "max": 5000.0, "step": 1.0, "tooltip": "Support splits must span at least this length (mm)."}),
            "tile": ("INT", {"default": 1024, "min": 0, "max": 16384, "step": 64, "tooltip": "Tile size in px for large scans (0 = untiled); results are identical."}),
        }}

    def detect(self, image, ctx, ground_color, crack_low, crack_high, light_low, light_high, ground_seed_de,
               ground_grow_de, loss_contrast_de, split_min_length_mm, tile):
        img = _img_np(image)
        _check_ctx(ctx, img)
        g = None
        if ground_color.strip().lower() != "auto":
            try:
                g = tuple(float(v) for v in ground_color.split(","))
            except ValueError:
                g = ()
            if len(g) != 3:
                raise ValueError(f"ground_color must be 'auto' or R,G,B in 0..1, got {ground_color!r}")
        cfg = DetectConfig(crack_low=crack_low, crack_high=crack_high, light_low=light_low, light_high=light_high,
                           ground_rgb=g, ground_seed_de=ground_seed_de, ground_grow_de=ground_grow_de,
                           loss_contrast_de=loss_contrast_de, split_min_length_mm=split_min_length_mm, tile=tile)
        pbar = progress_bar(100)
        t = time.perf_counter()
        det = detect_damage(img, ctx["dpi"], cfg, progress=lambda i, n: pbar.update_absolute(int(90 * i / n), 100))
        pbar.update_absolute(100, 100)
        det["t"] = {"detect": round(time.perf_counter() - t, 3)}
        c = det["classes"]
        masks = [_to_mask(c > 0)] + [_to_mask(c == rc.CLASS_IDS[k]) for k in ("support_split", "craquelure", "loss", "small_defect")]
        overlay = class_overlay(img, c)
        resp = np.stack([heat(v.astype(np.float32), 128) for v in det["responses"].values()])
        return _ret((det, *masks, _to_image(overlay), torch.from_numpy(resp)), [overlay, *resp], "detect")


class AtelierDamageMapEdit:
    DESCRIPTION = ("Merge user-painted masks into the damage map (add = new 'user' damage, remove = false detections) "
                   "and choose which classes get filled. Outputs the fill candidate MASK.")
    CATEGORY = CAT
    RETURN_TYPES = ("DAMAGE_MAP", "MASK", "IMAGE")
    RETURN_NAMES = ("damage_map", "fill_candidates", "overlay")
    FUNCTION = "edit"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "damage_map": ("DAMAGE_MAP", {"tooltip": "From Damage Detect."}),
            "image": ("IMAGE", {"tooltip": "The scan (for the overlay)."}),
            "fill_loss": ("BOOLEAN", {"default": True, "tooltip": "Fill losses to the ground."}),
            "fill_small_defect": ("BOOLEAN", {"default": True, "tooltip": "Fill small light defects (scratches, abrasion)."}),
            "fill_craquelure": ("BOOLEAN", {"default": False, "tooltip": "Fill craquelure (usually left as patina)."}),
            "fill_support_split": ("BOOLEAN", {"default": False, "tooltip": "Fill support splits (structural; usually not)."}),
            "fill_user": ("BOOLEAN", {"default": True, "tooltip": "Fill the user-added mask."}),
        }, "optional": {
            "add_mask": ("MASK", {"tooltip": "Painted damage to add (same size as the scan)."}),
            "remove_mask": ("MASK", {"tooltip": "Painted areas to clear (false detections)."}),
        }}

    def edit(self, damage_map, image, fill_loss, fill_small_defect, fill_craquelure, fill_support_split, fill_user,
             add_mask=None, remove_mask=None):
        c0 = damage_map["classes"]
        c = merge_user_mask(c0, _mask_np(add_mask, c0.shape, "add_mask"), _mask_np(remove_mask, c0.shape, "remove_mask"))
        fc = tuple(k for k, on in (("loss", fill_loss), ("small_defect", fill_small_defect), ("craquelure", fill_craquelure),
                                   ("support_split", fill_support_split), ("user", fill_user)) if on)
        dm = dict(damage_map, classes=c, fill_classes=fc,
                  user_mask={"add": add_mask is not None, "remove": remove_mask is not None})
        overlay = class_overlay(_img_np(image), c)
        return _ret((dm, _to_mask(fill_mask_from_classes(c, fc)), _to_image(overlay)), [overlay], "edit")


class AtelierRegionTable:
    DESCRIPTION = ("Label every 8-connected damage region and measure it in mm (area, bbox, centroid, inscribed "
                   "radius, perimeter, contrast). Nothing is dropped: regions too small or invisible get a skip reason.")
    CATEGORY = CAT
    RETURN_TYPES = ("REGION_TABLE", "MASK", "IMAGE", "STRING")
    RETURN_NAMES = ("regions", "fill_mask", "labels_preview", "summary")
    FUNCTION = "table"

    @classmethod
    def INPUT_TYPES(cls):
        r = RegionConfig()
        return {"required": {
            "image": ("IMAGE", {"tooltip": "The scan."}),
            "damage_map": ("DAMAGE_MAP", {"tooltip": "From Damage Detect or Damage Map Edit."}),
            "ctx": ("RESTO_CTX", {"tooltip": "Scale of the scan."}),
            "viewing_distance_mm": ("FLOAT", {"default": r.viewing_distance_mm, "min": 50.0, "max": 20000.0, "step": 10.0, "tooltip": "Regions narrower than 1 arcmin at this distance are marked invisible."}),
            "registration_tol_um": ("FLOAT", {"default": r.registration_tol_um, "min": 0.0, "max": 5000.0, "step": 5.0, "tooltip": "Regions narrower than twice this are skipped (below_registration)."}),
        }}

    def table(self, image, damage_map, ctx, viewing_distance_mm, registration_tol_um):
        img = _img_np(image)
        _check_ctx(ctx, img)
        t = time.perf_counter()
        c = damage_map["classes"]
        fc = damage_map.get("fill_classes", rc.DEFAULT_FILL_CLASSES)
        labels, n = label_by_fill(c, fc)
        rows = region_table(labels, c, img, ctx["dpi"], fc, RegionConfig(viewing_distance_mm, registration_tol_um))
        fp = decision_mask(labels, rows)
        tab = {"labels": labels, "rows": rows, "classes": c, "fill_classes": fc, "dpi": ctx["dpi"],
               "t": {"regions": round(time.perf_counter() - t, 3)}}
        nf = sum(r["fill_decision"] == "fill" for r in rows)
        summary = (f"{n} regions, {nf} to fill, {n - nf} skipped; fill area "
                   f"{fp.sum() * ctx['mm_per_px'] ** 2:.3f} mm^2")
        prev = label_colors(labels)
        return _ret((tab, _to_mask(fp), _to_image(prev), summary), [prev], "regions")


class AtelierRestorationFill:
    DESCRIPTION = ("Fill the mask: harmonic (pure torch, default), OpenCV telea/ns, 'patch' (copy the best-matching "
                   "nearby texture, seam-corrected; optionally only from source_mask), or 'external' to composite any "
                   "inpainting model's IMAGE strictly inside the mask (flagged generative in the record). Pixels "
                   "outside the mask stay bit-identical.")
    CATEGORY = CAT
    RETURN_TYPES = ("IMAGE", "MASK", "REGION_TABLE")
    RETURN_NAMES = ("filled", "used_mask", "regions")
    FUNCTION = "fill"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image": ("IMAGE", {"tooltip": "The scan."}),
            "mask": ("MASK", {"tooltip": "What to fill (e.g. fill_mask of Region Table, or your own)."}),
            "method": (list(METHODS), {"default": "harmonic", "tooltip": "harmonic: smooth membrane (GPU capable); telea/ns: OpenCV; patch: copy matching texture from nearby (for patterned areas; holes over 256 px get harmonic); external: use external_fill inside the mask."}),
            "grow_px": ("INT", {"default": 1, "min": 0, "max": 32, "tooltip": "Grow the mask first so anti-aliased edges are absorbed."}),
        }, "optional": {
            "external_fill": ("IMAGE", {"tooltip": "An inpainted IMAGE of the same size (LaMa, diffusion...). Needed for method 'external'."}),
            "regions": ("REGION_TABLE", {"tooltip": "Region table to annotate with the fill method."}),
            "external_model": ("STRING", {"default": "", "tooltip": "Name of the model that made external_fill (goes into the record)."}),
            "source_mask": ("MASK", {"tooltip": "For method 'patch': where texture may be copied from (white = allowed). Default: anywhere undamaged."}),
        }}

    def fill(self, image, mask, method, grow_px, external_fill=None, regions=None, external_model="", source_mask=None):
        img = _img_np(image)
        m = _mask_np(mask, img.shape[:2], "mask")
        ext = None
        if method == "external":
            if external_fill is None:
                raise ValueError("method 'external' needs the external_fill IMAGE input")
            ext = _img_np(external_fill, "external_fill")
        elif external_fill is not None:
            log.warning("atelier restoration: external_fill is connected but method is %r; it is ignored", method)
        t = time.perf_counter()
        device = "cpu"
        if method == "harmonic":
            try:
                import comfy.model_management as mm
                device = mm.get_torch_device()
            except Exception:
                pass
        pbar = progress_bar(100)
        src = _mask_np(source_mask, img.shape[:2], "source_mask")
        if src is not None and method != "patch":
            log.warning("atelier restoration: source_mask is connected but method is %r; it is ignored", method)
        filled, used = fill_image(img, m, method, external=ext, grow_px=grow_px, device=device, source=src,
                                  progress=lambda i, n: pbar.update_absolute(int(100 * i / n), 100))
        tab = None
        if regions is not None:
            rows = []
            for r in regions["rows"]:
                r = dict(r)
                r["fill_method"] = method if r["fill_decision"] == "fill" else ""
                r["generative"] = method == "external" and r["fill_decision"] == "fill"
                rows.append(r)
            tab = dict(regions, rows=rows, method=method, external_model=external_model,
                       t={**regions.get("t", {}), "fill": round(time.perf_counter() - t, 3)})
        return _ret((_to_image(filled), _to_mask(used), tab), [filled], "fill")


class AtelierFillQA:
    DESCRIPTION = "Per-region fill check: ΔE00 of the fill against a 2 px ring of the original; flags edge mismatches (> 3)."
    CATEGORY = CAT
    RETURN_TYPES = ("REGION_TABLE", "IMAGE", "STRING")
    RETURN_NAMES = ("regions", "heatmap", "summary")
    FUNCTION = "qa"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "original": ("IMAGE", {"tooltip": "The scan before filling."}),
            "filled": ("IMAGE", {"tooltip": "The filled image."}),
            "regions": ("REGION_TABLE", {"tooltip": "From Region Table (or Fill)."}),
            "edge_de": ("FLOAT", {"default": 3.0, "min": 0.0, "max": 100.0, "step": 0.1, "tooltip": "Flag regions whose fill differs from its edge ring by more than this ΔE00."}),
        }}

    def qa(self, original, filled, regions, edge_de):
        o, f = _img_np(original, "original"), _img_np(filled, "filled")
        if o.shape != f.shape or o.shape[:2] != regions["labels"].shape:
            raise ValueError(f"original {o.shape}, filled {f.shape} and regions {regions['labels'].shape} differ in size")
        t = time.perf_counter()
        rows, hm = fill_qa(o, f, regions["labels"], regions["rows"], edge_de=edge_de)
        tab = dict(regions, rows=rows, qa_heat=hm, t={**regions.get("t", {}), "qa": round(time.perf_counter() - t, 3)})
        flagged = sum(r["edge_mismatch"] for r in rows)
        vis = heat(hm, 2 * edge_de)
        return _ret((tab, _to_image(vis), f"{flagged} of {len(rows)} regions flagged (dE00_edge > {edge_de})"),
                    [vis], "qa")


class AtelierColourCount:
    DESCRIPTION = ("Count the fill's colours: exact distinct 8-bit RGB triplets and clusters merged at ΔE00 <= q "
                   "(greedy by area). Outputs a palette swatch image.")
    CATEGORY = CAT
    RETURN_TYPES = ("INT", "INT", "IMAGE", "STRING")
    RETURN_NAMES = ("count_rgb8", "count_dE", "palette", "palette_json")
    FUNCTION = "count"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "filled": ("IMAGE", {"tooltip": "The filled image."}),
            "mask": ("MASK", {"tooltip": "Where the colour layer has ink (used_mask of Fill)."}),
            "q": ("FLOAT", {"default": 1.0, "min": 0.05, "max": 20.0, "step": 0.05, "tooltip": "Merge colours closer than this ΔE00."}),
        }}

    def count(self, filled, mask, q):
        f = _img_np(filled, "filled")
        m = _mask_np(mask, f.shape[:2], "mask")
        rgb8 = to_uint(f[m], 8)
        n8 = count_rgb8(rgb8)
        leaders, counts, _, _ = merge_palette(rgb8, q)
        order = np.argsort(-counts, kind="stable")[:256]
        pal = [{"rgb8": [int(v) for v in leaders[i]], "pixels": int(counts[i])} for i in order]
        sw = np.ones((64, 64 * max(1, min(len(pal), 32)), 3), np.float32)
        for j, p in enumerate(pal[:32]):
            sw[:, 64 * j:64 * (j + 1)] = np.array(p["rgb8"], np.float32) / 255
        return _ret((n8, int(len(leaders)), _to_image(sw), json.dumps({"q": q, "count_rgb8": n8, "count_dE": len(leaders),
                                                                        "palette": pal})), [sw], "palette")


class AtelierBilayerSeparate:
    DESCRIPTION = ("Split the fill into a colour layer (RGBA, A = footprint) and a white plate. same_pattern (default, "
                   "the paper's behaviour) puts white exactly under the colour; choke/spread shrink/grow it; "
                   "minimal_white prints white only where ink alone cannot reach the target.")
    CATEGORY = CAT
    RETURN_TYPES = ("MASK_LAYERS", "IMAGE", "IMAGE", "MASK")
    RETURN_NAMES = ("layers", "layers_preview", "simulated_view", "white")
    FUNCTION = "separate"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "filled": ("IMAGE", {"tooltip": "The filled image."}),
            "original": ("IMAGE", {"tooltip": "The painting under the film (the scan)."}),
            "mask": ("MASK", {"tooltip": "Fill footprint (used_mask of Fill)."}),
            "ctx": ("RESTO_CTX", {"tooltip": "Scale of the scan."}),
            "white_mode": (list(WHITE_MODES), {"default": "same_pattern", "tooltip": "How the white plate follows the colour footprint."}),
            "amount_mm": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 5.0, "step": 0.01, "tooltip": "Choke/spread distance in mm."}),
            "min_feature_mm": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 5.0, "step": 0.01, "tooltip": "Remove parts narrower than this (0 = off; see the research note)."}),
            "white_on_black": ("BOOLEAN", {"default": False, "tooltip": "Allow white under very dark targets (L* < 15)."}),
        }}

    def separate(self, filled, original, mask, ctx, white_mode, amount_mm, min_feature_mm, white_on_black):
        f, o = _img_np(filled, "filled"), _img_np(original, "original")
        _check_ctx(ctx, o)
        m = _mask_np(mask, o.shape[:2], "mask")
        lay = separate(f, o, m, ctx["dpi"], white_mode, amount_mm, min_feature_mm=min_feature_mm,
                       white_on_black=white_on_black)
        prev = layers_preview(lay)
        sim = simulate(o, lay)
        return _ret((lay, _to_image(prev), _to_image(sim), _to_mask(lay["white"])), [prev, sim], "layers")


class AtelierPrintLayout:
    DESCRIPTION = ("Place both layers on a canvas with margins and identical fiducials (4 crosshairs + an asymmetric "
                   "key) and mirror both if the film is printed on the side that faces the painting.")
    CATEGORY = CAT
    RETURN_TYPES = ("MASK_LAYERS", "IMAGE", "STRING")
    RETURN_NAMES = ("layers", "preview", "fiducials_mm")
    FUNCTION = "layout"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "layers": ("MASK_LAYERS", {"tooltip": "From Bilayer Separate."}),
            "ctx": ("RESTO_CTX", {"tooltip": "Scale of the scan."}),
            "margin_mm": ("FLOAT", {"default": 10.0, "min": 2.0, "max": 200.0, "step": 0.5, "tooltip": "Margin around the image for the fiducials."}),
            "arm_mm": ("FLOAT", {"default": 3.0, "min": 0.5, "max": 50.0, "step": 0.1, "tooltip": "Crosshair arm length."}),
            "line_mm": ("FLOAT", {"default": 0.1, "min": 0.02, "max": 2.0, "step": 0.01, "tooltip": "Crosshair line width."}),
            "mirror": ("BOOLEAN", {"default": True, "tooltip": "Mirror both layers (print on the film side facing the painting)."}),
        }}

    def layout(self, layers, ctx, margin_mm, arm_mm, line_mm, mirror):
        if "fiducials" in layers:
            raise ValueError("layers already went through Print Layout")
        laid = layout(layers, ctx["dpi"], margin_mm, arm_mm, line_mm, mirror)
        prev = layers_preview(laid)
        return _ret((laid, _to_image(prev), json.dumps(laid["fiducials"])), [prev], "layout")


class AtelierPrintExport:
    DESCRIPTION = ("Write the print files into a subfolder of the output folder: 16-bit colour RGBA TIFF and 8-bit white "
                   "TIFF (255 = full white ink) at 1:1 with the DPI tag, and a PDF at physical size.")
    CATEGORY = CAT
    RETURN_TYPES = ("STRING", "STRING")
    RETURN_NAMES = ("folder", "files_json")
    FUNCTION = "export"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "layers": ("MASK_LAYERS", {"tooltip": "From Print Layout."}),
            "ctx": ("RESTO_CTX", {"tooltip": "Scale of the scan."}),
            "subfolder": ("STRING", {"default": "atelier_restoration/print", "tooltip": "Folder inside ComfyUI's output folder."}),
        }}

    def export(self, layers, ctx, subfolder):
        out = output_subfolder(subfolder)
        pbar = progress_bar(100)
        files = export_layers(out, layers, ctx["dpi"], progress=lambda i, n: pbar.update_absolute(int(100 * i / n), 100))
        return (str(out), json.dumps(files))


class AtelierRegistrationCheck:
    DESCRIPTION = ("Align a capture of the painting with the mask applied (or a test print) to the original capture "
                   "(ECC on L*) and report the misregistration in micrometres with a residual map.")
    CATEGORY = CAT
    RETURN_TYPES = ("IMAGE", "FLOAT", "FLOAT", "STRING")
    RETURN_NAMES = ("residual", "rms_um", "max_um", "warp_json")
    FUNCTION = "check"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "capture": ("IMAGE", {"tooltip": "Capture with the mask applied."}),
            "original": ("IMAGE", {"tooltip": "The original capture."}),
            "ctx": ("RESTO_CTX", {"tooltip": "Scale of the scan."}),
            "motion": (["translation", "euclidean", "affine", "homography"], {"default": "homography", "tooltip": "Motion model of the alignment."}),
        }}

    def check(self, capture, original, ctx, motion):
        from ..restoration.register import registration_check
        r = registration_check(_img_np(capture, "capture"), _img_np(original, "original"), ctx["dpi"], motion)
        vis = heat(r["residual"], 10.0)
        return _ret((_to_image(vis), r["rms_um"], r["max_um"], json.dumps({k: v for k, v in r.items() if k != "residual"})),
                    [vis], "register")


class AtelierRestorationRecord:
    DESCRIPTION = ("Write the archival record into a subfolder of the output folder: print files, region table "
                   "(CSV/JSON), label map, previews, manifest.json and index.html with the parameters, versions, "
                   "counts, timings, file hashes and this ComfyUI workflow.")
    CATEGORY = CAT
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("record_folder",)
    FUNCTION = "record"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "original": ("IMAGE", {"tooltip": "The scan."}),
            "filled": ("IMAGE", {"tooltip": "The filled image."}),
            "used_mask": ("MASK", {"tooltip": "Fill footprint (used_mask of Fill)."}),
            "regions": ("REGION_TABLE", {"tooltip": "Region table (after Fill / Fill QA for the full columns)."}),
            "layers": ("MASK_LAYERS", {"tooltip": "From Print Layout."}),
            "ctx": ("RESTO_CTX", {"tooltip": "Scale and scan info."}),
            "subfolder": ("STRING", {"default": "atelier_restoration/record", "tooltip": "Folder inside ComfyUI's output folder."}),
            "count_q": ("FLOAT", {"default": 1.0, "min": 0.05, "max": 20.0, "step": 0.05, "tooltip": "ΔE00 merge threshold for the colour count."}),
        }, "optional": {
            "damage_map": ("DAMAGE_MAP", {"tooltip": "Adds the response maps and detection parameters to the record."}),
        }, "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}

    def record(self, original, filled, used_mask, regions, layers, ctx, subfolder, count_q, damage_map=None,
               prompt=None, extra_pnginfo=None):
        o, f = _img_np(original, "original"), _img_np(filled, "filled")
        _check_ctx(ctx, o)
        used = _mask_np(used_mask, o.shape[:2], "used_mask")
        if "fiducials" not in layers:
            raise ValueError("layers must come from Print Layout (the record documents the print canvas)")
        out = output_subfolder(subfolder)
        t = time.perf_counter()
        rgb8 = to_uint(f[used], 8)
        leaders, counts, _, _ = merge_palette(rgb8, count_q) if len(rgb8) else (np.zeros((0, 3)), np.zeros(0), None, None)
        order = np.argsort(-counts, kind="stable")[:256]
        pal = [{"rgb8": [int(v) for v in leaders[i]], "pixels": int(counts[i])} for i in order]
        rows = regions["rows"]
        qa_heat = regions.get("qa_heat")
        times = {**(damage_map or {}).get("t", {}), **regions.get("t", {}), "colours": round(time.perf_counter() - t, 3)}
        method = regions.get("method", "unknown")
        parts = dict(img=o, dpi=ctx["dpi"], classes=regions["classes"], labels=regions["labels"], rows=rows,
                     fill_fp=decision_mask(regions["labels"], rows), filled=f, used=used, method=method,
                     qa_heat=qa_heat if qa_heat is not None else np.zeros(o.shape[:2], np.float32),
                     n_rgb8=count_rgb8(rgb8), palette=pal, n_de=int(len(leaders)), count_q=count_q, laid=layers,
                     sim=None, responses=(damage_map or {}).get("responses", {}),
                     det_params=(damage_map or {}).get("params"), ground_rgb=(damage_map or {}).get("ground_rgb"),
                     fill_classes=regions.get("fill_classes", rc.DEFAULT_FILL_CLASSES), times=times,
                     user_mask=(damage_map or {}).get("user_mask", {}))
        workflow = None
        if prompt is not None or extra_pnginfo is not None:
            workflow = {"prompt": prompt, "workflow": (extra_pnginfo or {}).get("workflow")}
        extra = {"external_model": regions.get("external_model") or "external IMAGE"} if method == "external" else None
        try:
            import comfyui_version
            comfy_v = comfyui_version.__version__
        except Exception:
            comfy_v = None
        extra = dict(extra or {}, comfyui_version=comfy_v)
        manifest = write_outputs(out, parts, cfg_dict={"source": "ComfyUI nodes"}, scan_info=ctx.get("scan"),
                                 workflow=workflow, extra=extra)
        manifest_files = [x["path"] for x in manifest["files"] if x["path"].startswith(("damage_map", "preview_layers"))]
        ui = [{"filename": os.path.relpath(os.path.join(out, p), output_directory()), "subfolder": "", "type": "output"}
              for p in manifest_files]
        for u in ui:
            u["subfolder"], u["filename"] = os.path.split(u["filename"])
        return {"ui": {"images": ui}, "result": (str(out),)}


class AtelierSyntheticDamage:
    DESCRIPTION = ("A procedural 'painting' with synthetic damage of every class and its ground truth (for trying "
                   "the chain and for benchmarks; no data needed).")
    CATEGORY = CAT
    RETURN_TYPES = ("IMAGE", "IMAGE", "MASK", "MASK", "MASK", "MASK", "RESTO_CTX", "STRING")
    RETURN_NAMES = ("damaged", "clean", "gt_support_split", "gt_craquelure", "gt_loss", "gt_small_defect", "ctx",
                    "ground_color")
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "seed": ("INT", {"default": 0, "min": 0, "max": 2 ** 31 - 1, "tooltip": "Generator seed (deterministic)."}),
            "width": ("INT", {"default": 1536, "min": 256, "max": 16384, "step": 64, "tooltip": "Width in px."}),
            "height": ("INT", {"default": 1024, "min": 256, "max": 16384, "step": 64, "tooltip": "Height in px."}),
            "dpi": DPI_INPUT,
        }}

    def make(self, seed, width, height, dpi):
        img, clean, gt, info = make_sample(SynthConfig(height=height, width=width, dpi=dpi), seed)
        masks = [_to_mask(gt == rc.CLASS_IDS[k]) for k in ("support_split", "craquelure", "loss", "small_defect")]
        ctx = _ctx_of(_to_image(img), dpi, {"path": f"synthetic seed {seed}", "seeds": {"sample": seed}, "dpi_source": "given"})
        ov = class_overlay(img, gt)
        return _ret((_to_image(img), _to_image(clean), *masks, ctx, ",".join(f"{v:.3f}" for v in info["ground_rgb"])),
                    [img, ov], "synth")


_NODES = [AtelierRestorationLoadScan, AtelierRestorationContext, AtelierSyntheticDamage, AtelierDamageDetect,
          AtelierDamageMapEdit, AtelierRegionTable, AtelierRestorationFill, AtelierFillQA, AtelierColourCount,
          AtelierBilayerSeparate, AtelierPrintLayout, AtelierPrintExport, AtelierRegistrationCheck,
          AtelierRestorationRecord]
NODE_CLASS_MAPPINGS = {c.__name__: c for c in _NODES}
NODE_DISPLAY_NAME_MAPPINGS = {
    "AtelierRestorationLoadScan": "Atelier Load Scan (DPI)",
    "AtelierRestorationContext": "Atelier Restoration Context",
    "AtelierSyntheticDamage": "Atelier Synthetic Damaged Painting",
    "AtelierDamageDetect": "Atelier Damage Detect",
    "AtelierDamageMapEdit": "Atelier Damage Map Edit",
    "AtelierRegionTable": "Atelier Region Table (mm)",
    "AtelierRestorationFill": "Atelier Restoration Fill",
    "AtelierFillQA": "Atelier Fill QA",
    "AtelierColourCount": "Atelier Colour Count",
    "AtelierBilayerSeparate": "Atelier Bilayer Separate (colour + white)",
    "AtelierPrintLayout": "Atelier Print Layout (fiducials)",
    "AtelierPrintExport": "Atelier Print Export (TIFF + PDF)",
    "AtelierRegistrationCheck": "Atelier Registration Check",
    "AtelierRestorationRecord": "Atelier Restoration Record",
}
