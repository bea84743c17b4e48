"""Writing files safely: temporary name + rename, paths kept inside the output folder, strip TIFFs
with bounded memory, whole job folders that appear complete or not at all, and an exclusive claim on a
new output folder (a lock beside it) taken before a run does any work.

Nothing here reads scans or knows about print layers; :mod:`restoration.scanio` (reading) and
:mod:`restoration.printfile` (print canvas) build on it, so the modules import in one direction only.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, List, Optional, Sequence
import hashlib
import os
import pathlib
import shutil
import tempfile
import zlib

import numpy as np

try:
    from ..atelier_files import next_number, numbered_name, process_umask  # type: ignore[import-not-found]
except ImportError:  # the core imported as a top-level package (tests, ``python -m restoration``)
    from atelier_files import next_number, numbered_name, process_umask

STRIP_ROWS = 128


def sha256_file(path: "str | os.PathLike") -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def prepare_out_dir(out: "str | os.PathLike") -> pathlib.Path:
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


def safe_path(out_dir: "str | os.PathLike", name: str) -> pathlib.Path:
    """``out_dir / name`` resolved, refused (ValueError) if it leaves ``out_dir``."""
    base = pathlib.Path(out_dir).resolve()
    p = (base / name).resolve()
    if p != base and base not in p.parents:
        raise ValueError(f"export path {name!r} leaves the output folder {str(base)!r}")
    return p


def atomic_write(out_dir: "str | os.PathLike", name: str, writer: Callable[[Any], Any]) -> pathlib.Path:
    """Write via ``writer(tmp_path)`` to a temp name in the same folder, then rename. Returns path."""
    dest = safe_path(out_dir, name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix="." + dest.name + ".", suffix=".part")
    os.close(fd)
    try:
        writer(tmp)
        os.chmod(tmp, 0o666 & ~process_umask())  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return dest


# ------------------------------------------------------------------ job folders
class StagedFolder:
    """A job folder written under a hidden name and moved into place only when complete.

    ``with StagedFolder(dest) as tmp:`` -- everything is written into ``tmp`` (a hidden sibling of
    the destination); leaving the block normally renames it to ``dest`` (which must not exist or be
    an empty folder), or, with ``numbered=True``, to the next free ``dest.name_NNNNN`` beside it, so
    an earlier run is never overwritten. Any exception, KeyboardInterrupt included, removes ``tmp``:
    a job leaves a complete folder or nothing new. ``final`` is the folder's path after the block.
    """

    def __init__(self, dest, numbered=False):
        self.dest = pathlib.Path(dest).absolute()
        self.numbered = numbered
        self.tmp: Optional[pathlib.Path] = None
        self.final = None

    def __enter__(self):
        parent = self.dest.parent
        if not self.numbered and self.dest.exists() and (not self.dest.is_dir() or any(self.dest.iterdir())):
            raise ValueError(f"output folder {str(self.dest)!r} already exists and is not empty; records are "
                             "never overwritten: choose a new folder")
        prepare_out_dir(parent)
        self.tmp = pathlib.Path(tempfile.mkdtemp(dir=parent, prefix=f".{self.dest.name}.", suffix=".partial"))
        os.chmod(self.tmp, 0o777 & ~process_umask())
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        assert self.tmp is not None, "__exit__ without __enter__"
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return False
        try:
            self.final = self._move()
        except BaseException:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise
        return False

    def _move(self):
        assert self.tmp is not None
        if not self.numbered:
            if self.dest.is_dir():
                self.dest.rmdir()  # empty (checked on entry); fails if something was written there since
            os.rename(self.tmp, self.dest)
            return self.dest
        parent, prefix = self.dest.parent, self.dest.name
        n = next_number(parent, prefix)
        for _ in range(1000):
            target = parent / numbered_name(prefix, n)
            try:
                os.mkdir(target)  # claim the number; a concurrent run takes the next one
            except FileExistsError:
                n += 1
                continue
            os.rename(self.tmp, target)  # onto the empty folder just made
            return target
        raise ValueError(f"no free numbered folder {prefix}_NNNNN in {str(parent)!r}")


class OutputClaim:
    """An exclusive claim on a new output folder for one run, taken before the run reads or computes anything.

    ``with OutputClaim(dest):`` checks that ``dest`` is new (or an empty folder), creates the missing parent
    folders (remembering which), and creates the lock file ``.{name}.lock`` beside ``dest`` with
    ``O_CREAT | O_EXCL`` holding this process's id, so a second run into the same folder is refused at once
    (ValueError naming the folder and the pid that holds it). Leaving the block removes the lock and, when
    ``dest`` was not made (the input was rejected, the run failed or was interrupted), the parent folders
    this claim created, if they are still empty. A lock whose pid no longer runs (a run that was killed) is
    refused with an explanation: remove the lock and the run's ``.partial`` folder to start again.
    """

    def __init__(self, dest: "str | os.PathLike") -> None:
        self.dest = pathlib.Path(dest).absolute()
        self.lock = self.dest.parent / f".{self.dest.name}.lock"
        self.made: List[pathlib.Path] = []   # parent folders this claim created, deepest last
        self.held = False

    def __enter__(self) -> "OutputClaim":
        if self.dest.exists() and (not self.dest.is_dir() or any(self.dest.iterdir())):
            raise ValueError(f"output folder {str(self.dest)!r} already exists and is not empty; records are "
                             "never overwritten: choose a new folder")
        try:
            self._make_parents()
            prepare_out_dir(self.dest.parent)
            self._take()
        except BaseException:
            self._remove_made()
            raise
        return self

    def _make_parents(self) -> None:
        missing = []
        p = self.dest.parent
        while not p.exists() and p != p.parent:
            missing.append(p)
            p = p.parent
        for d in reversed(missing):
            try:
                os.mkdir(d)
            except FileExistsError:
                continue
            except OSError as exc:
                raise ValueError(f"output folder {str(self.dest)!r} cannot be written: {exc}") from None
            self.made.append(d)

    def _take(self) -> None:
        try:
            fd = os.open(self.lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            raise ValueError(self._held_message()) from None
        except OSError as exc:
            raise ValueError(f"output folder {str(self.dest)!r} cannot be claimed: {exc}") from None
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()}\n")
        self.held = True

    def _held_message(self) -> str:
        try:
            pid = int(self.lock.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pid = None
        where = f"output folder {str(self.dest)!r}"
        if pid is not None and pid_alive(pid):
            return (f"{where} is being written by another run (pid {pid}); wait for it to finish or choose "
                    "another folder")
        who = f"pid {pid} no longer runs" if pid is not None else "its lock names no process"
        return (f"{where} has a lock left by a run that was killed ({who}): nothing of it is complete; remove "
                f"{str(self.lock)!r} and any {str(self.dest.parent / ('.' + self.dest.name))}.*.partial folder, "
                "then start again")

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self.held:
            try:
                os.unlink(self.lock)
            except OSError:
                pass
            self.held = False
        if not self.dest.exists():
            self._remove_made()

    def _remove_made(self) -> None:
        for d in reversed(self.made):
            try:
                os.rmdir(d)   # only if still empty; another run's files keep it
            except OSError:
                break
        self.made = []


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs (on this machine); True when that cannot be told."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True   # exists, owned by someone else
    return True


# ------------------------------------------------------------------ arrays to files
def to_uint(img: np.ndarray, bits: int, rows: int = 512) -> np.ndarray:
    """Float [0, 1] array -> uint8/uint16 with round-half-up (float64 maths, in row chunks)."""
    scale = 255.0 if bits == 8 else 65535.0
    img = np.asarray(img)
    out = np.empty(img.shape, np.uint8 if bits == 8 else np.uint16)
    if img.size == 0:  # e.g. the fill of a scan with nothing to fill
        return out
    flat_in = img.reshape(img.shape[0], -1) if img.ndim >= 2 else img.reshape(1, -1)
    flat_out = out.reshape(flat_in.shape)
    for y in range(0, flat_in.shape[0], rows):
        flat_out[y:y + rows] = np.floor(np.clip(flat_in[y:y + rows].astype(np.float64), 0, 1) * scale + 0.5)
    return out


def write_png(out_dir: "str | os.PathLike", name: str, arr: np.ndarray, dpi: Optional[float] = None
              ) -> pathlib.Path:
    """Write a uint8/uint16 array as PNG (DPI in pHYs when given), atomically."""
    from PIL import Image
    arr = np.asarray(arr)
    if arr.dtype == np.uint16 and arr.ndim == 3:
        raise ValueError("16-bit colour goes to TIFF (write_tiff); PNG here is 8-bit or 16-bit gray")
    im = Image.fromarray(np.ascontiguousarray(arr))

    def w(f):
        im.save(f, format="PNG", **({"dpi": (dpi, dpi)} if dpi else {}))
    return atomic_write(out_dir, name, w)


def write_bytes(out_dir: "str | os.PathLike", name: str, data: "bytes | str") -> pathlib.Path:
    if isinstance(data, str):
        data = data.encode("utf-8")

    def w(path):
        with open(path, "wb") as f:
            f.write(data)
    return atomic_write(out_dir, name, w)


class Spool:
    """Compressed chunks appended to an unnamed temporary file in ``folder`` (same file system as the
    outputs; the file has no name, so nothing is left behind even if the process dies); read back in order."""

    def __init__(self, folder):
        self.f = tempfile.TemporaryFile(dir=folder)
        self.sizes = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()

    def add(self, data: bytes) -> None:
        if data:
            self.f.write(data)
            self.sizes.append(len(data))

    def chunks(self) -> Iterator[bytes]:
        self.f.seek(0)
        for n in self.sizes:
            yield self.f.read(n)

    @property
    def nbytes(self) -> int:
        return sum(self.sizes)


def tiff_writer(spool: Any, shape: Sequence[int], dtype: np.dtype, dpi: Optional[float], rows: int,
                description: Optional[str], extrasamples: Any = None, icc: Optional[bytes] = None
                ) -> Callable[[Any], None]:
    """``writer(path)`` assembling a zlib strip TIFF from the spooled, already compressed strips."""
    import tifffile
    kw = {}
    if extrasamples:
        kw["extrasamples"] = extrasamples
    if icc is not None:
        kw["iccprofile"] = icc

    def w(path):
        with tifffile.TiffWriter(path) as tw:
            tw.write(spool.chunks(), shape=shape, dtype=dtype, photometric="minisblack" if len(shape) == 2 else "rgb",
                     rowsperstrip=rows, compression="zlib", resolution=None if dpi is None else (float(dpi), float(dpi)),
                     resolutionunit=None if dpi is None else "INCH", metadata=None, description=description, **kw)
    return w


def write_tiff_rows(out_dir: "str | os.PathLike", name: str, rows_fn: Callable[[int, int], np.ndarray],
                    shape: Sequence[int], dtype: Any, dpi: Optional[float], description: Optional[str] = None,
                    icc: Optional[bytes] = None, rows: int = STRIP_ROWS) -> pathlib.Path:
    """Write a zlib-compressed strip TIFF from ``rows_fn(y0, y1)`` (uint8/uint16 arrays), atomically.

    Strips are compressed as they are produced and spooled to a temporary file, so memory holds one
    strip. ``shape`` is (H, W) or (H, W, C); C = 4 is RGBA (unassociated alpha). Returns the path.
    """
    with Spool(out_dir) as spool:
        for y0 in range(0, shape[0], rows):
            spool.add(zlib.compress(np.ascontiguousarray(rows_fn(y0, min(shape[0], y0 + rows)), dtype).tobytes(), 6))
        es = ["unassalpha"] if len(shape) == 3 and shape[2] == 4 else None
        return atomic_write(out_dir, name, tiff_writer(spool, tuple(shape), np.dtype(dtype), dpi, rows, description,
                                                       es, icc))


def write_tiff(out_dir: "str | os.PathLike", name: str, arr: np.ndarray, dpi: Optional[float],
               extra_meta: Optional[str] = None, icc: Optional[bytes] = None) -> pathlib.Path:
    """Write a uint8/uint16 (H, W[, C]) TIFF with the DPI tag (inch), zlib strips, atomically. C=4 is RGBA."""
    arr = np.asarray(arr)
    return write_tiff_rows(out_dir, name, lambda y0, y1: arr[y0:y1], arr.shape, arr.dtype, dpi,
                           description=extra_meta, icc=icc)
