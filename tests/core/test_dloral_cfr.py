"""CFR (flow warp, SpyNet, retrieval attention) and colour fixes against independent references."""
import numpy as np
import pytest
import torch
from scipy import ndimage

from dloral import adain_color_fix, cfr_fuse, flow_warp, wavelet_color_fix
from dloral.colorfix import wavelet_split
import _dloral_models as dm


pytestmark = pytest.mark.usefixtures("single_thread")


# Equality claims (identity warp, integer shifts, chunked == dense attention, the references below)
# run in float64: their error is then rounding only, a few ulp of the values' magnitude (|x| < 20, ulp
# 3.6e-15), so a 1e-12 bound holds on any CPU whatever the summation order of its kernels, and any real
# error (a wrong offset, a dropped chunk) is many orders of magnitude above it. In float32 the chunked and
# dense attention differ by ~2 ulp of |out| ~ 14 (1.9e-6), above the 1e-6 once demanded here.
F64 = torch.float64
EXACT = dict(atol=1e-12, rtol=0)


def _pair(b=2, h=12, w=10, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    lr = torch.rand(2 * b, 3, 8 * h, 8 * w, generator=g, dtype=dtype) * 2 - 1
    z = torch.randn(2 * b, 4, h, w, generator=g, dtype=dtype)
    return lr[:b], lr[b:], z[:b], z[b:]


def test_zero_flow_and_zero_attention_leave_current_unchanged():
    lp, lc, zp, zc = _pair(dtype=F64)
    warped, fused = cfr_fuse(dm.cfr(zero_flow=True, zero_attn=True).double(), lp, lc, zp, zc)
    torch.testing.assert_close(warped, zp, **EXACT)   # zero flow: identity warp (grid rounding only)
    assert torch.equal(fused, zc)                      # no retrieval: C + out(0) = C


def test_attention_is_active_with_real_thresholds():
    lp, lc, zp, zc = _pair()
    _, fused = cfr_fuse(dm.cfr(zero_flow=True), lp, lc, zp, zc)
    assert (fused - zc).abs().mean() > 1e-3   # the identity test above is not vacuous


@pytest.mark.parametrize("dx,dy", [(2, -1), (-3, 0), (0, 4)])
def test_integer_flow_shifts_exactly(dx, dy):
    x = torch.randn(2, 4, 9, 11, dtype=F64)
    flow = torch.zeros(2, 2, 9, 11, dtype=F64)
    flow[:, 0], flow[:, 1] = dx, dy
    out = flow_warp(x, flow)
    ref = torch.zeros_like(x)
    h, w = x.shape[-2:]
    for i in range(h):
        for j in range(w):
            si, sj = i + dy, j + dx
            if 0 <= si < h and 0 <= sj < w:
                ref[..., i, j] = x[..., si, sj]
    torch.testing.assert_close(out, ref, **EXACT)


def _dense_reference(att, cur, prev):
    """The retrieval attention written out with einsum over all N×N pairs."""
    b, _, h, w = cur.shape
    q = att.q(cur).view(b, 9, 64, -1)
    k = att.k(prev).view(b, 9, 64, -1)
    v = att.v(prev).view(b, 9, 64, -1)
    sim = torch.einsum("bhdi,bhdj->bhij", q, k) / 8.0
    tau = torch.einsum("bhdi,d->bhi", q, att.threshold.weight[0]) + att.threshold.bias
    a = torch.clamp((sim - tau[..., None]) / 3000.0, min=0)
    o = torch.einsum("bhij,bhdj->bhdi", a, v).reshape(b, 576, h, w)
    return cur + att.out(o)


@torch.no_grad()
def test_chunked_attention_equals_dense_and_reference():
    att = dm.cfr().attn.double()
    g = torch.Generator().manual_seed(3)
    cur = torch.randn(2, 4, 7, 9, generator=g, dtype=F64) * 3
    prev = torch.randn(2, 4, 7, 9, generator=g, dtype=F64) * 3
    dense = att(cur, prev, chunk=None)
    assert dense.abs().max() < 20                     # the magnitude the 1e-12 bound is scaled to
    ref = _dense_reference(att, cur, prev)
    torch.testing.assert_close(dense, ref, **EXACT)
    frac = ((att.q(cur).view(2, 9, 64, -1).transpose(-1, -2) @ att.k(prev).view(2, 9, 64, -1)) / 8 > 0).float().mean()
    assert 0.05 < frac < 0.95  # a mix of retrieved and dropped pairs
    for chunk in (1, 5, 16, 62, 63, 1000):
        torch.testing.assert_close(att(cur, prev, chunk=chunk), dense, **EXACT)


def test_adain_matches_reference_statistics():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(2, 3, 40, 30, generator=g) * 0.4 + 0.3
    ref = torch.rand(2, 3, 40, 30, generator=g) * 0.2 + 0.5
    out = adain_color_fix(img, ref)
    assert out.min() > 0 and out.max() < 1     # no clamping, so the statistics are exact
    torch.testing.assert_close(out.mean((2, 3)), ref.mean((2, 3)), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.std((2, 3)), ref.std((2, 3)), atol=1e-4, rtol=0)
    # the pattern (normalised image) is img's, not ref's
    z = lambda t: (t - t.mean((2, 3), keepdim=True)) / t.std((2, 3), keepdim=True)
    torch.testing.assert_close(z(out), z(img), atol=1e-3, rtol=0)


def _atrous_numpy(x, levels=5):
    k = np.array([1, 2, 1], float) / 4
    low = x.astype(np.float64)
    for i in range(levels):
        d = 2 ** i
        kd = np.zeros(2 * d + 1)
        kd[::d] = k
        low = ndimage.convolve1d(low, kd, axis=-1, mode="nearest")
        low = ndimage.convolve1d(low, kd, axis=-2, mode="nearest")
    return x - low, low


def test_wavelet_matches_numpy_reference_and_keeps_ref_low_frequencies():
    g = torch.Generator().manual_seed(1)
    img = torch.rand(1, 3, 48, 40, generator=g) * 0.3 + 0.35
    ref = torch.rand(1, 3, 48, 40, generator=g) * 0.2 + 0.15
    hi, lo = wavelet_split(img)
    nhi, nlo = _atrous_numpy(img.numpy())
    np.testing.assert_allclose(lo.numpy(), nlo, atol=1e-5)
    np.testing.assert_allclose(hi.numpy(), nhi, atol=1e-5)
    out = wavelet_color_fix(img, ref)
    want = np.clip(nhi + _atrous_numpy(ref.numpy())[1], 0, 1)
    np.testing.assert_allclose(out.numpy(), want, atol=1e-5)
    # colour moves to the reference's (replicate borders make the mean transfer approximate)
    assert (img.mean((2, 3)) - ref.mean((2, 3))).abs().min() > 0.2
    torch.testing.assert_close(out.mean((2, 3)), ref.mean((2, 3)), atol=5e-3, rtol=0)
