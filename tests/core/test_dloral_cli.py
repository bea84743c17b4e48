"""`python -m dloral` convert subcommand and frame reading (folders and videos); `upscale`'s checks before
any model is loaded, with a loader that fails the test if it is reached; `upscale` without a loader."""
import numpy as np
import pytest
import torch

from dloral import load_weights
from dloral.__main__ import _frames, _save, main
from _dloral_synth import make_official, unet_shapes


def test_convert_cli_writes_loadable_file(tmp_path, capsys):
    ck, _ = make_official(unet_shapes(), seed=4)
    pkl = tmp_path / "model.pkl"
    torch.save(ck, pkl)
    out = tmp_path / "w.safetensors"
    assert main(["convert", str(pkl), "--out", str(out), "--precision", "fp32"]) == 0
    w = load_weights(str(out))
    assert w.meta["format"] == "atelier-dloral" and len(w.modules()) > 10
    assert "wrote" in capsys.readouterr().out
    default = tmp_path / "default.safetensors"      # no --precision: fp32, the official output on a CPU
    assert main(["convert", str(pkl), "--out", str(default)]) == 0
    assert all(v.dtype == torch.float32 for v in load_weights(str(default)).lora.values())
    assert main(["convert", str(tmp_path / "nope.pkl"), "--out", str(out)]) == 2
    torch.save({"something": torch.zeros(1)}, tmp_path / "other.pkl")
    assert main(["convert", str(tmp_path / "other.pkl"), "--out", str(out)]) == 2
    assert "not a DLoRAL checkpoint" in capsys.readouterr().err


def test_frames_from_folder_and_video(tmp_path):
    import cv2
    rng = np.random.default_rng(0)
    frames = [torch.from_numpy(rng.random((3, 24, 32), dtype=np.float32)) for _ in range(4)]
    d = tmp_path / "frames"
    d.mkdir()
    for i, f in enumerate(frames):
        _save(f, d / f"f{i:03d}.png")
    got = list(_frames(str(d)))
    assert len(got) == 4 and got[0].shape == (3, 24, 32)
    assert all((a - b).abs().max() <= 0.5 / 255 + 1e-6 for a, b in zip(got, frames))   # png is 8-bit
    vid = tmp_path / "v.avi"
    wr = cv2.VideoWriter(str(vid), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 24))
    for f in frames:
        wr.write((f.permute(1, 2, 0).numpy()[..., ::-1] * 255).astype(np.uint8))
    wr.release()
    got = list(_frames(str(vid)))
    assert len(got) == 4 and got[0].shape == (3, 24, 32)
    with pytest.raises(ValueError, match="neither a folder"):
        list(_frames(str(tmp_path / "missing.mp4")))


def _png_folder(d, sizes):
    d.mkdir()
    for i, (h, w) in enumerate(sizes):
        _save(torch.rand(3, h, w, generator=torch.Generator().manual_seed(i)), d / f"f{i:03d}.png")
    return d


def _never(request):
    raise AssertionError(f"the model loader was reached: {request}")


def test_upscale_without_loader_names_the_host_entry_point(tmp_path, capsys):
    """`python -m dloral upscale` has no host side: one line naming the entry point that has, nothing run."""
    from dloral.__main__ import HOST_ENTRY_POINT
    good = _png_folder(tmp_path / "good", [(16, 16)] * 2)
    out = tmp_path / "out"
    rc = main(["upscale", str(good), "--out", str(out), "--weights", "w.safetensors", "--checkpoint", "c.safetensors"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    assert "dloral_cli.py" in HOST_ENTRY_POINT and HOST_ENTRY_POINT in err
    assert not out.exists() and not list(tmp_path.glob(".*staging*"))
    # the entry point named there exists and passes a loader (tests/host/test_dloral_cli_host.py runs it)
    from _testenv import REPO
    assert (REPO / "scripts" / "dloral_cli.py").is_file()


def test_upscale_bad_inputs_fail_before_loading_models(tmp_path, capsys):
    """Everything checkable without the SD2.1 models fails first, with a message naming the problem,
    and leaves nothing in --out or next to it (the checkpoint and ComfyUI paths are never reached)."""
    from dloral import convert_official, save_weights
    w = tmp_path / "w.safetensors"
    save_weights(convert_official(make_official(unet_shapes(), seed=4)[0]), str(w))
    good = _png_folder(tmp_path / "good", [(16, 16)] * 2)

    def fails(inp, *want, weights=w, out=None, extra=()):
        out = out or tmp_path / "out"
        rc = main(["upscale", str(inp), "--out", str(out), "--weights", str(weights), "--checkpoint",
                   str(tmp_path / "never_read.safetensors"), "--comfyui", str(tmp_path / "no_comfyui"), *extra],
                  loader=_never)
        err = capsys.readouterr().err
        assert rc == 2, err
        for s in want:
            assert s in err, (s, err)
        assert not out.exists() or [p.name for p in out.iterdir()] == ["frame_00000.png"]
        assert not list(tmp_path.glob(".*staging*")) and not list(tmp_path.rglob("*.part"))
        return err

    mixed = _png_folder(tmp_path / "mixed", [(16, 16), (16, 16), (20, 16), (16, 16)])
    fails(mixed, "frame 'f002.png' is 20x16 but 'f000.png' is 16x16", "same size")
    fails(_png_folder(tmp_path / "tiny", [(4, 6)] * 2), "INPUT frames are 4x6 px", "at least 8x8")
    (tmp_path / "empty").mkdir()
    fails(tmp_path / "empty", "has no image files")
    fails(tmp_path / "nope.mp4", "neither a folder of frames nor a video file")
    (tmp_path / "notavideo.mp4").write_bytes(b"\0" * 100)
    fails(tmp_path / "notavideo.mp4", "notavideo.mp4", "cannot be opened by PyAV")
    torch.save({"state_dict": {"w": torch.zeros(2)}}, tmp_path / "other.pkl")
    fails(good, "not a DLoRAL checkpoint: missing top-level keys", "state_dict_unet", weights=tmp_path / "other.pkl")
    from safetensors.torch import save_file
    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    fails(good, "not a converted DLoRAL file", weights=tmp_path / "other.safetensors")
    fails(good, "tile_size (--tile): 100 is not a multiple of 8", extra=("--tile", "100"))
    fails(good, "tile_overlap (--overlap): 768 must be smaller than tile_size (--tile) (768)",
          extra=("--overlap", "768"))
    fails(good, "vae_tile (--vae-tile): 4 is below the smallest VAE tile", extra=("--vae-tile", "4"))
    # weights and input are fine: the next check is the SD2.1 checkpoint path
    fails(good, "--checkpoint", "no such file")
    # an --out that already holds frames is refused without --overwrite, and left as it was
    full = tmp_path / "full"
    full.mkdir()
    (full / "frame_00000.png").write_bytes(b"old")
    fails(good, "already holds 1 frame files", "--overwrite", out=full)
    assert (full / "frame_00000.png").read_bytes() == b"old"


def test_probe_counts_frames_without_decoding(tmp_path):
    from dloral.__main__ import probe
    d = _png_folder(tmp_path / "f", [(24, 32)] * 3)
    assert probe(str(d)) == (3, (24, 32))
