"""Memory flat in clip length: `python -m dloral upscale` (one pass and --chunk) on 10 and on 100 frames of a
small video, each run in its own process (tiny models): the peak resident memory above the level after the
models are built grows by less than half of what holding the extra 90 output frames would take (glibc
set to return freed blocks, ``bench.CHILD_ENV``). Measured: +2.6 to +4 MiB against a limit of 8.4. No timing."""
from dloral import convert_official, save_weights
from _dloral_synth import make_official, unet_shapes
import sys
from _testenv import REPO
sys.path.insert(0, str(REPO / "bench"))
import bench_dloral_chunks as bench  # noqa: E402

SIZE = 32


def test_peak_memory_does_not_grow_with_length(tmp_path):
    w = tmp_path / "w.safetensors"
    save_weights(convert_official(make_official(unet_shapes(), seed=4)[0]), str(w))
    rows = {(r["frames"], r["mode"]): r for n in (10, 100) for r in bench.memory(n, 8, tmp_path, w, SIZE)}
    frame_mib = (4 * SIZE) ** 2 * 3 * 4 / 2**20           # one float32 output frame
    for mode in ("one pass", "chunk 8"):
        short, long = rows[(10, mode)], rows[(100, mode)]
        assert short.get("rc") == 0 and long.get("rc") == 0, (short, long)
        extra = long["rss_growth_mib"] - short["rss_growth_mib"]
        assert extra < 0.5 * 90 * frame_mib, (mode, extra, 90 * frame_mib, short, long)
