"""Chunked runs (``dloral.chunks``) give the one-pass frames bit for bit on a CPU in float32: the carried
previous frame's LR image and latent are what one pass carried, and windows never straddle a chunk."""
import pytest
import torch

from dloral.chunks import ChunkPlan, chunk_input, stream_chunks, upscale_chunk
from dloral.pipeline import upscale_video
import _dloral_models as dm


def _one_pass(models, frames, cfg):
    return torch.stack(list(upscale_video(iter(frames), models, cfg)))


@pytest.mark.parametrize("chunk, kw", [(2, {}), (4, {}), (6, dict(sample_posterior=True, seed=3)),
                                       (4, dict(tile=2, overlap=1, color_fix="wavelet"))])
def test_chunked_equals_one_pass_bitwise(chunk, kw):
    models = dm.models(moments=kw.get("sample_posterior", False))
    frames = dm.frames(5 if "tile" in kw else 7)   # tiled: the slow case; 5 frames still cross a boundary
    cfg = dm.cfg(**kw)
    ref = _one_pass(models, frames, cfg)
    plan = ChunkPlan(chunk, cfg.window)
    # one stream, chunk by chunk (the CLI)
    got = torch.cat([torch.stack(list(upscale_chunk(span, c, models, cfg, previous=prev)))
                     for c, prev, span in stream_chunks(iter(frames), plan)])
    assert torch.equal(got, ref)
    # each chunk on its own from the whole clip and its index (a worker)
    alone = torch.cat([torch.stack(list(upscale_chunk(iter(frames), c, models, cfg)))
                       for c in plan.chunks(len(frames))])
    assert torch.equal(alone, ref)


def test_without_the_carry_the_boundary_frame_differs():
    """The test above can fail: a chunk that pairs its first frame with itself is not the one-pass frame."""
    models, frames, cfg = dm.models(), dm.frames(4), dm.cfg()
    ref = _one_pass(models, frames, cfg)
    second = torch.stack(list(upscale_video(iter(frames[2:]), models, cfg, first_index=2)))
    assert not torch.equal(second[0], ref[2])


def test_plan_and_inputs():
    plan = ChunkPlan(4, 2)
    assert [(c.start, c.stop, c.read_from) for c in plan.chunks(9)] == [(0, 4, 0), (4, 8, 3), (8, 12, 7)]
    assert plan.count(8) == 2 and plan.count(9) == 3 and plan[5].start == 20
    with pytest.raises(ValueError, match=r"chunk \(--chunk\): 5 is not a positive multiple of window \(--window\) \(2\)"):
        ChunkPlan(5, 2)
    frames = [torch.full((3, 2, 2), float(i)) for i in range(9)]
    prev, it = chunk_input(frames, plan[1])
    assert prev[0, 0, 0] == 3 and [int(f[0, 0, 0]) for f in it] == [4, 5, 6, 7]
    prev, it = chunk_input(frames, plan[0])
    assert prev is None and len(list(it)) == 4
    with pytest.raises(ValueError, match="chunk 3 starts at frame 12 but the input has 9 frames"):
        chunk_input(frames, plan[3])
    seen = [(c.index, None if p is None else int(p[0, 0, 0]), [int(f[0, 0, 0]) for f in s])
            for c, p, s in stream_chunks(frames, plan)]
    assert seen == [(0, None, [0, 1, 2, 3]), (1, 3, [4, 5, 6, 7]), (2, 7, [8])]
    # a chunk the caller skips is still read past, and carries its last frame
    seen = [(c.index, None if p is None else int(p[0, 0, 0])) for c, p, s in stream_chunks(frames, plan)]
    assert seen == [(0, None), (1, 3), (2, 7)]
