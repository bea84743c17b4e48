"""One constructor for the settings of a DLoRAL run (``dloral.settings`` / ``dloral.tiling.TilingConfig``),
the CLI built from it, and the core package free of any host import."""
import ast
import dataclasses
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch

from dloral import upscale_video
from dloral.settings import JOB_SETTINGS, SETTINGS, UpscaleSettings, check_settings
from dloral.tiling import LATENT_PX, TilingConfig, vae_overlap_for
import _dloral_models as dm
from _testenv import REPO

HOST_MODULES = {"comfy", "comfy_api", "comfy_extras", "folder_paths", "server", "nodes", "execution"}


def _imports(path):
    """Top-level names imported by a module, relative imports resolved against the pack root."""
    tree = ast.parse(path.read_text(), str(path))
    pkg = path.relative_to(REPO).parent.parts          # ("dloral",)
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                out.add(node.module.split(".")[0])
                continue
            base = list(pkg[:len(pkg) - node.level + 1])
            mod = base + (node.module.split(".") if node.module else [])
            out.add(mod[0] if mod else "")
            if not node.module and not base:           # from .. import x: the pack root's x
                out.update(a.name for a in node.names)
    return out


def test_core_package_imports_no_host_and_no_nodes():
    files = sorted((REPO / "dloral").rglob("*.py"))
    assert len(files) >= 10
    for f in files:
        bad = _imports(f) & HOST_MODULES
        assert not bad, f"{f.relative_to(REPO)} imports {sorted(bad)}"
    # the scan sees relative imports: a module doing `from ..nodes import x` would be caught
    probe = REPO / "dloral" / "_probe_tmp.py"
    try:
        probe.write_text("from ..nodes import dloral_nodes\nimport folder_paths\n")
        assert _imports(probe) >= {"nodes", "folder_paths"}
    finally:
        probe.unlink()
    # and at run time: importing every module of the package (the CLI included) loads nothing of the host
    code = ("import sys, dloral, dloral.__main__, dloral.settings, dloral.checkpoint; "
            f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {sorted(HOST_MODULES)!r}); "
            "assert not bad, bad; print('ok')")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def test_tiling_from_settings_converts_pixels_and_derives_the_vae_overlap():
    t = TilingConfig.from_settings(768, 256, 0)
    assert (t.tile, t.overlap, t.vae_tile, t.vae_overlap) == (96, 32, 0, 0)
    # the VAE overlap: a quarter of the tile, at most 16 latent px (the rule once only in the node)
    for vt, ov in ((8, 2), (16, 4), (20, 5), (64, 16), (512, 16)):
        assert TilingConfig.from_settings(64, 0, vt).vae_overlap == ov == vae_overlap_for(vt)
    assert TilingConfig.from_settings(0, 256, 0).tile == 0          # never tile: the overlap is irrelevant


@pytest.mark.parametrize("kw,msg", [
    (dict(tile_size=100), "tile_size: 100 is not a multiple of 8"),
    (dict(tile_overlap=20), "tile_overlap: 20 is not a multiple of 8"),
    (dict(tile_size=32, tile_overlap=0), "tile_size: 32 is below the smallest tile, 64 px"),
    (dict(tile_size=256, tile_overlap=256), "tile_overlap: 256 must be smaller than tile_size (256)"),
    (dict(vae_tile=4), "vae_tile: 4 is below the smallest VAE tile, 8"),
    (dict(tile_size=-8), "tile_size: -8 is not allowed"),
])
def test_tiling_errors_name_the_input_the_value_and_what_is_allowed(kw, msg):
    args = dict(tile_size=768, tile_overlap=256, vae_tile=0) | kw
    with pytest.raises(ValueError) as e:
        TilingConfig.from_settings(**args)
    assert msg in str(e.value)
    with pytest.raises(ValueError):   # the same check through the settings constructor
        UpscaleSettings(**{k: v for k, v in args.items()})


def test_every_setting_checked_with_both_names():
    assert UpscaleSettings().config() == UpscaleSettings(**{k: s.default for k, s in SETTINGS.items()}).config()
    bad = {"window": 0, "process_size": 100, "color_fix": "hist", "precision": "half", "seed": -1,
           "sample_posterior": "yes", "vae_tile": 1024}
    for k, v in bad.items():
        with pytest.raises(ValueError, match=rf"{k} \({SETTINGS[k].flag}\): {v!r}" if isinstance(v, str)
                           else rf"{k} \({SETTINGS[k].flag}\): {v}"):
            UpscaleSettings(**{k: v})
    assert check_settings(tile_size=768, tile_overlap=256) is None
    assert "must be smaller" in check_settings(tile_size=256, tile_overlap=256)
    # an input linked from another node (None before the run) is not judged, nor the rules involving it
    assert check_settings(tile_size=None, tile_overlap=512, vae_tile=0) is None
    assert "not a multiple of 8" in check_settings(tile_size=None, tile_overlap=12)


def test_config_is_what_the_pipeline_gets():
    c = UpscaleSettings(tile_size=512, tile_overlap=128, vae_tile=16, window=3, color_fix="none",
                        process_size=64).config()
    assert (c.tile, c.overlap, c.vae_tile, c.vae_overlap, c.window, c.color_fix, c.process_size) == \
        (64, 16, 16, 4, 3, "none", 64)


def _png_folder(d, n, h=16, w=16):
    from dloral.__main__ import _save
    d.mkdir()
    for i in range(n):
        _save(dm.frames(n, h, w)[i], d / f"f{i:03d}.png")
    return d


def test_cli_upscale_runs_the_settings_config_through_an_injected_loader(tmp_path, monkeypatch, capsys):
    """``main(argv, loader=...)``: the CLI's frames are exactly ``upscale_video`` on the frames it read with
    ``UpscaleSettings(...).config()`` of its flags (float frames compared before PNG rounding); --vae-tile 16
    (refused by the CLI before, accepted by the node) works, with the node's VAE overlap."""
    import dloral.__main__ as cli
    from dloral import save_weights
    wpath = tmp_path / "w.safetensors"
    save_weights(dm.weights(), str(wpath))
    frames_dir = _png_folder(tmp_path / "in", 3, h=24, w=40)   # latent 12x20: tiled by both tilings
    seen = {}

    def loader(req):
        seen["req"] = req
        return dm.models()

    got = []
    real_save = cli._save
    monkeypatch.setattr(cli, "_save", lambda f, p: (got.append(f.clone()), real_save(f, p)))
    argv = ["upscale", str(frames_dir), "--out", str(tmp_path / "out"), "--weights", str(wpath),
            "--checkpoint", str(wpath), "--process-size", "64", "--window", "2", "--tile", "64",
            "--overlap", "32", "--vae-tile", "16", "--color-fix", "wavelet", "--quiet"]
    assert cli.main(argv, loader=loader) == 0, capsys.readouterr().err
    st = seen["req"].settings
    assert st == UpscaleSettings(tile_size=64, tile_overlap=32, vae_tile=16, color_fix="wavelet",
                                 process_size=64, window=2)
    assert st.config().vae_overlap == 4 and seen["req"].comfyui is None
    want = list(upscale_video(cli._frames(str(frames_dir)), dm.models(), st.config()))
    assert len(got) == len(want) == 3
    for a, b in zip(got, want):
        assert torch.equal(a, b)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"frame_{i:05d}.png" for i in range(3)]
    # the same flags but another VAE overlap would give other frames: the comparison above can fail
    other = list(upscale_video(cli._frames(str(frames_dir)), dm.models(),
                               dataclasses.replace(st.config(), vae_overlap=8)))
    assert max((a - b).abs().max().item() for a, b in zip(other, want)) > 1e-4


def test_cli_flags_are_the_settings_table():
    import dloral.__main__ as cli
    seen = {}

    def fake(a, loader):
        seen["a"] = a
    parser_argv = ["upscale", "x", "--out", "o", "--weights", "w", "--checkpoint", "c", "--comfyui", "d"]
    orig = cli.cmd_upscale
    try:
        cli.cmd_upscale = fake
        assert cli.main(parser_argv, loader=lambda request: None) == 0   # upscale needs a loader to start
    finally:
        cli.cmd_upscale = orig
    a = seen["a"]
    for name, s in SETTINGS.items():
        assert getattr(a, name) == s.default, name
    assert cli.settings_from_args(a) == UpscaleSettings()
    assert a.chunk == JOB_SETTINGS["chunk"].default == 0


def test_convert_precision_is_one_record_fp32_by_default(tmp_path, capsys):
    """The CLI's --precision and the Convert node's widget come from CONVERT_SETTINGS; fp32 by default."""
    import dloral.__main__ as cli
    from dloral.settings import CONVERT_SETTINGS
    assert CONVERT_SETTINGS["precision"].default == "fp32"
    seen = {}
    orig = cli.cmd_convert
    try:
        cli.cmd_convert = lambda a, loader: seen.setdefault("a", a)
        assert cli.main(["convert", "m.pkl", "--out", "o.safetensors"]) == 0
        assert seen["a"].precision == "fp32"
        assert cli.main(["convert", "m.pkl", "--out", "o.safetensors", "--precision", "fp8"]) == 2
    finally:
        cli.cmd_convert = orig
    assert "choose from 'fp32', 'fp16'" in capsys.readouterr().err
