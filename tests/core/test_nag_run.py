"""NAG per-run state and per-call plan (nag.run), and the node-input checks (nag.config, nag.inputs):
known values, counts and messages, on tiny hand-made tensors and modules."""
import pytest
import torch

from nag import (CallPlan, NAGConfig, NAGRun, SETTINGS, check_negative_context, check_wan_model,
                 config_from_inputs)


class Projector:
    """A known projection ``2*t + 1`` that counts its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, t):
        self.calls += 1
        return 2 * t + 1


NEG = torch.arange(6, dtype=torch.float64).view(1, 2, 3)
CPU = torch.device("cpu")


def test_plan_rows_and_projected_negative_known_values():
    run = NAGRun(NAGConfig().validate(), NEG).fresh()
    p = Projector()
    plan = run.plan_call([1, 0], None, 4, p, CPU, torch.float64)
    assert plan.guided == [slice(2, 4)] and plan.batch == 4 and plan.config is run.config
    assert torch.equal(plan.negative, 2 * NEG + 1)
    plan = run.plan_call([0, 1, 0], torch.tensor([0.5, 0.5, 0.5]), 6, p, CPU, torch.float64)
    assert plan.guided == [slice(0, 2), slice(4, 6)]
    assert p.calls == 1 and run.projections == 1 and run.guided_calls == 2   # cached for the run
    f32 = run.plan_call([0], None, 1, p, CPU, torch.float32)                   # another dtype: projected again
    assert f32.negative.dtype == torch.float32 and p.calls == 2 and len(run.cache) == 2


def test_unguided_calls_have_no_plan_and_project_nothing():
    p = Projector()
    run = NAGRun(NAGConfig(sigma_end=0.5).validate(), NEG).fresh()
    assert run.plan_call([], 0.9, 2, p, CPU, torch.float64) is None            # no cond_or_uncond
    assert run.plan_call(None, 0.9, 2, p, CPU, torch.float64) is None
    assert run.plan_call([1, 1], 0.9, 2, p, CPU, torch.float64) is None        # only negative chunks
    assert run.plan_call([0, 1], 0.49, 2, p, CPU, torch.float64) is None       # below sigma_end
    assert run.plan_call([0, 1], torch.tensor([0.4, 0.5]), 2, p, CPU, torch.float64) is not None  # max >= 0.5
    off = NAGRun(NAGConfig(scale=1.0).validate(), NEG).fresh()                 # scale 1: NAG off
    assert off.plan_call([0], None, 1, p, CPU, torch.float64) is None
    assert p.calls == 1 and run.guided_calls == 1


def test_template_never_caches_and_fresh_runs_start_empty():
    p = Projector()
    template = NAGRun(NAGConfig().validate(), NEG)
    template.plan_call([0], None, 1, p, CPU, torch.float64)
    template.plan_call([0], None, 1, p, CPU, torch.float64)
    assert p.calls == 2 and template.cache == {}
    run = template.fresh()
    assert run is not template and run.config is template.config and run.negative is template.negative
    assert (run.projections, run.guided_calls, run.cache) == (0, 0, {})
    run.plan_call([1, 0], None, 2, p, CPU, torch.float64)
    run.plan_call([1, 0], None, 2, p, CPU, torch.float64)
    assert run.finish() == "[Atelier] NAG: guided 2 model calls; negative projected 1 time(s)"
    assert run.cache == {}
    assert template.fresh().finish() is None                                   # nothing guided: no summary


def test_rows_for_subset_of_the_batch():
    plan = CallPlan(NAGConfig(), NEG, [slice(2, 4)], 4)                        # [uncond x2, cond x2]
    assert plan.rows_for(4) == [slice(2, 4)]
    assert plan.rows_for(2, [0, 3]) == [slice(1, 2)]
    assert plan.rows_for(2, [2, 3]) == [slice(0, 2)]
    assert plan.rows_for(3, [3, 1, 2]) == [slice(0, 1), slice(2, 3)]
    assert plan.rows_for(2, [0, 1]) == []
    with pytest.raises(RuntimeError, match="got 2 of the call's 4 rows"):
        plan.rows_for(2)
    with pytest.raises(RuntimeError, match="got 2 of the call's 4 rows"):
        plan.rows_for(2, [2])                                                  # the list does not fit
    everything = CallPlan(NAGConfig(), NEG, [slice(0, 3)], 3)                  # cfg 1: all rows guided
    assert everything.rows_for(1) == [slice(0, 1)] and everything.rows_for(2, [0, 2]) == [slice(0, 2)]


def test_config_from_inputs():
    assert config_from_inputs() == NAGConfig(scale=11.0, tau=2.5, alpha=0.25, sigma_end=0.0)
    c = config_from_inputs(9, 3.0, 0.5, 0.75)
    assert (c.scale, c.tau, c.alpha, c.sigma_end) == (9.0, 3.0, 0.5, 0.75) and isinstance(c.scale, float)
    for name, s in SETTINGS.items():
        assert getattr(config_from_inputs(**{name: s.min}), name) == s.min
        assert getattr(config_from_inputs(**{name: s.max}), name) == s.max
    for kw, message in ((dict(scale=0.5), r"scale (--scale): 0.5 is out of range; use a number in [1, 100]"),
                        (dict(tau=12.0), r"tau (--tau): 12.0 is out of range; use a number in [1, 10]"),
                        (dict(alpha=True), r"alpha (--alpha): True is not a number; use a number in [0, 1]"),
                        (dict(sigma_end=float("nan")), r"sigma_end (--sigma-end): nan is not finite"),
                        (dict(scale="3"), r"scale (--scale): '3' is not a number")):
        with pytest.raises(ValueError) as e:
            config_from_inputs(**kw)
        assert str(e.value).startswith(message) and e.value.param == next(iter(kw)), str(e.value)


class _Parts(torch.nn.Module):
    def __init__(self, parts, heads=2):
        super().__init__()
        for p in parts:
            self.add_module(p, torch.nn.Identity())
        self.num_heads = heads


T2V = type("WanT2VCrossAttention", (_Parts,), {})
I2V = type("WanI2VCrossAttention", (_Parts,), {})
Other = type("OtherAttention", (_Parts,), {})
TEXT = ("q", "k", "v", "o", "norm_q", "norm_k")


class _Wan(torch.nn.Module):
    def __init__(self, cross, width=12):
        super().__init__()
        self.blocks = torch.nn.ModuleList([torch.nn.Module() for _ in cross])
        for b, ca in zip(self.blocks, cross):
            b.cross_attn = ca
        self.text_embedding = torch.nn.Sequential(torch.nn.Linear(width, 8), torch.nn.GELU())


def _check(dm, patched=()):
    return check_wan_model(dm, lambda i: dm.blocks[i].cross_attn, patched)


def test_check_wan_model():
    assert _check(_Wan([T2V(TEXT), T2V(TEXT)], width=12)) == 12
    assert _check(_Wan([I2V(TEXT + ("k_img", "v_img", "norm_k_img"))], width=40)) == 40
    with pytest.raises(ValueError, match="input 'model' is a Linear, not a Wan model"):
        _check(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="input 'model' block 1 has cross-attention OtherAttention; allowed"):
        _check(_Wan([T2V(TEXT), Other(TEXT)]))
    with pytest.raises(ValueError, match=r"block 0 has cross-attention WanT2VCrossAttention missing \['norm_k'\]"):
        _check(_Wan([T2V(TEXT[:-1])]))
    with pytest.raises(ValueError, match="block 0: I2V cross-attention without"):
        _check(_Wan([I2V(TEXT)]))
    with pytest.raises(ValueError, match="already has Atelier NAG applied"):
        _check(_Wan([T2V(TEXT)]), patched=T2V)


def test_check_negative_context():
    ctx = torch.randn(1, 5, 16, requires_grad=True)
    out = check_negative_context(ctx, 16)
    assert torch.equal(out, ctx) and not out.requires_grad
    with pytest.raises(ValueError, match="input 'nag_negative' must be a CONDITIONING"):
        check_negative_context(None, 16)
    with pytest.raises(ValueError, match=r"shape \(5, 16\); expected \[batch, tokens, width\]"):
        check_negative_context(torch.zeros(5, 16), 16)
    with pytest.raises(ValueError, match="input 'nag_negative' is 768 wide but the model's text encoder width is 16"):
        check_negative_context(torch.zeros(1, 5, 768), 16)
    with pytest.raises(ValueError, match="has no tokens"):
        check_negative_context(torch.zeros(1, 0, 16), 16)
    bad = torch.zeros(1, 5, 16)
    bad[0, 2, 3] = float("-inf")
    with pytest.raises(ValueError, match="NaN or infinite"):
        check_negative_context(bad, 16)


def test_real_tokens_keeps_what_the_mask_marks_real():
    from nag.inputs import real_tokens
    ctx = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)
    assert real_tokens(ctx, None) is ctx
    out = real_tokens(ctx, torch.tensor([[1, 1, 0, 1, 0]]))
    assert torch.equal(out, ctx[:, [0, 1, 3]])
    assert torch.equal(real_tokens(ctx, torch.tensor([[1, 0, 0, 0, 0], [0, 0, 1, 0, 0]])), ctx[:, [0, 2]])
    assert torch.equal(real_tokens(ctx, torch.zeros(1, 5)), ctx[:, :1])     # never empty
    with pytest.raises(ValueError, match="nag_negative.*attention_mask"):
        real_tokens(ctx, torch.ones(1, 4))
