"""NAG inside a Wan cross-attention (tiny random Wan modules, no host) and the row logic."""
import pytest
import torch

from nag import NAGConfig, guided_row_slices, nag_combine, nag_cross_attention, remap_row_slices
from tinywan.build import random_model
from tinywan.model import attention


@pytest.fixture(scope="module", params=["t2v", "i2v"])
def setup(request):
    variant = request.param
    m = random_model(variant, seed=3)
    ca = m.blocks[0].cross_attn
    g = torch.Generator().manual_seed(1)
    n_img = 257 if variant == "i2v" else None
    ctx_len = 12 + (n_img or 0)
    data = dict(x=torch.randn(4, 24, 128, generator=g), ctx=torch.randn(4, ctx_len, 128, generator=g),
                neg=torch.randn(1, 30, 128, generator=g), n_img=n_img)
    return ca, data


def attend_for(ca):
    return lambda q, k, v: attention(q, k, v, ca.heads)


def run(ca, d, guided, config=NAGConfig(), x=None, ctx=None, neg=None):
    return nag_cross_attention(ca, d["x"] if x is None else x, d["ctx"] if ctx is None else ctx,
                               d["neg"] if neg is None else neg, attend_for(ca), guided, config, d["n_img"])


def by_hand(ca, x, ctx, neg, n_img, config):
    """Independent composition: Z+ and Z- from explicit softmax attention per head (float64),
    the combine rule, then the unguided image branch and the output projection."""
    def mha(q, k, v):
        b, n, c = q.shape
        h = ca.heads
        qh, kh, vh = (t.double().reshape(b, -1, h, c // h).transpose(1, 2) for t in (q, k, v))
        w = torch.softmax(qh @ kh.transpose(-1, -2) / (c // h) ** 0.5, dim=-1)
        return (w @ vh).transpose(1, 2).reshape(b, n, c)
    with torch.no_grad():
        q = ca.norm_q(ca.q(x))
        txt = ctx[:, n_img:] if n_img else ctx
        zp = mha(q, ca.norm_k(ca.k(txt)), ca.v(txt))
        nn = neg.expand(x.shape[0], -1, -1)
        zn = mha(q, ca.norm_k(ca.k(nn)), ca.v(nn))
        z = nag_combine(zp, zn, config.scale, config.tau, config.alpha)
        if n_img:
            z = z + mha(q, ca.norm_k_img(ca.k_img(ctx[:, :n_img])), ca.v_img(ctx[:, :n_img]))
        return ca.o(z.float()).double()


@torch.no_grad()
def test_unguided_equals_module(setup):
    ca, d = setup
    ref = ca(d["x"], d["ctx"], d["n_img"])
    assert torch.equal(run(ca, d, []), ref)
    assert torch.equal(run(ca, d, [slice(0, 4)], NAGConfig(scale=1.0)), ref)


@torch.no_grad()
def test_negative_equal_positive_is_exact(setup):
    ca, d = setup
    txt = d["ctx"][:, d["n_img"]:] if d["n_img"] else d["ctx"]
    ref = ca(d["x"], d["ctx"], d["n_img"])
    assert torch.equal(run(ca, d, [slice(0, 4)], neg=txt), ref)


@torch.no_grad()
def test_matches_hand_composition_with_unguided_image_branch(setup):
    ca, d = setup
    cfg = NAGConfig(scale=11, tau=2.5, alpha=0.25)
    out = run(ca, d, [slice(0, 4)], cfg)
    torch.testing.assert_close(out.double(), by_hand(ca, d["x"], d["ctx"], d["neg"], d["n_img"], cfg),
                               atol=2e-5, rtol=1e-5)
    assert (out - ca(d["x"], d["ctx"], d["n_img"])).abs().max() > 1e-3


@torch.no_grad()
def test_only_guided_rows_change_and_rows_are_independent(setup):
    ca, d = setup
    ref = ca(d["x"], d["ctx"], d["n_img"])
    out = run(ca, d, [slice(2, 4)])            # layout [1, 0] with 2 rows per chunk
    assert torch.equal(out[:2], ref[:2])
    assert (out[2:] - ref[2:]).abs().amax(dim=(1, 2)).min() > 1e-3  # every guided row changed
    swapped = run(ca, d, [slice(0, 2)])        # layout [0, 1] guides the first half instead
    assert torch.equal(swapped[2:], ref[2:]) and (swapped[:2] - ref[:2]).abs().max() > 1e-3
    single = run(ca, d, [slice(0, 1)], x=d["x"][2:3], ctx=d["ctx"][2:3])
    torch.testing.assert_close(single, out[2:3], atol=1e-6, rtol=1e-6)  # batch-size independent


@torch.no_grad()
def test_negative_lengths_and_batches(setup):
    ca, d = setup
    g = torch.Generator().manual_seed(5)
    long_neg = torch.randn(1, 700, 128, generator=g)
    out = run(ca, d, [slice(0, 4)], neg=long_neg)
    cfg = NAGConfig()
    torch.testing.assert_close(out.double(), by_hand(ca, d["x"], d["ctx"], long_neg, d["n_img"], cfg),
                               atol=2e-5, rtol=1e-5)
    # the tokens past 512 are used (no truncation)
    cut = run(ca, d, [slice(0, 4)], neg=long_neg[:, :512])
    assert (out - cut).abs().max() > 1e-6
    # a per-row negative batch matching the chunk
    per_row = run(ca, d, [slice(0, 2)], neg=long_neg.expand(2, -1, -1))
    torch.testing.assert_close(per_row[:2], out[:2], atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="neg_context: batch 3"):
        run(ca, d, [slice(0, 2)], neg=long_neg.expand(3, -1, -1))


@pytest.mark.parametrize("cu,batch,expected", [
    ([0], 1, [slice(0, 1)]), ([1], 1, []), ([1, 0], 2, [slice(1, 2)]), ([0, 1], 4, [slice(0, 2)]),
    ([1, 0, 0], 6, [slice(2, 6)]), ([0, 1, 0], 3, [slice(0, 1), slice(2, 3)]),
])
def test_guided_row_slices(cu, batch, expected):
    assert guided_row_slices(cu, batch) == expected


def test_row_errors_and_remap():
    with pytest.raises(ValueError, match="batch=3"):
        guided_row_slices([1, 0], 3)
    with pytest.raises(ValueError, match="empty"):
        guided_row_slices([], 2)
    # full batch [u, u, c, c]; a cache runs rows 1 and 2 only -> row 1 of the subset is guided
    assert remap_row_slices([slice(2, 4)], [1, 2]) == [slice(1, 2)]
    assert remap_row_slices([slice(2, 4)], [0, 1]) == []
    assert remap_row_slices([slice(0, 1), slice(2, 3)], [0, 2, 3]) == [slice(0, 2)]
