"""Stand-in models for DLoRAL core tests: a converted synthetic checkpoint's CFR plus tiny UNet/VAE."""
import torch

from dloral import CFR, DLoRALConfig, DLoRALModels, convert_official
from _dloral_synth import TinyUNet, TinyVAE, make_official, unet_shapes

_W = None


def weights():
    global _W
    if _W is None:
        _W = convert_official(make_official(unet_shapes(), seed=0)[0])
    return _W


def cfr(zero_flow=False, zero_attn=False):
    m = CFR.from_weights(weights())
    with torch.no_grad():
        if zero_flow:
            for lvl in m.spynet.levels:
                lvl[-1].weight.zero_()
                lvl[-1].bias.zero_()
        if zero_attn:
            m.attn.threshold.bias.fill_(1e6)
            m.attn.out.bias.zero_()
    return m


class Counting:
    """Wraps a callable and records the batch size of each call."""

    def __init__(self, fn):
        self.fn, self.batches = fn, []

    def __call__(self, x, *a):
        self.batches.append(x.shape[0])
        return self.fn(x, *a)


class CountingLoader:
    """A loader (``LoadRequest`` -> models) around ``base``: counts the UNet calls of what it loads in
    ``calls``; ``stop_at``: the call (1-based) that raises KeyboardInterrupt, as Ctrl-C would."""

    def __init__(self, base, stop_at=None):
        self.base, self.stop_at, self.calls = base, stop_at, 0

    def __call__(self, request):
        m = self.base(request)
        unet = m.unet

        def counted(*args):
            self.calls += 1
            if self.calls == self.stop_at:
                raise KeyboardInterrupt
            return unet(*args)
        m.unet = counted
        return m


def models(kernel=3, zero_flow=False, zero_attn=False, seed=0, moments=False):
    vae, unet = TinyVAE(seed), TinyUNet(seed=seed)
    if kernel == 1:
        with torch.no_grad():
            unet.c1 = torch.nn.Conv2d(8, 16, 1)
            unet.c2 = torch.nn.Conv2d(16, 4, 1)
    enc = Counting(vae.encode if moments else vae.encode_mean)
    ctx = torch.randn(1, 5, 16, generator=torch.Generator().manual_seed(seed))
    return DLoRALModels(unet=unet, encode=enc, decode=vae.decode,
                        cfr=cfr(zero_flow, zero_attn), context=ctx)


def frames(n, h=16, w=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(3, h, w, generator=g)
    return torch.stack([(base.roll(i, -1) * 0.8 + 0.2 * torch.rand(3, h, w, generator=g)) for i in range(n)])


def cfg(**kw):
    kw.setdefault("process_size", 64)
    kw.setdefault("window", 2)
    return DLoRALConfig(**kw)
