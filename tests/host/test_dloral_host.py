"""DLoRAL nodes on a small SD2-architecture UNet and the SD VAE, both loaded by the real host.

The UNet keeps what the host needs to recognise SD2 (320 base channels, context 1024, linear
transformer projections) but has 2 levels of 1 res block (attention on the first level only),
about 25 M parameters instead of 865 M, so it runs on CPU in seconds. The DLoRAL checkpoint is
synthetic, in the official layout, built for that same architecture.
"""
import os
import pathlib

import pytest
import torch

from _dloral_synth import SD21_BASE, make_official, unet_shapes, with_base

pytestmark = pytest.mark.usefixtures("single_thread")


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
def official(comfy_dir):
    """A DLoRAL checkpoint in the official layout made for the small SD2 UNet (its base tensors)."""
    ck, _ = make_official(unet_shapes(**SMALL), rank_q=4, rank_c=4, seed=2, std=0.02)
    return with_base(ck, _host_unet_sd())


@pytest.fixture(scope="module")
def weights(pack, official):
    return pack.dloral.convert_official(official)


def _upscale(nodes, *args, **kw):
    """The Upscale node's execute (V3), returning its IMAGE output."""
    return nodes.AtelierDLoRALUpscale.execute(*args, **kw).result[0]


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
    imgs = torch.rand(3, 16, 24, 3, generator=torch.Generator().manual_seed(0))
    # process_size 64 keeps 16x24 px frames at 64x96 px (latent 8x12) so the CPU run is short; the
    # smallest tile, 64 px (8 latent), with a 32 px overlap exercises latent tiling through the host UNet
    out = _upscale(nodes, sd2, vae, _cond(), weights, imgs, tile_size=64, tile_overlap=32,
                   color_fix="adain", seed=0, window=2, process_size=64)
    assert out.shape == (3, 64, 96, 3) and torch.isfinite(out).all()
    assert 0 <= out.min() and out.max() <= 1
    again = _upscale(nodes, sd2, vae, _cond(), weights, imgs, tile_size=64, tile_overlap=32,
                     color_fix="adain", seed=5, window=3, process_size=64)
    # deterministic and window-independent up to the official 8-bit truncations: float noise between batch
    # sizes (~1e-6) can move a value across a level boundary of the truncated decode (1/255), and the colour
    # fix and the output truncation after it can carry that to one more level: at most 2/255, on rare values
    d = (out - again).abs()
    assert d.max() <= 2 / 255 + 1e-6 and (d > 1e-6).float().mean() < 1e-3, (d.max(), (d > 1e-6).float().mean())
    # the input model is untouched: same weights, no patches, 4-channel conv_in
    import comfy.model_management as mm
    mm.unload_all_models()     # the host restores the shared weights when the patched clone unloads
    after = sd2.model.diffusion_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not sd2.patches and not sd2.object_patches
    assert sd2.model.diffusion_model.input_blocks[0][0].weight.shape[1] == 4


def _changed(official):
    """The checkpoint as if training had changed one untargeted and one LoRA-targeted base tensor."""
    sd = dict(official["state_dict_unet"])
    sd["time_embedding.linear_1.weight"] = sd["time_embedding.linear_1.weight"] + 0.05
    sd["down_blocks.0.resnets.0.conv1.base_layer.weight"] = sd["down_blocks.0.resnets.0.conv1.base_layer.weight"] * 1.5
    return {**official, "state_dict_unet": sd}


def test_patched_unet_equals_core_merge(sd2, official, nodes, pack):
    """Each LoRA module of the patched clone (unmerged: ``dloral.lora.lora_module`` object patches) computes what
    a layer with the core's merged weight computes, and shares the input model's weight tensors (no second
    copy); the kept base tensors (converted with the SD2.1 base as reference) replace the user's on the clone;
    the input model keeps its own weights and module objects."""
    import comfy.model_management as mm
    import comfy.utils
    import torch.nn.functional as F
    mm.unload_all_models()
    base = {k: v.clone() for k, v in sd2.model.state_dict().items() if k.startswith("diffusion_model.")}
    ptrs = {k: v.data_ptr() for k, v in sd2.model.state_dict().items()}
    modules = {m: comfy.utils.get_attr(sd2.model, m) for m in pack.dloral.convert_official(official).modules()}
    weights = pack.dloral.convert_official(_changed(official), base=base)
    kept = sorted(weights.base)
    assert kept == ["diffusion_model.input_blocks.1.0.in_layers.2.weight", "diffusion_model.time_embed.0.weight"]
    patched = nodes.patch_model(sd2, weights)
    want = pack.dloral.apply_lora(base, weights)
    mm.load_models_gpu([patched], force_full_load=True)
    g = torch.Generator().manual_seed(3)
    try:
        got = patched.model.state_dict()
        assert sorted(got) == sorted(sd2.model.state_dict())          # the host sees the keys it knows
        n = 0
        for m in weights.modules():
            mod, w, b = comfy.utils.get_attr(patched.model, m), want[m + ".weight"], base.get(m + ".bias")
            assert got[m + ".weight"].data_ptr() == ptrs[m + ".weight"]   # the user's tensor, not a copy
            if w.dim() == 2:
                x = torch.randn(5, w.shape[1], generator=g)
                ref = F.linear(x.double(), w.double(), None if b is None else b.double())
            else:
                x = torch.randn(1, w.shape[1], 12, 12, generator=g)
                ref = F.conv2d(x.double(), w.double(), None if b is None else b.double(), mod.stride, mod.padding)
            with torch.no_grad():
                out = mod(x).double()
            # float32 sums of O(1) terms over fan_in <= 11520 products: well inside 1e-4 of a float64 reference
            torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
            n += 1
        assert n == len(weights.modules()) > 40
        for k in kept:
            torch.testing.assert_close(got[k].float(), want[k].float(), atol=1e-6, rtol=1e-6)
            assert not torch.equal(got[k], base[k])
        conv = patched.model.diffusion_model.input_blocks[0][0]   # base conv_in + its LoRA, unmerged
        assert torch.equal(pack.dloral.lora_base(conv).weight, weights.conv_in_lora["base_weight"])
        x8 = torch.randn(1, 8, 6, 5, generator=torch.Generator().manual_seed(2))
        with torch.no_grad():
            torch.testing.assert_close(conv(x8).double(), F.conv2d(x8.double(), weights.conv_in_weight.double(),
                                                                   weights.conv_in_bias.double(), padding=1),
                                       atol=1e-4, rtol=1e-4)
    finally:
        mm.unload_all_models()
    assert sd2.model.diffusion_model.input_blocks[0][0].weight.shape[1] == 4
    after = sd2.model.state_dict()
    assert all(torch.equal(after[k], base[k]) for k in base)
    assert all(comfy.utils.get_attr(sd2.model, m) is mod for m, mod in modules.items())


def test_other_base_model_named_before_anything_runs(sd2, nodes, pack, official):
    """Weights converted from a checkpoint whose base differs from this UNet (another SD2 of the same
    architecture, or a checkpoint that changed tensors when converted without --base) are refused, naming them."""
    import comfy.model_management as mm
    mm.unload_all_models()
    other = pack.dloral.convert_official(make_official(unet_shapes(**SMALL), rank_q=4, rank_c=4, seed=2,
                                                       std=0.02)[0])
    with pytest.raises(ValueError, match="not the base model the DLoRAL weights were made for") as e:
        nodes.patch_model(sd2, other)
    n = len(other.fingerprint)
    assert f"{n} of {n} base tensors differ" in str(e.value)                       # every one of them
    assert "diffusion_model.input_blocks.1.0.emb_layers.1.bias: values differ" in str(e.value)
    plain = pack.dloral.convert_official(_changed(official))
    with pytest.raises(ValueError, match=r"2 of \d+ base tensors differ") as e:
        nodes.patch_model(sd2, plain)
    for k in ("diffusion_model.input_blocks.1.0.in_layers.2.weight", "diffusion_model.time_embed.0.weight"):
        assert k in str(e.value)
    assert not sd2.patches and not sd2.object_patches


def test_bad_inputs(sd2, vae, weights, nodes, pack):
    imgs = torch.rand(2, 16, 16, 3)
    with pytest.raises(ValueError, match="width 768"):
        _upscale(nodes, sd2, vae, [[torch.zeros(1, 77, 768), {}]], weights, imgs, 256, 64, "adain", 0, 2,
                 process_size=64)
    other = pack.dloral.convert_official(make_official(unet_shapes(ch=(320, 640), layers=1, attn=(True, False),
                                                                   ctx=1024), seed=1)[0])
    with pytest.raises(ValueError, match="do not fit this UNet"):
        nodes.patch_model(sd2, other)
    with pytest.raises(ValueError, match=r"tile_size \(--tile\): 250 is not a multiple of 8"):
        _upscale(nodes, sd2, vae, _cond(), weights, imgs, 250, 64, "adain", 0, 2)


def test_not_sd2_model_rejected(comfy_dir, nodes, weights):
    import comfy.sd
    sd15 = comfy.sd.load_diffusion_model_state_dict(_host_unet_sd(context_dim=768, linear=False))
    assert type(sd15.model.model_config).__name__ == "SD15"
    with pytest.raises(ValueError, match="needs an SD2.x"):
        nodes.patch_model(sd15, weights)


IDS = ("AtelierDLoRALLoader", "AtelierDLoRALConvert", "AtelierDLoRALUpscale")
INPUTS = {"AtelierDLoRALLoader": (["weights_name"], []),
          "AtelierDLoRALConvert": (["pkl_name", "output_name", "precision"], []),
          "AtelierDLoRALUpscale": (["model", "vae", "positive", "dloral", "images", "tile_size", "tile_overlap",
                                    "color_fix", "seed", "window"],
                                   ["vae_tile", "process_size", "sample_posterior", "precision", "processing"])}


OUTPUTS = {"AtelierDLoRALLoader": ["dloral"], "AtelierDLoRALConvert": ["path"], "AtelierDLoRALUpscale": ["images"]}


def test_node_registry_v3_schema_inputs_unchanged_and_tooltips(pack):
    from comfy_api.latest import io
    m = pack.nodes.NODE_CLASS_MAPPINGS
    for k in IDS:
        cls = m[k]
        assert issubclass(cls, io.ComfyNode) and cls in pack.nodes.dloral_nodes.NODES
        schema = cls.define_schema()
        assert schema.node_id == k and schema.category == "Atelier/Video" and schema.description
        spec = cls.INPUT_TYPES()
        req, opt = INPUTS[k]
        assert list(spec["required"]) == req and list(spec.get("optional", {})) == opt, k   # saved workflows
        for group in ("required", "optional"):
            for name, v in spec.get(group, {}).items():
                assert len(v) > 1 and v[1].get("tooltip"), f"{k}.{name} has no tooltip"
        assert schema.outputs and all(o.tooltip for o in schema.outputs), f"{k}: an output has no tooltip"
        info = cls.GET_NODE_INFO_V1()      # what the server's /object_info sends (validates the schema)
        assert info["output_name"] == OUTPUTS[k] and all(info["output_tooltips"]), (k, info["output_name"])
    # the Upscale widgets are the core settings table (defaults and bounds the CLI uses too)
    spec = m["AtelierDLoRALUpscale"].INPUT_TYPES()
    ints = {**spec["required"], **spec["optional"]}
    for name, s in pack.dloral.settings.SETTINGS.items():
        v = ints[name][1]
        assert v["default"] == s.default, name
        if s.min is not None:
            assert (v["min"], v["max"]) == (s.min, s.max), name


def test_validate_inputs_is_the_core_check(nodes):
    up = nodes.AtelierDLoRALUpscale
    ok = dict(tile_size=768, tile_overlap=256, color_fix="adain", seed=0, window=4)
    assert up.validate_inputs(**ok) is True
    for bad, text in ((dict(tile_size=250), "tile_size (--tile): 250 is not a multiple of 8"),
                      (dict(tile_size=256, tile_overlap=256), "tile_overlap (--overlap): 256 must be smaller"),
                      (dict(tile_size=32, tile_overlap=0), "below the smallest tile"),
                      (dict(vae_tile=4), "vae_tile (--vae-tile): 4 is below the smallest VAE tile"),
                      (dict(window=0), "window (--window): 0 is out of range"),
                      (dict(precision="half"), "precision (--precision): 'half' is not allowed")):
        msg = up.validate_inputs(**{**ok, **bad})
        assert isinstance(msg, str) and text in msg, (bad, msg)
    assert up.validate_inputs(**{**ok, "tile_size": None, "tile_overlap": 1024}) is True   # linked: judged later
    conv = nodes.AtelierDLoRALConvert
    assert conv.validate_inputs(output_name="x.safetensors") is True
    assert "output_name" in conv.validate_inputs(output_name="../x.safetensors")
    assert "output_name" in conv.validate_inputs(output_name="x.pt")


def test_models_folder_registered_and_created(nodes, tmp_path):
    import folder_paths
    paths = folder_paths.get_folder_paths("dloral")
    assert paths[0] == str(pathlib.Path(folder_paths.models_dir) / "dloral") and pathlib.Path(paths[0]).is_dir()
    # loader fingerprint: the content hash, so a file replaced in place reruns the loader
    f = pathlib.Path(paths[0]) / "atelier_test_fingerprint.safetensors"
    try:
        f.write_bytes(b"one")
        a = nodes.AtelierDLoRALLoader.fingerprint_inputs(f.name)
        f.write_bytes(b"two")
        os.utime(f, ns=(1, 1))
        b = nodes.AtelierDLoRALLoader.fingerprint_inputs(f.name)
        assert a and b and a != b
        assert "atelier_test_fingerprint.safetensors" in nodes.model_files()
    finally:
        f.unlink()


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


def test_vae_attention_patched_on_a_clone(vae, nodes, pack):
    """``patch_vae``: the VAE's attention blocks run the diffusers way (``dloral.vae_attention``) on a clone of
    its patcher; the user's VAE is untouched and decodes as before, to the bit, after the patched one ran."""
    import comfy.model_management as mm
    host = pack.nodes.dloral_host
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    img = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(4))
    fsm = vae.first_stage_model
    blocks = {p: fsm.get_submodule(p) for p in ("encoder.mid.attn_1", "decoder.mid.attn_1")}
    ref_dec, ref_enc = vae.decode(z), vae.encode(img)
    patched = host.patch_vae(vae)
    assert patched is not vae and patched.patcher is not vae.patcher and not vae.patcher.object_patches
    assert sorted(patched.patcher.object_patches) == sorted(blocks)
    got_dec, got_enc = patched.decode(z), patched.encode(img)
    for got, ref in ((got_dec, ref_dec), (got_enc, ref_enc)):
        torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)   # the same function
        assert not torch.equal(got, ref)                             # in other arithmetic
    # the shared model carries the clone's patches only while the clone is loaded
    assert torch.equal(vae.decode(z), ref_dec) and torch.equal(vae.encode(img), ref_enc)
    mm.unload_all_models()
    assert all(fsm.get_submodule(p) is b for p, b in blocks.items())
    # a VAE on a GPU keeps the host's attention (with its out-of-memory fallback): nothing is patched
    import copy
    gpu_vae = copy.copy(vae)
    gpu_vae.device = torch.device("cuda", 0)
    assert host.patch_vae(gpu_vae) is gpu_vae


def _clip(path, frames, rate=25, tone=True):
    """An .mp4 of ``frames`` (T, H, W, 3) at ``rate`` fps (lossless H.264 4:4:4) with a 440 Hz stereo AAC tone."""
    import av
    import numpy as np
    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=rate, options={"crf": "0"})
        v.width, v.height, v.pix_fmt = frames.shape[2], frames.shape[1], "yuv444p"
        a = out.add_stream("aac", rate=48000, layout="stereo") if tone else None
        for img in frames:
            for p in v.encode(av.VideoFrame.from_ndarray((img.numpy() * 255).round().astype(np.uint8), "rgb24")):
                out.mux(p)
        for p in v.encode():
            out.mux(p)
        if a is not None:
            t = np.arange(int(48000 * len(frames) / rate)) / 48000
            s = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            f = av.AudioFrame.from_ndarray(np.stack([s, 0.8 * s]), format="fltp", layout="stereo")
            f.sample_rate, f.pts = 48000, 0
            for p in [*a.encode(f), *a.encode()]:
                out.mux(p)


def test_video_node_keeps_audio_and_frame_rate(sd2, vae, weights, nodes, pack, tmp_path):
    """VIDEO in (a file with sound, as Load Video gives it) -> VIDEO out: the frames are exactly the IMAGE node's
    on the same frames, the frame rate and the audio object pass through untouched, and the host's Save Video
    writes them (the sound in the file: same rate, channels and length within a frame)."""
    import av
    from comfy_api.latest import InputImpl, io
    registered = "AtelierDLoRALUpscaleVideo" in pack.nodes.NODE_CLASS_MAPPINGS
    assert registered == hasattr(io, "Video")     # registered exactly where the host has VIDEO
    if not registered:
        pytest.skip("this host's V3 API has no VIDEO type")
    frames = torch.rand(3, 16, 24, 3, generator=torch.Generator().manual_seed(3))
    _clip(tmp_path / "in.mp4", frames, rate=25)
    video = InputImpl.VideoFromFile(str(tmp_path / "in.mp4"))
    src = video.get_components()
    kw = dict(tile_size=0, tile_overlap=0, color_fix="adain", seed=0, window=2, process_size=64)
    out = nodes.AtelierDLoRALUpscaleVideo.execute(sd2, vae, _cond(), weights, video, **kw).result[0]
    c = out.get_components()
    assert c.images.shape == (3, 64, 96, 3) and c.frame_rate == src.frame_rate == 25
    assert torch.equal(c.images, _upscale(nodes, sd2, vae, _cond(), weights, src.images, **kw))
    assert c.audio["sample_rate"] == 48000 and torch.equal(c.audio["waveform"], src.audio["waveform"])
    # an in-memory VIDEO (Create Video): the very same audio object comes back
    made = InputImpl.VideoFromComponents(type(src)(images=src.images, audio=src.audio, frame_rate=src.frame_rate))
    assert nodes.AtelierDLoRALUpscaleVideo.execute(sd2, vae, _cond(), weights, made, **kw).result[0] \
        .get_components().audio is src.audio
    out.save_to(str(tmp_path / "out.mp4"))     # what Save Video calls
    with av.open(str(tmp_path / "out.mp4")) as f:
        vs, aus = f.streams.video[0], f.streams.audio[0]
        assert (vs.width, vs.height, vs.average_rate) == (96, 64, 25)
        assert (aus.sample_rate, aus.channels) == (48000, 2)
        n = sum(fr.samples for fr in f.decode(aus))
    assert abs(n / 48000 - 3 / 25) <= 1 / 25, n
    assert nodes.AtelierDLoRALUpscaleVideo.validate_inputs(tile_size=250) != True   # noqa: E712 - the core check
