"""Small video clips made with PyAV for the tests: frames at given times (a variable-rate clip too) muxed with
a 440 Hz stereo tone at 48 kHz (``tests/core/test_dloral_video.py``, ``tests/core/test_dloral_ship.py``)."""
from fractions import Fraction

import av
import numpy as np
import torch

VFR_MS = (0, 40, 80, 150, 190, 260)   # irregular: 40, 40, 70, 40, 70 ms
SR = 48000


def _tone(seconds):
    t = np.arange(int(round(seconds * SR))) / SR
    s = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    return np.stack([s, 0.8 * s])   # (2, N): the channels differ, so a swap would show


def _frames(n=6, h=32, w=32):
    g = torch.Generator().manual_seed(0)
    base = torch.rand(1, h // 8, w // 8, 3, generator=g)
    # smooth content (upsampled noise moving across the frames): codecs keep it well
    out = []
    for i in range(n):
        f = torch.nn.functional.interpolate(base.permute(0, 3, 1, 2), size=(h, w), mode="bicubic",
                                            align_corners=False)[0].permute(1, 2, 0)
        out.append((torch.roll(f, i, dims=1) * 0.8 + 0.1).clamp(0, 1))
    return torch.stack(out)


def make_clip(path, times_ms=VFR_MS, acodec="aac", frames=None, audio=True):
    """A clip at ``path``: ``frames`` (T, H, W, 3) shown at ``times_ms``, with the tone (as long as the clip)."""
    frames = _frames(len(times_ms)) if frames is None else frames
    tb = Fraction(1, 1000)
    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=25, options={"crf": "0"})
        v.width, v.height, v.pix_fmt = frames.shape[2], frames.shape[1], "yuv444p"
        v.time_base = v.codec_context.time_base = tb
        if audio:
            a = out.add_stream(acodec, rate=SR, layout="stereo")
        for img, t in zip(frames, times_ms):
            f = av.VideoFrame.from_ndarray((img.numpy() * 255).round().astype(np.uint8), format="rgb24")
            f.pts, f.time_base = t, tb
            for p in v.encode(f):
                out.mux(p)
        for p in v.encode():
            out.mux(p)
        if audio:
            tone = _tone((times_ms[-1] + 40) / 1000)
            fmt = a.codec_context.format.name
            arr = tone if fmt == "fltp" else (tone.T.reshape(1, -1) * 32767).round().astype(np.int16)
            af = av.AudioFrame.from_ndarray(arr, format=fmt, layout="stereo")
            af.sample_rate, af.pts = SR, 0
            for p in a.encode(af):
                out.mux(p)
            for p in a.encode():
                out.mux(p)
    return frames
