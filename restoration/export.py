"""Print export (spec N10): 16-bit colour RGBA TIFF (sRGB ICC embedded) + 8-bit white TIFF at 1:1 with
the DPI tag, and a PDF at physical size, written in row strips (see :mod:`restoration.printfile`).
Everything is written atomically inside the output folder."""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Tuple
from .printfile import WHITE_POLARITY, write_print_files  # noqa: F401


def export_layers(out_dir: Any, laid: Any, dpi: float, prefix: str = "layer", pdf: bool = True,
                  progress: Optional[Callable[[int, int], None]] = None) -> List[dict]:
    """Write ``{prefix}_color_rgba.tif`` (uint16 RGBA), ``{prefix}_white.tif`` (uint8, 255 = full white
    ink) and ``print_layers.pdf`` (page 1 colour over paper white, page 2 white plate shown as dark
    ink) from a :class:`restoration.artefacts.PrintCanvas` (in memory or streamed), all at ``dpi`` so
    1 px = 25.4/dpi mm. Returns a list of file records (path, sha256, ...).
    """
    cw, ch = laid.canvas_px
    files, _ = write_print_files(out_dir, laid.rows, ch, cw, dpi, prefix=prefix, pdf=pdf, progress=progress)
    return files


def read_tiff(path: Any) -> Tuple[Any, float]:
    """Read back a TIFF: (array, dpi) with dpi from the XResolution tag."""
    import tifffile
    with tifffile.TiffFile(path) as tf:
        page: Any = tf.pages[0]
        num, den = page.tags["XResolution"].value
        return page.asarray(), num / den
