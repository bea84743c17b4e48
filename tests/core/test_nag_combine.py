"""The NAG combine rule against an independent per-token reference and hand-computed values.

Float comparisons: claims of equality with a reference are made in float64 (tolerance 1e-12 on
values of order 1-10, about 1e4 ulp) or, in float32/16, relative to the magnitude with a stated
number of ulp. ``torch.equal`` is used only where the arithmetic is exact by construction on any
IEEE machine (see ``test_identities_are_exact``). Tests taking ``device`` run on the CPU and on
CUDA where present (``tests/conftest.py``)."""
import math

import pytest
import torch

from nag import NAGConfig, check_nag_params, nag_combine


def reference(zp, zn, s, tau, alpha):
    """Independent float64 reference, token by token, in the paper's written order:
    G = s*Z+ - (s-1)*Z-; r = sum|G| / sum|Z+|; if r > tau: G = G*tau/r; out = a*G + (1-a)*Z+."""
    zp = zp.double().reshape(-1, zp.shape[-1])
    zn = zn.double().reshape(-1, zn.shape[-1])
    out = torch.empty_like(zp)
    for i in range(zp.shape[0]):
        g = [s * a - (s - 1) * b for a, b in zip(zp[i].tolist(), zn[i].tolist())]
        npos = sum(abs(a) for a in zp[i].tolist())
        ng = sum(abs(a) for a in g)
        if npos > 0 and ng / npos > tau:
            g = [v * tau / (ng / npos) for v in g]
        elif npos == 0:
            g = [0.0] * len(g)  # the ratio is infinite: clipped to tau * 0
        out[i] = torch.tensor([alpha * a + (1 - alpha) * b for a, b in zip(g, zp[i].tolist())], dtype=torch.float64)
    return out


EPS32 = torch.finfo(torch.float32).eps


def rand(*shape, seed=0, dtype=torch.float32, device="cpu"):
    t = torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return t.to(device=device, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_hand_case(device, dtype):
    zp = torch.tensor([[1.0, 0, 0, 0]], dtype=dtype, device=device)
    zn = torch.tensor([[0.0, 1, 0, 0]], dtype=dtype, device=device)
    out = nag_combine(zp, zn, 11, 2.5, 0.25).cpu().double()
    # G = [11, -10, 0, 0], r = 21 > 2.5 -> G*2.5/21; out = 0.25*G^ + 0.75*[1,0,0,0]
    expected = torch.tensor([[0.75 + 0.25 * 11 * 2.5 / 21, -0.25 * 10 * 2.5 / 21, 0, 0]], dtype=torch.float64)
    # float64: a few ulp of 1; float32: 8 ulp of the largest value (about 10 roundings in the rule)
    tol = 1e-14 if dtype == torch.float64 else 8 * EPS32 * 1.1
    torch.testing.assert_close(out, expected, atol=tol, rtol=0)
    torch.testing.assert_close(out, torch.tensor([[1.077381, -0.297619, 0.0, 0.0]], dtype=torch.float64),
                               atol=5e-7 + tol, rtol=0)  # the printed 6-decimal values (rounded) + tol


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_no_clip_case(device, dtype):
    # G = 3*Z+ - 2*Z- = [1.2, 1, 1, 0.8]: r = 1 <= tau, out = 0.25*G + 0.75*Z+
    zp = torch.tensor([[1.0, 1, 1, 1]], dtype=dtype, device=device)
    zn = torch.tensor([[0.9, 1, 1, 1.1]], dtype=dtype, device=device)
    out = nag_combine(zp, zn, 3, 2.5, 0.25).cpu().double()
    tol = 1e-14 if dtype == torch.float64 else 8 * EPS32 * 1.05   # 0.9 and 1.1 are not exact in binary
    torch.testing.assert_close(out, torch.tensor([[1.05, 1.0, 1.0, 0.95]], dtype=torch.float64), atol=tol, rtol=0)


@pytest.mark.parametrize("s,tau,alpha", [(11, 2.5, 0.25), (5, 1.0, 1.0), (2, 3.5, 0.5), (50, 1.5, 0.1)])
def test_matches_reference(device, s, tau, alpha):
    zp, zn = rand(2, 5, 24, seed=1, dtype=torch.float64), rand(2, 5, 24, seed=2, dtype=torch.float64)
    out = nag_combine(zp.to(device), zn.to(device), s, tau, alpha).cpu().reshape(-1, 24)
    torch.testing.assert_close(out, reference(zp, zn, s, tau, alpha), atol=1e-12, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_identities_are_exact(device, dtype):
    """Exact on any IEEE machine by the rule's arithmetic: scale 1 and alpha 0 return Z+ itself;
    with Z- == Z+ the difference Z+ - Z- is 0, so G == Z+ bit for bit, ||G|| == ||Z+|| (same
    operands), no clip (tau >= 1), and Z+ + alpha * (G - Z+) == Z+ + 0."""
    zp, zn = rand(3, 7, 32, seed=3, dtype=dtype, device=device), rand(3, 7, 32, seed=4, dtype=dtype, device=device)
    assert torch.equal(nag_combine(zp, zn, 1.0, 2.5, 0.25), zp)      # scale 1
    assert torch.equal(nag_combine(zp, zn, 11.0, 2.5, 0.0), zp)      # alpha 0
    assert torch.equal(nag_combine(zp, zp.clone(), 11.0, 2.5, 0.25), zp)  # Z- == Z+
    assert torch.equal(nag_combine(zp, zp.clone(), 11.0, 1.0, 1.0), zp)
    out = nag_combine(zp, zn, 11.0, 2.5, 0.25)
    assert out.dtype == dtype and out.shape == zp.shape


def test_large_tau_is_pure_extrapolation(device):
    zp, zn = rand(4, 16, seed=5, dtype=torch.float64, device=device), rand(4, 16, seed=6, dtype=torch.float64, device=device)
    out = nag_combine(zp, zn, 7.0, 1e9, 0.3)
    torch.testing.assert_close(out, zp + 0.3 * 6.0 * (zp - zn), atol=1e-12, rtol=0)


def test_ratio_after_rescaling_equals_tau():
    zp, zn = rand(64, 32, seed=7).double(), rand(64, 32, seed=8).double()
    zn[:32] = zp[:32] + 0.05 * zn[:32]  # half the tokens: Z- near Z+, ratio below tau
    s, tau = 11.0, 2.5
    g = s * zp - (s - 1) * zn
    r = g.abs().sum(-1) / zp.abs().sum(-1)
    ghat = nag_combine(zp, zn, s, tau, 1.0)  # alpha 1 returns the normalised G
    r_after = ghat.abs().sum(-1) / zp.abs().sum(-1)
    clipped = r > tau
    assert clipped[32:].all() and not clipped[:32].any()
    torch.testing.assert_close(r_after[clipped], torch.full_like(r_after[clipped], tau), atol=1e-12, rtol=0)
    torch.testing.assert_close(r_after[~clipped], r[~clipped], atol=1e-12, rtol=0)
    # direction of every token is kept: G^ is a positive multiple of G
    cos = torch.nn.functional.cosine_similarity(ghat, g, dim=-1)
    torch.testing.assert_close(cos, torch.ones_like(cos), atol=1e-12, rtol=0)


def test_norm_is_over_all_channels_not_per_head():
    zp, zn = rand(1, 6, 32, seed=9).double(), rand(1, 6, 32, seed=10).double()
    out = nag_combine(zp, zn, 11, 2.5, 0.25)
    per_head = torch.cat([reference(zp[..., h * 8:(h + 1) * 8], zn[..., h * 8:(h + 1) * 8], 11, 2.5, 0.25)
                          for h in range(4)], dim=-1)
    assert (out.reshape(-1, 32) - per_head).abs().max() > 1e-2


def test_tokens_are_independent_and_chunking_is_exact(device):
    """Equality in float64: each token's result depends on that token's C values only, and the
    per-token reductions see the same operands in the same order whatever the chunking."""
    zp = rand(2, 37, 16, seed=11, dtype=torch.float64, device=device)
    zn = rand(2, 37, 16, seed=12, dtype=torch.float64, device=device)
    full = nag_combine(zp, zn, 11, 2.5, 0.25)
    perm = torch.randperm(37, generator=torch.Generator().manual_seed(0)).to(device)
    assert torch.equal(nag_combine(zp[:, perm], zn[:, perm], 11, 2.5, 0.25), full[:, perm])
    for chunk in (1, 5, 36, 100):
        assert torch.equal(nag_combine(zp, zn, 11, 2.5, 0.25, chunk_tokens=chunk), full)
    # changing one token leaves the others bit-identical
    zn2 = zn.clone()
    zn2[:, 3] += 1.0
    out2 = nag_combine(zp, zn2, 11, 2.5, 0.25)
    keep = [i for i in range(37) if i != 3]
    assert torch.equal(out2[:, keep], full[:, keep]) and not torch.equal(out2[:, 3], full[:, 3])


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 2e-3), (torch.bfloat16, 1.6e-2)])
def test_low_precision_matches_float64_reference(device, dtype, tol):
    """Relative to the largest value: 2e-3 is 2 ulp of float16 (eps 9.8e-4), 1.6e-2 two of bfloat16
    (eps 7.8e-3): one rounding of the float32 result to the storage dtype, plus margin."""
    zp = rand(2, 20, 5120, seed=13, dtype=dtype, device=device)
    zn = rand(2, 20, 5120, seed=14, dtype=dtype, device=device)
    out = nag_combine(zp, zn, 11, 2.5, 0.25).double()
    ref = nag_combine(zp.double(), zn.double(), 11, 2.5, 0.25)
    rel = ((out - ref).abs().max() / ref.abs().max()).item()
    assert rel < tol, rel
    # the L1 ratio is exact enough to keep the tau bound per token
    g = nag_combine(zp, zn, 11, 2.5, 1.0).double()
    assert (g.abs().sum(-1) / zp.double().abs().sum(-1)).max() < 2.5 * (1 + tol)


def test_zero_norm_token_stays_finite(device):
    zp = torch.zeros(1, 3, 8)
    zp[0, 1] = 1.0
    zn = torch.ones(1, 3, 8)
    for dtype in (torch.float32, torch.float16):
        out = nag_combine(zp.to(device, dtype), zn.to(device, dtype), 11, 2.5, 0.25).cpu()
        assert torch.isfinite(out).all()
        assert torch.equal(out[0, 0], torch.zeros(8, dtype=dtype))  # Z+ = 0 stays 0: 0 + 0.25 * (0 - 0)
    torch.testing.assert_close(nag_combine(zp.double(), zn.double(), 11, 2.5, 0.25).reshape(-1, 8),
                               reference(zp, zn, 11, 2.5, 0.25), atol=1e-12, rtol=0)
    both_zero = nag_combine(torch.zeros(2, 4), torch.zeros(2, 4), 11, 2.5, 0.25)
    assert torch.equal(both_zero, torch.zeros(2, 4))


def test_homogeneous(device):
    zp, zn = rand(3, 16, seed=15, dtype=torch.float64, device=device), rand(3, 16, seed=16, dtype=torch.float64, device=device)
    torch.testing.assert_close(nag_combine(-3.7 * zp, -3.7 * zn, 11, 2.5, 0.25),
                               -3.7 * nag_combine(zp, zn, 11, 2.5, 0.25), atol=1e-12, rtol=0)


@pytest.mark.parametrize("kw,match", [
    (dict(scale=0.5), "scale=0.5: must be >= 1"), (dict(scale=float("nan")), "scale=nan"),
    (dict(tau=0.5), "tau=0.5"), (dict(tau=float("inf")), "tau=inf"),
    (dict(alpha=1.5), "alpha=1.5"), (dict(alpha=-0.1), "alpha=-0.1"),
])
def test_bad_parameters(kw, match):
    args = dict(scale=11.0, tau=2.5, alpha=0.25)
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        nag_combine(torch.ones(1, 4), torch.zeros(1, 4), **args)
    name = next(iter(kw))
    with pytest.raises(ValueError, match=rf"^{name} \(--{name}\): ") as e:   # the settings record names it
        NAGConfig(**args).validate()
    assert e.value.param == name


def test_bad_shapes_and_config():
    with pytest.raises(ValueError, match="z_neg: shape"):
        nag_combine(torch.ones(1, 4), torch.ones(1, 5), 11, 2.5, 0.25)
    with pytest.raises(ValueError, match="sigma_end"):
        NAGConfig(sigma_end=-1).validate()
    with pytest.raises(ValueError, match="sigma_end"):
        NAGConfig(sigma_end=math.nan).validate()
    check_nag_params(1.0, 1.0, 0.0)  # the off settings are allowed


def test_config_gate():
    c = NAGConfig(sigma_end=0.5).validate()
    assert c.enabled and c.active_at(0.5) and c.active_at(torch.tensor([0.9, 0.9])) and not c.active_at(0.49)
    assert NAGConfig().active_at(0.0) and NAGConfig().active_at(None)
    assert not NAGConfig(scale=1.0).enabled and not NAGConfig(alpha=0.0).active_at(1.0)
    assert NAGConfig() == NAGConfig(11.0, 2.5, 0.25, 0.0)
