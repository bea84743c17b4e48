"""What a Ray worker that does not see the driver's files is sent for a chunk (issue 22 item 3, ``dloral/batch.py``):
only the frames the chunk reads (``Chunk.reads``: its own and the carried previous frame; the last planned chunk
to the end of the clip), not the whole clip: a frame folder's files as they are, a video's decoded frames as
lossless PNG with their times. The worker reads them to the frames it would read from the input, bit for bit.

The end-to-end test runs the batch with ``--chunk`` through the driver's ``ship`` and ``land`` and a worker of
this process in place of Ray's actors (``run_batch`` stood in: each unit pickled as Ray would carry it, the
inputs renamed away while the worker runs, so it cannot read them); the outputs equal the one-pass run's byte
for byte. The same path on two real network stacks is ``test_ray_two_hosts.py``'s."""
import json
import os
import pickle
from fractions import Fraction

import cv2
import numpy as np
import pytest
import torch

import _dloral_models as dm
from _dloral_synth import make_official, unet_shapes
from atelier_ray import Done, JobStats, Outcome
from dloral import convert_official, save_weights
from dloral import video as V
from dloral.__main__ import _save, main
from dloral.chunks import ChunkPlan, chunk_input
from dloral.cliargs import FrameRange, RangeReader, _frames, read_range

N, CHUNK = 40, 8


def test_a_chunk_reads_exactly_the_frames_it_names():
    """``chunk_input`` pulls exactly ``Chunk.reads`` of the stream (clipped to the clip), so sending those
    frames is all a worker needs; the carried frame is ``start - 1``."""
    plan = ChunkPlan(CHUNK, 2)
    for total in (N, N - 3):
        n = plan.count(total)
        for c in [*plan.chunks(total), plan.last(n - 1), plan.last(n - 2)]:
            pulled = []

            def stream():
                for i in range(c.read_from, total):
                    pulled.append(i)
                    yield torch.tensor(float(i))
            prev, span = chunk_input(stream(), c, first=c.read_from)
            got = [int(f) for f in span]
            assert pulled == list(range(*c.reads)[:total - c.read_from]), (total, c)
            assert got == list(range(c.start, min(c.stop, total)))
            assert (prev is None) == (c.start == 0) and (prev is None or int(prev) == c.start - 1)


def _same(a, b):
    assert len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def test_a_frame_range_reads_as_the_input_does(tmp_path):
    """A range of a frame folder (the files' bytes as they are), of an 8-bit video (H.264) and of a 10-bit
    one (ProRes: 16-bit PNG) gives the frames and times the input gives, bit for bit; past the end, none."""
    d = tmp_path / "frames"
    d.mkdir()
    for i, f in enumerate(dm.frames(7)):
        _save(f, d / f"f{i:03d}.png")
    (d / "notes.txt").write_text("not a frame")
    r = read_range(d, 2, 5)
    assert r.first == 2 and r.times is None and r.images == tuple((d / f"f{i:03d}.png").read_bytes() for i in (2, 3, 4))
    _same(list(_frames(r, start=3)), list(_frames(d, start=3))[:2])
    for ext, fmt in ((".mp4", "h264"), (".mov", "prores")):
        v = tmp_path / f"v{ext}"
        with V.VideoWriter(v, 32, 32, Fraction(1, 25), Fraction(25), fmt) as w:
            for i, f in enumerate(dm.frames(7, 32, 32, seed=3)):
                w.write(f.permute(1, 2, 0), Fraction(i, 25))
        r = read_range(v, 2, 5)
        assert r.first == 2 and len(r.images) == 3 and r.nbytes < v.stat().st_size * 10
        deep = cv2.imdecode(np.frombuffer(r.images[0], np.uint8), cv2.IMREAD_UNCHANGED).dtype == np.uint16
        assert deep == (fmt == "prores"), fmt
        t_in, t_r = [], []
        _same(list(_frames(r, t_r, start=3)), list(_frames(v, t_in, start=3))[:2])
        assert t_r == t_in[:2] == [Fraction(3, 25), Fraction(4, 25)]
        assert read_range(v, 9, 12) == FrameRange(9, (), ())
    with pytest.raises(ValueError, match="starting at frame 2"):
        next(_frames(r, start=1))



def test_a_range_reader_reads_a_videos_chunks_in_one_pass(tmp_path, monkeypatch):
    """The driver's reader: a video's chunk ranges asked in order come from one decoder (each frame decoded
    once, the shared frame kept), equal to reading each range from the start; a range asked again (a retried
    chunk) or after the end starts a decoder of its own and gives the same data."""
    import dloral.cliargs as C
    v = tmp_path / "v.mp4"
    with V.VideoWriter(v, 32, 32, Fraction(1, 25), Fraction(25), "h264") as w:
        for i, f in enumerate(dm.frames(20, 32, 32, seed=5)):
            w.write(f.permute(1, 2, 0), Fraction(i, 25))
    plan = ChunkPlan(4, 2)
    ranges = [c.reads for c in plan.chunks(20)][:-1] + [plan.last(4).reads]
    want = [read_range(v, *r) for r in ranges]
    assert [(r.first, len(r.images)) for r in want] == [(0, 4), (3, 5), (7, 5), (11, 5), (15, 5)]
    starts, decoded = [], []
    real = C.iter_raw_frames

    def counted(path, start=0, threads="AUTO"):
        starts.append((start, threads))
        for f in real(path, start, threads):
            decoded.append(f[1])
            yield f
    monkeypatch.setattr(C, "iter_raw_frames", counted)
    with RangeReader() as read:
        assert [read(v, *r) for r in ranges] == want
        assert starts == [(0, "SLICE")] and decoded == [Fraction(i, 25) for i in range(20)]
        assert read(v, *ranges[2]) == want[2] and [s for s, _ in starts] == [0, 7]
        assert read(v, 30, 34) == FrameRange(30, (), ())
        assert read(v, 19, 20) == read_range(v, 19, 20) and read(v, 19, 20).times == (Fraction(19, 25),)
    assert not read.open

@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A 40-frame folder and a 40-frame variable-rate H.264 clip with a tone, 16x16; the tiny weights."""
    from _avclips import make_clip
    root = tmp_path_factory.mktemp("ship")
    d = root / "in" / "folder"
    d.mkdir(parents=True)
    for i, f in enumerate(dm.frames(N, seed=1)):
        _save(f, d / f"f{i:03d}.png")
    make_clip(root / "in" / "clip.mp4", times_ms=[40 * i + 10 * (i % 3) for i in range(N)],
              frames=dm.frames(N, seed=2).permute(0, 2, 3, 1))
    save_weights(convert_official(make_official(unet_shapes(), seed=0)[0]), str(root / "w.safetensors"))
    (root / "ck.safetensors").write_bytes(b"stand-in: the tiny loader reads no checkpoint")
    return root


def _args(root, out, *extra):
    return ["upscale", str(root / "in" / "folder"), str(root / "in" / "clip.mp4"), "--out", str(out),
            "--weights", str(root / "w.safetensors"), "--checkpoint", str(root / "ck.safetensors"),
            "--process-size", "64", "--window", "2", "--batch-ext", "frames", *extra]


def _tree(out):
    """file -> bytes; a Matroska sound file -> its audio packets and times (the muxer writes a random UID)."""
    return {str(p.relative_to(out)): _packets(p) if p.suffix == ".mka" else p.read_bytes()
            for p in sorted(out.rglob("*")) if p.is_file()}


def _packets(path):
    import av
    with av.open(str(path)) as c:
        s = c.streams.audio[0]
        return s.codec_context.name, s.sample_rate, [(p.pts, bytes(p)) for p in c.demux(s) if p.size]


@pytest.mark.parametrize("file_smaller", [False, True])
def test_shipped_chunks_hold_only_their_frames_and_give_the_one_pass_output(inputs, tmp_path, monkeypatch, capsys,
                                                                            file_smaller):
    """``--chunk 8`` over a worker that sees none of the driver's files: each chunk is sent the frames
    ``[start - 1, stop)`` only (9 frames, 8 for the first), so the bytes sent per chunk are bounded by its
    frames, not the clip's (before: the whole clip, 5 times per clip); the worker reads no input file; the
    stitched outputs (frames, timecodes, the sound copied on the driver) equal the one-pass run's byte for byte.
    ``file_smaller``: the video's decoded frames made to weigh more than its file, which is then sent instead."""
    import dloral.batch as B
    from _dloral_tiny_cli import tiny_loader
    sent = {}

    def stand_in(work, make_worker, *, ship, land, on_outcome, **_):
        """Ray's part in this process: each unit pickled to and from a worker that sees no input."""
        worker, outcomes = make_worker(), []
        for it in work:
            o = Outcome(it, attempts=1, worker="stand-in")
            s = ship(it.payload, False)
            if isinstance(s, Done):
                o.result = s.result
            else:
                sent[it.key] = s.data
                hidden = inputs / "hidden"
                os.rename(inputs / "in", hidden)   # the worker's machine has no such file
                try:
                    res = worker(pickle.loads(pickle.dumps(s)))
                finally:
                    os.rename(hidden, inputs / "in")
                o.result = land(it.payload, pickle.loads(pickle.dumps(res)))
            outcomes.append(o)
        for o in outcomes:   # the stitches (which read the inputs, on the driver) once the worker is done
            on_outcome(o)
        return outcomes, JobStats(workers=1, where="stand-in")

    threads = torch.get_num_threads()
    try:
        assert main(_args(inputs, tmp_path / "one"), loader=tiny_loader) == 0
        one = json.loads(capsys.readouterr().out)
        monkeypatch.setattr(B, "run_batch", stand_in)
        if file_smaller:
            monkeypatch.setattr(FrameRange, "nbytes", property(lambda r: 1 << 40))
        assert main(_args(inputs, tmp_path / "ch", "--chunk", str(CHUNK), "--ray", "stand-in"), loader=tiny_loader) == 0
        ch = json.loads(capsys.readouterr().out)
    finally:
        torch.set_num_threads(threads)
    assert "chunks" not in one and [r["chunks"] for r in ch["outputs"]] == [5, 5] and ch["chunks_run"] == 10
    files = sorted((inputs / "in" / "folder").iterdir())
    clip = (inputs / "in" / "clip.mp4").stat().st_size
    for key, data in sent.items():
        name, i = key.rsplit("#", 1)
        first, stop = max(int(i) * CHUNK - 1, 0), (int(i) + 1) * CHUNK
        if name == "clip" and file_smaller:
            assert data == (inputs / "in" / "clip.mp4").read_bytes(), key
            continue
        assert isinstance(data, FrameRange) and (data.first, len(data.images)) == (first, stop - first), key
        if name == "folder":
            assert data.images == tuple(f.read_bytes() for f in files[first:stop]) and data.times is None
        else:   # decoded frames as PNG: bounded by the frames (16x16 RGB, 768 bytes raw, each)
            assert len(data.times) == stop - first and len(pickle.dumps(data)) < (stop - first) * 1024 < clip, key
    assert len(sent) == 10
    per_clip = {n: sum(len(pickle.dumps(d)) for k, d in sent.items() if k.startswith(n)) for n in ("folder", "clip")}
    assert per_clip["folder"] < 1.3 * sum(f.stat().st_size for f in files), per_clip   # the clip once, + overlap
    assert _packets(tmp_path / "ch" / "clip" / "audio.mka")[:2] == ("aac", 48000)   # muxed on the driver
    assert _tree(tmp_path / "ch") == _tree(tmp_path / "one")
    assert not any(p.name.startswith(".") for p in (tmp_path / "ch").iterdir())


def test_a_workers_errors_name_the_drivers_paths(tmp_path):
    """A worker reads a local copy of what the driver sent: its errors name the driver's paths, not the copy's
    (``atelier_files.shown_paths``, used by both cores: a scan's reader, a DLoRAL clip's worker)."""
    from atelier_files import shown_paths
    from dloral.batch import ClipWorker, Shipped, Single
    from dloral.__main__ import cmd_upscale
    from dloral.cliargs import build_parser, probe, settings_from_args
    from restoration.scanio import read_scan
    assert shown_paths("/t/x and /t/x.job/p", {"/t/x": "/d/x", "/t/x.job": "/d/x.job"}) == "/d/x and /d/x.job/p"
    assert shown_paths("/t/x", {}) == "/t/x"
    local = tmp_path / "copy" / "broken.png"
    local.parent.mkdir()
    local.write_bytes(b"not a picture")
    with pytest.raises(ValueError) as e:
        read_scan(local, 600, shown="/driver/scans/broken.png")
    assert "/driver/scans/broken.png" in str(e.value) and "copy" not in str(e.value), e.value
    a = build_parser("x", None, None).parse_args(["upscale", "x", "--out", "o", "--weights", "w", "--checkpoint", "c"])
    worker = ClipWorker(a, lambda request: pytest.fail("no model is loaded"), Single(settings_from_args, probe, cmd_upscale))
    with pytest.raises(ValueError) as e:
        worker(Shipped(("/driver/clips/v.mp4", "/driver/out/v.mp4"), b"\0" * 64))
    assert "'/driver/clips/v.mp4' cannot be opened by PyAV" in str(e.value) and "atelier-clip-" not in str(e.value)
