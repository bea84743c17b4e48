"""Bad and odd inputs of the restoration CLI and core: nothing to fill, Ctrl-C (at start-up, during the job,
right after the record is complete), malformed records (every manifest field checked by type and value),
options checked first, no empty folders (parents included), errors on their own line, JPEG flagged (summary
and HTML), never overwrite, two runs into one folder (the second refused; a stale lock explained), Load Scan's
list without links leading out; and the module structure (no import circle)."""
import ast
import json

import numpy as np
import pytest

from _testenv import REPO
from restoration.fileio import StagedFolder
from restoration.scanio import to_uint, write_tiff


pytestmark = pytest.mark.usefixtures("single_thread")


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
    page = (tmp_path / "o" / "index.html").read_text()
    assert 0 < page.find("Lossy input") < page.find("<h2>Summary")  # said where a reader starts
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
    (lambda m: m.update(files=[{"path": "x.tif"}]), "manifest field 'files[0].role': null is not a role"),
    (lambda m: m.update(files=["x.tif"]), "manifest field 'files[0]': 'x.tif' is not an object"),
    (lambda m: m["files"][0].update(path="../../outside.tif"), "manifest field 'files[0].path': '../../outside.tif' leaves"),
    (lambda m: m.update(processing=None), "section 'processing'"),
    (lambda m: m["processing"].update(config=[1, 2]), "processing.config"),
    (lambda m: m["processing"]["config"].update(fill_method=7), "manifest field 'processing.config.fill_method': 7 is not allowed; choose one of"),
    (lambda m: m["processing"]["config"].update(bogus=1), "manifest field 'processing.config.bogus': unknown in this version"),
    (lambda m: "{not json", "not valid JSON"),
    (lambda m: "[1, 2]", "must hold an object"),
    (lambda m: m.update(files=[{"path": "a", "role": "preview", "sha256": "0" * 64}]),
     "none of the files a replay compares"),
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


def _default_sigint():
    """In the child: SIGINT back to its default. A shell that starts a command in the background (nohup, &)
    ignores SIGINT in it, the child inherits that, and Python then installs no KeyboardInterrupt handler."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_real_ctrl_c_on_the_command_line(tmp_path):
    """SIGINT to a running ``python -m restoration`` once its progress bar shows: exit 130, one line on a
    line of its own, and neither the output folder nor a hidden staging folder is left."""
    import os
    import signal
    import subprocess
    import sys
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    p = subprocess.Popen([sys.executable, "-m", "restoration", "--sample", "--size", "1024x1024", "--out",
                          str(tmp_path / "o")], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         preexec_fn=_default_sigint)
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


# ------------------------------------------------------------------ issue 21 item 5: the last odd inputs
def _edit_config(path, value):
    """An edit of ``processing.config`` at ``path`` (dotted, e.g. ``detect.ground_rgb``)."""
    def edit(m):
        d = m["processing"]["config"]
        *head, last = path.split(".")
        for k in head:
            d = d[k]
        d[last] = value
    return edit


def _edit(section, key, value):
    return lambda m: m[section].update({key: value})


@pytest.mark.parametrize("edit,field,words", [
    (_edit("capture", "path", 5), "capture.path", "5 is not a text"),
    (_edit("capture", "file", ["scan.tif"]), "capture.file", "is not a text"),
    (_edit("capture", "sha256", 12), "capture.sha256", "12 is not a SHA-256"),
    (_edit("capture", "ppi", "600"), "capture.ppi", "'600' is not a number"),
    (_edit("capture", "ppi", 5.0), "capture.ppi", "5.0 is out of range"),
    (_edit_config("detect.ground_rgb", "red"), "processing.config.detect.ground_rgb", "'red' is not a colour"),
    (_edit_config("detect.ground_rgb", []), "processing.config.detect.ground_rgb", "[] is not a colour"),
    (_edit_config("detect.ground_rgb", [0.5, 0.5, 2]), "processing.config.detect.ground_rgb[2]", "2 is out of range"),
    (_edit_config("grow_px", None), "processing.config.grow_px", "null is missing"),
    (_edit_config("detect.crack_min_px", None), "processing.config.detect.crack_min_px", "null is missing"),
    (_edit_config("margin_mm", [10.0]), "processing.config.margin_mm", "[10.0] is not a number"),
    (_edit_config("detect.crack_low", [6.0]), "processing.config.detect.crack_low", "[6.0] is not a number"),
    (_edit_config("detect.crack_radii_mm", []), "processing.config.detect.crack_radii_mm", "[] is an empty list"),
    (_edit_config("detect.crack_radii_mm", [0.04, "x"]), "processing.config.detect.crack_radii_mm[1]", "not a number"),
    (_edit_config("detect.ground_hue_deg", [15.0]), "processing.config.detect.ground_hue_deg", "2 belong here"),
    (_edit_config("fill_classes", "loss"), "processing.config.fill_classes", "'loss' is not a list of class names"),
    (_edit_config("review.fill_classes", ["dirt"]), "processing.config.review.fill_classes", "unknown ['dirt']"),
    (_edit_config("tile", 12.5), "processing.config.tile", "12.5 is not an integer"),
    (_edit_config("tile", 1024.5), "processing.config.tile", "1024.5 is not an integer"),
    (_edit_config("detect.tile", 32), "processing.config.detect.tile", "32 is below 64"),
    (_edit_config("regions.ring_px", 2.5), "processing.config.regions.ring_px", "2.5 is not an integer"),
    (_edit_config("mirror", "yes"), "processing.config.mirror", "'yes' is not allowed"),
    (_edit_config("write_pdf", 1), "processing.config.write_pdf", "1 is not true or false"),
    (_edit_config("review", [1]), "processing.config.review", "is not an object"),
    (_edit_config("detect.crack_high", 3.0), "processing.config", "crack"),  # crossed thresholds: the whole config
    (lambda m: m["processing"].update(user_mask={"add": "yes"}), "processing.user_mask.add", "not true or false"),
    (lambda m: m["review"].update(accepted=[1.5]), "review.accepted[0]", "1.5 is not a region id"),
    (lambda m: m["review"].update(rejected=None), "review.rejected", "null is not a list of region ids"),
    (lambda m: m["files"][0].update(sha256=None), "files[0].sha256", "null is not a SHA-256"),
    (lambda m: m["files"][1].update(path=3), "files[1].path", "3 is not a file name"),
    (lambda m: m.update(generative={}), "generative", "is not a list"),
])
def test_replay_checks_every_manifest_field_before_any_work(record, tmp_path, capsys, monkeypatch, edit, field,
                                                            words):
    """A manifest written by a real run, one field made wrong: exit 2, one line naming the field (its path in
    the manifest) and the value, and nothing read, detected or created."""
    import restoration.pipeline as pipeline
    import restoration.scanio as scanio
    bad = _bad_record(record, tmp_path, edit)
    called = []
    monkeypatch.setattr(scanio, "read_scan", lambda *a, **k: called.append("read"))
    monkeypatch.setattr(pipeline, "run", lambda *a, **k: called.append("run"))
    capsys.readouterr()
    assert _main("--replay", bad, "--out", tmp_path / "again" / "r") == 2
    captured = capsys.readouterr()
    lines = _lines(captured.err)
    assert len(lines) == 1 and lines[0].startswith(f"error: manifest field '{field}': "), captured.err
    assert words in lines[0], lines[0]
    assert "Traceback" not in captured.err and not called and not (tmp_path / "again").exists()


def _python(code, *args, **kw):
    """``python -c code args`` with the repo on the path; the completed process (stdout, stderr as text)."""
    import os
    import subprocess
    import sys
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600, **kw)


_PATCHED_MAIN = """
import sys
{patch}
from restoration.__main__ import main
sys.exit(main(sys.argv[1:] + ["--threads", "1"]))
"""
_INTERRUPTS = {
    "setting up torch": "import torch\ndef stop(n): raise KeyboardInterrupt\ntorch.set_num_threads = stop",
    "reading the scan": "import restoration.scanio as s\ndef stop(*a, **k): raise KeyboardInterrupt\ns.read_scan = stop",
}


@pytest.mark.parametrize("point", sorted(_INTERRUPTS))
def test_ctrl_c_during_start_up_is_one_line(scan, tmp_path, point):
    r = _python(_PATCHED_MAIN.format(patch=_INTERRUPTS[point]), scan[0], "--out", tmp_path / "a" / "o")
    assert r.returncode == 130, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and _lines(r.stderr) == [f"interrupted: nothing new was written to "
                                                                f"{tmp_path / 'a' / 'o'}"], r.stderr[-2000:]
    assert list(tmp_path.iterdir()) == []  # no output folder, no parent, no lock


def test_ctrl_c_right_after_the_record_is_complete(scan, tmp_path):
    """Interrupted the moment the staged folder was moved into place: the record is complete, and the one
    line says so (it used to say that nothing was written)."""
    patch = ("import restoration.fileio as f\norig = f.StagedFolder._move\n"
             "def move(self):\n    orig(self)\n    raise KeyboardInterrupt\nf.StagedFolder._move = move")
    out = tmp_path / "o"
    r = _python(_PATCHED_MAIN.format(patch=patch), scan[0], "--out", out, "--ground", "0.86,0.80,0.68")
    assert r.returncode == 130, r.stderr[-2000:]
    lines = _lines(r.stderr)
    assert "Traceback" not in r.stderr and lines[-1] == (f"interrupted: the record in {out} is complete (only the "
                                                         "summary was cut short)"), r.stderr[-2000:]
    assert sum(ln.startswith(("interrupted", "error")) for ln in lines) == 1
    from restoration.fileio import sha256_file
    m = json.loads((out / "manifest.json").read_text())
    assert (out / "index.html").is_file() and m["files"]
    assert all(sha256_file(out / f["path"]) == f["sha256"] for f in m["files"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]  # no staging folder, no lock


_WAITING_RUN = """
import os, sys, time
import restoration.scanio as s
orig = s.read_scan
def wait_then_read(*a, **k):
    open(sys.argv[1], "w").close()          # the claim is held: tell the test
    while not os.path.exists(sys.argv[2]):  # until the test lets it go on
        time.sleep(0.05)
    return orig(*a, **k)
s.read_scan = wait_then_read
from restoration.__main__ import main
sys.exit(main(sys.argv[3:] + ["--threads", "1"]))
"""


def test_two_jobs_into_the_same_new_folder_the_second_is_refused_before_it_works(scan, tmp_path):
    import os
    import subprocess
    import sys
    import time
    out, started, go = tmp_path / "jobs" / "o", tmp_path / "started", tmp_path / "go"
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    args = [scan[0], "--out", out, "--ground", "0.86,0.80,0.68"]
    first = subprocess.Popen([sys.executable, "-c", _WAITING_RUN, started, go, *map(str, args)], cwd=REPO, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        t0 = time.time()
        while not started.exists():  # the first holds the folder and is reading its scan
            assert first.poll() is None, first.communicate()[1][-2000:]
            assert time.time() - t0 < 300
            time.sleep(0.05)
        second = subprocess.Popen([sys.executable, "-m", "restoration", *map(str, args), "--threads", "1"], cwd=REPO,
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        s_out, s_err = second.communicate(timeout=300)  # the first still waits: the second ends on its own
        assert first.poll() is None
        assert second.returncode == 2, s_err[-2000:]
        assert _lines(s_err) == [f"error: output folder {str(out)!r} is being written by another run (pid "
                                 f"{first.pid}); wait for it to finish or choose another folder"], s_err[-2000:]
        assert "%" not in s_err and not s_out  # refused before it worked: no progress bar, no summary
    finally:
        go.touch()
        f_out, f_err = first.communicate(timeout=600)
    assert first.returncode == 0, f_err[-2000:]
    assert json.loads((out / "manifest.json").read_text())["files"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["o"]  # the lock is released


def test_a_stale_lock_of_a_killed_run_is_explained(scan, tmp_path, capsys):
    import subprocess
    import sys
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / ".o.lock").write_text(f"{dead.pid}\n")
    assert _main(scan[0], "--out", tmp_path / "o") == 2
    line = _lines(capsys.readouterr().err)
    assert len(line) == 1 and f"has a lock left by a run that was killed (pid {dead.pid} no longer runs)" in line[0]
    assert f"remove {str(tmp_path / '.o.lock')!r}" in line[0] and ".o.*.partial" in line[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".o.lock"]  # nothing taken over, nothing made


@pytest.mark.parametrize("problem", ["bad scan", "unknown region id", "mask of another size"])
def test_a_rejected_input_leaves_no_empty_parent_folders(scan, tmp_path, capsys, problem):
    (tmp_path / "notes.txt").write_text("not an image")
    from restoration.scanio import write_png
    write_png(tmp_path, "small_mask.png", np.zeros((20, 20), np.uint8))
    args = {"bad scan": [tmp_path / "notes.txt", "--dpi", "600"],
            "unknown region id": [scan[0], "--accept", "99999"],
            "mask of another size": [scan[0], "--mask-add", tmp_path / "small_mask.png"]}[problem]
    assert _main(*args, "--out", tmp_path / "a" / "b" / "c" / "job") == 2
    err = capsys.readouterr().err
    assert _lines(err)[-1].startswith("error:"), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "small_mask.png"]
    # parents that existed before stay
    (tmp_path / "a").mkdir()
    assert _main(*args, "--out", tmp_path / "a" / "b" / "job") == 2
    assert [p.name for p in (tmp_path / "a").iterdir()] == []


def test_the_html_record_says_near_the_top_that_the_input_was_lossy():
    from restoration.record import render_html
    m = {"schema": "s", "capture": {"file": "scan.jpg", "format": "JPEG", "lossy": True, "ppi": 600},
         "stats": {"n_regions": 0}}
    html = render_html(m, [], [])
    i = html.find("Lossy input")
    assert 0 < i < html.find("<h2>Summary"), html[:1500]
    assert "JPEG" in html[i:i + 300]
    lossless = render_html(dict(m, capture=dict(m["capture"], format="TIFF", lossy=False)), [], [])
    assert "Lossy input" not in lossless and "lossy" not in lossless.lower()


def test_load_scan_lists_no_link_leading_out_of_the_input_folder(tmp_path):
    import os
    from restoration.scanio import confined_file, list_scans, write_png
    inp, outside = tmp_path / "input", tmp_path / "outside"
    inp.mkdir()
    outside.mkdir()
    write_png(inp, "a.png", np.zeros((16, 16), np.uint8))
    write_png(outside, "secret.png", np.zeros((16, 16), np.uint8))
    (inp / "sub").mkdir()
    write_png(inp / "sub", "b.png", np.zeros((16, 16), np.uint8))
    os.symlink(outside / "secret.png", inp / "out.png")
    os.symlink(inp / "a.png", inp / "same.png")
    os.symlink("../outside/secret.png", inp / "rel_out.tif")
    os.symlink(inp / "sub" / "b.png", inp / "in_sub.png")
    assert list_scans(inp) == ["a.png", "in_sub.png", "same.png"]
    for name in ("out.png", "rel_out.tif"):
        with pytest.raises(ValueError, match=f"'{name}' is not a file of the input folder"):
            confined_file(inp, name)


def test_two_jobs_started_at_the_same_moment_one_writes_the_other_is_refused(scan, tmp_path):
    """No hand-off between them: whichever claims the folder first writes it, the other is refused at once."""
    import os
    import subprocess
    import sys
    out = tmp_path / "o"
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "restoration", str(scan[0]), "--out", str(out), "--ground", "0.86,0.80,0.68",
           "--threads", "1"]
    jobs = [subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    errs = [j.communicate(timeout=600)[1] for j in jobs]
    res = sorted(zip((j.returncode for j in jobs), (j.pid for j in jobs), errs))
    assert [rc for rc, _, _ in res] == [0, 2], [e[-500:] for e in errs]
    (_, win, _), (_, _, err) = res
    busy = (f"error: output folder {str(out)!r} is being written by another run (pid {win}); wait for it to finish "
            "or choose another folder")
    done = f"error: output folder {str(out)!r} already exists and is not empty"  # on a very slow start
    assert len(_lines(err)) == 1 and _lines(err)[0].startswith((busy, done)), err[-2000:]
    assert "%" not in err and json.loads((out / "manifest.json").read_text())["files"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]
