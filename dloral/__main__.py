"""Command line: ``python -m dloral convert|upscale ...`` (run from the repo root).

convert  model.pkl --out dloral.safetensors [--precision fp32|fp16] [--base SD21]
    Open the official checkpoint safely (weights_only) and write the small converted file, with a
    fingerprint of the checkpoint's base UNet tensors (checked against the user's SD2.1 when upscaling);
    with ``--base`` every base tensor the checkpoint changed is kept (conv_in always is).

upscale  INPUT --out DIR|FILE.mp4|.mov|.mkv --weights W --checkpoint SD21 --comfyui COMFYUI_DIR [options]
    INPUT is a folder of frames (sorted by name) or a video file (PyAV, ``dloral.video``). Frames are
    read, upscaled ×4 and written one window at a time, so long videos run in bounded memory: into a
    video file (``--video-format``: 8-bit H.264, 10-bit H.265 or ProRes; each frame keeps its input
    timestamp, variable rate included; the input's audio stream copied untouched where the container
    allows, else re-encoded to AAC; ``--fps`` for a folder input; an existing file is never
    overwritten: a numbered name) or as DIR/frame_00000.png ... (``--frames png|tiff16``; from a video,
    with ``timecodes.txt`` and the audio stream untouched in ``audio.mka``). The settings (flags named after the node's inputs, same defaults and bounds: the table
    ``settings.SETTINGS``) are checked by ``settings.UpscaleSettings``, the constructor the node uses too.
    The SD2.1-base UNet, VAE and text encoder are loaded from the checkpoint by a ComfyUI tree
    (``--comfyui``) through a *loader* (``ModelLoader``) that the caller passes: ``main(argv, loader=...)``.
    No module of this package imports the host, the pack's nodes or anything outside the package, so
    ``python -m dloral`` has no loader and runs ``convert`` only; ``upscale`` there stops with one line
    naming the pack's host entry point (``HOST_ENTRY_POINT``, README "DLoRAL"), which passes the loader
    built on the host. Tests pass stand-in models.

    Batch safety: the settings, INPUT (frame count, one size for all frames, the minimum size) and
    the DLoRAL weights are checked before any model is loaded. Frames are written into a hidden staging folder
    next to DIR and moved into DIR only when every frame is done; on an error or Ctrl-C the staging
    folder is removed, so DIR never holds a partial frame set. A DIR that already holds frames is
    refused unless ``--overwrite`` (then the old frames are replaced only after a complete run).
    Progress (frame i/N, s/frame, ETA) goes to stderr; the rate counts frames finished after the first
    window, not the start-up (``progress.RateEstimate``).

    ``--chunk N`` (``settings.JOB_SETTINGS``): chunks of N frames (whole windows, ``dloral.chunks``), each
    written whole as a part of a job folder beside --out (``dloral.job``); the parts are stitched into --out
    at the end and the folder removed. After an error, Ctrl-C or a kill, the same command skips the finished
    chunks; other settings or another input are refused, naming what differs. The frames are the one-pass
    frames bit for bit on a CPU.

    With several inputs, a folder of videos, a glob, ``@list.txt`` or ``--ray``: a batch (``dloral/batch.py``),
    where ``--chunk`` makes each chunk a unit of work for the Ray workers.

    The parser, the settings of the flags and reading INPUT are ``dloral/cliargs.py``'s; the pieces of a chunked
    run (plan, manifest, part, stitch), shared with the Ray workers, are ``dloral/clijob.py``'s.

    On Linux ``upscale`` starts itself again with ``THP_MEM_ALLOC_ENABLE=1`` unless that variable is set
    (``dloral.cpu.thp_env``: large CPU tensors on huge pages; 15 % faster on one AMD EPYC VM, 1-4 % on an
    Intel CPU: the gain depends on the CPU).
"""
import argparse
import os
import sys
import time
from typing import Any, List, Optional, Sequence

import numpy as np
import torch

from .chunks import ChunkPastEnd, chunk_input, stream_chunks
from .cliargs import FRAME_GLOBS, IMAGE_EXTS, QUALITY_PROMPT, FrameRange, LoadRequest, ModelLoader, _fps, \
    _frame_files, _frames, _link, _read_part_frame, _Staging, build_parser, probe, settings_from_args  # noqa: F401 - the CLI's names
from .clijob import _digits, _finish, _open_job, _output, _part_kind, _stitch, _weights_once, _write_part, \
    chunk_frames, chunk_of, chunk_plan, cmd_stitch, open_chunk_job
from .cpu import THP_VAR, thp_env
from .job import Job, job_dir
from .progress import RateEstimate, clock
from .video import FRAME_FORMATS, probe_video, save_frame


def _save(frame, path):
    import cv2
    arr = (frame.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    if not cv2.imwrite(str(path), arr[..., ::-1]):
        raise ValueError(f"cannot write {str(path)!r}")


class _Progress:
    """``frame i/N  s/frame  ETA`` on stderr: one updating line on a terminal, a line per frame otherwise.
    The rate is ``progress.RateEstimate``'s (frames finished after the first window, not the start-up)."""

    def __init__(self, total, window, quiet=False):
        self.total, self.quiet, self.t0, self.n = total, quiet, time.time(), 0
        self.rate = RateEstimate(window, total)
        self.tty = sys.stderr.isatty()

    def __call__(self):
        self.n += 1
        now = time.time()
        spf, left = self.rate.update(self.n, now - self.t0)
        if self.quiet:
            return
        msg = f"frame {self.n}/{self.total or '?'}  "
        msg += f"{spf:.2f} s/frame" if spf is not None else f"{clock(now - self.t0)} elapsed (first window)"
        if left is not None:
            msg += f"  ETA {clock(left)}"
        print(("\r" + msg) if self.tty else msg, end="" if self.tty else "\n", file=sys.stderr, flush=True)

    def done(self):
        if self.tty and not self.quiet:
            print(file=sys.stderr)
        return (time.time() - self.t0) / max(self.n, 1)


#: Named by ``python -m dloral upscale``, which has no loader: the entry point that passes the host's.
HOST_ENTRY_POINT = "dloral_cli.py in the pack's scripts folder"
NO_LOADER = ("error: `python -m dloral upscale` cannot load the SD2.1 models (ComfyUI loads them): run the same "
             f"arguments through the host entry point, {HOST_ENTRY_POINT} (README, 'DLoRAL')")


def cmd_convert(a: argparse.Namespace, loader: Optional[ModelLoader] = None) -> None:
    from .checkpoint import STORAGE_DTYPES, convert_file
    t = time.time()
    w = convert_file(a.pkl, a.out, dtype=STORAGE_DTYPES[a.precision], base=a.base)
    kept = f" + {len(w.base)} changed base tensors" if w.base else ""
    print(f"wrote {a.out}: {len(w.modules())} LoRA modules + conv_in{kept} + CFR, fingerprint of "
          f"{len(w.fingerprint)} base tensors ({os.path.getsize(a.out) / 2**20:.1f} MiB) in {time.time() - t:.1f} s")


def _write_frame(f, path, kind):
    """One (3, H, W) frame in [0, 1] as ``kind`` (png: the CLI's own 8-bit writer; tiff16)."""
    if kind == "png":
        _save(f, path)
    else:
        save_frame(f.permute(1, 2, 0), path, kind)


def cmd_chunk(a: argparse.Namespace, loader: ModelLoader, index: int, last: bool, digits: int,
              kind: str, frames: Optional[FrameRange] = None) -> dict:
    """One chunk of ``a.input`` into its part of the job folder of ``a.out`` (opened by the driver,
    ``open_chunk_job``): the clip read from the chunk's carried frame on (``chunk_input``), the frames
    ``upscale_chunk`` gives, as in a one-process ``--chunk`` run. ``last``: the last planned chunk (runs
    to the end). ``frames``: the frames the chunk reads (``chunk_frames``), sent by a driver whose INPUT this
    worker does not see; read in place of ``a.input``. Returns ``{"status": "done" | "done earlier" | "empty",
    "frames": n}``: a part already finished (a retry after its worker was lost) is not made again; a chunk past
    the end has no part."""
    settings = settings_from_args(a)
    c = chunk_of(a, index, last)
    job = Job(job_dir(a.out), {})
    meta = job.part_dir(index) / "part.json"
    if meta.exists():
        import json
        return {"status": "done earlier", "frames": json.loads(meta.read_text())["frames"]}
    models = loader(LoadRequest(a.comfyui, a.checkpoint, a.prompt, _weights_once(a.weights), settings))
    src: Any = a.input if frames is None else frames
    video = os.path.isfile(a.input) if frames is None else frames.times is not None
    times: Optional[List[Any]] = [] if video else None
    try:
        prev, span = chunk_input(_frames(src, times, start=c.read_from), c, first=c.read_from)
    except ChunkPastEnd:
        return {"status": "empty", "frames": 0}
    head = next(span, None)
    if head is None:   # the clip ends where this chunk starts
        return {"status": "empty", "frames": 0}
    from itertools import chain
    with torch.inference_mode():
        n = _write_part(job, c, chain([head], span), prev, models, settings.config(), kind, digits, times,
                        c.read_from, _write_frame)
    return {"status": "done" if job.placed.get(index) else "done earlier", "frames": n}


def cmd_upscale(a: argparse.Namespace, loader: ModelLoader) -> None:
    from .checkpoint import load_weights
    from .pipeline import upscale_video
    settings = settings_from_args(a)
    cfg = settings.config()
    plan = chunk_plan(a, settings)
    # everything that can be checked without the SD2.1 models fails here, before minutes of loading
    total, (h, w) = probe(a.input)
    src = probe_video(a.input) if os.path.isfile(a.input) else None
    staging: Any   # a VideoWriter (--out a video file) or a _Staging folder
    staging, video = _output(a, h, w, src)
    weights = load_weights(a.weights)
    if not os.path.isfile(a.checkpoint):
        raise ValueError(f"--checkpoint {a.checkpoint!r}: no such file")
    digits = _digits(total)
    kind = _part_kind(a)
    job = _open_job(a, settings, src, total, kind) if plan else None   # finished chunks are not redone
    models = loader(LoadRequest(a.comfyui, a.checkpoint, a.prompt, weights, settings))
    done = job.finished() if job else {}
    skipped = sum(m["frames"] for m in done.values())
    if not a.quiet:
        pages = f", {THP_VAR}={os.environ.get(THP_VAR, 'unset')}" if models.device.type == "cpu" else ""
        resume = (f"; resuming: {len(done)} chunks ({skipped} frames) already done in {job.folder}"
                  if done and job is not None else "")
        print(f"{a.input}: {total or '?'} frames {w}x{h} -> {4 * w}x{4 * h} "
              f"({models.device}, {str(models.dtype).replace('torch.', '')}{pages}){resume}", file=sys.stderr)
    progress = _Progress(total - skipped if total else None, settings.window, a.quiet)
    times: Optional[List[Any]] = [] if src else None
    frames = _frames(a.input, times)
    n = 0
    try:
        if job is not None and plan is not None:
            with torch.inference_mode():
                for c, prev, span in stream_chunks(frames, plan):
                    if c.index not in done:
                        _write_part(job, c, span, prev, models, cfg, kind, digits, times, 0, _write_frame, progress)
            del models
        with staging, torch.inference_mode():
            if job is not None:   # the stitch: the parts in order
                n, times = _stitch(a, job, staging, video, src)
            else:
                for n, f in enumerate(upscale_video(frames, models, cfg), 1):
                    if video:
                        staging.write(f.permute(1, 2, 0), times[n - 1] if times is not None else (n - 1) / a.fps)
                    else:
                        _write_frame(f, staging.dir / f"frame_{n - 1:0{digits}d}{FRAME_FORMATS[kind]}", kind)
                    progress()
            _finish(a, staging, video, src, n, times)
    except BaseException:
        if job is not None and job.folder.exists():
            print(f"\n{len(job.finished())} finished chunks kept in {job.folder}: the same command resumes there",
                  file=sys.stderr)
        raise
    if job is not None:
        job.remove()
    spf = progress.done()
    dest = staging.path if video else a.out
    audio = f", {staging.format} {staging.bits}-bit, audio {staging.audio_mode or 'none'}" if video else ""
    print(f"wrote {n} frames to {dest} ({spf:.2f} s/frame{audio})")


def main(argv: Optional[Sequence[str]] = None, loader: Optional[ModelLoader] = None,
         prog: str = "python -m dloral") -> int:
    """Run the command line; ``loader`` loads the SD2.1 models for ``upscale`` (without one, ``upscale``
    stops with ``NO_LOADER``); ``prog`` names the command in the usage line. Returns the exit status
    (2 for a bad input, with the message on stderr)."""
    p = build_parser(prog, cmd_convert, cmd_upscale)
    try:
        a = p.parse_args(argv)
    except SystemExit as exc:   # a flag refused by its record (or --help): the status argparse chose
        return exc.code if isinstance(exc.code, int) else 2
    if a.cmd == "upscale" and loader is None:
        print(NO_LOADER, file=sys.stderr)
        return 2
    try:
        from .batch import Single, batch_main, is_batch
        if a.cmd == "upscale" and loader is not None and is_batch(a):
            return batch_main(a, loader, Single(settings_from_args, probe, cmd_upscale, open_chunk_job, cmd_chunk,
                                                cmd_stitch, chunk_frames))
        if a.cmd == "upscale":
            a.input = a.input[0]
        a.fn(a, loader)
    except ValueError as exc:
        print(("\n" if sys.stderr.isatty() else "") + f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: nothing was written to --out", file=sys.stderr)
        return 130
    return 0


def run(loader: Optional[ModelLoader] = None, restart: Optional[List[str]] = None,
        prog: str = "python -m dloral") -> int:
    """A process's entry: ``main(sys.argv[1:], loader, prog)``, where ``upscale`` with a loader first starts
    the process again with large pages on Linux (``dloral.cpu.thp_env``; PyTorch reads the variable at start)
    through ``restart``, the command that starts this entry point (``[python, script]``)."""
    argv = sys.argv[1:]
    pages = thp_env() if loader is not None and restart and argv[:1] == ["upscale"] else None
    if pages and restart:
        os.execve(restart[0], [*restart, *argv], {**os.environ, **pages})
    return main(argv, loader, prog)


if __name__ == "__main__":
    sys.exit(run())
