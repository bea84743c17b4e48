"""scripts/hostbridge.py without a host: which ComfyUI tree is found (argument, $COMFYUI_DIR, ~/ComfyUI)
and the messages that refuse a tree, on stand-in trees (a folder with comfy/model_patcher.py). Importing
a real tree is tested in tests/host/test_hostbridge_host.py."""
import pathlib
import sys

import pytest

import hostbridge


def _tree(path):
    (path / "comfy").mkdir(parents=True)
    (path / "comfy" / "model_patcher.py").write_text("")
    return path


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty home folder and no $COMFYUI_DIR."""
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("HOME", str(h))
    monkeypatch.delenv("COMFYUI_DIR", raising=False)
    assert pathlib.Path.home() == h
    return h


def test_order_argument_then_env_then_home(tmp_path, home, monkeypatch):
    assert hostbridge.find_comfyui() is None
    home_tree = _tree(home / "ComfyUI")
    assert hostbridge.find_comfyui() == home_tree.resolve()
    env_tree = _tree(tmp_path / "env")
    monkeypatch.setenv("COMFYUI_DIR", str(env_tree))
    assert hostbridge.find_comfyui() == env_tree.resolve()
    arg_tree = _tree(tmp_path / "arg")
    assert hostbridge.find_comfyui(arg_tree) == arg_tree.resolve()
    assert hostbridge.find_comfyui(str(arg_tree)) == arg_tree.resolve()
    # a $COMFYUI_DIR that is no tree falls back to ~/ComfyUI (the host tier's rule, as before)
    monkeypatch.setenv("COMFYUI_DIR", str(tmp_path / "nothing"))
    assert hostbridge.find_comfyui() == home_tree.resolve()
    # a tree given explicitly is that tree or none: no fallback to another one
    assert hostbridge.find_comfyui(tmp_path / "nothing") is None


def test_refusals_name_the_tree_and_what_is_expected(tmp_path, home, monkeypatch):
    bad = tmp_path / "not_comfy"
    bad.mkdir()
    with pytest.raises(hostbridge.HostTreeError) as e:
        hostbridge.require_comfyui(bad, label="--comfyui")
    msg = str(e.value)
    assert msg.startswith(f"--comfyui {str(bad)!r} is not a ComfyUI tree") and "comfy/model_patcher.py" in msg, msg
    monkeypatch.setenv("COMFYUI_DIR", str(tmp_path / "gone"))
    with pytest.raises(hostbridge.HostTreeError) as e:
        hostbridge.require_comfyui()
    msg = str(e.value)
    for want in ("no ComfyUI tree found", f"$COMFYUI_DIR = {str(tmp_path / 'gone')!r}",
                 f"~/ComfyUI = {str(home / 'ComfyUI')!r}", "comfy/model_patcher.py"):
        assert want in msg, (want, msg)
    assert isinstance(e.value, ValueError)      # the CLIs report it as a bad input (exit status 2)


def test_refused_before_touching_the_process(tmp_path, home):
    """A bad CPU policy or a bad tree changes neither sys.path nor sys.modules."""
    path, mods = list(sys.path), set(sys.modules)
    with pytest.raises(ValueError, match=r"cpu='gpu': expected one of \('force', 'no-cuda', None\)"):
        hostbridge.enter_host(_tree(tmp_path / "t"), cpu="gpu")
    with pytest.raises(hostbridge.HostTreeError, match="is not a ComfyUI tree"):
        hostbridge.import_pack(tmp_path / "no", name="atelier_never_imported", cpu="force")
    assert sys.path == path and set(sys.modules) == mods


def test_dloral_cli_refuses_a_wrong_tree_in_one_line(tmp_path, capsys):
    """The host entry point of the DLoRAL CLI, past every check that needs no host, on a --comfyui that is
    no tree: exit status 2 and the bridge's message, nothing written."""
    import torch
    import dloral_cli
    from dloral import convert_official, save_weights
    from dloral.__main__ import _save
    from _dloral_synth import make_official, unet_shapes
    w = tmp_path / "w.safetensors"
    save_weights(convert_official(make_official(unet_shapes(), seed=4)[0]), str(w))
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(2):
        _save(torch.rand(3, 16, 16), frames / f"f{i}.png")
    ckpt = tmp_path / "sd21.safetensors"
    ckpt.write_bytes(b"never read")
    out = tmp_path / "out"
    rc = dloral_cli.main(["upscale", str(frames), "--out", str(out), "--weights", str(w), "--checkpoint", str(ckpt),
                          "--comfyui", str(tmp_path / "no_comfyui"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.strip() == (f"error: --comfyui {str(tmp_path / 'no_comfyui')!r} is not a ComfyUI tree: "
                           f"expected {hostbridge.EXPECTED}"), err
    assert not out.exists() and not list(tmp_path.glob(".*staging*"))
