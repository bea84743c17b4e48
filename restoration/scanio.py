"""Reading scans and writing files safely (temp name + rename, paths kept inside the output folder).

Images in memory are float32 ``(H, W, 3)`` arrays/tensors in [0, 1], sRGB-encoded.
"""
import hashlib
import os
import pathlib
import tempfile

import numpy as np

DPI_RANGE = (50.0, 20000.0)
MM_PER_INCH = 25.4


def check_dpi(dpi, name="dpi"):
    """Return ``dpi`` as float or raise ValueError naming the allowed range."""
    try:
        d = float(dpi)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {dpi!r}") from None
    if not (DPI_RANGE[0] <= d <= DPI_RANGE[1]) or d != d:
        raise ValueError(f"{name}={dpi!r} is out of range; allowed {DPI_RANGE[0]:g}..{DPI_RANGE[1]:g} "
                         "pixels per inch (600 is a typical 1:1 museum capture)")
    return d


def mm_to_px(mm, dpi, minimum=0):
    """Millimetres -> whole pixels (rounded), at least ``minimum``."""
    return max(int(minimum), int(round(float(mm) * float(dpi) / MM_PER_INCH)))


def read_scan(path, dpi=None):
    """Read a PNG/TIFF (8 or 16 bit, gray/RGB/RGBA) scan.

    Returns ``(image float32 (H, W, 3) in [0, 1], dpi float, info dict)``. ``dpi`` given here wins;
    otherwise it comes from the file's metadata; if neither exists, ValueError.
    """
    p = pathlib.Path(path)
    if not p.is_file():
        raise ValueError(f"scan {str(path)!r} does not exist or is not a file")
    file_dpi = None
    arr = None
    suffix = p.suffix.lower()
    if suffix in (".tif", ".tiff"):
        import tifffile
        try:
            with tifffile.TiffFile(p) as tf:
                page = tf.pages[0]
                arr = page.asarray()
                tags = page.tags
                if "XResolution" in tags:
                    num, den = tags["XResolution"].value
                    unit = tags["ResolutionUnit"].value if "ResolutionUnit" in tags else 2
                    res = num / den if den else 0
                    if res > 0:
                        file_dpi = res * (2.54 if int(unit) == 3 else 1.0) if int(unit) in (2, 3) else None
        except Exception as exc:
            raise ValueError(f"scan {str(path)!r} is not a readable TIFF: {exc}") from None
    else:
        from PIL import Image
        import cv2
        try:
            with Image.open(p) as im:
                info_dpi = im.info.get("dpi")
                if info_dpi and float(info_dpi[0]) > 1:
                    file_dpi = float(info_dpi[0])
                im.verify()
        except Exception as exc:
            raise ValueError(f"scan {str(path)!r} is not a readable image (PNG or TIFF expected): {exc}") from None
        arr = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)  # keeps 16-bit samples (Pillow reduces RGB48 to 8 bit)
        if arr is None:
            raise ValueError(f"scan {str(path)!r} could not be decoded")
        if arr.ndim == 3:
            arr = cv2.cvtColor(arr, cv2.COLOR_BGRA2RGBA if arr.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    if arr.dtype == np.uint8:
        scale = 255.0
    elif arr.dtype == np.uint16:
        scale = 65535.0
    elif arr.dtype.kind == "f":
        scale = 1.0
    else:
        raise ValueError(f"scan {str(path)!r} has unsupported sample type {arr.dtype}; use 8/16-bit")
    bits = {np.dtype(np.uint8): 8, np.dtype(np.uint16): 16}.get(arr.dtype, 32)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4) or min(arr.shape[:2]) < 8:
        raise ValueError(f"scan {str(path)!r} has shape {arr.shape}; expected (H, W) or (H, W, 3|4), H, W >= 8")
    img = (arr[..., :3].astype(np.float32) / scale).clip(0, 1)
    if dpi is None and file_dpi is None:
        raise ValueError(f"dpi missing: {str(path)!r} has no resolution tag; pass --dpi (e.g. 600)")
    dpi_f = check_dpi(dpi if dpi is not None else file_dpi)
    return img, dpi_f, {"path": str(p), "bits": bits, "dpi_source": "given" if dpi is not None else "file",
                        "sha256": sha256_file(p), "shape": list(img.shape)}


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def prepare_out_dir(out):
    """Create ``out`` if needed and check it is writable; ValueError otherwise."""
    p = pathlib.Path(out)
    try:
        p.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=p, prefix=".probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ValueError(f"output folder {str(out)!r} cannot be written: {exc}") from None
    return p.resolve()


def safe_path(out_dir, name):
    """``out_dir / name`` resolved, refused (ValueError) if it leaves ``out_dir``."""
    base = pathlib.Path(out_dir).resolve()
    p = (base / name).resolve()
    if p != base and base not in p.parents:
        raise ValueError(f"export path {name!r} leaves the output folder {str(base)!r}")
    return p


def atomic_write(out_dir, name, writer):
    """Write via ``writer(tmp_path)`` to a temp name in the same folder, then rename. Returns path."""
    dest = safe_path(out_dir, name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix="." + dest.name + ".", suffix=".part")
    os.close(fd)
    try:
        writer(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return dest


def _umask():
    """The process umask, read without changing it where /proc allows (os.umask is process-wide)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    m = os.umask(0o022)
    os.umask(m)
    return m


def to_uint(img, bits, rows=512):
    """Float [0, 1] array -> uint8/uint16 with round-half-up (float64 maths, in row chunks)."""
    scale = 255.0 if bits == 8 else 65535.0
    img = np.asarray(img)
    out = np.empty(img.shape, np.uint8 if bits == 8 else np.uint16)
    flat_in = img.reshape(img.shape[0], -1) if img.ndim >= 2 else img.reshape(1, -1)
    flat_out = out.reshape(flat_in.shape)
    for y in range(0, flat_in.shape[0], rows):
        flat_out[y:y + rows] = np.floor(np.clip(flat_in[y:y + rows].astype(np.float64), 0, 1) * scale + 0.5)
    return out


def write_tiff(out_dir, name, arr, dpi, extra_meta=None, icc=None):
    """Write a uint8/uint16 (H, W[, C]) TIFF with the DPI tag (inch), zlib strips, atomically. C=4 is RGBA."""
    from .printfile import write_tiff_rows
    arr = np.asarray(arr)
    return write_tiff_rows(out_dir, name, lambda y0, y1: arr[y0:y1], arr.shape, arr.dtype, dpi,
                           description=extra_meta, icc=icc)


def write_png(out_dir, name, arr, dpi=None):
    """Write a uint8/uint16 array as PNG (DPI in pHYs when given), atomically."""
    from PIL import Image
    arr = np.asarray(arr)
    if arr.dtype == np.uint16 and arr.ndim == 3:
        raise ValueError("16-bit colour goes to TIFF (write_tiff); PNG here is 8-bit or 16-bit gray")
    im = Image.fromarray(np.ascontiguousarray(arr))

    def w(f):
        im.save(f, format="PNG", **({"dpi": (dpi, dpi)} if dpi else {}))
    return atomic_write(out_dir, name, w)


def write_bytes(out_dir, name, data):
    if isinstance(data, str):
        data = data.encode("utf-8")
    def w(path):
        with open(path, "wb") as f:
            f.write(data)
    return atomic_write(out_dir, name, w)
