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
the next clip when free; a lost worker's clip is run again on another actor. Whole clips are the unit here:
a long clip is not yet split across actors.
"""
import argparse
import contextlib
import hashlib
import json
import os
import pathlib
import shutil
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

try:
    from ..atelier_ray import BatchItem, JobProgress, Outcome, expand_inputs, run_batch  # type: ignore[import-not-found]
except ImportError:   # the core as a top-level package (CLI from the repository root)
    from atelier_ray import BatchItem, JobProgress, Outcome, expand_inputs, run_batch

VIDEO_INPUT_EXTS = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".mts")
BATCH_EXTS = ("same", "mp4", "mkv", "mov", "frames")


def add_arguments(u: argparse.ArgumentParser) -> None:
    """The batch flags of ``upscale``."""
    u.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="spread the clips over Ray workers (an optional extra): no ADDRESS = Ray on this machine, "
                        "'auto' = the cluster Ray finds, else HOST:PORT of a cluster's head")
    u.add_argument("--workers", type=int, default=0, help="with --ray: at most this many workers (0 = one per slot)")
    u.add_argument("--ray-cpus", type=float, default=1.0, help="with --ray and no GPU: CPUs per worker (default 1)")
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
    one clip into ``args.out`` (staged: in place only when complete). Pickled to the Ray actors."""

    def __init__(self, check: Callable[[argparse.Namespace], Any], probe: Callable[[Any], Tuple[Optional[int], Any]],
                 upscale: Callable[[argparse.Namespace, Any], None]) -> None:
        self.check, self.probe, self.upscale = check, probe, upscale


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

    def __call__(self, payload: Tuple[str, str]) -> Dict[str, Any]:
        src, dest = payload
        d = pathlib.Path(dest)
        if d.exists():   # renamed into place only when complete: this clip is done
            return {"status": "done earlier", "output": dest, "frames": _count(d)}
        # this attempt writes under a name of its own and then places it only where nothing is: a worker
        # declared lost may still be running the same clip, and exactly one of them puts the output in place
        mine = d.with_name(f".{d.stem}.attempt-{os.getpid()}-{os.urandom(3).hex()}{d.suffix}")
        a = argparse.Namespace(**{**vars(self.args), "input": src, "out": str(mine), "quiet": True,
                                  "overwrite": False})
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
        d = pathlib.Path(it.payload[1])
        hidden = f".{d.stem}.attempt-*"
        for p in [*d.parent.glob(f"{hidden}"), *d.parent.glob(f".{hidden}.*"), *d.parent.glob(f".{d.stem}.*.partial*"),
                  *d.parent.glob(f".{d.name}.dloral-staging-*")]:
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


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
    repo = pathlib.Path(__file__).resolve().parent.parent
    progress = JobProgress(sum(i.weight for i in items), len(items), unit="frames", quiet=quiet)
    try:
        outcomes, stats = run_batch(items, _Factory(a, loader, single), progress=progress, ray_address=a.ray,
                                    cpus_per_worker=a.ray_cpus, max_workers=a.workers or None,
                                    env_paths=[str(repo)], gpus=True)   # + the caller's PYTHONPATH (the loader's)
    finally:
        progress.close()
    _remove_partials(items)
    rows = [_row(o) for o in outcomes]
    failed = [r for r in rows if r["status"] == "failed"]
    summary = {"clips": len(rows), "done": sum(r["status"] == "done" for r in rows),
               "done_earlier": sum(r["status"] == "done earlier" for r in rows), "failed": len(failed),
               "workers": stats.workers, "lost_workers": stats.lost_workers, "retried": stats.retried,
               "where": stats.where, "wallclock_s": round(stats.seconds, 2), "outputs": rows}
    return summary, 1 if failed else 0


def _row(o: Outcome) -> Dict[str, Any]:
    src, dest = o.item.payload
    if o.ok:
        return {"input": src, **o.result, "attempts": o.attempts}
    return {"input": src, "status": "failed", "output": dest, "reason": o.error, "attempts": o.attempts}


def batch_main(a: argparse.Namespace, loader: Callable[[Any], Any], single: Single) -> int:
    try:
        summary, rc = run_clips(a, loader, single)
    except KeyboardInterrupt:
        print(f"\ninterrupted: the outputs completed in {a.out} are kept (each whole); run the same command again "
              "to do the rest", file=sys.stderr)
        return 130
    print(json.dumps(summary, indent=1))
    return rc
