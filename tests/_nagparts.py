"""Partial attentions of the same queries over three key sets (image / positive text / negative text), made by
real attention over random keys so that each part's output and log-sum-exp agree: the inputs of NAG's merge and
rule kernels (tests/core/test_nag_fused.py, and tests/_triton_check.py for the Triton kernel)."""
import torch

from nag.joint import attention_with_lse


def parts(shape, seed=0, dtype=torch.float32, empty=None):
    """``[(out, lse)] * 3`` for ``(B, H, Li, D)`` image queries over ``Li`` image, 5 positive and 9 negative keys
    (values x3); ``empty`` names a part ("pos" / "neg") whose keys are all masked; outputs in ``dtype``."""
    g = torch.Generator().manual_seed(seed)
    b, h, n, d = shape
    q = torch.randn(b, h, n, d, generator=g)
    out = []
    for name, nk in (("img", n), ("pos", 5), ("neg", 9)):
        k, v = torch.randn(b, h, nk, d, generator=g), torch.randn(b, h, nk, d, generator=g) * 3
        mask = torch.zeros(1, 1, 1, nk, dtype=torch.bool) if name == empty else None
        o, lse = attention_with_lse(q, k, v, mask, out_dtype=torch.float32)
        out.append((o.to(dtype), lse))
    return out


def flat(p):
    """``(o_img, l_img, o_pos, l_pos, o_neg, l_neg)`` of :func:`parts`' pairs."""
    return (p[0][0], p[0][1], p[1][0], p[1][1], p[2][0], p[2][1])
