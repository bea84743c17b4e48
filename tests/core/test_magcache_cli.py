"""``python -m magcache`` from the repository root, through a real subprocess."""
import json
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


def cli(*args):
    return subprocess.run([sys.executable, "-m", "magcache", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=60)


def test_schedule_json_from_repo_root():
    p = cli("schedule", "--preset", "wan2.1_t2v_1.3B", "--steps", "50", "--thresh", "0.12", "--k", "2",
            "--retention", "0.2")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    want = [10, 11, 13, 14, 16, 17, 19, 20, 22, 23, 25, 26, 28, 29, 31, 32, 34, 35, 37, 38, 40, 41, 43, 45, 47]
    assert d["cond_skipped"] == want and d["uncond_skipped"] == want
    assert (d["computed_calls"], d["total_calls"]) == (50, 100)


def test_schedule_start_end_and_curve_file(tmp_path):
    p = cli("schedule", "--preset", "wan2.1_t2v_14B", "--steps", "30", "--thresh", "0.02", "--k", "6",
            "--start-step", "5")
    d = json.loads(p.stdout)
    assert d["cond_skipped"] == [5, 6, 8, 9, 11, 12, 14, 16, 18, 20, 22] and d["computed_calls"] == 38
    p = cli("schedule", "--preset", "wan2.1_t2v_14B", "--steps", "30", "--thresh", "0.02", "--k", "6",
            "--start-step", "5", "--end-step", "12")
    assert json.loads(p.stdout)["cond_skipped"] == [5, 6, 8, 9, 11]
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"mag_ratios": [1.0, 1.0] + [0.999, 0.999] * 9, "branches": 2}))
    p = cli("schedule", "--curve", str(f), "--steps", "10", "--thresh", "0.1", "--k", "3", "--retention", "0.2")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["cond_skipped"] == [2, 3, 4, 6, 7, 8]


@pytest.mark.parametrize("args,frag", [
    (["schedule", "--preset", "nope", "--steps", "50"], "preset: 'nope'"),
    (["schedule", "--steps", "0"], "--steps"),
    (["schedule", "--steps", "x"], "--steps"),
    (["schedule", "--steps", "20", "--thresh", "-1"], "thresh"),
    (["schedule", "--steps", "20", "--curve", "/nonexistent.json"], "--curve"),
    (["schedule", "--steps", "20", "--step-range", "5", "40"], "step_range"),
    (["frobnicate"], "invalid choice"),
    ([], "usage"),
])
def test_bad_arguments_exit_2(args, frag):
    p = cli(*args)
    assert p.returncode == 2
    assert frag in p.stderr


def test_bad_curve_file(tmp_path):
    f = tmp_path / "bad.json"
    f.write_text("{oops")
    p = cli("schedule", "--curve", str(f), "--steps", "10")
    assert p.returncode == 2 and "malformed JSON" in p.stderr


def test_presets_lists_all():
    p = cli("presets")
    assert p.returncode == 0
    names = [line.split()[0] for line in p.stdout.splitlines()]
    assert "wan2.1_t2v_1.3B" in names and "wan2.2_t2v_A14B" in names and len(names) == 18
