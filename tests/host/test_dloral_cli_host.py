"""`python scripts/dloral_cli.py upscale` end to end, as a batch user runs it: a subprocess on a
frames folder and on an OpenCV video, with a single-file SD2 checkpoint loaded by the real host (the
small SD2-architecture UNet, the SD VAE and the host's full-size SD2 text encoder, random weights) and
synthetic DLoRAL weights for that UNet. A failure mid-run leaves --out as it was. (Bad inputs caught
before any model loads are tested without the host in tests/core/test_dloral_cli.py.)
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from _testenv import REPO

pytestmark = pytest.mark.host

N, SIZE = 3, 16
# distinct mean colours: AdaIN matches each output frame's channel means to its own input frame,
# so the means identify which input an output frame came from (order check on random weights)
COLOURS = [(0.25, 0.5, 0.75), (0.75, 0.25, 0.5), (0.5, 0.75, 0.25)]


def _frame(i, h=SIZE, w=SIZE, seed=0):
    g = np.random.default_rng(seed + i)
    tex = g.random((h, w, 3)) - 0.5
    return np.clip(np.array(COLOURS[i % 3]) + 0.3 * tex, 0, 1)


def _write_png(path, rgb01):
    import cv2
    assert cv2.imwrite(str(path), (rgb01[..., ::-1] * 255).round().astype(np.uint8))


def _folder(d, sizes):
    d.mkdir()
    for i, (h, w) in enumerate(sizes):
        _write_png(d / f"f{i:03d}.png", _frame(i, h, w))
    return d


@pytest.fixture(scope="module")
def files(comfy_dir, tmp_path_factory):
    from _e2e import SD2_SMALL, tiny_sd2_unet_sd, write_tiny_sd2_checkpoint
    from _dloral_synth import make_official, unet_shapes, with_base
    from dloral import convert_official, save_weights
    import cv2
    d = tmp_path_factory.mktemp("dloral_cli")
    write_tiny_sd2_checkpoint(d / "sd2_tiny.safetensors")
    ck = make_official(unet_shapes(**SD2_SMALL), rank_q=4, rank_c=4, seed=2, std=0.02)[0]
    save_weights(convert_official(with_base(ck, tiny_sd2_unet_sd(0))), str(d / "dloral.safetensors"))
    save_weights(convert_official(ck), str(d / "dloral_other_base.safetensors"))
    frames = _folder(d / "frames", [(SIZE, SIZE)] * N)
    vid = d / "clip.avi"
    wr = cv2.VideoWriter(str(vid), cv2.VideoWriter_fourcc(*"MJPG"), 8, (SIZE, SIZE))
    for i in range(N):
        wr.write((_frame(i)[..., ::-1] * 255).round().astype(np.uint8))
    wr.release()
    return {"dir": d, "ckpt": d / "sd2_tiny.safetensors", "weights": d / "dloral.safetensors",
            "frames": frames, "video": vid, "comfy": comfy_dir}


@pytest.fixture(scope="module")
def good_run(files):
    """One complete run on the frames folder: (result, output folder)."""
    out = files["dir"] / "good"
    r = _run(files, files["frames"], out)
    assert r.returncode == 0, r.stderr[-3000:]
    return r, out


def _run(files, inp, out, *extra, weights=None):
    cmd = [sys.executable, str(REPO / "scripts" / "dloral_cli.py"), "upscale", str(inp), "--out", str(out),
           "--weights", str(weights or files["weights"]), "--checkpoint", str(files["ckpt"]),
           "--comfyui", str(files["comfy"]), "--process-size", "64", "--window", "2", "--seed", "7", *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH="")
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def _leftovers(out):
    """Anything a run may leave behind: staging folders next to --out, *.part files."""
    parent = out.parent
    return sorted(str(p) for p in parent.glob(".*dloral-staging*")) + sorted(str(p) for p in parent.rglob("*.part"))


def _umask():
    m = os.umask(0)
    os.umask(m)
    return m


def _read(path):
    import cv2
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, path
    return img[..., ::-1].astype(np.float64) / 255


def _check_frames(out, n, tol):
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"frame_{i:05d}.png" for i in range(n)], names
    means = []
    for name in names:
        img = _read(out / name)
        assert img.shape == (4 * SIZE, 4 * SIZE, 3)
        assert img.std() > 0.01, f"{name} is flat"
        means.append(img.reshape(-1, 3).mean(0))
    want = np.array([_frame(i).reshape(-1, 3).mean(0) for i in range(n)])
    dist = np.abs(np.array(means)[:, None, :] - want[None]).max(-1)     # output x input
    assert list(dist.argmin(1)) == list(range(n)), dist                  # frame i came from input i
    assert dist.diagonal().max() < tol, dist.diagonal()


@pytest.mark.slow
def test_folder_every_frame_in_order_x4_and_byte_identical(files, good_run, tmp_path, out_dir):
    r, a = good_run
    (out_dir / "dloral_cli_frame1.png").write_bytes((a / "frame_00001.png").read_bytes())
    b = tmp_path / "b"
    assert f"frame {N}/{N}" in r.stderr and f"wrote {N} frames" in r.stdout
    # on Linux the CLI started itself again with large pages for PyTorch's CPU tensors (dloral.cpu), unless set
    from dloral.cpu import THP_VAR, thp_env
    want = "1" if thp_env(os.environ) else os.environ.get(THP_VAR, "unset")
    assert f"{THP_VAR}={want})" in r.stderr, r.stderr[-2000:]
    _check_frames(a, N, tol=0.02)     # AdaIN: means match up to clamping and 8-bit rounding
    assert (a.stat().st_mode & 0o777) == 0o777 & ~_umask(), oct(a.stat().st_mode)   # not mkdtemp's 0700
    r = _run(files, files["frames"], b)
    assert r.returncode == 0, r.stderr[-3000:]
    for i in range(N):
        name = f"frame_{i:05d}.png"
        assert (a / name).read_bytes() == (b / name).read_bytes(), f"{name} differs between two runs, same seed"
    assert not _leftovers(a)


@pytest.mark.slow
def test_video_file(files, tmp_path):
    import cv2
    cap = cv2.VideoCapture(str(files["video"]))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    assert n == N
    out = tmp_path / "v"
    r = _run(files, files["video"], out)
    assert r.returncode == 0, r.stderr[-3000:]
    # from a video, the folder keeps the clip's frame times beside the frames (this clip has no sound)
    assert len((out / "timecodes.txt").read_text().splitlines()) == N + 1 and not (out / "audio.mka").exists()
    (out / "timecodes.txt").unlink()
    _check_frames(out, N, tol=0.05)   # MJPG is lossy: the decoded input means move a little
    assert not _leftovers(out)


@pytest.mark.slow
def test_failure_mid_run_leaves_out_untouched(files, good_run, tmp_path):
    """A frame that passes the header check but cannot be decoded, after a first window was already
    upscaled: the run fails naming the frame, and the complete set already in --out (from an
    earlier run, replaced only with --overwrite) is left exactly as it was."""
    out = tmp_path / "out"
    out.mkdir()
    for f in good_run[1].iterdir():
        (out / f.name).write_bytes(f.read_bytes())
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    bad = _folder(tmp_path / "bad", [(SIZE, SIZE)] * 4)
    data = (bad / "f003.png").read_bytes()
    (bad / "f003.png").write_bytes(data[:60])    # PNG header intact, image data cut
    r = _run(files, bad, out, "--overwrite")
    assert r.returncode == 2 and "cannot read frame" in r.stderr and "f003.png" in r.stderr, r.stderr[-2000:]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not _leftovers(out)


@pytest.mark.slow
def test_other_base_model_refused_naming_tensors(files, tmp_path):
    """Weights made for another base UNet: the run stops before any frame, naming the differing tensors."""
    out = tmp_path / "o"
    r = _run(files, files["frames"], out, weights=files["dir"] / "dloral_other_base.safetensors")
    assert r.returncode == 2, r.stderr[-2000:]
    assert "not the base model the DLoRAL weights were made for" in r.stderr
    assert "diffusion_model.input_blocks.1.0.emb_layers.1.bias: values differ" in r.stderr and not out.exists()


@pytest.mark.slow
def test_node_and_cli_same_settings_byte_identical_frames(files, pack, tmp_path):
    """The same settings through `python scripts/dloral_cli.py upscale` (a subprocess, as the README runs it) and
    through the Upscale node (in this process, on the same checkpoint loaded by the host, the same prompt encoded by
    the host's CLIPTextEncode, the same frames read back from the PNGs): identical 8-bit frames. The 16x24
    frames become 64x96 (latent 8x12), so the settings tile the latent (64 px = 8 latent px) and the VAE
    (--vae-tile 8, overlap 2): the two rules node and CLI once computed differently (the CLI refused
    --vae-tile 16 and used another VAE overlap for the other sizes)."""
    import cv2
    import torch
    import comfy.sd
    import comfy.model_management as mm
    import nodes as host_nodes
    from dloral.__main__ import QUALITY_PROMPT, _frames
    inp = _folder(tmp_path / "wide", [(SIZE, 24)] * N)
    out = tmp_path / "cli"
    settings = dict(tile_size=64, tile_overlap=32, vae_tile=8, color_fix="wavelet", window=2, process_size=64)
    r = _run(files, inp, out, "--tile", "64", "--overlap", "32", "--vae-tile", "8", "--color-fix", "wavelet")
    assert r.returncode == 0, r.stderr[-3000:]
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)     # as the subprocess (OMP_NUM_THREADS=1)
    try:
        model, clip, vae = comfy.sd.load_checkpoint_guess_config(str(files["ckpt"]), output_vae=True,
                                                                 output_clip=True)[:3]
        (positive,) = host_nodes.CLIPTextEncode().encode(clip, QUALITY_PROMPT)
        images = torch.stack([f.movedim(0, -1) for f in _frames(str(inp))])
        weights = pack.dloral.load_weights(str(files["weights"]))
        node = pack.nodes.dloral_nodes.AtelierDLoRALUpscale
        assert node.validate_inputs(seed=7, **settings) is True
        got = node.execute(model, vae, positive, weights, images, seed=7, **settings).result[0]
    finally:
        torch.set_num_threads(n_threads)
        mm.unload_all_models()
    assert got.shape == (N, 4 * SIZE, 4 * 24, 3)
    for i in range(N):
        png = cv2.imread(str(out / f"frame_{i:05d}.png"), cv2.IMREAD_COLOR)[..., ::-1]
        node8 = (got[i].clamp(0, 1).numpy() * 255).round().astype(np.uint8)    # the CLI's own rounding
        assert np.array_equal(png, node8), f"frame {i}: {np.abs(png.astype(int) - node8).max()} levels apart"


def test_text_encoder_released_before_the_unet_is_built(files, pack, monkeypatch):
    """The CLI's loader encodes the prompt with the checkpoint's text encoder built alone, releases it, and
    only then builds the UNet and VAE: no text encoder is alive when the UNet is built nor while the frames
    run (before, it was built beside the UNet and held through the run: the 10.15 GB peak of issue 22)."""
    import gc
    import weakref
    import comfy.sd
    import comfy.model_management as mm
    host = pack.nodes.dloral_host
    clips = []
    init = comfy.sd.CLIP.__init__

    def tracked(self, *a, **k):
        init(self, *a, **k)
        clips.append(weakref.ref(self))

    def alive():
        gc.collect()
        return sum(r() is not None for r in clips)
    seen = {"unet built": [], "frames": []}
    guess = comfy.sd.load_state_dict_guess_config

    def guess_tracked(sd, *a, **k):
        if k.get("output_model", True):
            seen["unet built"].append(alive())
        return guess(sd, *a, **k)
    adapt = host.host_models

    def adapt_tracked(*a, **k):
        seen["frames"].append(alive())
        return adapt(*a, **k)
    monkeypatch.setattr(comfy.sd.CLIP, "__init__", tracked)
    monkeypatch.setattr(comfy.sd, "load_state_dict_guess_config", guess_tracked)
    monkeypatch.setattr(host, "host_models", adapt_tracked)
    try:
        models = host.load_checkpoint_models(str(files["ckpt"]), "a prompt", pack.dloral.load_weights(str(files["weights"])))
        assert len(clips) == 1 and seen == {"unet built": [0], "frames": [0]} and alive() == 0
        assert models.context.shape == (1, 77, 1024)
    finally:
        mm.unload_all_models()


@pytest.mark.slow
def test_chunked_run_through_the_host_same_frames(files, good_run, tmp_path):
    """`--chunk 2` (window 2) through the host's SD2 UNet and VAE: the one-pass frames byte for byte, and no
    job folder left after the stitch."""
    from dloral.job import job_dir
    out = tmp_path / "chunked"
    r = _run(files, files["frames"], out, "--chunk", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    assert _read_all(out) == _read_all(good_run[1]) and not job_dir(out).exists()


def _read_all(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}
