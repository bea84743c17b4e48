"""Tiny models of every family (tests/_families.py) on the host tree under test.

For each family the tree has: the host detects it (config class, diffusion-model class,
detected config equal to the tiny one except the keys detection hard-codes), a 2-step
KSampler run gives finite latents of the latent's shape that depend on the text, the
state dict round-trips through the host's loader, and the block patch points the
builder's table claims are called. A family may skip only where this tree predates it.
"""
import pytest
import torch


import _families as _F  # noqa: E402  (no host import at module level: only data is read here)

NAMES = list(_F.FAMILIES)


def test_registry_is_complete():
    wanted = {"wan21_t2v", "wan21_i2v", "wan21_vace", "wan22_ti2v_5b", "wan22_a14b_high", "wan22_a14b_low",
              "flux", "flux_kontext", "flux2", "chroma", "chroma_radiance", "hidream", "qwen_image",
              "hunyuan_video", "hunyuan_video15", "sd35", "sdxl", "sd15", "lumina2", "z_image", "ltxv"}
    assert wanted <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_host_detects_family(fam, name):
    import comfy.supported_models as sm
    m = fam.model(name)
    f = fam.FAMILIES[name]
    mc = m.model.model_config
    assert type(mc).__name__ == f.config
    detected = m.atelier_detection["detected"]
    assert detected == (f.promote_from or f.config), f"host detected {detected}"
    if name == "sdxl":  # the tiny SDXL has Segmind-Vega's depths: a subclass of the SDXL config
        assert isinstance(mc, sm.SDXL)
    assert type(m.model.diffusion_model).__module__.startswith("comfy.ldm."), type(m.model.diffusion_model)
    diff = fam.detection_diff(m)
    assert set(diff) <= set(fam.hardcoded(name)), f"detected != tiny outside the hard-coded keys: {diff}"
    for k in fam.hardcoded(name):
        if k in m.atelier_config:
            assert fam._norm(mc.unet_config.get(k)) == fam._norm(m.atelier_config[k]), k


@pytest.mark.parametrize("name", NAMES)
def test_sample_is_finite_and_follows_text(fam, name):
    m = fam.model(name)
    lat = fam.latent(name)
    out = fam.sample(m, name, steps=2, cfg=2.0, seed=1, latent_image=lat)
    assert out.shape == lat["samples"].shape
    assert torch.isfinite(out).all()
    assert float(out.abs().max()) > 0
    a = fam.sample(m, name, steps=1, cfg=1.0, seed=1, positive=fam.conditioning(name, seed=10))
    b = fam.sample(m, name, steps=1, cfg=1.0, seed=1, positive=fam.conditioning(name, seed=11))
    assert not torch.equal(a, b), "the output does not depend on the text conditioning"


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trips(fam, name):
    m = fam.model(name)
    sd = fam.random_state_dict(name, seed=0)
    got = m.model.diffusion_model.state_dict()
    assert set(got) == set(sd)
    bad = [k for k in sd if not torch.equal(got[k].float(), sd[k].float())]
    assert not bad, f"{len(bad)} tensors differ after loading, e.g. {bad[:3]}"


def test_seed_changes_weights(fam):
    a, b = fam.random_state_dict("flux", seed=0), fam.random_state_dict("flux", seed=1)
    assert all(not torch.equal(a[k], b[k]) for k in a if a[k].numel() > 1)
    assert all(torch.equal(a[k], v) for k, v in fam.random_state_dict("flux", seed=0).items())


@pytest.mark.parametrize("name", NAMES)
def test_patch_points(fam, name):
    """One 1-step run: the "dit" replaces the table claims are called and the others are not,
    every UNet cross-attention block reaches its attn2 replace, the attention override is seen."""
    m = fam.model(name)
    f = fam.FAMILIES[name]
    calls = {"double_block": 0, "single_block": 0, "attention_override": 0}
    attn2 = set()
    p = m.clone()

    def counter(block_type):
        def patch(args, extra):
            calls[block_type] += 1
            return extra["original_block"](args)
        return patch

    for t in ("double_block", "single_block"):
        p.set_model_patch_replace(counter(t), "dit", t, 0)
    for blk in f.attn2_blocks:
        p.set_model_attn2_replace(lambda q, k, v, extra, blk=blk: attn2.add(blk) or q, *blk)

    def override(func, *args, **kwargs):
        calls["attention_override"] += 1
        return func(*args, **kwargs)

    p.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = override
    fam.sample(p, name, steps=1, cfg=1.0)
    assert {t for t in ("double_block", "single_block") if calls[t] > 0} == set(f.dit), (
        f"dit replaces called: {calls}; the table and Family.dit say {f.dit}")
    assert attn2 == set(f.attn2_blocks)
    assert calls["attention_override"] > 0, calls
