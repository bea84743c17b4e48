"""Synthetic DLoRAL checkpoints with the official key layout (PEFT naming, six adapters,
``state_dict_unet`` and ``state_dict_bpp``), and tiny pure-torch stand-ins for the SD2 UNet and VAE.

The layout follows the facts in research/dloral.md §2 (written here from those facts, not copied):
targets are non-bias, non-norm weights whose name contains to_q/k/v, to_out.0, conv*, proj_in,
proj_out, ff.net.0.proj or ff.net.2; the group is encoder (down_blocks, conv_in), decoder
(up_blocks, conv_out) or others (mid_block).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

PATTERNS = ("to_k", "to_q", "to_v", "to_out.0", "conv", "proj_out", "proj_in", "ff.net.2", "ff.net.0.proj")


def unet_shapes(ch=(32, 64), layers=1, attn=(True, False), ctx=16, head=8, in_ch=4):
    """Diffusers parameter names -> shapes of an SD2-style UNet2DConditionModel
    (linear projections, one transformer per attention, GEGLU feed-forward)."""
    s = {}
    temb = 4 * ch[0]

    def lin(n, o, i, bias=True):
        s[n + ".weight"] = (o, i)
        if bias:
            s[n + ".bias"] = (o,)

    def conv(n, o, i, k=3):
        s[n + ".weight"] = (o, i, k, k)
        s[n + ".bias"] = (o,)

    def norm(n, c):
        s[n + ".weight"] = (c,)
        s[n + ".bias"] = (c,)

    def resnet(n, i, o):
        norm(n + ".norm1", i)
        conv(n + ".conv1", o, i)
        lin(n + ".time_emb_proj", o, temb)
        norm(n + ".norm2", o)
        conv(n + ".conv2", o, o)
        if i != o:
            conv(n + ".conv_shortcut", o, i, 1)

    def transformer(n, c):
        norm(n + ".norm", c)
        lin(n + ".proj_in", c, c)
        b = n + ".transformer_blocks.0"
        for a, kv in (("attn1", c), ("attn2", ctx)):
            lin(f"{b}.{a}.to_q", c, c, False)
            lin(f"{b}.{a}.to_k", c, kv, False)
            lin(f"{b}.{a}.to_v", c, kv, False)
            lin(f"{b}.{a}.to_out.0", c, c)
        for i in (1, 2, 3):
            norm(f"{b}.norm{i}", c)
        lin(f"{b}.ff.net.0.proj", 8 * c, c)
        lin(f"{b}.ff.net.2", c, 4 * c)
        lin(n + ".proj_out", c, c)

    conv("conv_in", ch[0], in_ch)
    lin("time_embedding.linear_1", temb, ch[0])
    lin("time_embedding.linear_2", temb, temb)
    c_in = ch[0]
    for i, c in enumerate(ch):
        for j in range(layers):
            resnet(f"down_blocks.{i}.resnets.{j}", c_in if j == 0 else c, c)
            if attn[i]:
                transformer(f"down_blocks.{i}.attentions.{j}", c)
        c_in = c
        if i < len(ch) - 1:
            conv(f"down_blocks.{i}.downsamplers.0.conv", c, c)
    resnet("mid_block.resnets.0", ch[-1], ch[-1])
    transformer("mid_block.attentions.0", ch[-1])
    resnet("mid_block.resnets.1", ch[-1], ch[-1])
    rev, rattn = list(reversed(ch)), list(reversed(attn))
    prev = rev[0]
    for i, oc in enumerate(rev):
        inp = rev[min(i + 1, len(ch) - 1)]
        for j in range(layers + 1):
            skip = inp if j == layers else oc
            resnet(f"up_blocks.{i}.resnets.{j}", (prev if j == 0 else oc) + skip, oc)
            if rattn[i]:
                transformer(f"up_blocks.{i}.attentions.{j}", oc)
        if i < len(ch) - 1:
            conv(f"up_blocks.{i}.upsamplers.0.conv", oc, oc)
        prev = oc
    norm("conv_norm_out", ch[0])
    conv("conv_out", 4, ch[0])
    return s


SD21_BASE = dict(ch=(320, 640, 1280, 1280), layers=2, attn=(True, True, True, False), ctx=1024, head=64)


def group_of(module):
    if "down_blocks" in module or "conv_in" in module:
        return "encoder"
    if "up_blocks" in module or "conv_out" in module:
        return "decoder"
    return "others"


def targets(shapes):
    """Targeted module names, by the official rule."""
    out = []
    for n in shapes:
        if "bias" in n or "norm" in n:
            continue
        if any(p in n for p in PATTERNS):
            out.append(n[:-len(".weight")])
    return out


def make_official(shapes, rank_q=2, rank_c=3, seed=0, with_values=True, std=0.1, base_values=True):
    """An official-layout checkpoint dict. Returns (ckpt, raw) where raw[module] holds the plain
    LoRA factors {A_q, B_q, A_c, B_c} and base weights for independent checks.
    ``base_values=False`` leaves base weights (other than conv_in) as empty placeholders (the
    converter never reads them), so full-size checkpoints fit in memory."""
    g = torch.Generator().manual_seed(seed)
    rnd = (lambda *sh: torch.randn(*sh, generator=g) * std) if with_values else (lambda *sh: torch.empty(0))
    brnd = rnd if base_values else (lambda *sh: torch.empty(0))
    tg = targets(shapes)
    tset = set(tg)
    sd, raw = {}, {}
    for n, sh in shapes.items():
        mod, p = n.rsplit(".", 1)
        if mod == "conv_in" and p == "weight":
            sh = (sh[0], 8) + tuple(sh[2:])
        if mod in tset:
            sd[f"{mod}.base_layer.{p}"] = (rnd if mod == "conv_in" else brnd)(*sh)
            if p == "weight":
                grp = group_of(mod)
                r = raw.setdefault(mod, {"base": sd[f"{mod}.base_layer.{p}"]})
                k = sh[2:]
                for kind, rk in (("quality", rank_q), ("consistency", rank_c)):
                    a = rnd(rk, sh[1], *k)
                    b = rnd(sh[0], rk, *((1, 1) if k else ()))
                    sd[f"{mod}.lora_A.default_{grp}_{kind}.weight"] = a
                    sd[f"{mod}.lora_B.default_{grp}_{kind}.weight"] = b
                    r["A_" + kind[0]], r["B_" + kind[0]] = a, b
        else:
            sd[n] = brnd(*sh)
    ck = {"lora_rank_unet_quality": rank_q, "lora_rank_unet_consistency": rank_c,
          "state_dict_unet": sd, "state_dict_bpp": make_bpp(g, with_values)}
    for grp in ("encoder", "decoder", "others"):
        mods = [m for m in tg if group_of(m) == grp]
        ck[f"unet_lora_{grp}_modules_quality"] = list(mods)
        ck[f"unet_lora_{grp}_modules_consistency"] = list(mods)
    return ck, raw


def make_bpp(g=None, with_values=True, flow_scale=0.01):
    g = g or torch.Generator().manual_seed(1)
    rnd = (lambda *sh: torch.randn(*sh, generator=g)) if with_values else (lambda *sh: torch.empty(0))
    bpp = {}
    chans = (8, 32, 64, 32, 16, 2)
    for lvl in range(6):
        for i in range(5):
            w = rnd(chans[i + 1], chans[i], 7, 7)
            if with_values:
                w = w / (chans[i] * 49) ** 0.5 * (flow_scale if i == 4 else 1.0)
            bpp[f"spynet.basic_module.{lvl}.basic_module.{i}.conv.weight"] = w
            bpp[f"spynet.basic_module.{lvl}.basic_module.{i}.conv.bias"] = rnd(chans[i + 1]) * 0.01 if with_values else w
    bpp["spynet.mean"] = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    bpp["spynet.std"] = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    for n, sh in (("query_conv", (576, 4, 1, 1)), ("key_conv", (576, 4, 1, 1)),
                  ("value_conv", (576, 4, 1, 1)), ("proj_out", (4, 576, 1, 1)), ("threshold_fc", (1, 64))):
        bpp[f"cross_attn_module.{n}.weight"] = rnd(*sh) * (0.5 if with_values else 1)
        bpp[f"cross_attn_module.{n}.bias"] = rnd(sh[0]) * (0.1 if with_values else 1)
    for n in ("feat_extract.main.0.weight", "weight_predict.main.0.weight",
              "weight_predict_final.main.0.weight", "reconstruction_feat.main.0.weight",
              "conv_hr.weight", "conv_last.weight"):
        bpp[n] = rnd(2, 2)
    return bpp


class TinyVAE(nn.Module):
    """Stand-in VAE: encode = 8×8 average pool + 1×1 conv to (mean, logvar); decode = 1×1 conv,
    nearest ×8, 3×3 smoothing conv, tanh. Local receptive fields (1 latent pixel)."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.enc = nn.Conv2d(3, 8, 1)
        self.dec = nn.Conv2d(4, 3, 1)
        self.smooth = nn.Conv2d(3, 3, 3, padding=1, padding_mode="replicate")
        with torch.no_grad():
            self.enc.weight.mul_(2.0)
            self.dec.weight.mul_(3.0)

    def encode(self, x):
        m = self.enc(F.avg_pool2d(x, 8))
        return m[:, :4], m[:, 4:] - 4.0

    def encode_mean(self, x):
        return self.encode(x)[0]

    def decode(self, z):
        return torch.tanh(self.smooth(F.interpolate(self.dec(z), scale_factor=8, mode="nearest")))


class TinyUNet(nn.Module):
    """Stand-in eps-UNet: two 3×3 convs (receptive field 2 latent px) with a context and timestep bias."""

    def __init__(self, ctx_dim=16, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.c1 = nn.Conv2d(8, 16, 3, padding=1)
        self.c2 = nn.Conv2d(16, 4, 3, padding=1)
        self.ctx = nn.Linear(ctx_dim, 16)
        self.calls = 0
        self.gain = 0.1

    def forward(self, x, t, context):
        self.calls += 1
        h = self.c1(x) + self.ctx(context.mean(1))[..., None, None] + t.view(-1, 1, 1, 1) * 0.01
        return self.c2(F.silu(h)) * self.gain


def _base_key(key):
    """(diffusers module, param) of a non-LoRA UNet key of the official layout, or None for a LoRA factor."""
    if ".lora_A." in key or ".lora_B." in key:
        return None
    if ".base_layer." in key:
        return key[:key.index(".base_layer.")], key.rsplit(".", 1)[1]
    return tuple(key.rsplit(".", 1))


def ldm_base(ck, with_conv_in=False):
    """The checkpoint's base UNet (non-LoRA tensors) in the host's LDM naming, ``diffusion_model.*``:
    what the user's SD2.1 holds when it is the base DLoRAL was trained on (conv_in left out by default:
    the checkpoint's is 8-channel)."""
    from dloral.keymap import diffusers_to_ldm, layout_from_names
    sd = ck["state_dict_unet"]
    lay = layout_from_names([k for k in sd if _base_key(k)])
    out = {}
    for k, v in sd.items():
        mp = _base_key(k)
        if mp and (with_conv_in or mp[0] != "conv_in"):
            out["diffusion_model." + diffusers_to_ldm(mp[0], lay) + "." + mp[1]] = v
    return out


def with_base(ck, ldm_sd):
    """A copy of ``ck`` whose base tensors (all but conv_in) are taken from an LDM-named UNet state dict
    (keys with or without ``diffusion_model.``): a DLoRAL checkpoint made for that UNet."""
    from dloral.keymap import diffusers_to_ldm, layout_from_names
    sd = dict(ck["state_dict_unet"])
    lay = layout_from_names([k for k in sd if _base_key(k)])
    strip = lambda k: k[len("diffusion_model."):] if k.startswith("diffusion_model.") else k
    src = {strip(k): v for k, v in ldm_sd.items()}
    for k in list(sd):
        mp = _base_key(k)
        if mp and mp[0] != "conv_in":
            v = src[diffusers_to_ldm(mp[0], lay) + "." + mp[1]]
            assert tuple(v.shape) == tuple(sd[k].shape), (k, v.shape, sd[k].shape)
            sd[k] = v.detach().clone().float()
    return {**ck, "state_dict_unet": sd}
