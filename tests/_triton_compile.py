"""Run by tests/host/test_nag_triton_host.py in a child process (no interpreter): nag.triton_rule's kernel compiled
ahead of time for an H100 (sm_90) by Triton's own compiler and ptxas, which need no GPU, at the launch
configurations nag.triton_rule.launch_config picks for each family's token width. Prints one JSON object."""
import inspect
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from nag import triton_rule  # noqa: E402
from nag._triton_kernels import _token_kernel as token_kernel  # noqa: E402

# (name, heads, width, merged): joint-attention parts (guided, with token kinds) and cross-attention Z+/Z- (combine,
# one "head" of all channels)
CASES = [("flux_joint", 24, 128, False), ("hidream_joint", 20, 128, False), ("sd3_joint", 24, 64, False),
         ("wan_1.3B_cross", 1, 1536, True), ("wan_14B_cross", 1, 5120, True), ("sdxl_cross", 1, 1280, True),
         ("sd15_cross", 1, 320, True)]
DTYPES = {"bf16": "*bf16", "fp16": "*fp16", "fp32": "*fp32"}


def signature(elem):
    sig = {}
    for n in inspect.signature(token_kernel.fn).parameters:
        if n in ("oi", "op", "on", "out"):
            sig[n] = elem
        elif n in ("li", "lp", "ln"):
            sig[n] = "*fp32"
        elif n == "kind":
            sig[n] = "*i8"
        elif n in ("scale", "tau", "alpha", "tiny"):
            sig[n] = "fp32"
        elif n in ("MERGED", "HAS_KIND", "KIND_IMAGE", "KIND_POSITIVE", "BLOCK_H", "BLOCK_D"):
            sig[n] = "constexpr"
        else:
            sig[n] = "i64"
    return sig


def main():
    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    out = {}
    for name, heads, width, merged in CASES:
        for dname, elem in DTYPES.items():
            bh, bd, warps = triton_rule.launch_config(heads, width)
            src = ASTSource(fn=token_kernel, signature=signature(elem),
                            constexprs={"MERGED": merged, "HAS_KIND": not merged, "BLOCK_H": bh, "BLOCK_D": bd,
                                        "KIND_IMAGE": triton_rule.IMAGE, "KIND_POSITIVE": triton_rule.POSITIVE})
            k = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps})
            with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as f:
                f.write(k.asm["ptx"])
            r = subprocess.run([ptxas, "-v", "--gpu-name=sm_90a", f.name, "-o", os.devnull], capture_output=True,
                               text=True)
            os.unlink(f.name)
            text = r.stdout + r.stderr
            regs = re.search(r"Used (\d+) registers", text)
            spills = [int(x) for x in re.findall(r"(\d+) bytes spill", text)]
            out[f"{name}/{dname}"] = {"block": [bh, bd], "warps": warps, "cubin": len(k.asm.get("cubin", b"")),
                                      "ptxas_rc": r.returncode, "registers": int(regs.group(1)) if regs else None,
                                      "spill_bytes": sum(spills) if spills else None}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
