"""scripts/hostbridge.py on the ComfyUI tree under test: the pack imported as ComfyUI does, under the
caller's name, with the host's flags set; a failed import leaves nothing half-imported; a wrong tree
(not a tree, or a second tree in a process that already holds one) is refused naming it."""
import sys

import pytest

import hostbridge
from _testenv import REPO

pytestmark = pytest.mark.host


def _under(name):
    return sorted(k for k in sys.modules if k == name or k.startswith(name + "."))


def test_imports_the_pack_on_the_tree_under_test(comfy_dir, pack):
    import comfy.model_management as mm
    import comfy.utils
    from comfy.cli_args import args
    assert hostbridge.host_tree() == comfy_dir and sys.path.index(str(comfy_dir)) < sys.path.index(str(REPO))
    assert args.cpu is True and mm.get_torch_device().type == "cpu"      # cpu="force" of the host tier
    # once per name: the session's pack again, the same module
    assert hostbridge.import_pack(comfy_dir, name=pack.__name__, cpu="force") is pack
    name, before = "atelier_pack_bridge_test", comfy.utils.PROGRESS_BAR_ENABLED
    assert not _under(name)
    try:
        other = hostbridge.import_pack(str(comfy_dir), name=name, cpu="force", progress_bars=False)
        assert other is not pack and other.__name__ == name and other.__file__ == str(REPO / "__init__.py")
        assert set(other.nodes.NODE_CLASS_MAPPINGS) == set(pack.nodes.NODE_CLASS_MAPPINGS) and other.nodes.NODE_CLASS_MAPPINGS
        assert comfy.utils.PROGRESS_BAR_ENABLED is False
        tiny = hostbridge.submodule(other, "tinywan")
        assert tiny.__name__ == f"{name}.tinywan" and sys.modules[f"{name}.tinywan"] is tiny
        # the pack's relative imports resolved inside the package, not to the host's top-level `nodes`
        assert other.nodes.__name__ == f"{name}.nodes" and sys.modules["nodes"].__file__ == str(comfy_dir / "nodes.py")
    finally:
        comfy.utils.PROGRESS_BAR_ENABLED = before
        for k in _under(name):
            del sys.modules[k]


def _broken_pack(root):
    """A pack whose import fails deep inside, after a submodule and a subpackage were imported."""
    (root / "sub").mkdir(parents=True)
    (root / "__init__.py").write_text("from . import good\nfrom .sub import inner\n")
    (root / "good.py").write_text("import comfy.model_management\nVALUE = 1\n")
    (root / "sub" / "__init__.py").write_text("from . import ok\n")
    (root / "sub" / "ok.py").write_text("OK = 1\n")
    (root / "sub" / "inner.py").write_text("from . import ok\nraise RuntimeError('broken on purpose')\n")
    return root


def test_failed_import_leaves_no_half_imported_module(comfy_dir, tmp_path):
    root = _broken_pack(tmp_path / "broken_pack")
    name = "atelier_broken_pack"
    with pytest.raises(RuntimeError, match="broken on purpose"):
        hostbridge.import_pack(comfy_dir, name=name, cpu="force", pack_dir=root)
    assert _under(name) == []
    assert "comfy.model_management" in sys.modules     # the host's own modules stay
    # a retry starts clean: fixed, the whole package imports
    (root / "sub" / "inner.py").write_text("from . import ok\nINNER = ok.OK + 1\n")
    try:
        mod = hostbridge.import_pack(comfy_dir, name=name, cpu="force", pack_dir=root)
        assert mod.good.VALUE == 1 and mod.sub.inner.INNER == 2
        assert _under(name) == [name, f"{name}.good", f"{name}.sub", f"{name}.sub.inner", f"{name}.sub.ok"]
    finally:
        for k in _under(name):
            del sys.modules[k]


def test_wrong_tree_refused_with_a_clear_message(comfy_dir, tmp_path):
    path = list(sys.path)
    not_tree = tmp_path / "not_a_tree"
    not_tree.mkdir()
    with pytest.raises(hostbridge.HostTreeError) as e:
        hostbridge.import_pack(not_tree, name="atelier_never", cpu="force")
    assert str(e.value) == (f"the tree {str(not_tree)!r} is not a ComfyUI tree: expected a ComfyUI checkout "
                            "(the folder holding comfy/model_patcher.py)")
    # a second tree: this process already holds the tree under test
    other = tmp_path / "OtherComfyUI"
    (other / "comfy").mkdir(parents=True)
    (other / "comfy" / "model_patcher.py").write_text("")
    with pytest.raises(hostbridge.HostTreeError) as e:
        hostbridge.import_pack(other, name="atelier_never", cpu="force", label="--comfyui")
    msg = str(e.value)
    assert msg.startswith(f"--comfyui {str(other.resolve())!r}: this process already imported ComfyUI from "
                          f"{str(comfy_dir)!r}") and "one host" in msg, msg
    assert sys.path == path and not _under("atelier_never")
