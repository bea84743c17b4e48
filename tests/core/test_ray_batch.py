"""Many inputs and Ray (issue 22 items 3-4): collections of scans and DLoRAL clips, in process and on a local
two-node Ray cluster (head + worker on 127.0.0.1, started here and stopped after, ``tests/_raycluster.py``);
a worker node killed mid-job still gives complete records, byte-identical to the in-process run, none twice.
Without Ray the cluster tests skip loudly; under CI they fail."""
import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np
import pytest

from _raycluster import Cluster, env, need_ray
from _raycluster import make_clips as _clips, dloral_args as _dloral_args, make_scans as _scans, \
    records as _records, tree as _tree
from _testenv import REPO

TESTS = REPO / "tests"


# ----------------------------------------------------------------------------------------------- inputs ---
def test_expand_inputs_folders_globs_lists(tmp_path):
    from atelier_ray import expand_inputs
    d = tmp_path / "d"
    d.mkdir()
    for n in ("b.tif", "a.png", "c.txt"):
        (d / n).write_bytes(b"x")
    (tmp_path / "e.tif").write_bytes(b"x")
    (tmp_path / "list.txt").write_text("# scans\nd/a.png\n\ne.tif\n")
    exts = (".png", ".tif")
    assert [p.name for p in expand_inputs([str(d)], exts)] == ["a.png", "b.tif"]
    assert [p.name for p in expand_inputs([str(tmp_path / "d" / "*.tif")], exts)] == ["b.tif"]
    # a list file (relative to itself), with a duplicate given twice: each input once, in order
    got = expand_inputs(["@" + str(tmp_path / "list.txt"), str(d / "a.png"), str(d)], exts)
    assert [p.name for p in got] == ["a.png", "e.tif", "b.tif"]
    assert expand_inputs([str(d)], exts, dirs_are_items=True) == [d]
    for bad, msg in ((str(tmp_path / "nope.tif"), "no such file"), (str(tmp_path / "*.jpg"), "matches nothing"),
                     ("@" + str(tmp_path / "none.txt"), "cannot be read")):
        with pytest.raises(ValueError, match=msg):
            expand_inputs([bad], exts)


def test_missing_ray_fails_under_ci_and_skips_loudly_otherwise(monkeypatch):
    import _raycluster
    monkeypatch.setattr(_raycluster.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match="CI: Ray is not installed"):
        _raycluster.need_ray()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="RAY TESTS SKIPPED"):
        _raycluster.need_ray()


def test_ray_address_that_is_an_input_is_refused(tmp_path):
    from atelier_ray import connect
    with pytest.raises(ValueError, match="put --ray last"):
        connect(str(tmp_path))


def test_record_names_do_not_depend_on_order(tmp_path):
    from restoration.batch import record_names
    a, b, c = tmp_path / "x" / "s.tif", tmp_path / "y" / "s.tif", tmp_path / "t.png"
    n1 = dict(zip((a, b, c), record_names([a, b, c])))
    n2 = dict(zip((c, b, a), record_names([c, b, a])))
    assert n1 == n2 and n1[c] == "t" and n1[a] != n1[b] and n1[a].startswith("s-")


# --------------------------------------------------------------------------------------------- scans ---
def _cli(args, extra_env=None, timeout=240):
    e = env([TESTS])
    e.update(extra_env or {})
    return subprocess.run([sys.executable, "-m", "restoration", *args], cwd=REPO, env=e, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    return _scans(tmp_path_factory.mktemp("scans") / "in")


@pytest.fixture(scope="module")
def reference(scans, tmp_path_factory):
    """The collection run in process (no Ray): the outputs every Ray run must equal."""
    out = tmp_path_factory.mktemp("ref") / "coll"
    r = _cli([str(scans), "--out", str(out), "--dpi", "600"])
    assert r.returncode == 1, r.stderr   # one scan is broken: listed, the rest done
    return out, json.loads(r.stdout)


def test_collection_in_process_index_and_no_overwrite(scans, reference, tmp_path):
    out, summary = reference
    assert summary["done"] == 5 and summary["failed"] == 1 and "broken" in summary["failures"]
    assert "not a readable image" in summary["failures"]["broken"]
    assert sorted(p.name for p in out.iterdir()) == ["index.csv", "index.html", *(f"scan{i}" for i in range(5))]
    import csv
    rows = list(csv.DictReader((out / "index.csv").open()))
    assert [r["status"] for r in rows] == ["done"] * 5 + ["failed"]
    areas = [float(r["total_damage_area_mm2"]) for r in rows[:5]]
    assert areas == sorted(areas, reverse=True) and areas[0] > 0
    html = (out / "index.html").read_text()
    assert html.count("<tr") == 7 and 'href="scan0/index.html"' in html and "not a readable image" in html
    # a rerun keeps the records it finds (same scan: 'done earlier') and writes none of them again
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.parent != out}
    r = _cli([str(scans / "scan0.tif"), str(scans / "scan1.tif"), "--out", str(out), "--dpi", "600"])
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["done_earlier"] == 2
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.parent != out} == before
    # a record of another scan under the same name is never overwritten: that scan fails with the reason
    other = tmp_path / "o"
    other.mkdir()
    (other / "scan0.tif").write_bytes((scans / "scan2.tif").read_bytes())
    r = _cli([str(other / "scan0.tif"), str(scans / "scan1.tif"), "--out", str(out), "--dpi", "600"])
    assert r.returncode == 1 and "record of another scan" in r.stdout
    # per-scan options are refused for a collection, before anything is written
    r = _cli([str(scans), "--out", str(tmp_path / "c2"), "--accept", "3"])
    assert r.returncode == 2 and "--accept" in r.stderr and not (tmp_path / "c2").exists()


@pytest.mark.parametrize("when", ["before staging", "before the rename"])
def test_a_second_attempt_never_writes_over_the_first(scans, reference, tmp_path, monkeypatch, when):
    """A worker declared lost may still finish its scan: when its record lands first (before this attempt is
    staged, or while it runs and before its rename), this attempt does not write over it (refused, or the
    rename fails), reports the scan done, and leaves no staged folder: one record, the first one."""
    import shutil
    import restoration.pipeline
    from restoration.__main__ import _one_record, build_parser, config_from_args
    from restoration.batch import ScanWorker
    out = tmp_path / "coll"
    out.mkdir()
    dest = out / "scan0"
    first = reference[0] / "scan0"
    if when == "before staging":
        shutil.copytree(first, dest)
    else:
        real = restoration.pipeline.run

        def racing(*a, **k):
            m = real(*a, **k)
            shutil.copytree(first, dest)
            return m
        monkeypatch.setattr(restoration.pipeline, "run", racing)
    stamp = {p.name: p.stat().st_mtime_ns for p in first.iterdir()}
    args = build_parser().parse_args([str(scans), "--out", str(out), "--dpi", "600"])
    row = ScanWorker(args, config_from_args, _one_record)((str(scans / "scan0.tif"), str(dest)))
    assert row["status"] == ("done earlier" if when == "before staging" else "done")
    assert row["record"] == "scan0/index.html"
    assert sorted(p.name for p in out.iterdir()) == ["scan0"]   # no staged folder left, one record
    assert _records(out) == {"scan0": _records(reference[0])["scan0"]}
    assert {p.name: p.stat().st_mtime_ns for p in first.iterdir()} == stamp


@pytest.fixture(scope="module")
def cluster():
    need_ray()
    c = Cluster(extra_paths=[TESTS]).start()
    yield c
    c.stop()


def test_cluster_is_loopback_only(cluster):
    """Both nodes registered 127.0.0.1 (the routable address is never used)."""
    code = ("import ray, json; ray.init(address=%r, log_to_driver=False); "
            "print(json.dumps([n['NodeManagerAddress'] for n in ray.nodes() if n['Alive']]))" % cluster.address)
    r = subprocess.run([sys.executable, "-c", code], env=env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1]) == ["127.0.0.1", "127.0.0.1"]


def test_dloral_clips_on_two_ray_nodes_equal_in_process(clips, cluster, tmp_path):
    """The clips spread over the two nodes' actors (each loads the models once): the same files, byte for byte."""
    root, ref, _ = clips
    out = tmp_path / "out"
    r = _dloral(root, out, "--ray", cluster.address)
    assert r.returncode == 1, r.stderr
    s = json.loads(r.stdout)
    assert (s["done"], s["failed"], s["workers"], s["lost_workers"]) == (3, 1, 2, 0), s
    assert "2 node(s)" in s["where"]
    assert _tree(out) == _tree(ref)
    assert "job 3/4 done, 1 failed" in r.stderr and "frames/s" in r.stderr


def _kill_worker_when_both_busy(p, cluster, unit):
    """Read job ``p``'s progress lines until both workers each hold a ``unit``, kill the cluster's worker node
    then, and let the job end: ``(progress lines read, rest of stdout, rest of stderr)``."""
    lines = []
    try:
        for line in p.stderr:
            lines.append(line)
            if "2 workers, 2 busy" in line:
                cluster.kill_worker()
                break
        else:
            pytest.fail(f"the job ended before both workers held a {unit}:\n" + "".join(lines))
        rest_out, rest_err = p.communicate(timeout=180)
    finally:
        if p.poll() is None:
            p.kill()
    return lines, rest_out, rest_err


def test_worker_node_killed_mid_job_loses_nothing(scans, reference, cluster, tmp_path):
    """Two nodes, one worker each; the worker node (raylet and actor) is SIGKILLed while its first scan runs:
    its scan is run again on the head's worker, every record is complete and byte-identical to the in-process
    run, none is written twice (no staged folder is left, each record once), the broken scan listed."""
    out = tmp_path / "coll"
    e = env([TESTS])
    p = subprocess.Popen([sys.executable, "-m", "restoration", str(scans), "--out", str(out), "--dpi", "600",
                          "--ray", cluster.address], cwd=REPO, env=e, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    lines, rest_out, rest_err = _kill_worker_when_both_busy(p, cluster, "scan")
    assert p.returncode == 1 and rest_out.startswith("{"), "".join(lines) + rest_err + rest_out
    s = json.loads(rest_out)
    assert s["lost_workers"] >= 1 and s["retried"] >= 1 and s["done"] == 5 and s["failed"] == 1, rest_out
    assert "2 node(s)" in s["where"] and s["workers"] >= 2
    assert "job 5/6 done, 1 failed" in rest_err and "job 6/6" not in rest_err   # one progress line, whole job
    assert _records(out) == _records(reference[0])
    assert sorted(p.name for p in out.iterdir()) == ["index.csv", "index.html", *(f"scan{i}" for i in range(5))]


# ------------------------------------------------------------------------------------------- DLoRAL ---
def _dloral(root, out, *extra, timeout=240):
    return subprocess.run([sys.executable, str(TESTS / "_dloral_tiny_cli.py"), *_dloral_args(root, out, *extra)],
                          cwd=REPO, env=env([TESTS]), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = _clips(tmp_path_factory.mktemp("dl") / "in")
    out = root.parent / "ref"
    r = _dloral(root, out)
    assert r.returncode == 1, r.stderr   # the broken video is listed, the rest done
    return root, out, json.loads(r.stdout)


def test_dloral_many_inputs_in_process(clips):
    root, out, s = clips
    assert (s["clips"], s["done"], s["failed"], s["workers"]) == (4, 3, 1, 1), s
    bad = [o for o in s["outputs"] if o["status"] == "failed"]
    assert len(bad) == 1 and bad[0]["input"].endswith("broken.mp4") and "PyAV" in bad[0]["reason"]
    t = _tree(out)
    assert sorted({k.split("/")[0] for k in t}) == ["clip0", "clip1", "clip2"]
    assert sum(k.startswith("clip0/frame_") for k in t) == 5 and sum(k.startswith("clip2/frame_") for k in t) == 4
    assert "clip2/timecodes.txt" in t
    # each clip equals the single-clip command on it, byte for byte
    single = root.parent / "single"
    r = subprocess.run([sys.executable, str(TESTS / "_dloral_tiny_cli.py"), "upscale", str(root / "frames" / "clip1"),
                        "--out", str(single), "--weights", str(root / "w.safetensors"), "--checkpoint",
                        str(root / "ck.safetensors"), "--process-size", "64", "--window", "2"],
                       cwd=REPO, env=env([TESTS]), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert _tree(single) == {k.split("/", 1)[1]: v for k, v in t.items() if k.startswith("clip1/")}
    # a rerun keeps what is there (done earlier) and writes nothing again
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    r = _dloral(root, out)
    s2 = json.loads(r.stdout)
    assert s2["done_earlier"] == 3 and s2["done"] == 0, s2
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


# ----------------------------------------------------------------------- DLoRAL: chunks as the unit ---
def _Counted(stop_at=None):
    """The tiny loader in this process (1 thread, as the CLI's); counts UNet calls; ``stop_at``: the call
    (1-based) that raises KeyboardInterrupt, as Ctrl-C would."""
    from _dloral_models import CountingLoader
    from _dloral_tiny_cli import tiny_loader
    return CountingLoader(tiny_loader, stop_at)


def test_dloral_chunks_as_units_equal_one_pass_and_resume(clips, tmp_path, capsys):
    """``--chunk 2``: the clips cut into 3 + 2 + 2 chunks, each run on its own (read from its carried frame),
    stitched: the one-pass outputs byte for byte, no job folder left. Interrupted in the 5th chunk (clip0
    stitched, clip1's first chunk a part), the same command runs only the 3 chunks without a part."""
    import torch
    from dloral.__main__ import main
    root, ref, _ = clips
    threads = torch.get_num_threads()
    try:
        out = tmp_path / "out"
        stop = _Counted(stop_at=5)
        assert main(_dloral_args(root, out, "--chunk", "2"), loader=stop) == 130
        assert sorted(p.name for p in out.iterdir()) == [".clip1.dloral-job", ".clip2.dloral-job", "clip0"]
        assert sorted(p.name for p in (out / ".clip1.dloral-job").iterdir()) == ["manifest.json", "part_00000"]
        assert sorted(p.name for p in (out / ".clip2.dloral-job").iterdir()) == ["manifest.json"]
        assert "and the finished chunks in its .NAME.dloral-job folders" in capsys.readouterr().err
        again = _Counted()
        assert main(_dloral_args(root, out, "--chunk", "2"), loader=again) == 1   # the broken video
        s = json.loads(capsys.readouterr().out)
    finally:
        torch.set_num_threads(threads)
    assert again.calls == 3, again.calls   # clip1's second chunk, clip2's two
    rows = {pathlib.Path(r["input"]).stem: r for r in s["outputs"]}
    assert rows["clip0"]["status"] == "done earlier" and "chunks" not in rows["clip0"]
    assert {k: (rows[k]["chunks"], rows[k]["chunks_done"], rows[k]["chunks_done_earlier"]) for k in ("clip1", "clip2")} \
        == {"clip1": (2, 1, 1), "clip2": (2, 2, 0)}
    assert s["chunks"] == 4 and s["chunks_run"] == 3 and s["failed"] == 1
    assert _tree(out) == _tree(ref)


def test_dloral_chunks_over_two_ray_nodes_a_worker_killed(clips, cluster, tmp_path):
    """The chunks spread over two nodes' actors (each UNet call slowed to 0.5 s); the worker node is
    SIGKILLed while it holds a chunk: that chunk is run again on the head's actor, every part is made
    once (made or found made: the chunk counts add up), the stitched clips equal the one-pass in-process
    outputs byte for byte, no job folder or partial file is left; one progress line for the whole job."""
    root, ref, _ = clips
    cluster.ensure_worker()
    out = tmp_path / "out"
    p = subprocess.Popen([sys.executable, str(TESTS / "_dloral_tiny_cli.py"),
                          *_dloral_args(root, out, "--chunk", "2", "--prompt", "slow:0.5", "--ray", cluster.address)],
                         cwd=REPO, env=env([TESTS]), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines, rest_out, rest_err = _kill_worker_when_both_busy(p, cluster, "chunk")
    assert p.returncode == 1 and rest_out.startswith("{"), "".join(lines) + rest_err + rest_out
    s = json.loads(rest_out)
    assert s["lost_workers"] >= 1 and s["retried"] >= 1 and (s["done"], s["failed"]) == (3, 1), rest_out
    rows = [r for r in s["outputs"] if "chunks" in r]
    assert [r["chunks"] for r in rows] == [3, 2, 2] and s["chunks_run"] == 7
    assert all(r["chunks_done"] + r["chunks_done_earlier"] == r["chunks"] for r in rows), rows
    assert max(r["attempts"] for r in rows) >= 2
    assert "job 7/8 done, 1 failed" in rest_err and "retried" in rest_err and "ETA" in rest_err
    assert _tree(out) == _tree(ref)


@pytest.mark.parametrize("off", [-3, 4])
def test_dloral_chunks_with_a_wrong_frame_estimate(clips, tmp_path, capsys, monkeypatch, off):
    """A container's frame count may be an estimate: planned from 2 frames (too few) the last chunk runs to
    the end of the clip; from 9 (too many) the chunks past the end give no part. The outputs are the one-pass
    ones either way."""
    import torch
    import dloral.clijob
    from dloral.__main__ import main
    root, ref, _ = clips
    real = dloral.clijob.probe

    def estimate(path):
        n, size = real(path)
        return (n + off if pathlib.Path(path).name == "clip0" else n), size
    monkeypatch.setattr(dloral.clijob, "probe", estimate)
    threads = torch.get_num_threads()
    try:
        assert main(_dloral_args(root, tmp_path / "out", "--chunk", "2"), loader=_Counted()) == 1
    finally:
        torch.set_num_threads(threads)
    s = json.loads(capsys.readouterr().out)
    row = next(r for r in s["outputs"] if r["input"].endswith("clip0"))
    assert (row["status"], row["frames"], row["chunks"], row["chunks_done"]) == ("done", 5, 1 if off < 0 else 5, 1 if off < 0 else 3)
    assert _tree(tmp_path / "out") == _tree(ref)


def test_dloral_chunks_stitched_into_a_video_equal_one_pass(clips, tmp_path, capsys):
    """The driver's stitch into a video file (ProRes .mov: bit-reproducible) keeps the frame times the parts
    recorded: the file equals the one-pass batch's byte for byte (a video input and a frame folder)."""
    import torch
    from dloral.__main__ import main
    root, _, _ = clips
    threads = torch.get_num_threads()
    args = ["upscale", str(root / "videos" / "clip2.avi"), str(root / "frames" / "clip1"), "--weights",
            str(root / "w.safetensors"), "--checkpoint", str(root / "ck.safetensors"), "--process-size", "64",
            "--window", "2", "--batch-ext", "mov"]
    try:
        assert main([*args, "--out", str(tmp_path / "one")], loader=_Counted()) == 0
        one = json.loads(capsys.readouterr().out)
        assert main([*args, "--out", str(tmp_path / "ch"), "--chunk", "2"], loader=_Counted()) == 0
        ch = json.loads(capsys.readouterr().out)
    finally:
        torch.set_num_threads(threads)
    assert "chunks" not in one and [r["chunks"] for r in ch["outputs"]] == [2, 2]
    assert sorted(p.name for p in (tmp_path / "ch").iterdir()) == ["clip1.mov", "clip2.mov"]
    for name in ("clip1.mov", "clip2.mov"):
        assert (tmp_path / "ch" / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name
