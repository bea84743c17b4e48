"""Bad and odd inputs of the restoration CLI and core: nothing to fill, Ctrl-C, malformed records,
options checked first, no empty folders, errors on their own line, JPEG flagged, never overwrite;
and the module structure (no import circle)."""
import ast
import json

import numpy as np
import pytest

from _restoration_util import one_thread
from _testenv import REPO
from restoration.fileio import StagedFolder
from restoration.scanio import to_uint, write_tiff


@pytest.fixture(autouse=True)
def _threads():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    from restoration.synth import SynthConfig, make_sample
    d = tmp_path_factory.mktemp("scan")
    img, _, _, info = make_sample(SynthConfig(height=192, width=256), 2)
    return write_tiff(d, "scan.tif", to_uint(img, 16), 600), info


def _main(*args):
    from restoration.__main__ import main
    return main([*map(str, args), "--threads", "0"])


def _lines(err):
    """stderr as the terminal shows it: lines split at newlines, each ending at its last carriage return."""
    return [ln.split("\r")[-1] for ln in err.split("\n") if ln.split("\r")[-1]]


def test_import_graph_of_the_core_has_no_circle():
    """Every import between restoration modules (module level or inside functions) points one way."""
    mods = {p.stem for p in (REPO / "restoration").glob("*.py")}
    graph = {}
    for m in mods:
        deps = set()
        for node in ast.walk(ast.parse((REPO / "restoration" / f"{m}.py").read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    deps.add(node.module.split(".")[0])
                else:
                    deps |= {a.name for a in node.names}
        graph[m] = deps & mods - {m}
    state = {}

    def visit(m, path):
        if state.get(m) == 1:
            raise AssertionError("import circle: " + " -> ".join(path + [m]))
        if state.get(m) == 2:
            return
        state[m] = 1
        for d in sorted(graph[m]):
            visit(d, path + [m])
        state[m] = 2
    for m in sorted(mods):
        visit(m, [])
    assert "printfile" not in graph["scanio"] and "layers" not in graph["printfile"]


def test_staged_folder_is_complete_or_absent_and_numbered_never_overwrites(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with StagedFolder(tmp_path / "rec") as t:
            (t / "layer_white.tif").write_bytes(b"half of a job")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []  # nothing new, no hidden leftovers
    finals = []
    for i in range(3):
        s = StagedFolder(tmp_path / "job" / "print", numbered=True)
        with s as t:
            (t / "f.txt").write_text(str(i))
        finals.append(s.final)
    assert [f.name for f in finals] == ["print_00001", "print_00002", "print_00003"]
    assert [(f / "f.txt").read_text() for f in finals] == ["0", "1", "2"]
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "manifest.json").write_text("{}")
    with pytest.raises(ValueError, match="already exists and is not empty"):
        with StagedFolder(tmp_path / "full"):
            pass


def test_nothing_to_fill_is_a_normal_result(tmp_path, capsys):
    img = np.full((128, 160, 3), 0.42, np.float32)
    write_tiff(tmp_path, "grey.tif", to_uint(img, 16), 600)
    # the ground colour far from the grey: whether 'auto' calls a uniform grey a loss is detection's business
    assert _main(tmp_path / "grey.tif", "--out", tmp_path / "o", "--ground", "0.9,0.1,0.1") == 0
    summary = json.loads(capsys.readouterr().out)
    m = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert summary["n_regions"] == 0 and m["stats"]["total_fill_area_mm2"] == 0 and m["stats"]["count_rgb8"] == 0
    assert (tmp_path / "o" / "layer_white.tif").is_file() and (tmp_path / "o" / "index.html").is_file()


def test_ctrl_c_exits_130_with_one_line_and_leaves_nothing_new(scan, tmp_path, capsys, monkeypatch):
    """Interrupted after the print files were written (before previews and record): before this change the
    print files stayed behind without manifest and index."""
    import restoration.outputs as outputs

    def interrupt(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(outputs, "write_previews", interrupt)
    assert _main(scan[0], "--out", tmp_path / "o") == 130
    err = capsys.readouterr().err
    lines = _lines(err)
    assert lines[-1].startswith("interrupted:") and sum("interrupted" in ln for ln in lines) == 1
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_errors_start_on_their_own_line(scan, tmp_path, capsys, monkeypatch):
    import restoration.outputs as outputs

    def boom(*a, **k):
        raise ValueError("disk went away")
    monkeypatch.setattr(outputs, "write_previews", boom)
    assert _main(scan[0], "--out", tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert "%" in err  # the progress bar was on screen
    assert _lines(err)[-1] == "error: disk went away"
    assert not (tmp_path / "o").exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("opts,words", [
    (["--fill-classes", "loss,dirt"], "dirt"),
    (["--white-amount-mm", "-0.1"], "amount_mm (--white-amount-mm): -0.1 is out of range; use a number in [0, 5]"),
    (["--ground", "0.8,0.7"], "ground_color (--ground)='0.8,0.7'"),
    (["--ground", "0.8,0.7,1.5"], "0..1"),
    (["--tile", "16"], "tile (--tile): 16 is below 64"),
])
def test_options_are_checked_before_anything_runs(scan, tmp_path, capsys, monkeypatch, opts, words):
    import restoration.stages as stages
    import restoration.scanio as scanio
    called = []
    monkeypatch.setattr(stages, "detect", lambda *a, **k: called.append("detect"))
    monkeypatch.setattr(scanio, "read_scan", lambda *a, **k: called.append("read"))
    assert _main(scan[0], "--out", tmp_path / "o", *opts) == 2
    err = capsys.readouterr().err
    assert words in err and len(_lines(err)) == 1, err
    assert not called and not (tmp_path / "o").exists()  # a rejected input leaves no empty folder


def test_rejected_scan_leaves_no_output_folder(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not an image")
    assert _main(tmp_path / "notes.txt", "--dpi", "600", "--out", tmp_path / "o") == 2
    assert "not a readable image" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_an_existing_record_is_never_overwritten(scan, tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / "manifest.json").write_text('{"keep": true}')
    assert _main(scan[0], "--out", out) == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "manifest.json").read_text() == '{"keep": true}'


def test_jpeg_is_read_and_flagged_lossy(scan, tmp_path, capsys):
    from PIL import Image
    from restoration.scanio import read_scan
    img, _, _ = read_scan(scan[0])
    Image.fromarray(to_uint(img, 8)).save(tmp_path / "scan.jpg", quality=95, dpi=(600, 600))
    _, dpi, info = read_scan(tmp_path / "scan.jpg")
    assert info["lossy"] is True and info["format"] == "JPEG" and dpi == pytest.approx(600)
    assert _main(tmp_path / "scan.jpg", "--out", tmp_path / "o", "--ground", "0.86,0.80,0.68") == 0
    summary = json.loads(capsys.readouterr().out)
    m = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert m["capture"]["lossy"] is True and m["capture"]["format"] == "JPEG" and "lossy" in summary["warning"]
    _, _, tinfo = read_scan(scan[0])
    assert tinfo["lossy"] is False


def test_negative_white_amount_is_refused_by_the_core():
    from restoration.layers import separate
    z = np.zeros((16, 16, 3), np.float32)
    with pytest.raises(ValueError, match=r"amount_mm \(--white-amount-mm\): -0.2 is out of range"):
        separate(z, z, np.zeros((16, 16), bool), 600, "spread", -0.2)


@pytest.fixture(scope="module")
def record(scan, tmp_path_factory):
    out = tmp_path_factory.mktemp("rec") / "r"
    assert _main(scan[0], "--out", out, "--ground", "0.86,0.80,0.68") == 0
    return out


def _bad_record(record, tmp_path, edit):
    import shutil
    dst = tmp_path / "bad"
    shutil.copytree(record, dst)
    m = json.loads((dst / "manifest.json").read_text())
    text = edit(m)
    (dst / "manifest.json").write_text(text if isinstance(text, str) else json.dumps(m))
    return dst


@pytest.mark.parametrize("edit,words", [
    (lambda m: m.update(files=[]), "lists no files"),
    (lambda m: m.pop("files"), "lists no files"),
    (lambda m: m.update(files="layer_white.tif"), "lists no files"),
    (lambda m: m.update(files=[{"path": "x.tif"}]), "files[0] must be an object with path, role and sha256"),
    (lambda m: m.update(processing=None), "section 'processing'"),
    (lambda m: m["processing"].update(config=[1, 2]), "processing.config"),
    (lambda m: m["processing"]["config"].update(fill_method=7), "method (--fill): 7 is not allowed"),
    (lambda m: m["processing"]["config"].update(bogus=1), "unknown keys ['bogus']"),
    (lambda m: "{not json", "not valid JSON"),
    (lambda m: "[1, 2]", "must hold an object"),
    (lambda m: m.update(files=[{"path": "a", "role": "preview", "sha256": "0"}]), "none of the files a replay compares"),
])
def test_replay_of_a_malformed_record_fails_with_one_line(record, tmp_path, capsys, edit, words):
    bad = _bad_record(record, tmp_path, edit)
    capsys.readouterr()
    assert _main("--replay", bad, "--out", tmp_path / "again") == 2
    captured = capsys.readouterr()
    lines = _lines(captured.err)
    assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], captured.err
    assert "Traceback" not in captured.err and not (tmp_path / "again").exists()


def test_cli_choices_come_from_the_core():
    from restoration.__main__ import build_parser
    from restoration.fill import METHODS
    from restoration.layers import WHITE_MODES
    acts = {a.dest: a for a in build_parser()._actions}
    assert tuple(acts["fill"].choices) == tuple(m for m in METHODS if m != "external")
    assert tuple(acts["white_mode"].choices) == WHITE_MODES


def test_real_ctrl_c_on_the_command_line(tmp_path):
    """SIGINT to a running ``python -m restoration`` once its progress bar shows: exit 130, one line on a
    line of its own, and neither the output folder nor a hidden staging folder is left."""
    import os
    import signal
    import subprocess
    import sys
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    p = subprocess.Popen([sys.executable, "-m", "restoration", "--sample", "--size", "1024x1024", "--out",
                          str(tmp_path / "o")], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen = b""
    while b"%" not in seen:  # the job is running (the sample is generated, detection started)
        ch = os.read(p.stderr.fileno(), 4096)  # unbuffered: communicate() below reads the same descriptor
        assert ch, "the CLI ended before its progress bar showed"
        seen += ch
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=600)
    err = (seen + err).decode()
    assert p.returncode == 130, err[-2000:]
    lines = _lines(err)
    assert lines[-1].startswith("interrupted:") and "Traceback" not in err, repr(err[-300:])
    assert list(tmp_path.iterdir()) == []
