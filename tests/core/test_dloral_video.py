"""dloral/video.py: video files in and out with their timing and sound (tiny clips, 32x32, 6 frames).

The inputs are made here with PyAV: frames at given times (a variable-rate clip too) muxed with a 440 Hz
stereo tone at 48 kHz, as AAC in .mp4 or 16-bit PCM in .mov.
"""
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from dloral import video as V
from _avclips import SR, VFR_MS, _frames, _tone, make_clip  # noqa: F401 - the clips of these tests

CFR_MS = (0, 40, 80, 120, 160, 200)


def decode_audio(path):
    """(channels, samples) float, sample rate, time of the first sample (s)."""
    with av.open(str(path)) as c:
        s = c.streams.audio[0]
        res = av.AudioResampler(format="fltp", layout="stereo", rate=s.sample_rate)
        chunks, start = [], None
        for fr in c.decode(s):
            if start is None:
                start = float(fr.pts * fr.time_base) if fr.pts is not None else 0.0
            for r in res.resample(fr):
                chunks.append(r.to_ndarray())
        return np.concatenate(chunks, 1), s.sample_rate, start


def audio_packets(path):
    with av.open(str(path)) as c:
        return [bytes(p) for p in c.demux(c.streams.audio[0]) if p.dts is not None]


def roundtrip(src, dst, fmt="auto"):
    frames, times, info = V.read_video(src)
    with V.VideoWriter(dst, info.width, info.height, info.time_base, info.rate, fmt, audio_from=src) as w:
        for f, t in zip(frames, times):
            w.write(f, t)
    return w


def test_read_gives_frames_times_rate_and_audio(tmp_path):
    src = tmp_path / "in.mp4"
    want = make_clip(src)
    frames, times, info = V.read_video(src)
    assert frames.shape == (6, 32, 32, 3) and frames.dtype == torch.float32
    assert times == [Fraction(ms, 1000) for ms in VFR_MS]
    assert (frames - want).abs().max() <= 3 / 255   # lossless H.264 4:4:4: 8-bit limited-range YUV rounding only
    assert info.audio == V.AudioInfo("aac", SR, 2) and info.bits == 8 and info.frame_count == 6
    # the iterator streams: the first frame comes before the file is decoded to its end
    it = V.iter_frames(src)
    assert next(it).time == 0
    it.close()


@pytest.mark.parametrize("acodec,ext,fmt,mode", [
    ("aac", ".mp4", "h264", "copy"), ("aac", ".mkv", "h265-10", "copy"),
    ("pcm_s16le", ".mov", "prores", "copy"), ("pcm_s16le", ".mp4", "h264", "aac")])
def test_roundtrip_keeps_timing_and_audio(tmp_path, acodec, ext, fmt, mode):
    src = tmp_path / ("in.mp4" if acodec == "aac" else "in.mov")
    want = make_clip(src, acodec=acodec)
    w = roundtrip(src, tmp_path / f"out{ext}")
    assert (w.format, w.audio_mode, w.path.name) == (fmt, mode, f"out{ext}")
    frames, times, info = V.read_video(w.path)
    assert frames.shape == want.shape
    assert times == [Fraction(ms, 1000) for ms in VFR_MS]        # variable rate kept frame by frame
    assert (frames - want).abs().mean() < 0.03   # mostly chroma subsampling (4:2:0 alone: 0.017 here)
    a0, sr0, st0 = decode_audio(src)
    a1, sr1, st1 = decode_audio(w.path)
    assert sr1 == sr0 == SR and info.audio.channels == 2
    # Matroska has no edit list: AAC's priming frame (1024 samples) is decoded at -21 ms, before the
    # first frame; compare the samples by their time
    k = 1024 if (ext, acodec) == (".mkv", "aac") else 0
    assert abs((st0 - st1) - k / SR) <= 1e-3, (st0, st1)            # Matroska counts in ms
    a1 = a1[:, k:]
    assert abs(a1.shape[1] - a0.shape[1]) / SR < 0.04                # duration within a frame
    if mode == "copy":
        assert audio_packets(w.path) == audio_packets(src)       # untouched: the same bytes
        np.testing.assert_array_equal(a1, a0)
    else:   # PCM cannot go into .mp4: re-encoded to AAC, close to the tone (AAC delays it by its priming)
        n = min(a0.shape[1], a1.shape[1]) - 4000
        best = max(np.corrcoef(a0[0, 2000:2000 + n - 2048], a1[0, 2000 + k:2000 + k + n - 2048])[0, 1]
                   for k in range(0, 2048))
        assert best > 0.99


def test_constant_rate_stays_constant(tmp_path):
    src = tmp_path / "cfr.mp4"
    make_clip(src, times_ms=CFR_MS)
    w = roundtrip(src, tmp_path / "out.mp4")
    _, times, info = V.read_video(w.path)
    assert times == [Fraction(ms, 1000) for ms in CFR_MS] and info.rate == 25


def test_ten_bit_is_closer_than_eight_bit_on_a_gradient(tmp_path):
    x = torch.linspace(0.30, 0.36, 64)                # a smooth, shallow grey ramp: 8-bit bands it
    img = x.view(1, 1, 64, 1).expand(6, 32, 64, 3).contiguous()
    err = {}
    for ext, fmt in ((".mp4", "h264"), (".mkv", "h265-10"), (".mov", "prores")):
        with V.VideoWriter(tmp_path / f"g{ext}", 64, 32, Fraction(1, 25), Fraction(25), fmt) as w:
            for i in range(6):
                w.write(img[i], Fraction(i, 25))
        got, _, info = V.read_video(w.path)
        assert info.bits == (8 if fmt == "h264" else 10) and w.audio_mode is None
        err[fmt] = (got - img).abs().mean().item()
    assert err["h264"] < 2 / 255
    assert err["h265-10"] < err["h264"] / 2 and err["prores"] < err["h264"] / 2, err


def test_frame_folders_are_exact(tmp_path):
    import tifffile
    from PIL import Image
    g = torch.Generator().manual_seed(1)
    img = torch.rand(24, 40, 3, generator=g)
    V.save_frame(img, tmp_path / "f.png", "png")
    V.save_frame(img, tmp_path / "f.tif", "tiff16")
    png = np.asarray(Image.open(tmp_path / "f.png"))
    tif = tifffile.imread(tmp_path / "f.tif")
    assert png.dtype == np.uint8 and tif.dtype == np.uint16 and tif.shape == (24, 40, 3)
    np.testing.assert_array_equal(png, (img.numpy().astype(np.float64) * 255).round().astype(np.uint8))
    np.testing.assert_array_equal(tif, (img.numpy().astype(np.float64) * 65535).round().astype(np.uint16))
    with pytest.raises(ValueError, match="'jpeg' is not allowed; choose one of png, tiff16"):
        V.save_frame(img, tmp_path / "f.jpg", "jpeg")


def test_timecodes_and_audio_beside_frames(tmp_path):
    src = tmp_path / "in.mp4"
    make_clip(src)
    _, times, _ = V.read_video(src)
    V.write_timecodes(tmp_path / "t.txt", times)
    assert (tmp_path / "t.txt").read_text().splitlines() == ["# timecode format v2", "0", "40", "80", "150",
                                                             "190", "260"]
    assert V.copy_audio(src, tmp_path / "a.mka")
    assert audio_packets(tmp_path / "a.mka") == audio_packets(src)
    make_clip(tmp_path / "silent.mp4", audio=False)
    assert not V.copy_audio(tmp_path / "silent.mp4", tmp_path / "b.mka") and not (tmp_path / "b.mka").exists()


def test_bad_inputs_and_formats_are_refused_by_name(tmp_path):
    (tmp_path / "junk.mp4").write_bytes(b"\0" * 200)
    with pytest.raises(ValueError, match=r"junk\.mp4.*cannot be opened by PyAV"):
        V.probe_video(tmp_path / "junk.mp4")
    with pytest.raises(ValueError, match=r"missing\.mp4.*no such file"):
        V.probe_video(tmp_path / "missing.mp4")
    with pytest.raises(ValueError, match=r"out\.avi.*\.avi is not a video container.*\.mp4, \.mov, \.mkv"):
        V.VideoWriter(tmp_path / "out.avi", 32, 32)
    with pytest.raises(ValueError, match=r"out\.mp4.*prores cannot be written to \.mp4; use \.mov, \.mkv"):
        V.VideoWriter(tmp_path / "out.mp4", 32, 32, video_format="prores")
    with pytest.raises(ValueError, match="video format 'vp9' is not allowed; choose one of auto, h264"):
        V.VideoWriter(tmp_path / "out.mp4", 32, 32, video_format="vp9")
    with pytest.raises(ValueError, match="needs an even width and height, got 33x32"):
        V.VideoWriter(tmp_path / "out.mp4", 33, 32)
    with pytest.raises(ValueError, match="does not exist"):
        V.VideoWriter(tmp_path / "nowhere" / "out.mp4", 32, 32)
    assert set(V.video_formats()) == {"h264", "h265-10", "prores"}   # PyAV's wheels carry all three


def _entries(d):
    return sorted(p.name for p in d.iterdir())


def test_no_partial_file_on_failure_and_no_overwrite(tmp_path):
    src = tmp_path / "in.mp4"
    frames = make_clip(src)
    before = _entries(tmp_path)
    # a frame of the wrong size mid-write (the encoder would fail on it): refused, nothing left
    with pytest.raises(ValueError, match=r"out\.mp4.*frame 3 is \(16, 32, 3\), expected \(32, 32, 3\)"):
        with V.VideoWriter(tmp_path / "out.mp4", 32, 32, audio_from=src) as w:
            for i in range(3):
                w.write(frames[i], Fraction(i, 25))
            w.write(frames[3][:16], Fraction(3, 25))
    assert _entries(tmp_path) == before
    # the caller fails (or Ctrl-C) mid-write: the same
    with pytest.raises(KeyboardInterrupt):
        with V.VideoWriter(tmp_path / "out.mkv", 32, 32, audio_from=src) as w:
            w.write(frames[0], Fraction(0))
            raise KeyboardInterrupt
    assert _entries(tmp_path) == before
    # a real encoder error: libx264 at an impossible option fails when opened, inside the block
    old = V.ENCODERS["h264"]
    V.ENCODERS["h264"] = (old[0], old[1], {"preset": "no-such-preset"}, old[3])
    try:
        with pytest.raises(Exception):
            with V.VideoWriter(tmp_path / "out.mp4", 32, 32) as w:
                w.write(frames[0], Fraction(0))
    finally:
        V.ENCODERS["h264"] = old
    assert _entries(tmp_path) == before
    # times must increase
    with pytest.raises(ValueError, match="is not after the previous frame"):
        with V.VideoWriter(tmp_path / "out.mp4", 32, 32) as w:
            w.write(frames[0], Fraction(1, 25))
            w.write(frames[1], Fraction(1, 25))
    assert _entries(tmp_path) == before
    # an existing file is never overwritten: numbered names, in order
    (tmp_path / "out.mp4").write_bytes(b"earlier")
    names = [roundtrip(src, tmp_path / "out.mp4").path.name for _ in range(2)]
    assert names == ["out_00001.mp4", "out_00002.mp4"]
    assert (tmp_path / "out.mp4").read_bytes() == b"earlier"
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


# ---------------------------------------------------------------------------------------------- the CLI
def _cli(tmp_path, inp, out, *extra):
    import _dloral_models as dm
    import dloral.__main__ as cli
    from dloral import save_weights
    wpath = tmp_path / "w.safetensors"
    if not wpath.exists():
        save_weights(dm.weights(), str(wpath))
    argv = ["upscale", str(inp), "--out", str(out), "--weights", str(wpath), "--checkpoint", str(wpath),
            "--process-size", "64", "--quiet", *extra]
    return cli.main(argv, loader=lambda req: dm.models())


def test_cli_video_in_video_out_keeps_sound_and_timing(tmp_path, capsys):
    src = tmp_path / "in.mp4"
    make_clip(src, frames=_frames(6, 16, 16))
    assert _cli(tmp_path, src, tmp_path / "x4.mp4") == 0, capsys.readouterr().err
    assert "x4.mp4" in (said := capsys.readouterr().out) and "h264 8-bit, audio copy" in said
    frames, times, info = V.read_video(tmp_path / "x4.mp4")
    assert frames.shape == (6, 64, 64, 3) and info.bits == 8
    assert times == [Fraction(ms, 1000) for ms in VFR_MS]
    assert audio_packets(tmp_path / "x4.mp4") == audio_packets(src)
    # 10-bit, and the same name again: a numbered new file, the first one kept
    assert _cli(tmp_path, src, tmp_path / "x4.mkv") == 0
    assert _cli(tmp_path, src, tmp_path / "x4.mp4", "--video-format", "h265-10") == 0
    assert V.probe_video(tmp_path / "x4.mkv").bits == 10 and V.probe_video(tmp_path / "x4_00001.mp4").bits == 10
    assert V.read_video(tmp_path / "x4_00001.mp4")[1] == times
    # a format the container cannot hold is refused before any model loads, nothing written
    err_before = sorted(p.name for p in tmp_path.iterdir())
    assert _cli(tmp_path, src, tmp_path / "p.mp4", "--video-format", "prores") == 2
    assert "prores cannot be written to .mp4; use .mov, .mkv" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == err_before


def test_cli_frame_folders_keep_timing_and_sound(tmp_path, capsys):
    import tifffile
    src = tmp_path / "in.mp4"
    make_clip(src, frames=_frames(6, 16, 16))
    assert _cli(tmp_path, src, tmp_path / "tif", "--frames", "tiff16") == 0, capsys.readouterr().err
    names = sorted(p.name for p in (tmp_path / "tif").iterdir())
    assert names == ["audio.mka"] + [f"frame_{i:05d}.tif" for i in range(6)] + ["timecodes.txt"]
    t = tifffile.imread(tmp_path / "tif" / "frame_00000.tif")
    assert t.shape == (64, 64, 3) and t.dtype == np.uint16
    assert audio_packets(tmp_path / "tif" / "audio.mka") == audio_packets(src)
    assert (tmp_path / "tif" / "timecodes.txt").read_text().split()[-1] == "260"
    # frames of the same run as 8-bit PNG: the same pictures
    assert _cli(tmp_path, src, tmp_path / "png") == 0
    from PIL import Image
    p = np.asarray(Image.open(tmp_path / "png" / "frame_00000.png")).astype(np.float64)
    assert np.abs(p / 255 - t / 65535).max() <= 0.5 / 255 + 1e-6
    # a folder of frames to a video at --fps
    assert _cli(tmp_path, tmp_path / "png", tmp_path / "from_png.mov", "--fps", "25") == 0
    fr, times, info = V.read_video(tmp_path / "from_png.mov")
    assert fr.shape == (6, 256, 256, 3) and times == [Fraction(i, 25) for i in range(6)] and info.audio is None
