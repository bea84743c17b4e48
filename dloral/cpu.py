"""CPU runs: large tensors on transparent huge pages.

PyTorch's CPU allocator asks the kernel for fresh pages for every large tensor and frees them after: an SD
VAE decode of one 512x512 frame touches about 9 GB of new 4 KiB pages, 2.4 million page faults, 10 s of
kernel time of a 27 s decode on 2 cores. With ``THP_MEM_ALLOC_ENABLE=1`` PyTorch aligns allocations of 2 MiB
and more and advises huge pages (``madvise``): 75 thousand faults, 4 s. The gain depends on the CPU and its
kernel: the whole DLoRAL run was 15 % faster on the 2-core AMD EPYC VM of these measurements (full SD2.1 UNet,
fp32: 54.1 -> 45.7 s per frame) and 1-4 % faster on an Intel CPU (issue 22); same peak memory, the same numbers
bit for bit. PyTorch reads the variable
once, when it starts, so it has to be in the environment of the process: the CLI sets it and starts itself
again; ComfyUI users on a CPU set it when they launch ComfyUI (README).

(glibc's ``mallopt``, which a running process can set, was measured too and not adopted: more peak memory,
and no effect in ComfyUI's worker thread; README, bench/results/dloral_cpu_allocator.json.)
"""
import os
import sys
from typing import Mapping, Optional

THP_VAR = "THP_MEM_ALLOC_ENABLE"
THP_MODE = "/sys/kernel/mm/transparent_hugepage/enabled"


def thp_env(environ: Mapping[str, str] = os.environ, platform: str = sys.platform,
            mode_file: str = THP_MODE) -> Optional[dict]:
    """``{THP_MEM_ALLOC_ENABLE: "1"}`` when a process started with ``environ`` would gain from it: Linux, the
    variable not set (a value the user set, 0 included, is kept), and the kernel's THP mode not ``never``
    (``[always]`` or ``[madvise]`` in ``mode_file``; an unreadable file counts as allowed). Else None."""
    if not platform.startswith("linux") or THP_VAR in environ:
        return None
    try:
        with open(mode_file) as f:
            if "[never]" in f.read():
                return None
    except OSError:
        pass
    return {THP_VAR: "1"}
