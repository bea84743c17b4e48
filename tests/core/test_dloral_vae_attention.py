"""dloral.vae_attention: the LDM VAE attention block computed the diffusers way (Linear + fused attention)."""
import pytest
import torch
import torch.nn.functional as F

from dloral.vae_attention import sdpa_attention_block, sdpa_base, vae_attention_paths


class LdmAttn(torch.nn.Module):
    """The LDM VAE attention block's layout (norm, 1x1 q/k/v/proj_out) with the LDM arithmetic: 1x1
    convolutions, an explicit (HW x HW) softmax, written here independently of the code under test."""

    def __init__(self, c):
        super().__init__()
        self.norm = torch.nn.GroupNorm(4, c, eps=1e-6)
        self.q, self.k, self.v, self.proj_out = (torch.nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x):
        b, c, h, w = x.shape
        hn = self.norm(x)
        q, k, v = (m(hn).reshape(b, c, h * w) for m in (self.q, self.k, self.v))
        a = torch.softmax(q.transpose(1, 2) @ k * c ** -0.5, dim=-1)          # (B, HW, HW)
        o = (v @ a.transpose(1, 2)).reshape(b, c, h, w)
        return x + self.proj_out(o)


class Diffusers(torch.nn.Module):
    """diffusers' order: tokens (B, HW, C), Linear q/k/v, fused attention, Linear out, residual."""

    def __init__(self, blk):
        super().__init__()
        self.blk = blk

    def forward(self, x):
        b, c, h, w = x.shape
        t = self.blk.norm(x).reshape(b, c, h * w).transpose(1, 2)
        lin = lambda m, y: F.linear(y, m.weight[:, :, 0, 0], m.bias)
        o = F.scaled_dot_product_attention(*(lin(getattr(self.blk, n), t)[:, None] for n in "qkv"))[:, 0]
        return lin(self.blk.proj_out, o).transpose(1, 2).reshape(b, c, h, w) + x


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_equals_the_ldm_block_and_diffusers_order(dtype):
    torch.manual_seed(0)
    blk = LdmAttn(16).to(dtype)
    x = torch.randn(2, 16, 7, 9, dtype=dtype)
    mod = sdpa_attention_block(blk)
    with torch.no_grad():
        got, ldm, diff = mod(x), blk(x), Diffusers(blk)(x)
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    torch.testing.assert_close(got, ldm, atol=tol, rtol=tol)     # the same function ...
    assert torch.equal(got, diff)                                 # ... in diffusers' arithmetic, to the bit
    if dtype == torch.float32:
        assert not torch.equal(ldm, diff)    # the test can see the difference it is there to remove


def test_shares_parameters_never_stacks_and_follows_dtype():
    blk = LdmAttn(8)
    mod = sdpa_attention_block(blk)
    assert type(mod) is LdmAttn and mod.q is blk.q and list(mod.state_dict()) == list(blk.state_dict())
    assert sdpa_base(sdpa_attention_block(mod)) is blk and sdpa_base(blk) is blk
    x = torch.randn(1, 8, 4, 4)
    with torch.no_grad():
        y = mod(x)
        blk.double()                              # moved as the host moves a model: the copy follows
        y64 = mod(x.double())
    assert y64.dtype == torch.float64
    torch.testing.assert_close(y64.float(), y, atol=1e-5, rtol=1e-5)


def test_paths_and_bad_block():
    net = torch.nn.Module()
    net.encoder = torch.nn.Module()
    net.encoder.mid = torch.nn.Module()
    net.encoder.mid.attn_1 = LdmAttn(8)
    net.decoder = torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3), LdmAttn(8))
    assert vae_attention_paths(net) == ["encoder.mid.attn_1", "decoder.1"]
    with pytest.raises(ValueError, match="Conv2d has no 'norm'"):
        sdpa_attention_block(torch.nn.Conv2d(3, 3, 1))
