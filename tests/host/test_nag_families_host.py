"""Atelier NAG on the tiny model of every family (tests/_families.py, built by the host's own classes),
through the host's KSampler, on the tree under test.

Per served family: guidance changes the output at cfg 1 and cfg > 1; the identities (NAG negative equal
to the positive; scale 1; alpha 0) give the unguided output (bit for bit for cross-attention families and
the off switches; within float rounding of the log-sum-exp merge for joint-attention families); only the
positive rows are guided at cfg > 1 (the uncond prediction is the unguided one); prompts and negatives of
other lengths; an error mid-run leaves the model as it was. Families NAG cannot guide are refused by name
(Lumina2 on trees before v0.8.0, whose NextDiT rebuilds the sequence per row: checked in place of its tests).
Lumina2 / Z-Image: the negative caption stream against a plain run with the negative as the prompt; HiDream:
the negative's text (T5 and Llama states) after the first double block against the same, and Llama states of
another encoder refused. A stand-in diffusion model of no known architecture is refused by name.
"""
import pytest
import torch

import _families as _F

CROSS = ["wan21_t2v", "wan21_i2v", "wan21_vace", "wan22_ti2v_5b", "wan22_a14b_high", "wan22_a14b_low",
         "sd15", "sdxl", "ltxv"]
NEXTDIT = ["lumina2", "z_image"]     # served on v0.8.0 (z_image: only there); lumina2 refused on older trees
JOINT = ["flux", "flux_kontext", "flux2", "chroma", "chroma_radiance", "qwen_image", "hunyuan_video",
         "hunyuan_video15", "sd35", "hidream"] + NEXTDIT
JOINT_TOL = 1e-4    # relative: the LSE merge of partial attentions vs the host's one attention


def nag(nn_, model, negative, **kw):
    args = dict(scale=11.0, tau=2.5, alpha=0.25, sigma_end=0.0)
    args.update(kw)
    return nn_.AtelierNAGWan.execute(model=model, nag_negative=negative, **args)[0]


def _same(name, a, b):
    if name in CROSS:
        assert torch.equal(a, b), float((a - b).abs().max())
    else:
        err = float((a - b).abs().max())
        assert err <= JOINT_TOL * max(1.0, float(b.abs().max())), err


def _model(fam, nn_, name):
    """The family's tiny model; None after checking the named refusal where this tree's NextDiT is the one
    before v0.8.0 (per-row caption lengths), which NAG refuses."""
    m = fam.model(name)
    if name in NEXTDIT and not hasattr(m.get_model_object("diffusion_model"), "pad_tokens_multiple"):
        with pytest.raises(ValueError, match=r"Atelier NAG: input 'model' is Lumina2 .*cannot guide.*v0\.8\.0"):
            nag(nn_, m, fam.conditioning(name, seed=5))
        return None
    return m


def _sample(fam, model, name, cfg=1.0, positive=None, negative=None, steps=2, **kw):
    return fam.sample(model, name, steps=steps, cfg=cfg, seed=1,
                      positive=positive if positive is not None else fam.conditioning(name, seed=1),
                      negative=negative, **kw)


@pytest.mark.parametrize("name", CROSS + JOINT)
def test_guides_and_identities(fam, nn_, name):
    m = _model(fam, nn_, name)
    if m is None:
        return
    pos = fam.conditioning(name, seed=1)
    plain = _sample(fam, m, name)
    guided = _sample(fam, nag(nn_, m, fam.conditioning(name, seed=5, tokens=5)), name)
    assert torch.isfinite(guided).all()
    assert float((guided - plain).abs().max()) > 1e-3
    _same(name, _sample(fam, nag(nn_, m, pos), name), plain)          # negative == positive


@pytest.mark.parametrize("name", ["wan21_vace", "sd15", "flux", "hunyuan_video", "z_image", "hidream"])
def test_scale_one_or_alpha_zero_is_off(fam, nn_, name):
    m = fam.model(name)
    plain = _sample(fam, m, name)
    assert torch.equal(_sample(fam, nag(nn_, m, fam.conditioning(name, seed=5), scale=1.0), name), plain)
    assert torch.equal(_sample(fam, nag(nn_, m, fam.conditioning(name, seed=5), alpha=0.0), name), plain)


def _predictions(fam, model, name, cfg):
    """cond and uncond predictions of the first step (the host's post-CFG hook sees both)."""
    seen = {}

    def post_cfg(args):
        seen.setdefault("cond", args["cond_denoised"].clone())
        seen.setdefault("uncond", args["uncond_denoised"].clone())
        return args["denoised"]

    m = model.clone()
    m.set_model_sampler_post_cfg_function(post_cfg)
    _sample(fam, m, name, cfg=cfg, steps=1, negative=fam.conditioning(name, seed=2))
    return seen["cond"], seen["uncond"]


@pytest.mark.parametrize("name", ["wan21_vace", "sd15", "flux", "qwen_image", "hunyuan_video", "sd35", "ltxv",
                                  "hidream"] + NEXTDIT)
def test_only_positive_rows_are_guided_at_cfg_above_one(fam, nn_, name):
    m = _model(fam, nn_, name)
    if m is None:
        return
    cond, uncond = _predictions(fam, m, name, 3.0)
    g_cond, g_uncond = _predictions(fam, nag(nn_, m, fam.conditioning(name, seed=5, tokens=5)), name, 3.0)
    _same(name, g_uncond, uncond)
    assert float((g_cond - cond).abs().max()) > 1e-3


@pytest.mark.parametrize("name", ["wan21_vace", "flux", "flux2", "chroma", "qwen_image", "hunyuan_video",
                                  "sd35", "ltxv", "hidream"] + NEXTDIT)
def test_token_lengths(fam, nn_, name):
    """Negatives shorter and longer than the positive, positives of another length; at cfg > 1 with a CFG
    negative of yet another length (the host then runs cond and uncond in separate calls). Z-Image: 8 -> 32,
    40 -> 64 padded caption tokens."""
    m = _model(fam, nn_, name)
    if m is None:
        return
    for p_len, n_len in ((8, 3), (8, 40), (20, 8)):
        pos = fam.conditioning(name, seed=1, tokens=p_len)
        ref = _sample(fam, m, name, positive=pos)
        out = _sample(fam, nag(nn_, m, fam.conditioning(name, seed=5, tokens=n_len)), name, positive=pos)
        assert torch.isfinite(out).all() and float((out - ref).abs().max()) > 1e-3, (p_len, n_len)
    pos = fam.conditioning(name, seed=1, tokens=8)
    same = _sample(fam, nag(nn_, m, pos), name, cfg=3.0, positive=pos,
                   negative=fam.conditioning(name, seed=2, tokens=13))
    _same(name, same, _sample(fam, m, name, cfg=3.0, positive=pos, negative=fam.conditioning(name, seed=2, tokens=13)))


@pytest.mark.parametrize("name", ["hunyuan_video", "qwen_image", "ltxv", "lumina2"])
def test_text_padding_masks(fam, nn_, name):
    """Encoders that report a padding mask (Llama, Qwen2.5-VL, LTXV's T5, Lumina2's Gemma): the negative keeps
    its own mask (LTXV: only its real tokens; Lumina2: in its caption refiner), so a negative equal to the
    (padded) positive is still the identity. (Z-Image: the host itself fails on a padded caption mask.)"""
    m = _model(fam, nn_, name)
    if m is None:
        return
    mask = torch.ones(1, 8, dtype=torch.long)
    mask[:, 6:] = 0
    pos = fam.conditioning(name, seed=1, attention_mask=mask)
    plain = _sample(fam, m, name, positive=pos)
    same = _sample(fam, nag(nn_, m, pos), name, positive=pos)
    if name == "ltxv":    # Z- over the 6 real tokens, Z+ over 8 with 2 masked: equal up to summation order
        torch.testing.assert_close(same, plain, rtol=1e-5, atol=1e-5)
        padded = fam.conditioning(name, seed=5, tokens=8, attention_mask=mask)
        padded[0][0][:, 6:] = 100.0          # what the mask hides cannot move the result
        trimmed = [[padded[0][0][:, :6].clone(), dict(padded[0][1], attention_mask=torch.ones(1, 6))]]
        assert torch.equal(_sample(fam, nag(nn_, m, padded), name, positive=pos),
                           _sample(fam, nag(nn_, m, trimmed), name, positive=pos))
    else:
        _same(name, same, plain)
    neg = fam.conditioning(name, seed=5, tokens=5, attention_mask=torch.ones(1, 5, dtype=torch.long))
    assert float((_sample(fam, nag(nn_, m, neg), name, positive=pos) - plain).abs().max()) > 1e-3


def _captions_after_first_layer(fam, model, name, positive):
    """The caption part of the joint sequence after the first main layer of the first model call, read by the
    host's own ``double_block`` patch point (read-only)."""
    seen = []

    def patch(args):
        if args["block_index"] == 0 and not seen:
            seen.append(args["txt"].detach().clone())
        return {}

    m = model.clone()
    m.set_model_patch(patch, "double_block")
    _sample(fam, m, name, positive=positive, steps=1, latent_image=_F.latent(name, size=2))
    return seen[0]


@pytest.mark.parametrize("name", NEXTDIT)
def test_nextdit_negative_caption_is_its_own_stream(fam, nn_, name):
    """Lumina2 / Z-Image: after the first joint layer the NAG negative's caption tokens are those of a plain run
    with the negative as the prompt (same latent and step: its own pads, refiner, RoPE positions relative to the
    image, attention over [negative, image]), and the positive's those of the plain run, for a negative shorter
    and longer than the positive (within the rounding of RoPE on shifted positions). A 16 x 16 latent: 64 image
    tokens, so Z-Image adds no image pad tokens (those sit at position 0 for both captions, README)."""
    m = _model(fam, nn_, name)
    if m is None:
        return
    for p_len, n_len in ((8, 3), (8, 40)):
        pos = fam.conditioning(name, seed=1, tokens=p_len)
        neg = fam.conditioning(name, seed=5, tokens=n_len)
        guided = _captions_after_first_layer(fam, nag(nn_, m, neg), name, pos)
        alone_pos = _captions_after_first_layer(fam, m, name, pos)
        alone_neg = _captions_after_first_layer(fam, m, name, neg)
        p = alone_pos.shape[1]
        assert guided.shape[1] == p + alone_neg.shape[1] and alone_neg.shape[1] >= n_len
        torch.testing.assert_close(guided[:, :p], alone_pos, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(guided[:, p:], alone_neg, rtol=1e-4, atol=1e-4)
        k = min(p, alone_neg.shape[1])
        assert float((alone_neg[:, :k] - alone_pos[:, :k]).abs().max()) > 1e-2      # the two streams differ


def _text_after_first_block(fam, model, name, positive):
    """HiDream: the text tokens leaving the first double-stream block in the first model call (``[T5, Llama last
    layer, Llama layer 0]``), read by a forward hook on the host block (removed after the run)."""
    seen = []
    block = model.get_model_object("diffusion_model").double_stream_blocks[0].block
    handle = block.register_forward_hook(lambda mod, args, out: seen.append(out[1].detach().clone()) if not seen
                                         else None)
    try:
        _sample(fam, model, name, positive=positive, steps=1)
    finally:
        handle.remove()
    return seen[0]


@pytest.mark.parametrize("p_len,n_len", [(8, 3), (5, 12)])
def test_hidream_negative_text_is_its_own_stream(fam, nn_, p_len, n_len):
    """HiDream: after the first double-stream block, the NAG negative's tokens (its T5 text, last-layer and
    layer-0 Llama states, each appended to the positive's) are those of a plain run with the negative as the
    prompt (same pooled output: the blocks' modulation is the positive's), and the positive's those of the plain
    run: each text attends only itself and the image."""
    name = "hidream"
    m = fam.model(name)
    pos = fam.conditioning(name, seed=1, tokens=p_len)
    raw = fam.conditioning(name, seed=5, tokens=n_len)
    neg = [[raw[0][0], dict(raw[0][1], pooled_output=pos[0][1]["pooled_output"])]]
    guided = _text_after_first_block(fam, nag(nn_, m, neg), name, pos)
    alone_pos = _text_after_first_block(fam, m, name, pos)
    alone_neg = _text_after_first_block(fam, m, name, neg)
    p, n = p_len, n_len          # T5 tokens = Llama tokens in the tiny conditioning
    assert guided.shape[1] == 3 * (p + n)
    positive = torch.cat([guided[:, :p], guided[:, p + n:2 * p + n], guided[:, 2 * p + 2 * n:3 * p + 2 * n]], 1)
    negative = torch.cat([guided[:, p:p + n], guided[:, 2 * p + n:2 * p + 2 * n], guided[:, 3 * p + 2 * n:]], 1)
    torch.testing.assert_close(positive, alone_pos, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(negative, alone_neg, rtol=1e-4, atol=1e-4)


def _state(model):
    to = model.model_options.get("transformer_options", {})
    dm = model.get_model_object("diffusion_model")
    return (sorted(to), sorted(model.object_patches), {k: type(v).__name__ for k, v in dm.named_children()},
            sorted(model.wrappers))


@pytest.mark.parametrize("name", ["wan21_vace", "flux2", "qwen_image", "hunyuan_video", "z_image", "hidream"])
def test_error_mid_run_leaves_nothing(fam, nn_, interrupt, name):
    m = fam.model(name)
    plain = _sample(fam, m, name, cfg=2.0, steps=3)
    before = _state(m)        # after loading m: the module tree holds what m patches (another clone may have run)
    g = nag(nn_, m, fam.conditioning(name, seed=5, tokens=5))
    clean = _sample(fam, g, name, cfg=2.0, steps=3)
    interrupt(g, 2, lambda broken: _sample(fam, broken, name, cfg=2.0, steps=3), wrapper="DIFFUSION_MODEL")
    assert torch.equal(_sample(fam, g, name, cfg=2.0, steps=3), clean)
    assert torch.equal(_sample(fam, m, name, cfg=2.0, steps=3), plain)   # loads m: the host unpatches g
    assert _state(m) == before
    assert "optimized_attention_override" not in g.model_options["transformer_options"]
    dm = m.get_model_object("diffusion_model")
    assert not any(type(mod).__name__.startswith("NAG") for mod in dm.modules())


def test_unserved_family_is_refused_by_name(fam, nn_):
    """A diffusion model NAG has no hook for (here a stand-in object patch on the tiny HiDream) is refused with
    the family's name; a HiDream NAG negative without its Llama states is refused too."""
    m = fam.model("hidream")
    other = m.clone()
    other.add_object_patch("diffusion_model", torch.nn.Identity())
    with pytest.raises(ValueError, match=r"Atelier NAG: input 'model' is HiDream \(Identity\).*cannot guide"):
        nag(nn_, other, fam.conditioning("hidream", seed=5))
    cond = fam.conditioning("hidream", seed=5)
    bare = [[cond[0][0], {k: v for k, v in cond[0][1].items() if k != "conditioning_llama3"}]]
    with pytest.raises(ValueError, match=r"Atelier NAG: input 'nag_negative' has no Llama states"):
        nag(nn_, m, bare)


def test_hidream_llama_states_of_another_encoder_are_refused(fam, nn_):
    """A HiDream NAG negative whose Llama states have another layer count or width than the prompt's: one clear
    error at the first model call, and the model is left as it was."""
    name = "hidream"
    m = fam.model(name)
    plain = _sample(fam, m, name)
    cond = fam.conditioning(name, seed=5, tokens=5)
    llama = cond[0][1]["conditioning_llama3"]
    for bad in (llama[:, :-1], torch.cat([llama, llama], dim=-1)):
        with pytest.raises(ValueError, match=r"Llama states .* do not match the prompt's"):
            _sample(fam, nag(nn_, m, [[cond[0][0], dict(cond[0][1], conditioning_llama3=bad)]]), name)
    assert torch.equal(_sample(fam, m, name), plain)


@pytest.mark.parametrize("name", ["sd15", "flux", "hunyuan_video", "hidream"])
def test_negative_of_another_width_is_refused(fam, nn_, name):
    m = fam.model(name)
    width = fam.FAMILIES[name].text_dim
    with pytest.raises(ValueError, match=rf"nag_negative.*{width + 8} wide.*{width}"):
        nag(nn_, m, [[torch.randn(1, 4, width + 8), {}]])
    with pytest.raises(ValueError, match="already has Atelier NAG"):
        nag(nn_, nag(nn_, m, fam.conditioning(name, seed=5)), fam.conditioning(name, seed=5))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["flux", "wan21_t2v", "z_image", "hidream"])
def test_with_torch_compile_both_orders(fam, nn_, name):
    """The host's torch.compile wrapper (what TorchCompileModel sets; backend aot_eager: dynamo's tracing
    and graph breaks without code generation, ~40 s per family on the CPU) before or after NAG."""
    from comfy_api.torch_helpers import set_torch_compile_wrapper
    m = fam.model(name)
    neg = fam.conditioning(name, seed=5, tokens=5)
    ref = _sample(fam, nag(nn_, m, neg), name, cfg=2.0)
    a = nag(nn_, m, neg).clone()
    set_torch_compile_wrapper(a, backend="aot_eager")
    b = m.clone()
    set_torch_compile_wrapper(b, backend="aot_eager")
    for model in (a, nag(nn_, b, neg)):
        _same(name, _sample(fam, model, name, cfg=2.0), ref)


@pytest.mark.parametrize("cfg", [1.0, 3.0])
def test_vace_with_magcache_both_orders(fam, nn_, pack, cfg):
    """VACE (main and vace_blocks cross-attention guided) with Atelier MagCache: at thresh 0 MagCache computes
    every call, so NAG + MagCache equals NAG bit for bit in both orders; skipping, both orders agree."""
    m = fam.model("wan21_vace")
    mc = pack.nodes.magcache_nodes.AtelierMagCacheWan

    def magcache(model, thresh):
        return mc.execute(model=model, preset="wan2.1_vace_1.3B", thresh=thresh, k=2, retention=0.2, start_step=-1,
                          end_step=-1, protect_last=0, cache_device="auto", schedule_steps=0, preview_steps=8)[0]

    neg = fam.conditioning("wan21_vace", seed=5, tokens=5)
    only_nag = _sample(fam, nag(nn_, m, neg), "wan21_vace", cfg=cfg, steps=8)
    for model in (nag(nn_, magcache(m, 0.0), neg), magcache(nag(nn_, m, neg), 0.0)):
        assert torch.equal(_sample(fam, model, "wan21_vace", cfg=cfg, steps=8), only_nag)
    a = _sample(fam, nag(nn_, magcache(m, 0.5), neg), "wan21_vace", cfg=cfg, steps=8)
    b_model = magcache(nag(nn_, m, neg), 0.5)
    b = _sample(fam, b_model, "wan21_vace", cfg=cfg, steps=8)
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-5)
    rep = b_model.model_options["transformer_options"]["atelier_magcache_run"].last_report
    assert rep["computed_calls"] < rep["total_calls"], rep      # MagCache did skip
    assert float((b - only_nag).abs().max()) > 0
