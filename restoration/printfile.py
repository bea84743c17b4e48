"""Print canvas and print files, produced in row strips (spec N9, N10).

The canvas is the image plus margins carrying the fiducials. Holding it in memory costs about
20 B/px as float32 layers and as much again for the uint16/uint8 conversions and PDF pages, i.e.
several times a 100 MP scan. Here the canvas is built ``rows`` rows at a time from a function of
image rows (:func:`canvas_rows`), and every strip is compressed straight into the TIFF strips and
the PDF image streams (:func:`write_print_files`), so memory is bounded by one strip whatever the
scan size. The in-memory :func:`restoration.layers.layout` is the same code run on all rows at once.

Files: ``{prefix}_color_rgba.tif`` (uint16 RGBA, sRGB ICC profile embedded, alpha = ink footprint),
``{prefix}_white.tif`` (uint8, 255 = full white ink), ``print_layers.pdf`` (page 1 colour over paper
white, page 2 the white plate as dark ink), all at ``dpi`` so 1 px = 25.4/dpi mm (:class:`~restoration.scale.Scale`).
"""

from __future__ import annotations

from typing import Any, Callable, List, Mapping, Optional, Tuple
import contextlib
import os
import struct
import zlib

import numpy as np

from .fileio import STRIP_ROWS, Spool, atomic_write, sha256_file, tiff_writer, to_uint, write_tiff_rows  # noqa: F401
from .previews import preview_stride
from .scale import Scale
from .settings import SETTINGS

WHITE_POLARITY = "255=full_ink"


def srgb_icc() -> Optional[bytes]:
    """An sRGB ICC profile (LittleCMS built-in sRGB, via Pillow) as bytes; None if unavailable.

    LittleCMS stamps the creation time into the header (bytes 24-35); it is fixed here so that the same
    job writes byte-identical files (records are replayed and compared by hash). The profile ID field
    is zero ("not computed"), so no checksum depends on the date.
    """
    try:
        from PIL import ImageCms
        b = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    except Exception:  # Pillow built without LittleCMS
        return None
    if len(b) >= 128 and b[36:40] == b"acsp" and not any(b[84:100]):
        b[24:36] = struct.pack(">6H", 2026, 1, 1, 0, 0, 0)
    return bytes(b)


def fiducials(h: int, w: int, dpi: "float | Scale", margin_mm: float = 10.0, arm_mm: float = 3.0,
              line_mm: float = 0.1) -> Tuple[int, int, int, List[dict], int, int]:
    """Fiducial geometry on a canvas of the image plus margins (before mirroring).

    Returns ``(canvas_h, canvas_w, offset_px, marks, arm_px, line_px)``; marks is a list of dicts
    with ``kind`` ("cross"|"key") and centre ``x_px, y_px, x_mm, y_mm`` (mm of the pixel centre).
    """
    scale = Scale.of(dpi)
    mpx = scale.whole_px(margin_mm, 1)
    arm = scale.whole_px(arm_mm, 2)
    ch, cw = h + 2 * mpx, w + 2 * mpx
    c = mpx // 2
    marks: List[dict] = [{"kind": "cross", "x_px": x, "y_px": y} for x, y in
             ((c, c), (cw - 1 - c, c), (c, ch - 1 - c), (cw - 1 - c, ch - 1 - c))]
    marks.append({"kind": "key", "x_px": c + 2 * arm if cw > c + 3 * arm else c, "y_px": c})
    for mk in marks:
        mk["x_mm"] = round(scale.px_to_mm(mk["x_px"] + 0.5), 4)
        mk["y_mm"] = round(scale.px_to_mm(mk["y_px"] + 0.5), 4)
    return ch, cw, mpx, marks, arm, max(1, scale.whole_px(line_mm, 1))


def check_layout(dpi: "float | Scale", margin_mm: float = 10.0, arm_mm: float = 3.0, line_mm: float = 0.1) -> None:
    """ValueError unless the fiducials stay inside the margin (a crosshair printed over the painting would be
    ink on original paint). The marks sit in the middle of the margin; the arm plus half the line must end
    before the image starts. Each of ``margin_mm``, ``arm_mm`` and ``line_mm`` is first checked by its record
    (:data:`restoration.settings.SETTINGS`), ``dpi`` by :class:`~restoration.scale.Scale`."""
    for name, v in (("margin_mm", margin_mm), ("arm_mm", arm_mm), ("line_mm", line_mm)):
        SETTINGS[name].check(v)
    scale = Scale.of(dpi)
    mpx = scale.whole_px(margin_mm, 1)
    arm, lw = scale.whole_px(arm_mm, 2), max(1, scale.whole_px(line_mm, 1))
    room = mpx - 1 - mpx // 2 - (lw + 1) // 2  # px between a mark's centre and the image, minus the line
    if arm > room:
        mm = scale.mm_per_px
        raise ValueError(f"arm_mm={arm_mm:g} reaches into the image with margin_mm={margin_mm:g} and line_mm="
                         f"{line_mm:g}: allowed arm_mm up to {max(room, 0) * mm:.2f} mm at this margin, or a margin "
                         f"of at least {(2 * (arm + (lw + 1) // 2) + 2) * mm:.2f} mm")


def draw_marks(canvas_mask: np.ndarray, marks: List[dict], arm: int, lw: int, dy: int = 0) -> None:
    """Draw crosshairs and the asymmetric key (value 1) into a uint8 array whose row 0 is canvas row ``dy``."""
    import cv2
    for mk in marks:
        x, y = mk["x_px"], mk["y_px"] - dy
        if mk["kind"] == "cross":
            cv2.line(canvas_mask, (x - arm, y), (x + arm, y), 1, lw)
            cv2.line(canvas_mask, (x, y - arm), (x, y + arm), 1, lw)
        else:  # a filled right triangle: shows orientation and mirroring
            pts = np.array([[x - arm // 2, y - arm // 2], [x + arm // 2, y - arm // 2], [x - arm // 2, y + arm // 2]])
            cv2.fillPoly(canvas_mask, [pts.astype(np.int32)], 1)


def canvas_geometry(h: int, w: int, dpi: "float | Scale", margin_mm: float = 10.0, arm_mm: float = 3.0,
                    line_mm: float = 0.1, mirror: bool = True) -> dict:
    """Everything needed to produce canvas rows for an ``h x w`` image: size, offset, final fiducial
    coordinates (after mirroring) and the fiducial pixels as a few row bands.

    The marks only occupy rows near the top and bottom margins; each band is drawn once in canvas
    coordinates shifted by a whole number of rows, with the same clipping at the canvas edges, so
    its pixels equal those of a full-canvas drawing.
    """
    scale = Scale.of(dpi)
    dpi = scale.dpi
    ch, cw, off, marks, arm, lw = fiducials(h, w, scale, margin_mm, arm_mm, line_mm)
    pad = arm + lw + 2
    spans = sorted((max(0, mk["y_px"] - pad), min(ch, mk["y_px"] + pad + 1)) for mk in marks)
    merged: List[list] = []
    for a, b in spans:
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    bands = []
    for a, b in merged:
        band = np.zeros((b - a, cw), np.uint8)
        draw_marks(band, [mk for mk in marks if a <= mk["y_px"] < b], arm, lw, dy=a)
        if mirror:  # drawn first, then the whole canvas is mirrored
            band = band[:, ::-1]
        bands.append((a, np.ascontiguousarray(band > 0)))
    final = [dict(mk) for mk in marks]
    if mirror:
        for mk in final:
            mk["x_px"] = cw - 1 - mk["x_px"]
            mk["x_mm"] = round(scale.px_to_mm(mk["x_px"] + 0.5), 4)
    return {"h": h, "w": w, "dpi": float(dpi), "canvas_px": [cw, ch], "offset_px": off, "mirror": bool(mirror),
            "margin_mm": margin_mm, "fiducials": final, "bands": bands,
            "canvas_mm": [round(scale.px_to_mm(cw), 4), round(scale.px_to_mm(ch), 4)]}


def fiducial_rows(geom: Mapping[str, Any], r0: int, r1: int) -> np.ndarray:
    """Boolean (r1 - r0, CW) fiducial pixels of canvas rows ``r0:r1``."""
    cw = geom["canvas_px"][0]
    f = np.zeros((r1 - r0, cw), bool)
    for a, band in geom["bands"]:
        s0, s1 = max(r0, a), min(r1, a + len(band))
        if s0 < s1:
            f[s0 - r0:s1 - r0] |= band[s0 - a:s1 - a]
    return f


def canvas_rows(geom: Mapping[str, Any], layer_rows: Callable[[int, int], Tuple[np.ndarray, np.ndarray]], r0: int, r1: int
                ) -> Tuple[np.ndarray, np.ndarray]:
    """Canvas rows ``r0:r1``: ``(rgba (R, CW, 4) float32, white (R, CW) float32)``.

    ``layer_rows(y0, y1)`` returns image rows ``y0:y1`` of the layers (colour RGBA, white), not mirrored.
    Fiducials print as full ink in both layers (colour black with A = 1, white coverage 1).
    """
    cw = geom["canvas_px"][0]
    off, h, w = geom["offset_px"], geom["h"], geom["w"]
    rgba = np.zeros((r1 - r0, cw, 4), np.float32)
    white = np.zeros((r1 - r0, cw), np.float32)
    y0, y1 = max(r0, off), min(r1, off + h)
    if y0 < y1:
        c, wt = layer_rows(y0 - off, y1 - off)
        if geom["mirror"]:
            c, wt = c[:, ::-1], wt[:, ::-1]
        rgba[y0 - r0:y1 - r0, off:off + w] = c
        white[y0 - r0:y1 - r0, off:off + w] = wt
    f = fiducial_rows(geom, r0, r1)
    rgba[f] = (0, 0, 0, 1)
    white[f] = 1.0
    return rgba, white


def _pdf_writer(w, h, dpi, page_spools):
    """A minimal PDF 1.4: one page per spooled Flate stream (8-bit image of w x h px), page size w x h
    pixels at ``dpi`` (points = px * 72 / dpi), each image drawn over the whole page."""
    wpt, hpt = w * 72.0 / dpi, h * 72.0 / dpi

    def write(path):
        with open(path, "wb") as f:
            offsets = []

            def obj(body, stream=None):
                offsets.append(f.tell())
                f.write(f"{len(offsets)} 0 obj\n".encode() + body)
                if stream is not None:
                    f.write(b"\nstream\n")
                    for chunk in stream:
                        f.write(chunk)
                    f.write(b"\nendstream")
                f.write(b"\nendobj\n")
            f.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
            n = len(page_spools)
            kids = " ".join(f"{3 + 3 * i} 0 R" for i in range(n))
            obj(b"<< /Type /Catalog /Pages 2 0 R >>")
            obj(f"<< /Type /Pages /Kids [{kids}] /Count {n} >>".encode())
            for i, (space, spool) in enumerate(page_spools):
                img, content = 4 + 3 * i, 5 + 3 * i
                obj(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {wpt:.4f} {hpt:.4f}] /Resources << /XObject << "
                    f"/Im{i} {img} 0 R >> >> /Contents {content} 0 R >>".encode())
                obj(f"<< /Type /XObject /Subtype /Image /Width {w} /Height {h} /ColorSpace /{space} "
                    f"/BitsPerComponent 8 /Filter /FlateDecode /Length {spool.nbytes} >>".encode(), spool.chunks())
                cs = f"q {wpt:.4f} 0 0 {hpt:.4f} 0 0 cm /Im{i} Do Q".encode()
                obj(f"<< /Length {len(cs)} >>".encode(), [cs])
            xref = f.tell()
            f.write(f"xref\n0 {len(offsets) + 1}\n0000000000 65535 f \n".encode())
            for o in offsets:
                f.write(f"{o:010d} 00000 n \n".encode())
            f.write(f"trailer\n<< /Size {len(offsets) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode())
    return write


def write_print_files(out_dir: Any, canvas_fn: Callable[[int, int], Tuple[np.ndarray, np.ndarray]], ch: int,
                      cw: int, dpi: float, prefix: str = "layer", pdf: bool = True, rows: int = STRIP_ROWS,
                      preview_side: Optional[int] = None, progress: Optional[Callable[[int, int], None]] = None
                      ) -> Tuple[List[dict], Any]:
    """Write the print files from ``canvas_fn(r0, r1) -> (rgba float32 (R, CW, 4), white float32 (R, CW))``.

    One pass over the canvas in strips of ``rows`` rows; each strip is converted (round half up) and
    compressed into four spooled streams (colour TIFF, white TIFF, PDF pages), which are then
    assembled into the final files under temporary names and renamed. Returns ``(files, preview)``:
    file records with sha256, and the canvas subsampled every ``s`` px (``s = ceil(max(CH, CW) /
    preview_side)``, as ``{"color_rgba", "white"}``) when ``preview_side`` is given.
    """
    s = preview_stride(ch, cw, preview_side) if preview_side else 0
    prev_c, prev_w = [], []
    icc = srgb_icc()
    files: List[dict] = []
    with contextlib.ExitStack() as stack:
        sp = {k: stack.enter_context(Spool(out_dir)) for k in ("color", "white", "page1", "page2")}
        z1, z2 = zlib.compressobj(6), zlib.compressobj(6)
        n = -(-ch // rows)
        for i, r0 in enumerate(range(0, ch, rows)):
            r1 = min(ch, r0 + rows)
            rgba, white = canvas_fn(r0, r1)
            w8 = to_uint(white, 8)
            sp["color"].add(zlib.compress(to_uint(rgba, 16).tobytes(), 6))
            sp["white"].add(zlib.compress(w8.tobytes(), 6))
            if pdf:
                a = rgba[..., 3:]
                sp["page1"].add(z1.compress(to_uint(rgba[..., :3] * a + (1 - a), 8).tobytes()))
                sp["page2"].add(z2.compress((255 - w8).tobytes()))
            if s:
                keep = [r - r0 for r in range(r0, r1) if r % s == 0]
                prev_c.append(rgba[keep, ::s])
                prev_w.append(white[keep, ::s])
            if progress:
                progress(i + 1, n)
        sp["page1"].add(z1.flush())
        sp["page2"].add(z2.flush())
        p = atomic_write(out_dir, f"{prefix}_color_rgba.tif", tiff_writer(
            sp["color"], (ch, cw, 4), np.dtype(np.uint16), dpi, rows,
            "Atelier colour layer (sRGB, 16-bit, alpha=ink footprint)", ["unassalpha"], icc))
        files.append({"path": p.name, "role": "color_layer", "px_w": cw, "px_h": ch, "dpi": dpi, "bit_depth": 16,
                      "colour_space": "sRGB", "channels": "RGBA", "icc_embedded": icc is not None})
        p = atomic_write(out_dir, f"{prefix}_white.tif", tiff_writer(
            sp["white"], (ch, cw), np.dtype(np.uint8), dpi, rows, f"Atelier white layer ({WHITE_POLARITY})"))
        files.append({"path": p.name, "role": "white_layer", "px_w": cw, "px_h": ch, "dpi": dpi, "bit_depth": 8,
                      "colour_space": "gray", "white_polarity": WHITE_POLARITY})
        if pdf:
            p = atomic_write(out_dir, "print_layers.pdf",
                             _pdf_writer(cw, ch, dpi, [("DeviceRGB", sp["page1"]), ("DeviceGray", sp["page2"])]))
            files.append({"path": p.name, "role": "print_pdf", "px_w": cw, "px_h": ch, "dpi": dpi, "bit_depth": 8,
                          "page_mm": [round(Scale.of(dpi).px_to_mm(cw), 3), round(Scale.of(dpi).px_to_mm(ch), 3)]})
    for f in files:
        f["sha256"] = sha256_file(os.path.join(out_dir, f["path"]))
    preview = None
    if s:
        preview = {"color_rgba": np.concatenate(prev_c, 0), "white": np.concatenate(prev_w, 0)}
    return files, preview
