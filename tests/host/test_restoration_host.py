"""Restoration nodes (V3 schema) chained as in a ComfyUI graph, with the host imported.

* the whole chain: synthetic painting -> detect -> edit (user mask) -> regions -> fill (harmonic and
  external) -> QA -> count -> layers -> layout -> export -> registration -> record (with the workflow);
* parity: the nodes and the CLI (``python -m restoration``, i.e. :func:`restoration.pipeline.run`) given
  the same scan and settings write byte-identical print files, maps and region tables;
* Load Scan confined to the input folder (no link leading out listed or read), fingerprinted by content;
  numbered output folders; errors of Print Export and Restoration Record relative to the output folder;
  cross-field validation; a scan with nothing to fill.
"""
import hashlib
import json
import pathlib

import numpy as np
import pytest
import torch


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture()
def dirs(comfy_dir, tmp_path):
    import folder_paths
    old = (folder_paths.get_output_directory(), folder_paths.get_temp_directory(),
           folder_paths.get_input_directory())
    for d in ("output", "temp", "input"):
        (tmp_path / d).mkdir()
    folder_paths.set_output_directory(str(tmp_path / "output"))
    folder_paths.set_temp_directory(str(tmp_path / "temp"))
    folder_paths.set_input_directory(str(tmp_path / "input"))
    yield tmp_path
    folder_paths.set_output_directory(old[0])
    folder_paths.set_temp_directory(old[1])
    folder_paths.set_input_directory(old[2])


@pytest.fixture()
def M(pack):
    return pack.nodes.NODE_CLASS_MAPPINGS


def run(cls, _hidden=None, **kw):
    """A node's execute as the host calls it: on a class clone with the hidden inputs set (v0.3.64 takes the
    hidden dict, v0.8.0 a ``v3_data`` dict holding it)."""
    import inspect
    first = next(iter(inspect.signature(cls.PREPARE_CLASS_CLONE).parameters))
    hidden = dict(_hidden or {})
    return cls.PREPARE_CLASS_CLONE({"hidden_inputs": hidden} if first == "v3_data" else hidden).execute(**kw)


RESTO = ["AtelierRestorationLoadScan", "AtelierRestorationContext", "AtelierSyntheticDamage", "AtelierDamageDetect",
         "AtelierDamageMapEdit", "AtelierRegionTable", "AtelierRestorationFill", "AtelierFillQA", "AtelierColourCount",
         "AtelierBilayerSeparate", "AtelierPrintLayout", "AtelierPrintExport", "AtelierRegistrationCheck",
         "AtelierRestorationRecord"]


def test_all_14_nodes_are_v3_with_tooltips_everywhere(M):
    from comfy_api.latest import io
    for k in RESTO:
        c = M[k]
        assert issubclass(c, io.ComfyNode), k
        s = c.GET_SCHEMA()
        assert s.node_id == k and s.category == "Atelier/Restoration" and s.description
        assert all(i.tooltip for i in s.inputs), (k, [i.id for i in s.inputs if not i.tooltip])
        assert s.outputs and all(o.tooltip for o in s.outputs), (k, [o.id for o in s.outputs if not o.tooltip])
        assert c.INPUT_TYPES()  # the V1 view the host serves to the frontend
    from pathlib import Path
    wf = json.loads((Path(__file__).parents[2] / "example_workflows" / "Restoration - scan to print layers and record.json").read_text())
    # saved workflows keep their input names in order (widgets_values are positional)
    for n in wf["nodes"]:
        if n["type"] in M:
            names = [i.id for i in M[n["type"]].GET_SCHEMA().inputs]
            for inp in n.get("inputs", []):
                assert inp["name"] in names, (n["type"], inp["name"])


def test_node_chain_writes_record(M, host, dirs):
    out = run(M["AtelierSyntheticDamage"], seed=1, width=384, height=256, dpi=600.0)
    assert out.ui["images"], "previews shown on the node"
    damaged, clean, g_split, g_crack, g_loss, g_small, ctx, ground = out.args
    assert damaged.shape == (1, 256, 384, 3) and g_loss.shape == (1, 256, 384)

    det = run(M["AtelierDamageDetect"], image=damaged, ctx=ctx, ground_color=ground, crack_low=6.0, crack_high=12.0,
              light_low=10.0, light_high=15.0, ground_seed_de=7.0, ground_grow_de=14.0, loss_contrast_de=8.0,
              split_min_length_mm=15.0, tile=0).args
    dmap, all_d, split, crack, loss, small, overlay, responses = det
    assert overlay.shape == damaged.shape and responses.shape[0] == 4
    inter = float((loss * g_loss).sum()) / max(float(g_loss.sum()), 1)
    assert inter > 0.95  # the loss MASK matches the ground truth losses

    add = torch.zeros(1, 256, 384)
    add[0, 10:30, 10:40] = 1  # a user-painted region
    edit = dict(image=damaged, fill_loss=True, fill_small_defect=True, fill_craquelure=False,
                fill_support_split=False, fill_user=True)
    dmap2, cand, _ = run(M["AtelierDamageMapEdit"], damage_map=dmap, add_mask=add, **edit).args
    assert bool(cand[0, 20, 20] > 0) and dmap2.user_add is not None and dmap.user_add is None  # not mutated
    with pytest.raises(ValueError, match="add_mask has size"):
        run(M["AtelierDamageMapEdit"], damage_map=dmap, add_mask=torch.zeros(1, 10, 10), **edit)

    tab, fill_mask, labels_prev, summary = run(M["AtelierRegionTable"], image=damaged, damage_map=dmap2, ctx=ctx,
                                               viewing_distance_mm=500.0, registration_tol_um=100.0).args
    assert "regions" in summary and fill_mask.sum() > 0
    user_rows = [r for r in tab.rows if r["class"] == "user"]
    # 600 px painted; pixels already detected as another class keep that class
    assert len(user_rows) == 1 and 580 <= user_rows[0]["area_px"] <= 600
    assert user_rows[0]["area_mm2"] == pytest.approx(user_rows[0]["area_px"] * (25.4 / 600) ** 2, abs=1e-6)
    assert user_rows[0]["fill_decision"] == "fill"  # a user-painted region is never gated away

    filled, used, tab2 = run(M["AtelierRestorationFill"], image=damaged, mask=fill_mask, method="harmonic", grow_px=1,
                             regions=tab).args
    keep = used[0] == 0
    assert torch.equal(filled[0][keep], damaged[0][keep])  # outside the mask, bit-identical
    # an external "inpainting model" output composited strictly inside the mask, flagged generative
    fx, usedx, tabx = run(M["AtelierRestorationFill"], image=damaged, mask=fill_mask, method="external", grow_px=1,
                          external_fill=clean, regions=tab, external_model="test-model").args
    assert torch.equal(fx[0][usedx[0] == 0], damaged[0][usedx[0] == 0])
    assert torch.equal(fx[0][usedx[0] > 0], clean[0][usedx[0] > 0])
    assert any(r["generative"] for r in tabx.rows) and not any("generative" in r for r in tab.rows)

    tab3, heatmap, qs = run(M["AtelierFillQA"], original=damaged, filled=filled, regions=tab2, edge_de=3.0).args
    assert "flagged" in qs and all("dE00_edge" in r for r in tab3.rows)
    n8, nde, pal, pj = run(M["AtelierColourCount"], filled=filled, mask=used, q=1.0).args
    assert n8 >= nde > 0 and json.loads(pj)["count_rgb8"] == n8

    lay, lprev, sim, white = run(M["AtelierBilayerSeparate"], filled=filled, original=damaged, mask=used, ctx=ctx,
                                 white_mode="same_pattern", amount_mm=0.0, min_feature_mm=0.0,
                                 white_on_black=True).args
    assert torch.equal(white[0] > 0, used[0] > 0)
    laid, pprev, fid = run(M["AtelierPrintLayout"], layers=lay, ctx=ctx, margin_mm=10.0, arm_mm=3.0, line_mm=0.1,
                           mirror=True).args
    assert len(json.loads(fid)) == 5
    with pytest.raises(ValueError, match="already went through Print Layout"):
        run(M["AtelierPrintLayout"], layers=laid, ctx=ctx, margin_mm=10.0, arm_mm=3.0, line_mm=0.1, mirror=True)
    folders = [run(M["AtelierPrintExport"], layers=laid, ctx=ctx, subfolder="job/print").args for _ in range(2)]
    # a new numbered folder per run, as SaveImage counts files; the first run is not overwritten
    assert [pathlib.Path(f).name for f, _ in folders] == ["print_00001", "print_00002"]
    for f, files in folders:
        assert str(dirs / "output") in f and len(json.loads(files)) == 3
    assert json.loads(folders[0][1]) == json.loads(folders[1][1])
    assert not [p for p in (dirs / "output" / "job").iterdir() if p.name.startswith(".")]  # no staging left
    assert M["AtelierPrintExport"].validate_inputs(subfolder="../../outside") != True  # noqa: E712
    with pytest.raises(ValueError, match="leaves the output folder"):
        run(M["AtelierPrintExport"], layers=laid, ctx=ctx, subfolder="../../outside")
    with pytest.raises(ValueError, match="must come from Print Layout"):
        run(M["AtelierPrintExport"], layers=lay, ctx=ctx, subfolder="job/print")

    resid, rms, mx, wj = run(M["AtelierRegistrationCheck"], capture=damaged, original=damaged, ctx=ctx,
                             motion="translation").args
    assert rms < 1.0

    prompt = {"1": {"class_type": "AtelierSyntheticDamage", "inputs": {"seed": 1}}}
    extra = {"workflow": {"nodes": [{"id": 1, "type": "AtelierSyntheticDamage"}]}}
    rec_kw = dict(original=damaged, filled=filled, used_mask=used, regions=tab3, layers=laid, ctx=ctx,
                  subfolder="job/record", count_q=1.0, damage_map=dmap2)
    rec = run(M["AtelierRestorationRecord"], _hidden={"PROMPT": prompt, "EXTRA_PNGINFO": extra}, **rec_kw)
    f = pathlib.Path(rec.args[0])
    assert f.name == "record_00001"
    man = json.loads((f / "manifest.json").read_text())
    wf = json.loads((f / "workflow.json").read_text())
    assert wf["prompt"] == prompt and wf["workflow"] == extra["workflow"]
    assert man["stats"]["n_regions"] == len(tab3.rows) and man["stats"]["count_rgb8"] == n8
    assert man["stats"]["count_dE1"] == nde  # the one palette summary
    assert man["processing"]["user_mask"] == {"add": True, "remove": False}
    assert set(man["stats"]["wallclock_s"]) >= {"detect", "regions", "fill", "qa", "export", "previews", "record"}
    assert (f / "index.html").is_file() and (f / "layer_white.tif").is_file() and (f / "user_mask_add.png").is_file()
    assert rec.ui["images"] and all(u["subfolder"] == "job/record_00001" for u in rec.ui["images"])
    from restoration.scanio import sha256_file
    for e in man["files"]:
        assert sha256_file(f / e["path"]) == e["sha256"]
    rec2 = run(M["AtelierRestorationRecord"], **rec_kw)
    assert pathlib.Path(rec2.args[0]).name == "record_00002" and (f / "manifest.json").is_file()


def _scan_file(folder, seed=5, h=256, w=320):
    from restoration.synth import SynthConfig, make_sample
    from restoration.scanio import to_uint, write_tiff
    img, _, gt, info = make_sample(SynthConfig(height=h, width=w), seed)
    return write_tiff(folder, "scan.tif", to_uint(img, 16), 600), gt, info


PARITY_ROLES = ("color_layer", "white_layer", "print_pdf", "fill_full", "labels", "classes", "user_mask_add")


def _fill_to_record(M, img, mask, tab, ctx, dmap):
    """The node chain after the Region Table, on the default settings the CLI uses too: Fill (the default method) ->
    Fill QA -> Bilayer Separate -> Print Layout -> Restoration Record. Returns (manifest, record folder,
    laid-out layers)."""
    from restoration.settings import SETTINGS
    filled, used, tab = run(M["AtelierRestorationFill"], image=img, mask=mask, method=SETTINGS["method"].default,
                            grow_px=1,
                            regions=tab).args
    tab = run(M["AtelierFillQA"], original=img, filled=filled, regions=tab, edge_de=3.0).args[0]
    lay = run(M["AtelierBilayerSeparate"], filled=filled, original=img, mask=used, ctx=ctx, white_mode="same_pattern",
              amount_mm=0.0, min_feature_mm=0.0, white_on_black=False).args[0]
    laid = run(M["AtelierPrintLayout"], layers=lay, ctx=ctx, margin_mm=10.0, arm_mm=3.0, line_mm=0.1,
               mirror=True).args[0]
    folder = pathlib.Path(run(M["AtelierRestorationRecord"], original=img, filled=filled, used_mask=used, regions=tab,
                              layers=laid, ctx=ctx, subfolder="rec", count_q=1.0, damage_map=dmap).args[0])
    return json.loads((folder / "manifest.json").read_text()), folder, laid


def test_nodes_write_the_same_files_as_the_cli(M, host, dirs):
    """node == CLI == core: one scan, the same settings (defaults, the ground colour given, a user mask)
    through the node chain and through ``python -m restoration`` give byte-identical print files, fill,
    label and class maps, and the same region table and counts."""
    from restoration.__main__ import main
    from restoration.scanio import write_png
    scan, gt, info = _scan_file(dirs / "input")
    ground = ",".join(f"{v:.3f}" for v in info["ground_rgb"])
    add = np.zeros(gt.shape, np.uint8)
    add[40:60, 50:90] = 255
    write_png(dirs, "add.png", add)
    assert main([str(scan), "--out", str(dirs / "cli"), "--ground", ground, "--mask-add", str(dirs / "add.png"),
                 "--threads", "0"]) == 0
    cli = json.loads((dirs / "cli" / "manifest.json").read_text())

    img, ctx = run(M["AtelierRestorationLoadScan"], path="scan.tif", dpi=0.0).args
    d = json.loads(json.dumps(cli["processing"]["config"]["detect"]))
    dmap = run(M["AtelierDamageDetect"], image=img, ctx=ctx, ground_color=ground, tile=1024,
               **{k: d[k] for k in ("crack_low", "crack_high", "light_low", "light_high", "ground_seed_de",
                                    "ground_grow_de", "loss_contrast_de", "split_min_length_mm")}).args[0]
    dmap, _, _ = run(M["AtelierDamageMapEdit"], damage_map=dmap, image=img, fill_loss=True, fill_small_defect=True,
                     fill_craquelure=False, fill_support_split=False, fill_user=True,
                     add_mask=torch.from_numpy(add > 0).float()[None]).args
    tab, mask, _, _ = run(M["AtelierRegionTable"], image=img, damage_map=dmap, ctx=ctx, viewing_distance_mm=500.0,
                          registration_tol_um=100.0).args
    node, folder, laid = _fill_to_record(M, img, mask, tab, ctx, dmap)
    a = {f["role"]: f["sha256"] for f in cli["files"]}
    b = {f["role"]: f["sha256"] for f in node["files"]}
    for role in PARITY_ROLES:
        assert a[role] == b[role], role
    for name in ("regions.json", "regions.csv"):
        assert (dirs / "cli" / name).read_bytes() == (folder / name).read_bytes(), name
    for k in ("n_regions", "n_regions_filled", "n_regions_skipped_by_reason", "total_fill_area_mm2", "count_rgb8",
              "count_dE1"):
        assert cli["stats"][k] == node["stats"][k], k
    for k in ("print", "detection"):
        assert cli[k] == node[k], k
    # the record keeps the scan's name and hash, not the server path
    assert node["capture"]["file"] == "scan.tif" and node["capture"]["path"] is None
    assert node["capture"]["sha256"] == cli["capture"]["sha256"] == hashlib.sha256(scan.read_bytes()).hexdigest()
    # and the export node writes the same print files again
    files = json.loads(run(M["AtelierPrintExport"], layers=laid, ctx=ctx, subfolder="p").args[1])
    assert {f["role"]: f["sha256"] for f in files} == {r: a[r] for r in ("color_layer", "white_layer", "print_pdf")}


def test_load_scan_is_confined_to_the_input_folder(M, host, dirs):
    LS = M["AtelierRestorationLoadScan"]
    scan, _, _ = _scan_file(dirs / "input")
    (dirs / "outside.png").write_bytes(scan.read_bytes())  # exists, but outside the input folder
    assert LS.validate_inputs(path="scan.tif") is True
    msgs = {}
    for bad in ("../outside.png", str(dirs / "outside.png"), "../missing.png", "/etc/passwd", "missing.tif", ""):
        msg = LS.validate_inputs(path=bad)
        assert isinstance(msg, str) and "is not a file of the input folder" in msg, bad
        msgs[bad] = msg.replace(repr(bad), "NAME")
        with pytest.raises(ValueError, match="is not a file of the input folder"):
            run(LS, path=bad, dpi=600.0)
    # the same words whether or not a path exists elsewhere: no probe of the server's files
    assert len(set(msgs.values())) == 1, msgs
    # fingerprint by content: a changed file reruns the graph, an untouched one does not
    f1 = LS.fingerprint_inputs(path="scan.tif", dpi=0.0)
    assert LS.fingerprint_inputs(path="scan.tif", dpi=0.0) == f1
    img, ctx = run(LS, path="scan.tif", dpi=0.0).args
    assert "path" not in ctx.scan and ctx.scan["name"] == "scan.tif" and ctx.scan["lossy"] is False
    _scan_file(dirs / "input", seed=6)  # same name, other content
    assert LS.fingerprint_inputs(path="scan.tif", dpi=0.0) != f1
    img2, ctx2 = run(LS, path="scan.tif", dpi=0.0).args
    assert ctx2.scan["sha256"] != ctx.scan["sha256"] and not torch.equal(img, img2)
    # an unreadable file of the input folder: the error names the file, not the server's folders
    (dirs / "input" / "broken.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(ValueError) as e:
        run(LS, path="broken.tif", dpi=600.0)
    assert "broken.tif" in str(e.value) and str(dirs) not in str(e.value)
    # the upload button and the input folder's files in the list, like LoadImage
    info = LS.INPUT_TYPES()["required"]["path"]
    options = info[0] if isinstance(info[0], list) else info[1]["options"]  # V1 list or V3 "COMBO" form
    assert info[1].get("image_upload") is True and "scan.tif" in options


def test_cross_field_validation_uses_the_core_rules(M, host, dirs):
    D = M["AtelierDamageDetect"]
    assert D.validate_inputs(ground_color="auto", tile=1024) is True
    assert D.validate_inputs(ground_color="0.86, 0.80,0.68", tile=0) is True
    for bad in ("0.5,0.5", "red", "1.2,0.5,0.5"):
        msg = D.validate_inputs(ground_color=bad, tile=1024)
        assert isinstance(msg, str) and "ground_color" in msg and repr(bad) in msg and "0..1" in msg, msg
    assert "tile" in D.validate_inputs(ground_color="auto", tile=32)
    assert "crack_low" not in str(D.validate_inputs(crack_low=6.0, crack_high=12.0))
    assert "threshold" in D.validate_inputs(crack_low=13.0, crack_high=12.0)
    S = M["AtelierBilayerSeparate"]
    assert S.validate_inputs(white_mode="choke", amount_mm=0.2, min_feature_mm=0.0) is True
    assert "amount_mm" in S.validate_inputs(white_mode="choke", amount_mm=-0.1, min_feature_mm=0.0)
    assert "subfolder" in M["AtelierRestorationRecord"].validate_inputs(subfolder="/etc")


def test_nothing_to_fill_is_a_normal_record(M, host, dirs):
    """A clean, uniform scan: no regions, empty layers (only the fiducials), the record written. (The ground
    colour is given far from the grey: whether 'auto' calls a uniform grey a loss is detection's business.)"""
    img = torch.full((1, 128, 160, 3), 0.42)
    ctx = run(M["AtelierRestorationContext"], image=img, dpi=600.0).args[0]
    dmap = run(M["AtelierDamageDetect"], image=img, ctx=ctx, ground_color="0.9,0.1,0.1", crack_low=6.0, crack_high=12.0,
               light_low=10.0, light_high=15.0, ground_seed_de=7.0, ground_grow_de=14.0, loss_contrast_de=8.0,
               split_min_length_mm=50.0, tile=1024).args[0]
    tab, mask, _, summary = run(M["AtelierRegionTable"], image=img, damage_map=dmap, ctx=ctx,
                                viewing_distance_mm=500.0, registration_tol_um=100.0).args
    from restoration.settings import SETTINGS
    filled, used, tab = run(M["AtelierRestorationFill"], image=img, mask=mask, method=SETTINGS["method"].default,
                            grow_px=1,
                            regions=tab).args
    tab = run(M["AtelierFillQA"], original=img, filled=filled, regions=tab, edge_de=3.0).args[0]
    n8, nde, _, _ = run(M["AtelierColourCount"], filled=filled, mask=used, q=1.0).args
    lay = run(M["AtelierBilayerSeparate"], filled=filled, original=img, mask=used, ctx=ctx, white_mode="same_pattern",
              amount_mm=0.0, min_feature_mm=0.0, white_on_black=False).args[0]
    laid = run(M["AtelierPrintLayout"], layers=lay, ctx=ctx, margin_mm=10.0, arm_mm=3.0, line_mm=0.1,
               mirror=True).args[0]
    folder = pathlib.Path(run(M["AtelierRestorationRecord"], original=img, filled=filled, used_mask=used, regions=tab,
                              layers=laid, ctx=ctx, subfolder="rec", count_q=1.0).args[0])
    man = json.loads((folder / "manifest.json").read_text())
    assert man["stats"]["n_regions"] == 0 and man["stats"]["total_fill_area_mm2"] == 0 and n8 == 0 and nde == 0
    assert torch.equal(filled, img)


def test_output_names_are_the_saved_ones_on_every_host(M):
    """Output names as saved UI workflows and the snapshot know them (v0.3.64 would otherwise name an
    output by its type, v0.8.0 by its id)."""
    from _workflows import load_defs
    defs = load_defs()
    for k in RESTO:
        assert list(M[k].GET_NODE_INFO_V1()["output_name"]) == defs[k]["output_name"], k


def test_layout_marks_must_fit_in_the_margin(M):
    L = M["AtelierPrintLayout"]
    assert L.validate_inputs(margin_mm=10.0, arm_mm=3.0, line_mm=0.1) is True
    msg = L.validate_inputs(margin_mm=2.0, arm_mm=3.0, line_mm=0.1)
    assert isinstance(msg, str) and "arm_mm=3 reaches into the image" in msg and "margin_mm=2" in msg


def test_review_accept_list_node_equals_cli(M, host, dirs):
    """Review before print through the nodes: by default the Region Table lists large/unsure regions for review
    and leaves them out of fill_mask; the same accept/reject choice given to the node (ids and a MASK) and to
    the CLI (--accept/--reject) gives the same decisions and a byte-identical fill (fill_full.tif)."""
    from restoration.__main__ import main
    from restoration.detect import DetectConfig
    scan, _, _ = _scan_file(dirs / "input")
    img, ctx = run(M["AtelierRestorationLoadScan"], path="scan.tif", dpi=0.0).args
    d = DetectConfig()
    dmap = run(M["AtelierDamageDetect"], image=img, ctx=ctx, ground_color="auto", tile=1024,
               **{k: getattr(d, k) for k in ("crack_low", "crack_high", "light_low", "light_high", "ground_seed_de",
                                             "ground_grow_de", "loss_contrast_de", "split_min_length_mm")}).args[0]
    rt = dict(image=img, damage_map=dmap, ctx=ctx, viewing_distance_mm=500.0, registration_tol_um=100.0)
    tab0, mask0, _, summary0 = run(M["AtelierRegionTable"], **rt).args
    wait = tab0.review["for_review"]
    assert len(wait) >= 2 and "waiting for review" in summary0 and str(wait[0]) in summary0
    assert not bool(mask0[0][torch.from_numpy(tab0.footprint("review"))].any())  # not in fill_mask by default
    a, b = wait[0], wait[1]
    keep = next(r["id"] for r in tab0.rows if r["fill_decision"] == "fill")
    m = torch.from_numpy(tab0.labels == b).float()[None]
    assert M["AtelierRegionTable"].validate_inputs(accept_ids=f"{a}", reject_ids=f"{keep}") is True
    msg = M["AtelierRegionTable"].validate_inputs(accept_ids="3,x")
    assert isinstance(msg, str) and "accept_ids: 'x' is not a region id" in msg
    tab, mask, _, _ = run(M["AtelierRegionTable"], accept_ids=f"{a}", reject_ids=f"{keep}", accept_mask=m, **rt).args
    assert tab.review["accepted"] == sorted([a, b]) and tab.review["rejected"] == [keep]
    node, folder, _ = _fill_to_record(M, img, mask, tab, ctx, dmap)
    assert main([str(scan), "--out", str(dirs / "cli"), "--accept", f"{a},{b}", "--reject", f"{keep}",
                 "--threads", "0"]) == 0
    cli = json.loads((dirs / "cli" / "manifest.json").read_text())
    fa = {f["role"]: f["sha256"] for f in cli["files"]}
    fb = {f["role"]: f["sha256"] for f in node["files"]}
    for role in ("fill_full", "color_layer", "white_layer", "labels"):
        assert fa[role] == fb[role], role
    assert cli["review"] == node["review"] and node["stats"]["n_regions_for_review"] == len(wait) - 2
    dec = {x["id"]: x for x in node["review"]["regions"]}
    assert dec[a]["rule"] == dec[b]["rule"] == "accepted" and dec[keep]["rule"] == "rejected"
    assert (dirs / "cli" / "regions.json").read_bytes() == (folder / "regions.json").read_bytes()


@pytest.mark.parametrize("node,name,value", [
    ("AtelierDamageDetect", "crack_low", 500.0), ("AtelierDamageDetect", "split_min_length_mm", -5.0),
    ("AtelierRegionTable", "max_fill_share", 5.0), ("AtelierPrintLayout", "margin_mm", 1000.0),
    ("AtelierRestorationContext", "dpi", 10.0), ("AtelierRestorationLoadScan", "dpi", 20.0),
    ("AtelierColourCount", "q", 0.0), ("AtelierRestorationRecord", "count_q", 25.0),
])
def test_validate_inputs_refuses_the_widgets_bounds_naming_the_input(M, node, name, value):
    """The host skips its own min/max check for every input validate_inputs names (execution.py), so the
    node's validate_inputs must refuse what the widget declares out of range: the record's message, which
    names the input, the value and the range. The same node accepts the widget's default."""
    from restoration.settings import SETTINGS
    cls = M[node]
    msg = cls.validate_inputs(**{name: value})
    assert isinstance(msg, str) and msg.startswith(f"{name} (--") and repr(value) in msg and "out of range" in msg, msg
    if name in SETTINGS and node != "AtelierRestorationLoadScan":
        assert cls.validate_inputs(**{name: SETTINGS[name].default}) is True


def _uniform_chain(M):
    """A small uniform picture through the nodes up to Print Layout: (img, filled, used, table, laid, ctx)."""
    img = torch.full((1, 96, 128, 3), 0.42)
    ctx = run(M["AtelierRestorationContext"], image=img, dpi=600.0).args[0]
    dmap = run(M["AtelierDamageDetect"], image=img, ctx=ctx, ground_color="0.9,0.1,0.1", crack_low=6.0, crack_high=12.0,
               light_low=10.0, light_high=15.0, ground_seed_de=7.0, ground_grow_de=14.0, loss_contrast_de=8.0,
               split_min_length_mm=50.0, tile=1024).args[0]
    tab, mask, _, _ = run(M["AtelierRegionTable"], image=img, damage_map=dmap, ctx=ctx, viewing_distance_mm=500.0,
                          registration_tol_um=100.0).args
    from restoration.settings import SETTINGS
    filled, used, tab = run(M["AtelierRestorationFill"], image=img, mask=mask, method=SETTINGS["method"].default,
                            grow_px=1,
                            regions=tab).args
    lay = run(M["AtelierBilayerSeparate"], filled=filled, original=img, mask=used, ctx=ctx, white_mode="same_pattern",
              amount_mm=0.0, min_feature_mm=0.0, white_on_black=False).args[0]
    laid = run(M["AtelierPrintLayout"], layers=lay, ctx=ctx, margin_mm=10.0, arm_mm=3.0, line_mm=0.1,
               mirror=True).args[0]
    return img, filled, used, tab, laid, ctx


def test_export_and_record_errors_never_show_the_servers_folders(M, host, dirs):
    """A subfolder that cannot be made (a file is in the way): the error of Print Export and Restoration Record
    names ``output/...``, not the server's absolute folders; so does the validation of a subfolder leaving it."""
    import os
    img, filled, used, tab, laid, ctx = _uniform_chain(M)
    (dirs / "output" / "blocker").write_text("a file, not a folder")
    server = (str(dirs), os.path.realpath(dirs))
    calls = {"AtelierPrintExport": dict(layers=laid, ctx=ctx, subfolder="blocker/print"),
             "AtelierRestorationRecord": dict(original=img, filled=filled, used_mask=used, regions=tab, layers=laid,
                                              ctx=ctx, subfolder="blocker/rec", count_q=1.0)}
    for node, kw in calls.items():
        with pytest.raises(ValueError) as e:
            run(M[node], **kw)
        msg = str(e.value)
        assert not any(s in msg for s in server) and "'/" not in msg, (node, msg)
        assert "output/blocker" in msg, (node, msg)
        v = M[node].validate_inputs(subfolder="../elsewhere")
        assert isinstance(v, str) and "subfolder" in v and not any(s in v for s in server), (node, v)
    assert sorted(p.name for p in (dirs / "output").iterdir()) == ["blocker"]  # nothing half-written


def test_load_scan_offers_no_link_leading_out_of_the_input_folder(M, host, dirs):
    import os
    LS = M["AtelierRestorationLoadScan"]
    _scan_file(dirs / "input")
    (dirs / "outside").mkdir()
    _scan_file(dirs / "outside", seed=6)
    os.symlink(dirs / "outside" / "scan.tif", dirs / "input" / "leads_out.tif")
    os.symlink(dirs / "input" / "scan.tif", dirs / "input" / "stays_in.tif")
    info = LS.INPUT_TYPES()["required"]["path"]
    options = info[0] if isinstance(info[0], list) else info[1]["options"]
    assert "leads_out.tif" not in options and {"scan.tif", "stays_in.tif"} <= set(options), options
    msg = LS.validate_inputs(path="leads_out.tif")
    assert isinstance(msg, str) and "'leads_out.tif' is not a file of the input folder" in msg
    assert str(dirs) not in msg
    with pytest.raises(ValueError, match="is not a file of the input folder"):
        run(LS, path="leads_out.tif", dpi=600.0)
    assert LS.validate_inputs(path="stays_in.tif") is True
