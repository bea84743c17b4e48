"""`upscale --chunk N`: a job folder beside --out keeps finished chunks; the result is the one-pass result
byte for byte; an interrupted run leaves no output and resumes without redoing finished chunks; other
settings or another input are refused, naming what differs. Tiny stand-in models through the loader."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import _dloral_models as dm
from dloral import convert_official, save_weights
from dloral.__main__ import _save, main
from dloral.job import job_dir
from _dloral_synth import make_official, unet_shapes
from _testenv import REPO

N = 7


def Loader(stop_at=None):
    """Tiny models; UNet calls counted; ``stop_at``: the call (1-based) that raises KeyboardInterrupt."""
    return dm.CountingLoader(lambda request: dm.models(), stop_at)


def _never(request):
    raise AssertionError("the loader was reached")


@pytest.fixture()
def files(tmp_path):
    d = tmp_path / "frames"
    d.mkdir()
    for i, f in enumerate(dm.frames(N)):
        _save(f, d / f"f{i:03d}.png")
    w = tmp_path / "w.safetensors"
    save_weights(convert_official(make_official(unet_shapes(), seed=4)[0]), str(w))
    ck = tmp_path / "ck.safetensors"
    ck.write_bytes(b"stand-in checkpoint: the loader is the test's")
    return d, w, ck


def _upscale(files, out, *extra, loader=None):
    d, w, ck = files
    return main(["upscale", str(d), "--out", str(out), "--weights", str(w), "--checkpoint", str(ck),
                 "--process-size", "64", "--window", "2", "--quiet", *extra], loader=loader or Loader())


def _bytes(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_chunked_equals_one_pass_and_resumes(files, tmp_path, capsys):
    assert _upscale(files, tmp_path / "one") == 0
    ref = _bytes(tmp_path / "one")
    assert len(ref) == N
    for chunk in ("2", "4"):
        out = tmp_path / f"c{chunk}"
        assert _upscale(files, out, "--chunk", chunk) == 0
        assert _bytes(out) == ref and not job_dir(out).exists()
    # interrupted in chunk 2 (the third UNet call: one window per chunk of 2)
    out = tmp_path / "resumed"
    stop = Loader(stop_at=3)
    assert _upscale(files, out, "--chunk", "2", loader=stop) == 130
    err = capsys.readouterr().err
    assert "2 finished chunks kept in" in err and "resumes" in err
    job = job_dir(out)
    assert not out.exists() and sorted(p.name for p in job.iterdir()) == ["manifest.json", "part_00000", "part_00001"]
    # other settings, another input: refused before any model loads, naming what differs
    assert _upscale(files, out, "--chunk", "2", "--color-fix", "wavelet", loader=_never) == 2
    err = capsys.readouterr().err
    assert "other settings or inputs" in err and '"color_fix": "wavelet"' in err and str(job) in err
    assert _upscale(files, out, "--chunk", "4", loader=_never) == 2
    assert "chunk: 2 then, 4 now" in capsys.readouterr().err
    d = files[0]
    saved = (d / "f006.png").read_bytes()
    _save(torch.zeros(3, 16, 16), d / "f006.png")
    assert _upscale(files, out, "--chunk", "2", loader=_never) == 2
    assert "input: " in capsys.readouterr().err
    (d / "f006.png").write_bytes(saved)
    # the same command resumes: chunks 2 and 3 only (two UNet calls), the one-pass frames
    again = Loader()
    assert _upscale(files, out, "--chunk", "2", loader=again) == 0
    assert again.calls == 2 and _bytes(out) == ref and not job.exists()


def test_chunk_must_hold_whole_windows(files, tmp_path, capsys):
    assert _upscale(files, tmp_path / "o", "--chunk", "3", loader=_never) == 2
    assert "chunk (--chunk): 3 is not a positive multiple of window (--window) (2)" in capsys.readouterr().err
    assert not job_dir(tmp_path / "o").exists()


def test_chunked_video_output_same_file(files, tmp_path):
    """ProRes (.mov) is bit-reproducible, so the files are compared whole: the parts give the encoder the
    one-pass integers. (x264 and x265 are not reproducible run to run here even in one pass: two one-pass
    .mp4 runs decode up to 19 levels of 255 apart, so those formats are not compared.)"""
    assert _upscale(files, tmp_path / "one.mov") == 0
    assert _upscale(files, tmp_path / "ch.mov", "--chunk", "2") == 0
    assert (tmp_path / "one.mov").read_bytes() == (tmp_path / "ch.mov").read_bytes()


KILLED = r'''
import sys, time
sys.path[:0] = [{tests!r}, {repo!r}]
import _dloral_models as dm
from dloral.__main__ import main
calls = [0]
def loader(request):
    m = dm.models()
    unet = m.unet
    def slow(*a):
        calls[0] += 1
        if calls[0] >= 3:
            time.sleep(600)     # killed here, in the middle of chunk 2
        return unet(*a)
    m.unet = slow
    return m
sys.exit(main(sys.argv[1:], loader=loader))
'''


def test_killed_process_leaves_no_output_and_resumes(files, tmp_path):
    """SIGKILL in the middle of a chunk (no clean-up runs): no --out, only whole parts; the rerun resumes."""
    d, w, ck = files
    out = tmp_path / "k.mp4"
    code = KILLED.format(tests=str(REPO / "tests"), repo=str(REPO))
    args = ["upscale", str(d), "--out", str(out), "--weights", str(w), "--checkpoint", str(ck),
            "--process-size", "64", "--window", "2", "--chunk", "2", "--quiet"]
    p = subprocess.Popen([sys.executable, "-c", code, *args], cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"))
    job = job_dir(out)
    deadline = time.time() + 120
    while not (job / "part_00001").exists() and time.time() < deadline and p.poll() is None:
        time.sleep(0.2)
    time.sleep(1.0)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert (job / "part_00001").exists(), "the run did not get to chunk 2"
    assert not out.exists() and not list(tmp_path.glob("*.mp4")) and not list(tmp_path.glob(".k.*partial*"))
    names = sorted(p.name for p in job.iterdir() if not p.name.startswith("."))
    hidden = [p.name for p in job.iterdir() if p.name.startswith(".")]
    assert names == ["manifest.json", "part_00000", "part_00001"]
    assert len(hidden) == 1 and hidden[0].startswith(".part_00002.")   # the chunk it was in: hidden, not a part
    again = Loader()
    assert _upscale(files, out, "--chunk", "2", loader=again) == 0
    assert again.calls == 2 and out.exists() and not job.exists()
