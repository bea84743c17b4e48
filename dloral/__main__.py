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

    On Linux ``upscale`` starts itself again with ``THP_MEM_ALLOC_ENABLE=1`` unless that variable is set
    (``dloral.cpu.thp_env``: large CPU tensors on huge pages; 15 % faster on one AMD EPYC VM, 1-4 % on an
    Intel CPU: the gain depends on the CPU).
"""
import argparse
import os
import pathlib
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .checkpoint import DLoRALWeights
from .chunks import ChunkPastEnd, ChunkPlan, chunk_input, stream_chunks, upscale_chunk
from .cpu import THP_VAR, thp_env
from .job import Job, file_fingerprint, input_fingerprint, job_dir
from .pipeline import DLoRALModels
from .progress import RateEstimate, clock
from .settings import CONVERT_SETTINGS, JOB_SETTINGS, OUTPUT_SETTINGS, SETTINGS, UpscaleSettings
from .video import ENCODERS, FRAME_FORMATS, VideoWriter, copy_audio, is_video_path, iter_frames, probe_video, \
    resolve_format, save_frame, write_timecodes

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
QUALITY_PROMPT = "high quality, detailed, clean, natural, sharp"
FRAME_GLOBS = ("frame_*.png", "frame_*.tif")


def _frame_files(p):
    files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise ValueError(f"INPUT folder {str(p)!r} has no image files ({', '.join(IMAGE_EXTS)})")
    return files


def probe(path: Union[str, os.PathLike]) -> Tuple[Optional[int], Tuple[int, int]]:
    """``(frame_count or None, (H, W))`` of INPUT without decoding it all; raises ValueError naming the
    problem: no frames, an unreadable frame, frames of different sizes, frames below the minimum size.

    A folder is checked from the image headers of every file; a video from its first frame (every frame
    of a decoded stream has the same size); its frame count is the container's count or estimate.
    """
    from PIL import Image
    from .pipeline import MIN_SIDE
    p = pathlib.Path(path)
    size: Optional[Tuple[int, int]] = None
    count: Optional[int]
    if p.is_dir():
        files = _frame_files(p)
        for f in files:
            try:
                with Image.open(f) as im:
                    hw = (im.size[1], im.size[0])
            except Exception as exc:
                raise ValueError(f"cannot read frame {str(f)!r}: {exc}") from None
            if size is None:
                size, first = hw, f
            elif hw != size:
                raise ValueError(f"frame {f.name!r} is {hw[0]}x{hw[1]} but {first.name!r} is {size[0]}x{size[1]}: "
                                 "all frames of a video must have the same size")
        count = len(files)
    elif p.is_file():
        info = probe_video(p)
        size, count = (info.height, info.width), info.frame_count
    else:
        raise ValueError(f"INPUT {str(p)!r} is neither a folder of frames nor a video file")
    assert size is not None
    if min(size) < MIN_SIDE:
        raise ValueError(f"INPUT frames are {size[0]}x{size[1]} px; DLoRAL needs at least {MIN_SIDE}x{MIN_SIDE}")
    return count, (int(size[0]), int(size[1]))


def _frames(path, times=None, start=0):
    """Yield (3, H, W) float frames in [0, 1] from a folder of images or a video file, from frame ``start``
    on (a video decodes the frames before, a folder skips their files); a video's frame times (seconds)
    are appended to ``times`` as the frames are yielded."""
    import cv2
    p = pathlib.Path(path)
    if p.is_dir():
        for f in _frame_files(p)[start:]:
            img = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if img is None:
                raise ValueError(f"cannot read frame {f}")
            yield torch.from_numpy(img[..., ::-1].copy()).permute(2, 0, 1).float() / 255
        return
    if not p.is_file():
        raise ValueError(f"INPUT {path!r} is neither a folder of frames nor a video file")
    for f in iter_frames(p, start):
        if times is not None:
            times.append(f.time)
        yield f.image.permute(2, 0, 1)


def _save(frame, path):
    import cv2
    arr = (frame.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    if not cv2.imwrite(str(path), arr[..., ::-1]):
        raise ValueError(f"cannot write {str(path)!r}")


class _Staging:
    """Frames go to a hidden folder next to ``out``; ``commit`` moves them into ``out`` (replacing
    old ``frame_*.png`` only then), leaving the context without commit removes them."""

    def __init__(self, out, overwrite):
        self.out = pathlib.Path(out)
        if self.out.exists() and not self.out.is_dir():
            raise ValueError(f"--out {str(self.out)!r} exists and is not a folder")
        old = sorted(f for g in FRAME_GLOBS for f in self.out.glob(g)) if self.out.is_dir() else []
        if old and not overwrite:
            raise ValueError(f"--out {str(self.out)!r} already holds {len(old)} frame files ({old[0].name}, ...); "
                             "choose another folder or pass --overwrite")
        self.dir = None

    def __enter__(self):
        parent = self.out.resolve().parent
        parent.mkdir(parents=True, exist_ok=True)
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix=f".{self.out.name}.dloral-staging-", dir=parent))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.dir, 0o777 & ~umask)     # mkdtemp makes it 0700; it may become DIR itself
        return self

    def commit(self):
        assert self.dir is not None, "commit twice"
        if not self.out.exists():
            os.replace(self.dir, self.out)     # one rename: DIR appears complete
        else:
            for f in [f for g in FRAME_GLOBS for f in self.out.glob(g)]:
                f.unlink()
            for f in sorted(self.dir.iterdir()):
                os.replace(f, self.out / f.name)
            self.dir.rmdir()
        self.dir = None

    def __exit__(self, *exc):
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
        return False


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


@dataclass(frozen=True)
class LoadRequest:
    """What a model loader gets: the host tree, the SD2.1 checkpoint, the prompt, the DLoRAL weights
    and the checked settings (``sample_posterior`` and ``precision`` shape the models)."""
    comfyui: Optional[str]
    checkpoint: str
    prompt: str
    weights: DLoRALWeights
    settings: UpscaleSettings


#: ``loader(request) -> DLoRALModels``: loads the SD2.1 UNet, VAE and text encoder and adapts them.
ModelLoader = Callable[[LoadRequest], DLoRALModels]

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


def settings_from_args(a: argparse.Namespace) -> UpscaleSettings:
    """The checked settings of ``upscale`` (ValueError naming the flag)."""
    return UpscaleSettings(**{name: getattr(a, name) for name in SETTINGS})


def _write_frame(f, path, kind):
    """One (3, H, W) frame in [0, 1] as ``kind`` (png: the CLI's own 8-bit writer; tiff16)."""
    if kind == "png":
        _save(f, path)
    else:
        save_frame(f.permute(1, 2, 0), path, kind)


def _read_part_frame(path):
    """A part frame back as (H, W, 3) float32 in [0, 1]: the integers it holds, at their bit depth."""
    if path.suffix == ".png":
        from PIL import Image
        with Image.open(path) as im:
            return torch.from_numpy(np.array(im.convert("RGB"))).float() / 255
    import tifffile
    return torch.from_numpy(tifffile.imread(str(path)).astype(np.float32)) / 65535


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


def _write_part(job, c, span, prev, models, cfg, kind, digits, times, first, progress=None):
    """Chunk ``c`` (its frames ``span``, the carried frame ``prev``) into its part of ``job``; ``times``: the
    frame times read so far, from clip index ``first`` on (None for a frame folder). Returns the frame count."""
    with job.part(c) as (folder, record):
        for k, f in enumerate(upscale_chunk(span, c, models, cfg, previous=prev)):
            _write_frame(f, folder / f"frame_{c.start + k:0{digits}d}{FRAME_FORMATS[kind]}", kind)
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


def cmd_chunk(a: argparse.Namespace, loader: ModelLoader, index: int, last: bool, digits: int,
              kind: str) -> dict:
    """One chunk of ``a.input`` into its part of the job folder of ``a.out`` (opened by the driver,
    ``open_chunk_job``): the clip read from the chunk's carried frame on (``chunk_input``), the frames
    ``upscale_chunk`` gives, as in a one-process ``--chunk`` run. ``last``: the last planned chunk (runs
    to the end). Returns ``{"status": "done" | "done earlier" | "empty", "frames": n}``: a part already
    finished (a retry after its worker was lost) is not made again; a chunk past the end has no part."""
    settings = settings_from_args(a)
    plan = chunk_plan(a, settings)
    assert plan is not None
    c = plan.last(index) if last else plan[index]
    job = Job(job_dir(a.out), {})
    meta = job.part_dir(index) / "part.json"
    if meta.exists():
        import json
        return {"status": "done earlier", "frames": json.loads(meta.read_text())["frames"]}
    models = loader(LoadRequest(a.comfyui, a.checkpoint, a.prompt, _weights_once(a.weights), settings))
    times: Optional[List[Any]] = [] if os.path.isfile(a.input) else None
    try:
        prev, span = chunk_input(_frames(a.input, times, start=c.read_from), c, first=c.read_from)
    except ChunkPastEnd:
        return {"status": "empty", "frames": 0}
    head = next(span, None)
    if head is None:   # the clip ends where this chunk starts
        return {"status": "empty", "frames": 0}
    from itertools import chain
    with torch.inference_mode():
        n = _write_part(job, c, chain([head], span), prev, models, settings.config(), kind, digits, times,
                        c.read_from)
    return {"status": "done" if job.placed.get(index) else "done earlier", "frames": n}


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
                        _write_part(job, c, span, prev, models, cfg, kind, digits, times, 0, progress)
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


def _link(src, dst):
    """``dst`` a hard link to ``src`` (a copy across file systems): the part stays whole until the end."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _fps(text):
    try:
        v = Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a frame rate (e.g. 25 or 24000/1001)") from None
    if not 0 < v <= 1000:
        raise argparse.ArgumentTypeError(f"{text}: a frame rate must be in (0, 1000]")
    return v


def main(argv: Optional[Sequence[str]] = None, loader: Optional[ModelLoader] = None,
         prog: str = "python -m dloral") -> int:
    """Run the command line; ``loader`` loads the SD2.1 models for ``upscale`` (without one, ``upscale``
    stops with ``NO_LOADER``); ``prog`` names the command in the usage line. Returns the exit status
    (2 for a bad input, with the message on stderr)."""
    p = argparse.ArgumentParser(prog=prog, description="DLoRAL one-step video super-resolution ×4")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("convert", help="convert the official model.pkl to a small safetensors file")
    c.add_argument("pkl")
    c.add_argument("--out", required=True)
    CONVERT_SETTINGS.add_arguments(c)
    c.add_argument("--base", default=None,
                   help="the SD2.1-base checkpoint (.safetensors or .ckpt): base tensors the DLoRAL checkpoint "
                        "changed are then kept in the converted file (without it: conv_in only)")
    c.set_defaults(fn=cmd_convert)
    u = sub.add_parser("upscale", help="upscale a folder of frames or a video file ×4")
    u.add_argument("input", nargs="+", help="a video file or a folder of frames; several, a folder of videos, a glob or "
                   "@list.txt upscale each into --out DIR (dloral/batch.py)")
    u.add_argument("--out", required=True, help="output video file (.mp4, .mov, .mkv; an existing one is kept and "
                   "a numbered name used) or folder for frame_00000.png ...")
    u.add_argument("--weights", required=True, help="converted .safetensors or the official model.pkl")
    u.add_argument("--checkpoint", required=True, help="SD2.1-base checkpoint (UNet + VAE + text encoder)")
    u.add_argument("--comfyui", default=os.environ.get("COMFYUI_DIR"),
                   help="ComfyUI tree (default $COMFYUI_DIR; without it the host entry point tries ~/ComfyUI)")
    u.add_argument("--prompt", default=QUALITY_PROMPT)
    SETTINGS.add_arguments(u)
    OUTPUT_SETTINGS.add_arguments(u)
    JOB_SETTINGS.add_arguments(u)
    u.add_argument("--fps", type=_fps, default=Fraction(24),
                   help="frame rate of a video written from a folder of frames (e.g. 25 or 24000/1001; default 24)")
    u.add_argument("--overwrite", action="store_true",
                   help="replace the frame files already in an --out folder (only once the new set is complete); "
                        "a video file is never replaced (the new one gets a numbered name)")
    u.add_argument("--quiet", action="store_true", help="no progress on stderr")
    from .batch import add_arguments as add_batch_arguments
    add_batch_arguments(u)
    u.set_defaults(fn=cmd_upscale)
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
                                                cmd_stitch))
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
