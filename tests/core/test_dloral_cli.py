"""`python -m dloral` convert subcommand and frame reading (folders and videos)."""
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
