"""nag.fused: the merges and the combine rule as one compiled kernel (used on CUDA).

The eager expression graph equals the unfused rule (nag.joint.guided_from_parts, nag.combine.nag_combine); the
graph compiles whole with dynamic shapes (dynamo + AOT autograd decompositions, as on a GPU; inductor's CPU
code generation once) and gives the same values; the exact case (negative parts equal to the positive's) gives
the kernel's Z+ whatever the scale and alpha; a failed compile falls back to the eager rule with one warning; on
the CPU the dispatchers run the unfused functions bit for bit.
"""
import logging

import pytest
import torch

from _nagparts import flat, parts
from nag import fused
from nag.combine import nag_combine
from nag.joint import guided_from_parts, sequence_from_parts

SHAPES = [(1, 2, 7, 8), (2, 3, 33, 16), (1, 24, 64, 4)]   # (B, H, Li, D): odd lengths, many heads


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("settings", [(11.0, 2.5, 0.25), (4.0, 1.0, 1.0), (2.0, 10.0, 0.5)])
def test_eager_graph_equals_unfused_rule(shape, settings):
    p = parts(shape, seed=sum(shape))
    want = guided_from_parts(*p, *settings, out_dtype=torch.float32)
    got = fused.guided_eager(*flat(p), *settings, torch.float32)
    assert got.shape == (shape[0], shape[2], shape[1], shape[3])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_eager_graph_with_an_empty_part_and_half_precision_out():
    for empty in ("pos", "neg"):
        p = parts((1, 4, 20, 8), seed=3, empty=empty)
        want = guided_from_parts(*p, 11.0, 2.5, 0.25, out_dtype=torch.bfloat16)
        got = fused.guided_eager(*flat(p), 11.0, 2.5, 0.25, torch.bfloat16)
        assert got.dtype == torch.bfloat16 and torch.isfinite(got.float()).all()
        torch.testing.assert_close(got.float(), want.float(), rtol=1e-2, atol=1e-2)


def seq_rows(n, text_first=True):
    """(positive text, negative text, image) slices of an n-token joint sequence: 3 + 2 text tokens."""
    if text_first:
        return slice(0, 3), slice(3, 5), slice(5, n)
    return slice(n - 5, n - 2), slice(n - 2, n), slice(0, n - 5)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("text_first", [True, False])
def test_sequence_graph_equals_the_unfused_sequence(shape, text_first):
    """With per-token kinds the graph gives the whole sequence: the rule on the image tokens, Z+ on the
    positive text's, Z- on the negative text's (nag.joint.sequence_from_parts), in one token-major output."""
    p = parts(shape, seed=sum(shape) + 1)
    rows = seq_rows(shape[2], text_first)
    want = sequence_from_parts(*p, rows, 11.0, 2.5, 0.25, out_dtype=torch.float32)
    got = fused.guided_eager(*flat(p), 11.0, 2.5, 0.25, torch.float32, fused.kinds(rows, shape[2], torch.device("cpu")))
    assert got.shape == (shape[0], shape[2], shape[1], shape[3])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    img = rows[2]
    torch.testing.assert_close(got[:, img], fused.guided_eager(*(t[:, :, img] for t in flat(p)), 11.0, 2.5, 0.25,
                                                               torch.float32), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="cover"):
        fused.kinds((slice(0, 3), slice(2, 5), slice(5, shape[2])), shape[2], torch.device("cpu"))
    for empty in ("pos", "neg"):      # a text part with no key, bf16 out: finite, the unfused values
        p = parts(shape, seed=3, empty=empty)
        want = sequence_from_parts(*p, rows, 11.0, 2.5, 0.25, out_dtype=torch.bfloat16)
        got = fused.guided_eager(*flat(p), 11.0, 2.5, 0.25, torch.bfloat16, fused.kinds(rows, shape[2], torch.device("cpu")))
        assert got.dtype == torch.bfloat16 and torch.isfinite(got.float()).all()
        torch.testing.assert_close(got.float(), want.float(), rtol=1e-2, atol=1e-2)


def test_combine_graph_equals_nag_combine():
    g = torch.Generator().manual_seed(5)
    zp, zn = torch.randn(2, 40, 96, generator=g), torch.randn(2, 40, 96, generator=g)
    zp[0, 3] = 0   # a zero token: finite output
    for s in ((11.0, 2.5, 0.25), (3.0, 1.0, 1.0)):
        got = fused.combine_eager(zp, zn, *s)
        torch.testing.assert_close(got, nag_combine(zp, zn, *s), rtol=1e-5, atol=1e-6)
        assert torch.isfinite(got).all()


def test_whole_graph_compiles_with_dynamic_shapes():
    """fullgraph + dynamic, on the graph the joint call uses (per-token kinds): one graph for every token count
    (no graph break, no recompile per length), the decomposed ops giving the eager values; the exact case
    (the negative's parts equal to the positive's) gives the same output at any scale and alpha."""
    torch._dynamo.reset()
    counts = {"n": 0}

    def backend(gm, example_inputs):
        counts["n"] += 1
        from torch._dynamo.backends.common import aot_autograd
        return aot_autograd(fw_compiler=lambda g, _: g)(gm, example_inputs)

    kern = torch.compile(fused.guided_eager, backend=backend, dynamic=True, fullgraph=True)
    cpu = torch.device("cpu")
    for n in (17, 40, 63):
        p = parts((1, 3, n, 8), seed=n)
        kind = fused.kinds(seq_rows(n, n != 40), n, cpu)
        torch.testing.assert_close(kern(*flat(p), 11.0, 2.5, 0.25, torch.float32, kind),
                                   fused.guided_eager(*flat(p), 11.0, 2.5, 0.25, torch.float32, kind), rtol=1e-6, atol=1e-6)
    assert counts["n"] <= 2, f"{counts['n']} compiles for three token counts"
    p = parts((1, 3, 30, 8), seed=1)
    rows = seq_rows(30, False)
    same, kind = (p[0], p[1], p[1]), fused.kinds(rows, 30, cpu)
    outs = [kern(*flat(same), s, 2.5, a, torch.float32, kind) for s, a in ((11.0, 0.25), (2.0, 1.0), (30.0, 0.5))]
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])
    torch.testing.assert_close(outs[0], sequence_from_parts(*same, rows, 11.0, 2.5, 0.25, out_dtype=torch.float32))
    torch._dynamo.reset()


def test_inductor_kernel_gives_the_rule():
    """The real compiler (inductor; its CPU code here, Triton on a GPU) on the fused graph the joint call uses:
    the rule's values, an empty negative text part included."""
    torch._dynamo.reset()
    kern = torch.compile(fused.guided_eager, dynamic=True, fullgraph=True)
    p = parts((1, 4, 50, 16), seed=9, empty="neg")
    rows = seq_rows(50)
    torch.testing.assert_close(kern(*flat(p), 11.0, 2.5, 0.25, torch.float32, fused.kinds(rows, 50, torch.device("cpu"))),
                               sequence_from_parts(*p, rows, 11.0, 2.5, 0.25, out_dtype=torch.float32),
                               rtol=1e-5, atol=1e-5)
    torch._dynamo.reset()


def test_cpu_dispatch_is_the_unfused_rule_bit_for_bit():
    assert not fused.fused_available(torch.device("cpu"))
    p = parts((2, 2, 21, 8), seed=2)
    for chunk in (None, 5):
        assert torch.equal(fused.guided(*p, 11.0, 2.5, 0.25, out_dtype=torch.float32, chunk_tokens=chunk),
                           guided_from_parts(*p, 11.0, 2.5, 0.25, out_dtype=torch.float32, chunk_tokens=chunk))
    rows = seq_rows(21, False)
    assert torch.equal(fused.guided(*p, 11.0, 2.5, 0.25, out_dtype=torch.float32, rows=rows),
                       sequence_from_parts(*p, rows, 11.0, 2.5, 0.25, out_dtype=torch.float32))
    zp, zn = torch.randn(1, 9, 12), torch.randn(1, 9, 12)
    assert torch.equal(fused.combine(zp, zn, 11.0, 2.5, 0.25), nag_combine(zp, zn, 11.0, 2.5, 0.25))
    with pytest.raises(ValueError, match="scale"):
        fused.guided(*p, 0.5, 2.5, 0.25, out_dtype=torch.float32)


def test_a_failed_compile_falls_back_once_with_a_warning(monkeypatch, caplog):
    def broken(name):
        def kernel(*args):
            raise RuntimeError("no triton here")
        return kernel
    monkeypatch.setattr(fused, "compiled", broken)
    monkeypatch.setattr(fused, "_FAILED", {})
    monkeypatch.setattr(fused, "fused_available", lambda device: not fused._FAILED)
    p = parts((1, 2, 11, 8), seed=4)
    with caplog.at_level(logging.WARNING, logger="nag.fused"):
        a = fused.guided(*p, 11.0, 2.5, 0.25, out_dtype=torch.float32)
        b = fused.guided(*p, 11.0, 2.5, 0.25, out_dtype=torch.float32)   # no second attempt, no second warning
    assert torch.equal(a, fused.guided_eager(*flat(p), 11.0, 2.5, 0.25, torch.float32))
    assert torch.equal(b, guided_from_parts(*p, 11.0, 2.5, 0.25, out_dtype=torch.float32))
    warnings = [r for r in caplog.records if "fused kernel could not be compiled" in r.getMessage()]
    assert len(warnings) == 1 and "no triton here" in warnings[0].getMessage()


def test_policy_picks_the_kernel_and_names_bad_modes(monkeypatch):
    calls = []

    def spy(name):
        def kernel(*args):
            calls.append(name)
            return fused.guided_eager(*args) if name == "guided" else fused.combine_eager(*args)
        return kernel
    monkeypatch.setattr(fused, "compiled", spy)
    p = parts((1, 2, 9, 8), seed=6)
    cpu = torch.device("cpu")
    with fused.policy("on"):
        assert fused.fused_available(cpu)
        fused.guided(*p, 11.0, 2.5, 0.25, out_dtype=torch.float32)
        with fused.policy("off"):
            assert not fused.fused_available(torch.device("cuda"))
            fused.guided(*p, 11.0, 2.5, 0.25, out_dtype=torch.float32)
        fused.combine(torch.ones(1, 3, 4), torch.zeros(1, 3, 4), 11.0, 2.5, 0.25)
    assert calls == ["guided", "combine"]
    assert not fused.fused_available(cpu) and fused.fused_available(torch.device("cuda"))   # auto again
    with pytest.raises(ValueError, match="allowed auto, on, off"):
        with fused.policy("fast"):
            pass


def test_inside_a_compiled_model_the_eager_graph_is_traced(monkeypatch):
    """Under TorchCompileModel the whole model is traced: the rule must go into that graph as its eager ops, not
    call the separately compiled kernel (a nested compile)."""
    calls = []

    def spy(name):
        calls.append(name)
        return fused.guided_eager
    monkeypatch.setattr(fused, "compiled", spy)
    p = parts((1, 2, 13, 8), seed=8)

    def model(*t):
        with fused.policy("on"):
            return fused.guided((t[0], t[1]), (t[2], t[3]), (t[4], t[5]), 11.0, 2.5, 0.25, out_dtype=torch.float32)
    torch._dynamo.reset()
    got = torch.compile(model, backend="aot_eager")(*flat(p))
    torch._dynamo.reset()
    assert calls == []
    torch.testing.assert_close(got, guided_from_parts(*p, 11.0, 2.5, 0.25, out_dtype=torch.float32))
    assert model(*flat(p)) is not None and calls == ["guided"]   # eager call: the compiled kernel
