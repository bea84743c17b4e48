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
    for key in ("block_ratio_unfused", "block_ratio_fused", "block_ratio_fused_compiled", "attention_ratio_unfused",
                "attention_ratio_fused", "attention_ratio_fused_compiled"):
        assert math.isfinite(r[key]) and r[key] > 0, (key, r)
    assert r["fused_vs_unfused_max_rel_diff"] < 1e-5, r   # the same block output, fused or not (float32)
    assert r["compiled_vs_unfused_max_rel_diff"] < 1e-5, r
    assert r["hand_written_kernel_used"] is False and r["hand_kernel_failure"] == {}   # no Triton on this CPU venv
    assert 1 < r["flop_ratio_of_this_block"] < 2


def test_fused_byte_count_is_below_the_unfused_chain():
    b = load_bench()
    by = b.byte_count(3072, 4096, 512, 256)
    total = {k: sum(v.values()) for k, v in by.items()}
    assert total["fused"] < total["fused_compiled"] < total["fused_before_views"] < total["current"] < total["before_cut"]
    length = 4096 + 512 + 256
    assert by["fused"]["fused_kernel"] == length * 3072 * (3 * 2 + 2)   # three bf16 parts read once, one write
    assert by["fused_compiled"]["fused_kernel"] == length * 3072 * (2 * 3 * 2 + 2)   # read twice by inductor's loops
    # no key/value copy, no write-back, no reshape copy left in the fused path; the earlier round had them
    assert not any("copy" in k or "write_back" in k or "reshape" in k for k in by["fused"])
    assert by["fused_before_views"]["text_kv_copy_positive"] == 2 * (4096 + 512) * 3072 * 2 * 2
