"""Reading scans: PNG / TIFF with their resolution, a file confined to a folder, units.

Images in memory are float32 ``(H, W, 3)`` arrays/tensors in [0, 1], sRGB-encoded. Writing lives in
:mod:`restoration.fileio` (its names are re-exported here for callers of the old module).
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple
import os
import pathlib

import numpy as np

try:
    from ..atelier_files import shown_paths  # type: ignore[import-not-found]
except ImportError:  # the core imported as a top-level package (tests, ``python -m restoration``)
    from atelier_files import shown_paths
from .fileio import (atomic_write, prepare_out_dir, safe_path, sha256_file, to_uint, write_bytes,  # noqa: F401
                     write_png, write_tiff)

from .scale import MM_PER_INCH, Scale, whole_px  # noqa: F401  (MM_PER_INCH: for callers of the old module)
from .settings import SETTINGS

DPI_RANGE = (SETTINGS["dpi"].min, SETTINGS["dpi"].max)
SCAN_SUFFIXES = (".png", ".tif", ".tiff")
LOSSY_FORMATS = ("JPEG", "MPO", "WEBP")  # read, but flagged lossy in the record (WebP may be lossless)


def check_dpi(dpi: Any) -> float:
    """``dpi`` (a number, or a number's text as a file's metadata may give it) as a float checked by the
    ``dpi`` record (:class:`~restoration.scale.Scale`); ValueError naming ``dpi (--dpi)`` otherwise."""
    if isinstance(dpi, str):
        try:
            dpi = float(dpi)
        except ValueError:
            pass
    elif not isinstance(dpi, (bool, int, float)) and hasattr(dpi, "__float__"):
        dpi = float(dpi)  # numpy scalars, TIFF rationals
    return Scale(dpi).dpi


def mm_to_px(mm: float, dpi: float, minimum: int = 0) -> int:
    """Millimetres -> whole pixels (rounded), at least ``minimum`` (:func:`restoration.scale.whole_px`)."""
    return whole_px(mm, dpi, minimum)


def read_scan(path: "str | os.PathLike", dpi: Optional[float] = None,
              shown: "Optional[str | os.PathLike]" = None) -> Tuple[np.ndarray, float, dict]:
    """Read a PNG/TIFF (8 or 16 bit, gray/RGB/RGBA) scan.

    Returns ``(image float32 (H, W, 3) in [0, 1], dpi float, info dict)``. ``dpi`` given here wins;
    otherwise it comes from the file's metadata; if neither exists, ValueError. ``shown``: the path the
    messages and the info name (a Ray worker reads a local copy of the driver's file; default ``path``).
    """
    p = pathlib.Path(path)
    shown = path if shown is None else shown
    sp = pathlib.Path(shown)
    if not p.is_file():
        raise ValueError(f"scan {str(shown)!r} does not exist or is not a file")
    file_dpi = None
    arr = None
    fmt = "TIFF"
    suffix = p.suffix.lower()
    if suffix in (".tif", ".tiff"):
        import tifffile
        try:
            with tifffile.TiffFile(p) as tf:
                page: Any = tf.pages[0]
                arr = page.asarray()
                tags = page.tags
                if "XResolution" in tags:
                    num, den = tags["XResolution"].value
                    unit = tags["ResolutionUnit"].value if "ResolutionUnit" in tags else 2
                    res = num / den if den else 0
                    if res > 0:
                        file_dpi = res * (2.54 if int(unit) == 3 else 1.0) if int(unit) in (2, 3) else None
        except Exception as exc:
            raise ValueError(f"scan {str(shown)!r} is not a readable TIFF: {shown_paths(str(exc), {p: sp})}") from None
    else:
        from PIL import Image
        import cv2
        try:
            with Image.open(p) as im:
                fmt = im.format or "?"
                info_dpi = im.info.get("dpi")
                if info_dpi and float(info_dpi[0]) > 1:
                    file_dpi = float(info_dpi[0])
                im.verify()
        except Exception as exc:
            raise ValueError(f"scan {str(shown)!r} is not a readable image (PNG or TIFF expected): "
                             f"{shown_paths(str(exc), {p: sp})}") from None
        arr = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)  # keeps 16-bit samples (Pillow reduces RGB48 to 8 bit)
        if arr is None:
            raise ValueError(f"scan {str(shown)!r} could not be decoded")
        if arr.ndim == 3:
            arr = cv2.cvtColor(arr, cv2.COLOR_BGRA2RGBA if arr.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    if arr.dtype == np.uint8:
        scale = 255.0
    elif arr.dtype == np.uint16:
        scale = 65535.0
    elif arr.dtype.kind == "f":
        scale = 1.0
    else:
        raise ValueError(f"scan {str(shown)!r} has unsupported sample type {arr.dtype}; use 8/16-bit")
    bits = {np.dtype(np.uint8): 8, np.dtype(np.uint16): 16}.get(arr.dtype, 32)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4) or min(arr.shape[:2]) < 8:
        raise ValueError(f"scan {str(shown)!r} has shape {arr.shape}; expected (H, W) or (H, W, 3|4), H, W >= 8")
    img = (arr[..., :3].astype(np.float32) / scale).clip(0, 1)
    if dpi is None and file_dpi is None:
        raise ValueError(f"dpi missing: {str(shown)!r} has no resolution tag; pass --dpi (e.g. 600)")
    dpi_f = check_dpi(dpi if dpi is not None else file_dpi)
    return img, dpi_f, {"path": str(sp), "name": sp.name, "bits": bits, "format": fmt,
                        "lossy": fmt in LOSSY_FORMATS, "dpi_source": "given" if dpi is not None else "file",
                        "sha256": sha256_file(p), "shape": list(img.shape)}


def confined_file(folder: "str | os.PathLike", name: str, what: str = "file") -> pathlib.Path:
    """``folder / name`` resolved (links followed) if it is an existing file inside ``folder``.

    Anything else -- ``..``, an absolute path, a link leading out, a missing file -- raises the same
    ValueError, which names only ``name`` and never says whether a path exists elsewhere (a server
    must not become a probe of its own file system).
    """
    base = pathlib.Path(folder).resolve()
    msg = (f"{what} {str(name)!r} is not a file of the input folder; upload it or copy it into the input "
           "folder and choose it from the list")
    if not isinstance(name, str) or not name.strip() or "\x00" in name:
        raise ValueError(msg)
    p = (base / name).resolve()
    if base not in p.parents or not p.is_file():
        raise ValueError(msg)
    return p


RECORD_SCAN_KEYS = ("name", "sha256", "bits", "format", "lossy", "dpi_source")


def read_confined(folder: "str | os.PathLike", name: str, dpi: Optional[float] = None
                  ) -> Tuple[np.ndarray, float, dict]:
    """:func:`read_scan` of a file of ``folder`` chosen by ``name`` (see :func:`confined_file`), for a server.

    Errors name the file as chosen, never the server's folders; the returned info keeps only
    ``RECORD_SCAN_KEYS`` (the file name and hash, not its path). ``dpi`` <= 0 or None: from the file.
    """
    p = confined_file(folder, name, "path")
    try:
        img, d, info = read_scan(p, dpi if dpi and dpi > 0 else None)
    except ValueError as exc:
        raise ValueError(shown_paths(str(exc), {p: name})) from None
    return img, d, {k: info[k] for k in RECORD_SCAN_KEYS}


def content_fingerprint(folder: "str | os.PathLike", name: Any) -> str:
    """SHA-256 of a file of ``folder`` (a changed file reruns the graph); ``name`` itself when it is not one."""
    try:
        return sha256_file(confined_file(folder, name))
    except (ValueError, OSError):
        return str(name)


def list_scans(folder: "str | os.PathLike") -> List[str]:
    """Names of the image files a scan may be read from (PNG/TIFF, and JPEG flagged lossy) directly in
    ``folder`` (as the host's LoadImage lists its input folder), sorted; [] if it cannot be read. A link
    is listed only when it leads to a file inside ``folder`` (:func:`confined_file` would refuse the others)."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    ok = SCAN_SUFFIXES + (".jpg", ".jpeg")
    return sorted(f for f in names if f.lower().endswith(ok) and not f.startswith(".") and _inside(folder, f))


def _inside(folder: "str | os.PathLike", name: str) -> bool:
    """Whether ``name`` is a file of ``folder`` once links are followed (a link leading out is not)."""
    try:
        confined_file(folder, name)
    except ValueError:
        return False
    return True


