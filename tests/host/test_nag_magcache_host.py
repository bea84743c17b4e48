"""Atelier NAG composed with Atelier MagCache on the tiny model of every non-Wan family both serve (joint
attention: Flux, Kontext, Flux2, Chroma, Qwen-Image, HunyuanVideo 1.0/1.5, HiDream, Z-Image (v0.8.0; the same
NextDiT hook as Lumina2); cross-attention: LTXV; Wan: in
test_nag_families_host.py) (tests/_families.py), in both orders of applying the two nodes, through the host's KSampler on the tree under test.

What composition must give, checked against references the test computes without the composition:

* MagCache set to never skip (thresh 0): MagCache + NAG equals NAG alone bit for bit (every call computes, so the
  blocks see exactly what NAG alone gives them; the cond rows are guided, the uncond rows are not).
* NAG as the identity (NAG negative equal to the positive): MagCache + NAG equals MagCache alone with the same
  skip schedule (within the float rounding of the joint log-sum-exp merge); so on skipped steps the cached
  residual is the one the guided blocks left, and nothing else moves.
* Skipping with a real negative: both orders give the same output, MagCache did skip, and the output differs from
  MagCache alone (the reused residuals are the guided ones) and from NAG alone (steps were skipped).
* Afterwards (and after an error mid-run) nothing is left patched on the input model.
"""
import pytest
import torch

import _families as _F

# tiny family -> MagCache's family (its shipped curve is picked by "auto"); None: a calibrate-only family run
# with a custom curve
FAMILIES = {"flux": "flux", "flux_kontext": "flux", "chroma": "chroma", "qwen_image": "qwen_image",
            "hunyuan_video": "hunyuan_video", "hunyuan_video15": "hunyuan_video1.5", "flux2": None, "ltxv": None,
            "z_image": None, "hidream": None}
TWO_BRANCH = ("qwen_image", "chroma", "hunyuan_video15", "flux2", "ltxv", "z_image", "hidream")
STEPS = 8
CURVE = "[" + ", ".join(["1.0, 1.0"] + ["0.99, 0.99"] * (STEPS - 1)) + "]"
TOL = 1e-4    # relative: the joint LSE merge against the host's one attention


def nag(pack, model, negative, **kw):
    args = dict(scale=11.0, tau=2.5, alpha=0.25, sigma_end=0.0)
    args.update(kw)
    return pack.nodes.nag_nodes.AtelierNAGWan.execute(model=model, nag_negative=negative, **args)[0]


def magcache(pack, name, model, thresh):
    args = dict(preset="auto", thresh=thresh, k=3, retention=0.2, start_step=-1, end_step=-1, protect_last=0,
                cache_device="auto", schedule_steps=0, preview_steps=STEPS)
    if FAMILIES[name] is None:
        args["custom_curve"] = CURVE
    return tuple(pack.nodes.magcache_nodes.AtelierMagCacheWan.execute(model, **args).result)[0]


def both_orders(pack, name, m, negative, thresh):
    """``[(MagCache over NAG, its MagCache model), (NAG over MagCache, its MagCache model)]``: the run's report
    reaches the MagCache node's own model (a later clone deep-copies the session)."""
    first = magcache(pack, name, nag(pack, m, negative), thresh)
    cache = magcache(pack, name, m, thresh)
    return [(first, first), (nag(pack, cache, negative), cache)]


def cfg_of(name):
    return 3.0 if name in TWO_BRANCH else 1.0


def run(fam, name, m, cfg):
    return fam.sample(m, name, steps=STEPS, cfg=cfg, seed=1, positive=fam.conditioning(name, seed=1),
                      negative=fam.conditioning(name, seed=2))


def report(m):
    return m.model_options["transformer_options"]["atelier_magcache_run"].last_report


def _close(a, b):
    err = float((a - b).abs().max())
    assert err <= TOL * max(1.0, float(b.abs().max())), err


def _state(model):
    to = model.model_options.get("transformer_options", {})
    dm = model.get_model_object("diffusion_model")
    return (sorted(to), sorted(model.object_patches), {k: type(v).__name__ for k, v in dm.named_children()},
            sorted(model.wrappers), sorted(to.get("patches_replace", {})))


def _clean_tree(model):
    dm = model.get_model_object("diffusion_model")
    left = [type(mod).__name__ for mod in dm.modules()
            if type(mod).__name__.startswith(("NAG", "StackLayer"))]
    assert not left, left


@pytest.mark.parametrize("name", list(FAMILIES))
def test_never_skipping_equals_nag_alone(fam, pack, name):
    m = fam.model(name)
    neg = fam.conditioning(name, seed=5, tokens=5)
    cfg = cfg_of(name)
    before = _state(m)
    only_nag = run(fam, name, nag(pack, m, neg), cfg)
    assert float((only_nag - run(fam, name, m, cfg)).abs().max()) > 1e-3       # NAG guides
    for composed, cache in both_orders(pack, name, m, neg, 0.0):
        assert torch.equal(run(fam, name, composed, cfg), only_nag)
        rep = report(cache)
        assert rep["computed_calls"] == rep["total_calls"], rep
    run(fam, name, m, cfg)            # loading m unpatches the composed clones
    assert _state(m) == before
    _clean_tree(m)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_skipping_reuses_the_guided_residual(fam, pack, name):
    m = fam.model(name)
    pos = fam.conditioning(name, seed=1)
    neg = fam.conditioning(name, seed=5, tokens=5)
    cfg = cfg_of(name)
    only_cache = magcache(pack, name, m, 0.5)
    cached = run(fam, name, only_cache, cfg)
    rep = report(only_cache)
    assert rep["computed_calls"] < rep["total_calls"], rep                     # MagCache skips
    # NAG as the identity: the same skips, the same residuals
    for composed, cache in both_orders(pack, name, m, pos, 0.5):
        _close(run(fam, name, composed, cfg), cached)
        assert report(cache)["branches"] == rep["branches"]
    a, b = (run(fam, name, composed, cfg) for composed, _ in both_orders(pack, name, m, neg, 0.5))
    _close(a, b)
    assert float((a - cached).abs().max()) > 1e-3
    assert float((a - run(fam, name, nag(pack, m, neg), cfg)).abs().max()) > 0


@pytest.mark.parametrize("name", ["flux", "qwen_image", "hunyuan_video", "z_image", "hidream"])
def test_error_mid_run_leaves_nothing(fam, pack, interrupt, name):
    m = fam.model(name)
    cfg = cfg_of(name)
    plain = run(fam, name, m, cfg)
    before = _state(m)
    neg = fam.conditioning(name, seed=5, tokens=5)
    for composed, _ in both_orders(pack, name, m, neg, 0.5):
        clean = run(fam, name, composed, cfg)
        interrupt(composed, 4, lambda broken: run(fam, name, broken, cfg), wrapper="DIFFUSION_MODEL")
        assert torch.equal(run(fam, name, composed, cfg), clean)
        assert "optimized_attention_override" not in composed.model_options["transformer_options"]
    assert torch.equal(run(fam, name, m, cfg), plain)
    assert _state(m) == before
    _clean_tree(m)


# the host modules whose output enters the block stack and whose input leaves it (image tokens, all rows)
STACK_ENDS = {"flux": ("img_in", "final_layer"), "qwen_image": ("img_in", "norm_out"),
              "hidream": ("x_embedder", "final_layer")}


def _stack_ends(fam, name, m, model):
    """(inputs, outputs) of the block stack per call, read by forward hooks on the host modules around it
    (test-only instrumentation, not the nodes' patches)."""
    first, last = STACK_ENDS[name]
    dm = m.get_model_object("diffusion_model")
    seen = {"in": [], "out": []}
    hooks = [getattr(dm, first).register_forward_hook(lambda mod, a, out: seen["in"].append(out.detach().clone())),
             getattr(dm, last).register_forward_pre_hook(lambda mod, a: seen["out"].append(a[0].detach().clone()))]
    try:
        run(fam, name, model, 1.0)
    finally:
        for h in hooks:
            h.remove()
    return seen["in"], seen["out"]


@pytest.mark.parametrize("name", list(STACK_ENDS))
def test_skipped_steps_add_the_last_guided_residual(fam, pack, name):
    """The independent composition: every skipped step's stack output is its own stack input plus the residual
    (output - input) of the last computed step, and that residual is NAG's: equal to the residual NAG alone
    leaves at that step (the run is the same up to the first skip), unlike the unguided model's."""
    m = fam.model(name)
    neg = fam.conditioning(name, seed=5, tokens=5)
    nag_in, nag_out = _stack_ends(fam, name, m, nag(pack, m, neg))
    plain_in, plain_out = _stack_ends(fam, name, m, m)
    for composed, cache in both_orders(pack, name, m, neg, 0.5):
        xs, ys = _stack_ends(fam, name, m, composed)
        marks = report(cache)["branches"]["cond"]
        first_skip = marks.index("S")
        assert first_skip > 0 and len(xs) == len(ys) == len(marks) == STEPS
        c = first_skip - 1       # the residual the first skips reuse
        assert torch.equal(ys[c] - xs[c], nag_out[c] - nag_in[c])
        assert float((nag_out[c] - nag_in[c] - (plain_out[c] - plain_in[c])).abs().max()) > 1e-3
        residual = None
        for mark, x, y in zip(marks, xs, ys):
            if mark == "C":
                residual = y - x
            else:
                torch.testing.assert_close(y, x + residual, rtol=1e-5, atol=1e-5)
