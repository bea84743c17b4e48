"""Print export (spec N10): 16-bit colour RGBA TIFF + 8-bit white TIFF at 1:1 with the DPI tag,
and a PDF at physical size. Everything is written atomically inside the output folder."""
import numpy as np

from .scanio import sha256_file, to_uint, write_pdf, write_tiff

WHITE_POLARITY = "255=full_ink"


def export_layers(out_dir, laid, dpi, prefix="layer", pdf=True):
    """Write ``{prefix}_color_rgba.tif`` (uint16 RGBA), ``{prefix}_white.tif`` (uint8, 255 = full white
    ink) and ``print_layers.pdf`` (page 1 colour over paper white, page 2 white plate shown as dark
    ink), all at ``dpi`` so 1 px = 25.4/dpi mm. Returns a list of file records (path, sha256, ...).
    """
    rgba16 = to_uint(laid["color_rgba"], 16)
    white8 = to_uint(laid["white"], 8)
    h, w = white8.shape
    files = []
    p = write_tiff(out_dir, f"{prefix}_color_rgba.tif", rgba16, dpi, extra_meta="Atelier colour layer (sRGB, 16-bit, alpha=ink footprint)")
    files.append({"path": p.name, "role": "color_layer", "px_w": w, "px_h": h, "dpi": dpi, "bit_depth": 16,
                  "colour_space": "sRGB", "channels": "RGBA"})
    p = write_tiff(out_dir, f"{prefix}_white.tif", white8, dpi, extra_meta=f"Atelier white layer ({WHITE_POLARITY})")
    files.append({"path": p.name, "role": "white_layer", "px_w": w, "px_h": h, "dpi": dpi, "bit_depth": 8,
                  "colour_space": "gray", "white_polarity": WHITE_POLARITY})
    if pdf:
        a = laid["color_rgba"][..., 3:]
        page1 = to_uint(laid["color_rgba"][..., :3] * a + (1 - a), 8)
        page2 = 255 - white8
        p = write_pdf(out_dir, "print_layers.pdf", [page1, np.repeat(page2[..., None], 3, 2)], dpi)
        files.append({"path": p.name, "role": "print_pdf", "px_w": w, "px_h": h, "dpi": dpi, "bit_depth": 8,
                      "page_mm": [round(w * 25.4 / dpi, 3), round(h * 25.4 / dpi, 3)]})
    for f in files:
        f["sha256"] = sha256_file(f"{out_dir}/{f['path']}")
    return files


def read_tiff(path):
    """Read back a TIFF: (array, dpi) with dpi from the XResolution tag."""
    import tifffile
    with tifffile.TiffFile(path) as tf:
        page = tf.pages[0]
        num, den = page.tags["XResolution"].value
        return page.asarray(), num / den
