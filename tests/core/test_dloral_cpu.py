"""dloral.cpu.thp_env: when a CPU run is started with large pages for PyTorch's tensors."""
import subprocess
import sys

from dloral.cpu import THP_VAR, thp_env
from _testenv import REPO


def test_rule(tmp_path):
    madvise, never = tmp_path / "madvise", tmp_path / "never"
    madvise.write_text("always [madvise] never\n")
    never.write_text("always madvise [never]\n")
    assert thp_env({}, "linux", str(madvise)) == {THP_VAR: "1"}
    assert thp_env({}, "linux", str(tmp_path / "absent")) == {THP_VAR: "1"}   # unreadable: allowed
    assert thp_env({}, "linux", str(never)) is None                          # the kernel gives none
    assert thp_env({THP_VAR: "0"}, "linux", str(madvise)) is None            # the user's choice stands
    assert thp_env({}, "darwin", str(madvise)) is None and thp_env({}, "win32", str(madvise)) is None


def test_cli_start_again_keeps_arguments_errors_and_exit_status(tmp_path):
    """``python scripts/dloral_cli.py upscale`` (the host entry point) with a bad INPUT: the same message and
    exit status 2 whether the CLI starts itself again (variable unset) or not (set by the user), from any
    working directory."""
    outs = []
    for extra in ({}, {THP_VAR: "0"}):
        env = {k: v for k, v in __import__("os").environ.items() if k != THP_VAR}
        env.update(extra, PYTHONPATH="")
        r = subprocess.run([sys.executable, str(REPO / "scripts" / "dloral_cli.py"), "upscale", str(tmp_path / "nope"),
                            "--out", str(tmp_path / "o"), "--weights", "w.safetensors", "--checkpoint", "c.safetensors",
                            "--comfyui", str(tmp_path)],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        outs.append((r.returncode, r.stderr.strip().splitlines()[-1]))
    assert outs[0] == outs[1] and outs[0][0] == 2 and "nope" in outs[0][1], outs
