"""NAG on joint attention (``nag/joint.py``) against an independent float64 softmax over the
concatenated keys, hand-computed values, and a count of the attention work.

The reference (:func:`direct`) builds the full logit matrix over ``[text, image]`` keys in float64
with ``torch.softmax``; the code under test never sees concatenated keys. float32 results must be
within 1e-5 of it (outputs are convex combinations of ``randn`` values, order 1). ``torch.equal`` is
used only for the exact cases (same inputs through the same arithmetic, or the combine rule's
documented bit-exact identities). Tests taking ``device`` also run on CUDA where present."""
import math

import pytest
import torch

from nag import (attention_with_lse, fused_attention_with_lse, joint_nag, joint_pair, merge_attention,
                 merge_heads, nag_combine)

BACKENDS = {"reference": attention_with_lse, "fused": fused_attention_with_lse}


def additive(mask, dtype=torch.float64):
    """A bool mask (True = attend) as 0 / -inf; a float mask as is."""
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, -math.inf)
    return mask.to(dtype)


def direct(q, keys, values, masks, scale=None):
    """Independent reference: float64 softmax attention of q over the concatenation of the key sets.

    keys/values: lists of (B or 1, H, L_i, D); masks: list of None or masks broadcastable to
    (B, H, Lq, L_i). Returns (out (B, H, Lq, D), lse (B, H, Lq)) in float64."""
    b, h, lq, d = q.shape
    k = torch.cat([x.double().expand(b, -1, -1, -1) for x in keys], dim=2)
    v = torch.cat([x.double().expand(b, -1, -1, -1) for x in values], dim=2)
    bias = torch.cat([torch.zeros(b, h, lq, x.shape[2], dtype=torch.float64, device=q.device) if m is None
                      else additive(m).expand(b, h, lq, x.shape[2]) for x, m in zip(keys, masks)], dim=3)
    s = q.double() @ k.transpose(-1, -2) * (1 / math.sqrt(d) if scale is None else scale) + bias
    return torch.softmax(s, dim=-1) @ v, torch.logsumexp(s, dim=-1)


def rand(*shape, seed, device="cpu", dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)


def text_mask(kind, b, length, seed, device="cpu"):
    """None, a bool key-padding mask (B, 1, 1, L) with some keys off (never all), or a float one
    with a finite bias per key and some keys at -inf."""
    if kind is None:
        return None
    g = torch.Generator().manual_seed(seed)
    keep = torch.rand(b, 1, 1, length, generator=g) > 0.4
    keep[..., 0] = True
    if kind == "bool":
        return keep.to(device)
    bias = torch.rand(b, 1, 1, length, generator=g, dtype=torch.float64) * 3 - 1.5
    return bias.masked_fill(~keep, -math.inf).to(device=device, dtype=torch.float32)


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("b,h,li,lt,d", [(1, 1, 7, 1, 8), (2, 3, 16, 5, 16), (1, 24, 12, 40, 8), (3, 3, 9, 9, 4)])
@pytest.mark.parametrize("mask", [None, "bool", "float"])
def test_merge_equals_attention_over_concatenated_keys(backend, b, h, li, lt, d, mask):
    attend = BACKENDS[backend]
    q, ki, vi = rand(b, h, li, d, seed=1), rand(b, h, li, d, seed=2), rand(b, h, li, d, seed=3)
    kt, vt = rand(b, h, lt, d, seed=4), rand(b, h, lt, d, seed=5)
    m = text_mask(mask, b, lt, seed=6)
    out, lse = merge_attention([attend(q, ki, vi), attend(q, kt, vt, m)])
    ref, ref_lse = direct(q, [kt, ki], [vt, vi], [m, None])
    assert out.dtype == torch.float32 and out.shape == (b, h, li, d) and lse.shape == (b, h, li)
    assert (out.double() - ref).abs().max() < 1e-5
    assert (lse.double() - ref_lse).abs().max() < 1e-5


def test_attention_with_lse_chunks_and_three_parts():
    """Chunking over queries does not change the result beyond float rounding (BLAS may block
    the matmuls differently per chunk size); a 3-way split of the keys merges exactly;
    broadcast text batch (1 for B=2) and a per-query float mask (B, H, Lq, Lk)."""
    q, k, v = rand(2, 3, 11, 8, seed=10), rand(2, 3, 13, 8, seed=11), rand(2, 3, 13, 8, seed=12)
    kt, vt = rand(1, 3, 6, 8, seed=13), rand(1, 3, 6, 8, seed=14)
    m = rand(2, 3, 11, 6, seed=15)
    whole = attention_with_lse(q, kt, vt, m)
    for c in (1, 4, 100):
        part = attention_with_lse(q, kt, vt, m, chunk_queries=c)
        assert (part[0] - whole[0]).abs().max() < 1e-6 and (part[1] - whole[1]).abs().max() < 1e-6
    out, lse = merge_attention([attention_with_lse(q, k[:, :, :5], v[:, :, :5]), whole,
                                attention_with_lse(q, k[:, :, 5:], v[:, :, 5:])])
    ref, ref_lse = direct(q, [k[:, :, :5], kt, k[:, :, 5:]], [v[:, :, :5], vt, v[:, :, 5:]], [None, m, None])
    assert (out.double() - ref).abs().max() < 1e-5 and (lse.double() - ref_lse).abs().max() < 1e-5


def test_known_values_uniform_attention():
    """q = 0: every logit is 0, so lse = log(Lk) and out = mean of v; merging 3 and 5 keys gives
    lse = log 8 and the mean of all 8 values."""
    q = torch.zeros(1, 1, 2, 4)
    v1 = torch.arange(12.0).reshape(1, 1, 3, 4)
    v2 = -torch.arange(20.0).reshape(1, 1, 5, 4)
    p1, p2 = attention_with_lse(q, torch.randn(1, 1, 3, 4), v1), attention_with_lse(q, torch.randn(1, 1, 5, 4), v2)
    assert torch.allclose(p1[1], torch.full((1, 1, 2), math.log(3)))
    out, lse = merge_attention([p1, p2])
    assert torch.allclose(lse, torch.full((1, 1, 2), math.log(8)))
    # column c: (c + 4+c + 8+c) - (c + 4+c + ... + 16+c) = (12 + 3c) - (40 + 5c), over 8 keys
    expect = torch.tensor([-3.5, -3.75, -4.0, -4.25])
    assert torch.allclose(out[0, 0], expect.expand(2, 4))
    assert torch.allclose(expect, torch.cat([v1, v2], dim=2).mean(dim=2)[0, 0])


@pytest.mark.parametrize("kind", ["bool", "float"])
def test_fully_masked_and_empty_parts(kind):
    q, ki, vi = rand(2, 3, 5, 8, seed=20), rand(2, 3, 5, 8, seed=21), rand(2, 3, 5, 8, seed=22)
    kt, vt = rand(2, 3, 4, 8, seed=23), rand(2, 3, 4, 8, seed=24)
    off = torch.zeros(2, 1, 1, 4, dtype=torch.bool)
    m = off if kind == "bool" else additive(off, torch.float32)
    o, lse = attention_with_lse(q, kt, vt, m)
    assert torch.equal(o, torch.zeros_like(o)) and bool(torch.all(lse == -math.inf))
    o, lse = fused_attention_with_lse(q, kt, vt, m)
    assert torch.equal(o, torch.zeros_like(o)) and bool(torch.all(lse == -math.inf))
    empty = attention_with_lse(q, kt[:, :, :0], vt[:, :, :0])
    assert torch.equal(empty[0], torch.zeros_like(empty[0])) and bool(torch.all(empty[1] == -math.inf))
    img = attention_with_lse(q, ki, vi)
    out, merged_lse = merge_attention([img, (o, lse), empty])   # only the image part counts
    assert (out - img[0]).abs().max() < 1e-6 and (merged_lse - img[1]).abs().max() < 1e-6
    out, merged_lse = merge_attention([(o, lse), empty])        # nothing at all: 0 and -inf, no NaN
    assert torch.equal(out, torch.zeros_like(out)) and bool(torch.all(merged_lse == -math.inf))
    # one row of one batch fully masked, the others not: only that row changes
    m2 = torch.ones(2, 3, 5, 4, dtype=torch.bool)
    m2[1, 2, 3] = False
    z = merge_attention([img, attention_with_lse(q, kt, vt, m2 if kind == "bool" else additive(m2, torch.float32))])
    ref, _ = direct(q, [kt, ki], [vt, vi], [m2, None])
    assert not torch.isnan(z[0]).any() and (z[0].double() - ref).abs().max() < 1e-5


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("backend", list(BACKENDS))
def test_low_precision_close_to_float32(device, dtype, backend):
    """Z+ and Z- from fp16/bf16 inputs are within a few output ulp of the float64 attention of the
    same (rounded) inputs: logits and merge run in float32, only the final cast rounds."""
    b, h, li, lp, ln, d = 2, 3, 24, 7, 10, 32
    q, ki, vi = (rand(b, h, li, d, seed=s, device=device, dtype=dtype) for s in (30, 31, 32))
    kp, vp = rand(b, h, lp, d, seed=33, device=device, dtype=dtype), rand(b, h, lp, d, seed=34, device=device, dtype=dtype)
    kn, vn = rand(b, h, ln, d, seed=35, device=device, dtype=dtype), rand(b, h, ln, d, seed=36, device=device, dtype=dtype)
    attend = BACKENDS[backend]
    zp, zn = joint_pair(q, ki, vi, kp, vp, kn, vn, attention=lambda *a: attend(*a, out_dtype=torch.float32))
    assert zp.dtype == dtype and zn.dtype == dtype
    eps = torch.finfo(dtype).eps
    for z, k, v in ((zp, kp, vp), (zn, kn, vn)):
        ref, _ = direct(q, [k, ki], [v, vi], [None, None])
        assert (z.double() - ref).abs().max() <= 2 * eps * max(1.0, ref.abs().max().item())


@pytest.mark.parametrize("mask", [None, "bool", "float"])
@pytest.mark.parametrize("lp,ln", [(1, 1), (5, 9), (40, 3)])
def test_joint_pair_equals_direct(device, lp, ln, mask):
    b, h, li, d = 2, 3, 12, 16
    q, ki, vi = (rand(b, h, li, d, seed=s, device=device) for s in (40, 41, 42))
    kp, vp = rand(1, h, lp, d, seed=43, device=device), rand(1, h, lp, d, seed=44, device=device)  # text batch 1
    kn, vn = rand(b, h, ln, d, seed=45, device=device), rand(b, h, ln, d, seed=46, device=device)
    mp, mn = text_mask(mask, b, lp, seed=47, device=device), text_mask(mask, b, ln, seed=48, device=device)
    zp, zn = joint_pair(q, ki, vi, kp, vp, kn, vn, mask_pos=mp, mask_neg=mn, softmax_scale=0.2)
    assert (zp.double() - direct(q, [kp, ki], [vp, vi], [mp, None], scale=0.2)[0]).abs().max() < 1e-5
    assert (zn.double() - direct(q, [kn, ki], [vn, vi], [mn, None], scale=0.2)[0]).abs().max() < 1e-5


def test_joint_nag_equals_combine_of_direct_and_head_layout():
    b, h, li, d = 2, 3, 10, 4
    q, ki, vi = (rand(b, h, li, d, seed=s) for s in (50, 51, 52))
    kp, vp, kn, vn = (rand(b, h, 6, d, seed=s) for s in (53, 54, 55, 56))
    zp, zn = direct(q, [kp, ki], [vp, vi], [None, None])[0], direct(q, [kn, ki], [vn, vi], [None, None])[0]
    merged = zp.permute(0, 2, 1, 3).reshape(b, li, h * d)       # heads merged by hand: channel = head*D + d
    assert torch.equal(merge_heads(zp), merged) and torch.equal(merged[1, 7, 2 * d + 3], zp[1, 2, 7, 3])
    want = nag_combine(merged, zn.permute(0, 2, 1, 3).reshape(b, li, h * d), 11.0, 2.5, 0.25)
    got = joint_nag(q, ki, vi, kp, vp, kn, vn, 11.0, 2.5, 0.25)
    assert got.shape == (b, li, h * d) and got.dtype == torch.float32
    assert (got.double() - want).abs().max() < 1e-4 * max(1.0, want.abs().max().item())


def counting(log):
    def attention(q, k, v, mask):
        log.append((q.shape[2], k.shape[2], k))
        return attention_with_lse(q, k, v, mask, out_dtype=torch.float32)
    return attention


@pytest.mark.parametrize("scale,alpha", [(1.0, 0.25), (11.0, 0.0)])
def test_scale_one_or_alpha_zero_is_z_pos_without_the_negative(scale, alpha):
    b, h, li, d = 1, 2, 8, 8
    q, ki, vi = (rand(b, h, li, d, seed=s) for s in (60, 61, 62))
    kp, vp, kn, vn = (rand(b, h, 5, d, seed=s) for s in (63, 64, 65, 66))
    log = []
    got = joint_nag(q, ki, vi, kp, vp, kn, vn, scale, 2.5, alpha, attention=counting(log))
    zp, _ = joint_pair(q, ki, vi, kp, vp, kn, vn)
    assert torch.equal(got, merge_heads(zp))
    assert [(lq, lk) for lq, lk, _ in log] == [(li, li), (li, 5)] and all(k is not kn for *_, k in log)


@pytest.mark.parametrize("nag_scale", [1.5, 11.0, 100.0])
def test_negative_equal_to_positive_returns_z_pos_bit_for_bit(nag_scale):
    b, h, li, d = 2, 3, 9, 8
    q, ki, vi = (rand(b, h, li, d, seed=s) for s in (70, 71, 72))
    kp, vp = rand(b, h, 4, d, seed=73), rand(b, h, 4, d, seed=74)
    mp = text_mask("bool", b, 4, seed=75)
    zp, zn = joint_pair(q, ki, vi, kp, vp, kp.clone(), vp.clone(), mask_pos=mp, mask_neg=mp.clone())
    assert torch.equal(zp, zn)
    got = joint_nag(q, ki, vi, kp, vp, kp.clone(), vp.clone(), nag_scale, 2.5, 0.25, mask_pos=mp, mask_neg=mp.clone())
    assert torch.equal(got, merge_heads(zp))


def test_image_part_attended_once_and_cost_model():
    """Three partial attentions: image keys once, each text once. Logit count (Lq * Lk summed over
    calls) is Li*(Li + Lp + Ln), against Li*(2*Li + Lp + Ln) for two full passes."""
    b, h, li, lp, ln, d = 1, 2, 64, 8, 12, 8
    q, ki, vi = (rand(b, h, li, d, seed=s) for s in (80, 81, 82))
    kp, vp, kn, vn = rand(b, h, lp, d, seed=83), rand(b, h, lp, d, seed=84), rand(b, h, ln, d, seed=85), rand(b, h, ln, d, seed=86)
    log = []
    joint_nag(q, ki, vi, kp, vp, kn, vn, 11.0, 2.5, 0.25, attention=counting(log))
    assert sum(k is ki for *_, k in log) == 1 and sum(k is kp for *_, k in log) == 1 \
        and sum(k is kn for *_, k in log) == 1 and len(log) == 3
    work = sum(lq * lk for lq, lk, _ in log)
    assert work == li * (li + lp + ln) == 64 * 84
    naive = li * (2 * li + lp + ln)
    assert work / naive == pytest.approx(84 / 148)


def test_errors_name_the_input():
    q = torch.zeros(1, 2, 3, 4)
    with pytest.raises(ValueError, match="mask"):
        attention_with_lse(q, torch.zeros(1, 2, 5, 4), torch.zeros(1, 2, 5, 4), torch.ones(1, 2, 3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="heads and head dim"):
        attention_with_lse(q, torch.zeros(1, 3, 5, 4), torch.zeros(1, 3, 5, 4))
    with pytest.raises(ValueError, match="batch"):
        attention_with_lse(torch.zeros(2, 2, 3, 4), torch.zeros(3, 2, 5, 4), torch.zeros(3, 2, 5, 4))
    with pytest.raises(ValueError, match="parts"):
        merge_attention([(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3)), (torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4))])
    with pytest.raises(ValueError, match="scale"):
        joint_nag(q, q, q, q, q, q, q, 0.5, 2.5, 0.25)


def test_fused_backend_reaches_the_kernel_on_cpu(monkeypatch):
    """Unmasked CPU calls go to torch's fused op, not to the reference (which would make the fused
    parametrisations above trivially equal); masked calls use the reference."""
    import nag.joint as joint
    calls = []
    monkeypatch.setattr(joint, "attention_with_lse", lambda *a, **k: calls.append(1) or attention_with_lse(*a, **k))
    q, k, v = rand(1, 2, 6, 8, seed=90), rand(1, 2, 5, 8, seed=91), rand(1, 2, 5, 8, seed=92)
    out, lse = joint.fused_attention_with_lse(q, k, v)
    assert calls == []
    ref, ref_lse = direct(q, [k], [v], [None])
    assert (out.double() - ref).abs().max() < 1e-5 and (lse.double() - ref_lse).abs().max() < 1e-5
    joint.fused_attention_with_lse(q, k, v, torch.ones(1, 1, 1, 5, dtype=torch.bool))
    assert calls == [1]


def test_bench_script_smoke(tmp_path, monkeypatch):
    """bench/bench_nag_joint.py runs at tiny dims and records the LSE and naive outputs agreeing."""
    import json
    import pathlib
    import runpy
    import sys
    script = pathlib.Path(__file__).resolve().parents[2] / "bench" / "bench_nag_joint.py"
    out = tmp_path / "r.json"
    monkeypatch.setattr(sys, "argv", [str(script), "--image", "24", "--text", "3", "--negative", "5",
                                      "--repeats", "1", "--warmup", "0", "--out", str(out)])
    threads = torch.get_num_threads()
    try:
        runpy.run_path(str(script), run_name="__main__")
    finally:
        torch.set_num_threads(threads)
    r = json.loads(out.read_text())
    assert r["max_abs_diff_lse_vs_naive_image_output"] < 1e-5
    assert r["logit_model"]["lse"] == 27 ** 2 + 24 * 5 and set(r["results"]) == {"plain", "naive", "lse"}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_combine_heads_is_nag_combine_on_merged_heads(dtype):
    from nag.combine import combine_heads, nag_combine
    from nag.joint import merge_heads
    g = torch.Generator().manual_seed(3)
    zp, zn = (torch.randn(2, 3, 7, 4, generator=g).to(dtype) for _ in range(2))
    want = nag_combine(merge_heads(zp), merge_heads(zn), 11.0, 2.5, 0.25)
    zp, zn = zp.transpose(1, 2).contiguous(), zn.transpose(1, 2).contiguous()      # (B, L, H, D)
    got = combine_heads(zp, zn, 11.0, 2.5, 0.25)
    assert got.dtype == dtype
    assert torch.equal(got.flatten(-2), want)       # the same per-token sums, in the same order
    torch.testing.assert_close(combine_heads(zp, zn, 11.0, 2.5, 0.25, chunk_tokens=3), got, rtol=0, atol=0)
    assert torch.equal(combine_heads(zp, zp.clone(), 11.0, 2.5, 0.25), zp)        # Z- == Z+: Z+ bit for bit
    assert torch.equal(combine_heads(zp, zn, 1.0, 2.5, 0.25), zp)
    assert torch.equal(combine_heads(zp, zn, 11.0, 2.5, 0.0), zp)
    with pytest.raises(ValueError, match="B, L, H, D"):
        combine_heads(zp.flatten(-2), zn.flatten(-2), 11.0, 2.5, 0.25)


def test_guided_from_parts_is_joint_nag():
    """The lean pass chain (float32 Z+/Z- kept in the heads layout) equals joint_nag (merge, heads merge,
    nag_combine) on the same partial attentions."""
    from nag.joint import attention_with_lse, guided_from_parts, joint_nag, merge_heads
    g = torch.Generator().manual_seed(4)
    q = torch.randn(2, 3, 9, 8, generator=g)
    ki, vi, kp, vp = (torch.randn(2, 3, n, 8, generator=g) for n in (9, 9, 5, 5))
    kn, vn = (torch.randn(2, 3, 4, 8, generator=g) for _ in range(2))

    def att(q_, k_, v_, m=None):
        return attention_with_lse(q_, k_, v_, m, out_dtype=torch.float32)

    want = joint_nag(q, ki, vi, kp, vp, kn, vn, 5.0, 2.5, 0.5)
    got = guided_from_parts(att(q, ki, vi), att(q, kp, vp), att(q, kn, vn), 5.0, 2.5, 0.5, out_dtype=q.dtype)
    torch.testing.assert_close(got.flatten(-2), want, rtol=1e-6, atol=1e-7)
    same = guided_from_parts(att(q, ki, vi), att(q, kp, vp), att(q, kp, vp), 5.0, 2.5, 0.5, out_dtype=q.dtype)
    plain, _ = merge_attention([att(q, ki, vi), att(q, kp, vp)])
    assert torch.equal(same.flatten(-2), merge_heads(plain))
