"""MagCacheRun (per-run state machine) and residual arithmetic on a toy block stack."""
import itertools
import random

import pytest
import torch

from magcache import MagCacheConfig, MagCacheRun, apply_blocks_with_cache, get_preset, plan_schedule

T13 = "wan2.1_t2v_1.3B"
CURVE = get_preset(T13).ratios


def drive(run, steps, order="cu", branches=(0, 1), first=0):
    """Decide each step's branches in ``order`` ('cu' cond first, 'uc' uncond first, 'rand')."""
    rng = random.Random(steps)
    skipped = ([], [])
    for step in range(first, first + steps):
        bs = list(branches)
        if order == "uc":
            bs.reverse()
        elif order == "rand":
            rng.shuffle(bs)
        for b in bs:
            if run.decide(b, step):
                skipped[b].append(step)
            else:
                run.store_residual(b, torch.zeros(1))
    return skipped


CONFIGS = [MagCacheConfig(thresh=t, k=k, retention=r) for t, k, r in
           itertools.product((0.02, 0.07, 0.12, 0.24), (1, 2, 6), (0.2, 0.25))]


@pytest.mark.parametrize("order", ["cu", "uc", "rand"])
@pytest.mark.parametrize("steps", [15, 20, 30, 50])
def test_run_equals_plan_in_any_branch_order(order, steps):
    for cfg in CONFIGS:
        sch = plan_schedule(CURVE, steps, cfg)
        run = MagCacheRun(CURVE, steps, cfg)
        skipped = drive(run, steps, order)
        assert skipped == (list(sch.cond_skipped), list(sch.uncond_skipped)), cfg
        rep = run.report()
        assert rep["computed_calls"] == sch.computed_calls and rep["total_calls"] == sch.total_calls
        assert rep["branches"]["cond"] == sch.marks(0) and rep["branches"]["uncond"] == sch.marks(1)


def test_divergent_setting_decided_per_branch_not_ored():
    # section 8.4: cond and uncond differ; an OR would skip more and break K
    cfg = MagCacheConfig(thresh=0.07, k=5, retention=0.2)
    sch = plan_schedule(CURVE, 50, cfg)
    assert sch.cond_skipped != sch.uncond_skipped
    run = MagCacheRun(CURVE, 50, cfg)
    assert drive(run, 50, "uc") == (list(sch.cond_skipped), list(sch.uncond_skipped))


def test_cfg1_only_cond_branch():
    cfg = MagCacheConfig(thresh=0.12, k=2, retention=0.2)
    sch = plan_schedule(CURVE, 30, cfg)
    run = MagCacheRun(CURVE, 30, cfg)
    skipped = drive(run, 30, branches=(0,))
    assert skipped[0] == list(sch.cond_skipped) and skipped[1] == []
    rep = run.report()
    assert list(rep["branches"]) == ["cond"]
    assert rep["total_calls"] == 30 and rep["computed_calls"] == 30 - len(sch.cond_skipped)


def test_extra_evaluations_compute_and_leave_accumulators():
    cfg = MagCacheConfig(thresh=0.12, k=2, retention=0.2)
    steps = 30
    sch = plan_schedule(CURVE, steps, cfg)
    run = MagCacheRun(CURVE, steps, cfg)
    skipped = ([], [])
    extra_results = []
    for step in range(steps):
        for b in (1, 0):
            if run.decide(b, step):
                skipped[b].append(step)
            else:
                run.store_residual(b, torch.zeros(1))
        for b in (1, 0):  # a second (and third) evaluation of the same step, as Heun/dpmpp_2s
            extra_results.append(run.decide(b, step))
            extra_results.append(run.decide(b, step, has_residual=True))
    assert not any(extra_results)                       # extra evaluations always compute
    assert skipped == (list(sch.cond_skipped), list(sch.uncond_skipped))  # and leave the plan intact
    rep = run.report()
    assert rep["extra_calls"] == 4 * steps
    assert rep["computed_calls"] == sch.computed_calls + 4 * steps
    assert len(run.log) == 2 * steps


def test_heun_like_call_pattern():
    """Heun in the host: step i evaluates at sigma_i then at sigma_{i+1}; a hook that maps the
    second call onto step i+1 decides step i+1 early; step i+1's own call is then an extra one."""
    cfg = MagCacheConfig(thresh=0.12, k=2, retention=0.2)
    steps = 20
    sch = plan_schedule(CURVE, steps, cfg)
    run = MagCacheRun(CURVE, steps, cfg)
    first_decisions = {}
    for i in range(steps):
        for s in ((i, i + 1) if i + 1 < steps else (i,)):
            for b in (1, 0):
                d = run.decide(b, s)
                first_decisions.setdefault((b, s), d)
                if not d:
                    run.store_residual(b, torch.zeros(1))
    got = [s for s in range(steps) if first_decisions[(0, s)]]
    assert got == list(sch.cond_skipped)


def test_guard_never_skips_without_residual():
    cfg = MagCacheConfig(thresh=0.3, k=6, retention=0.0)
    run = MagCacheRun(CURVE, 20, cfg)
    assert run.decide(0, 0) is False  # would skip by the rule, but nothing is cached
    assert run.decide(1, 0, has_residual=False) is False
    run.store_residual(0, torch.ones(2))
    assert run.decide(0, 1) is True
    # caller-kept residuals: has_residual=False forces compute and resets (next step skips again)
    assert run.decide(0, 2, has_residual=False) is False
    assert run.decide(0, 3, has_residual=True) is True


def test_two_runs_in_a_row_different_steps_no_leak():
    cfg = MagCacheConfig(thresh=0.12, k=2, retention=0.2)
    for steps in (30, 20, 50, 30):
        run = MagCacheRun(CURVE, steps, cfg)
        sch = plan_schedule(CURVE, steps, cfg)
        assert drive(run, steps) == (list(sch.cond_skipped), list(sch.uncond_skipped))
    # interrupted run, then reset(): identical to a fresh run
    run = MagCacheRun(CURVE, 30, cfg)
    drive(run, 13)
    rep = run.report()
    assert rep["branches"]["cond"][13:] == ["."] * 17
    run.reset()
    assert run.log == [] and not run.has_residual(0) and run.report()["total_calls"] == 0
    sch = plan_schedule(CURVE, 30, cfg)
    assert drive(run, 30) == (list(sch.cond_skipped), list(sch.uncond_skipped))


def test_segment_run_uses_global_steps():
    p = get_preset("wan2.2_t2v_A14B")
    cfg = p.config(steps=40)
    for rng_ in ((0, 25), (26, 39)):
        sch = plan_schedule(p.ratios, 40, cfg, step_range=rng_)
        run = MagCacheRun(p.ratios, 40, cfg, step_range=rng_)
        assert (run.first_step, run.last_step) == rng_
        n = rng_[1] - rng_[0] + 1
        assert drive(run, n, first=rng_[0]) == (list(sch.cond_skipped), list(sch.uncond_skipped))
        assert len(run.report()["branches"]["cond"]) == n
        with pytest.raises(ValueError, match="step"):
            run.decide(0, rng_[1] + 1)


def test_bad_decide_inputs():
    run = MagCacheRun(CURVE, 10, MagCacheConfig())
    with pytest.raises(ValueError, match="branch"):
        run.decide(2, 0)
    with pytest.raises(ValueError, match="step"):
        run.decide(0, 10)
    with pytest.raises(ValueError, match=r"^k \(--k\): "):
        MagCacheRun(CURVE, 10, MagCacheConfig(k=-2))


def test_cache_device_and_dtype():
    run = MagCacheRun(CURVE, 10, MagCacheConfig(), cache_device="cpu")
    r = torch.randn(2, 3, requires_grad=True)
    run.store_residual(0, r * 2)
    got = run.get_residual(0)
    assert got.device.type == "cpu" and not got.requires_grad
    like = torch.zeros(2, 3, dtype=torch.float16)
    assert run.get_residual(0, like=like).dtype == torch.float16
    assert run.get_residual(1) is None


# ---------------------------------------------------------------- toy block stack
class Toy(torch.nn.Module):
    def __init__(self, d=16, n=3):
        super().__init__()
        torch.manual_seed(0)
        self.blocks = torch.nn.ModuleList(torch.nn.Sequential(torch.nn.Linear(d, d), torch.nn.GELU())
                                          for _ in range(n))
        self.rows_seen = 0

    def run_blocks(self, x, rows):
        self.rows_seen += x.shape[0]
        for blk in self.blocks:
            x = x + blk(x)
        return x


def test_thresh_zero_bit_identical_to_plain_forward():
    toy = Toy()
    steps = 12
    run = MagCacheRun(CURVE, steps, MagCacheConfig(thresh=0.0))
    torch.manual_seed(1)
    for step in range(steps):
        x = torch.randn(4, 5, 16)                       # rows 0-1 uncond, 2-3 cond ([uncond, cond])
        out = apply_blocks_with_cache(x, toy.run_blocks, run, step, [(1, slice(0, 2)), (0, slice(2, 4))])
        with torch.no_grad():
            ref = toy.run_blocks(x, None)
        assert torch.equal(out, ref)
    assert run.report()["computed_calls"] == 2 * steps


def test_per_row_skip_uses_each_branch_residual():
    toy = Toy()
    steps = 30
    cfg = MagCacheConfig(thresh=0.01, k=1, retention=0.25)  # section 8.4: cond/uncond differ here
    curve = get_preset("wan2.1_t2v_14B").ratios
    sch = plan_schedule(curve, steps, cfg)
    assert sch.cond_skipped == (8, 10, 12, 14, 16) and sch.uncond_skipped == (7, 9, 11, 13, 15)
    run = MagCacheRun(curve, steps, cfg)
    torch.manual_seed(2)
    last_res = {}
    toy.rows_seen = 0
    with torch.no_grad():
        for step in range(steps):
            x = torch.randn(4, 5, 16)
            rows = {1: slice(0, 2), 0: slice(2, 4)}
            out = apply_blocks_with_cache(x, toy.run_blocks, run, step, [(1, rows[1]), (0, rows[0])])
            full = toy.run_blocks(x, None)
            for b in (0, 1):
                r = rows[b]
                if step in sch.skipped(b):
                    assert torch.equal(out[r], x[r] + last_res[b])          # exactly x + cached residual
                else:
                    assert torch.equal(out[r], full[r])
                    last_res[b] = out[r] - x[r]
    # only computing rows went through the stack (plus the reference forwards: 4 rows per step)
    assert toy.rows_seen - 4 * steps == 2 * sch.computed_calls


def test_apply_blocks_bad_rows():
    run = MagCacheRun(CURVE, 5, MagCacheConfig())
    with pytest.raises(ValueError, match="twice"):
        apply_blocks_with_cache(torch.zeros(2, 1, 4), lambda x, r: x, run, 0, [(0, slice(0, 1)), (0, slice(1, 2))])
    with pytest.raises(ValueError, match="cover"):
        apply_blocks_with_cache(torch.zeros(3, 1, 4), lambda x, r: x, run, 0, [(0, slice(0, 1)), (1, slice(1, 2))])


def test_run_block_chain_matches_the_plain_stack_row_by_row():
    """Three blocks through ``CallPlan.run_block``: every row gets what the plain stack gives (exact integer
    sums), computed rows through blocks that see only them (per-row inputs cut alike), skipped rows from
    their own residual; a middle block gets the inputs as they are when every row computes."""
    from magcache import MagCacheSession, resolve
    # section 8.4 settings: cond and uncond skip on alternate steps, and a second cond ("b") rides with cond
    s = MagCacheSession(resolve("wan2.1_t2v_14B", steps=30, thresh=0.01, k=1, retention=0.25)).fresh()
    sig = [1.0 - i / 30 for i in range(31)]
    s.start(sig)
    txt, vec, pe = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64), torch.ones(3, dtype=torch.float64), \
        torch.zeros(1)
    seen = []

    def block(j):
        def f(inp):
            seen.append((j, inp["img"].shape[0], inp))
            assert inp["pe"] is pe                                   # not one row per batch row: passed as is
            return {"img": inp["img"] + inp["txt"].view(-1, 1, 1) * (j + 1) + inp["vec"].view(-1, 1, 1)}
        return f

    kinds = set()
    for i in range(30):
        x = torch.randint(-8, 8, (3, 2, 4)).double()
        plan = s.plan_call(sig[i], [0, 0, 1], ["a", "b", "u"], 3)
        seen.clear()
        args = {"img": x, "txt": txt, "vec": vec, "pe": pe}
        for j in range(3):
            args = dict(args, **plan.run_block(args, block(j), j == 0, j == 2))
        assert torch.equal(args["img"], x + 6 * txt.view(-1, 1, 1) + 3)
        rows = {n for _, n, _ in seen}
        if plan.all_skip:
            kinds.add("skip")
            assert not seen
        elif plan.subset:
            kinds.add("subset")
            assert rows == {len(plan.compute_rows)} and rows != {3}
        else:
            kinds.add("compute")
            assert rows == {3} and seen[1][2]["txt"] is txt
    assert kinds == {"compute", "subset"}
