"""Atelier NAG on tiny random Wan2.1 models through the host's real KSampler path (the other families:
test_nag_families_host.py)."""
import contextlib

import pytest
import torch


@pytest.fixture(scope="module")
def i2v(host):
    return host.load_tiny_wan("i2v", seed=2)


def run_node(cls, **kw):
    """The first output of a node class, V3 (``execute``) or V1 (``FUNCTION``)."""
    if hasattr(cls, "define_schema"):
        return cls.execute(**kw)[0]
    return getattr(cls(), cls.FUNCTION)(**kw)[0]


def nag(nn_, model, negative, **kw):
    args = dict(scale=11.0, tau=2.5, alpha=0.25, sigma_end=0.0)
    args.update(kw)
    return run_node(nn_.AtelierNAGWan, model=model, nag_negative=negative, **args)


@contextlib.contextmanager
def count_text_embedding(model):
    """Count calls of the diffusion model's text_embedding (test-only forward hook, removed after)."""
    counter = {"calls": 0}
    te = model.get_model_object("diffusion_model").text_embedding
    h = te.register_forward_hook(lambda *a: counter.__setitem__("calls", counter["calls"] + 1))
    try:
        yield counter
    finally:
        h.remove()


def ks(host, *args, **kw):
    """The host's KSampler on a small latent (3 frames of 8x8) to keep the tier fast."""
    kw.setdefault("latent", host.empty_latent(3, 8, 8))
    return host.ksample(*args, **kw)


def maxdiff(a, b):
    return float((a - b).abs().max())


# Float32 agreement of two runs that take different but equivalent paths (another batch layout,
# the NAG module on an unguided row, another patch order): relative to the largest value, in
# float32 ulp. A single model call: 64 ulp; a whole sampling run feeds differences back through
# every step: 256 ulp. Measured on x86 CPUs (v0.8.0): at most 2.7 ulp per call, 0 per run.
# Differences that matter are >= 1e-2.
EPS32 = torch.finfo(torch.float32).eps
CALL_ULPS, RUN_ULPS = 64, 256


def close(a, b, ulps):
    err, scale = maxdiff(a, b), float(b.abs().max())
    assert err <= ulps * EPS32 * scale, f"max error {err:.3g} > {ulps} ulp x {scale:.3g}"


# ------------------------------------------------------------------ identity and effect

def test_negative_equal_positive_is_identical_cfg1(host, nn_, t2v):
    pos = host.text_cond(1)
    ref = ks(host, t2v, pos, host.text_cond(2), steps=8, cfg=1.0, seed=3)
    out = ks(host, nag(nn_, t2v, pos), pos, host.text_cond(2), steps=8, cfg=1.0, seed=3)
    assert torch.equal(ref, out)


def test_nag_changes_output_and_scale_one_is_off(host, nn_, t2v):
    pos, neg = host.text_cond(1), host.text_cond(5)
    ref = ks(host, t2v, pos, neg, steps=8, cfg=1.0, seed=3)
    out = ks(host, nag(nn_, t2v, neg), pos, neg, steps=8, cfg=1.0, seed=3)
    assert maxdiff(ref, out) > 1e-2
    off = ks(host, nag(nn_, t2v, neg, scale=1.0), pos, neg, steps=8, cfg=1.0, seed=3)
    assert torch.equal(ref, off)
    off = ks(host, nag(nn_, t2v, neg, alpha=0.0), pos, neg, steps=8, cfg=1.0, seed=3)
    assert torch.equal(ref, off)


@pytest.mark.parametrize("neg_len", [8, 20])  # 8: cond+uncond batched [1, 0]; 20: separate calls
def test_cfg_above_one(host, nn_, t2v, neg_len):
    pos, cfg_neg = host.text_cond(1), host.text_cond(2, length=neg_len)
    ref = ks(host, t2v, pos, cfg_neg, steps=8, cfg=5.0, seed=4)
    same = ks(host, nag(nn_, t2v, pos), pos, cfg_neg, steps=8, cfg=5.0, seed=4)
    close(same, ref, RUN_ULPS)
    guided = ks(host, nag(nn_, t2v, host.text_cond(7)), pos, cfg_neg, steps=8, cfg=5.0, seed=4)
    assert maxdiff(ref, guided) > 1e-2


def _direct_call(host, model, x, ctx, cond_or_uncond, sigma=0.7):
    """One apply_model call with a given row layout, through the patched model and its wrappers."""
    import comfy.model_management
    import comfy.patcher_extension
    comfy.model_management.load_models_gpu([model])
    to = comfy.patcher_extension.copy_nested_dicts(model.model_options.get("transformer_options", {}))
    to["wrappers"] = comfy.patcher_extension.copy_nested_dicts(model.wrappers)
    t = torch.full((x.shape[0],), sigma)
    to["cond_or_uncond"] = list(cond_or_uncond)
    to["sigmas"] = t
    with torch.no_grad():
        return model.model.apply_model(x, t, c_crossattn=ctx, transformer_options=to)


@pytest.mark.parametrize("rows_per_chunk", [1, 2])
def test_rows_found_from_cond_or_uncond_in_any_order(host, nn_, t2v, rows_per_chunk):
    g = torch.Generator().manual_seed(0)
    n = rows_per_chunk
    xc, xu = torch.randn(n, 16, 3, 8, 8, generator=g), torch.randn(n, 16, 3, 8, 8, generator=g)
    cc, cu = host.text_cond(1)[0][0].expand(n, -1, -1), host.text_cond(2)[0][0].expand(n, -1, -1)
    m = nag(nn_, t2v, host.text_cond(9))
    a = _direct_call(host, m, torch.cat([xu, xc]), torch.cat([cu, cc]), [1, 0])
    b = _direct_call(host, m, torch.cat([xc, xu]), torch.cat([cc, cu]), [0, 1])
    plain_u = _direct_call(host, t2v, xu, cu, [1])
    nag_c = _direct_call(host, m, xc, cc, [0])
    plain_c = _direct_call(host, t2v, xc, cc, [0])
    close(a[:n], plain_u, CALL_ULPS)   # uncond rows plain
    close(b[n:], plain_u, CALL_ULPS)
    close(a[n:], nag_c, CALL_ULPS)     # cond rows guided
    close(b[:n], nag_c, CALL_ULPS)
    assert maxdiff(nag_c, plain_c) > 1e-3


def test_long_contexts_not_truncated(host, nn_, t2v):
    """Prompts over 512 tokens: a 600-token negative equal to a 600-token positive is a no-op
    (no truncation or padding of either), and tokens past 512 of the negative matter."""
    pos = host.text_cond(1, length=600)
    ref = ks(host, t2v, pos, host.text_cond(2), steps=6, cfg=1.0, seed=5)
    same = ks(host, nag(nn_, t2v, pos), pos, host.text_cond(2), steps=6, cfg=1.0, seed=5)
    assert torch.equal(ref, same)
    neg = host.text_cond(3, length=700)
    tail = [[torch.cat([neg[0][0][:, :600], 5 * host.text_cond(4, length=100)[0][0]], 1), {}]]
    a = ks(host, nag(nn_, t2v, [[neg[0][0][:, :600], {}]]), pos, host.text_cond(2), steps=6, seed=5)
    b = ks(host, nag(nn_, t2v, tail), pos, host.text_cond(2), steps=6, seed=5)
    assert maxdiff(a, ref) > 1e-2 and maxdiff(a, b) > 1e-4


@pytest.mark.parametrize("cfg", [1.0, 5.0])
def test_i2v(host, nn_, i2v, cfg):
    extra = host.i2v_extra(h=8, w=8)
    pos, cneg = host.text_cond(1, extra=extra), host.text_cond(2, extra=extra)
    ref = ks(host, i2v, pos, cneg, steps=6, cfg=cfg, seed=6)
    same = ks(host, nag(nn_, i2v, [[pos[0][0], {}]]), pos, cneg, steps=6, cfg=cfg, seed=6)
    close(same, ref, RUN_ULPS)
    out = ks(host, nag(nn_, i2v, host.text_cond(8)), pos, cneg, steps=6, cfg=cfg, seed=6)
    assert torch.isfinite(out).all() and maxdiff(ref, out) > 1e-2


def test_sigma_end_turns_guidance_off_below(host, nn_, t2v):
    pos, neg = host.text_cond(1), host.text_cond(5)
    ref = ks(host, t2v, pos, neg, steps=8, seed=3)
    full = ks(host, nag(nn_, t2v, neg), pos, neg, steps=8, seed=3)
    never = ks(host, nag(nn_, t2v, neg, sigma_end=1.5), pos, neg, steps=8, seed=3)
    part = ks(host, nag(nn_, t2v, neg, sigma_end=0.9), pos, neg, steps=8, seed=3)
    assert torch.equal(ref, never)
    assert maxdiff(part, ref) > 1e-3 and maxdiff(part, full) > 1e-3


# ------------------------------------------------------------------ lifecycle

def test_negative_projected_once_per_run(host, nn_, t2v):
    pos = host.text_cond(1)
    m = nag(nn_, t2v, host.text_cond(5))
    with count_text_embedding(t2v) as plain:
        ks(host, t2v, pos, pos, steps=7, cfg=1.0)
    with count_text_embedding(t2v) as guided:
        ks(host, m, pos, pos, steps=7, cfg=1.0)
    assert plain["calls"] == 7 and guided["calls"] == 8
    with count_text_embedding(t2v) as guided2:   # a new run projects again (weights may change)
        ks(host, m, pos, pos, steps=7, cfg=1.0)
    assert guided2["calls"] == 8


def test_input_model_untouched_and_interrupt_leaves_nothing(host, nn_, interrupt, t2v):
    pos, neg = host.text_cond(1), host.text_cond(5)
    before = host.state_fingerprint(t2v)
    plain = ks(host, t2v, pos, neg, steps=8, cfg=5.0, seed=9)
    m = nag(nn_, t2v, neg)
    clean = ks(host, m, pos, neg, steps=8, cfg=5.0, seed=9)
    interrupt(m, 5, lambda broken: ks(host, broken, pos, neg, steps=8, cfg=5.0, seed=9))
    assert torch.equal(ks(host, t2v, pos, neg, steps=8, cfg=5.0, seed=9), plain)
    assert torch.equal(ks(host, m, pos, neg, steps=8, cfg=5.0, seed=9), clean)
    assert torch.equal(ks(host, t2v, pos, neg, steps=8, cfg=5.0, seed=9), plain)
    assert host.state_fingerprint(t2v) == before
    dm = t2v.get_model_object("diffusion_model")
    assert all(type(b.cross_attn).__name__.startswith("Wan") for b in dm.blocks)
    assert t2v.get_model_object("diffusion_model.blocks.0.cross_attn") is dm.blocks[0].cross_attn


# ------------------------------------------------------------------ with MagCache

def _magcache(pack, model, thresh):
    mc = pack.nodes.magcache_nodes
    return run_node(mc.AtelierMagCacheWan, model=model, preset="wan2.1_t2v_1.3B", thresh=thresh, k=2,
                    retention=0.2, start_step=-1, end_step=-1, protect_last=0, cache_device="auto", schedule_steps=0,
                    preview_steps=12)


@pytest.mark.slow
@pytest.mark.parametrize("cfg", [1.0, 5.0])
def test_with_magcache_both_orders(host, pack, nn_, t2v, cfg):
    pos, neg, cneg = host.text_cond(1), host.text_cond(5), host.text_cond(2)
    only_nag = ks(host, nag(nn_, t2v, neg), pos, cneg, steps=12, cfg=cfg, seed=2)
    only_mc = ks(host, _magcache(pack, t2v, 0.5), pos, cneg, steps=12, cfg=cfg, seed=2)
    # thresh 0: MagCache computes everything, so NAG + MagCache == NAG exactly, in both orders
    for m in (nag(nn_, _magcache(pack, t2v, 0.0), neg), _magcache(pack, nag(nn_, t2v, neg), 0.0)):
        assert torch.equal(ks(host, m, pos, cneg, steps=12, cfg=cfg, seed=2), only_nag)
    # skipping: both orders agree, and skipped calls reuse guided residuals
    a_model = nag(nn_, _magcache(pack, t2v, 0.5), neg)
    b_model = _magcache(pack, nag(nn_, t2v, neg), 0.5)
    a = ks(host, a_model, pos, cneg, steps=12, cfg=cfg, seed=2)
    b = ks(host, b_model, pos, cneg, steps=12, cfg=cfg, seed=2)
    close(a, b, RUN_ULPS)
    rep = b_model.model_options["transformer_options"]["atelier_magcache_run"].last_report
    assert rep["computed_calls"] < rep["total_calls"]
    assert maxdiff(a, only_nag) < maxdiff(a, only_mc)


@pytest.mark.slow
def test_with_magcache_running_only_the_cond_rows(host, pack, nn_, t2v, monkeypatch):
    """cfg 5, batched [uncond, cond]: a curve that makes uncond skip and cond compute, so
    MagCache runs the blocks on the cond row alone; NAG must still find and guide it."""
    import json
    hook = pack.nodes.nag_hook
    subset = []
    real = hook._subset_rows
    monkeypatch.setattr(hook, "_subset_rows", lambda *a: subset.append(real(*a)) or subset[-1])
    curve = json.dumps([0.5, 1.0] * 12)  # interleaved [cond, uncond] per step
    mc = pack.nodes.magcache_nodes.AtelierMagCacheWan

    def magcache(model):
        return run_node(mc, model=model, preset="wan2.1_t2v_1.3B", thresh=0.5, k=2, retention=0.2,
                        start_step=-1, end_step=-1, protect_last=0, cache_device="auto", schedule_steps=0,
                        preview_steps=12, custom_curve=curve)

    pos, neg, cneg = host.text_cond(1), host.text_cond(5), host.text_cond(2)
    a = ks(host, nag(nn_, magcache(t2v), neg), pos, cneg, steps=12, cfg=5.0, seed=2)
    b = ks(host, magcache(nag(nn_, t2v, neg)), pos, cneg, steps=12, cfg=5.0, seed=2)
    only_mc = ks(host, magcache(t2v), pos, cneg, steps=12, cfg=5.0, seed=2)
    close(a, b, RUN_ULPS)
    assert subset and all(s == [slice(0, 1)] for s in subset)  # the one row present is the cond row
    assert maxdiff(a, only_mc) > 1e-2


# ------------------------------------------------------------------ bad input

def test_bad_input_is_refused(host, nn_, t2v):
    pos = host.text_cond(1)
    with pytest.raises(ValueError, match="nag_negative.*768 wide.*4096"):
        nag(nn_, t2v, [[torch.randn(1, 8, 768), {}]])
    bad = pos[0][0].clone()
    bad[0, 3, 5] = float("nan")
    with pytest.raises(ValueError, match="nag_negative.*NaN"):
        nag(nn_, t2v, [[bad, {}]])
    bad[0, 3, 5] = float("inf")
    with pytest.raises(ValueError, match="nag_negative.*NaN or infinite"):
        nag(nn_, t2v, [[bad, {}]])
    with pytest.raises(ValueError, match=r"scale \(--scale\): 0.5 is out of range; use a number in \[1, 100\]"):
        nag(nn_, t2v, pos, scale=0.5)
    with pytest.raises(ValueError, match="tau"):
        nag(nn_, t2v, pos, tau=float("nan"))
    with pytest.raises(ValueError, match="alpha"):
        nag(nn_, t2v, pos, alpha=1.5)
    with pytest.raises(ValueError, match="already has Atelier NAG"):
        nag(nn_, nag(nn_, t2v, pos), pos)


def test_not_wan_is_refused(nn_):
    class Fake:
        def get_model_object(self, name):
            return torch.nn.Linear(2, 2)

    with pytest.raises(ValueError, match="input 'model' is Linear.*NAG cannot guide this family"):
        nag(nn_, Fake(), [[torch.zeros(1, 4, 4096), {}]])


def test_node_registered(pack):
    assert pack.nodes.NODE_DISPLAY_NAME_MAPPINGS["AtelierNAGWan"] == "Atelier NAG"
    cls = pack.nodes.NODE_CLASS_MAPPINGS["AtelierNAGWan"]
    from comfy_api.latest import io
    assert issubclass(cls, io.ComfyNode)
    info = cls.GET_NODE_INFO_V1()
    assert info["category"] == "Atelier/Guidance"
    # the ids, names and order saved UI workflows rely on
    assert info["input_order"] == {"required": ["model", "nag_negative", "scale", "tau", "alpha", "sigma_end"]}
    assert info["output"] == ["MODEL"] and info["output_name"] == ["model"]
    for name, spec in info["input"]["required"].items():
        assert spec[1].get("tooltip"), name
    assert all(info["output_tooltips"])


def test_validate_inputs(nn_):
    v = nn_.AtelierNAGWan.validate_inputs
    assert v(scale=11.0, tau=2.5, alpha=0.25, sigma_end=0.0) is True
    assert v(scale=None, tau=None, alpha=None, sigma_end=None) is True   # linked: checked when it runs
    assert v(scale=1.0, tau=1.0, alpha=0.0, sigma_end=100.0) is True     # the bounds are allowed
    for name, bad, words in (("scale", 200.0, "use a number in [1, 100]"), ("tau", 0.5, "use a number in [1, 10]"),
                             ("alpha", -0.1, "use a number in [0, 1]"), ("sigma_end", float("nan"), "not finite")):
        msg = v(**{name: bad})
        assert isinstance(msg, str) and msg.startswith(f"{name} (--") and words in msg, msg


def test_bad_setting_is_a_validation_error_in_the_host(nn_, monkeypatch):
    """The host's own prompt validation reports a bad widget value before anything runs."""
    import asyncio
    import execution
    import nodes as host_nodes
    monkeypatch.setitem(host_nodes.NODE_CLASS_MAPPINGS, "AtelierNAGWan", nn_.AtelierNAGWan)

    def errors(**settings):
        prompt = {"1": {"class_type": "AtelierNAGWan",
                        "inputs": {"model": ["2", 0], "nag_negative": ["3", 0], **settings}},
                  "2": {"class_type": "UNETLoader", "inputs": {"unet_name": "x.safetensors",
                                                                "weight_dtype": "default"}},
                  "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "red", "clip": ["2", 0]}}}
        validated = {}
        asyncio.run(execution.validate_inputs("p", prompt, "1", validated))
        return [e for e in validated["1"][1] if e["type"] == "custom_validation_failed"]

    good = dict(scale=11.0, tau=2.5, alpha=0.25, sigma_end=0.0)
    assert errors(**good) == []
    bad = errors(**dict(good, tau=12.0))
    # the host files the message once per input the check took
    assert bad and all("tau (--tau): 12.0 is out of range; use a number in [1, 10]" in e["details"] for e in bad), bad



# ------------------------------------------------------------------ it works, through the node

@pytest.mark.slow
def test_it_works_on_trained_tiny_wan_through_the_node(host, nn_, out_dir):
    """cfg 1, 4 steps, trained tiny Wan in the host: a NAG negative naming the colour that the
    unguided run draws removes it while the shape stays, and a negative naming an absent colour
    does not move the same measure. PNG rows: unguided, present-colour negative, absent colour.

    The case is held-out seed 30 of bench/bench_nag_effect.py (prompt "circle moving left", the
    colour left open; bench: green .47 of the foreground, drop .47 with "green", -.23 with
    "magenta", threshold .15 from the calibration seeds); the statistics over seeds are in
    tests/core/test_nag_tiny.py. (The earlier case, seed 0 "square moving right" at 20 steps,
    drew white and lost it to *any* colour negative: blue .72, red .72, magenta .64; it showed
    that NAG acts, not that it acts on what the negative names.)"""
    from tinywan import data, render
    from tinywan.weights import TRAINED_PATH
    assert TRAINED_PATH.is_file(), f"the trained tiny Wan ships with the pack: {TRAINED_PATH} is missing"
    model, meta = host.load_trained_wan()
    tr = meta.get("training") or {}
    assert not isinstance(tr, dict) or tr.get("iters_done", tr.get("iters")) == tr.get("iters"), \
        f"trained tiny Wan is an unfinished checkpoint ({tr.get('iters_done')}/{tr.get('iters')})"
    prompt, seed, steps, absent, t = "circle moving left", 30, 4, "magenta", 0.15
    pos = host.prompt_cond(prompt)
    lat = host.empty_latent(3, 16, 16)

    def run(m):
        out = host.ksample(m, pos, host.prompt_cond(""), steps=steps, cfg=1.0, seed=seed, latent=lat)
        return host.host_latent_to_rgb01(out)[0]

    rgb0 = run(model)
    shares0 = data.colour_shares(rgb0)
    colour = max(shares0, key=shares0.get)
    assert shares0[absent] < 0.02, shares0
    rgb1 = run(nag(nn_, model, host.prompt_cond(colour)))
    rgb2 = run(nag(nn_, model, host.prompt_cond(absent)))
    shares1, shares2 = data.colour_shares(rgb1), data.colour_shares(rgb2)
    frames = [(r.permute(1, 2, 3, 0).numpy() * 255 + 0.5).astype("uint8") for r in (rgb0, rgb1, rgb2)]
    render.save_png(render.grid([render.strip(f) for f in frames]), out_dir / "nag_it_works_host.png")
    m0, m1 = data.foreground_mask(rgb0), data.foreground_mask(rgb1)
    iou = float((m0 & m1).sum() / (m0 | m1).sum())
    drop, control = shares0[colour] - shares1[colour], shares0[colour] - shares2[colour]
    info = dict(colour=colour, share0=shares0[colour], drop=drop, absent_drop=control, iou=iou)
    assert drop > t, info                 # the named colour goes (bench: .47)
    assert control <= t, info             # an absent colour does not take it (bench: -.23)
    assert iou > 0.6, info                # the shape stays (bench: .81)
    # the node in the host reproduces the core run on the standalone tiny Wan (same sampler)
    from _nagutil import nag_block_stack
    from tinywan import load_trained, vae
    from tinywan.sample import sample
    tiny = load_trained()
    z = sample(tiny, data.encode_prompt(prompt), steps=steps, cfg=1.0, seed=seed,
               block_stack_fn=nag_block_stack(tiny, colour))
    core_shares = data.colour_shares(vae.to_unit(vae.decode(z))[0])
    assert abs(core_shares[colour] - shares1[colour]) < 0.02, (core_shares[colour], info)


def test_module_tree_and_weight_patches_reach_the_patched_modules(host, nn_, t2v):
    """The stand-in cross-attention keeps the state-dict keys, and a weight patch (as a LoRA
    makes) on the NAG clone reaches the same modules: LoRA->NAG equals NAG->LoRA."""
    import comfy.model_management
    keys = sorted(t2v.get_model_object("diffusion_model").state_dict().keys())
    pos, neg = host.text_cond(1), host.text_cond(5)
    m = nag(nn_, t2v, neg)
    comfy.model_management.load_models_gpu([m])
    assert sorted(m.get_model_object("diffusion_model").state_dict().keys()) == keys
    w = t2v.get_model_object("diffusion_model").blocks[0].cross_attn.q.weight
    delta = {"diffusion_model.blocks.0.cross_attn.q.weight":
             (0.5 * torch.randn(w.shape, generator=torch.Generator().manual_seed(0)),)}
    lora_then_nag = t2v.clone()
    lora_then_nag.add_patches(delta, 1.0)
    lora_then_nag = nag(nn_, lora_then_nag, neg)
    nag_then_lora = nag(nn_, t2v, neg).clone()
    nag_then_lora.add_patches(delta, 1.0)
    a = ks(host, lora_then_nag, pos, neg, steps=4, seed=1)
    b = ks(host, nag_then_lora, pos, neg, steps=4, seed=1)
    c = ks(host, m, pos, neg, steps=4, seed=1)
    assert torch.equal(a, b) and maxdiff(a, c) > 1e-3
