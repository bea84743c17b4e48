"""Many clips in one run: ``upscale INPUT... --out DIR [--ray [ADDRESS]]`` (DLoRAL CLI, ``dloral/__main__.py``).

INPUTs are video files, frame folders, folders of videos, globs or ``@list.txt`` (:func:`atelier_ray.expand_inputs`;
a folder holding video files gives its videos, any other folder is one clip of frames). Each clip is upscaled as
``upscale CLIP --out DIR/NAME`` would be (every single-clip flag applies to each), NAME the clip's stem plus
``--batch-ext``: ``same`` (the input's container where the CLI writes it, .mp4/.mkv/.mov; else .mkv; a frame
folder in, a frame folder out), ``mp4``, ``mkv``, ``mov`` or ``frames`` (a folder of frames). Two inputs of one
stem get ``-`` and 6 hex digits of their path's hash.

Nothing is written over, nothing twice: an output already in place (a video is renamed into place only when
complete, a frame folder likewise) is kept and listed ``done earlier``, so a rerun of an interrupted batch does
only what is missing; partial files of a lost worker are removed at the end. One JSON summary on stdout (per
clip: output, frames, or the reason it failed; exit status 1 when one failed), one progress line for the job
on stderr (clips done, frames per second, ETA by frames).

With ``--ray`` the clips are spread over Ray actors (one per GPU, else per ``--ray-cpus`` CPUs;
:func:`atelier_ray.run_batch`); each actor loads the models once (the loader's first call is kept) and takes
the next unit of work when free; a lost worker's unit is run again on another actor. No file system needs to
be shared with the workers: each actor checks as it starts whether it sees the inputs and ``--out`` as the
driver does (``must_see``). One that does reads and writes the driver's paths (a shared file system, or Ray on
this machine); to one that does not the driver sends what the unit reads (:class:`Shipped`: a whole clip's video
file or frame folder; for a chunk only the frames it reads, ``Chunk.reads``, or the video file where that weighs
less) and the worker returns the output (a clip's file or frame folder, or a chunk's part), which the driver
writes as a worker would (:func:`land_clip`: under a name of its own, placed where nothing is; a part published
whole, never over one), once. The model files (``--weights``,
``--checkpoint``, the ComfyUI tree) are read by each worker at the driver's paths: every machine holds them.

With ``--chunk N`` the unit is a **chunk**, not a clip: each clip whose frame count is known is cut by the one
chunk rule (:class:`dloral.chunks.ChunkPlan`) and its chunks are spread over the workers like clips. The
driver opens the clip's job folder (``.NAME.dloral-job`` beside its output, :mod:`dloral.job`: the same
manifest checks as ``upscale --chunk``); each chunk is run on its own by a worker (``cmd_chunk``: the clip read
from the chunk's carried previous frame, ``upscale_chunk``) and published whole as a part; when a clip's last
chunk is done the driver stitches its parts in order into the output (staged, placed once, the job folder
removed) while the workers go on. So the frames are those of a one-process run, bit for bit on a CPU, and
of a single ``upscale`` without ``--chunk`` likewise. A lost worker's chunk is run again; a part already
published is never made again (a second attempt's copy is dropped, :meth:`dloral.job.Job.part`); a rerun
after an interruption schedules only the chunks without a part. The frame count of a video may be the
container's estimate: the last planned chunk runs to the end of the clip, and planned chunks past the end
give no part. A clip whose count is unknown is one unit, run in one pass, as without ``--chunk``.
"""
import argparse
import contextlib
import functools
import hashlib
import json
import os
import pathlib
import shutil
import sys
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

try:
    from ..atelier_files import shown_paths  # type: ignore[import-not-found]
    from ..atelier_ray import (BatchItem, Done, JobProgress, Outcome,  # type: ignore[import-not-found]
                               add_ray_arguments, by_worker, expand_inputs, failure_reason, read_tree, run_batch,
                               write_tree)
except ImportError:   # the core as a top-level package (CLI from the repository root)
    from atelier_files import shown_paths
    from atelier_ray import (BatchItem, Done, JobProgress, Outcome, add_ray_arguments, by_worker, expand_inputs,
                             failure_reason, read_tree, run_batch, write_tree)

VIDEO_INPUT_EXTS = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".mts")
BATCH_EXTS = ("same", "mp4", "mkv", "mov", "frames")


def add_arguments(u: argparse.ArgumentParser) -> None:
    """The batch flags of ``upscale``."""
    add_ray_arguments(u, "the clips (with --chunk: their chunks)", cpus_when="with --ray and no GPU")
    u.add_argument("--batch-ext", choices=BATCH_EXTS, default="same",
                   help="several inputs: what each clip's output is in --out DIR (default: the input's container)")


def is_batch(a: argparse.Namespace) -> bool:
    """Several inputs, a list file, a glob, a folder of videos, or ``--ray``."""
    if a.ray is not None or len(a.input) > 1:
        return True
    s = a.input[0]
    if s.startswith("@") or (not os.path.exists(s) and any(c in s for c in "*?[")):
        return True
    return os.path.isdir(s) and any(f.suffix.lower() in VIDEO_INPUT_EXTS for f in pathlib.Path(s).iterdir())


def clips(specs: Sequence[str]) -> List[pathlib.Path]:
    """The clips the INPUT arguments name (a folder of videos gives its videos)."""
    out: List[pathlib.Path] = []
    for p in expand_inputs(specs, VIDEO_INPUT_EXTS, dirs_are_items=True):
        if p.is_dir() and any(f.suffix.lower() in VIDEO_INPUT_EXTS for f in p.iterdir()):
            out += [q for q in expand_inputs([str(p)], VIDEO_INPUT_EXTS) if q not in out]
        elif p not in out:
            out.append(p)
    return out


def output_name(clip: pathlib.Path, stem: str, batch_ext: str) -> str:
    if batch_ext == "frames" or (batch_ext == "same" and clip.is_dir()):
        return stem
    if batch_ext == "same":
        ext = clip.suffix.lower()
        return stem + (ext if ext in (".mp4", ".mkv", ".mov") else ".mkv")
    return f"{stem}.{batch_ext}"


class Single:
    """The single-clip command the CLI gives (``dloral/__main__.py``; passed in, so this module does not import
    it): ``check(args)`` the settings, ``probe(path) -> (frames or None, (H, W))``, ``upscale(args, loader)``
    one clip into ``args.out`` (staged: in place only when complete); for chunks across workers
    ``open_job(args) -> (job, chunks, digits, kind)``, ``chunk(args, loader, index, last, digits, kind,
    frames=None)``, ``stitch(args, job) -> frames`` and, for a worker that does not see INPUT,
    ``frames(args, index, last, read)``: the input frames the chunk reads, as data (``read``: a
    ``dloral.cliargs.RangeReader``), which ``chunk`` then reads in place of INPUT (``open_chunk_job``,
    ``cmd_chunk``, ``cmd_stitch``, ``chunk_frames``). Pickled to the Ray actors."""

    def __init__(self, check: Callable[[argparse.Namespace], Any], probe: Callable[[Any], Tuple[Optional[int], Any]],
                 upscale: Callable[[argparse.Namespace, Any], None], open_job: Optional[Callable[..., Any]] = None,
                 chunk: Optional[Callable[..., Dict[str, Any]]] = None,
                 stitch: Optional[Callable[..., int]] = None, frames: Optional[Callable[..., Any]] = None) -> None:
        self.check, self.probe, self.upscale = check, probe, upscale
        self.open_job, self.chunk, self.stitch, self.frames = open_job, chunk, stitch, frames


@dataclass(frozen=True)
class ChunkTask:
    """A unit of work: chunk ``index`` of clip ``src`` into the job folder of ``dest`` (``last``: the last
    planned chunk, which runs to the end of the clip); ``digits`` and ``kind`` name its part frames."""
    src: str
    dest: str
    index: int
    last: bool
    digits: int
    kind: str


@dataclass(frozen=True)
class Shipped:
    """A unit of work sent to a worker that does not see the driver's files: ``task`` (``(input, output)`` or a
    :class:`ChunkTask`, with the driver's paths) and the input as data: for a whole clip a video file's bytes or
    a frame folder's files by path (None where the driver has no such input); for a chunk only the frames it
    reads (``Single.frames``: a ``dloral.cliargs.FrameRange``, its own frames and the carried one before), or
    a video file's bytes where they weigh less."""
    task: Any
    data: Any


def _paths(task: Any) -> Tuple[str, str]:
    return (task.src, task.dest) if isinstance(task, ChunkTask) else (task[0], task[1])


def ship_clip(payload: Any, sees: bool, chunk_frames: Optional[Callable[[ChunkTask], Any]] = None) -> Any:
    """In the driver, as a unit goes to a Ray worker: the payload itself where the worker sees the driver's
    files (``sees``); else :class:`Shipped`, or ``Done`` where the output (a clip's, or a chunk's part) is
    already in place. A chunk is sent with ``chunk_frames(task)``, the frames it reads (``Single.frames``), or
    with the video file where that is smaller (a short clip's compressed file can weigh less than the chunk's
    frames decoded, which are sent lossless): never more than the clip."""
    if sees:
        return payload
    src, dest = _paths(payload)
    if isinstance(payload, ChunkTask):
        from .job import job_dir
        meta = job_dir(dest) / f"part_{payload.index:05d}" / "part.json"
        if meta.exists():
            return Done({"status": "done earlier", "frames": json.loads(meta.read_text())["frames"],
                         "chunk": payload.index})
        assert chunk_frames is not None, "a chunk is sent with the frames it reads"
        frames = chunk_frames(payload)
        if os.path.isfile(src) and os.path.getsize(src) < frames.nbytes:
            return Shipped(payload, _take(pathlib.Path(src)))
        return Shipped(payload, frames)
    if os.path.exists(dest):
        return Done({"status": "done earlier", "output": dest, "frames": _count(pathlib.Path(dest))})
    return Shipped(payload, _take(pathlib.Path(src)))


def _take(p: pathlib.Path) -> Any:
    """A clip's input or output as data: a file's bytes, a folder's files (:func:`read_tree`), None when
    neither is there."""
    return p.read_bytes() if p.is_file() else read_tree(p) if p.is_dir() else None


def _put(p: pathlib.Path, data: Any) -> None:
    """What :func:`_take` gave, written at ``p`` (which must not exist): a folder of files, or a file."""
    if isinstance(data, dict):
        p.mkdir()
        write_tree(p, data)
    else:
        p.write_bytes(data)


def land_clip(payload: Any, result: Dict[str, Any]) -> Dict[str, Any]:
    """In the driver, on a unit's one final result: what a worker without the driver's files returned
    (``data``: a clip's output file's bytes or frame folder's files; ``part``: a chunk's part folder's files)
    written as the worker would have: the output under a name of this attempt's own, placed where nothing is;
    the part published whole, never over one. Results of workers that wrote themselves pass unchanged."""
    if "part" in result:
        from .job import Job, job_dir
        res = {k: v for k, v in result.items() if k != "part"}
        if result["part"] is None:   # no part: empty, or found done
            return res
        placed = Job(job_dir(payload.dest), {}).publish(payload.index, result["part"])
        return {**res, "status": "done" if placed else "done earlier"}
    if "data" not in result:
        return result
    res = {k: v for k, v in result.items() if k != "data"}
    d = pathlib.Path(payload[1])
    if d.exists():
        return {**res, "status": "done earlier", "frames": _count(d)}
    mine = d.with_name(f".{d.stem}.attempt-{os.getpid()}-{os.urandom(3).hex()}{d.suffix}")
    try:
        _put(mine, result["data"])
        placed = _place(mine, d)
    finally:
        _discard(mine)
    return {**res, "status": "done" if placed else "done earlier"}


def _dest(item: BatchItem) -> str:
    return item.payload.dest if isinstance(item.payload, ChunkTask) else item.payload[1]


def _clip_args(a: argparse.Namespace, src: str, out: str) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(a), "input": src, "out": out, "quiet": True, "overwrite": False})


def plan(a: argparse.Namespace, single: Single) -> List[BatchItem]:
    """One item per clip: payload ``(input, output)``, weight its frame count (0 when unknown)."""
    probe = single.probe
    cl = clips(a.input)
    stems = [c.stem if c.is_file() else c.name for c in cl]
    out = pathlib.Path(a.out)
    items = []
    for c, st in zip(cl, stems):
        name = st if stems.count(st) == 1 else f"{st}-{hashlib.sha1(str(c.resolve()).encode()).hexdigest()[:6]}"
        try:
            frames = probe(c)[0] or 0
        except ValueError:
            frames = 0   # the worker reports why
        items.append(BatchItem(name, (str(c), str(out / output_name(c, name, a.batch_ext))), float(frames)))
    return items


class _OnceLoader:
    """The loader, called once per process: every clip of an actor uses the same models."""

    def __init__(self, loader: Callable[[Any], Any]) -> None:
        self.loader, self.models = loader, None

    def __call__(self, request: Any) -> Any:
        if self.models is None:
            self.models = self.loader(request)
        return self.models


class ClipWorker:
    """``work((input, output))``: one clip through the single-clip path (``cmd_upscale``), the models kept."""

    def __init__(self, args: argparse.Namespace, loader: Callable[[Any], Any], single: Single) -> None:
        self.args, self.loader, self.single = args, _OnceLoader(loader), single

    def _shipped(self, s: Shipped) -> Dict[str, Any]:
        """A unit sent as bytes: a clip's input written to a folder of this worker's own (a chunk's frames sent
        are read from the data), the unit run there as on the driver's files, and its output returned as
        bytes (``data`` or ``part``, see :func:`land_clip`); a failure's reason names the driver's paths.
        Nothing is kept here."""
        src, dest = _paths(s.task)
        with tempfile.TemporaryDirectory(prefix="atelier-clip-") as t:
            lsrc = pathlib.Path(t) / "in" / pathlib.PurePath(src).name
            ldest = pathlib.Path(t) / "out" / pathlib.PurePath(dest).name
            lsrc.parent.mkdir()
            ldest.parent.mkdir()
            chunk = isinstance(s.task, ChunkTask)
            frames = s.data if chunk and not isinstance(s.data, bytes) else None   # a chunk's frames, not a file
            if s.data is not None and frames is None:
                _put(lsrc, s.data)
            try:
                if chunk:
                    from .job import job_dir
                    job = job_dir(ldest)
                    job.mkdir()
                    res = self._chunk(replace(s.task, src=str(lsrc), dest=str(ldest)), frames)
                    part = job / f"part_{s.task.index:05d}"
                    return {**res, "part": read_tree(part) if res["status"] == "done" else None}
                res = self((str(lsrc), str(ldest)))
                return {**res, "output": dest, "data": _take(ldest)}
            except Exception as exc:   # noqa: BLE001 - the reason, naming the driver's paths
                raise ValueError(shown_paths(failure_reason(exc), {lsrc: src, ldest: dest})) from None

    def _chunk(self, t: ChunkTask, frames: Any = None) -> Dict[str, Any]:
        """One chunk into its part of the clip's job folder; ``frames``: the frames it reads, when sent."""
        assert self.single.chunk is not None
        with contextlib.redirect_stdout(sys.stderr):
            res = self.single.chunk(_clip_args(self.args, t.src, t.dest), self.loader, t.index, t.last,
                                    t.digits, t.kind, frames=frames)
        return {**res, "chunk": t.index}

    def __call__(self, payload: Any) -> Dict[str, Any]:
        if isinstance(payload, Shipped):
            return self._shipped(payload)
        if isinstance(payload, ChunkTask):
            return self._chunk(payload)
        src, dest = payload
        d = pathlib.Path(dest)
        if d.exists():   # renamed into place only when complete: this clip is done
            return {"status": "done earlier", "output": dest, "frames": _count(d)}
        # this attempt writes under a name of its own and then places it only where nothing is: a worker
        # declared lost may still be running the same clip, and exactly one of them puts the output in place
        mine = d.with_name(f".{d.stem}.attempt-{os.getpid()}-{os.urandom(3).hex()}{d.suffix}")
        # a whole clip is one pass: with --chunk it is whole only when its length is unknown, and a job folder
        # beside this attempt's own name could never be resumed
        a = argparse.Namespace(**{**vars(_clip_args(self.args, src, str(mine))), "chunk": 0})
        try:
            with contextlib.redirect_stdout(sys.stderr):   # the per-clip line; stdout is the job's summary
                self.single.upscale(a, self.loader)
            placed = _place(mine, d)
        finally:
            _discard(mine)
        return {"status": "done" if placed else "done earlier", "output": dest, "frames": self.single.probe(src)[0]}


def _place(mine: pathlib.Path, dest: pathlib.Path) -> bool:
    """Move a finished output to ``dest`` unless something is there (never over it); True when placed."""
    try:
        if mine.is_dir():
            os.rename(mine, dest)   # onto a non-empty folder fails; dest is not made empty by anyone here
        else:
            os.link(mine, dest)     # fails when dest exists
    except OSError:
        if dest.exists():
            return False
        raise
    return True


def _discard(p: pathlib.Path) -> None:
    if p.is_dir():
        shutil.rmtree(p, ignore_errors=True)
    elif p.exists():
        p.unlink()


def _count(d: pathlib.Path) -> Optional[int]:
    if d.is_dir():
        return sum(1 for f in d.iterdir() if f.name.startswith("frame_"))
    from .video import probe_video
    return probe_video(d).frame_count


class _Factory:
    """``make_worker`` of the actors: the parsed arguments and the loader (pickled to each actor)."""

    def __init__(self, args: argparse.Namespace, loader: Callable[[Any], Any], single: Single) -> None:
        self.args, self.loader, self.single = args, loader, single

    def __call__(self) -> ClipWorker:
        return ClipWorker(self.args, self.loader, self.single)


def _remove_partials(items: Sequence[BatchItem]) -> None:
    """What lost workers left: hidden partial videos and frame staging folders of the job's outputs."""
    for it in items:
        d = pathlib.Path(_dest(it))
        hidden = f".{d.stem}.attempt-*"
        for p in [*d.parent.glob(f"{hidden}"), *d.parent.glob(f".{hidden}.*"), *d.parent.glob(f".{d.stem}.*.partial*"),
                  *d.parent.glob(f".{d.name}.dloral-staging-*")]:
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


@dataclass
class _ClipJob:
    """A clip cut into chunks: its job, the chunk items not yet finished, their outcomes, the stitch."""
    item: BatchItem
    job: Any
    chunks: int
    finished_before: int
    pending: set = field(default_factory=set)
    outcomes: List[Outcome] = field(default_factory=list)
    stitched: Optional["Future[Dict[str, Any]]"] = None


def _split(a: argparse.Namespace, items: Sequence[BatchItem], single: Single
           ) -> Tuple[List[BatchItem], Dict[str, _ClipJob], Dict[str, str]]:
    """The units of work: with ``--chunk``, a clip of known length whose output is not there yet gives one item
    per chunk without a finished part (weight: its frames); other clips stay whole. Returns the items, the
    chunked clips by key and the clips refused while planning (key -> reason: another job's folder, ...)."""
    if not a.chunk or single.open_job is None:
        return list(items), {}, {}
    work: List[BatchItem] = []
    jobs: Dict[str, _ClipJob] = {}
    refused: Dict[str, str] = {}
    for it in items:
        src, dest = it.payload
        if it.weight <= 0 or os.path.exists(dest):
            work.append(it)
            continue
        try:
            job, n, digits, kind = single.open_job(_clip_args(a, src, dest))
        except ValueError as exc:
            refused[it.key] = str(exc)
            continue
        done = job.finished()
        cj = jobs[it.key] = _ClipJob(it, job, n, len(done))
        for i in range(n):
            if i not in done:
                ci = BatchItem(f"{it.key}#{i}", ChunkTask(src, dest, i, i == n - 1, digits, kind),
                               float(min(a.chunk, it.weight - i * a.chunk)))
                cj.pending.add(ci.key)
                work.append(ci)
    return work, jobs, refused


def _stitch_clip(a: argparse.Namespace, single: Single, cj: _ClipJob) -> Dict[str, Any]:
    """In the driver: the clip's parts into its output, written under a name of this attempt's own and placed
    only where nothing is (as a whole clip is); the job folder is removed once the output is in place."""
    assert single.stitch is not None
    src, dest = cj.item.payload
    d = pathlib.Path(dest)
    if d.exists():
        return {"status": "done earlier", "output": dest, "frames": _count(d)}
    mine = d.with_name(f".{d.stem}.attempt-{os.getpid()}-{os.urandom(3).hex()}{d.suffix}")
    try:
        n = single.stitch(_clip_args(a, src, str(mine)), cj.job)
        placed = _place(mine, d)
    finally:
        _discard(mine)
    cj.job.remove()
    return {"status": "done" if placed else "done earlier", "output": dest, "frames": n}


def run_clips(a: argparse.Namespace, loader: Callable[[Any], Any], single: Single,
              quiet: bool = False) -> Tuple[Dict[str, Any], int]:
    """The batch job; ``(summary, exit status)``."""
    if a.workers < 0 or a.ray_cpus <= 0:
        raise ValueError("--workers must be >= 0 and --ray-cpus > 0")
    single.check(a)   # every setting checked before anything is read or loaded
    items = plan(a, single)
    out = pathlib.Path(a.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} must be a folder for several inputs")
    out.mkdir(parents=True, exist_ok=True)
    work, jobs, refused = _split(a, items, single)
    by_dest = {cj.item.payload[1]: cj for cj in jobs.values()}
    stitcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dloral-stitch")

    def chunk_done(o: Outcome) -> None:
        if not isinstance(o.item.payload, ChunkTask):
            return
        cj = by_dest[o.item.payload.dest]
        cj.outcomes.append(o)
        cj.pending.discard(o.item.key)
        if not cj.pending and all(x.ok for x in cj.outcomes):
            cj.stitched = stitcher.submit(_stitch_clip, a, single, cj)

    for cj in jobs.values():   # every chunk finished in an earlier run: only the stitch is left
        if not cj.pending:
            cj.stitched = stitcher.submit(_stitch_clip, a, single, cj)
    repo = pathlib.Path(__file__).resolve().parent.parent

    from .cliargs import RangeReader
    reader = RangeReader()   # a video's chunks, sent one after another, read in one pass

    def sent_frames(t: ChunkTask) -> Any:   # what a worker without the driver's files gets of a chunk's clip
        assert single.frames is not None
        return single.frames(_clip_args(a, t.src, t.dest), t.index, t.last, reader)
    progress = JobProgress(sum(i.weight for i in work), len(work), unit="frames", quiet=quiet)
    # each worker checks whether it sees the inputs and a file made here in --out as the driver does: one that
    # does reads and writes those paths, one that does not gets the inputs' bytes and returns the outputs'
    probe = out / f".atelier-ray-probe-{os.getpid()}-{os.urandom(4).hex()}" if a.ray is not None else None
    try:
        if probe is not None:
            probe.write_text(os.urandom(8).hex())
        outcomes, stats = run_batch(work, _Factory(a, loader, single), progress=progress, ray_address=a.ray,
                                    cpus_per_worker=a.ray_cpus, max_workers=a.workers or None,
                                    start_all=a.ray_start_all,
                                    env_paths=[str(repo)], gpus=True,   # + the caller's PYTHONPATH (the loader's)
                                    on_outcome=chunk_done, ship=functools.partial(ship_clip, chunk_frames=sent_frames),
                                    land=land_clip,
                                    must_see=[] if probe is None else [probe, *(i.payload[0] for i in items)])
    finally:
        progress.close()
        reader.close()
        stitcher.shutdown(wait=True)
        if probe is not None:
            probe.unlink(missing_ok=True)
    _remove_partials(work)
    whole = {o.item.key: o for o in outcomes if not isinstance(o.item.payload, ChunkTask)}
    rows = []
    for it in items:
        if it.key in jobs:
            rows.append(_clip_row(jobs[it.key]))
        elif it.key in refused:
            rows.append({"input": it.payload[0], "status": "failed", "output": it.payload[1],
                         "reason": refused[it.key], "attempts": 0})
        else:
            rows.append(_row(whole[it.key]))
    failed = [r for r in rows if r["status"] == "failed"]
    summary = {"clips": len(rows), "done": sum(r["status"] == "done" for r in rows),
               "done_earlier": sum(r["status"] == "done earlier" for r in rows), "failed": len(failed),
               "workers": stats.workers, "lost_workers": stats.lost_workers, "retried": stats.retried,
               "where": stats.where, "by_worker": by_worker(outcomes), "wallclock_s": round(stats.seconds, 2),
               "outputs": rows}
    if jobs:
        summary["chunks"] = sum(cj.chunks for cj in jobs.values())
        summary["chunks_run"] = sum(1 for w in work if isinstance(w.payload, ChunkTask))
    return summary, 1 if failed else 0


def _clip_row(cj: _ClipJob) -> Dict[str, Any]:
    """A chunked clip's line of the summary: the stitch's result, or why the clip failed; the chunks made
    (``chunks_done``: parts published in this run, each once), kept from earlier or found made by another attempt."""
    src, dest = cj.item.payload
    made = [o.result for o in cj.outcomes if o.ok]
    row: Dict[str, Any] = {"input": src, "chunks": cj.chunks,
                           "chunks_done": sum(r["status"] == "done" for r in made),
                           "chunks_done_earlier": cj.finished_before + sum(r["status"] == "done earlier" for r in made),
                           "attempts": max((o.attempts for o in cj.outcomes), default=0)}
    bad = sorted((o for o in cj.outcomes if not o.ok), key=lambda o: o.item.payload.index)
    if bad:
        return {**row, "status": "failed", "output": dest,
                "reason": f"chunk {bad[0].item.payload.index}: {bad[0].error} (finished chunks are kept: rerun to resume)"}
    assert cj.stitched is not None
    try:
        res = cj.stitched.result()
    except ValueError as exc:
        return {**row, "status": "failed", "output": dest, "reason": str(exc)}
    except Exception as exc:   # noqa: BLE001 - the reason goes into the job's summary
        return {**row, "status": "failed", "output": dest, "reason": f"{type(exc).__name__}: {exc}"}
    return {**row, **res}


def _row(o: Outcome) -> Dict[str, Any]:
    src, dest = o.item.payload
    if o.ok:
        return {"input": src, **o.result, "attempts": o.attempts}
    return {"input": src, "status": "failed", "output": dest, "reason": o.error, "attempts": o.attempts}


def batch_main(a: argparse.Namespace, loader: Callable[[Any], Any], single: Single) -> int:
    try:
        summary, rc = run_clips(a, loader, single)
    except KeyboardInterrupt:
        kept = " and the finished chunks in its .NAME.dloral-job folders" if a.chunk else ""
        print(f"\ninterrupted: the outputs completed in {a.out} are kept (each whole){kept}; run the same command "
              "again to do the rest", file=sys.stderr)
        return 130
    print(json.dumps(summary, indent=1))
    return rc
