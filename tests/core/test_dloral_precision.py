"""Precision: the dtype rule, and the one-step pipeline in bfloat16 and float16 on CPU against float32."""
import pytest
import torch

import _dloral_models as stand_in
from dloral import PRECISIONS, prepare_frames, resolve_dtype, upscale_frames

FP32, FP16, BF16 = torch.float32, torch.float16, torch.bfloat16


def test_resolve_dtype_rule():
    # CPU: float32 whatever the model is stored in, unless forced
    assert resolve_dtype("cpu") is FP32
    assert resolve_dtype(torch.device("cpu"), "auto", model_dtype=FP16) is FP32
    assert resolve_dtype("cpu", "bf16") is BF16 and resolve_dtype("cpu", "fp16") is FP16
    # GPU: the dtype the host runs the UNet in, else bf16 where supported, else fp16
    assert resolve_dtype("cuda:0", "auto", model_dtype=FP16) is FP16
    assert resolve_dtype("cuda", "auto", model_dtype=BF16) is BF16
    assert resolve_dtype("cuda", "auto", bf16_supported=True) is BF16
    assert resolve_dtype("cuda", "auto", bf16_supported=False) is FP16
    # forced choices win everywhere
    for dev in ("cpu", "cuda"):
        assert resolve_dtype(dev, "fp32", model_dtype=FP16) is FP32
        assert resolve_dtype(dev, "fp16", model_dtype=BF16) is FP16
    assert set(PRECISIONS) == {"auto", "fp16", "bf16", "fp32"}
    with pytest.raises(ValueError, match=r"precision must be one of .*'float16'"):
        resolve_dtype("cpu", "float16")


def _run(dtype, color_fix, seed):
    m = stand_in.models(seed=seed)
    vae = stand_in.TinyVAE(seed)
    for mod in (m.unet, m.cfr, vae):
        mod.to(dtype)
    seen, net = [], m.unet

    def unet(x, t, ctx):
        seen.append(x.dtype)
        return net(x, t, ctx)

    m.unet, m.encode, m.decode, m.dtype = unet, vae.encode_mean, vae.decode, dtype
    out = upscale_frames(FRAMES, m, stand_in.cfg(window=2, color_fix=color_fix))
    assert set(seen) == {dtype}, seen
    return out


FRAMES = stand_in.frames(5, 24, 24, seed=3)


@pytest.mark.parametrize("seed", [0, 1])
def test_bf16_pipeline_close_to_fp32(seed):
    """The whole core path (preprocessing, VAE encode, SpyNet + warp, retrieval attention, UNet, update,
    decode, colour fix) in bfloat16 on CPU, tiny random stand-ins, 5 frames, 2 windows.

    Tolerance, from measurement. Without colour fix the output differs from fp32 by max 0.0068-0.0098,
    mean 0.0010-0.0022 over seeds 0-2 (outputs in [0, 1]); rounding only the fp32 weights to bf16 (fp32
    compute) already gives max 0.003, mean 0.0008, so most of the difference is bf16's 8-bit mantissa
    (unit roundoff 2^-9 = 0.002) through ~20 chained ops. Bounds: max 0.03, mean 0.005 (about 3x and 2x
    the worst measured). AdaIN then rescales each channel by std(LR) / std(output), which amplifies the
    difference by up to that gain (5-16 on these stand-ins, whose decoder output has little contrast;
    measured with AdaIN: max 0.025-0.047, mean 0.0029-0.0074): bounds max 0.1, mean 0.015 (2x), and at
    most the gain times the no-fix difference.
    """
    a, b = _run(FP32, "none", seed), _run(BF16, "none", seed)
    d = (a - b).abs()
    assert d.max() > 1e-4, "bf16 run identical to fp32: it did not run in bf16"
    assert d.max() < 0.03 and d.mean() < 0.005, (d.max().item(), d.mean().item())
    lr, _ = prepare_frames(FRAMES, 64)
    gain = (lr.flatten(2).std(-1) / a.flatten(2).std(-1)).max().item()
    fa, fb = _run(FP32, "adain", seed), _run(BF16, "adain", seed)
    da = (fa - fb).abs()
    assert da.max() > 1e-4
    assert da.max() < 0.1 and da.mean() < 0.015, (da.max().item(), da.mean().item())
    assert da.max() < gain * d.max() + 1e-3, (da.max().item(), gain, d.max().item())


@pytest.mark.parametrize("seed", [0, 1])
def test_fp16_pipeline_close_to_fp32(seed):
    """The same core path in float16 on CPU (the dtype the official code and ComfyUI use for SD2.x on most
    GPUs). Measured over seeds 0-2 without colour fix: max 0.0008-0.0012, mean 0.00011-0.00014 (fp16's
    unit roundoff 2^-11 = 0.0005, 4x finer than bf16). Bounds: max 0.005, mean 0.0005 (about 4x), and no
    overflow (every value finite)."""
    a, b = _run(FP32, "none", seed), _run(FP16, "none", seed)
    assert torch.isfinite(b).all()
    d = (a - b).abs()
    assert d.max() > 1e-5, "fp16 run identical to fp32: it did not run in fp16"
    assert d.max() < 0.005 and d.mean() < 0.0005, (d.max().item(), d.mean().item())


def test_run_precision_rule():
    from dloral.precision import run_precision
    # the host's dtype: no autocast
    assert run_precision("cuda", "auto", FP16) == (FP16, FP16, None)
    assert run_precision("cuda", "bf16", BF16) == (BF16, BF16, None)
    assert run_precision("cpu", "auto", FP16) == (FP32, FP32, None)      # CPU auto: fp32 inputs
    assert run_precision("cpu", "fp32", FP16) == (FP32, FP32, None)
    # another half precision: inputs in the host's dtype, matmuls autocast to the chosen one
    assert run_precision("cuda", "bf16", FP16) == (BF16, FP16, BF16)
    assert run_precision("cpu", "fp16", FP32) == (FP16, FP32, FP16)
    # fp32 cannot be reached by autocast on a GPU from a half-precision UNet
    with pytest.raises(ValueError, match=r"precision fp32: the host runs this UNet in torch.float16"):
        run_precision("cuda:0", "fp32", FP16)
    assert run_precision("cuda", "fp32", FP32) == (FP32, FP32, None)


def test_unet_caller_casts_inputs_and_autocasts():
    from dloral.precision import unet_caller
    seen = []
    lin = torch.nn.Linear(4, 4).to(FP32)

    def fn(x, t, c):
        y = lin(x)                                          # autocast decides the matmul's dtype
        seen.append((x.dtype, t.dtype, c.dtype, y.dtype))
        return y

    x, t, c = torch.randn(2, 3, 4, dtype=torch.float64), torch.ones(2, dtype=FP16), torch.randn(2, 5, 4)
    out = unet_caller(fn, "cpu", FP32)(x, t, c)
    assert seen[-1] == (FP32, FP32, FP32, FP32) and out.dtype == FP32
    assert torch.allclose(out, lin(x.float()))
    out = unet_caller(fn, "cpu", FP32, BF16)(x, t, c)      # inputs in the host's dtype, matmuls in bf16
    assert seen[-1] == (FP32, FP32, FP32, BF16) and out.dtype == FP32
    assert torch.allclose(out, lin(x.float()), atol=0.05) and not torch.equal(out, lin(x.float()))
    lin.to(BF16)                                            # a UNet held in bf16, no autocast
    out = unet_caller(fn, torch.device("cpu"), BF16)(x, t, c)
    assert seen[-1] == (BF16, FP32, BF16, BF16) and out.dtype == FP32
