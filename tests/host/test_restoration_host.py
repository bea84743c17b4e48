"""Restoration nodes chained as in a ComfyUI graph, with the host imported: synthetic painting ->
detect -> edit (user mask) -> regions -> fill (harmonic and external) -> QA -> count -> layers ->
layout -> export -> registration -> record (with the workflow from the hidden inputs)."""
import json

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture()
def dirs(comfy_dir, tmp_path):
    import folder_paths
    old = folder_paths.get_output_directory(), folder_paths.get_temp_directory()
    folder_paths.set_output_directory(str(tmp_path / "output"))
    folder_paths.set_temp_directory(str(tmp_path / "temp"))
    yield tmp_path
    folder_paths.set_output_directory(old[0])
    folder_paths.set_temp_directory(old[1])


def _res(out):
    return out["result"] if isinstance(out, dict) else out


def test_node_chain_writes_record(pack, host, dirs):
    M = pack.nodes.NODE_CLASS_MAPPINGS
    from nodes import NODE_CLASS_MAPPINGS as HOST  # the host itself is importable and untouched
    assert "KSampler" in HOST
    for k, c in M.items():
        if k.startswith("AtelierRestoration") or c.CATEGORY == "Atelier/Restoration":
            assert c.CATEGORY == "Atelier/Restoration"
            req = c.INPUT_TYPES()
            for sect in ("required", "optional"):
                for name, spec in req.get(sect, {}).items():
                    assert "tooltip" in spec[1], (k, name)
    synth = M["AtelierSyntheticDamage"]()
    out = synth.make(seed=1, width=384, height=256, dpi=600.0)
    assert out["ui"]["images"], "previews shown on the node"
    damaged, clean, g_split, g_crack, g_loss, g_small, ctx, ground = _res(out)
    assert damaged.shape == (1, 256, 384, 3) and g_loss.shape == (1, 256, 384)

    det = _res(M["AtelierDamageDetect"]().detect(damaged, ctx, ground, 6.0, 12.0, 10.0, 15.0, 7.0, 14.0, 8.0,
                                                 15.0, 0))
    dmap, all_d, split, crack, loss, small, overlay, responses = det
    assert overlay.shape == damaged.shape and responses.shape[0] == 4
    inter = float((loss * g_loss).sum()) / max(float(g_loss.sum()), 1)
    assert inter > 0.95  # the loss MASK matches the ground truth losses

    add = torch.zeros(1, 256, 384)
    add[0, 10:30, 10:40] = 1  # a user-painted region
    dmap2, cand, _ = _res(M["AtelierDamageMapEdit"]().edit(dmap, damaged, True, True, False, False, True,
                                                            add_mask=add))
    assert bool(cand[0, 20, 20] > 0)
    with pytest.raises(ValueError, match="add_mask has size"):
        M["AtelierDamageMapEdit"]().edit(dmap, damaged, True, True, False, False, True,
                                         add_mask=torch.zeros(1, 10, 10))

    tab, fill_mask, labels_prev, summary = _res(M["AtelierRegionTable"]().table(damaged, dmap2, ctx, 500.0, 100.0))
    assert "regions" in summary and fill_mask.sum() > 0
    user_rows = [r for r in tab["rows"] if r["class"] == "user"]
    # 600 px painted; pixels already detected as another class keep that class
    assert len(user_rows) == 1 and 580 <= user_rows[0]["area_px"] <= 600
    assert user_rows[0]["area_mm2"] == pytest.approx(user_rows[0]["area_px"] * (25.4 / 600) ** 2, abs=1e-6)
    assert user_rows[0]["fill_decision"] == "fill"  # a user-painted region is never gated away

    filled, used, tab2 = _res(M["AtelierRestorationFill"]().fill(damaged, fill_mask, "harmonic", 1, regions=tab))
    keep = used[0] == 0
    assert torch.equal(filled[0][keep], damaged[0][keep])  # outside the mask, bit-identical
    # an external "inpainting model" output composited strictly inside the mask, flagged generative
    fx, usedx, tabx = _res(M["AtelierRestorationFill"]().fill(damaged, fill_mask, "external", 1, external_fill=clean,
                                                              regions=tab, external_model="test-model"))
    assert torch.equal(fx[0][usedx[0] == 0], damaged[0][usedx[0] == 0])
    assert torch.equal(fx[0][usedx[0] > 0], clean[0][usedx[0] > 0])
    assert any(r["generative"] for r in tabx["rows"])

    tab3, heatmap, qs = _res(M["AtelierFillQA"]().qa(damaged, filled, tab2, 3.0))
    assert "flagged" in qs and all("dE00_edge" in r for r in tab3["rows"])
    n8, nde, pal, pj = _res(M["AtelierColourCount"]().count(filled, used, 1.0))
    assert n8 >= nde > 0 and json.loads(pj)["count_rgb8"] == n8

    lay, lprev, sim, white = _res(M["AtelierBilayerSeparate"]().separate(filled, damaged, used, ctx, "same_pattern",
                                                                         0.0, 0.0, True))
    assert torch.equal(white[0] > 0, used[0] > 0)
    laid, pprev, fid = _res(M["AtelierPrintLayout"]().layout(lay, ctx, 10.0, 3.0, 0.1, True))
    assert len(json.loads(fid)) == 5
    folder, files = M["AtelierPrintExport"]().export(laid, ctx, "job/print")
    assert str(dirs / "output") in folder and len(json.loads(files)) == 3
    with pytest.raises(ValueError, match="leaves the output folder"):
        M["AtelierPrintExport"]().export(laid, ctx, "../../outside")

    resid, rms, mx, wj = _res(M["AtelierRegistrationCheck"]().check(damaged, damaged, ctx, "translation"))
    assert rms < 1.0

    prompt = {"1": {"class_type": "AtelierSyntheticDamage", "inputs": {"seed": 1}}}
    extra = {"workflow": {"nodes": [{"id": 1, "type": "AtelierSyntheticDamage"}]}}
    rec = M["AtelierRestorationRecord"]().record(damaged, filled, used, tab3, laid, ctx, "job/record", 1.0,
                                                 damage_map=dmap2, prompt=prompt, extra_pnginfo=extra)
    folder = rec["result"][0]
    import pathlib
    f = pathlib.Path(folder)
    man = json.loads((f / "manifest.json").read_text())
    wf = json.loads((f / "workflow.json").read_text())
    assert wf["prompt"] == prompt and wf["workflow"] == extra["workflow"]
    assert man["stats"]["n_regions"] == len(tab3["rows"]) and man["stats"]["count_rgb8"] == n8
    assert (f / "index.html").is_file() and (f / "layer_white.tif").is_file()
    assert rec["ui"]["images"]
    from restoration.scanio import sha256_file
    for e in man["files"]:
        assert sha256_file(f / e["path"]) == e["sha256"]
