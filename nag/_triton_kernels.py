"""The jit kernels of :mod:`nag.triton_rule` (imported by it on first use: this module imports Triton)."""
import triton
import triton.language as tl

__all__: list = []   # the kernel is private: Triton kernels take untyped pointer and stride arguments


@triton.jit
def _lerp(a, b, w):
    # torch.lerp's two-branch form: a + w (b - a) below w = 0.5, b - (b - a)(1 - w) from it
    return tl.where(w < 0.5, a + w * (b - a), b - (b - a) * (1.0 - w))


@triton.jit
def _weight(l_part, l_base):
    # merge weight sigmoid(l_part - l_base); 0 where both are -inf (NaN), as nag.joint.merge_weight
    x = l_part - l_base
    w = 1.0 / (1.0 + tl.exp(-x))
    return tl.where(x == x, w, 0.0)


@triton.jit
def _token_kernel(oi, op, on, li, lp, ln, kind, out,
                 H, D,
                 so_b, so_h, so_l, so_d, sp_b, sp_h, sp_l, sp_d, sn_b, sn_h, sn_l, sn_d,
                 sli_b, sli_h, sli_l, slp_b, slp_h, slp_l, sln_b, sln_h, sln_l,
                 sout_b, sout_l, sout_h, sout_d,
                 scale, tau, alpha, tiny,
                 MERGED: tl.constexpr, HAS_KIND: tl.constexpr, KIND_IMAGE: tl.constexpr, KIND_POSITIVE: tl.constexpr,
                 BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr):
    t = tl.program_id(0).to(tl.int64)
    b = tl.program_id(1).to(tl.int64)
    hv = tl.arange(0, BLOCK_H)
    h = hv[:, None]
    d = tl.arange(0, BLOCK_D)[None, :]
    m = (h < H) & (d < D)
    if MERGED:   # oi / op are Z+ / Z- already (nag_combine's inputs)
        zp = tl.load(oi + b * so_b + h * so_h + t * so_l + d * so_d, mask=m, other=0.0).to(tl.float32)
        zn = tl.load(op + b * sp_b + h * sp_h + t * sp_l + d * sp_d, mask=m, other=0.0).to(tl.float32)
    else:
        hm = hv < H
        l_i = tl.load(li + b * sli_b + hv * sli_h + t * sli_l, mask=hm, other=0.0).to(tl.float32)
        l_p = tl.load(lp + b * slp_b + hv * slp_h + t * slp_l, mask=hm, other=0.0).to(tl.float32)
        l_n = tl.load(ln + b * sln_b + hv * sln_h + t * sln_l, mask=hm, other=0.0).to(tl.float32)
        o_i = tl.load(oi + b * so_b + h * so_h + t * so_l + d * so_d, mask=m, other=0.0).to(tl.float32)
        o_p = tl.load(op + b * sp_b + h * sp_h + t * sp_l + d * sp_d, mask=m, other=0.0).to(tl.float32)
        o_n = tl.load(on + b * sn_b + h * sn_h + t * sn_l + d * sn_d, mask=m, other=0.0).to(tl.float32)
        zp = _lerp(o_i, o_p, _weight(l_p, l_i)[:, None])
        zn = _lerp(o_i, o_n, _weight(l_n, l_i)[:, None])
    g = _lerp(zn, zp, scale)
    n_pos = tl.sum(tl.sum(tl.abs(zp), axis=1), axis=0)
    n_g = tl.sum(tl.sum(tl.abs(g), axis=1), axis=0)
    factor = tl.minimum(n_pos * tau / tl.maximum(n_g, tiny), 1.0)
    res = _lerp(zp, g * factor, alpha)
    if HAS_KIND:
        k = tl.load(kind + t).to(tl.int32)
        res = tl.where(k == KIND_IMAGE, res, tl.where(k == KIND_POSITIVE, zp, zn))
    dst = out + b * sout_b + t * sout_l + h * sout_h + d * sout_d
    tl.store(dst, res.to(out.dtype.element_ty), mask=m)
