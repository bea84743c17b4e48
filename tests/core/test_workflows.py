"""Example workflows and node definitions, checked without a host.

Definitions come from ``tests/data/node_defs.json`` (``scripts/dump_node_defs.py``; the host tier
checks that this snapshot matches a live server).
"""
import ast
import copy
import json
import pathlib

import pytest

from _testenv import REPO
from _workflows import (load_defs, validate, to_api, all_inputs, spec_opts, spec_type, TEMPLATE_TITLES,
                        template_path, overlaps, node_rect, VIEW_MARGIN)

WF_DIR = REPO / "example_workflows"
WORKFLOWS = sorted(WF_DIR.glob("*.json"))
EXPECTED = {"magcache_wan21_t2v", "magcache_calibrate", "magcache_compare", "nag_cfg1_fewstep",
            "nag_magcache", "dloral_video_upscale", "restoration_scan_to_print", "restoration_sample",
            "magcache_flux", "magcache_qwen_image", "magcache_hunyuan_video", "magcache_wan22_a14b",
            "nag_flux_cfg1", "nag_qwen_image", "nag_hunyuan_magcache", "nag_wan22"}
assert set(TEMPLATE_TITLES) == EXPECTED


@pytest.fixture(scope="module")
def defs():
    return load_defs()


def _load(name):
    return json.loads(template_path(name).read_text())


def _pack_node_ids():
    """Node ids declared in nodes/*.py, read with ast (no import, no host): ``node_id="..."`` of V3
    schemas, keys of ``NODE_CLASS_MAPPINGS`` dict literals, and V1 classes (``INPUT_TYPES``, no
    ``define_schema``) named ``Atelier...`` (a comprehension keyed by ``__name__``). The host tier
    (tests/host/test_node_defs_host.py) checks the real registration; this is the no-host check."""
    ids = set()
    for f in sorted((REPO / "nodes").glob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.keyword) and node.arg == "node_id" and isinstance(node.value, ast.Constant):
                ids.add(node.value.value)
            elif isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "NODE_CLASS_MAPPINGS"
                                                      for t in node.targets) and isinstance(node.value, ast.Dict):
                ids |= {k.value for k in node.value.keys if isinstance(k, ast.Constant)}
            elif isinstance(node, ast.ClassDef) and node.name.startswith("Atelier"):
                methods = {b.name for b in node.body if isinstance(b, ast.FunctionDef)}
                if "INPUT_TYPES" in methods and "define_schema" not in methods:
                    ids.add(node.name)
    return ids


def test_expected_workflows_present():
    names = {p.stem for p in WORKFLOWS}
    titles = set(TEMPLATE_TITLES.values())
    assert names == titles, f"missing {sorted(titles - names)}, unexpected {sorted(names - titles)}"


def test_every_template_has_a_thumbnail():
    """``<name>.jpg`` beside ``<name>.json``: what both frontends load as a custom template's picture."""
    from PIL import Image
    jpgs = {p.stem for p in WF_DIR.glob("*.jpg")}
    assert jpgs == {p.stem for p in WORKFLOWS}, (sorted(jpgs ^ {p.stem for p in WORKFLOWS}))
    assert not [p.name for p in WF_DIR.iterdir() if p.suffix not in (".json", ".jpg")]
    for name in jpgs:
        path = WF_DIR / f"{name}.jpg"
        with Image.open(path) as im:
            assert im.format == "JPEG" and im.size == (512, 512), (name, im.format, im.size)
            assert max(hi - lo for lo, hi in im.convert("RGB").getextrema()) > 100, name  # not blank
        assert path.stat().st_size < 100_000, name


def test_titles_are_readable():
    for slug, title in TEMPLATE_TITLES.items():
        assert "_" not in title and title[0].isupper() and len(title) <= 60, title
        assert all(c.isalnum() or c in " -." for c in title), title   # safe in a URL path and a file name


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_layout_no_overlap_and_opens_below_the_top_bars(path):
    """Nodes (title bars and notes included) keep 20 canvas px apart at their saved sizes, and the
    saved view puts the top-left of the graph VIEW_MARGIN screen px inside the canvas. The browser
    test checks the sizes the frontends really give the nodes."""
    wf = json.loads(path.read_text())
    by_id = {n["id"]: n["type"] for n in wf["nodes"]}
    bad = [(by_id[a], by_id[b]) for a, b in overlaps(wf, gap=20)]
    assert not bad, f"overlapping nodes: {bad}"
    ds = wf["extra"]["ds"]
    top = min((node_rect(n)[1] + ds["offset"][1]) * ds["scale"] for n in wf["nodes"])
    left = min((node_rect(n)[0] + ds["offset"][0]) * ds["scale"] for n in wf["nodes"])
    assert (round(left, 6), round(top, 6)) == VIEW_MARGIN


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_workflow_validates(path, defs):
    wf = json.loads(path.read_text())
    assert wf.get("nodes") and wf.get("links"), "empty workflow"
    errs = validate(wf, defs)
    assert errs == [], "\n".join(errs)


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_workflow_is_annotated(path, defs):
    """Every workflow has a note that says where the model files go, and uses an Atelier node."""
    wf = json.loads(path.read_text())
    notes = [n["widgets_values"][0] for n in wf["nodes"] if n["type"] in ("Note", "MarkdownNote")]
    assert notes and any(f"ComfyUI/{d}/" in t for t in notes for d in ("models", "input", "output")), \
        "no note saying where the files go"
    assert any(n["type"].startswith("Atelier") for n in wf["nodes"])
    api = to_api(wf, defs)
    assert all(v["class_type"] in defs for v in api.values())


def test_snapshot_covers_every_pack_node(defs):
    ids = _pack_node_ids()
    assert ids, "found no node ids in nodes/*.py"
    snap = {k for k in defs if k.startswith("Atelier")}
    missing, extra = sorted(ids - snap), sorted(snap - ids)
    assert not missing and not extra, (f"tests/data/node_defs.json is stale: lacks {missing}, has {extra} that "
                                       "the pack does not declare; regenerate it (scripts/dump_node_defs.py)")


def test_snapshot_diff_sees_every_kind_of_change(defs):
    """The comparison the host tier uses reports a removed, an added and a changed node."""
    import sys
    sys.path.insert(0, str(REPO / "scripts"))
    from dump_node_defs import diff_defs
    assert diff_defs(defs, copy.deepcopy(defs)) == []
    some = sorted(k for k in defs if k.startswith("Atelier"))
    for victim in some:                         # every pack node counts, whatever its technique
        less = {k: v for k, v in defs.items() if k != victim}
        assert diff_defs(defs, less) == [f"{victim}: in the snapshot but the pack has no such node"]
        assert diff_defs(less, defs) == [f"{victim}: pack node not in the snapshot"]
    changed = copy.deepcopy(defs)
    node = changed[some[0]]
    section, inputs = next(iter(node["input"].items()))
    name = next(iter(inputs))
    inputs[name] = ["INT", {"default": 12345}]
    node["display_name"] += " (renamed)"
    got = diff_defs(defs, changed)
    assert len(got) == 2 and any(f".input.{section}.{name}:" in g for g in got) and \
        any(".display_name:" in g for g in got), got


def test_every_input_has_tooltip_and_categories_are_consistent(defs):
    problems = []
    atelier = {k: v for k, v in defs.items() if k.startswith("Atelier")}
    assert atelier
    for key, d in atelier.items():
        if not d.get("category", "").startswith("Atelier/"):
            problems.append(f"{key}: category {d.get('category')!r} is not Atelier/...")
        if not d.get("display_name", "").startswith("Atelier "):
            problems.append(f"{key}: display name {d.get('display_name')!r} does not start with 'Atelier '")
        if not d.get("description"):
            problems.append(f"{key}: no DESCRIPTION")
        for name, spec, _ in all_inputs(d):
            if not spec_opts(spec).get("tooltip"):
                problems.append(f"{key}.{name} ({spec_type(spec)}): no tooltip")
    assert not problems, "\n".join(problems)


def test_api_conversion_maps_widgets(defs):
    """Widget values land on the right inputs, the seed's control value is skipped, links become refs."""
    api = to_api(_load("magcache_wan21_t2v"), defs)
    ks = next(v for v in api.values() if v["class_type"] == "KSampler")["inputs"]
    assert (ks["seed"], ks["steps"], ks["cfg"], ks["sampler_name"], ks["scheduler"], ks["denoise"]) == \
        (42, 30, 6.0, "uni_pc", "simple", 1.0)
    mc_id = next(k for k, v in api.items() if v["class_type"] == "AtelierMagCacheWan")
    assert ks["model"] == [mc_id, 0]
    mc = api[mc_id]["inputs"]
    assert (mc["thresh"], mc["k"], mc["retention"], mc["preview_steps"]) == (0.12, 2, 0.2, 30)


# -- the validator catches broken workflows --------------------------------------------------------
def _node(wf, type_):
    return next(n for n in wf["nodes"] if n["type"] == type_)


def _break_unknown_type(wf, defs):
    _node(wf, "AtelierMagCacheWan")["type"] = "AtelierMagCacheWanTypo"


def _break_unlinked_required(wf, defs):
    ks = _node(wf, "KSampler")
    i = next(i for i in ks["inputs"] if i["name"] == "positive")
    wf["links"] = [link for link in wf["links"] if link[0] != i["link"]]
    i["link"] = None


def _break_out_of_bounds(wf, defs):
    mc = _node(wf, "AtelierMagCacheWan")
    names = [n for n, s, _ in all_inputs(defs["AtelierMagCacheWan"]) if spec_type(s) in ("INT", "FLOAT", "COMBO",
                                                                                           "STRING", "BOOLEAN")]
    mc["widgets_values"][names.index("thresh")] = 5.0   # max is 1.0


def _break_link_type(wf, defs):
    link = next(lk for lk in wf["links"] if lk[5] == "LATENT")
    vae = _node(wf, "VAELoader")
    link[1], link[2] = vae["id"], 0                      # a VAE into a LATENT input
    link[5] = "VAE"


def _break_combo(wf, defs):
    _node(wf, "KSampler")["widgets_values"][3] = "no_such_sampler"


def _break_widget_count(wf, defs):
    _node(wf, "EmptyHunyuanLatentVideo")["widgets_values"].pop()


BREAKERS = [_break_unknown_type, _break_unlinked_required, _break_out_of_bounds, _break_link_type,
            _break_combo, _break_widget_count]


@pytest.mark.parametrize("breaker", BREAKERS, ids=[b.__name__[7:] for b in BREAKERS])
def test_validator_fails_on_broken_workflow(breaker, defs):
    wf = _load("magcache_wan21_t2v")
    assert validate(wf, defs) == []
    broken = copy.deepcopy(wf)
    breaker(broken, defs)
    errs = validate(broken, defs)
    assert errs, f"{breaker.__name__} was not detected"


@pytest.mark.parametrize("slug,family,preset", [("magcache_flux", "flux", "auto"),
                                                ("magcache_qwen_image", "qwen_image", "auto"),
                                                ("magcache_hunyuan_video", "hunyuan_video", "auto"),
                                                ("magcache_wan22_a14b", "wan", "wan2.2_t2v_A14B")])
def test_magcache_family_workflows_convert_to_api(slug, family, preset, defs):
    """The family workflows (not run by the e2e server: it has tiny Wan models only) convert to API prompts
    whose MagCache nodes feed a sampler, with the widgets the node takes."""
    wf = json.loads(template_path(slug).read_text())
    api = to_api(wf, defs)
    mcs = {k: v for k, v in api.items() if v["class_type"] == "AtelierMagCacheWan"}
    assert mcs and all(v["inputs"]["preset"] == preset and "target_speedup" in v["inputs"] for v in mcs.values())
    samplers = [v for v in api.values() if v["class_type"] in ("KSampler", "KSamplerAdvanced")]
    assert {v["inputs"]["model"][0] for v in samplers} == set(mcs)
    for v in mcs.values():
        steps = {s["inputs"]["steps"] for s in samplers}
        assert v["inputs"]["preview_steps"] in steps
