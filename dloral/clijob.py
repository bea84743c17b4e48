"""The chunked run of the DLoRAL command line in pieces (``upscale --chunk N``): the chunk plan of the flags, the
job folder's manifest, writing one chunk's part, and the stitch of the parts into the output. The one-process
run (``cmd_upscale`` in ``dloral/__main__.py``) and the Ray driver and workers (``dloral/batch.py``:
``open_chunk_job`` and ``cmd_stitch`` in the driver, ``cmd_chunk`` in a worker) use the same pieces, so a chunk
gives the same part either way.
"""
import argparse
import os
import pathlib
from typing import Callable, Optional, Tuple

import torch

from .chunks import Chunk, ChunkPlan, upscale_chunk
from .cliargs import FrameRange, _frame_files, _link, _read_part_frame, _Staging, probe, read_range, \
    settings_from_args
from .job import Job, file_fingerprint, input_fingerprint, job_dir
from .settings import JOB_SETTINGS, SETTINGS, UpscaleSettings
from .video import ENCODERS, FRAME_FORMATS, VideoWriter, copy_audio, is_video_path, probe_video, resolve_format, \
    write_timecodes

def _job_manifest(a, settings, names, part_kind, digits):
    """What the parts of a chunked run depend on (``job.Job``): settings, prompt, chunk, the part frame
    format and fingerprints of the input, the DLoRAL weights and the checkpoint."""
    from dataclasses import asdict
    return {"settings": asdict(settings), "prompt": a.prompt, "chunk": a.chunk, "part_format": part_kind,
            "digits": digits, "input": input_fingerprint(a.input, names),
            "weights": file_fingerprint(a.weights, quick=True), "checkpoint": file_fingerprint(a.checkpoint, quick=True)}


def chunk_plan(a: argparse.Namespace, settings: UpscaleSettings) -> Optional[ChunkPlan]:
    """The chunk plan of ``--chunk`` (None for one pass); ValueError when a chunk would split a window."""
    return ChunkPlan(a.chunk, settings.window, (JOB_SETTINGS["chunk"].label, SETTINGS["window"].label)) \
        if a.chunk else None


def chunk_of(a: argparse.Namespace, index: int, last: bool) -> Chunk:
    """Chunk ``index`` of the plan of ``a``'s flags (``last``: the last planned one, which runs to the end of
    the clip): the chunk a worker runs (``cmd_chunk``) and whose frames the driver sends (:func:`chunk_frames`)."""
    plan = chunk_plan(a, settings_from_args(a))
    if plan is None:
        raise ValueError("a chunk needs --chunk")
    return plan.last(index) if last else plan[index]


def chunk_frames(a: argparse.Namespace, index: int, last: bool,
                 read: Callable[[str, int, int], FrameRange] = read_range) -> FrameRange:
    """In the driver, for a worker that does not see INPUT: the frames chunk ``index`` reads
    (:attr:`Chunk.reads`: its own and the carried previous frame), as data; ``read``: :func:`read_range`, or
    a ``RangeReader`` that reads a video's chunks in one pass."""
    return read(a.input, *chunk_of(a, index, last).reads)


def _digits(total):
    return max(5, len(str(total or 0)))


def _part_kind(a):
    """The frame format of the parts: the final file's quantisation (8-bit video: png; 10-bit: tiff16)."""
    if is_video_path(a.out):
        return "png" if ENCODERS[resolve_format(a.out, a.video_format)][3] == 8 else "tiff16"
    return a.frames


def _output(a, h, w, src):
    """``(staging, video)``: a VideoWriter (--out a video file) or a _Staging folder; nothing written yet
    (their checks run: an odd size for 4:2:0, a format the container refuses, an --out folder in use)."""
    if is_video_path(a.out):
        tb = src.time_base if src else 1 / a.fps
        return VideoWriter(a.out, 4 * w, 4 * h, tb, src.rate if src else a.fps, a.video_format,
                           audio_from=a.input if src else None), True
    return _Staging(a.out, a.overwrite), False


def _open_job(a, settings, src, total, kind):
    names = None if src else [f.name for f in _frame_files(pathlib.Path(a.input))]
    return Job.open(job_dir(a.out), _job_manifest(a, settings, names, kind, _digits(total)))


def _write_part(job, c, span, prev, models, cfg, kind, digits, times, first, write, progress=None):
    """Chunk ``c`` (its frames ``span``, the carried frame ``prev``) into its part of ``job``, each frame through
    ``write(frame, path, kind)``; ``times``: the frame times read so far, from clip index ``first`` on (None for
    a frame folder). Returns the frame count."""
    with job.part(c) as (folder, record):
        for k, f in enumerate(upscale_chunk(span, c, models, cfg, previous=prev)):
            write(f, folder / f"frame_{c.start + k:0{digits}d}{FRAME_FORMATS[kind]}", kind)
            record.append(times[c.start + k - first] if times is not None else None)
            if progress is not None:
                progress()
    return len(record)


def _stitch(a, job, staging, video, src):
    """The finished parts in order into the opened ``staging``; ``(frames, their times or None)``."""
    n = 0
    for n, (path, t) in enumerate(job.frames(), 1):
        if video:
            staging.write(_read_part_frame(path), t if src else (n - 1) / a.fps)
        else:
            _link(path, staging.dir / path.name)
    return n, ([t for _, t in job.frames()] if src else None)


def _finish(a, staging, video, src, n, times):
    """Inside the staging block: refuse an empty result; a frame folder gets the clip's timing and sound
    and is committed (a video is published when its block closes)."""
    if n == 0:
        raise ValueError(f"INPUT {a.input!r} gave no frames")
    if not video:
        if src and times is not None:   # a frame folder keeps the clip's timing and sound
            write_timecodes(staging.dir / "timecodes.txt", times)
            copy_audio(a.input, staging.dir / "audio.mka")
        staging.commit()


_WEIGHTS: dict = {}


def _weights_once(path):
    """The DLoRAL weights of ``path``, read once per process and file version (a Ray worker's chunks)."""
    from .checkpoint import load_weights
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if key not in _WEIGHTS:
        _WEIGHTS.clear()
        _WEIGHTS[key] = load_weights(path)
    return _WEIGHTS[key]


def open_chunk_job(a: argparse.Namespace) -> Tuple[Job, int, int, str]:
    """For a batch that spreads one clip's chunks over workers (``dloral/batch.py``, in the driver): what
    ``upscale`` checks before loading any model, then the clip's job folder opened (reopened: resume; other
    settings refused). Returns ``(job, chunks planned, digits, part kind)``; the chunk count comes from the
    frame count, which may be a container's estimate: the last chunk then runs to the end of the clip
    (``ChunkPlan.last``) and chunks past the end give no part (``cmd_chunk``)."""
    settings = settings_from_args(a)
    plan = chunk_plan(a, settings)
    if plan is None:
        raise ValueError("open_chunk_job needs --chunk")
    total, (h, w) = probe(a.input)
    if not total:
        raise ValueError(f"INPUT {a.input!r}: the frame count is unknown, so its chunks cannot be planned")
    src = probe_video(a.input) if os.path.isfile(a.input) else None
    _output(a, h, w, src)
    _weights_once(a.weights)
    if not os.path.isfile(a.checkpoint):
        raise ValueError(f"--checkpoint {a.checkpoint!r}: no such file")
    kind = _part_kind(a)
    return _open_job(a, settings, src, total, kind), plan.count(total), _digits(total), kind


def cmd_stitch(a: argparse.Namespace, job: Job) -> int:
    """The finished parts of ``job`` into ``a.out`` (staged, published whole), as ``upscale --chunk``
    ends; returns the frame count. Needs no model."""
    total, (h, w) = probe(a.input)
    src = probe_video(a.input) if os.path.isfile(a.input) else None
    staging, video = _output(a, h, w, src)
    with staging, torch.inference_mode():
        n, times = _stitch(a, job, staging, video, src)
        _finish(a, staging, video, src, n, times)
    return n
