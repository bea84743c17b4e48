"""A resumable chunked run on disk: a job folder of finished parts, a manifest, and the stitch.

The job folder ``.NAME.dloral-job`` sits beside the output ``NAME`` (a video file or a frames folder) and holds

- ``manifest.json``: what the parts depend on: the settings (``UpscaleSettings``, prompt, chunk size, the
  part frame format), fingerprints of the input (its whole content), of the DLoRAL weights and of the SD2.1
  checkpoint (size and the first and last 4 MiB: a full hash of 5 GB would cost each run seconds);
- ``part_00003/``: the finished chunk 3, its frames (``frame_<clip index>.png|.tif``, the final file's
  quantisation: a part frame read back gives the encoder the same integers as a one-pass run) and
  ``part.json`` (frame count, frame times). A part is written in a hidden ``.part_00003.*`` folder and
  renamed when complete, so a part folder exists only whole; a killed run leaves at most a hidden
  folder, removed when the job is opened again.

Opening an existing job (:meth:`Job.open`) with a different manifest is refused, naming every field
that differs and the folder to remove to start again: parts made with other settings are never mixed.
:meth:`Job.frames` walks the finished parts in order for the stitch; after a complete stitch the
caller removes the folder (:meth:`Job.remove`).
"""
import hashlib
import json
import os
import pathlib
import shutil
import tempfile
from contextlib import contextmanager
from fractions import Fraction
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

#: A path as the functions here take it.
PathArg = Union[str, "os.PathLike[str]"]

from .chunks import Chunk

try:
    from ..atelier_ray import write_tree  # type: ignore[import-not-found]
except ImportError:  # the core imported as a top-level package (tests, ``python -m dloral``)
    from atelier_ray import write_tree

__all__ = ["JOB_FORMAT", "job_dir", "file_fingerprint", "input_fingerprint", "Job"]

JOB_FORMAT = "atelier-dloral-job/1"
_QUICK = 4 << 20


def job_dir(out: PathArg) -> pathlib.Path:
    """The job folder of the output ``out``: ``.NAME.dloral-job`` beside it."""
    out = pathlib.Path(out).absolute()
    return out.parent / f".{out.name}.dloral-job"


def _hash_file(h, path, quick: bool) -> None:
    size = os.path.getsize(path)
    h.update(f"{size}:".encode())
    with open(path, "rb") as f:
        if quick and size > 2 * _QUICK:
            h.update(f.read(_QUICK))
            f.seek(size - _QUICK)
            h.update(f.read(_QUICK))
            return
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)


def file_fingerprint(path: PathArg, quick: bool = False) -> str:
    """sha256 of a file's size and content (``quick``: only its first and last 4 MiB)."""
    h = hashlib.sha256()
    _hash_file(h, path, quick)
    return h.hexdigest()


def input_fingerprint(path: PathArg, names: Optional[List[str]] = None) -> str:
    """sha256 of an input: a video file's whole content, or a frames folder's file names (``names``: the
    frame files the run reads, in order) and contents."""
    p = pathlib.Path(path)
    if p.is_file():
        return file_fingerprint(p)
    h = hashlib.sha256()
    for name in names if names is not None else sorted(f.name for f in p.iterdir() if f.is_file()):
        h.update(name.encode() + b"\0")
        _hash_file(h, p / name, False)
    return h.hexdigest()


def _write_json(path: pathlib.Path, data) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


class Job:
    """A job folder (see the module docstring). ``manifest``: a JSON-able dict of what the parts depend on."""

    def __init__(self, folder: PathArg, manifest: Dict) -> None:
        self.folder, self.manifest = pathlib.Path(folder), dict(manifest, format=JOB_FORMAT)
        #: chunk index -> whether :meth:`part` published it (False: another attempt's part was there first)
        self.placed: Dict[int, bool] = {}

    @classmethod
    def open(cls, folder: PathArg, manifest: Dict) -> "Job":
        """Create the folder, or reopen it when its manifest is the same (stale hidden part folders of a
        killed run are removed); ValueError naming the fields that differ otherwise."""
        job = cls(folder, manifest)
        mf = job.folder / "manifest.json"
        if job.folder.exists():
            try:
                old = json.loads(mf.read_text())
            except (OSError, ValueError) as exc:
                raise ValueError(f"job folder {str(job.folder)!r} has no readable manifest ({exc}); remove it to "
                                 "start again") from None
            diff = sorted(k for k in set(old) | set(job.manifest) if old.get(k) != job.manifest.get(k))
            if diff:
                said = "; ".join(f"{k}: {_short(old.get(k))} then, {_short(job.manifest.get(k))} now" for k in diff)
                raise ValueError(f"job folder {str(job.folder)!r} holds {len(job.finished())} finished chunks made "
                                 f"with other settings or inputs ({said}); rerun with the same ones to resume, or "
                                 "remove that folder to start again")
            for stale in job.folder.glob(".part_*"):
                shutil.rmtree(stale, ignore_errors=True)
        else:
            job.folder.mkdir(parents=True)
            _write_json(mf, job.manifest)
        return job

    def part_dir(self, index: int) -> pathlib.Path:
        return self.folder / f"part_{index:05d}"

    def finished(self) -> Dict[int, Dict]:
        """index -> ``part.json`` of every finished part."""
        out = {}
        for d in self.folder.glob("part_*"):
            try:
                out[int(d.name[5:])] = json.loads((d / "part.json").read_text())
            except (OSError, ValueError):
                continue
        return out

    @contextmanager
    def part(self, chunk: Chunk) -> Iterator[Tuple[pathlib.Path, List[Any]]]:
        """``with job.part(chunk) as (folder, record):`` write the chunk's frames into ``folder`` and append
        each frame's time (a Fraction, or None) to ``record``; on a clean exit the part is published whole,
        on an exception (Ctrl-C included) it is removed. When the part is already there (another attempt
        at the same chunk, a Ray worker declared lost that still finished, published first) this one is
        dropped and that one kept: ``placed[chunk.index]`` says which happened. Never written twice."""
        tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".part_{chunk.index:05d}.", dir=self.folder))
        record: List = []
        try:
            yield tmp, record
            if not record:
                raise ValueError(f"chunk {chunk.index} (frames {chunk.start}..) gave no frames")
            times = None if record[0] is None else [str(Fraction(t)) for t in record]
            _write_json(tmp / "part.json", {"index": chunk.index, "start": chunk.start, "frames": len(record),
                                            "times": times})
            try:
                os.replace(tmp, self.part_dir(chunk.index))   # fails onto a part folder (never empty)
                self.placed[chunk.index] = True
            except OSError:
                if not (self.part_dir(chunk.index) / "part.json").exists():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
                self.placed[chunk.index] = False
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def publish(self, index: int, files: Dict[str, bytes]) -> bool:
        """A part made elsewhere (a Ray worker that does not see this folder: the part folder's files, path ->
        bytes, ``part.json`` included) published as :meth:`part` publishes one: whole, never over a finished
        part (that one is kept). True when this one was placed; ``placed[index]`` likewise."""
        tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".part_{index:05d}.", dir=self.folder))
        try:
            write_tree(tmp, files)
            try:
                os.replace(tmp, self.part_dir(index))   # fails onto a part folder (never empty)
                self.placed[index] = True
            except OSError:
                if not (self.part_dir(index) / "part.json").exists():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
                self.placed[index] = False
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return self.placed[index]

    def frames(self) -> Iterator[Tuple[pathlib.Path, Optional[Fraction]]]:
        """(frame file, time) of every finished part in clip order; ValueError when a part is missing or a
        part before the last is short (the job is then not complete)."""
        done = self.finished()
        n = len(done)
        if sorted(done) != list(range(n)):
            raise ValueError(f"job folder {str(self.folder)!r}: chunks {sorted(set(range(max(done, default=-1) + 1)) - set(done))} "
                             "are missing")
        for i in range(n):
            meta = done[i]
            if i < n - 1 and meta["frames"] != self.manifest["chunk"]:
                raise ValueError(f"job folder {str(self.folder)!r}: chunk {i} has {meta['frames']} frames, "
                                 f"not {self.manifest['chunk']}")
            files = sorted(f for f in self.part_dir(i).iterdir() if f.name.startswith("frame_"))
            times = meta["times"] or [None] * len(files)
            yield from zip(files, (None if t is None else Fraction(t) for t in times))

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _short(v) -> str:
    s = json.dumps(v, sort_keys=True)
    return s if len(s) <= 60 else s[:28] + "..." + s[-28:]
