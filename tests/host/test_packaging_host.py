"""pyproject.toml as the host's own parser (comfy_config, what ComfyUI reads when it loads the pack) sees it."""
import pytest

from _testenv import REPO

pytestmark = pytest.mark.host


def test_host_reads_the_pyproject(comfy_dir):
    from comfy_config.config_parser import extract_node_configuration
    cfg = extract_node_configuration(str(REPO))
    assert cfg is not None
    assert cfg.project.supported_os == ["OS Independent"]
    assert cfg.project.supported_accelerators == ["GPU :: NVIDIA CUDA"]
    assert cfg.project.supported_comfyui_version == ">=0.3.64,<=0.8.0"
    assert cfg.tool_comfy.icon == ""          # no Icon: the registry wants a URL, not a file path
    assert cfg.tool_comfy.publisher_id == "atelier" and cfg.tool_comfy.display_name == "Atelier"
    deps = sorted(d.split(">")[0].split("=")[0] for d in cfg.project.dependencies)
    assert "kornia" not in deps and deps == sorted(
        line.split(">")[0] for line in (REPO / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#"))


def test_nodes_are_registered_through_the_v3_entry_point(pack):
    """The pack's root module offers the host ``comfy_entrypoint`` and no ``NODE_CLASS_MAPPINGS`` (the host
    prefers the V1 dict when both exist), and the extension lists every node class of ``nodes/``."""
    import asyncio
    from comfy_api.latest import ComfyExtension
    assert not hasattr(pack, "NODE_CLASS_MAPPINGS") and callable(pack.comfy_entrypoint)
    ext = asyncio.run(pack.comfy_entrypoint())
    assert isinstance(ext, ComfyExtension)
    listed = asyncio.run(ext.get_node_list())
    ids = [c.GET_SCHEMA().node_id for c in listed]
    assert sorted(ids) == sorted(pack.nodes.NODE_CLASS_MAPPINGS) and len(set(ids)) == len(ids) >= 20
    assert all(i.startswith("Atelier") for i in ids)
