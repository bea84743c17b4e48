"""DLoRAL checkpoint loading and conversion on synthetic checkpoints with the official layout."""
import pathlib
import pickle

import pytest
import torch

from dloral import apply_lora, convert_official, load_official, load_weights, save_weights
from dloral.checkpoint import ADAPTERS
from dloral.keymap import diffusers_to_ldm, layout_from_names
from _dloral_synth import SD21_BASE, make_official, targets, unet_shapes


@pytest.fixture(scope="module")
def synth():
    shapes = unet_shapes()
    ck, raw = make_official(shapes, rank_q=2, rank_c=3, seed=0)
    return shapes, ck, raw


def test_every_key_mapped_and_merge_matches_independent_formula(synth):
    shapes, ck, raw = synth
    w = convert_official(ck)
    lay = layout_from_names(shapes)
    tg = targets(shapes)
    assert len(tg) == len(raw) and "conv_in" in tg
    # every targeted module except conv_in (replaced whole) carries one merged LoRA, none extra
    expect = {"diffusion_model." + diffusers_to_ldm(m, lay) for m in tg if m != "conv_in"}
    assert set(w.modules()) == expect
    assert len(w.lora) == 3 * len(expect)
    # the base (LDM) state dict the host would hold, then merged by the pack
    base = {}
    for n in shapes:
        mod, p = n.rsplit(".", 1)
        if mod != "conv_in":
            src = ck["state_dict_unet"].get(n, ck["state_dict_unet"].get(f"{mod}.base_layer.{p}"))
            base["diffusion_model." + diffusers_to_ldm(mod, lay) + "." + p] = src
    merged = apply_lora(base, w)
    sq, sc = 8.0 / 2, 8.0 / 3   # PEFT default alpha 8 over each rank
    for mod, r in raw.items():
        a_q, b_q, a_c, b_c = r["A_q"], r["B_q"], r["A_c"], r["B_c"]
        dq = torch.einsum("or,ri...->oi...", b_q.flatten(1), a_q)
        dc = torch.einsum("or,ri...->oi...", b_c.flatten(1), a_c)
        want = r["base"] + sq * dq + sc * dc
        got = merged["diffusion_model." + diffusers_to_ldm(mod, lay) + ".weight"]
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=mod)
    assert merged["diffusion_model.input_blocks.0.0.weight"].shape[1] == 8
    torch.testing.assert_close(merged["diffusion_model.input_blocks.0.0.bias"],
                               ck["state_dict_unet"]["conv_in.base_layer.bias"])
    # untouched keys stay untouched
    k = "diffusion_model.time_embed.0.weight"
    assert torch.equal(merged[k], base[k])


def test_cfr_weights_taken_from_bpp(synth):
    _, ck, _ = synth
    w = convert_official(ck)
    bpp = ck["state_dict_bpp"]
    assert len(w.spynet) == 60 and len(w.attn) == 10
    assert torch.equal(w.spynet["levels.3.2.weight"], bpp["spynet.basic_module.3.basic_module.2.conv.weight"])
    assert torch.equal(w.attn["threshold.weight"], bpp["cross_attn_module.threshold_fc.weight"])


def test_save_load_roundtrip(synth, tmp_path):
    _, ck, _ = synth
    w = convert_official(ck)
    p = tmp_path / "d.safetensors"
    save_weights(w, str(p))
    assert not [f for f in tmp_path.iterdir() if f.name != "d.safetensors"], "temp file left behind"
    w2 = load_weights(str(p))
    assert w2.lora.keys() == w.lora.keys()
    for k in w.lora:
        assert torch.equal(w.lora[k], w2.lora[k])
    assert torch.equal(w.conv_in_weight, w2.conv_in_weight)
    assert all(torch.equal(w.spynet[k], w2.spynet[k]) for k in w.spynet)
    assert w2.meta["rank_quality"] == "2" and w2.meta["format"] == "atelier-dloral"


def test_official_pickle_loads_weights_only_and_converts(synth, tmp_path):
    _, ck, _ = synth
    p = tmp_path / "model.pkl"
    torch.save(ck, p)
    w = load_weights(str(p))          # pkl path: safe load + in-memory conversion
    assert set(w.modules()) == set(convert_official(ck).modules())


class _Evil:
    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(_Evil.target),))


def test_unsafe_pickle_refused_and_not_executed(tmp_path):
    _Evil.target = str(tmp_path / "pwned")
    p = tmp_path / "model.pkl"
    torch.save({"state_dict_unet": {}, "x": _Evil()}, p)
    with pytest.raises(ValueError, match="refused"):
        load_official(str(p))
    assert not (tmp_path / "pwned").exists()


def test_missing_top_level_keys_named(synth):
    _, ck, _ = synth
    bad = {k: v for k, v in ck.items() if k not in ("state_dict_bpp", "unet_lora_others_modules_quality")}
    with pytest.raises(ValueError, match="not a DLoRAL checkpoint.*state_dict_bpp"):
        convert_official(bad)


def test_missing_lora_factor_named(synth):
    _, ck, _ = synth
    sd = dict(ck["state_dict_unet"])
    gone = next(k for k in sd if ".lora_B.default_decoder_consistency" in k)
    del sd[gone]
    with pytest.raises(ValueError, match="LoRA keys missing.*" + gone.split(".lora_B")[0].replace(".", r"\.")):
        convert_official({**ck, "state_dict_unet": sd})


def test_leftover_keys_rejected(synth):
    _, ck, _ = synth
    sd = dict(ck["state_dict_unet"])
    sd["down_blocks.0.resnets.0.conv1.lora_A.default_encoder_extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="match no known module"):
        convert_official({**ck, "state_dict_unet": sd})
    bpp = dict(ck["state_dict_bpp"], **{"mystery.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="unknown CFR keys"):
        convert_official({**ck, "state_dict_bpp": bpp})


def test_not_sd2_base_rejected(synth):
    _, ck, _ = synth
    w = convert_official(ck)
    other = unet_shapes(ch=(16, 32))   # same layout, other widths: shapes differ
    lay = layout_from_names(other)
    base = {"diffusion_model." + diffusers_to_ldm(n.rsplit(".", 1)[0], lay) + "." + n.rsplit(".", 1)[1]:
            torch.zeros(s) for n, s in other.items()}
    with pytest.raises(ValueError, match="not the SD2.x UNet"):
        apply_lora(base, w)
    with pytest.raises(ValueError, match="no weight"):
        apply_lora({"diffusion_model.out.2.weight": torch.zeros(1)}, w)


def test_full_sd21_layout_maps_completely():
    shapes = unet_shapes(**SD21_BASE)
    ck, _ = make_official(shapes, rank_q=4, rank_c=4, with_values=False)
    assert len(ck["state_dict_unet"]) == 1718          # the count of the released pkl (research §9)
    lists = [ck[f"unet_lora_{g}_modules_quality"] for g in ("encoder", "decoder", "others")]
    assert [len(x) for x in lists] == [94, 148, 16]
    lay = layout_from_names(shapes)
    mapped = {diffusers_to_ldm(n.rsplit(".", 1)[0], lay) + "." + n.rsplit(".", 1)[1] for n in shapes}
    assert len(mapped) == len(shapes)                  # injective
    assert "output_blocks.2.1.conv.weight" in mapped and "output_blocks.5.2.conv.weight" in mapped
    assert len(ADAPTERS) == 6
