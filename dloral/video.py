"""Video files in and out with PyAV: frames with their own timestamps, the sound stream untouched.

Reading (:func:`probe_video`, :func:`iter_frames`, :func:`read_video`): the first video stream is decoded
one frame at a time into (H, W, 3) float32 frames in [0, 1] (8-bit sources through rgb24, deeper ones
through rgb48, so a 10-bit clip keeps its precision), each with its presentation time in seconds (a
``Fraction``: variable frame rate is kept frame by frame). Nothing holds the whole clip.

Writing (:class:`VideoWriter`): frames and their times go to

- ``h264``: H.264 8-bit 4:2:0 (libx264, CRF 12), for .mp4 (also .mkv, .mov);
- ``h265-10``: H.265 10-bit 4:2:0 (libx265, CRF 12, yuv420p10le), for .mkv (also .mp4, .mov);
- ``prores``: ProRes 422 HQ 10-bit (prores_ks, yuv422p10le), for .mov (also .mkv);
- ``auto``: by extension, .mp4 -> h264, .mkv -> h265-10, .mov -> prores.

:func:`video_formats` says which of them the installed PyAV can encode (PyAV's wheels carry libx264,
libx265 and prores_ks; an encoder that is missing is refused by name). Each frame keeps its timestamp
(the stream's time base is the input's), so a variable-rate clip stays variable.

Audio: the first audio stream of the source file is **copied packet by packet** (no decoding, the
bytes unchanged) when the output container can hold its codec (.mkv: any; .mp4: AAC, MP3, ALAC, Opus,
FLAC, AC-3; .mov: AAC, MP3, ALAC, AC-3, PCM). Otherwise (e.g. PCM into .mp4) it is decoded and
re-encoded to AAC at the same sample rate and channel layout, and :attr:`VideoWriter.audio_mode` says
so. Packets are interleaved with the video as it is written, read from the source as needed.

Safety: the file is written under a hidden temporary name in the destination folder and moved to its
name only when complete; any error (an encoder error, a frame of the wrong size, an exception in the
caller, Ctrl-C) removes it. An existing file is never overwritten: the output then gets the next free
numbered name ``stem_00001.ext`` (claimed with a hard link, so a concurrent run takes the next one).

Frame folders: :func:`save_frame` writes one frame as 8-bit PNG (``png``) or 16-bit RGB TIFF
(``tiff16``); :func:`write_timecodes` and :func:`copy_audio` keep the timing and the sound beside them.
"""
import os
import pathlib
import tempfile
from dataclasses import dataclass
from fractions import Fraction

from typing import Any, Iterator, List, Literal, Optional, Sequence, Tuple, Union

import numpy as np
import torch

try:
    from ..atelier_files import next_number, numbered_name, process_umask  # type: ignore[import-not-found]
except ImportError:  # the core imported as a top-level package (tests, ``python -m dloral``)
    from atelier_files import next_number, numbered_name, process_umask

__all__ = ["VIDEO_EXTS", "VIDEO_FORMATS", "FRAME_FORMATS", "AudioInfo", "VideoInfo", "Frame", "probe_video",
           "iter_frames", "iter_raw_frames", "frame_image", "read_video", "video_formats", "resolve_format", "VideoWriter", "save_frame",
           "write_timecodes", "copy_audio", "is_video_path"]

#: container (PyAV format name) per output extension
CONTAINERS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska"}
VIDEO_EXTS = tuple(CONTAINERS)
#: name -> (encoder, pixel format, encoder options, bits)
ENCODERS = {
    "h264": ("libx264", "yuv420p", {"crf": "12", "preset": "medium"}, 8),
    "h265-10": ("libx265", "yuv420p10le", {"crf": "12", "preset": "medium", "x265-params": "log-level=error"}, 10),
    "prores": ("prores_ks", "yuv422p10le", {"profile": "3"}, 10),
}
VIDEO_FORMATS = ("auto",) + tuple(ENCODERS)
AUTO_FORMAT = {".mp4": "h264", ".mkv": "h265-10", ".mov": "prores"}
FORMAT_EXTS = {"h264": (".mp4", ".mkv", ".mov"), "h265-10": (".mkv", ".mp4", ".mov"), "prores": (".mov", ".mkv")}
FRAME_FORMATS = {"png": ".png", "tiff16": ".tif"}
_PCM = {"pcm_s16le", "pcm_s24le", "pcm_s32le", "pcm_f32le", "pcm_s16be", "pcm_s24be", "pcm_s32be", "pcm_f32be"}
#: audio codecs copied untouched into each container (None: any)
AUDIO_COPY = {".mkv": None, ".mp4": {"aac", "mp3", "alac", "opus", "flac", "ac3", "eac3"},
              ".mov": {"aac", "mp3", "alac", "ac3", "eac3"} | _PCM}
#: A file path as the functions here take it.
PathLike = Union[str, "os.PathLike[str]"]

AUDIO_LEAD = 0.5   # seconds of audio muxed ahead of the last video frame


def _av():
    try:
        import av
    except ImportError:   # pragma: no cover - av is a requirement of the pack and of ComfyUI
        raise ValueError("reading and writing video needs PyAV: pip install av") from None
    # PyAV's logging is left as it is (off by default since PyAV 13): turned on, FFmpeg's decoder threads log
    # through a Python callback that needs the GIL, and closing a decoder whose threads are busy can then hang
    # (PyAV's caveats, "Logging"); it is also the host's setting, not the pack's.
    return av


def is_video_path(path: PathLike) -> bool:
    """True when ``path`` names a video file this module writes (by extension)."""
    return pathlib.Path(path).suffix.lower() in CONTAINERS


@dataclass(frozen=True)
class AudioInfo:
    codec: str
    sample_rate: int
    channels: int


@dataclass(frozen=True)
class VideoInfo:
    """What a video file holds, from its headers (nothing decoded but the first frame).

    frame_count: the container's count or estimate (None when it does not say); rate: the average frame
    rate; time_base: the video stream's time base (timestamps are multiples of it); bits: bit depth of
    the decoded pixel format; audio: the first audio stream, or None."""
    path: str
    width: int
    height: int
    frame_count: Optional[int]
    rate: Fraction
    time_base: Fraction
    bits: int
    pix_fmt: str
    audio: Optional[AudioInfo]


@dataclass(frozen=True)
class Frame:
    """One decoded frame: ``image`` (H, W, 3) float32 in [0, 1]; ``time`` its presentation time in seconds."""
    image: torch.Tensor
    time: Fraction


def _open(path):
    av = _av()
    p = str(path)
    if not os.path.isfile(p):
        raise ValueError(f"video {p!r}: no such file")
    try:
        c = av.open(p, "r")
    except Exception as exc:
        raise ValueError(f"video {p!r} cannot be opened by PyAV/FFmpeg (not a video, or an unsupported "
                         f"container): {exc}") from None
    if not c.streams.video:
        c.close()
        raise ValueError(f"video {p!r} has no video stream")
    return c


def _bits(fmt) -> int:
    return max(c.bits for c in fmt.components) if fmt is not None and fmt.components else 8


def probe_video(path: PathLike) -> VideoInfo:
    """:class:`VideoInfo` of ``path``; ValueError naming the file when it holds no decodable video."""
    with _open(path) as c:
        vs = c.streams.video[0]
        first = None
        try:
            for first in c.decode(vs):
                break
        except Exception as exc:
            raise ValueError(f"video {str(path)!r}: cannot decode a frame ({vs.codec_context.name}): {exc}") from None
        if first is None:
            raise ValueError(f"video {str(path)!r} has no frames")
        count = int(vs.frames) if vs.frames else None
        rate = Fraction(vs.average_rate) if vs.average_rate else (Fraction(vs.guessed_rate) if vs.guessed_rate else None)
        if count is None and c.duration and rate:
            count = int(round(c.duration / 1_000_000 * rate)) or None
        audio = None
        if c.streams.audio:
            a = c.streams.audio[0]
            audio = AudioInfo(a.codec_context.name, int(a.sample_rate or 0), int(a.channels or 0))
        return VideoInfo(str(path), first.width, first.height, count, rate or Fraction(24), Fraction(vs.time_base),
                         _bits(first.format), first.format.name, audio)


def iter_raw_frames(path: PathLike, start: int = 0, threads: str = "AUTO"
                    ) -> Iterator[Tuple[np.ndarray, Fraction]]:
    """Decode ``path`` frame by frame in presentation order: ``(pixels, time)``, ``pixels`` the integers the
    decoder gives (H, W, 3) RGB, uint8 for an 8-bit source, uint16 for a deeper one (:func:`frame_image`
    makes the float frame), ``time`` in seconds; a frame without a timestamp gets the previous one's plus
    1 / average rate. ``start``: the frames before it are decoded (their times checked) but not converted
    nor yielded. ``threads``: the decoder's threading (FFmpeg's ``thread_type``; its decoders give the same
    frames either way): ``AUTO`` decodes frames ahead on threads of its own; ``SLICE`` leaves none busy
    between frames, for a reader that is left open and closed at any time (closing a decoder whose frame
    threads are busy can hang if FFmpeg logs through PyAV: PyAV's caveats, "Logging"; the pack leaves PyAV's
    logging off, its default)."""
    with _open(path) as c:
        vs = c.streams.video[0]
        vs.thread_type = threads
        tb = Fraction(vs.time_base)
        step = 1 / Fraction(vs.average_rate) if vs.average_rate else Fraction(1, 24)
        last = None
        for i, f in enumerate(c.decode(vs)):
            if f.pts is not None:
                t = f.pts * tb
            else:
                t = Fraction(0) if last is None else last + step
            if last is not None and t <= last:
                raise ValueError(f"video {str(path)!r}: frame {i} has time {float(t):.6f} s, not after the "
                                 f"previous frame ({float(last):.6f} s)")
            last = t
            if i < start:
                continue
            yield f.to_ndarray(format="rgb48le" if _bits(f.format) > 8 else "rgb24"), t


def frame_image(pixels: np.ndarray) -> torch.Tensor:
    """A decoded frame's integers (:func:`iter_raw_frames`) as the (H, W, 3) float32 frame in [0, 1]."""
    if pixels.dtype == np.uint16:
        return torch.from_numpy(pixels.astype(np.float32) / 65535)
    return torch.from_numpy(pixels).float() / 255


def iter_frames(path: PathLike, start: int = 0) -> Iterator[Frame]:
    """Decode ``path`` frame by frame in presentation order: :class:`Frame` (image (H, W, 3) float32 in
    [0, 1], time in seconds): :func:`iter_raw_frames` through :func:`frame_image`."""
    for pixels, t in iter_raw_frames(path, start):
        yield Frame(frame_image(pixels), t)


def read_video(path: PathLike) -> Tuple[torch.Tensor, List[Fraction], VideoInfo]:
    """The whole clip at once (short clips, tests): frames (T, H, W, 3) float32, times (T,), info."""
    info = probe_video(path)
    frames, times = [], []
    for f in iter_frames(path):
        frames.append(f.image)
        times.append(f.time)
    return torch.stack(frames), times, info


# ---------------------------------------------------------------------------------------------- writing
def video_formats() -> Tuple[str, ...]:
    """The formats of ``ENCODERS`` whose encoder the installed PyAV/FFmpeg has."""
    av = _av()
    ok = []
    for name, (enc, *_rest) in ENCODERS.items():
        try:
            av.codec.Codec(enc, "w")
            ok.append(name)
        except Exception:
            pass
    return tuple(ok)


def resolve_format(path: PathLike, video_format: str = "auto") -> str:
    """The encoder format for output ``path`` (``auto``: by extension); ValueError naming the file, the
    format and what is allowed."""
    ext = pathlib.Path(path).suffix.lower()
    if ext not in CONTAINERS:
        raise ValueError(f"output {str(path)!r}: {ext or 'no extension'} is not a video container this pack "
                         f"writes; use {', '.join(VIDEO_EXTS)} (or a folder for frames)")
    if video_format not in VIDEO_FORMATS:
        raise ValueError(f"video format {video_format!r} is not allowed; choose one of {', '.join(VIDEO_FORMATS)}")
    fmt = AUTO_FORMAT[ext] if video_format == "auto" else video_format
    if fmt == "prores" and video_format == "auto" and fmt not in video_formats():
        fmt = "h265-10"   # a PyAV without ProRes: the other 10-bit format
    if ext not in FORMAT_EXTS[fmt]:
        raise ValueError(f"output {str(path)!r}: {fmt} cannot be written to {ext}; use {', '.join(FORMAT_EXTS[fmt])}")
    if fmt not in video_formats():
        raise ValueError(f"output {str(path)!r}: this PyAV has no {ENCODERS[fmt][0]} encoder for {fmt}; "
                         f"available: {', '.join(video_formats()) or 'none'}")
    return fmt


def _to_uint(img: torch.Tensor, bits: int) -> np.ndarray:
    scale = 255 if bits == 8 else 65535
    a = (img.detach().float().cpu().clamp(0, 1) * scale).round().numpy()
    return a.astype(np.uint8 if bits == 8 else np.uint16)


def _publish(tmp: pathlib.Path, dest: pathlib.Path) -> pathlib.Path:
    """Give ``tmp`` the name ``dest``, or ``dest.stem_NNNNN.ext`` (next free) when ``dest`` exists."""
    n = None
    for _ in range(100000):
        target = dest if n is None else dest.with_name(numbered_name(dest.stem, n, dest.suffix))
        try:
            os.link(tmp, target)    # fails if target exists: never overwrites
        except FileExistsError:
            n = next_number(dest.parent, dest.stem, dest.suffix) if n is None else n + 1
            continue
        os.unlink(tmp)
        return target
    raise ValueError(f"no free numbered name for {str(dest)!r}")


class VideoWriter:
    """Write frames (H, W, 3) in [0, 1] with their times to a video file, with the audio of ``audio_from``.

    ``with VideoWriter(dest, width, height, time_base, rate, video_format, audio_from) as w:
    w.write(image, time)`` ... ; after the block ``w.path`` is the file written (``dest`` or a numbered
    name beside it). Times are in seconds and must increase; they are stored in ``time_base`` (the input's,
    so no timestamp is rounded). ``rate`` is the nominal (average) rate given to the encoder.
    ``audio_mode``: ``None`` (no audio), ``"copy"`` or ``"aac"`` (re-encoded; see the module docstring).
    """

    def __init__(self, dest: PathLike, width: int, height: int, time_base: Fraction = Fraction(1, 90000),
                 rate: Fraction = Fraction(24), video_format: str = "auto", audio_from: Optional[PathLike] = None) -> None:
        self.dest = pathlib.Path(dest).absolute()
        self.format = resolve_format(self.dest, video_format)
        enc, self.pix_fmt, self.options, self.bits = ENCODERS[self.format]
        sub = 2 if self.pix_fmt.startswith("yuv420") else 1
        if width % sub or height % (2 if sub == 2 else 1):
            raise ValueError(f"output {str(self.dest)!r}: {self.format} needs an even width and height, "
                             f"got {width}x{height}")
        self.size, self.time_base, self.rate, self.audio_from = (width, height), Fraction(time_base), Fraction(rate), audio_from
        self.path: Optional[pathlib.Path] = None
        self.audio_mode: Optional[str] = None
        self.frames = 0
        self._last: Optional[int] = None
        self._tmp: Optional[pathlib.Path] = None
        self._out: Any = None       # the PyAV output container while open
        self._src: Any = None       # the PyAV input container of the audio
        if not self.dest.parent.is_dir():
            raise ValueError(f"output {str(self.dest)!r}: folder {str(self.dest.parent)!r} does not exist")

    # -------------------------------------------------------------- lifecycle
    def __enter__(self) -> "VideoWriter":
        av = _av()
        fd, tmp = tempfile.mkstemp(dir=self.dest.parent, prefix=f".{self.dest.stem}.", suffix=".partial" + self.dest.suffix)
        os.close(fd)
        self._tmp = pathlib.Path(tmp)
        try:
            fmt = CONTAINERS[self.dest.suffix.lower()]
            # Matroska would shift every timestamp by a copied AAC stream's priming (negative start)
            opts = {"avoid_negative_ts": "disabled"} if fmt == "matroska" else {}
            self._out = av.open(tmp, "w", format=fmt, container_options=opts)
            enc = ENCODERS[self.format][0]
            vs = self._out.add_stream(enc, rate=self.rate, options=dict(self.options))
            vs.width, vs.height = self.size
            vs.pix_fmt = self.pix_fmt
            vs.time_base = self.time_base
            vs.codec_context.time_base = self.time_base
            self._vs = vs
            if self.audio_from is not None:
                self._open_audio(av)
        except BaseException:
            self._discard()
            raise
        return self

    def _open_audio(self, av):
        src = av.open(str(self.audio_from), "r")
        if not src.streams.audio:
            src.close()
            return
        self._src, ain = src, src.streams.audio[0]
        allowed = AUDIO_COPY[self.dest.suffix.lower()]
        self._ain_tb = Fraction(ain.time_base)
        if allowed is None or ain.codec_context.name in allowed:
            self._as = self._out.add_stream_from_template(ain)
            self.audio_mode = "copy"
        else:
            cc = ain.codec_context
            self._as = self._out.add_stream("aac", rate=cc.sample_rate, layout=cc.layout.name)
            self._as.bit_rate = 320_000
            self._resampler = av.AudioResampler(format="fltp", layout=cc.layout.name, rate=cc.sample_rate)
            self.audio_mode = "aac"
        self._apackets = src.demux(ain)
        self._pending = None

    def __exit__(self, exc_type: Optional[type], exc: Optional[BaseException], tb: Any) -> Literal[False]:
        if exc_type is not None:
            self._discard()
            return False
        try:
            if self.frames == 0:
                raise ValueError(f"output {str(self.dest)!r}: no frames were written")
            for p in self._vs.encode(None):
                self._out.mux(p)
            self._pump_audio(None)
            if self.audio_mode == "aac":
                for p in self._as.encode(None):
                    self._out.mux(p)
            self._close()
            assert self._tmp is not None, "__exit__ without __enter__"
            os.chmod(self._tmp, 0o666 & ~process_umask())
            self.path = _publish(self._tmp, self.dest)
            self._tmp = None
        except BaseException:
            self._discard()
            raise
        return False

    def _close(self):
        for c in (self._out, self._src):
            if c is not None:
                c.close()
        self._out = self._src = None

    def _discard(self):
        try:
            self._close()
        except Exception:
            pass
        if self._tmp is not None:
            try:
                self._tmp.unlink()
            except OSError:
                pass
            self._tmp = None

    # -------------------------------------------------------------- frames and audio
    def write(self, image: torch.Tensor, time: Union[Fraction, float]) -> None:
        """Encode one frame (H, W, 3) in [0, 1] shown at ``time`` seconds (after the previous frame's)."""
        av = _av()
        if image.dim() != 3 or image.shape[-1] != 3 or tuple(image.shape[1::-1]) != self.size:
            raise ValueError(f"output {str(self.dest)!r}: frame {self.frames} is {tuple(image.shape)}, expected "
                             f"({self.size[1]}, {self.size[0]}, 3)")
        pts = round(Fraction(time) / self.time_base)
        if self._last is not None and pts <= self._last:
            raise ValueError(f"output {str(self.dest)!r}: frame {self.frames} at {float(time):.6f} s is not after "
                             f"the previous frame")
        arr = _to_uint(image, self.bits)
        f = av.VideoFrame.from_ndarray(arr, format="rgb24" if self.bits == 8 else "rgb48le")
        f.pts, f.time_base = pts, self.time_base
        for p in self._vs.encode(f):
            self._out.mux(p)
        self._last = pts
        self.frames += 1
        self._pump_audio(Fraction(time) + Fraction(AUDIO_LEAD))

    def _pump_audio(self, until: Optional[Fraction]):
        """Mux source audio packets up to ``until`` seconds (None: all that is left)."""
        if self._src is None:
            return
        while True:
            pkt = self._pending
            if pkt is None:
                pkt = next(self._apackets, None)
                if pkt is None:
                    self._src.close()
                    self._src = None
                    return
                if pkt.dts is None:   # the demuxer's final flush packet
                    continue
            t = pkt.pts * self._ain_tb if pkt.pts is not None else None
            if until is not None and t is not None and t > until:
                self._pending = pkt
                return
            self._pending = None
            if self.audio_mode == "copy":
                pkt.stream = self._as
                self._out.mux(pkt)
            else:
                for fr in pkt.decode():
                    for rf in self._resampler.resample(fr):
                        for p in self._as.encode(rf):
                            self._out.mux(p)


# ---------------------------------------------------------------------------------------------- folders
def save_frame(image: torch.Tensor, path: PathLike, kind: str = "png") -> None:
    """Write one frame (H, W, 3) in [0, 1]: ``png`` 8-bit RGB or ``tiff16`` 16-bit RGB TIFF (rounded)."""
    if kind not in FRAME_FORMATS:
        raise ValueError(f"frame format {kind!r} is not allowed; choose one of {', '.join(FRAME_FORMATS)}")
    if image.dim() != 3 or image.shape[-1] != 3:
        raise ValueError(f"frame for {str(path)!r} must be (H, W, 3), got {tuple(image.shape)}")
    try:
        if kind == "png":
            from PIL import Image
            Image.fromarray(_to_uint(image, 8), "RGB").save(str(path), format="PNG", compress_level=4)
        else:
            import tifffile
            tifffile.imwrite(str(path), _to_uint(image, 16), photometric="rgb")
    except OSError as exc:
        raise ValueError(f"cannot write {str(path)!r}: {exc}") from None


def write_timecodes(path: PathLike, times: Sequence[Union[Fraction, float]]) -> None:
    """Frame times as a Matroska "timecode format v2" file (one time in milliseconds per line;
    ``mkvmerge --timestamps 0:PATH`` restores them)."""
    lines = ["# timecode format v2"] + [f"{float(t) * 1000:.6f}".rstrip("0").rstrip(".") for t in times]
    pathlib.Path(path).write_text("\n".join(lines) + "\n")


def copy_audio(src: PathLike, dest: PathLike) -> bool:
    """Copy the first audio stream of ``src`` untouched (packets) into a Matroska audio file ``dest``
    (.mka); False when ``src`` has none."""
    av = _av()
    with av.open(str(src), "r") as c:
        if not c.streams.audio:
            return False
        ain = c.streams.audio[0]
        with av.open(str(dest), "w", format="matroska") as out:
            aout = out.add_stream_from_template(ain)
            for pkt in c.demux(ain):
                if pkt.dts is None:
                    continue
                pkt.stream = aout
                out.mux(pkt)
    return True
