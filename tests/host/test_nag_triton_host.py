"""nag.triton_rule, NAG's hand-written Triton kernel (each token's parts read once; used on CUDA), checked on
the CPU in Triton's interpreter against the eager rule (nag.fused.guided_eager / combine_eager).

In the host tier because its venv holds PyTorch's CUDA build, which ships Triton (the core venv's CPU build does
not); the host itself is not imported. Triton reads ``TRITON_INTERPRET`` when the kernels are defined, so the
checks run in a child process (tests/_triton_check.py) that prints what it measured; the assertions are here.
Missing Triton fails the test (the host venvs install it with torch).
"""
import json
import os
import pathlib
import subprocess
import sys

import pytest

CHECK = pathlib.Path(__file__).resolve().parents[1] / "_triton_check.py"


@pytest.fixture(scope="module")
def measured():
    env = {**os.environ, "TRITON_INTERPRET": "1", "CUDA_VISIBLE_DEVICES": ""}
    p = subprocess.run([sys.executable, str(CHECK)], env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_the_kernels_run_in_the_interpreter(measured):
    assert measured["interpreting"] and measured["available"]


def test_guided_equals_the_eager_rule_for_any_heads_and_width(measured):
    assert len(measured["guided"]) == 12
    for case, r in measured["guided"].items():
        assert r["shape"], case
        assert r["err"] < 2e-6, (case, r["err"])


def test_token_major_parts_and_token_kinds(measured):
    assert measured["token_major_layout"] < 2e-6
    assert measured["kinds"] < 2e-6


def test_an_empty_part_gives_finite_half_precision_output(measured):
    for name, r in measured["empty_part_bf16"].items():
        assert r["dtype"] == "torch.bfloat16" and r["finite"], name
        assert r["err"] < 1.6e-2, (name, r["err"])    # bf16 rounding of the output (2^-7 relative)


def test_negative_equal_to_positive_gives_the_kernels_z_pos_bit_for_bit(measured):
    assert measured["exact_case_equals_kernel_z_pos"] is True


def test_combine_equals_the_eager_rule(measured):
    assert len(measured["combine"]) == 3
    for case, r in measured["combine"].items():
        assert r["dtype"], case
        assert r["err"] < (1.6e-2 if "bfloat16" in case else 2e-6), (case, r["err"])


def test_nag_fused_runs_it_first_and_falls_back_once(measured):
    assert measured["dispatch_hand"] == {"calls": 1, "equal": True}
    assert measured["dispatch_hand_off"] == {"hand_calls": 1, "compiled_calls": ["guided"]}
    fb = measured["failure_falls_back"]
    assert fb["equal_to_eager"] is True
    assert len(fb["warnings"]) == 1 and "kernel launch failed here" in fb["warnings"][0]


COMPILE = pathlib.Path(__file__).resolve().parents[1] / "_triton_compile.py"


def test_the_kernel_compiles_for_an_h100_without_spills():
    """Triton's compiler and ptxas (shipped in the Triton wheel) need no GPU: the kernel is compiled for sm_90
    at the launch configuration of each family's token width, in the three dtypes. What the interpreter cannot
    show (a construct the GPU compiler refuses, register spills of a whole-token tile) fails here."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    p = subprocess.run([sys.executable, str(COMPILE)], env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    got = json.loads(p.stdout.strip().splitlines()[-1])
    assert len(got) == 21
    for case, r in got.items():
        assert r["cubin"] > 0 and r["ptxas_rc"] == 0, (case, r)
        assert r["spill_bytes"] == 0 and r["registers"] is not None and r["registers"] <= 128, (case, r)
    assert got["flux_joint/bf16"]["block"] == [32, 128] and got["wan_14B_cross/bf16"]["block"] == [1, 8192]
