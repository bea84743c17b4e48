"""bench/bench_nag_flux_cost.py: the GPU path (``--device cuda``) runs at tiny dims on the CPU, fused kernel
compiled, so it cannot rot before a GPU is lent; the byte count of the fused kernel is below the unfused chain."""
import importlib.util
import math
import pathlib

import torch

REPO = pathlib.Path(__file__).resolve().parents[2]


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_nag_flux_cost", REPO / "bench" / "bench_nag_flux_cost.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_device_block_runs_at_tiny_dims_on_the_cpu():
    b = load_bench()
    torch._dynamo.reset()
    r = b.device_block(64, 2, 48, 8, 8, repeats=1, device="cpu", dtype=torch.float32)
    torch._dynamo.reset()
    for key in ("block_ratio_unfused", "block_ratio_fused", "attention_ratio_unfused", "attention_ratio_fused"):
        assert math.isfinite(r[key]) and r[key] > 0, (key, r)
    assert r["fused_vs_unfused_max_rel_diff"] < 1e-5, r   # the same block output, fused or not (float32)
    assert 1 < r["flop_ratio_of_this_block"] < 2


def test_fused_byte_count_is_below_the_unfused_chain():
    b = load_bench()
    by = b.byte_count(3072, 4096, 512, 256)
    assert sum(by["fused"].values()) < sum(by["current"].values()) < sum(by["before_cut"].values())
    n = 4096 * 3072
    assert by["fused"]["fused_kernel"] == n * (2 * 3 * 4 + 2)   # three float32 parts read twice, bf16 written once
