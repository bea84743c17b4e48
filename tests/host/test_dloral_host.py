"""DLoRAL nodes on a small SD2-architecture UNet and the SD VAE, both loaded by the real host.

The UNet keeps what the host needs to recognise SD2 (320 base channels, context 1024, linear
transformer projections) but has 2 levels of 1 res block (attention on the first level only),
about 25 M parameters instead of 865 M, so it runs on CPU in seconds. The DLoRAL checkpoint is
synthetic, in the official layout, built for that same architecture.
"""
import pytest
import torch

from _dloral_synth import SD21_BASE, make_official, unet_shapes

@pytest.fixture(autouse=True)
def _one_thread():
    # 2 shared cores: one thread avoids oversubscription (measured 3x faster here)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


SMALL = dict(ch=(320, 320), layers=1, attn=(True, False), ctx=1024)


def _init(sd, seed, gain=1.0):
    """Host modules are built without weight init (comfy ops): fill them, norms at 1/0,
    other weights ~ N(0, gain²/fan_in), biases small."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in sd.items():
        if "norm" in k and k.endswith(".weight") and v.dim() == 1:
            out[k] = torch.ones_like(v)
        elif v.dim() == 1:
            out[k] = torch.randn(v.shape, generator=g) * 0.01
        else:
            out[k] = torch.randn(v.shape, generator=g) * (gain / v[0].numel() ** 0.5)
    return out


def _host_unet_sd(seed=0, context_dim=1024, linear=True):
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
    torch.manual_seed(seed)
    m = UNetModel(image_size=32, in_channels=4, out_channels=4, model_channels=320, num_res_blocks=1,
                  channel_mult=(1, 1), num_head_channels=64,
                  transformer_depth=[1, 0], transformer_depth_output=[1, 1, 0, 0], transformer_depth_middle=1,
                  context_dim=context_dim, use_linear_in_transformer=linear, use_spatial_transformer=True,
                  legacy=False, dtype=torch.float32, device="cpu")
    return _init(m.state_dict(), seed)


@pytest.fixture(scope="module")
def sd2(comfy_dir):
    import comfy.sd
    model = comfy.sd.load_diffusion_model_state_dict(_host_unet_sd())
    assert model is not None, "host did not detect the small SD2 UNet"
    assert type(model.model.model_config).__name__.startswith("SD2"), type(model.model.model_config).__name__
    return model


@pytest.fixture(scope="module")
def vae(comfy_dir):
    import comfy.sd
    from comfy.ldm.modules.diffusionmodules.model import Encoder, Decoder
    dd = {'double_z': True, 'z_channels': 4, 'resolution': 256, 'in_channels': 3, 'out_ch': 3, 'ch': 128,
          'ch_mult': [1, 2, 4, 4], 'num_res_blocks': 2, 'attn_resolutions': [], 'dropout': 0.0}
    torch.manual_seed(1)
    sd = {("encoder." + k): v for k, v in Encoder(**dd).state_dict().items()}
    sd.update({("decoder." + k): v for k, v in Decoder(**dd).state_dict().items()})
    for name, c in (("quant_conv", 8), ("post_quant_conv", 4)):
        conv = torch.nn.Conv2d(c, c, 1)
        sd[name + ".weight"], sd[name + ".bias"] = conv.weight.detach(), conv.bias.detach()
    return comfy.sd.VAE(sd=_init(sd, 1))


@pytest.fixture(scope="module")
def weights(pack):
    ck, _ = make_official(unet_shapes(**SMALL), rank_q=4, rank_c=4, seed=2, std=0.02)
    return pack.dloral.convert_official(ck)


@pytest.fixture(scope="module")
def nodes(pack):
    return pack.nodes.dloral_nodes


def _cond(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, 77, 1024, generator=g), {}]]


def test_full_sd21_names_map_like_the_host(pack):
    """Every module of the real-layout SD2.1 UNet maps to the host's own LDM name (comfy.utils)."""
    import comfy.utils
    from comfy.supported_models import SD20
    cfg = dict(num_res_blocks=[2] * 4, channel_mult=[1, 2, 4, 4], transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0],
               transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0], transformer_depth_middle=1)
    host = comfy.utils.unet_to_diffusers(cfg)
    shapes = unet_shapes(**SD21_BASE)
    km = pack.dloral.keymap
    lay = km.layout_from_names(shapes)
    for n in shapes:
        if n.startswith("conv_in") or n not in host:
            assert n in host or n.startswith(("time_embedding", "conv_norm_out", "conv_out", "conv_in")), n
        mod, p = n.rsplit(".", 1)
        want = host.get(n)
        if want is not None:
            assert km.diffusers_to_ldm(mod, lay) + "." + p == want, n
    assert SD20.unet_config["model_channels"] == 320


@pytest.mark.slow
def test_nodes_upscale_through_host_models(sd2, vae, weights, nodes, out_dir):
    before = {k: v.clone() for k, v in sd2.model.diffusion_model.state_dict().items()}
    imgs = torch.rand(3, 16, 16, 3, generator=torch.Generator().manual_seed(0))
    node = nodes.AtelierDLoRALUpscale()
    # process_size 64 keeps 16 px frames at 64 px (latent 8×8) so the CPU run is short; a 32 px
    # tile (4 latent) exercises latent tiling through the host UNet
    (out,) = node.upscale(sd2, vae, _cond(), weights, imgs, tile_size=32, tile_overlap=16,
                          color_fix="adain", seed=0, window=2, process_size=64)
    assert out.shape == (3, 64, 64, 3) and torch.isfinite(out).all()
    assert 0 <= out.min() and out.max() <= 1
    (again,) = node.upscale(sd2, vae, _cond(), weights, imgs, tile_size=32, tile_overlap=16,
                            color_fix="adain", seed=5, window=3, process_size=64)
    torch.testing.assert_close(out, again, atol=1e-4, rtol=0)   # deterministic, window-independent
    # the input model is untouched: same weights, no patches, 4-channel conv_in
    import comfy.model_management as mm
    mm.unload_all_models()     # the host restores the shared weights when the patched clone unloads
    after = sd2.model.diffusion_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not sd2.patches and not sd2.object_patches
    assert sd2.model.diffusion_model.input_blocks[0][0].weight.shape[1] == 4


def test_patched_unet_weights_equal_core_merge(sd2, weights, nodes, pack):
    """The host-applied LoRA (via its own loader) equals the core's merge, key by key."""
    import comfy.model_management as mm
    mm.unload_all_models()
    patched = nodes.patch_model(sd2, weights)
    base = {k: v.clone() for k, v in sd2.model.state_dict().items() if k.startswith("diffusion_model.")}
    want = pack.dloral.apply_lora(base, weights)
    mm.load_models_gpu([patched], force_full_load=True)
    try:
        got = patched.model.state_dict()
        n = 0
        for mod in weights.modules():
            k = mod + ".weight"
            torch.testing.assert_close(got[k].float(), want[k].float(), atol=1e-5, rtol=1e-5)
            assert not torch.equal(got[k], base[k])
            n += 1
        assert n == len(weights.modules()) > 40
        conv = patched.model.diffusion_model.input_blocks[0][0]
        assert torch.equal(conv.weight, weights.conv_in_weight)
    finally:
        mm.unload_all_models()
    assert sd2.model.diffusion_model.input_blocks[0][0].weight.shape[1] == 4


def test_bad_inputs(sd2, vae, weights, nodes, pack):
    node = nodes.AtelierDLoRALUpscale()
    imgs = torch.rand(2, 16, 16, 3)
    with pytest.raises(ValueError, match="width 768"):
        node.upscale(sd2, vae, [[torch.zeros(1, 77, 768), {}]], weights, imgs, 256, 64, "adain", 0, 2,
                     process_size=64)
    other = pack.dloral.convert_official(make_official(unet_shapes(ch=(320, 640), layers=1, attn=(True, False),
                                                                   ctx=1024), seed=1)[0])
    with pytest.raises(ValueError, match="do not fit this UNet"):
        nodes.patch_model(sd2, other)
    with pytest.raises(ValueError, match="multiples of 8"):
        node.upscale(sd2, vae, _cond(), weights, imgs, 250, 64, "adain", 0, 2)


def test_not_sd2_model_rejected(comfy_dir, nodes, weights):
    import comfy.sd
    sd15 = comfy.sd.load_diffusion_model_state_dict(_host_unet_sd(context_dim=768, linear=False))
    assert type(sd15.model.model_config).__name__ == "SD15"
    with pytest.raises(ValueError, match="needs an SD2.x"):
        nodes.patch_model(sd15, weights)


def test_node_registry(pack):
    m = pack.nodes.NODE_CLASS_MAPPINGS
    for k in ("AtelierDLoRALLoader", "AtelierDLoRALConvert", "AtelierDLoRALUpscale"):
        assert k in m and m[k].CATEGORY == "Atelier/Video"
        spec = m[k].INPUT_TYPES()
        for group in spec.values():
            for name, v in group.items():
                assert len(v) > 1 and v[1].get("tooltip"), f"{k}.{name} has no tooltip"


def test_precision_choice_reaches_the_host_unet(sd2, vae, weights, nodes):
    """auto and fp32 run the host UNet in float32 on CPU; bf16 (forced) runs it under autocast and stays
    close to fp32 (relative L2 difference of eps measured 0.44 % on both hosts, about twice bf16's unit
    roundoff 2^-9; bound 5 %, and above 1e-4 so that a run that stayed in fp32 fails); a bad value is refused."""
    import comfy.model_management as mm
    g = torch.Generator().manual_seed(3)
    x, ctx = torch.randn(1, 8, 8, 8, generator=g), _cond(1)[0][0]
    t = torch.ones(1)
    eps = {}
    for p in ("auto", "fp32", "bf16"):
        m = nodes.host_models(sd2, vae, _cond(1), weights, precision=p)
        assert m.dtype == (torch.bfloat16 if p == "bf16" else torch.float32)
        assert m.cfr.attn.q.weight.dtype == m.dtype
        with torch.inference_mode():
            eps[p] = m.unet(x, t, ctx)
        mm.unload_all_models()
    assert torch.equal(eps["auto"], eps["fp32"])
    rel = ((eps["bf16"] - eps["fp32"]).norm() / eps["fp32"].norm()).item()
    assert 1e-4 < rel < 0.05, rel
    with pytest.raises(ValueError, match="precision must be one of"):
        nodes.host_models(sd2, vae, _cond(1), weights, precision="half")
