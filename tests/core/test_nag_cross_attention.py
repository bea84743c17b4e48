"""NAG inside a Wan cross-attention (tiny random Wan modules, no host) and the row logic.

Tests taking ``device`` run on the CPU and on CUDA where present. Float32 results are compared
with float64 references relative to the reference's largest value, ``TOL`` = 64 ulp of float32:
the path is a few float32 matmuls over 128 channels and softmaxes over at most 700 tokens
(measured: about 3 ulp). ``torch.equal`` is used where the same operations run on the same
operands (unguided rows, a negative equal to the positive, see ``test_nag_combine``)."""
import copy

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


TOL = 64 * torch.finfo(torch.float32).eps


def close(a, b, tol=TOL):
    """|a - b| <= tol * max|b|, elementwise over the whole tensor (float64 comparison)."""
    a, b = a.detach().cpu().double(), b.detach().cpu().double()
    err, scale = (a - b).abs().max().item(), b.abs().max().item()
    assert err <= tol * scale, f"max error {err:.3g} > {tol:.3g} x {scale:.3g}"


_moved = {}


def on(setup, device):
    """The fixture's module and data on ``device`` (a copy; the CPU ones are the originals)."""
    ca, d = setup
    if device.type == "cpu":
        return ca, d
    key = (id(ca), str(device))
    if key not in _moved:
        _moved[key] = (copy.deepcopy(ca).to(device),
                       {k: v.to(device) if torch.is_tensor(v) else v for k, v in d.items()})
    return _moved[key]


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
def test_unguided_equals_module(setup, device):
    ca, d = on(setup, device)
    ref = ca(d["x"], d["ctx"], d["n_img"])
    assert torch.equal(run(ca, d, []), ref)
    assert torch.equal(run(ca, d, [slice(0, 4)], NAGConfig(scale=1.0)), ref)


@torch.no_grad()
def test_negative_equal_positive_is_exact(setup, device):
    ca, d = on(setup, device)
    txt = d["ctx"][:, d["n_img"]:] if d["n_img"] else d["ctx"]
    ref = ca(d["x"], d["ctx"], d["n_img"])
    assert torch.equal(run(ca, d, [slice(0, 4)], neg=txt), ref)


@torch.no_grad()
def test_matches_hand_composition_with_unguided_image_branch(setup, device):
    ca, d = on(setup, device)
    cfg = NAGConfig(scale=11, tau=2.5, alpha=0.25)
    out = run(ca, d, [slice(0, 4)], cfg)
    close(out, by_hand(ca, d["x"], d["ctx"], d["neg"], d["n_img"], cfg))
    assert (out - ca(d["x"], d["ctx"], d["n_img"])).abs().max() > 1e-3


@torch.no_grad()
def test_only_guided_rows_change_and_rows_are_independent(setup, device):
    ca, d = on(setup, device)
    ref = ca(d["x"], d["ctx"], d["n_img"])
    out = run(ca, d, [slice(2, 4)])            # layout [1, 0] with 2 rows per chunk
    assert torch.equal(out[:2], ref[:2])
    assert (out[2:] - ref[2:]).abs().amax(dim=(1, 2)).min() > 1e-3  # every guided row changed
    swapped = run(ca, d, [slice(0, 2)])        # layout [0, 1] guides the first half instead
    assert torch.equal(swapped[2:], ref[2:]) and (swapped[:2] - ref[:2]).abs().max() > 1e-3
    single = run(ca, d, [slice(0, 1)], x=d["x"][2:3], ctx=d["ctx"][2:3])
    close(single, out[2:3])  # batch-size independent (a matmul may block a batch of 1 differently)


@torch.no_grad()
def test_negative_lengths_and_batches(setup, device):
    ca, d = on(setup, device)
    g = torch.Generator().manual_seed(5)
    long_neg = torch.randn(1, 700, 128, generator=g).to(d["x"].device)
    out = run(ca, d, [slice(0, 4)], neg=long_neg)
    cfg = NAGConfig()
    close(out, by_hand(ca, d["x"], d["ctx"], long_neg, d["n_img"], cfg))
    # the tokens past 512 are used (no truncation)
    cut = run(ca, d, [slice(0, 4)], neg=long_neg[:, :512])
    assert (out - cut).abs().max() > 100 * TOL * out.abs().max()  # far above rounding
    # a per-row negative batch matching the chunk
    per_row = run(ca, d, [slice(0, 2)], neg=long_neg.expand(2, -1, -1))
    close(per_row[:2], out[:2])
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


def test_share_modules_shares_the_very_same_objects():
    from nag.cross_attention import share_modules

    class Host(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.q, self.norm_q = torch.nn.Linear(4, 4), torch.nn.LayerNorm(4)
            self.scale = torch.nn.Parameter(torch.ones(1))
            self.register_buffer("table", torch.arange(3.0))

    host, stand_in = Host(), torch.nn.Module()
    assert share_modules(stand_in, host) is stand_in
    assert stand_in.state_dict().keys() == host.state_dict().keys()
    assert stand_in.q is host.q and stand_in.scale is host.scale and stand_in.table is host.table
    with torch.no_grad():
        host.q.weight.add_(1.0)                                   # a weight patch on the host module ...
    assert torch.equal(stand_in.q.weight, host.q.weight)          # ... is seen through the stand-in
    stand_in.to(torch.float64)                                    # a cast of the stand-in reaches the host's children
    assert host.q.weight.dtype == torch.float64
