"""Run by tests/host/test_nag_triton_host.py in a child process with ``TRITON_INTERPRET=1`` (Triton reads it when
the kernels are defined): nag.triton_rule's kernels on the CPU against the eager rule. Prints one JSON object."""
import json
import logging
import pathlib
import sys

import torch

sys.path[:0] = [str(pathlib.Path(__file__).resolve().parents[1]), str(pathlib.Path(__file__).resolve().parent)]

from _nagparts import flat, parts as _parts  # noqa: E402
from nag import fused, triton_rule  # noqa: E402

SETTINGS = [(11.0, 2.5, 0.25), (4.0, 1.0, 1.0), (2.0, 10.0, 0.5)]


def parts(shape, seed=0, empty=None):
    """(o_img, l_img, o_pos, l_pos, o_neg, l_neg) in float32 (tests/_nagparts.py)."""
    return list(flat(_parts(shape, seed, empty=empty)))


def token_major(p):
    """The parts stored (B, L, H, D) and viewed (B, H, L, D), as PyTorch's fused attention returns them."""
    return [t.transpose(1, 2).contiguous().transpose(1, 2) if t.ndim == 4 else t for t in p]


def err(a, b):
    return float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-30))


def main():
    r = {"interpreting": triton_rule.interpreting(), "available": triton_rule.available(torch.zeros(1)),
         "guided": {}, "combine": {}}
    for shape in [(1, 2, 7, 8), (2, 3, 33, 16), (1, 24, 64, 4), (1, 5, 10, 100)]:
        for st in SETTINGS:
            p = parts(shape, seed=sum(shape))
            want = fused.guided_eager(*p, *st, torch.float32)
            got = triton_rule.guided(*p, *st, torch.float32)
            r["guided"][f"{shape}{st}"] = {"shape": list(got.shape) == [shape[0], shape[2], shape[1], shape[3]],
                                          "err": err(got, want)}
    p = parts((2, 3, 33, 16), seed=1)
    r["token_major_layout"] = err(triton_rule.guided(*token_major(p), 11.0, 2.5, 0.25, torch.float32),
                                  fused.guided_eager(*p, 11.0, 2.5, 0.25, torch.float32))
    kind = torch.tensor([1, 1, 1, 2, 2] + [0] * 28, dtype=torch.int8)[torch.randperm(33, generator=torch.Generator().manual_seed(0))]
    r["kinds"] = err(triton_rule.guided(*p, 11.0, 2.5, 0.25, torch.float32, kind),
                     fused.guided_eager(*p, 11.0, 2.5, 0.25, torch.float32, kind))
    r["empty_part_bf16"] = {}
    for empty in ("pos", "neg"):
        p = parts((1, 4, 20, 8), seed=3, empty=empty)
        got = triton_rule.guided(*p, 11.0, 2.5, 0.25, torch.bfloat16)
        want = fused.guided_eager(*p, 11.0, 2.5, 0.25, torch.bfloat16)
        r["empty_part_bf16"][empty] = {"dtype": str(got.dtype), "finite": bool(torch.isfinite(got.float()).all()),
                                       "err": err(got, want)}
    p = parts((1, 24, 16, 8), seed=4)
    same = p[:4] + p[2:4]            # the negative's parts are the positive's
    every_pos = torch.full((16,), triton_rule.POSITIVE, dtype=torch.int8)
    r["exact_case_equals_kernel_z_pos"] = all(
        torch.equal(triton_rule.guided(*same, *st, torch.float32),
                    triton_rule.guided(*same, *st, torch.float32, every_pos)) for st in SETTINGS)
    for shape, dtype in (((2, 17, 100), torch.float32), ((1, 6, 3072), torch.float32), ((3, 40), torch.bfloat16)):
        g = torch.Generator().manual_seed(len(shape))
        zp, zn = (torch.randn(*shape, generator=g).to(dtype) for _ in range(2))
        got = triton_rule.combine(zp, zn, 11.0, 2.5, 0.25)
        r["combine"][f"{shape}{dtype}"] = {"dtype": got.dtype == dtype and got.shape == zp.shape,
                                           "err": err(got, fused.combine_eager(zp, zn, 11.0, 2.5, 0.25))}
    # dispatch: nag.fused runs the hand-written kernel where it can, else the compiled one
    calls = []
    real = triton_rule.guided

    def spy(*a, **k):
        calls.append(1)
        return real(*a, **k)
    triton_rule.guided = spy
    p = parts((1, 3, 12, 8), seed=5)
    img, pos, neg = (p[0], p[1]), (p[2], p[3]), (p[4], p[5])
    with fused.policy("on"):
        out = fused.guided(img, pos, neg, 11.0, 2.5, 0.25, out_dtype=torch.float32)
    r["dispatch_hand"] = {"calls": len(calls), "equal": torch.equal(out, real(*p, 11.0, 2.5, 0.25, torch.float32))}
    compiled_calls = []
    fused.compiled = lambda name: (compiled_calls.append(name), fused.guided_eager)[1]
    with fused.policy("on"), fused.hand_kernel(False):
        fused.guided(img, pos, neg, 11.0, 2.5, 0.25, out_dtype=torch.float32)
    r["dispatch_hand_off"] = {"hand_calls": len(calls), "compiled_calls": list(compiled_calls)}

    def boom(*a, **k):
        raise RuntimeError("kernel launch failed here")
    triton_rule.guided = boom
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("nag.fused").addHandler(handler)
    with fused.policy("on"):
        a = fused.guided(img, pos, neg, 11.0, 2.5, 0.25, out_dtype=torch.float32)
        b = fused.guided(img, pos, neg, 11.0, 2.5, 0.25, out_dtype=torch.float32)
    r["failure_falls_back"] = {"warnings": [x.getMessage()[:200] for x in records if x.levelno >= logging.WARNING],
                               "equal_to_eager": torch.equal(a, fused.guided_eager(*p, 11.0, 2.5, 0.25, torch.float32))
                               and torch.equal(a, b)}
    print(json.dumps(r))


if __name__ == "__main__":
    main()
