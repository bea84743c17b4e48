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


# --- base-model integrity: fingerprint, check, kept tensors -------------------------------------------

from dloral.checkpoint import FINGERPRINT_SAMPLES, base_mismatches, check_base, open_base
from _dloral_synth import ldm_base


def test_fingerprint_covers_every_base_tensor_with_values_at_fixed_positions(synth):
    shapes, ck, _ = synth
    w = convert_official(ck)
    base = ldm_base(ck)
    fp = w.fingerprint
    n_lora = sum(".lora_A." in k or ".lora_B." in k for k in ck["state_dict_unet"])
    assert set(fp) == set(base) and len(fp) == len(ck["state_dict_unet"]) - n_lora - 2   # conv_in w, b out
    assert "diffusion_model.input_blocks.0.0.weight" not in fp
    for k in ("diffusion_model.time_embed.0.weight", "diffusion_model.input_blocks.1.0.in_layers.2.weight",
              "diffusion_model.out.2.bias"):
        t = base[k].numpy().reshape(-1)
        n = t.size
        want = [t[(2 * i + 1) * n // (2 * FINGERPRINT_SAMPLES)] for i in range(FINGERPRINT_SAMPLES)] \
            if n > FINGERPRINT_SAMPLES else list(t)
        assert fp[k]["shape"] == list(base[k].shape) and fp[k]["sample"] == [float(v) for v in want], k


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_base_check_accepts_the_same_weights_in_any_precision(synth, dtype):
    _, ck, _ = synth
    w = convert_official(ck)
    user = {k: v.to(dtype) for k, v in ldm_base(ck).items()}
    user["diffusion_model.input_blocks.0.0.weight"] = torch.zeros(32, 4, 3, 3, dtype=dtype)   # the 4-ch conv_in
    assert base_mismatches(user, w.fingerprint) == []
    check_base(user, w)


def test_base_check_names_every_tensor_that_differs(synth):
    _, ck, _ = synth
    w = convert_official(ck)
    user = dict(ldm_base(ck))
    k1, k2, k3 = ("diffusion_model.time_embed.2.weight", "diffusion_model.middle_block.1.proj_in.weight",
                  "diffusion_model.output_blocks.0.0.in_layers.0.bias")
    user[k1] = user[k1] * 1.01              # 1 %: ten times the fp32 tolerance (2^-10)
    user[k2] = user[k2][:-1]                # another shape
    del user[k3]
    bad = dict(base_mismatches(user, w.fingerprint))
    assert set(bad) == {k1, k2, k3}, bad
    assert bad[k3] == "missing" and "values differ" in bad[k1]
    with pytest.raises(ValueError, match="not the base model") as e:
        check_base(user, w)
    for k in (k1, k2, k3):
        assert k in str(e.value)
    assert "3 of" in str(e.value) and "--base" in str(e.value)
    # another model of the same architecture: (nearly) every tensor is named
    other = ldm_base(make_official(unet_shapes(), seed=9)[0])
    assert len(base_mismatches(other, w.fingerprint)) > 0.9 * len(w.fingerprint)
    # the tolerance follows the user's dtype (bf16: 2^-6 relative), so a bf16 model is judged by its own
    # rounding: the unchanged tensors pass, a 10 % change is named
    user16 = {k: v.to(torch.bfloat16) for k, v in ldm_base(ck).items()}
    user16[k1] = (ldm_base(ck)[k1] * 1.1).to(torch.bfloat16)
    assert [k for k, _ in base_mismatches(user16, w.fingerprint)] == [k1]


def _changed_ck(ck):
    """ck with one untargeted base tensor and one LoRA-targeted base weight changed (as if trained)."""
    sd = dict(ck["state_dict_unet"])
    sd["time_embedding.linear_1.weight"] = sd["time_embedding.linear_1.weight"] + 0.05
    sd["down_blocks.0.resnets.0.conv1.base_layer.weight"] = sd["down_blocks.0.resnets.0.conv1.base_layer.weight"] * 1.5
    return {**ck, "state_dict_unet": sd}


def test_converter_keeps_the_base_tensors_the_checkpoint_changed(synth, tmp_path):
    shapes, ck, raw = synth
    sd21 = ldm_base(ck)                     # the SD2.1 the checkpoint started from
    trained = _changed_ck(ck)
    w = convert_official(trained, base=sd21)
    te, conv1 = "diffusion_model.time_embed.0.weight", "diffusion_model.input_blocks.1.0.in_layers.2.weight"
    assert set(w.base) == {te, conv1}
    assert torch.equal(w.base[te], trained["state_dict_unet"]["time_embedding.linear_1.weight"])
    # the targeted weight is kept with its LoRA delta merged, and has no LoRA entry any more
    r = raw["down_blocks.0.resnets.0.conv1"]
    dq = torch.einsum("or,ri...->oi...", r["B_q"].flatten(1), r["A_q"])
    dc = torch.einsum("or,ri...->oi...", r["B_c"].flatten(1), r["A_c"])
    want = trained["state_dict_unet"]["down_blocks.0.resnets.0.conv1.base_layer.weight"] + 8 / 2 * dq + 8 / 3 * dc
    torch.testing.assert_close(w.base[conv1], want, rtol=1e-5, atol=1e-6)   # float32 products, |w| ~ 1: ~100 ulp
    assert "diffusion_model.input_blocks.1.0.in_layers.2" not in w.modules()
    # the official result (every UNet tensor from the checkpoint) is what apply_lora gives on the user's SD2.1
    merged = apply_lora(sd21, w)
    assert torch.equal(merged[te], w.base[te]) and torch.equal(merged[conv1], w.base[conv1])
    check_base(sd21, w)                     # the user's SD2.1 passes: the changed tensors are replaced
    # without --base the change is not known, and the check names exactly those tensors on that SD2.1
    plain = convert_official(trained)
    assert plain.base == {}
    assert sorted(k for k, _ in base_mismatches(sd21, plain.fingerprint)) == sorted([conv1, te])
    # kept tensors and the fingerprint survive the safetensors round trip
    p = tmp_path / "kept.safetensors"
    save_weights(w, str(p))
    w2 = load_weights(str(p))
    assert w2.base.keys() == w.base.keys() and all(torch.equal(w2.base[k], w.base[k]) for k in w.base)
    assert w2.fingerprint == w.fingerprint and json_list(w2.meta["base_kept"]) == sorted(w.base)


def json_list(s):
    import json
    return json.loads(s)


def test_base_reference_from_a_checkpoint_file_and_the_cli(synth, tmp_path, capsys):
    from safetensors.torch import save_file
    from dloral.__main__ import main
    _, ck, _ = synth
    sd21 = ldm_base(ck)
    f = tmp_path / "sd21.safetensors"     # the layout of a full SD checkpoint file
    save_file({"model." + k: v.contiguous() for k, v in sd21.items()} |
              {"first_stage_model.decoder.conv_in.weight": torch.zeros(1)}, str(f))
    ref = open_base(str(f))
    assert set(ref) == set(sd21) and torch.equal(ref["diffusion_model.out.2.weight"], sd21["diffusion_model.out.2.weight"])
    pkl = tmp_path / "model.pkl"
    torch.save(_changed_ck(ck), pkl)
    out = tmp_path / "w.safetensors"
    assert main(["convert", str(pkl), "--out", str(out), "--precision", "fp32", "--base", str(f)]) == 0
    assert "2 changed base tensors" in capsys.readouterr().out
    assert len(load_weights(str(out)).base) == 2
    other = tmp_path / "other.safetensors"
    save_file({"model.diffusion_model.input_blocks.1.0.in_layers.2.weight": torch.zeros(3, 3, 3, 3)}, str(other))
    assert main(["convert", str(pkl), "--out", str(tmp_path / "x.safetensors"), "--base", str(other)]) == 2
    assert "--base" in capsys.readouterr().err and not (tmp_path / "x.safetensors").exists()


# --- the host's checks, as core rules: SD2 config, weight fit, conv_in, file hash, output name ------------

from dloral.checkpoint import (ConvIn8, SD2_UNET, check_fit, check_output_name, check_sd2_config, converted_path,
                               file_sha256, fit_problems)


def test_sd2_config_rule():
    check_sd2_config(dict(SD2_UNET, adm_in_channels=None, in_channels=4))
    with pytest.raises(ValueError, match=r"SD2.x .*'context_dim': 768"):
        check_sd2_config(dict(SD2_UNET, context_dim=768))                    # SD1.x
    with pytest.raises(ValueError, match="no adm_in_channels"):
        check_sd2_config(dict(SD2_UNET, adm_in_channels=2816))               # SD2 unCLIP / SDXL-like
    with pytest.raises(ValueError, match="SD2.x"):
        check_sd2_config({})


def _unet_of(ck):
    """An SD2-like UNet for the synthetic checkpoint: key map as the host's (module -> its weight) and shapes,
    the input conv 4-channel as in the user's SD2.1."""
    shapes = {k: tuple(v.shape) for k, v in ldm_base(ck, with_conv_in=True).items()}
    conv = shapes["diffusion_model.input_blocks.0.0.weight"]
    shapes["diffusion_model.input_blocks.0.0.weight"] = (conv[0], 4) + conv[2:]
    return shapes


def test_fit_problems_name_missing_modules_and_shape_mismatches(synth):
    _, ck, _ = synth
    w = convert_official(ck)
    shapes = _unet_of(ck)
    key_map = {m: m + ".weight" for m in w.modules()}
    assert fit_problems(w, key_map, shapes) == ([], [])
    check_fit(w, key_map, shapes)
    # independent reference: the core merge accepts the same UNet
    apply_lora({k: torch.zeros(s) for k, s in shapes.items()}, w)
    gone = w.modules()[3]
    missing, wrong = fit_problems(w, {k: v for k, v in key_map.items() if k != gone}, shapes)
    assert missing == [gone] and wrong == []
    bad = w.modules()[0] + ".weight"
    other = dict(shapes, **{bad: (shapes[bad][0] + 1,) + shapes[bad][1:]})
    missing, wrong = fit_problems(w, key_map, other)
    assert missing == [] and len(wrong) == 1 and wrong[0].startswith(bad + ": model (")
    with pytest.raises(ValueError, match=r"0 modules missing.*1 shape mismatches"):
        check_fit(w, key_map, other)
    with pytest.raises(ValueError):   # the core merge refuses it too
        apply_lora({k: torch.zeros(s) for k, s in other.items()}, w)
    conv = "diffusion_model.input_blocks.0.0.weight"
    for have in (None, (shapes[conv][0] * 2, 4, 3, 3), (shapes[conv][0], 4, 1, 1)):
        s = {k: v for k, v in shapes.items() if k != conv}
        if have is not None:
            s[conv] = have
        missing, wrong = fit_problems(w, key_map, s)
        assert missing == [] and len(wrong) == 1 and wrong[0].startswith(conv + ": model")


def test_conv_in8_is_the_padded_3x3_convolution_in_the_input_dtype():
    g = torch.Generator().manual_seed(0)
    wt, b = torch.randn(5, 8, 3, 3, generator=g), torch.randn(5, generator=g)
    x = torch.randn(2, 8, 6, 7, generator=g)
    conv = ConvIn8(wt, b)
    y = conv(x, "ignored", transformer_options={})
    # independent reference: the sum over channels and the 3x3 window, written out on the zero-padded input
    xp = torch.nn.functional.pad(x, (1, 1, 1, 1)).double()
    ref = torch.zeros(2, 5, 6, 7, dtype=torch.float64) + b.double()[None, :, None, None]
    for dy in range(3):
        for dx in range(3):
            ref += torch.einsum("bchw,oc->bohw", xp[:, :, dy:dy + 6, dx:dx + 7], wt.double()[:, :, dy, dx])
    assert y.shape == (2, 5, 6, 7) and torch.allclose(y.double(), ref, atol=1e-5)
    assert conv(x.to(torch.bfloat16)).dtype == torch.bfloat16
    wt.zero_()   # the module keeps its own copy
    assert torch.equal(conv(x), y)


def test_file_sha256_known_value_and_new_content(tmp_path):
    import hashlib
    p = tmp_path / "w.safetensors"
    p.write_bytes(b"abc")
    assert file_sha256(p) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"   # FIPS 180-2
    p.write_bytes(b"abcd" * 100)
    assert file_sha256(p) == hashlib.sha256(b"abcd" * 100).hexdigest()
    assert file_sha256(tmp_path / "missing") is None


def test_converted_path_rule(tmp_path):
    assert check_output_name("dloral.safetensors") is None
    for bad in ("dloral.pkl", "../x.safetensors", "sub/x.safetensors", " "):
        assert check_output_name(bad).startswith("output_name:")
    assert converted_path(str(tmp_path), " new.safetensors ") == str(tmp_path / "new.safetensors")
    (tmp_path / "old.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="output_name: 'old.safetensors' already exists"):
        converted_path(str(tmp_path), "old.safetensors")
    with pytest.raises(ValueError, match="output_name: .* is not allowed"):
        converted_path(str(tmp_path), "../old.safetensors")


def test_conv_in_kept_unmerged_as_the_official_code_runs_it(synth, tmp_path):
    """conv_in's base weight and its two adapters are kept apart (saved, loaded, cast) and run unmerged,
    quality adapter first; the result is the conv with the merged weight (float64 reference)."""
    from dloral.checkpoint import conv_in_module
    from dloral.lora import lora_base
    _, ck, raw = synth
    w = convert_official(ck)
    r = raw["conv_in"]
    assert w.adapter_ranks() == (2, 3) and w.split(5) == (2, 3) and w.split(4) is None
    assert torch.equal(w.conv_in_lora["base_weight"], r["base"].float())
    assert torch.equal(w.conv_in_lora["lora_down.weight"], torch.cat([r["A_q"], r["A_c"]]))
    p = tmp_path / "d.safetensors"
    save_weights(w, str(p))
    w2 = load_weights(str(p))
    assert all(torch.equal(w.conv_in_lora[k], w2.conv_in_lora[k]) for k in w.conv_in_lora)
    assert load_weights(str(p), dtype=torch.float16).conv_in_lora["lora_up.weight"].dtype == torch.float16
    mod = conv_in_module(w2)
    assert torch.equal(lora_base(mod).weight, r["base"].float())   # the base weight as the checkpoint has it
    x = torch.randn(1, 8, 9, 7, generator=torch.Generator().manual_seed(1))
    dq = torch.einsum("or,ri...->oi...", r["B_q"].double().flatten(1), r["A_q"].double())
    dc = torch.einsum("or,ri...->oi...", r["B_c"].double().flatten(1), r["A_c"].double())
    wm = r["base"].double() + 8 / 2 * dq + 8 / 3 * dc
    bias = ck["state_dict_unet"]["conv_in.base_layer.bias"].double()
    ref = torch.nn.functional.conv2d(x.double(), wm, bias, padding=1)
    with torch.no_grad():
        torch.testing.assert_close(mod(x, "emb", transformer_options={}).double(), ref, atol=1e-5, rtol=1e-5)
    # a file converted before conv_in's factors were recorded: the merged conv, same result
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open
    with safe_open(str(p), framework="pt") as f:
        meta = f.metadata()
    old = {k: v for k, v in load_file(str(p)).items() if k not in ("conv_in.base_weight", "conv_in.lora_down.weight", "conv_in.lora_up.weight")}
    save_file(old, str(tmp_path / "old.safetensors"), metadata=meta)
    wo = load_weights(str(tmp_path / "old.safetensors"))
    assert not wo.conv_in_lora
    with torch.no_grad():
        torch.testing.assert_close(conv_in_module(wo)(x).double(), ref, atol=1e-5, rtol=1e-5)
    save_file({**old, "conv_in.base_weight": w.conv_in_lora["base_weight"]}, str(tmp_path / "part.safetensors"), metadata=meta)
    with pytest.raises(ValueError, match="part of conv_in's LoRA"):
        load_weights(str(tmp_path / "part.safetensors"))
