"""scripts/run_comfyui.sh against a stand-in ComfyUI tree (a main.py that records its arguments)."""
import os
import signal
import subprocess
import sys
import time

import pytest

from _testenv import REPO

SCRIPT = REPO / "scripts" / "run_comfyui.sh"
MAIN = """import pathlib, sys, time
pathlib.Path("started").write_text(" ".join(sys.argv[1:]))
time.sleep(float(pathlib.Path("sleep").read_text()) if pathlib.Path("sleep").exists() else 0)
"""


def fake_tree(tmp_path, sleep=None):
    tree = tmp_path / "ComfyUI"
    (tree / "comfy").mkdir(parents=True)
    (tree / "comfy" / "model_patcher.py").write_text("")
    (tree / "main.py").write_text(MAIN)
    if sleep is not None:
        (tree / "sleep").write_text(str(sleep))
    return tree


def start(tree):
    env = dict(os.environ, COMFYUI_DIR=str(tree), COMFYUI_PYTHON=sys.executable, PORT="8999")
    # SIGINT back to its default in the child: started from a background shell (nohup, &) it would be
    # ignored, and bash cannot trap a signal that was ignored when it started
    return subprocess.Popen(["bash", str(SCRIPT)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def test_link_made_for_the_run_and_removed_when_the_server_exits(tmp_path):
    tree = fake_tree(tmp_path)
    p = start(tree)
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 0, out
    assert "--listen 127.0.0.1 --port 8999" in (tree / "started").read_text()
    assert "linked" in out and "removed the link" in out, out
    assert not (tree / "custom_nodes" / "ComfyUI-Atelier").exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_link_removed_when_the_script_is_stopped(tmp_path, sig):
    tree = fake_tree(tmp_path, sleep=60)
    p = start(tree)
    deadline = time.time() + 60
    while not (tree / "started").exists():
        assert time.time() < deadline and p.poll() is None, p.communicate()[0]
        time.sleep(0.1)
    assert (tree / "custom_nodes" / "ComfyUI-Atelier").is_symlink()
    p.send_signal(sig)
    out, _ = p.communicate(timeout=30)
    assert not (tree / "custom_nodes" / "ComfyUI-Atelier").exists(), out
    assert "removed the link" in out


def test_a_link_already_there_is_kept(tmp_path):
    tree = fake_tree(tmp_path)
    (tree / "custom_nodes").mkdir()
    (tree / "custom_nodes" / "mine").symlink_to(REPO)
    p = start(tree)
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 0, out
    assert (tree / "custom_nodes" / "mine").is_symlink()
    assert not (tree / "custom_nodes" / "ComfyUI-Atelier").exists() and "removed" not in out


def test_demo_speedup_follows_the_call_counts():
    """scripts/demo.py: the speedup comes from skipped calls x block time per call, so it never
    exceeds total/computed calls (the demo once printed 2.16x for 60/100 calls computed)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("atelier_demo", REPO / "scripts" / "demo.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    assert demo.expected_speedup(10.0, 0.08, 50) == pytest.approx(10.0 / 6.0, rel=1e-12)
    assert demo.expected_speedup(10.0, 0.1, 40) == pytest.approx(100 / 60, rel=1e-12)  # all time in blocks
    for share in (0.5, 0.84, 0.99):      # block share of the full run
        for computed in (50, 60, 99):
            s = demo.expected_speedup(1.0, share / 100, 100 - computed)
            assert 1.0 <= s <= 100 / computed
