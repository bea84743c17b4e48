"""The GPU benchmark commands run as a user with a lent GPU would type them, at tiny sizes on the CPU.

A lent GPU is rare and short: a benchmark that fails at its first line wastes it. Session 6 found
``bench/bench_dloral.py`` failing on start (an import renamed in commit 9b54841) although its
README entry said "ready". These tests run the same scripts through the same code paths (the GPU suite's
``--smoke``; MagCache's random-weight model path at tiny dims) and check what they write.
"""
import json
import os
import subprocess
import sys

import pytest

from _testenv import REPO

pytestmark = pytest.mark.host


def _run(comfy_dir, args, timeout=600):
    env = {**os.environ, "COMFYUI_DIR": str(comfy_dir)}
    r = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{args[0]} exited {r.returncode}:\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
    return r


def test_dloral_gpu_suite_smoke(comfy_dir, tmp_path):
    out = tmp_path / "dloral_gpu.json"
    _run(comfy_dir, ["bench/bench_dloral.py", "--suite", "gpu", "--smoke", "--suite-out", str(out)])
    res = json.loads(out.read_text())
    runs = [(r["run"], r["precision"]) for r in res["runs"]]
    assert runs == [("reference", "fp32"), ("speed", "fp16"), ("lowmem", "fp16"), ("speed", "bf16")]
    for r in res["runs"]:
        assert r["finite"] and r["frames"] == r["frames_asked"] > 0, r
        assert r["output"] == 4 * r["input"]
    low = res["runs"][2]
    assert low["config"]["window"] == 1 and low["config"]["vae_tile"] > 0
    for r in res["runs"][1:]:
        # half precision against the fp32 reference: off by at most a few 8-bit levels, never garbage
        assert 0 <= r["vs_fp32"]["max_abs"] < 0.05 and r["vs_fp32"]["psnr_db"] > 35, r
    assert res["total_s"] > 0


def test_magcache_random_model_bench_smoke(comfy_dir, tmp_path):
    """The path of ``--random-1.3B --gpu`` (random Wan weights, one preset) at tiny dims on the CPU."""
    out = tmp_path / "magcache.json"
    _run(comfy_dir, ["bench/bench_magcache.py", "--dims", "128", "256", "2", "--size", "8", "8", "--frames", "1",
                     "--steps", "6", "--repeats", "1", "--out", str(out)])
    res = json.loads(out.read_text())
    rows = res["results"] if isinstance(res, dict) else res
    assert rows, res
    for r in rows:
        assert r["steps"] == 6 and r["computed_calls"] <= r["total_calls"] == 2 * 6, r
        assert r["full_s"] > 0 and r["magcache_s"] > 0 and 0 <= r["latent_rel_err"] < 1, r


def test_magcache_quality_bench_smoke(comfy_dir, tmp_path):
    """The path of ``bench_magcache.py --quality`` (trained tiny Wan, the node's target speedup, PSNR/SSIM against
    the full run over prompts x seeds) at few steps and samples."""
    out = tmp_path / "mcq.json"
    _run(comfy_dir, ["bench/bench_magcache.py", "--quality", "--steps", "8", "--prompts", "2", "--seeds", "1",
                     "--targets", "1.5", "2", "--out", str(out)])
    res = json.loads(out.read_text())
    assert [list(s) for s in res["samples"]] == [["red square moving right", 0], ["blue circle moving up", 0]]
    rows = res["results"]
    assert [r["target_speedup"] for r in rows] == [1.5, 2.0]
    for r in rows:
        # the node's planner reached the target on the curve: the run computed what it planned
        assert r["planned_speedup"] >= r["target_speedup"] and r["total_calls"] == 2 * 8, r
        assert r["thresh"] > 0 and r["k"] >= 1 and r["accumulated_error"] > 0, r
        assert len(r["samples"]) == 2 and all(s["computed_calls"] == r["computed_calls"] for s in r["samples"]), r
        assert 10 < r["psnr_db_worst"] <= r["psnr_db_median"] < 100 and 0 < r["ssim_worst"] <= r["ssim_median"] < 1, r
        assert r["full_cpu_s"] > 0 and r["full_wall_s"] > 0 and r["ideal_speedup"] > 1, r
        assert 0 < r["block_stack_share"] <= 1 and r["speedup"] > 0, r
    # more skipping, more error: the 2x schedule computes fewer calls and is further from the full run
    assert rows[1]["computed_calls"] < rows[0]["computed_calls"]
    assert rows[1]["accumulated_error"] > rows[0]["accumulated_error"]
    assert rows[1]["psnr_db_median"] < rows[0]["psnr_db_median"]


def test_magcache_families_real_dims_bench_smoke(comfy_dir, tmp_path):
    """The path of ``bench_magcache_families.py --gpu --real-dims`` (models from the host's config classes,
    random weights made on the device) at tiny dims on the CPU: every family measured, numbers sane."""
    out = tmp_path / "mcf.json"
    _run(comfy_dir, ["bench/bench_magcache_families.py", "--real-dims", "--shrink", "--steps", "6", "--repeats", "1",
                     "--out", str(out)])
    res = json.loads(out.read_text())
    assert res["mode"] == "real-dims-shrunk" and not res["left_out"]
    assert [r["family"] for r in res["results"]] == ["wan21_t2v", "flux", "qwen_image", "hunyuan_video"]
    for r in res["results"]:
        assert r["steps"] == 6 and r["hook0_identical"], r
        assert 0 < r["computed_calls"] <= r["total_calls"] and r["skipped_calls"] == r["total_calls"] - r["computed_calls"]
        assert r["full_s"] > 0 and r["hook0_s"] > 0 and r["magcache_s"] > 0 and 0 < r["stack_share"] <= 1, r
        assert r["ideal_speedup"] >= 1 and 0 <= r["latent_rel_err"] < 10, r
    assert any(r["skipped_calls"] for r in res["results"])


def test_nag_families_real_dims_bench_smoke(comfy_dir, tmp_path):
    """The path of ``bench/bench_nag_families.py --dims real --device cuda`` (the four families, the real-dims
    table's structure, the node, the host's KSampler, interleaved variants, the JSON) at tiny widths on the CPU."""
    out = tmp_path / "nag_real.json"
    _run(comfy_dir, ["bench/bench_nag_families.py", "--dims", "real", "--smoke", "--steps", "1", "--repeats", "1",
                     "--out", str(out)])
    res = json.loads(out.read_text())
    assert res["dims"] == "real" and res["smoke"] and res["device"] == "cpu"
    assert set(res["families"]) == {"flux", "qwen_image", "hunyuan_video", "wan21_t2v"}
    for name, r in res["families"].items():
        rr = r["results"]
        assert set(rr) == {"unguided", "nag", "cfg", "nag_cfg"}, name
        assert all(v["s_per_step"] > 0 and len(v["runs_s"]) == 1 for v in rr.values()), name
        assert rr["unguided"]["ratio_vs_unguided"] == 1.0 and rr["nag_cfg"]["ratio_vs_cfg"] > 0, name
        assert r["nag_tokens"] > 0 and r["text_tokens"] > 0, name
    est = res["estimate_full_depth"]
    assert set(est) == set(res["families"]) and all(1.0 < e["ratio"] < 1.5 for e in est.values()), est
