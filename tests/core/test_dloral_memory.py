"""Memory flat in clip length: `python -m dloral upscale` (one pass and --chunk) on 10 and on 100 frames of a
small video, each run in its own process (tiny models): the peak resident memory above the level after the
models are built grows by less than half of what holding the extra output frames would take (glibc
set to return freed blocks, ``bench.CHILD_ENV``). Measured at 10 vs 100 frames: +2.6 to +9.8 MiB (the allocator's
noise; +9.8 on a loaded AMD VM) against 16.9 MiB for holding 90 frames, too close to a half-way limit; at 10 vs 160
frames one pass grew +9.2 MiB on an idle machine and +14.3 MiB in a full-suite run, over that run's limit (14.1 MiB),
so the long run has 320 frames (holding 310 extra frames: 58 MiB; limit 29 MiB). No timing."""
from dloral import convert_official, save_weights
from _dloral_synth import make_official, unet_shapes
import sys
from _testenv import REPO
sys.path.insert(0, str(REPO / "bench"))
import bench_dloral_chunks as bench  # noqa: E402

SIZE = 32
LONG = 320


def test_peak_memory_does_not_grow_with_length(tmp_path):
    w = tmp_path / "w.safetensors"
    save_weights(convert_official(make_official(unet_shapes(), seed=4)[0]), str(w))
    rows = {(r["frames"], r["mode"]): r for n in (10, LONG) for r in bench.memory(n, 8, tmp_path, w, SIZE)}
    frame_mib = (4 * SIZE) ** 2 * 3 * 4 / 2**20           # one float32 output frame
    for mode in ("one pass", "chunk 8"):
        short, long = rows[(10, mode)], rows[(LONG, mode)]
        assert short.get("rc") == 0 and long.get("rc") == 0, (short, long)
        extra = long["rss_growth_mib"] - short["rss_growth_mib"]
        assert extra < 0.5 * (LONG - 10) * frame_mib, (mode, extra, (LONG - 10) * frame_mib, short, long)
