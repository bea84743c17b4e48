"""The DLoRAL command line's arguments and inputs (``python -m dloral``, ``dloral/__main__.py``): the parser, the
checked settings of the flags, the model loader's request, and reading INPUT (a folder of frames or a video file):
``probe`` checks it without decoding it all, ``_frames`` streams its frames from any index, ``read_range`` reads a
range of them as data (:class:`FrameRange`, what a Ray worker without INPUT is sent); ``_Staging`` is the hidden
folder a frame-folder output is written in and renamed from.
"""
import argparse
import os
import pathlib
import shutil
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from itertools import islice
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np
import torch

from .checkpoint import DLoRALWeights
from .pipeline import DLoRALModels
from .settings import CONVERT_SETTINGS, JOB_SETTINGS, OUTPUT_SETTINGS, SETTINGS, UpscaleSettings
from .video import frame_image, iter_frames, iter_raw_frames, probe_video

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


@dataclass(frozen=True)
class FrameRange:
    """The frames ``[first, first + len(images))`` of INPUT as data (:func:`read_range`): what a worker that
    does not see INPUT is sent for a chunk (``dloral/batch.py``). ``images``: a frame folder's files as they
    are, in the folder's order; or a video's frames as the decoder gave them (integers, 8 or 16 bits per
    channel) in lossless PNG, with their ``times`` (None for a folder). :func:`_frames` reads it as it
    reads INPUT, to the same frames bit for bit."""
    first: int
    images: Tuple[bytes, ...]
    times: Optional[Tuple[Fraction, ...]] = None

    @property
    def nbytes(self) -> int:
        return sum(len(b) for b in self.images)


def read_range(path: Union[str, os.PathLike], start: int, stop: int) -> FrameRange:
    """Frames ``[start, stop)`` of INPUT (fewer where the clip ends before ``stop``) as a :class:`FrameRange`:
    a folder's files read as they are; a video decoded from its start (the frames before ``start`` are
    decoded, not kept), each kept frame's integers written as PNG (lossless, 16-bit for a deeper source)."""
    with RangeReader() as read:
        return read(path, start, stop)


class _Decoding:
    """A video being read by a :class:`RangeReader`: the decoder at frame ``next``, the frame before kept."""

    def __init__(self, it: Any, at: int) -> None:
        self.it, self.next = it, at
        self.last: Optional[Tuple[bytes, Fraction]] = None


class RangeReader:
    """:func:`read_range` for a driver that sends chunk after chunk of its clips: a video's ranges asked in
    increasing order are read by one decoder from its start to its end, not from its start again for each
    (a chunk's range starts at the frame before the previous chunk's end: that frame is kept); a range before
    the decoder's place (a chunk sent again after a lost worker) starts a new one. At most ``keep`` videos
    are open at once (the one read longest ago is closed); :meth:`close` closes them all."""

    def __init__(self, keep: int = 2) -> None:
        self.keep = keep
        self.open: Dict[str, _Decoding] = {}

    def __enter__(self) -> "RangeReader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        for d in self.open.values():
            d.it.close()
        self.open.clear()

    def __call__(self, path: Union[str, os.PathLike], start: int, stop: int) -> FrameRange:
        import cv2
        p = pathlib.Path(path)
        if p.is_dir():
            return FrameRange(start, tuple(f.read_bytes() for f in _frame_files(p)[start:stop]))
        if not p.is_file():
            raise ValueError(f"INPUT {str(path)!r} is neither a folder of frames nor a video file")
        d = self.open.pop(str(p), None)
        if d is not None and (start < d.next - 1 or start == d.next - 1 and d.last is None):
            d.it.close()
            d = None
        if d is None:
            d = _Decoding(iter_raw_frames(p, start, threads="SLICE"), start)   # closed at any time: no busy thread
        while len(self.open) >= self.keep:
            self.open.pop(next(iter(self.open))).it.close()
        self.open[str(p)] = d
        kept: List[Tuple[bytes, Fraction]] = [d.last] if start == d.next - 1 and d.last is not None else []
        try:
            skipped = sum(1 for _ in islice(d.it, max(start - d.next, 0)))
            d.next, d.last = d.next + skipped, d.last if not skipped else None
            if d.next < start:   # the clip ends before the range
                return FrameRange(start, (), ())
            for pixels, t in islice(d.it, max(stop - start - len(kept), 0)):
                ok, buf = cv2.imencode(".png", pixels)
                if not ok:   # pragma: no cover - PNG holds any uint8 / uint16 three-channel image
                    raise ValueError(f"video {str(path)!r}: frame at {float(t):.6f} s cannot be written as PNG")
                kept.append((buf.tobytes(), t))
        except BaseException:   # a decoder that failed is not read again
            self.open.pop(str(p), None)
            d.it.close()
            raise
        d.next = start + len(kept)
        d.last = kept[-1] if kept else None
        return FrameRange(start, tuple(b for b, _ in kept), tuple(t for _, t in kept))


def _image(data: bytes, name: str) -> torch.Tensor:
    """A frame file's bytes as the (3, H, W) float frame in [0, 1] (8-bit colour, as OpenCV reads it)."""
    import cv2
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"cannot read frame {name}")
    return torch.from_numpy(img[..., ::-1].copy()).permute(2, 0, 1).float() / 255


def _frames(path, times=None, start=0):
    """Yield (3, H, W) float frames in [0, 1] from a folder of images, a video file or a :class:`FrameRange`
    of either, from clip frame ``start`` on (a video decodes the frames before, a folder skips their files; a
    range starts at its ``first``, at most ``start``); a video's frame times (seconds) are appended to
    ``times`` as the frames are yielded."""
    import cv2
    if isinstance(path, FrameRange):
        if not path.first <= start:
            raise ValueError(f"frames from {start} asked of a range starting at frame {path.first}")
        for k in range(start - path.first, len(path.images)):
            if path.times is None:
                yield _image(path.images[k], f"{path.first + k} of the frames sent")
                continue
            pixels = cv2.imdecode(np.frombuffer(path.images[k], np.uint8), cv2.IMREAD_UNCHANGED)
            if pixels is None:   # pragma: no cover - the driver wrote it
                raise ValueError(f"cannot read frame {path.first + k} of the frames sent")
            if times is not None:
                times.append(path.times[k])
            yield frame_image(pixels).permute(2, 0, 1)
        return
    p = pathlib.Path(path)
    if p.is_dir():
        for f in _frame_files(p)[start:]:
            yield _image(f.read_bytes(), str(f))
        return
    if not p.is_file():
        raise ValueError(f"INPUT {path!r} is neither a folder of frames nor a video file")
    for f in iter_frames(p, start):
        if times is not None:
            times.append(f.time)
        yield f.image.permute(2, 0, 1)


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


def settings_from_args(a: argparse.Namespace) -> UpscaleSettings:
    """The checked settings of ``upscale`` (ValueError naming the flag)."""
    return UpscaleSettings(**{name: getattr(a, name) for name in SETTINGS})


def _read_part_frame(path):
    """A part frame back as (H, W, 3) float32 in [0, 1]: the integers it holds, at their bit depth."""
    if path.suffix == ".png":
        from PIL import Image
        with Image.open(path) as im:
            return torch.from_numpy(np.array(im.convert("RGB"))).float() / 255
    import tifffile
    return torch.from_numpy(tifffile.imread(str(path)).astype(np.float32)) / 65535


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


def build_parser(prog: str, convert: Callable[..., Any], upscale: Callable[..., Any]) -> argparse.ArgumentParser:
    """The parser of ``convert`` and ``upscale`` (flags from the settings tables and ``dloral.batch``); each
    subcommand's ``fn`` is the function given (the CLI passes its own at call time)."""
    p = argparse.ArgumentParser(prog=prog, description="DLoRAL one-step video super-resolution ×4")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("convert", help="convert the official model.pkl to a small safetensors file")
    c.add_argument("pkl")
    c.add_argument("--out", required=True)
    CONVERT_SETTINGS.add_arguments(c)
    c.add_argument("--base", default=None,
                   help="the SD2.1-base checkpoint (.safetensors or .ckpt): base tensors the DLoRAL checkpoint "
                        "changed are then kept in the converted file (without it: conv_in only)")
    c.set_defaults(fn=convert)
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
    u.set_defaults(fn=upscale)
    return p
