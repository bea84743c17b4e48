"""dloral.lora.lora_module: LoRA in the forward pass, against a layer holding the merged weight (float64)."""
import pytest
import torch
import torch.nn.functional as F

from dloral.lora import lora_base, lora_module, lora_scale


def _factors(o, i, r, k=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    down = torch.randn((r, i) if k is None else (r, i, k, k), generator=g, dtype=torch.float64) * 0.3
    up = torch.randn((o, r) if k is None else (o, r, 1, 1), generator=g, dtype=torch.float64) * 0.3
    return down, up


@pytest.mark.parametrize("kind", ["linear", "conv3", "conv3_stride2"])
def test_equals_merged_layer(kind):
    torch.manual_seed(0)
    if kind == "linear":
        base = torch.nn.Linear(24, 16).double()
        down, up = _factors(16, 24, 4)
        x = torch.randn(3, 7, 24, dtype=torch.float64)
    else:
        stride = 2 if kind.endswith("stride2") else 1
        base = torch.nn.Conv2d(6, 10, 3, stride=stride, padding=1).double()
        down, up = _factors(10, 6, 4, k=3)
        x = torch.randn(2, 6, 9, 11, dtype=torch.float64)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    mod = lora_module(base, down, up, scale=0.5)
    w = base.weight + 0.5 * (up.flatten(1) @ down.flatten(1)).reshape(base.weight.shape)   # merged, float64
    ref = F.linear(x, w, base.bias) if kind == "linear" else F.conv2d(x, w, base.bias, base.stride, base.padding)
    with torch.no_grad():
        out = mod(x)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=1e-12)
    # otherwise the base module: same class, keys and tensors (no copy); the base is untouched
    assert type(mod) is type(base) and list(mod.state_dict()) == list(base.state_dict())
    assert mod.weight is base.weight and mod.bias is base.bias
    assert all(torch.equal(base.state_dict()[k], v) for k, v in before.items())
    with torch.no_grad():
        torch.testing.assert_close(base(x), F.linear(x, base.weight, base.bias) if kind == "linear"
                                   else F.conv2d(x, base.weight, base.bias, base.stride, base.padding))


def test_follows_input_dtype_and_never_stacks():
    base = torch.nn.Linear(8, 5)
    down, up = _factors(5, 8, 2)
    mod = lora_module(base, down, up)
    x = torch.randn(4, 8)
    with torch.no_grad():
        y32 = mod(x)
        y64 = mod.double()(x.double())         # moved as the host would move it: the factors follow
    assert y32.dtype == torch.float32 and y64.dtype == torch.float64
    torch.testing.assert_close(y32.double(), y64, atol=1e-5, rtol=1e-5)
    again = lora_module(mod, down, up)        # wrapping a wrapped module wraps its base: one LoRA term
    assert lora_base(again) is base and lora_base(base) is base
    with torch.no_grad():
        torch.testing.assert_close(again(x.double()), y64)


def test_bad_factors_and_scale():
    with pytest.raises(ValueError, match="do not chain"):
        lora_module(torch.nn.Linear(8, 5), torch.zeros(2, 8), torch.zeros(5, 3))
    lora = {"m.lora_down.weight": torch.zeros(4, 8), "m.lora_up.weight": torch.zeros(5, 4)}
    assert lora_scale(lora, "m") == 1.0
    assert lora_scale({**lora, "m.alpha": torch.tensor(8.0)}, "m") == 2.0

    with pytest.raises(ValueError, match="does not add up"):
        lora_module(torch.nn.Linear(8, 5), torch.zeros(4, 8), torch.zeros(5, 4), split=(2, 3))


def _peft_style(base, adapters, x, conv):
    """PEFT's LoRA forward, written out: ``y = base(x)``, then per active adapter ``y = y + B(A(x)) * s``
    with A and B layers of their own (A with the base conv's stride and padding, B 1x1, no biases)."""
    y = base(x)
    for a, b, s in adapters:
        if conv:
            la = torch.nn.Conv2d(a.shape[1], a.shape[0], a.shape[-1], base.stride, base.padding, bias=False)
            lb = torch.nn.Conv2d(b.shape[1], b.shape[0], 1, bias=False)
        else:
            la, lb = torch.nn.Linear(a.shape[1], a.shape[0], bias=False), torch.nn.Linear(b.shape[1], b.shape[0], bias=False)
        la.weight.data.copy_(a)
        lb.weight.data.copy_(b)
        y = y + lb(la(x)) * s
    return y


@pytest.mark.parametrize("conv", [False, True])
def test_split_adapters_are_peft_to_the_bit(conv):
    """Two adapters stacked in one factor pair (the converted file's layout: down = [A_q; A_c], up = [s B_q | s B_c])
    run with ``split`` give PEFT's float32 numbers exactly; as one rank-16 product they do not."""
    torch.manual_seed(0)
    base = torch.nn.Conv2d(32, 48, 3, padding=1) if conv else torch.nn.Linear(96, 80)
    k = (3, 3) if conv else ()
    i, o = (32, 48) if conv else (96, 80)
    aq, ac = torch.randn(8, i, *k) * 0.2, torch.randn(8, i, *k) * 0.2
    bq, bc = (torch.randn(o, 8, *((1, 1) if conv else ())) * 0.2 for _ in range(2))
    s = 2.0                                              # PEFT's default alpha 8 over rank 4: a power of two
    down, up = torch.cat([aq, ac]), torch.cat([bq * s, bc * s], 1)
    x = torch.randn(2, 32, 12, 10) if conv else torch.randn(3, 50, 96)
    with torch.no_grad():
        ref = _peft_style(base, [(aq, bq, s), (ac, bc, s)], x, conv)
        split = lora_module(base, down, up, split=(8, 8))(x)
        whole = lora_module(base, down, up)(x)
    assert torch.equal(split, ref)
    assert not torch.equal(whole, ref)                   # one product rounds differently: what split is for
    torch.testing.assert_close(whole, ref, atol=1e-4, rtol=1e-4)
