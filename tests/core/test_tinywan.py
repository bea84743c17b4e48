"""Core tests of the tiny Wan2.1 (pure torch; no host)."""
import math

import pytest
import torch

from tinywan import data, render, vae
from tinywan.build import random_model, random_state_dict
from tinywan.model import TinyWan, TinyWanConfig
from tinywan.sample import flow_sigmas, sample
from tinywan.weights import TRAINED_PATH, load_trained, load_trained_state_dict


def host_wan_layout(variant, dim, ffn_dim, num_layers, in_dim=None, out_dim=16, text_dim=4096):
    """Key -> shape of the host's comfy.ldm.wan.model.WanModel (written from reading the host
    source, independently of tinywan.model): Conv3d patch embedding (1,2,2), text/time MLPs,
    time_projection to 6*dim, per block self_attn/cross_attn q,k,v,o (+ RMSNorm norm_q/norm_k),
    norm3 LayerNorm with affine (cross_attn_norm=True), ffn.0/ffn.2, modulation [1,6,dim];
    head.head to out_dim*4 and head.modulation [1,2,dim]; I2V: k_img/v_img/norm_k_img and
    img_emb.proj = LayerNorm(1280), Linear(1280,1280), GELU, Linear(1280,dim), LayerNorm(dim)."""
    in_dim = in_dim or (16 if variant == "t2v" else 36)
    lin = lambda name, o, i: {f"{name}.weight": (o, i), f"{name}.bias": (o,)}
    k = {"patch_embedding.weight": (dim, in_dim, 1, 2, 2), "patch_embedding.bias": (dim,)}
    k.update(lin("text_embedding.0", dim, text_dim)); k.update(lin("text_embedding.2", dim, dim))
    k.update(lin("time_embedding.0", dim, 256)); k.update(lin("time_embedding.2", dim, dim))
    k.update(lin("time_projection.1", 6 * dim, dim))
    for n in range(num_layers):
        b = f"blocks.{n}."
        for att in ("self_attn", "cross_attn"):
            for p in "qkvo":
                k.update(lin(b + f"{att}.{p}", dim, dim))
            k[b + f"{att}.norm_q.weight"] = (dim,)
            k[b + f"{att}.norm_k.weight"] = (dim,)
        if variant == "i2v":
            k.update(lin(b + "cross_attn.k_img", dim, dim)); k.update(lin(b + "cross_attn.v_img", dim, dim))
            k[b + "cross_attn.norm_k_img.weight"] = (dim,)
        k[b + "norm3.weight"] = (dim,); k[b + "norm3.bias"] = (dim,)
        k.update(lin(b + "ffn.0", ffn_dim, dim)); k.update(lin(b + "ffn.2", dim, ffn_dim))
        k[b + "modulation"] = (1, 6, dim)
    k.update(lin("head.head", out_dim * 4, dim))
    k["head.modulation"] = (1, 2, dim)
    if variant == "i2v":
        k["img_emb.proj.0.weight"] = (1280,); k["img_emb.proj.0.bias"] = (1280,)
        k.update(lin("img_emb.proj.1", 1280, 1280)); k.update(lin("img_emb.proj.3", dim, 1280))
        k["img_emb.proj.4.weight"] = (dim,); k["img_emb.proj.4.bias"] = (dim,)
    return k


# ---------------------------------------------------------------- layout and builder

@pytest.mark.parametrize("variant,dim,ffn,layers", [("t2v", 128, 256, 2), ("i2v", 128, 256, 2),
                                                    ("t2v", 256, 512, 3)])
def test_state_dict_layout_is_host_layout(variant, dim, ffn, layers):
    sd = random_state_dict(variant=variant, dim=dim, ffn_dim=ffn, num_layers=layers)
    got = {k: tuple(v.shape) for k, v in sd.items()}
    assert got == host_wan_layout(variant, dim, ffn, layers)
    assert all(v.dtype == torch.float32 for v in sd.values())
    # the detection facts the host uses
    assert ("img_emb.proj.0.bias" in sd) == (variant == "i2v")
    assert sd["head.modulation"].shape[-1] % 128 == 0


def test_random_builder_deterministic_per_seed():
    a, b, c = random_state_dict(seed=4), random_state_dict(seed=4), random_state_dict(seed=5)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["blocks.0.self_attn.q.weight"], c["blocks.0.self_attn.q.weight"])
    state = torch.random.get_rng_state()
    random_model(seed=1)
    assert torch.equal(state, torch.random.get_rng_state()), "building must not consume the global RNG"


@pytest.mark.parametrize("variant", ["t2v", "i2v"])
def test_random_model_is_not_degenerate(variant):
    sd = random_state_dict(variant=variant, seed=0)
    for k, v in sd.items():
        if k.endswith("modulation"):
            assert v.abs().mean() > 0.01, k
    m = random_model(variant, seed=0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 16, 3, 16, 16, generator=g)
    ctx = torch.randn(1, 6, 4096, generator=g)
    kw = dict(clip_fea=torch.randn(1, 257, 1280, generator=g)) if variant == "i2v" else {}
    with torch.no_grad():
        out = m(x, torch.tensor([700.0]), ctx, **kw)
        base = out.abs().mean()
        assert torch.isfinite(out).all() and base > 0.05
        for other in (m(x, torch.tensor([700.0]), torch.randn(1, 6, 4096, generator=g), **kw),
                      m(x.roll(3, -1), torch.tensor([700.0]), ctx, **kw),
                      m(x, torch.tensor([100.0]), ctx, **kw)):
            assert (other - out).abs().mean() > 0.05 * base


def test_bad_config_errors():
    with pytest.raises(ValueError, match="dim=64"):
        random_state_dict(dim=64)
    with pytest.raises(ValueError, match="variant"):
        random_state_dict(variant="vace")
    m = random_model(seed=0)
    with pytest.raises(ValueError, match="context"):
        m(torch.zeros(1, 16, 1, 4, 4), torch.tensor([1.0]), torch.zeros(1, 2, 768))


# ---------------------------------------------------------------- split forward

EPS32 = torch.finfo(torch.float32).eps


def close_ulps(a, b, ulps):
    """|a - b| <= ulps float32 ulp of max|b| (a different batch layout may change a matmul's
    blocking and so the rounding; measured here: at most about 3 ulp)."""
    err, scale = float((a - b).abs().max()), float(b.abs().max())
    assert err <= ulps * EPS32 * scale, f"max error {err:.3g} > {ulps} ulp x {scale:.3g}"


def test_split_forward_and_rows():
    m = random_model(seed=2)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 16, 3, 8, 8, generator=g)
    ctx = torch.randn(3, 4, 4096, generator=g)
    t = torch.tensor([900.0, 500.0, 100.0])
    with torch.no_grad():
        full = m(x, t, ctx)
        tok, aux = m.embed(x, t, ctx)
        assert torch.equal(m.head_out(m.run_blocks(tok, aux), aux), full)
        ran = m.run_blocks(tok, aux)
        part = m.run_blocks(tok, aux, rows=[0, 2])
        assert torch.equal(part[1], tok[1])  # row 1 passed through untouched
        close_ulps(part[[0, 2]], ran[[0, 2]], 64)
        assert torch.equal(m.run_blocks(tok, aux, rows=[]), tok)
        one, aux1 = m.embed(x[1:2], t[1:2], ctx[1:2])  # batch rows are independent
        close_ulps(m.head_out(m.run_blocks(one, aux1), aux1), full[1:2], 64)


# ---------------------------------------------------------------- vae and data

def test_vae_round_trip_and_projection():
    d = vae.decode_matrix()
    torch.testing.assert_close(d @ d.T, torch.eye(12, dtype=torch.float64))
    rgb = torch.rand(2, 3, 3, 32, 32) * 2 - 1
    z = vae.encode(rgb)
    assert z.shape == (2, 16, 3, 16, 16)
    close_ulps(vae.decode(z), rgb, 32)       # an orthonormal map and back: measured 3 ulp
    zr = torch.randn(1, 16, 2, 4, 4)
    p = vae.encode(vae.decode(zr))
    close_ulps(vae.encode(vae.decode(p)), p, 32)  # a projection: measured 1.2 ulp
    torch.testing.assert_close(vae.from_host_latent(vae.to_host_latent(zr)), zr)
    # one latent pixel decodes to exactly one 2x2 RGB patch
    one = torch.zeros(1, 16, 1, 4, 4)
    one[0, :, 0, 1, 2] = torch.randn(16)
    nz = vae.decode(one)[0, :, 0].abs().sum(0) > 0
    assert nz.sum() <= 4 and nz[2:4, 4:6].all()
    with pytest.raises(ValueError, match="latent"):
        vae.decode(torch.zeros(1, 4, 1, 2, 2))


def test_prompts_and_clips():
    a, b = data.encode_prompt("Red square, moving right"), data.encode_prompt("red square moving right")
    assert torch.equal(a, b) and a.shape == (5, 4096)
    assert torch.equal(data.vocab_table()["red"], a[0])
    assert data.encode_prompt("").shape == (1, 4096)
    assert data.encode_prompts(["red", "blue circle"]).shape == (2, 3, 4096)
    with pytest.raises(ValueError, match="unknown words"):
        data.encode_prompt("purple square")
    clip = data.render_clip("red", "square", "right", 10.0, 16.0, 5.0)
    assert clip.shape == (3, 3, 32, 32)
    assert data.colour_shares(clip)["red"] == 1.0
    c = data.foreground_centroids(clip)
    torch.testing.assert_close(c[:, 0], torch.tensor([10.0, 14.0, 18.0], dtype=torch.float64), atol=0.3, rtol=0)
    z, ctx, prompts = data.training_batch(8, torch.Generator().manual_seed(0))
    assert z.shape == (8, 16, 3, 16, 16) and ctx.shape[0] == 8 and len(prompts) == 8


# ---------------------------------------------------------------- sampler

def test_flow_sigmas_known_values():
    torch.testing.assert_close(flow_sigmas(4, 1.0), torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]))
    s = flow_sigmas(20, 8.0)
    t = 1 - torch.arange(20) / 20.0  # the host table entry -(1 + 50 i) is t = (1000 - 50 i) / 1000
    torch.testing.assert_close(s[:-1], 8 * t / (1 + 7 * t))
    assert s[-1] == 0 and bool((s[1:] < s[:-1]).all())


def test_sampler_noop_hook_is_bit_identical_and_sees_every_call():
    m = random_model(seed=3)
    ctx, neg = torch.randn(6, 4096), torch.randn(3, 4096)
    calls = []

    def hook(tokens, aux, branch, step):
        calls.append((branch, step))
        return m.run_blocks(tokens, aux)

    ref = sample(m, ctx, neg, steps=5, cfg=4.0, seed=7)
    out = sample(m, ctx, neg, steps=5, cfg=4.0, seed=7, block_stack_fn=hook)
    assert torch.equal(ref, out)
    assert calls == [(b, i) for i in range(5) for b in ("cond", "uncond")]
    calls.clear()
    sample(m, ctx, steps=3, cfg=1.0, seed=7, block_stack_fn=hook)
    assert calls == [("cond", i) for i in range(3)]
    # a hook that changes the block stack changes the output
    other = sample(m, ctx, neg, steps=5, cfg=4.0, seed=7, block_stack_fn=lambda t, a, b, s: t)
    assert not torch.equal(ref, other)


# ---------------------------------------------------------------- the trained model

@pytest.fixture(scope="module")
def trained():
    if not TRAINED_PATH.is_file():
        pytest.fail(f"trained weights missing at {TRAINED_PATH}; run python -m tinywan.train")
    return load_trained()


def test_trained_file_small_and_described():
    sd, meta = load_trained_state_dict()
    assert TRAINED_PATH.stat().st_size <= 8 * 1024 * 1024
    assert meta["format"] == "atelier-tinywan" and meta["vocab_seed"] == data.VOCAB_SEED
    assert meta["vae_seed"] == vae.VAE_SEED and meta["vocab"] == list(data.VOCAB)
    assert {k: tuple(v.shape) for k, v in sd.items()} == host_wan_layout(
        "t2v", meta["config"]["dim"], meta["config"]["ffn_dim"], meta["config"]["num_layers"])


COLOUR_CFG = 5.0


@pytest.mark.parametrize("prompt,colour", [("red square", "red"), ("blue square", "blue"),
                                           ("green circle moving down", "green")])
def test_trained_model_follows_colour(trained, out_dir, prompt, colour):
    """20 Euler steps at cfg 5 (shift 8), two noise draws in one batch: the prompted colour
    holds most of the foreground (measured about 0.98 each; asserted > 0.6 and the largest)."""
    z = sample(trained, data.encode_prompt(prompt), steps=20, cfg=COLOUR_CFG, seed=0, shape=(2, 16, 3, 16, 16))
    rows = []
    for row in z:
        rgb = vae.to_unit(vae.decode(row[None]))[0]
        sh = data.colour_shares(rgb)
        print(prompt, {k: round(v, 3) for k, v in sh.items() if v > 0.01})
        assert data.foreground_mask(rgb).float().mean() > 0.03, "no shape drawn"
        assert sh[colour] > 0.6, (prompt, sh)
        assert sh[colour] == max(sh.values())
        rows.append(render.strip(render.latent_to_frames(row)))
    render.save_png(render.grid(rows), out_dir / f"tinywan_{prompt.replace(' ', '_')}.png")


def test_cross_attn_override_hook():
    m = random_model(seed=6)
    g = torch.Generator().manual_seed(2)
    x, ctx = torch.randn(2, 16, 3, 8, 8, generator=g), torch.randn(2, 5, 4096, generator=g)
    seen = []

    def plain(i, mod, xn, context, n_img):
        seen.append(i)
        return mod(xn, context, n_img)

    with torch.no_grad():
        tok, aux = m.embed(x, torch.tensor([600.0, 300.0]), ctx)
        assert torch.equal(m.run_blocks(tok, aux, cross_attn_fn=plain), m.run_blocks(tok, aux))
        assert seen == list(range(m.config.num_layers))
        zero = m.run_blocks(tok, aux, cross_attn_fn=lambda i, mod, xn, c, n: torch.zeros_like(xn))
        assert not torch.equal(zero, m.run_blocks(tok, aux))
